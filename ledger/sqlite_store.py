"""The event store on SQLite through the standard library's sqlite3 alone.

`imagen generate` appends to the ledger several times per image; importing SQLAlchemy for that
cost more than the rest of the command (~150 ms of start-up). This store has the public API
and the semantics of `ledger.store.EventStore` for a SQLite ledger that exists and is at this
code's schema head: the same chain (built by `ledger.chain`, so the bytes and hashes are the
same), the same write lock (`BEGIN IMMEDIATE`, taken before the chain head is read), the same
pragmas (WAL, `synchronous` from the durability, busy timeout), the same head file and the
same projection tables (DDL as SQLAlchemy writes it; tests/test_ledger.py compares them).

Creating a ledger or migrating one stays with SQLAlchemy and alembic: `ledger.opening` sends
those cases there first, then opens this store on the result.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ledger.chain import (
    Clock,
    Counter,
    Durability,
    Head,
    HeadFile,
    VerifyReport,
    as_row,
    format_timestamp,
    link,
    utc_now,
    verify_rows,
)
from ledger.errors import ConcurrencyError
from ledger.events import GENESIS_HASH, NewEvent, RecordedEvent
from ledger.group import GroupCommit
from ledger.projection import ColumnType, Guard, Row, TableSpec
from ledger.reader import SqliteQueries
from ledger.schema_names import COLUMNS, LEDGER_VERSION_TABLE

_TIP = (
    "SELECT coalesce((SELECT max(stream_version) FROM events WHERE stream_id = ?), 0),"
    " coalesce((SELECT max(position) FROM events), 0),"
    " (SELECT hash FROM events ORDER BY position DESC LIMIT 1)"
)
_INSERT = f"INSERT INTO events ({COLUMNS}) VALUES ({', '.join(['?'] * 10)})"


class Transaction:
    """A write transaction holding the ledger's write lock (what `SqliteStore.transaction`
    yields; pass it as `conn=` to `append`)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self.committed_head: Head | None = None  # the head file's next record, after COMMIT


