"""The event store: one implementation over SQLAlchemy Core, for SQLite and PostgreSQL.

Appends take the database's write lock first (SQLite `BEGIN IMMEDIATE`, PostgreSQL an advisory
lock), then read the chain head, so positions are gapless and every event's `prev_hash` is the
hash of the event before it. Readers never block writers (WAL / MVCC). What differs between
the engines (engine and pragmas, the write lock, the driver's placeholder, reading a SQLite
ledger this process cannot write) is in ledger/dialects/; the chain and the head file in
ledger/chain.py.

The hot paths (`imagen generate` appends several times per image; a catch-up reads, looks up
and upserts projection rows by the thousand) run the driver's own SQL, built once per store
(projection SQL once per table; its upsert is the same text on both engines), on pooled
connections: no reflection, and alembic is imported only when a ledger is not at this code's
schema head.
"""

from __future__ import annotations

import importlib
import weakref
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from functools import partial
from operator import itemgetter
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    Engine,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    text,
)
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import DBAPIError, IntegrityError

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
from ledger.dialects import Dialect, Opened
from ledger.errors import ConcurrencyError, LedgerError, NoLedgerError, ProtectedStreamError
from ledger.events import GENESIS_HASH, NewEvent, RecordedEvent, identity_of, keeps_head_file
from ledger.group import GroupCommit
from ledger.interface import ColumnType, Guard, Row, TableSpec
from ledger.revision import current_revision, refuse_newer
from ledger.schema import LEDGER_HEAD, projection_checkpoints
from ledger.schema_names import COLUMNS as _COLUMNS

__all__ = ["Clock", "Durability", "EventStore", "Head", "VerifyReport", "format_timestamp"]

_HEAD_INFO = "ledger_head_appended"


