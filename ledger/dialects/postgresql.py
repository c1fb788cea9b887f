"""PostgreSQL: a server, MVCC reads, and an advisory lock as the write lock."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Connection, Engine, create_engine
from sqlalchemy.engine import URL

from ledger.chain import Durability
from ledger.dialects import Opened

name = "postgresql"
param = "%s"
snapshot_isolation: str | None = "REPEATABLE READ"

_APPEND_LOCK = 7261002  # advisory lock key for appends (7261001: migrations, ledger.revision)


def open(url: URL, durability: Durability, busy_timeout: float, create: bool) -> Opened:  # noqa: A001
    # Durability is the server's (its fsync and synchronous_commit settings).
    if url.drivername == "postgresql":
        url = url.set(drivername="postgresql+psycopg")
    # lock_timeout: a writer waits for the write lock as long as on SQLite, then fails.
    options = f"-c lock_timeout={int(busy_timeout * 1000)}"
    engine = create_engine(
        url, pool_pre_ping=True, connect_args={"connect_timeout": 10, "options": options}
    )
    return Opened(engine)


def lock(conn: Connection) -> None:
    # Serialises chain heads; reads are not blocked. An advisory lock, not LOCK TABLE: a writer
    # role with only INSERT and SELECT on events may not take a table lock stronger than ROW
    # EXCLUSIVE. (A writer bypassing it still cannot fork the chain: positions are a primary key.)
    conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_APPEND_LOCK})")


def read_view(conn: Connection) -> None:
    pass  # the snapshot's isolation level (above) makes its transaction one view


def scratch(source: tuple[Path, str]) -> Engine | None:
    return None  # a server ledger is never read from a file
