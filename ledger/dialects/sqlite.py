"""SQLite: a file with its head file beside it; WAL, `synchronous` from the durability, a busy
timeout, `BEGIN IMMEDIATE` as the write lock; and reading a ledger this process cannot write."""

from __future__ import annotations

import os
import shutil
import tempfile
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import quote

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import URL
from sqlalchemy.exc import OperationalError
from sqlalchemy.pool import StaticPool

from ledger.chain import Durability
from ledger.dialects import Opened
from ledger.errors import NoLedgerError, cannot_write

name = "sqlite"
param = "?"
snapshot_isolation: str | None = None  # a transaction is one read view under WAL

_DRIVER = {"isolation_level": None, "check_same_thread": False}


def open(url: URL, durability: Durability, busy_timeout: float, create: bool) -> Opened:  # noqa: A001
    db = url.database
    if not db or db == ":memory:" or db.startswith("file:"):
        return Opened(_engine(url, durability, busy_timeout))
    path = Path(db).expanduser()
    if not create and not path.exists():
        raise NoLedgerError(f"no ledger yet at {path}: nothing has been recorded")
    if create:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        # Prompts are private: create the file owner-only before SQLite opens it; SQLite gives
        # its -wal and -shm files the same mode. Only a file that does not exist yet is opened
        # here: closing any descriptor of a file drops every POSIX lock this process holds on
        # it, so touching an open ledger would release another store's locks.
        if not path.exists():
            try:
                os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600))
            except FileExistsError:
                pass  # another process created it first
    engine = _engine(url.set(database=str(path)), durability, busy_timeout)
    opened = Opened(engine, Path(f"{path}.head"), (path, "mode=ro"))
    if create:
        return opened
    try:
        engine.connect().close()  # the pool keeps it: the store's first read reuses it
    except OperationalError as exc:
        engine.dispose()
        if not cannot_write(exc):
            raise
        return _read_only(path, busy_timeout, opened.head_path)
    return opened


def _engine(url: URL, durability: Durability, busy_timeout: float) -> Engine:
    engine = create_engine(url, connect_args={"timeout": busy_timeout, **_DRIVER})
    synchronous = "FULL" if durability == "full" else "NORMAL"

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_conn: Any, _record: Any) -> None:
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute(f"PRAGMA synchronous={synchronous}")
        cur.execute(f"PRAGMA busy_timeout={int(busy_timeout * 1000)}")
        cur.close()

    return engine


def lock(conn: Connection) -> None:
    # A deferred transaction that reads and then writes gets SQLITE_BUSY at once under WAL,
    # whatever the busy timeout; taking the write lock up front makes writers queue instead.
    # (The driver runs in autocommit mode, so SQLAlchemy's begin() sends nothing: the BEGIN
    # is ours, and its commit() or rollback() ends it. No "begin" event: any engine event
    # makes every statement pay for event dispatch.)
    conn.exec_driver_sql("BEGIN IMMEDIATE")


def read_view(conn: Connection) -> None:
    conn.exec_driver_sql("BEGIN")  # one read view (WAL) until the transaction ends


def _uri(path: Path, option: str) -> str:
    return f"file:{quote(str(path))}?{option}"


def _read_only(path: Path, busy_timeout: float, head_path: Path | None) -> Opened:
    """The ledger in a directory (or a file) this process cannot write, opened read-only.

    `mode=ro` while SQLite can still use the -shm index beside it (another user may be writing).
    Otherwise nobody can be writing: with committed events still in the -wal file (a writer
    killed before its last connection closed), read immutable they would be silently missing,
    so a private copy of the file and its WAL is read; without one, the file is immutable."""
    engine = _uri_engine(path, "mode=ro", busy_timeout)
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql("SELECT count(*) FROM sqlite_master").all()
        return Opened(engine, head_path, (path, "mode=ro"))
    except OperationalError as exc:
        engine.dispose()
        if not cannot_write(exc):
            raise
    wal = path.with_name(path.name + "-wal")
    if not (wal.exists() and wal.stat().st_size > 0):
        return Opened(
            _uri_engine(path, "immutable=1", busy_timeout), head_path, (path, "immutable=1")
        )
    folder = Path(tempfile.mkdtemp(prefix="imagen-ledger-copy-"))
    remove = partial(shutil.rmtree, folder, ignore_errors=True)
    try:
        shutil.copyfile(path, folder / path.name)
        shutil.copyfile(wal, folder / wal.name)
    except BaseException:
        remove()
        raise
    copy = folder / path.name
    return Opened(_uri_engine(copy, "mode=ro", busy_timeout), head_path, (copy, "mode=ro"), remove)


def _uri_engine(path: Path, option: str, busy_timeout: float) -> Engine:
    key, value = option.split("=")
    url = URL.create(
        "sqlite", database=f"file:{quote(str(path))}", query={"uri": "true", key: value}
    )
    return create_engine(url, connect_args={"timeout": busy_timeout, **_DRIVER})


def scratch(source: tuple[Path, str]) -> Engine:
    """Projection tables and checkpoints in memory, the ledger's events read from its file
    (attached read-only): for folding a projection where the ledger cannot be written."""
    uri = _uri(*source)
    engine = create_engine(
        "sqlite:///file::memory:?uri=true", poolclass=StaticPool, connect_args=_DRIVER
    )

    @event.listens_for(engine, "connect")
    def _attach(dbapi_conn: Any, _record: Any) -> None:
        # Unqualified names look in memory first, then here: `events` is the ledger's.
        dbapi_conn.execute("ATTACH DATABASE ? AS ledger", (uri,))

    return engine