class EventStore:
    """The ledger on one engine (see `ledger.interface.Store` for what callers rely on)."""

    def __init__(
        self,
        opened: Opened,
        dialect: Dialect,
        *,
        clock: Clock = utc_now,
        identity: bool = False,
        group_commit: bool = True,
    ) -> None:
        self.engine: Engine = opened.engine
        self._opened, self._dialect = opened, dialect
        # A private copy (a read-only ledger's WAL) goes when the store closes, or at exit.
        self._cleanup = weakref.finalize(self, opened.cleanup or (lambda: None))
        self.dialect = dialect.name
        self._clock = clock
        # A SQLite ledger keeps its chain head in a file beside it too (see chain.HeadFile).
        self.head_path = opened.head_path
        # With identity, the first append to an empty ledger writes a LedgerCreated event first.
        self._identity = identity
        self._tables: dict[TableSpec, Table] = {}
        # Projection SQL in the driver's own text, built once per table (and row shape).
        self._upserts: dict[tuple[TableSpec, tuple[str, ...]], str] = {}
        self._selects: dict[TableSpec, str] = {}
        p = dialect.param
        where = f"SELECT {_COLUMNS} FROM events WHERE"
        self._sql = {
            "tip": (
                f"SELECT coalesce((SELECT max(stream_version) FROM events WHERE stream_id = {p}),"
                " 0), coalesce((SELECT max(position) FROM events), 0),"
                " (SELECT hash FROM events ORDER BY position DESC LIMIT 1)"
            ),
            "insert": f"INSERT INTO events ({_COLUMNS}) VALUES ({', '.join([p] * 10)})",
            "head": "SELECT position, hash FROM events ORDER BY position DESC LIMIT 1",
            "hash_at": f"SELECT hash FROM events WHERE position = {p}",
            "first": f"SELECT {_COLUMNS} FROM events WHERE position = 1",
            "version": f"SELECT coalesce(max(stream_version), 0) FROM events WHERE stream_id = {p}",
            "stream": f"{where} stream_id = {p} AND stream_version > {p} ORDER BY stream_version",
            "after": f"{where} position > {p} ORDER BY position LIMIT {p}",
            "after_all": f"{where} position > {p} AND position <= {p} ORDER BY position",
            "prefix": (
                f"SELECT DISTINCT stream_id FROM events WHERE stream_id >= {p} AND stream_id < {p}"
                f" ORDER BY stream_id LIMIT {p}"
            ),
            "all": f"SELECT {_COLUMNS} FROM events ORDER BY position",
            "checkpoint": f"SELECT position FROM projection_checkpoints WHERE name = {p}",
            "set_checkpoint": f"UPDATE projection_checkpoints SET position = {p} WHERE name = {p}",
            "add_checkpoint": f"INSERT INTO projection_checkpoints (name, position) VALUES ({p}, {p})",
        }
        # Appends from several threads at once share a transaction (ledger/group.py).
        self._group = GroupCommit(self) if group_commit else None
        self.commits = Counter()  # write transactions committed (for benchmarks and tests)

    def _one(self, conn: Connection, sql: str, *params: object) -> Any:
        return conn.exec_driver_sql(self._sql[sql], params).first()

    # -- writing -----------------------------------------------------------------------------

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        """A write transaction holding the ledger's write lock (for appends and checkpoints)."""
        try:
            with self.engine.connect() as conn:
                conn.info.pop(_HEAD_INFO, None)  # never a head left by a rolled-back transaction
                with conn.begin():
                    self._dialect.lock(conn)
                    yield conn
                committed: Head | None = conn.info.pop(_HEAD_INFO, None)
        except BaseException as exc:
            if not isinstance(exc, Exception):
                _let_go(exc)
            raise
        self.commits.add()
        if committed is not None and self.head_path is not None:
            HeadFile(self.head_path).write(committed)

    def append(
        self,
        stream_id: str,
        new_events: Sequence[NewEvent],
        expected_version: int | None,
        *,
        conn: Connection | None = None,
        guard: Guard | None = None,
    ) -> list[RecordedEvent]:
        """Append atomically; `expected_version` is the stream version the caller decided on
        (0 for a new stream), or None to append whatever the stream holds.

        `guard(view)` runs first, in the same transaction and under the write lock: a check
        and the append it allows are one step, so no other writer can slip in between. The
        view reads like a `Snapshot`; whatever the guard raises refuses the append (nothing is
        written) and reaches the caller unchanged."""
        if not new_events:
            return []
        if conn is None:
            if self._group is not None:
                return self._group.append(stream_id, new_events, expected_version, guard=guard)
            with self.transaction() as own:
                return self.append(stream_id, new_events, expected_version, conn=own, guard=guard)
        if guard is not None:
            guard(Snapshot(self, conn))
        # One round trip for the stream's version and the chain head (this is the hot path).
        current, head_pos, head_hash = self._one(conn, "tip", stream_id)
        if expected_version is not None and current != expected_version:
            raise ConcurrencyError(stream_id, expected_version, current)
        head = Head(head_pos, head_hash or GENESIS_HASH)
        recorded_at = format_timestamp(self._clock())
        # Under the write lock and in the caller's transaction: exactly one identity, and
        # never a ledger with content but without it.
        recorded = link(
            head,
            stream_id,
            current,
            new_events,
            recorded_at,
            identity=self._identity,
            head_file=self.head_path is not None,
        )
        try:
            conn.exec_driver_sql(self._sql["insert"], [as_row(r) for r in recorded])
        except IntegrityError as exc:  # only reachable if a writer bypassed the lock
            raise ConcurrencyError(stream_id, expected_version, current) from exc
        except DBAPIError as exc:
            refused = _protected_refusal(exc)
            if refused is None:
                raise
            raise ProtectedStreamError(refused) from exc
        if self.head_path is not None and head.position == 0 and _HEAD_INFO not in conn.info:
            HeadFile(self.head_path).start()  # the first commit: no crash leaves it without one
        if self.head_path is not None and (
            # An earlier append in this transaction found the file true; it still is.
            _HEAD_INFO in conn.info
            or HeadFile(self.head_path).holds(
                head, lambda p: self._hash_at(conn, p), lambda: self._keeps_head_file(conn)
            )
        ):
            conn.info[_HEAD_INFO] = Head(recorded[-1].position, recorded[-1].hash)
        return recorded[len(recorded) - len(new_events) :]

    # -- protected streams ------------------------------------------------------------------

    def protect_streams(self, prefixes: Sequence[str]) -> None:
        """Register stream-id prefixes only the ledger's owner role may append to (enforced by
        a trigger on PostgreSQL; SQLite has no roles and records them only). Registering is
        the owner's too: another role gets a ProtectedStreamError naming the owner."""
        missing = sorted(set(prefixes) - set(self.protected_streams()))
        if not missing:
            return
        try:
            with self.transaction() as conn:
                for prefix in missing:
                    conn.exec_driver_sql(
                        f"INSERT INTO {_PROTECTED} (prefix) VALUES ({self._dialect.param})"
                        " ON CONFLICT (prefix) DO NOTHING",
                        (prefix,),
                    )
        except DBAPIError as exc:
            if not _insufficient_privilege(exc):
                raise
            raise ProtectedStreamError(
                f"only the ledger's owner role {self.owner_role()} may protect streams "
                f"({', '.join(missing)}): run `imagen db upgrade ledger` as that role"
            ) from exc

    def protected_streams(self) -> list[str]:
        with self.engine.connect() as conn:
            return [r[0] for r in conn.exec_driver_sql(f"SELECT prefix FROM {_PROTECTED}")]

    def owner_role(self) -> str | None:
        """The role that owns the events table (PostgreSQL), None on SQLite."""
        if self.dialect != "postgresql":
            return None
        with self.engine.connect() as conn:
            return conn.exec_driver_sql(
                "SELECT pg_get_userbyid(relowner) FROM pg_class WHERE oid = 'events'::regclass"
            ).scalar()

    # -- reading -----------------------------------------------------------------------------

    def _head(self, conn: Connection) -> Head:
        row = self._one(conn, "head")
        return Head(row[0], row[1]) if row else Head(0, GENESIS_HASH)

    def head(self) -> Head:
        with self.engine.connect() as conn:
            return self._head(conn)

    def identity(self) -> str | None:
        """This ledger's id (see `ledger.events.identity_of`); None while it is empty."""
        return identity_of(next(iter(self.read_all(0, batch=1)), None))

    def hashes_at(self, positions: Sequence[int]) -> dict[int, str]:
        """The stored hash at each of `positions` that exists (for comparing reported heads)."""
        with self.engine.connect() as conn:
            found = {int(p): self._hash_at(conn, int(p)) for p in set(positions)}
        return {p: h for p, h in found.items() if h is not None}

    def stream_version(self, stream_id: str) -> int:
        with self.engine.connect() as conn:
            return int(self._one(conn, "version", stream_id)[0])

    def read_stream(self, stream_id: str, after_version: int = 0) -> list[RecordedEvent]:
        with self.engine.connect() as conn:
            return _read_stream(self, conn, stream_id, after_version)

    def read_all(self, after: int = 0, *, batch: int = 5000) -> Iterator[RecordedEvent]:
        """Every event after `after` in position order, fetched in batches (for projections)."""
        while True:
            with self.engine.connect() as conn:
                rows = _read_after(self, conn, after, batch)
            yield from rows
            if len(rows) < batch:
                return
            after = rows[-1].position

    def read_batches(
        self, after: int = 0, *, batch: int = 20000, until: int | None = None
    ) -> Iterator[list[RecordedEvent]]:
        """The events after `after` (up to `until`, if given) in position order, as lists of at
        most `batch`, all in ONE read view (the ledger as of the first read) and streamed from
        the driver: memory holds one batch, whatever the ledger's length (for audit and any
        walk that must see one consistent ledger).

        Rows are made events a few hundred at a time, as in `_events` (measured: 0.35 s CPU
        against 0.53 s for 20,000-row partitions of 210k events). Through SQLAlchemy's
        partitions, not the driver's cursor: a server-side cursor's first row is already in
        SQLAlchemy's buffer."""
        sql, params = self._sql["after_all"], (after, until if until is not None else 2**62)
        with self.engine.connect() as conn, conn.begin():
            self._dialect.read_view(conn)
            result = conn.execution_options(stream_results=True, yield_per=_FETCH)
            events: list[RecordedEvent] = []
            for rows in result.exec_driver_sql(sql, params).partitions(_FETCH):
                events.extend(map(_event, rows))
                while len(events) >= batch:
                    yield events[:batch]
                    events = events[batch:]
            if events:
                yield events

    def streams_with_prefix(self, prefix: str, limit: int = 10) -> list[str]:
        """Stream ids starting with `prefix` (an index range scan, on both engines)."""
        upper = prefix[:-1] + chr(ord(prefix[-1]) + 1) if prefix else "\uffff"
        with self.engine.connect() as conn:
            rows = conn.exec_driver_sql(self._sql["prefix"], (prefix, upper, limit)).fetchall()
        return [r[0] for r in rows]

    def verify(self, *, batch: int = 20000) -> VerifyReport:
        """Walk the chain in position order; name the first position that does not hold."""
        with self.engine.connect() as conn, conn.begin():
            self._dialect.read_view(conn)  # one read view for the whole walk
            result = conn.execution_options(stream_results=True, yield_per=batch).exec_driver_sql(
                self._sql["all"]
            )
            return verify_rows(row for rows in result.partitions(batch) for row in rows)

    # -- reading for projections (the `Reader` protocol) --------------------------------------

    def rows(self, table: TableSpec, keys: Iterable[Any]) -> dict[Any, Row]:
        """The rows of a projection table with these keys (`table.key`, which may name any
        unique column), as fresh dicts."""
        with self.engine.connect() as conn:
            return _rows(self, conn, table, keys)

    def row_values(self, table: TableSpec, keys: Iterable[Any]) -> dict[Any, tuple[Any, ...]]:
        """`rows`, each as its values in `table.column_names` order: for a caller comparing
        many rows (audit), which needs no dict per row."""
        with self.engine.connect() as conn:
            return _row_values(self, conn, table, keys)

    def query(self, sql: str, params: Mapping[str, object] | None = None) -> list[tuple[Any, ...]]:
        """A read-only query with `:name` parameters: the same text runs on both engines."""
        with self.engine.connect() as conn:
            return [tuple(r) for r in conn.execute(text(sql), dict(params or {})).fetchall()]

    def head_position(self) -> int:
        return self.head().position

    def get_checkpoint(self, name: str) -> int:
        with self.engine.connect() as conn:
            return self._checkpoint(conn, name) or 0

    def is_current(self, checkpoint: str) -> bool:
        """Has the projection behind `checkpoint` seen every event? False before its first
        catch-up (no checkpoint row: its table may not exist yet)."""
        with self.engine.connect() as conn, conn.begin():
            self._dialect.read_view(conn)
            position = self._checkpoint(conn, checkpoint)
            return position is not None and position == self._head(conn).position

    @contextmanager
    def snapshot(self) -> Iterator[Snapshot]:
        """A consistent read view without any lock (WAL / MVCC): every read in it sees the
        ledger and the projection tables as of one moment."""
        with self.engine.connect() as conn:
            if self._dialect.snapshot_isolation:
                conn = conn.execution_options(isolation_level=self._dialect.snapshot_isolation)
            with conn.begin():
                self._dialect.read_view(conn)
                yield Snapshot(self, conn)

    # -- writing projections -----------------------------------------------------------------

    def ensure_projection(self, table: TableSpec, checkpoint: str) -> None:
        """Create a projection's table once, under the write lock: processes using a fresh
        ledger at once would otherwise race on check-then-create ("database is locked" on
        SQLite, DuplicateTable on PostgreSQL). The checkpoint row marks it as created."""
        with self.engine.connect() as conn:
            if self._checkpoint(conn, checkpoint) is not None:
                return
        with self.transaction() as conn:
            if self._checkpoint(conn, checkpoint) is not None:
                return
            self._table(table).create(conn, checkfirst=True)
            self._set_checkpoint(conn, checkpoint, 0)

    def write_projection(
        self,
        table: TableSpec,
        rows: Sequence[Row],
        checkpoint: str,
        expected: int,
        position: int,
    ) -> bool:
        """Write rows and move the checkpoint from `expected` to `position`, atomically under
        the write lock; False (nothing written) if the checkpoint is no longer `expected`.

        Rows are upserted by key; in a `serial` table a row whose unique columns are already
        present is kept as it is. Every row has the first row's columns.

        One executemany of the driver's own SQL over tuples: a SQLAlchemy insert construct
        compiled and given dicts cost 0.18 s CPU for the 10k jobs of a first catch-up."""
        if rows:
            columns = tuple(rows[0])
            sql = self._upsert_sql(table, columns)
            values = itemgetter(*columns) if len(columns) > 1 else lambda r: (r[columns[0]],)
            params = list(map(values, rows))
        with self.transaction() as conn:
            if (self._checkpoint(conn, checkpoint) or 0) != expected:
                return False
            if rows:
                conn.exec_driver_sql(sql, params)
            self._set_checkpoint(conn, checkpoint, position)
        return True

    def _upsert_sql(self, spec: TableSpec, columns: tuple[str, ...]) -> str:
        sql = self._upserts.get((spec, columns))
        if sql is None:
            unknown = sorted(set(columns) - set(spec.column_names))
            if unknown:
                raise LedgerError(f"projection table {spec.name} has no column {unknown[0]!r}")
            sql = _upsert(spec, columns, self._quote, self._dialect.param)
            self._upserts[(spec, columns)] = sql
        return sql

    def _select_sql(self, spec: TableSpec, keys: int) -> str:
        """SELECT every column of the rows whose key is one of `keys` parameters."""
        if keys == _IN_LIMIT and spec in self._selects:
            return self._selects[spec]
        q = self._quote
        sql = (
            f"SELECT {', '.join(map(q, spec.column_names))} FROM {q(spec.name)}"
            f" WHERE {q(spec.key)} IN ({', '.join([self._dialect.param] * keys)})"
        )
        if keys == _IN_LIMIT:
            self._selects[spec] = sql
        return sql

    def _after_types(self, n: int) -> str:
        """Events after a position, of one of `n` types. `type || ''` keeps the planner on
        the position order: matched through the type index instead, SQLite read each type's
        events and sorted them (measured 5x slower on a whole ledger)."""
        key = f"after_types_{n}"
        if key not in self._sql:
            p = self._dialect.param
            self._sql[key] = (
                f"SELECT {_COLUMNS} FROM events WHERE position > {p}"
                f" AND (type || '') IN ({', '.join([p] * n)}) ORDER BY position LIMIT {p}"
            )
        return self._sql[key]

    def _quote(self, name: str) -> str:
        quoted: str = self.engine.dialect.identifier_preparer.quote(name)
        return quoted

    def reset_projection(self, table: TableSpec, checkpoints: Sequence[str]) -> None:
        """Delete every row and set the checkpoints to 0, atomically."""
        with self.transaction() as conn:
            conn.execute(self._table(table).delete())
            for name in checkpoints:
                self._set_checkpoint(conn, name, 0)

    def set_checkpoint(self, name: str, position: int) -> None:
        with self.transaction() as conn:
            self._set_checkpoint(conn, name, position)

    def _checkpoint(self, conn: Connection, name: str) -> int | None:
        row = self._one(conn, "checkpoint", name)
        return None if row is None else int(row[0])

    def _set_checkpoint(self, conn: Connection, name: str, position: int) -> None:
        if not conn.exec_driver_sql(self._sql["set_checkpoint"], (position, name)).rowcount:
            conn.exec_driver_sql(self._sql["add_checkpoint"], (name, position))

    def _table(self, spec: TableSpec) -> Table:
        table = self._tables.get(spec)
        if table is None:
            table = self._tables[spec] = _sqlalchemy_table(spec)
        return table

    # -- the head file ---------------------------------------------------------------------

    def _hash_at(self, conn: Connection, position: int) -> str | None:
        row = self._one(conn, "hash_at", position)
        return None if row is None else str(row[0])

    def _keeps_head_file(self, conn: Connection) -> bool:
        row = self._one(conn, "first")
        return keeps_head_file(None if row is None else RecordedEvent(*row))

    def read_head_file(self) -> Head | None:
        return None if self.head_path is None else HeadFile(self.head_path).read()

    def head_file_problems(self, head: Head) -> list[dict[str, object]]:
        """Findings for audit: the head file beside the ledger against the verified chain."""
        if self.head_path is None:
            return []
        with self.engine.connect() as conn:
            return HeadFile(self.head_path).problems(
                head, lambda p: self._hash_at(conn, p), self._keeps_head_file(conn)
            )

    # -- a ledger this process cannot write --------------------------------------------------

    def scratch(self) -> EventStore | None:
        """A store reading this ledger's events without writing anything to it: projection
        tables and checkpoints live in memory. For read-only commands on a SQLite ledger this
        process cannot write: projections are folded there instead. None on PostgreSQL."""
        engine = None if self._opened.source is None else self._dialect.scratch(self._opened.source)
        if engine is None:
            return None
        with engine.begin() as conn:
            projection_checkpoints.create(conn)
        return EventStore(Opened(engine), self._dialect, group_commit=False)

    def close(self) -> None:
        self.engine.dispose()
        self._cleanup()


