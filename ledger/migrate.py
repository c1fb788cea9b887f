"""Schema migrations through alembic, imported only when a ledger is not at head."""

from __future__ import annotations

from pathlib import Path

from alembic.config import Config
from sqlalchemy import Connection, Engine, text

from alembic import command
from ledger.revision import MIGRATION_LOCK, current_revision, refuse_newer
from ledger.schema_names import LEDGER_HEAD


def script_location() -> str:
    """alembic/ in a source checkout; ledger/_alembic in an installed wheel."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "_alembic", here.parent / "alembic"):
        if (candidate / "env.py").exists():
            return str(candidate)
    raise RuntimeError("alembic migrations not found next to the ledger package")


def alembic_config(connection: Connection | None = None, branch: str = "ledger") -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", script_location())
    cfg.attributes["connection"] = connection
    cfg.attributes["branch"] = branch
    return cfg


def upgrade_ledger(engine: Engine, target: str = "ledger@head") -> None:
    """Migrate under the write lock, so processes opening a new ledger at once migrate it once."""
    with engine.connect() as conn, conn.begin():
        if engine.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
        else:  # the driver runs in autocommit mode: the transaction is this BEGIN's
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        revision = current_revision(conn)
        if revision == LEDGER_HEAD and target == "ledger@head":
            return
        refuse_newer(engine, revision)
        command.upgrade(alembic_config(conn, "ledger"), target)


def downgrade(engine: Engine, target: str, branch: str = "ledger") -> None:
    with engine.connect() as conn, conn.begin():
        if engine.dialect.name == "sqlite":
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        command.downgrade(alembic_config(conn, branch), target)