class SqliteStore:
    dialect = "sqlite"

    def __init__(
        self,
        path: Path,
        *,
        clock: Clock = utc_now,
        durability: Durability = "full",
        busy_timeout: float = 60.0,
        identity: bool = False,
        group_commit: bool = True,
    ) -> None:
        self.path = path
        self.head_path: Path | None = Path(f"{path}.head")
        self._clock = clock
        self._identity = identity
        self._busy_timeout = busy_timeout
        self._synchronous = "FULL" if durability == "full" else "NORMAL"
        # A small pool, as SQLAlchemy keeps: a connection per concurrent user (threads), reused.
        self._idle: list[sqlite3.Connection] = []
        self._pool_lock = threading.Lock()
        self._closed = False
        # Appends from several threads at once share a transaction (ledger/group.py).
        self._group = GroupCommit(self) if group_commit else None
        self.commits = Counter()  # write transactions committed (for benchmarks and tests)

    # -- connections -------------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            str(self.path),
            timeout=self._busy_timeout,
            isolation_level=None,
            check_same_thread=False,
        )
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(f"PRAGMA synchronous={self._synchronous}")
            conn.execute(f"PRAGMA busy_timeout={int(self._busy_timeout * 1000)}")
        except BaseException:
            conn.close()
            raise
        return conn

    @contextmanager
    def _connection(self) -> Iterator[sqlite3.Connection]:
        with self._pool_lock:
            conn = self._idle.pop() if self._idle else None
        if conn is None:
            conn = self._connect()
        try:
            yield conn
        finally:
            try:
                if conn.in_transaction:
                    conn.rollback()
            except sqlite3.Error:
                conn.close()
                conn = None
            if conn is not None:
                with self._pool_lock:
                    if self._closed:
                        conn.close()
                    else:
                        self._idle.append(conn)

    @contextmanager
    def _queries(self) -> Iterator[SqliteQueries]:
        with self._connection() as conn:
            yield SqliteQueries(conn)

    # -- writing -----------------------------------------------------------------------------

    @contextmanager
    def transaction(self) -> Iterator[Transaction]:
        """A write transaction holding the ledger's write lock (for appends and checkpoints)."""
        with self._connection() as conn:
            # A deferred transaction that reads and then writes gets SQLITE_BUSY at once under
            # WAL, whatever the busy timeout; taking the write lock up front makes writers queue.
            conn.execute("BEGIN IMMEDIATE")
            tx = Transaction(conn)
            yield tx  # an exception leaves the transaction open: _connection rolls it back
            conn.execute("COMMIT")
        self.commits.add()
        if tx.committed_head is not None and self.head_path is not None:
            HeadFile(self.head_path).write(tx.committed_head)

    def append(
        self,
        stream_id: str,
        new_events: Sequence[NewEvent],
        expected_version: int | None,
        *,
        conn: Transaction | None = None,
        guard: Guard | None = None,
    ) -> list[RecordedEvent]:
        """See `EventStore.append`: the same contract."""
        if not new_events:
            return []
        if conn is None:
            if self._group is not None:
                return self._group.append(stream_id, new_events, expected_version, guard=guard)
            with self.transaction() as own:
                return self.append(stream_id, new_events, expected_version, conn=own, guard=guard)
        if guard is not None:
            guard(Snapshot(self, conn.conn))
        return self._append(conn, stream_id, new_events, expected_version)

    def _append(
        self,
        tx: Transaction,
        stream_id: str,
        new_events: Sequence[NewEvent],
        expected_version: int | None,
    ) -> list[RecordedEvent]:
        conn = tx.conn
        current, head_pos, head_hash = conn.execute(_TIP, (stream_id,)).fetchone()
        if expected_version is not None and current != expected_version:
            raise ConcurrencyError(stream_id, expected_version, current)
        head = Head(head_pos, head_hash or GENESIS_HASH)
        recorded_at = format_timestamp(self._clock())
        recorded = link(head, stream_id, current, new_events, recorded_at, identity=self._identity)
        try:
            conn.executemany(_INSERT, [as_row(r) for r in recorded])
        except sqlite3.IntegrityError as exc:  # only reachable if a writer bypassed the lock
            raise ConcurrencyError(stream_id, expected_version, current) from exc
        if self.head_path is not None and (
            # An earlier append in this transaction found the file true; it still is.
            tx.committed_head is not None
            or HeadFile(self.head_path).holds(head, lambda p: _hash_at(conn, p))
        ):
            tx.committed_head = Head(recorded[-1].position, recorded[-1].hash)
        return recorded[len(recorded) - len(new_events) :]

    # -- reading -----------------------------------------------------------------------------

    def head(self) -> Head:
        with self._connection() as conn:
            return _head(conn)

    def identity(self) -> str | None:
        """This ledger's id (see `ledger.events.identity_of`); None while it is empty."""
        with self._queries() as q:
            return q.identity()

    def hashes_at(self, positions: Sequence[int]) -> dict[int, str]:
        """The stored hash at each of `positions` that exists (for comparing reported heads)."""
        wanted = sorted({int(p) for p in positions})
        found: dict[int, str] = {}
        with self._connection() as conn:
            for start in range(0, len(wanted), 500):
                chunk = wanted[start : start + 500]
                marks = ", ".join("?" * len(chunk))
                rows = conn.execute(
                    f"SELECT position, hash FROM events WHERE position IN ({marks})", chunk
                )
                found.update((int(p), h) for p, h in rows)
        return found

    def stream_version(self, stream_id: str) -> int:
        with self._connection() as conn:
            sql = "SELECT coalesce(max(stream_version), 0) FROM events WHERE stream_id = ?"
            return conn.execute(sql, (stream_id,)).fetchone()[0]

    def read_stream(self, stream_id: str, after_version: int = 0) -> list[RecordedEvent]:
        with self._queries() as q:
            return q.read_stream(stream_id, after_version)

    def read_all(self, after: int = 0, *, batch: int = 5000) -> Iterator[RecordedEvent]:
        """Every event after `after` in position order, fetched in batches (for projections)."""
        while True:
            with self._connection() as conn:
                rows = _read_after(conn, after, batch)
            yield from rows
            if len(rows) < batch:
                return
            after = rows[-1].position

    def streams_with_prefix(self, prefix: str, limit: int = 10) -> list[str]:
        with self._queries() as q:
            return q.streams_with_prefix(prefix, limit)

    def verify(self, *, batch: int = 20000) -> VerifyReport:
        """Walk the chain in position order; name the first position that does not hold."""
        with self._connection() as conn:
            conn.execute("BEGIN")  # one read view for the whole walk, as a streamed query has
            cursor = conn.execute(f"SELECT {COLUMNS} FROM events ORDER BY position")
            cursor.arraysize = batch
            return verify_rows(row for rows in iter(cursor.fetchmany, []) for row in rows)

    # -- reading for projections (the `Reader` protocol) --------------------------------------

    def query(self, sql: str, params: Mapping[str, object] | None = None) -> list[tuple[Any, ...]]:
        """A read-only query with `:name` parameters: the same text runs on both engines."""
        with self._queries() as q:
            return q.query(sql, params)

    def head_position(self) -> int:
        return self.head().position

    def get_checkpoint(self, name: str) -> int:
        with self._connection() as conn:
            return _checkpoint(conn, name) or 0

    def is_current(self, checkpoint: str) -> bool:
        """Has the projection behind `checkpoint` seen every event? False before its first
        catch-up (no checkpoint row: its table may not exist yet)."""
        with self._connection() as conn:
            conn.execute("BEGIN")
            position = _checkpoint(conn, checkpoint)
            return position is not None and position == _head(conn).position

    @contextmanager
    def snapshot(self) -> Iterator[Snapshot]:
        """A consistent read view without any lock (WAL): every read in it sees the ledger and
        the projection tables as of one moment."""
        with self._connection() as conn:
            conn.execute("BEGIN")
            yield Snapshot(self, conn)
            conn.execute("COMMIT")

    # -- writing projections -----------------------------------------------------------------

    def ensure_projection(self, table: TableSpec, checkpoint: str) -> None:
        """See `EventStore.ensure_projection`: created once, under the write lock."""
        with self._connection() as conn:
            if _checkpoint(conn, checkpoint) is not None:
                return
        with self.transaction() as tx:
            if _checkpoint(tx.conn, checkpoint) is not None:
                return
            exists = tx.conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (table.name,)
            ).fetchone()
            if not exists:
                for statement in create_table(table):
                    tx.conn.execute(statement)
            _set_checkpoint(tx.conn, checkpoint, 0)

    def write_projection(
        self,
        table: TableSpec,
        rows: Sequence[Row],
        checkpoint: str,
        expected: int,
        position: int,
    ) -> bool:
        """See `EventStore.write_projection`: rows and checkpoint together, or nothing."""
        with self.transaction() as tx:
            if (_checkpoint(tx.conn, checkpoint) or 0) != expected:
                return False
            if rows:
                names = list(rows[0])
                tx.conn.executemany(
                    upsert(table, names), [tuple(r.get(n) for n in names) for r in rows]
                )
            _set_checkpoint(tx.conn, checkpoint, position)
        return True

    def reset_projection(self, table: TableSpec, checkpoints: Sequence[str]) -> None:
        """Delete every row and set the checkpoints to 0, atomically."""
        with self.transaction() as tx:
            tx.conn.execute(f"DELETE FROM {table.name}")
            for name in checkpoints:
                _set_checkpoint(tx.conn, name, 0)

    def set_checkpoint(self, name: str, position: int) -> None:
        with self.transaction() as tx:
            _set_checkpoint(tx.conn, name, position)

    # -- the head file ---------------------------------------------------------------------

    def read_head_file(self) -> Head | None:
        return None if self.head_path is None else HeadFile(self.head_path).read()

    def head_file_problems(self, head: Head) -> list[dict[str, object]]:
        """Findings for audit: the head file beside the ledger against the verified chain."""
        if self.head_path is None:
            return []
        with self._connection() as conn:
            return HeadFile(self.head_path).problems(head, lambda p: _hash_at(conn, p))

    def close(self) -> None:
        """Close the pooled connections (as SQLAlchemy's dispose: a later call opens anew;
        a connection in use now is closed when it is given back)."""
        with self._pool_lock:
            idle, self._idle = self._idle, []
            self._closed = True
        for conn in idle:
            conn.close()