class Snapshot:
    """One read transaction (see `EventStore.snapshot`), or what a guard reads inside the
    append's transaction: the `ledger.interface.LockedView` a projection's fold reads."""

    def __init__(self, store: EventStore, conn: Connection) -> None:
        self._store, self._conn = store, conn

    def checkpoint(self, name: str) -> int:
        return self._store._checkpoint(self._conn, name) or 0

    def has_checkpoint(self, name: str) -> bool:
        """Was this projection's table created (its checkpoint row exists)?"""
        return self._store._checkpoint(self._conn, name) is not None

    def read_after(
        self, after: int, limit: int, types: Collection[str] | None = None
    ) -> list[RecordedEvent]:
        """Up to `limit` events after position `after`; only those of `types` if given."""
        return _read_after(self._store, self._conn, after, limit, types)

    def head_position(self) -> int:
        return self._store._head(self._conn).position

    def hash_at(self, position: int) -> str | None:
        """The hash recorded at `position` (None past the head): whether a cache folded up to
        there still describes this chain."""
        return self._store._hash_at(self._conn, position)

    def read_stream(self, stream_id: str, after_version: int = 0) -> list[RecordedEvent]:
        return _read_stream(self._store, self._conn, stream_id, after_version)

    def query(self, sql: str, params: Mapping[str, object] | None = None) -> list[tuple[Any, ...]]:
        """A read in this view, with `:name` parameters (the text `EventStore.query` takes)."""
        return [tuple(r) for r in self._conn.execute(text(sql), dict(params or {})).fetchall()]

    def rows(self, table: TableSpec, keys: Iterable[Any]) -> dict[Any, Row]:
        """The rows with these keys, as fresh dicts (the caller's to change)."""
        return _rows(self._store, self._conn, table, keys)


