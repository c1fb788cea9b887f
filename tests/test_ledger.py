"""The ledger suite: every test runs against SQLite and a real PostgreSQL, as the database's
owner and as a team ledger's writer role (see `store_url`)."""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import re
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
from tests.conftest import is_writer, owner_of
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


def test_batches_span_many_driver_fetches_and_stop_at_until(store_url: str) -> None:
    """The store fetches a few hundred rows at a time and cuts them into the caller's batches:
    every event once, in order, in batches of exactly `batch` but the last."""
    store = open_store(store_url)
    store.append("s", [NewEvent("T", {"i": i}) for i in range(700)], 0)
    got = list(store.read_batches(after=5, batch=300, until=650))
    assert [len(b) for b in got] == [300, 300, 45]
    assert [e.position for b in got for e in b] == list(range(6, 651))
    assert [len(b) for b in store.read_batches(after=690, batch=4)] == [4, 4, 2]
    with store.snapshot() as view:
        assert [e.data["i"] for e in view.read_after(10, 600)] == list(range(10, 610))


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
    # The writer role may not even try (no UPDATE or DELETE grant); the owner meets the triggers.
    refused = "permission denied" if is_writer(store_url) else "immutable"
    for statement in ("UPDATE events SET stream_version = 9", "DELETE FROM events"):
        with pytest.raises(DBAPIError, match=refused), _engine(store_url) as engine:
            with engine.begin() as conn:
                conn.execute(text(statement))
    assert store.read_stream("s")[0].data == {"v": 1}


def _tamper(url: str, position: int, data: str) -> None:
    """Edit a row the way an attacker with file access (or the owner's role) would: around
    the triggers."""
    with _engine(owner_of(url)) as engine, engine.begin() as conn:
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
    engine = create_engine(owner_of(url))  # only the owner may change the schema's revision
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

    owner = owner_of(store_url)  # migrating is the owner's (docs/usage.md)
    open_store(store_url).close()
    with _engine(owner) as engine:
        migrate.downgrade(engine, "ledger@base")
        with engine.connect() as conn:
            assert conn.execute(text(f"SELECT count(*) FROM {LEDGER_VERSION_TABLE}")).scalar() == 0
        migrate.upgrade_ledger(engine)
    store = open_store(owner)
    store.append("s", [NewEvent("A", {})], 0)
    with _engine(owner) as engine:
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


FIXTURE = Path(__file__).parent / "fixtures" / "stdlib_ledger.db"


def _fixture_copy(tmp_path: Path) -> Path:
    path = tmp_path / "ledger.db"
    for suffix in ("", ".head"):
        Path(f"{path}{suffix}").write_bytes(Path(f"{FIXTURE}{suffix}").read_bytes())
    return path


def test_a_ledger_written_by_the_stdlib_store_opens_and_verifies_unchanged(
    tmp_path: Path,
) -> None:
    """tests/fixtures/stdlib_ledger.db was written by the standard-library SQLite store this
    store replaced (three jobs by `imagen generate`, then `jobs`, `usage` and `audit`): its
    chain verifies, reading it changes neither its events nor its head file, appending
    continues the chain, and imagen's projection tables are the tables this store creates."""
    path = _fixture_copy(tmp_path)
    head_file = Path(f"{path}.head").read_bytes()
    with _engine(f"sqlite:///{path}") as engine, engine.connect() as conn:
        rows = conn.execute(text("SELECT * FROM events ORDER BY position")).all()
    store = open_store(f"sqlite:///{path}", identity=True)
    report = store.verify()
    assert report.ok and report.checked == 25 and report.head.hash.startswith("5b287b9f")
    assert store.read_head_file() == report.head
    assert store.head_file_problems(report.head) == []
    assert store.identity() is not None and len(list(store.read_all())) == 25
    for checkpoint in ("imagen.jobs.v3", "imagen.usage.v2"):
        assert store.is_current(checkpoint)
    assert Path(f"{path}.head").read_bytes() == head_file  # reading wrote nothing
    with _engine(f"sqlite:///{path}") as engine, engine.connect() as conn:
        assert conn.execute(text("SELECT * FROM events ORDER BY position")).all() == rows

    [appended] = store.append("s", [NewEvent("A", {"n": 1})], 0)
    assert appended.position == 26 and appended.prev_hash == report.head.hash
    after = store.verify()
    assert after.ok and after.checked == 26 and store.read_head_file() == after.head
    store.close()


