"""Read-only access to a ledger. On SQLite it needs only the standard library's sqlite3, so
commands that only read (listing jobs, showing one) skip SQLAlchemy's import time.

`Reader` is what read models are written against: `EventStore` implements it too. Queries
use `:name` parameters, which sqlite3 and SQLAlchemy both bind, so one SQL text (kept to
portable SQL) runs on every engine.
"""

from __future__ import annotations

import shutil
import sqlite3
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

from ledger.events import RecordedEvent, identity_of
from ledger.schema_names import COLUMNS, LEDGER_HEAD, LEDGER_VERSION_TABLE


class Reader(Protocol):
    def read_stream(self, stream_id: str, after_version: int = 0) -> list[RecordedEvent]: ...
    def streams_with_prefix(self, prefix: str, limit: int = 10) -> list[str]: ...
    def get_checkpoint(self, name: str) -> int: ...
    def is_current(self, checkpoint: str) -> bool: ...
    def head_position(self) -> int: ...
    def identity(self) -> str | None: ...
    def query(
        self, sql: str, params: Mapping[str, object] | None = None
    ) -> list[tuple[Any, ...]]: ...


class SqliteQueries:
    """The `Reader` queries over one sqlite3 connection: a read-only reader's, or one the
    stdlib store (ledger.sqlite_store) lends from its pool or holds in a transaction."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def query(self, sql: str, params: Mapping[str, object] | None = None) -> list[tuple[Any, ...]]:
        return self.conn.execute(sql, dict(params or {})).fetchall()

    def _fetch(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        return self.conn.execute(sql, params).fetchall()

    def read_stream(self, stream_id: str, after_version: int = 0) -> list[RecordedEvent]:
        rows = self._fetch(
            f"SELECT {COLUMNS} FROM events WHERE stream_id = ? AND stream_version > ? "
            "ORDER BY stream_version",
            (stream_id, after_version),
        )
        return [RecordedEvent(*r) for r in rows]

    def streams_with_prefix(self, prefix: str, limit: int = 10) -> list[str]:
        upper = prefix[:-1] + chr(ord(prefix[-1]) + 1) if prefix else "\uffff"
        rows = self._fetch(
            "SELECT DISTINCT stream_id FROM events WHERE stream_id >= ? AND stream_id < ? "
            "ORDER BY stream_id LIMIT ?",
            (prefix, upper, limit),
        )
        return [r[0] for r in rows]

    def get_checkpoint(self, name: str) -> int:
        row = self._fetch("SELECT position FROM projection_checkpoints WHERE name = ?", (name,))
        return row[0][0] if row else 0

    def head_position(self) -> int:
        return self._fetch("SELECT coalesce(max(position), 0) FROM events")[0][0]

    def is_current(self, checkpoint: str) -> bool:
        row = self._fetch(
            "SELECT position FROM projection_checkpoints WHERE name = ?", (checkpoint,)
        )
        # No row yet: the projection's table was never created, so it cannot be current.
        return bool(row) and row[0][0] == self.head_position()

    def identity(self) -> str | None:
        rows = self._fetch(f"SELECT {COLUMNS} FROM events WHERE position = 1")
        return identity_of(RecordedEvent(*rows[0]) if rows else None)


class SqliteReader(SqliteQueries):
    def __init__(self, path: Path, *, immutable: bool = False) -> None:
        self.path = path
        self.immutable = immutable
        # Read-only: this connection can never change the ledger.
        super().__init__(sqlite3.connect(f"file:{path}?{_ro(immutable)}", uri=True, timeout=30))

    def close(self) -> None:
        self.conn.close()


class WalCopyReader(SqliteReader):
    """A private copy of a ledger whose committed events are still in its -wal file (its last
    writer was killed, or another connection was open when it closed) in a directory this user
    cannot write: read immutable, the WAL would be ignored and the newest events silently
    missing. The copy (file and WAL) is opened where SQLite may create its -shm index."""

    def __init__(self, path: Path, wal: Path) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="imagen-ledger-copy-"))
        try:
            shutil.copyfile(path, self.folder / path.name)
            shutil.copyfile(wal, self.folder / wal.name)
            super().__init__(self.folder / path.name)
        except BaseException:
            shutil.rmtree(self.folder, ignore_errors=True)
            raise

    def close(self) -> None:
        try:
            super().close()
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)


def _ro(immutable: bool) -> str:
    # A WAL ledger opened read-only still needs its -shm file; in a directory the user cannot
    # write (and with no -shm there) nobody can be writing either, so it is read as immutable.
    return "immutable=1" if immutable else "mode=ro"


def sqlite_path(url: str) -> Path | None:
    """The file of a sqlite:/// ledger URL (None for other engines)."""
    if not url.startswith("sqlite:///"):
        return None
    return Path(url.removeprefix("sqlite:///")).expanduser()


def open_reader(url: str) -> Reader | None:
    """A stdlib reader for a SQLite ledger that exists and is at this code's schema head, else
    None (the caller opens the full store, which creates or migrates it)."""
    if not url.startswith("sqlite:///"):
        return None
    path = Path(url.removeprefix("sqlite:///")).expanduser()
    if not path.exists():
        return None
    try:
        reader = SqliteReader(path)
        rev = reader._fetch(f"SELECT version_num FROM {LEDGER_VERSION_TABLE}")
    except sqlite3.OperationalError as exc:
        if "readonly" not in str(exc) and "unable to open" not in str(exc):
            return None
        wal = path.with_name(path.name + "-wal")
        try:
            if wal.exists() and wal.stat().st_size > 0:
                reader = WalCopyReader(path, wal)
            else:
                reader = SqliteReader(path, immutable=True)
        except (sqlite3.Error, OSError):
            return None
        try:
            rev = reader._fetch(f"SELECT version_num FROM {LEDGER_VERSION_TABLE}")
        except sqlite3.Error:
            reader.close()
            return None
    except sqlite3.Error:
        return None
    if rev != [(LEDGER_HEAD,)]:
        reader.close()
        return None
    return reader