def _rows(
    store: EventStore, conn: Connection, table: TableSpec, keys: Iterable[Any]
) -> dict[Any, Row]:
    names = table.column_names
    found = _row_values(store, conn, table, keys)
    return {k: dict(zip(names, values, strict=True)) for k, values in found.items()}


def _row_values(
    store: EventStore, conn: Connection, table: TableSpec, keys: Iterable[Any]
) -> dict[Any, tuple[Any, ...]]:
    key = table.column_names.index(table.key)
    wanted = sorted(set(keys))
    out: dict[Any, tuple[Any, ...]] = {}
    for i in range(0, len(wanted), _IN_LIMIT):  # bounded IN lists (SQLite's variable limit)
        part = wanted[i : i + _IN_LIMIT]
        result = conn.exec_driver_sql(store._select_sql(table, len(part)), tuple(part))
        try:
            for r in result.cursor.fetchall():
                out[r[key]] = tuple(r)
        finally:
            result.close()
    return out


_IN_LIMIT = 500  # keys in one IN list (SQLite allows 32,766 parameters; PostgreSQL 65,535)


_PROTECTED = "ledger_protected_streams"


def _let_go(exc: BaseException) -> None:
    """An exit (Ctrl-C; SIGTERM's exception) taken inside a statement: SQLAlchemy gives the
    connection up without a rollback, and SQLite keeps the write lock until the interrupted
    statement is finalized, which the traceback's frames keep alive for as long as the caller
    handles the exception. This process's next append (a job's JobInterrupted or
    CancelRequested) would wait out the busy timeout. So the frames' locals are dropped here:
    the statement goes, and the lock with it (the traceback's lines are kept)."""
    import traceback

    traceback.clear_frames(exc.__traceback__)