def test_projection_tables_match_the_stdlib_stores(tmp_path: Path) -> None:
    from imagen.projections.jobs import table as jobs
    from imagen.projections.usage import table as usage

    store = open_store(f"sqlite:///{tmp_path / 'new.db'}")
    for projection in (jobs.PROJECTION, usage.PROJECTION):
        store.ensure_projection(projection.table, projection.checkpoint)
    store.close()
    schemas = []
    for path in (FIXTURE, tmp_path / "new.db"):
        with _engine(f"sqlite:///{path}") as engine, engine.connect() as conn:
            schemas.append(
                conn.execute(
                    text("SELECT type, name, sql FROM sqlite_master WHERE name LIKE '%imagen%'")
                ).all()
            )

    # Table versions move on (a new version is a new table, rebuilt from the ledger): the
    # shapes must still be the ones this store creates.
    def shape(rows: list) -> list:  # type: ignore[type-arg]
        return sorted(tuple(re.sub(r"_v\d+", "_vN", str(v)) for v in r) for r in rows)

    # Columns a later table version added (jobs v5: the pool member that made the image).
    added_since = "\tserver TEXT, \n"
    now = [tuple(str(v).replace(added_since, "") for v in r) for r in schemas[1]]
    assert any(added_since in str(v) for r in schemas[1] for v in r)
    assert schemas[0] and shape(schemas[0]) == shape(now)


def test_a_sqlite_ledger_below_head_is_migrated_then_appended_to(tmp_path: Path) -> None:
    from ledger import migrate

    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    open_store(url).close()
    with _engine(url) as engine:
        migrate.downgrade(engine, "ledger@base")
    with pytest.raises(NoLedgerError):  # reading never creates (the schema went with base)
        open_store(url, create=False)
    store = open_store(url)
    store.append("s", [NewEvent("A", {})], 0)
    assert store.verify().ok


def test_an_exit_taken_inside_a_statement_leaves_the_ledger_writable(store_url: str) -> None:
    """Ctrl-C (or SIGTERM's exception) arriving while a write transaction's statement is open:
    SQLAlchemy drops the connection without a rollback, and SQLite kept its write lock while
    the caller handled the exception, so the next append (a job's CancelRequested) waited out
    the busy timeout. The store lets the interrupted statement go as the exception leaves."""
    from sqlalchemy import event

    store = open_store(store_url, busy_timeout=2.0)
    store.append("s", [NewEvent("A", {})], 0)
    armed = [True]

    def interrupt(_conn, _cursor, statement, *_args) -> None:  # type: ignore[no-untyped-def]
        # The read that opens an append, its rows not yet fetched: the statement is open.
        if armed and statement.startswith("SELECT coalesce((SELECT max(stream_version)"):
            armed.clear()
            raise KeyboardInterrupt

    event.listen(store.engine, "after_cursor_execute", interrupt)
    try:
        with pytest.raises(KeyboardInterrupt) as caught:
            store.append("s", [NewEvent("B", {})], 1)
        assert not armed  # (the interruption came where this test puts it)
        # The exception still held, as by a runner recording the cancel in its handler.
        store.append("s", [NewEvent("Cancelled", {})], 1)
        assert caught.value.__traceback__ is not None
    finally:
        event.remove(store.engine, "after_cursor_execute", interrupt)
    assert [e.type for e in store.read_stream("s")] == ["A", "Cancelled"]
    assert store.verify().ok
