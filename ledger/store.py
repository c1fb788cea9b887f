"""The event store: one SQLAlchemy implementation for SQLite and PostgreSQL.

Appends take the database's write lock first (SQLite `BEGIN IMMEDIATE`, PostgreSQL a table lock),
then read the chain head, so positions are gapless and every event's `prev_hash` is the hash of
the event before it. Readers never block writers (WAL / MVCC).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
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
    create_engine,
    event,
    func,
    insert,
    select,
    text,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError

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
from ledger.errors import ConcurrencyError, LedgerError, NoLedgerError
from ledger.events import GENESIS_HASH, NewEvent, RecordedEvent, identity_of
from ledger.group import GroupCommit
from ledger.projection import ColumnType, Guard, Row, TableSpec
from ledger.revision import WRITE as _WRITE
from ledger.revision import current_revision, refuse_newer
from ledger.schema import (
    LEDGER_HEAD,
    events,
    projection_checkpoints,
)

__all__ = ["Clock", "Durability", "EventStore", "Head", "VerifyReport", "format_timestamp"]

_HEAD_INFO = "ledger_head_appended"
_APPEND_LOCK = 7261002  # PostgreSQL advisory lock key for appends (7261001: migrations)


from ledger.schema_names import COLUMNS as _COLUMNS  # noqa: E402


class EventStore:
    def __init__(
        self,
        engine: Engine,
        *,
        clock: Clock = utc_now,
        identity: bool = False,
        group_commit: bool = True,
    ) -> None:
        self.engine = engine
        self._clock = clock
        # A SQLite ledger keeps its chain head in a file beside it too (see chain.HeadFile).
        self.head_path: Path | None = None
        # With identity, the first append to an empty ledger writes a LedgerCreated event first.
        self._identity = identity
        self.dialect = engine.dialect.name
        self._tables: dict[TableSpec, Table] = {}
        p = self._param(0)
        self._sql_tip = (
            f"SELECT coalesce((SELECT max(stream_version) FROM events WHERE stream_id = {p}), 0),"
            " coalesce((SELECT max(position) FROM events), 0),"
            " (SELECT hash FROM events ORDER BY position DESC LIMIT 1)"
        )
        self._sql_insert = f"INSERT INTO events ({_COLUMNS}) VALUES ({', '.join([p] * 10)})"
        # Appends from several threads at once share a transaction (ledger/group.py).
        self._group = GroupCommit(self) if group_commit else None
        self.commits = Counter()  # write transactions committed (for benchmarks and tests)

    # -- writing -----------------------------------------------------------------------------

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        """A write transaction holding the ledger's write lock (for appends and checkpoints)."""
        with self.engine.connect().execution_options(**{_WRITE: True}) as conn:
            conn.info.pop(_HEAD_INFO, None)  # never a head left by a rolled-back transaction
            with conn.begin():
                if self.dialect == "postgresql":
                    # Serialises chain heads; reads are not blocked. An advisory lock, not
                    # LOCK TABLE: a writer role with only INSERT and SELECT on events may not
                    # take a table lock stronger than ROW EXCLUSIVE. (A writer bypassing it
                    # still cannot fork the chain: positions are a primary key.)
                    conn.execute(text(f"SELECT pg_advisory_xact_lock({_APPEND_LOCK})"))
                yield conn
            committed: Head | None = conn.info.pop(_HEAD_INFO, None)
        self.commits.add()
        if committed is not None and self.head_path is not None:
            self._write_head_file(committed)

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
        return self._append(conn, stream_id, new_events, expected_version)

    def _append(
        self,
        conn: Connection,
        stream_id: str,
        new_events: Sequence[NewEvent],
        expected_version: int | None,
    ) -> list[RecordedEvent]:
        # One round trip for the stream's version and the chain head (this is the hot path).
        current, head_pos, head_hash = conn.exec_driver_sql(self._sql_tip, (stream_id,)).one()
        if expected_version is not None and current != expected_version:
            raise ConcurrencyError(stream_id, expected_version, current)
        head = Head(head_pos, head_hash or GENESIS_HASH)
        recorded_at = format_timestamp(self._clock())
        # Under the write lock and in the caller's transaction: exactly one identity, and
        # never a ledger with content but without it.
        recorded = link(head, stream_id, current, new_events, recorded_at, identity=self._identity)
        try:
            conn.exec_driver_sql(self._sql_insert, [as_row(r) for r in recorded])
        except IntegrityError as exc:  # only reachable if a writer bypassed the lock
            raise ConcurrencyError(stream_id, expected_version, current) from exc
        if self.head_path is not None and (
            # An earlier append in this transaction found the file true; it still is.
            _HEAD_INFO in conn.info or self._head_file_holds(conn, head)
        ):
            conn.info[_HEAD_INFO] = Head(recorded[-1].position, recorded[-1].hash)
        return recorded[len(recorded) - len(new_events) :]

    # -- reading -----------------------------------------------------------------------------

    def _head(self, conn: Connection) -> Head:
        row = conn.execute(
            select(events.c.position, events.c.hash).order_by(events.c.position.desc()).limit(1)
        ).first()
        return Head(row[0], row[1]) if row else Head(0, GENESIS_HASH)

    def head(self) -> Head:
        with self.engine.connect() as conn:
            return self._head(conn)

    def identity(self) -> str | None:
        """This ledger's id (see `ledger.events.identity_of`); None while it is empty."""
        return identity_of(next(iter(self.read_all(0, batch=1)), None))

    def hashes_at(self, positions: Sequence[int]) -> dict[int, str]:
        """The stored hash at each of `positions` that exists (for comparing reported heads)."""
        wanted = sorted({int(p) for p in positions})
        found: dict[int, str] = {}
        with self.engine.connect() as conn:
            for start in range(0, len(wanted), 500):
                chunk = wanted[start : start + 500]
                rows = conn.execute(
                    select(events.c.position, events.c.hash).where(events.c.position.in_(chunk))
                )
                found.update((int(p), h) for p, h in rows)
        return found

    def stream_version(self, stream_id: str) -> int:
        with self.engine.connect() as conn:
            return conn.execute(
                select(func.coalesce(func.max(events.c.stream_version), 0)).where(
                    events.c.stream_id == stream_id
                )
            ).scalar_one()

    def read_stream(self, stream_id: str, after_version: int = 0) -> list[RecordedEvent]:
        with self.engine.connect() as conn:
            rows = conn.exec_driver_sql(
                f"SELECT {_COLUMNS} FROM events WHERE stream_id = {self._param(1)} "
                f"AND stream_version > {self._param(2)} ORDER BY stream_version",
                self._params(stream_id, after_version),
            ).fetchall()
        return [RecordedEvent(*row) for row in rows]

    def read_all(self, after: int = 0, *, batch: int = 5000) -> Iterator[RecordedEvent]:
        """Every event after `after` in position order, fetched in batches (for projections)."""
        while True:
            with self.engine.connect() as conn:
                rows = conn.exec_driver_sql(
                    f"SELECT {_COLUMNS} FROM events WHERE position > {self._param(1)} "
                    f"ORDER BY position LIMIT {int(batch)}",
                    self._params(after),
                ).fetchall()
            for row in rows:
                yield RecordedEvent(*row)
            if len(rows) < batch:
                return
            after = rows[-1][0]

    def streams_with_prefix(self, prefix: str, limit: int = 10) -> list[str]:
        """Stream ids starting with `prefix` (an index range scan, on both engines)."""
        upper = prefix[:-1] + chr(ord(prefix[-1]) + 1) if prefix else "\uffff"
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(events.c.stream_id)
                .where(events.c.stream_id >= prefix, events.c.stream_id < upper)
                .group_by(events.c.stream_id)
                .limit(limit)
            ).fetchall()
        return [r[0] for r in rows]

    def verify(self, *, batch: int = 20000) -> VerifyReport:
        """Walk the chain in position order; name the first position that does not hold."""
        with self.engine.connect() as conn:
            result = conn.execution_options(stream_results=True, yield_per=batch).exec_driver_sql(
                f"SELECT {_COLUMNS} FROM events ORDER BY position"
            )
            return verify_rows(row for rows in result.partitions(batch) for row in rows)

    # -- reading for projections (the `Reader` protocol) --------------------------------------

    def query(self, sql: str, params: Mapping[str, object] | None = None) -> list[tuple[Any, ...]]:
        """A read-only query with `:name` parameters: the same text runs on both engines."""
        with self.engine.connect() as conn:
            return [tuple(r) for r in conn.execute(text(sql), dict(params or {})).fetchall()]

    def head_position(self) -> int:
        return self.head().position

    def get_checkpoint(self, name: str) -> int:
        with self.engine.connect() as conn:
            return _checkpoint(conn, name) or 0

    def is_current(self, checkpoint: str) -> bool:
        """Has the projection behind `checkpoint` seen every event? False before its first
        catch-up (no checkpoint row: its table may not exist yet)."""
        with self.engine.connect() as conn:
            position = _checkpoint(conn, checkpoint)
            return position is not None and position == self._head(conn).position

    @contextmanager
    def snapshot(self) -> Iterator[Snapshot]:
        """A consistent read view without any lock (WAL / MVCC): every read in it sees the
        ledger and the projection tables as of one moment."""
        with self.engine.connect() as conn:
            if self.dialect == "postgresql":
                conn = conn.execution_options(isolation_level="REPEATABLE READ")
            with conn.begin():
                yield Snapshot(self, conn)

    # -- writing projections -----------------------------------------------------------------

    def ensure_projection(self, table: TableSpec, checkpoint: str) -> None:
        """Create a projection's table once, under the write lock: processes using a fresh
        ledger at once would otherwise race on check-then-create ("database is locked" on
        SQLite, DuplicateTable on PostgreSQL). The checkpoint row marks it as created."""
        with self.engine.connect() as conn:
            if _checkpoint(conn, checkpoint) is not None:
                return
        with self.transaction() as conn:
            if _checkpoint(conn, checkpoint) is not None:
                return
            self._table(table).create(conn, checkfirst=True)
            _set_checkpoint(conn, checkpoint, 0)

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
        present is kept as it is."""
        t = self._table(table)
        with self.transaction() as conn:
            if (_checkpoint(conn, checkpoint) or 0) != expected:
                return False
            if rows:
                conn.execute(_upsert(self.dialect, t, table), list(rows))
            _set_checkpoint(conn, checkpoint, position)
        return True

    def reset_projection(self, table: TableSpec, checkpoints: Sequence[str]) -> None:
        """Delete every row and set the checkpoints to 0, atomically."""
        with self.transaction() as conn:
            conn.execute(self._table(table).delete())
            for name in checkpoints:
                _set_checkpoint(conn, name, 0)

    def set_checkpoint(self, name: str, position: int) -> None:
        with self.transaction() as conn:
            _set_checkpoint(conn, name, position)

    def _table(self, spec: TableSpec) -> Table:
        table = self._tables.get(spec)
        if table is None:
            table = self._tables[spec] = _sqlalchemy_table(spec)
        return table

    # -- the head file ---------------------------------------------------------------------

    def _write_head_file(self, head: Head) -> None:
        assert self.head_path is not None
        HeadFile(self.head_path).write(head)

    def _head_file_holds(self, conn: Connection, tip: Head) -> bool:
        assert self.head_path is not None
        p = self._param(0)

        def hash_at(position: int) -> str | None:
            sql = f"SELECT hash FROM events WHERE position = {p}"
            return conn.exec_driver_sql(sql, (position,)).scalar()

        return HeadFile(self.head_path).holds(tip, hash_at)

    def read_head_file(self) -> Head | None:
        return None if self.head_path is None else HeadFile(self.head_path).read()

    def _hash_at(self, position: int) -> str | None:
        with self.engine.connect() as conn:
            return conn.execute(select(events.c.hash).where(events.c.position == position)).scalar()

    def head_file_problems(self, head: Head) -> list[dict[str, object]]:
        """Findings for audit: the head file beside the ledger against the verified chain."""
        if self.head_path is None:
            return []
        return HeadFile(self.head_path).problems(head, self._hash_at)

    def close(self) -> None:
        self.engine.dispose()

    # -- helpers -----------------------------------------------------------------------------

    def _param(self, n: int) -> str:
        return "?" if self.dialect == "sqlite" else "%s"

    def _params(self, *values: object) -> tuple[object, ...]:
        return values


class Snapshot:
    """One read transaction (see `EventStore.snapshot`); what a projection's fold reads."""

    def __init__(self, store: EventStore, conn: Connection) -> None:
        self._store, self._conn = store, conn

    def checkpoint(self, name: str) -> int:
        return _checkpoint(self._conn, name) or 0

    def read_after(self, after: int, limit: int) -> list[RecordedEvent]:
        rows = self._conn.execute(
            text(
                f"SELECT {_COLUMNS} FROM events WHERE position > :after ORDER BY position LIMIT :n"
            ),
            {"after": after, "n": int(limit)},
        ).fetchall()
        return [RecordedEvent(*r) for r in rows]

    def read_stream(self, stream_id: str, after_version: int = 0) -> list[RecordedEvent]:
        # The driver's own SQL: a usage fold reads one stream per ended job (hot path).
        p = self._store._param(0)
        rows = self._conn.exec_driver_sql(
            f"SELECT {_COLUMNS} FROM events WHERE stream_id = {p} AND stream_version > {p} "
            "ORDER BY stream_version",
            (stream_id, after_version),
        ).fetchall()
        return [RecordedEvent(*r) for r in rows]

    def query(self, sql: str, params: Mapping[str, object] | None = None) -> list[tuple[Any, ...]]:
        """A read in this view, with `:name` parameters (the text `EventStore.query` takes)."""
        return [tuple(r) for r in self._conn.execute(text(sql), dict(params or {})).fetchall()]

    def has_checkpoint(self, name: str) -> bool:
        """Was this projection's table created (its checkpoint row exists)?"""
        return _checkpoint(self._conn, name) is not None

    def rows(self, table: TableSpec, keys: Iterable[Any]) -> dict[Any, Row]:
        t = self._store._table(table)
        key = t.c[table.key]
        wanted = sorted(set(keys))
        out: dict[Any, Row] = {}
        for i in range(0, len(wanted), 500):  # bounded IN lists (SQLite's variable limit)
            for r in self._conn.execute(select(t).where(key.in_(wanted[i : i + 500]))).mappings():
                out[r[table.key]] = dict(r)
        return out