def _insufficient_privilege(exc: DBAPIError) -> bool:
    return getattr(exc.orig, "sqlstate", None) == "42501"


def _protected_refusal(exc: DBAPIError) -> str | None:
    """The trigger's one-line refusal of an append to a protected stream, or None."""
    if not _insufficient_privilege(exc):
        return None
    text = str(getattr(exc.orig, "diag", None) and exc.orig.diag.message_primary or exc.orig)
    return text if "is protected" in text else None


def _read_stream(
    store: EventStore, conn: Connection, stream_id: str, after_version: int
) -> list[RecordedEvent]:
    return _events(conn, store._sql["stream"], (stream_id, after_version))


def _read_after(
    store: EventStore,
    conn: Connection,
    after: int,
    limit: int,
    types: Collection[str] | None = None,
) -> list[RecordedEvent]:
    if types is None:
        return _events(conn, store._sql["after"], (after, int(limit)))
    wanted = sorted(set(types))
    if not wanted:
        return []
    return _events(conn, store._after_types(len(wanted)), (after, *wanted, int(limit)))


# An event from a row's values, in C (no Python frame per row, as `RecordedEvent(*row)` has).
_event = partial(tuple.__new__, RecordedEvent)


def _events(conn: Connection, sql: str, params: tuple[Any, ...]) -> list[RecordedEvent]:
    """The events a query selects, built straight from the driver's row tuples: the SQL is
    the driver's own (no result types to process), so SQLAlchemy's `Row` per row would be
    built only to be copied (measured: a sixth of reading a batch).

    Fetched a few hundred rows at a time, each made an event while it is still in the CPU's
    cache: copying a whole 20,000-row batch after fetching it all touches every value again
    from memory (measured: 0.46 s CPU against 0.31 s for 210k events)."""
    result = conn.exec_driver_sql(sql, params)
    try:
        events: list[RecordedEvent] = []
        for rows in iter(partial(result.cursor.fetchmany, _FETCH), []):
            events.extend(map(_event, rows))
        return events
    finally:
        result.close()


