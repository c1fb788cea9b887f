"""`imagen db upgrade [ledger|usage]`: alembic, with the URL from config/env."""

from __future__ import annotations

from typing import Literal

from cyclopts import App

from imagen.app.errors import UserError
from imagen.cli import context

db_app = App(name="db", help="Database schema migrations (alembic).")


@db_app.command
def upgrade(branch: Literal["ledger", "usage"] = "ledger", /, *, url: str | None = None) -> None:
    """Migrate a branch to its head: the local ledger, or the team's Supabase usage tables.

    Examples of use:
      imagen db upgrade
      IMAGEN_USAGE_DATABASE_URL=postgresql://... imagen db upgrade usage

    Parameters
    ----------
    branch
        ledger (this machine's ledger) or usage (mai.imagen_usage; needs [usage] database_url
        or IMAGEN_USAGE_DATABASE_URL, e.g. Supabase's session-mode connection string).
    url
        Database URL instead of the configured one.
    """
    from sqlalchemy import create_engine
    from sqlalchemy.exc import OperationalError

    from alembic import command
    from ledger.migrate import alembic_config

    cfg = context.config()
    if branch == "ledger":
        from imagen.app.config import ledger_url

        target = url or ledger_url(cfg)
        if target.startswith("sqlite"):
            context.store()  # opening a SQLite ledger creates its file privately and migrates it
            print("ledger at head")
            return
    else:
        target = url or cfg.usage.database_url
        if not target:
            raise UserError(
                "no usage database: set [usage] database_url or IMAGEN_USAGE_DATABASE_URL"
            )
        from imagen.app import usage_db

        result = usage_db.upgrade(target)
        print("usage at head")
        if result.grants_applied:
            print(f"grants to {usage_db.API_ROLE} applied: {usage_db.GRANTS_TEXT}")
        else:
            context.err(
                f"imagen: warning: role {usage_db.API_ROLE} does not exist in this database, so "
                "it was granted nothing; run `imagen db upgrade usage` again once it exists "
                "(every Supabase project has it)"
            )
        return
    if target.startswith("postgresql://"):
        target = "postgresql+psycopg://" + target.removeprefix("postgresql://")
    engine = create_engine(target)
    try:
        with engine.connect() as conn, conn.begin():
            command.upgrade(alembic_config(conn, branch), f"{branch}@head")
    except OperationalError as exc:
        raise UserError(
            f"cannot connect to the {branch} database: {str(exc.orig).strip().splitlines()[0]}"
        ) from None
    finally:
        engine.dispose()
    print(f"{branch} at head")
