"""Which schema revision a ledger database is at, and the refusal to touch one newer than
this code. Shared by opening (`ledger.store`) and migrating (`ledger.migrate`), which both
import it, so neither imports the other at module level."""

from __future__ import annotations

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import DBAPIError

from ledger.errors import SchemaTooNewError
from ledger.schema_names import LEDGER_HEAD, LEDGER_REVISIONS, LEDGER_VERSION_TABLE

# pg_advisory_xact_lock key: processes migrating one PostgreSQL ledger at once queue on it.
MIGRATION_LOCK = 7261001


def current_revision(conn: Connection) -> str | None:
    """The ledger branch's alembic revision, or None for an empty database.

    Runs in a savepoint so that, on PostgreSQL, a missing table does not abort the caller's
    transaction."""
    try:
        with conn.begin_nested():
            return conn.exec_driver_sql(f"SELECT version_num FROM {LEDGER_VERSION_TABLE}").scalar()
    except DBAPIError:
        return None


def refuse_newer(engine: Engine, revision: str | None) -> None:
    if revision is not None and revision not in LEDGER_REVISIONS:
        where = engine.url.render_as_string(hide_password=True)
        raise SchemaTooNewError(
            f"the ledger at {where} has schema revision {revision!r}, newer than this imagen "
            f"knows ({LEDGER_HEAD!r}); upgrade imagen. The ledger was left untouched."
        )