_FETCH = 256  # rows per fetch (see `_events`; 128-512 measured alike)


_TYPES = {
    ColumnType.INTEGER: BigInteger().with_variant(Integer, "sqlite"),
    ColumnType.REAL: Float(),
}


def _sqlalchemy_table(spec: TableSpec) -> Table:
    """The spec as SQLAlchemy Core; names follow SQLAlchemy's defaults (ix_<table>_<column>),
    so tables created before the spec existed are the same tables."""
    columns = []
    for c in spec.columns:
        if c.name == spec.key and spec.serial:
            kind: Any = Integer  # SERIAL on PostgreSQL, the rowid on SQLite
        elif c.type is ColumnType.TEXT:
            kind = String(c.length) if c.length else Text
        else:
            kind = _TYPES[c.type]
        columns.append(
            Column(
                c.name,
                kind,
                primary_key=c.name == spec.key,
                autoincrement=spec.serial if c.name == spec.key else False,
                nullable=c.nullable,
                index=c.index or None,
                unique=c.unique or None,
            )
        )
    indexes = [Index(name, *cols) for name, cols in spec.indexes]
    return Table(spec.name, MetaData(), *columns, *indexes)


def _upsert(
    spec: TableSpec, columns: Sequence[str], quote: Callable[[str], str], param: str
) -> str:
    """Insert rows of `columns`; a row whose key is present replaces every other column (one
    the row lacks becomes NULL); in a `serial` table, a row conflicting on a unique column is
    dropped, keeping the row present. The same text on SQLite (3.24+) and PostgreSQL."""
    sql = (
        f"INSERT INTO {quote(spec.name)} ({', '.join(map(quote, columns))})"
        f" VALUES ({', '.join([param] * len(columns))}) ON CONFLICT"
    )
    changed = [quote(c) for c in spec.column_names if c != spec.key]
    if spec.serial or not changed:
        return f"{sql} DO NOTHING"
    sets = ", ".join(f"{c} = excluded.{c}" for c in changed)
    return f"{sql} ({quote(spec.key)}) DO UPDATE SET {sets}"


