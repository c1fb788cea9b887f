"""The ledger suite: every test runs against SQLite (through each store: the standard-library
one and the SQLAlchemy one) and a real PostgreSQL (see `store_url`)."""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.exc import DBAPIError

from ledger import ConcurrencyError, NewEvent, NoLedgerError, SchemaTooNewError, open_store
from ledger.schema import LEDGER_HEAD, LEDGER_REVISIONS, LEDGER_VERSION_TABLE
from tests.ledger_writer import Full, append_many, take_guarded


def fixed_clock() -> datetime:
    return datetime(2026, 11, 24, 12, 0, 0, tzinfo=UTC)


def test_append_and_read_round_trip(store_url: str) -> None:
    store = open_store(store_url, clock=fixed_clock)
    first = store.append("job-a", [NewEvent("Requested", {"prompt": "a café ☕", "n": 1})], 0)
    store.append("job-b", [NewEvent("Requested", {"prompt": "b"})], 0)
    store.append("job-a", [NewEvent("Done", {"ok": True}), NewEvent("Closed", {})], 1)

    events = store.read_stream("job-a")
    assert [e.type for e in events] == ["Requested", "Done", "Closed"]
    assert [e.stream_version for e in events] == [1, 2, 3]
    assert events[0].data == {"prompt": "a café ☕", "n": 1}
    assert events[0] == first[0]
    assert events[0].recorded_at == "2026-11-24T12:00:00.000000Z"
    assert [e.position for e in store.read_all(after=1)] == [2, 3, 4]
    assert store.head().position == 4 and store.head().hash == events[-1].hash
    assert events[1].prev_hash == store.read_stream("job-b")[0].hash
    assert store.read_stream("job-a", after_version=2)[0].type == "Closed"
    assert store.streams_with_prefix("job-") == ["job-a", "job-b"]
    assert store.verify().ok and store.verify().checked == 4


def test_stale_expected_version_raises(store_url: str) -> None:
    store = open_store(store_url)
    store.append("s", [NewEvent("A", {})], 0)
    with pytest.raises(ConcurrencyError, match="version 1, not 0"):
        store.append("s", [NewEvent("B", {}), NewEvent("C", {})], 0)
    assert [e.type for e in store.read_stream("s")] == ["A"]
    assert store.head().position == 1


@contextmanager
def _engine(url: str) -> Iterator[Engine]:
    """The database itself, reached around the store (as another program would)."""
    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    try:
        yield engine
    finally:
        engine.dispose()


def test_update_and_delete_are_rejected_by_the_database(store_url: str) -> None:
    store = open_store(store_url)
    store.append("s", [NewEvent("A", {"v": 1})], 0)
    for statement in ("UPDATE events SET stream_version = 9", "DELETE FROM events"):
        with pytest.raises(DBAPIError, match="immutable"), _engine(store_url) as engine:
            with engine.begin() as conn:
                conn.execute(text(statement))
    assert store.read_stream("s")[0].data == {"v": 1}


def _tamper(url: str, position: int, data: str) -> None:
    """Edit a row the way an attacker with file access would: around the triggers."""
    with _engine(url) as engine, engine.begin() as conn:
        if engine.dialect.name == "sqlite":
            conn.execute(text("DROP TRIGGER events_no_update"))
            conn.execute(
                text("UPDATE events SET data = :d WHERE position = :p"), {"d": data, "p": position}
            )
            conn.execute(
                text(
                    "CREATE TRIGGER events_no_update BEFORE UPDATE ON events "
                    "BEGIN SELECT RAISE(ABORT, 'immutable'); END"
                )
            )
        else:
            conn.execute(text("ALTER TABLE events DISABLE TRIGGER events_no_update_delete"))
            conn.execute(
                text("UPDATE events SET data = :d WHERE position = :p"), {"d": data, "p": position}
            )
            conn.execute(text("ALTER TABLE events ENABLE TRIGGER events_no_update_delete"))


def test_verify_names_the_first_tampered_position(store_url: str) -> None:
    store = open_store(store_url)
    for i in range(5):
        store.append(f"s{i % 2}", [NewEvent("A", {"i": i})], None)
    _tamper(store_url, 3, '{"i":99}')
    report = store.verify()
    assert not report.ok
    assert report.first_broken == 3
    assert report.checked == 2
    assert "hash" in (report.reason or "")