class Snapshot:
    """One read transaction (see `SqliteStore.snapshot`), or the view a guard reads inside
    the write transaction; the same methods as `ledger.store.Snapshot`."""

    def __init__(self, store: SqliteStore, conn: sqlite3.Connection) -> None:
        self._store = store
        self._queries = SqliteQueries(conn)
        self._conn = conn

    def checkpoint(self, name: str) -> int:
        return _checkpoint(self._conn, name) or 0

    def has_checkpoint(self, name: str) -> bool:
        """Was this projection's table created (its checkpoint row exists)?"""
        return _checkpoint(self._conn, name) is not None

    def read_after(self, after: int, limit: int) -> list[RecordedEvent]:
        return _read_after(self._conn, after, limit)

    def read_stream(self, stream_id: str, after_version: int = 0) -> list[RecordedEvent]:
        return self._queries.read_stream(stream_id, after_version)

    def query(self, sql: str, params: Mapping[str, object] | None = None) -> list[tuple[Any, ...]]:
        return self._queries.query(sql, params)

    def rows(self, table: TableSpec, keys: Iterable[Any]) -> dict[Any, Row]:
        names = table.column_names
        at = names.index(table.key)
        wanted = sorted(set(keys))
        out: dict[Any, Row] = {}
        for i in range(0, len(wanted), 500):  # bounded IN lists (SQLite's variable limit)
            chunk = wanted[i : i + 500]
            sql = (
                f"SELECT {', '.join(names)} FROM {table.name} "
                f"WHERE {table.key} IN ({', '.join('?' * len(chunk))})"
            )
            for r in self._conn.execute(sql, chunk):
                out[r[at]] = dict(zip(names, r, strict=True))
        return out