# -- opening ---------------------------------------------------------------------------------


def open_store(
    url: str,
    *,
    clock: Clock = utc_now,
    durability: Durability = "full",
    busy_timeout: float = 60.0,
    identity: bool = False,
    create: bool = True,
    group_commit: bool = True,
) -> EventStore:
    """Open (creating and migrating if needed) the ledger at a SQLAlchemy URL.

    create=False (for commands that only read): nothing is created or migrated; no ledger
    there is NoLedgerError, an older schema a LedgerError naming `imagen db upgrade ledger`.
    A SQLite ledger in a directory (or a file) this process cannot write is then opened
    read-only (see ledger/dialects/sqlite.py), and `scratch()` folds projections for it.

    identity=True: the first append to an empty ledger also records a `LedgerCreated` event
    (position 1) with a random id, the ledger's identity for off-machine anchoring.

    durability="full" fsyncs every commit (a paid prediction id survives power loss);
    "normal" survives a crash of the process but may lose the last commits on power loss.

    group_commit=True (see ledger/group.py): appends arriving from several threads at once
    share one transaction and one fsync; each returns once its own events are committed.
    """
    parsed = make_url(url)
    dialect = _dialect_for(parsed)
    opened = dialect.open(parsed, durability, busy_timeout, create)
    store = EventStore(opened, dialect, clock=clock, identity=identity, group_commit=group_commit)
    try:
        _ensure_schema(opened.engine, create)
    except BaseException:
        store.close()
        raise
    return store