def test_checkpoints(store_url: str) -> None:
    store = open_store(store_url)
    assert store.get_checkpoint("usage") == 0
    store.set_checkpoint("usage", 7)
    store.set_checkpoint("usage", 9)
    assert store.get_checkpoint("usage") == 9


def test_concurrent_processes_lose_nothing(store_url: str) -> None:
    open_store(store_url).close()  # migrate once, so the race is about appends
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Event()
    procs = [
        ctx.Process(target=append_many, args=(store_url, f"p{i}", 500, start)) for i in range(4)
    ]
    for p in procs:
        p.start()
    start.set()
    for p in procs:
        p.join(240)
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]
    store = open_store(store_url)
    report = store.verify()
    assert report.ok, report
    assert report.checked == 2000
    for i in range(4):
        assert [e.data["n"] for e in store.read_stream(f"p{i}")] == list(range(500))


def test_a_guard_refuses_an_append_by_raising_and_nothing_is_written(store_url: str) -> None:
    store = open_store(store_url)
    store.append("s", [NewEvent("A", {"n": 1})], 0)
    seen: list[int] = []

    def guard(view) -> None:  # type: ignore[no-untyped-def]
        seen.append(len(view.read_stream("s")))
        seen.append(view.read_after(0, 10)[-1].position)
        raise Full("no")

    with pytest.raises(Full):
        store.append("s", [NewEvent("B", {})], 1, guard=guard)
    assert seen == [1, 1]  # it read the ledger as committed before it
    assert [e.type for e in store.read_stream("s")] == ["A"]
    assert store.verify().checked == 1
    # A guard that returns lets the append through, in the same transaction.
    store.append("s", [NewEvent("B", {})], 1, guard=lambda view: None)
    assert [e.type for e in store.read_stream("s")] == ["A", "B"]
    assert store.verify().ok


def test_guarded_appends_from_four_processes_never_pass_the_limit(store_url: str) -> None:
    """Check-then-append as one step: 4 processes x 10 tries against a limit of 12 leave
    exactly 12 (a check outside the write lock would let several through at once)."""
    open_store(store_url).close()
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Event()
    procs = [
        ctx.Process(target=take_guarded, args=(store_url, f"p{i}", 10, 12, start)) for i in range(4)
    ]
    for p in procs:
        p.start()
    start.set()
    for p in procs:
        p.join(240)
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]
    store = open_store(store_url)
    assert store.verify().checked == 12


def _snapshot(url: str) -> object:
    store = open_store(url)
    store.append("s", [NewEvent("A", {})], 0)
    store.close()
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text(f"UPDATE {LEDGER_VERSION_TABLE} SET version_num = 'ledger_9999'"))
    engine.dispose()
    return url


def _state(url: str) -> object:
    if url.startswith("sqlite"):
        return hashlib.sha256(Path(url.split(":///", 1)[1]).read_bytes()).hexdigest()
    engine = create_engine(url)
    with engine.connect() as conn:
        state = (
            conn.execute(text(f"SELECT version_num FROM {LEDGER_VERSION_TABLE}")).all(),
            conn.execute(text("SELECT * FROM events")).all(),
        )
    engine.dispose()
    return state


def test_newer_schema_refuses_to_open_and_is_left_untouched(store_url: str) -> None:
    _snapshot(store_url)
    before = _state(store_url)
    with pytest.raises(SchemaTooNewError, match="ledger_9999.*upgrade imagen"):
        open_store(store_url)
    assert _state(store_url) == before


def test_ledger_at_head_opens_without_importing_alembic(store_url: str) -> None:
    open_store(store_url).close()
    code = (
        "import sys, ledger; ledger.open_store(sys.argv[1]).close(); "
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'alembic'))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, store_url],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).parent.parent,
    )
    assert out.stdout.strip() == "[]"


def test_migrations_run_down_and_up(store_url: str) -> None:
    from ledger import migrate

    open_store(store_url).close()
    with _engine(store_url) as engine:
        migrate.downgrade(engine, "ledger@base")
        with engine.connect() as conn:
            assert conn.execute(text(f"SELECT count(*) FROM {LEDGER_VERSION_TABLE}")).scalar() == 0
        migrate.upgrade_ledger(engine)
    store = open_store(store_url)
    store.append("s", [NewEvent("A", {})], 0)
    with _engine(store_url) as engine:
        with pytest.raises(DBAPIError, match="immutable"), engine.begin() as conn:
            conn.execute(text("DELETE FROM events"))


