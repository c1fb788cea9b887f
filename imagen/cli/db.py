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
    cfg = context.session().config()
    if branch == "ledger":
        # Opening is the one guarded path: the migration lock (PostgreSQL: an advisory lock),
        # a ledger newer than this imagen refused untouched, a new SQLite file made private.
        store = context.session().store(url)
        from imagen.app.budgets import NotOwner, protect

        try:
            protect(store)  # budgets: the owner's alone (a trigger on PostgreSQL)
        except NotOwner as exc:
            context.warn(str(exc))
        store.close()
        print("ledger at head")
        return
    target = url or cfg.usage.database_url
    if not target:
        raise UserError("no usage database: set [usage] database_url or IMAGEN_USAGE_DATABASE_URL")
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