def _dialect_for(url: URL) -> Dialect:
    name = url.get_backend_name()
    if name not in ("sqlite", "postgresql"):
        raise LedgerError(f"ledger URL {url.render_as_string()!r}: use sqlite:/// or postgresql://")
    module: Any = importlib.import_module(f"ledger.dialects.{name}")
    return module  # type: ignore[no-any-return]


def open_reader(url: str) -> EventStore | None:
    """The ledger at `url` opened for reading (`open_store(url, create=False)`), or None
    where there is none at this code's schema (missing, older, newer, or not a ledger)."""
    try:
        return open_store(url, create=False, group_commit=False)
    except (LedgerError, DBAPIError):
        return None


def _ensure_schema(engine: Engine, create: bool = True) -> None:
    with engine.connect() as conn, conn.begin():
        revision = current_revision(conn)
    if revision == LEDGER_HEAD:
        return  # the common case: no alembic import at all
    refuse_newer(engine, revision)
    if not create:
        where = engine.url.render_as_string(hide_password=True)
        if revision is None:
            raise NoLedgerError(f"no ledger yet at {where}: nothing has been recorded")
        raise LedgerError(
            f"the ledger at {where} has schema revision {revision!r}, older than this imagen's "
            f"{LEDGER_HEAD!r}; `imagen db upgrade ledger` migrates it (reading never does)"
        )
    from ledger.migrate import upgrade_ledger

    upgrade_ledger(engine)