def test_revision_constants_match_the_migration_scripts() -> None:
    from alembic.script import ScriptDirectory

    from ledger.migrate import script_location

    scripts = ScriptDirectory(script_location())
    chain = [s.revision for s in scripts.walk_revisions("ledger@base", "ledger@head")]
    assert tuple(reversed(chain)) == LEDGER_REVISIONS
    assert LEDGER_HEAD == chain[0]


def test_sqlite_ledger_is_private(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "ledger.db"
    store = open_store(f"sqlite:///{path}")
    store.append("s", [NewEvent("A", {})], 0)
    for name in ("ledger.db", "ledger.db-wal"):
        assert (path.parent / name).stat().st_mode & 0o777 == 0o600
    store.close()
    assert os.stat(path).st_mode & 0o077 == 0


def _posix_locks_held(path: Path) -> int:
    """How many POSIX locks this process holds on the file (Linux /proc/locks)."""
    st = path.stat()
    inode = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    with open("/proc/locks") as f:
        return sum(
            1
            for line in f
            if line.split()[1] == "POSIX"
            and line.split()[4] == str(os.getpid())
            and line.split()[5] == inode
        )


@pytest.mark.skipif(not Path("/proc/locks").exists(), reason="needs Linux /proc/locks")
def test_opening_a_ledger_twice_keeps_the_first_stores_locks(tmp_path: Path) -> None:
    # Closing any descriptor of a file drops every POSIX lock the process holds on it: opening
    # a second store must not touch the file of a ledger that is already open.
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    first = open_store(url, clock=fixed_clock)
    first.append("s", [NewEvent("T", {"n": 1})], expected_version=0)
    with first.snapshot() as view:
        view.read_after(0, 10)
        held = _posix_locks_held(tmp_path / "ledger.db")
        assert held > 0  # WAL readers keep a shared lock on the database file
        second = open_store(url, clock=fixed_clock)
        assert _posix_locks_held(tmp_path / "ledger.db") == held
        second.close()
    first.close()


# -- the two SQLite stores: the standard-library one and the SQLAlchemy one -------------------


def _ids(n: int) -> list[str]:
    return [f"00000000-0000-4000-8000-{i:012d}" for i in range(n)]


def _same_appends(store) -> None:  # type: ignore[no-untyped-def]
    ids = iter(_ids(20))
    store.append("job-a", [NewEvent("Requested", {"prompt": "a café ☕", "n": 1}, 1, next(ids))], 0)
    store.append("job-b", [NewEvent("Requested", {"x": [1.5, None]}, 2, next(ids))], 0)
    store.append(
        "job-a",
        [NewEvent("Done", {"ok": True}, 1, next(ids)), NewEvent("End", {}, 1, next(ids))],
        1,
    )
    store.append("job-b", [NewEvent("Done", {"big": 2**62}, 1, next(ids))], None)


def test_both_sqlite_stores_record_byte_identical_chains(tmp_path: Path) -> None:
    lite = open_store(f"sqlite:///{tmp_path / 'lite.db'}", clock=fixed_clock)
    full = open_store(f"sqlite+pysqlite:///{tmp_path / 'full.db'}", clock=fixed_clock)
    assert type(lite).__name__ == "SqliteStore" and type(full).__name__ == "EventStore"
    for store in (lite, full):
        _same_appends(store)
        assert store.commits.value == 4  # one transaction, one fsync, per append
        store.close()
    rows = []
    for name in ("lite.db", "full.db"):
        with _engine(f"sqlite:///{tmp_path / name}") as engine, engine.connect() as conn:
            rows.append(conn.execute(text("SELECT * FROM events ORDER BY position")).all())
    assert len(rows[0]) == 5 and rows[0] == rows[1]
    assert (tmp_path / "lite.db.head").read_bytes() == (tmp_path / "full.db.head").read_bytes()


@pytest.mark.parametrize("first", ["sqlite", "sqlite+pysqlite"])
def test_a_ledger_written_by_one_store_verifies_and_appends_with_the_other(
    tmp_path: Path, first: str
) -> None:
    second = "sqlite+pysqlite" if first == "sqlite" else "sqlite"
    path = tmp_path / "ledger.db"
    one = open_store(f"{first}:///{path}", clock=fixed_clock, identity=True)
    one.append("s", [NewEvent("A", {"n": 1})], 0)
    one.close()
    other = open_store(f"{second}:///{path}", clock=fixed_clock, identity=True)
    assert other.verify().ok and other.identity() == one.identity()
    other.append("s", [NewEvent("B", {"n": 2})], 1)
    assert other.head_file_problems(other.verify().head) == []
    other.close()
    again = open_store(f"{first}:///{path}", clock=fixed_clock, identity=True)
    again.append("s", [NewEvent("C", {"n": 3})], 2)
    report = again.verify()
    assert report.ok and report.checked == 4  # the identity event, then A, B, C
    assert again.read_head_file() == report.head
    assert [e.type for e in again.read_stream("s")] == ["A", "B", "C"]


def test_both_sqlite_stores_create_the_same_projection_tables(tmp_path: Path) -> None:
    from ledger.projection import ColumnSpec, ColumnType, TableSpec

    t, i, r = ColumnType.TEXT, ColumnType.INTEGER, ColumnType.REAL
    specs = [
        TableSpec(
            "every_kind",
            key="k",
            columns=(
                ColumnSpec("k", t, length=40, nullable=False),
                ColumnSpec("a", t, index=True),
                ColumnSpec("b", i, unique=True),
                ColumnSpec("c", r, nullable=False),
                ColumnSpec("d", t, index=True, unique=True),
                ColumnSpec("e", i),
            ),
            indexes=(("ix_every_kind_pair", ("a", "e")),),
        ),
        TableSpec(
            "outbox",
            key="seq",
            columns=(ColumnSpec("seq", i), ColumnSpec("id", t, nullable=False, unique=True)),
            serial=True,
        ),
    ]
    schemas = []
    for scheme, name in (("sqlite", "lite.db"), ("sqlite+pysqlite", "full.db")):
        store = open_store(f"{scheme}:///{tmp_path / name}")
        for spec in specs:
            store.ensure_projection(spec, f"cp.{spec.name}")
        store.close()
        with _engine(f"sqlite:///{tmp_path / name}") as engine, engine.connect() as conn:
            schemas.append(
                conn.execute(text("SELECT type, name, sql FROM sqlite_master ORDER BY name")).all()
            )
    assert schemas[0] == schemas[1]
    assert any(row[1] == "ix_every_kind_pair" for row in schemas[0])


def test_a_sqlite_ledger_at_head_is_written_without_sqlalchemy(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    open_store(url).close()  # creating it is SQLAlchemy's and alembic's work
    code = (
        "import sys, ledger\n"
        "from ledger.projection import ColumnSpec, ColumnType, Projection, TableSpec, catch_up\n"
        "s = ledger.open_store(sys.argv[1], identity=True)\n"
        "s.append('s', [ledger.NewEvent('A', {})], 0)\n"
        "t = TableSpec('t', 'k', (ColumnSpec('k', ColumnType.TEXT),))\n"
        "catch_up(s, Projection(t, 't', lambda view, events: [{'k': e.stream_id} for e in events]))\n"
        "assert s.verify().checked == 2 and s.query('SELECT k FROM t') == [('$ledger',), ('s',)]\n"
        "print(type(s).__name__, sorted({m.split('.')[0] for m in sys.modules} & {'sqlalchemy', 'alembic'}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, url],
        capture_output=True,
        text=True,
        cwd=Path(__file__).parent.parent,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "SqliteStore []"


def test_a_sqlite_ledger_below_head_is_migrated_then_served_by_the_stdlib_store(
    tmp_path: Path,
) -> None:
    from ledger import migrate

    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    open_store(url).close()
    with _engine(url) as engine:
        migrate.downgrade(engine, "ledger@base")
    with pytest.raises(NoLedgerError):  # reading never creates (the schema went with base)
        open_store(url, create=False)
    store = open_store(url)
    assert type(store).__name__ == "SqliteStore"
    store.append("s", [NewEvent("A", {})], 0)
    assert store.verify().ok