# -- SQL --------------------------------------------------------------------------------------


def _head(conn: sqlite3.Connection) -> Head:
    row = conn.execute(
        "SELECT position, hash FROM events ORDER BY position DESC LIMIT 1"
    ).fetchone()
    return Head(row[0], row[1]) if row else Head(0, GENESIS_HASH)


def _hash_at(conn: sqlite3.Connection, position: int) -> str | None:
    row = conn.execute("SELECT hash FROM events WHERE position = ?", (position,)).fetchone()
    return row[0] if row else None


def _read_after(conn: sqlite3.Connection, after: int, limit: int) -> list[RecordedEvent]:
    rows = conn.execute(
        f"SELECT {COLUMNS} FROM events WHERE position > ? ORDER BY position LIMIT ?",
        (after, int(limit)),
    ).fetchall()
    return [RecordedEvent(*r) for r in rows]


def _checkpoint(conn: sqlite3.Connection, name: str) -> int | None:
    row = conn.execute(
        "SELECT position FROM projection_checkpoints WHERE name = ?", (name,)
    ).fetchone()
    return row[0] if row else None


def _set_checkpoint(conn: sqlite3.Connection, name: str, position: int) -> None:
    updated = conn.execute(
        "UPDATE projection_checkpoints SET position = ? WHERE name = ?", (position, name)
    ).rowcount
    if not updated:
        conn.execute(
            "INSERT INTO projection_checkpoints (name, position) VALUES (?, ?)", (name, position)
        )


_TYPES = {ColumnType.INTEGER: "INTEGER", ColumnType.REAL: "FLOAT"}


def create_table(spec: TableSpec) -> list[str]:
    """The DDL SQLAlchemy emits on SQLite for `ledger.store._sqlalchemy_table(spec)`, so a
    projection table is the same table whichever store created it."""
    lines = []
    for c in spec.columns:
        if c.name == spec.key and spec.serial:
            kind = "INTEGER"  # the rowid
        elif c.type is ColumnType.TEXT:
            kind = f"VARCHAR({c.length})" if c.length else "TEXT"
        else:
            kind = _TYPES[c.type]
        lines.append(f"\t{c.name} {kind}{'' if c.nullable else ' NOT NULL'}")
    lines.append(f"\tPRIMARY KEY ({spec.key})")
    lines += [f"\tUNIQUE ({c.name})" for c in spec.columns if c.unique and not c.index]
    statements = [f"\nCREATE TABLE {spec.name} (\n" + ", \n".join(lines) + "\n)\n\n"]
    indexes = [
        (f"ix_{spec.name}_{c.name}", (c.name,), c.unique) for c in spec.columns if c.index
    ] + [(name, cols, False) for name, cols in spec.indexes]
    for name, cols, unique in sorted(indexes):
        statements.append(
            f"CREATE {'UNIQUE ' if unique else ''}INDEX {name} ON {spec.name} ({', '.join(cols)})"
        )
    return statements


def upsert(spec: TableSpec, names: Sequence[str]) -> str:
    """Insert rows by key, replacing a present row; in a `serial` table a row whose unique
    columns are already present is kept as it is (as `ledger.store._upsert`)."""
    sql = (
        f"INSERT INTO {spec.name} ({', '.join(names)}) VALUES ({', '.join('?' * len(names))})"
        " ON CONFLICT "
    )
    changed = ", ".join(f"{n} = excluded.{n}" for n in names if n != spec.key)
    if spec.serial or not changed:  # (a row of its key alone has nothing to replace)
        return sql + "DO NOTHING"
    return sql + f"({spec.key}) DO UPDATE SET {changed}"


# -- opening ---------------------------------------------------------------------------------


def open_at_head(
    path: Path,
    head_revision: str,
    *,
    clock: Clock = utc_now,
    durability: Durability = "full",
    busy_timeout: float = 60.0,
    identity: bool = False,
    group_commit: bool = True,
) -> SqliteStore | None:
    """The store on an existing SQLite ledger at `head_revision`, else None: a file that is
    missing, empty, older or newer goes to the SQLAlchemy path (create, migrate or refuse)."""
    if not path.is_file():
        return None
    store = SqliteStore(
        path,
        clock=clock,
        durability=durability,
        busy_timeout=busy_timeout,
        identity=identity,
        group_commit=group_commit,
    )
    try:
        with store._connection() as conn:
            row = conn.execute(f"SELECT version_num FROM {LEDGER_VERSION_TABLE}").fetchone()
    except sqlite3.Error:
        store.close()
        return None
    if row is None or row[0] != head_revision:
        store.close()
        return None
    return store