def _checkpoint(conn: Connection, name: str) -> int | None:
    return conn.execute(
        select(projection_checkpoints.c.position).where(projection_checkpoints.c.name == name)
    ).scalar()


def _set_checkpoint(conn: Connection, name: str, position: int) -> None:
    updated = conn.execute(
        projection_checkpoints.update()
        .where(projection_checkpoints.c.name == name)
        .values(position=position)
    ).rowcount
    if not updated:
        conn.execute(insert(projection_checkpoints).values(name=name, position=position))


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


def _upsert(dialect: str, table: Table, spec: TableSpec) -> Any:
    stmt = (postgresql if dialect == "postgresql" else sqlite).insert(table)
    if spec.serial:
        return stmt.on_conflict_do_nothing()
    changed = {c: stmt.excluded[c] for c in spec.column_names if c != spec.key}
    return stmt.on_conflict_do_update(index_elements=[spec.key], set_=changed)


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
    """The SQLAlchemy store on the ledger at a URL, created and migrated if needed. Callers
    use `ledger.open_store` (ledger/opening.py: the options are explained there), which
    comes here for PostgreSQL and for creating or migrating a SQLite ledger."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        engine = _sqlite_engine(url, durability, busy_timeout, create)
    elif parsed.get_backend_name() == "postgresql":
        if parsed.drivername == "postgresql":
            parsed = parsed.set(drivername="postgresql+psycopg")
        # lock_timeout: a writer waits for the write lock as long as on SQLite, then fails.
        options = f"-c lock_timeout={int(busy_timeout * 1000)}"
        engine = create_engine(
            parsed,
            pool_pre_ping=True,
            connect_args={"connect_timeout": 10, "options": options},
        )
    else:
        raise LedgerError(
            f"ledger URL {parsed.render_as_string()!r}: use sqlite:/// or postgresql://"
        )
    try:
        _ensure_schema(engine, create)
    except BaseException:
        engine.dispose()
        raise
    store = EventStore(engine, clock=clock, identity=identity, group_commit=group_commit)
    if engine.dialect.name == "sqlite" and engine.url.database not in (None, "", ":memory:"):
        store.head_path = Path(f"{engine.url.database}.head")
    return store


def _sqlite_engine(
    url: str, durability: Durability, busy_timeout: float, create: bool = True
) -> Engine:
    parsed = make_url(url)
    db = parsed.database
    if db and db != ":memory:" and not db.startswith("file:"):
        path = Path(db).expanduser()
        if not create and not path.exists():
            raise NoLedgerError(f"no ledger yet at {path}: nothing has been recorded")
        if create:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        # Prompts are private: create the file owner-only before SQLite opens it; SQLite gives
        # its -wal and -shm files the same mode as the database file. Only a file that does not
        # exist yet is opened here: closing any descriptor of a file drops every POSIX lock this
        # process holds on it, so touching an open ledger would release another store's locks.
        if create and not path.exists():
            try:
                os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600))
            except FileExistsError:
                pass  # another process created it first
        parsed = parsed.set(database=str(path))
    engine = create_engine(
        parsed,
        connect_args={"timeout": busy_timeout, "isolation_level": None, "check_same_thread": False},
    )
    synchronous = "FULL" if durability == "full" else "NORMAL"

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_conn, _record) -> None:  # type: ignore[no-untyped-def]
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute(f"PRAGMA synchronous={synchronous}")
        cur.execute(f"PRAGMA busy_timeout={int(busy_timeout * 1000)}")
        cur.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        # A deferred transaction that reads and then writes gets SQLITE_BUSY at once under WAL,
        # whatever the busy timeout; taking the write lock up front makes writers queue instead.
        immediate = conn.get_execution_options().get(_WRITE)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


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
    from ledger import migrate

    migrate.upgrade_ledger(engine)


def open_scratch(path: Path, *, immutable: bool = False) -> EventStore:
    """A store reading a SQLite ledger's events without writing anything to it: projection
    tables and checkpoints live in memory. For read-only commands on a ledger this process
    cannot write (a read-only directory or file): projections are folded here instead."""
    import sqlite3

    from sqlalchemy.pool import StaticPool

    from ledger.schema import metadata as ledger_metadata

    mode = "immutable=1" if immutable else "mode=ro"

    def connect() -> sqlite3.Connection:
        conn = sqlite3.connect(
            "file::memory:", uri=True, check_same_thread=False, isolation_level=None
        )
        conn.execute("ATTACH DATABASE ? AS ledger", (f"file:{path}?{mode}",))
        conn.execute("CREATE TEMP VIEW events AS SELECT * FROM ledger.events")
        return conn

    engine = create_engine("sqlite://", creator=connect, poolclass=StaticPool)
    with engine.begin() as conn:
        ledger_metadata.tables["projection_checkpoints"].create(conn)
    return EventStore(engine)
