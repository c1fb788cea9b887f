"""The ledger's projection API on SQLite and a real PostgreSQL: tables declared without SQL
dialects, portable reader queries, and catch-up that folds outside the write lock and stays
correct when several catch-ups race."""

from __future__ import annotations

from collections.abc import Sequence

from ledger import NewEvent, open_reader, open_store
from ledger.events import RecordedEvent
from ledger.projection import (
    ColumnSpec,
    ColumnType,
    Projection,
    Row,
    TableSpec,
    View,
    as_rows,
    catch_up,
    reset,
    select_all,
)

COUNTS = TableSpec(
    "test_counts",
    key="stream_id",
    columns=(
        ColumnSpec("stream_id", ColumnType.TEXT, 200),
        ColumnSpec("events", ColumnType.INTEGER, index=True),
        ColumnSpec("last_type", ColumnType.TEXT),
        ColumnSpec("weight", ColumnType.REAL),
    ),
)


def count(view: View, events: Sequence[RecordedEvent]) -> list[Row]:
    # Not idempotent on purpose: a batch applied twice, or to rows of another checkpoint,
    # shows up as a wrong count.
    rows = view.rows(COUNTS, {e.stream_id for e in events})
    for e in events:
        row = rows.setdefault(
            e.stream_id, {"stream_id": e.stream_id, "events": 0, "last_type": None, "weight": 0.0}
        )
        row["events"] += 1
        row["last_type"] = e.type
        row["weight"] += 0.5
    return list(rows.values())


PROJECTION = Projection(COUNTS, "test.counts", count)


def _append(store, stream: str, n: int) -> None:  # type: ignore[no-untyped-def]
    version = store.stream_version(stream)
    store.append(stream, [NewEvent(f"T{version + i}", {}) for i in range(n)], version)


def _counts(reader) -> dict[str, int]:  # type: ignore[no-untyped-def]
    return {r["stream_id"]: r["events"] for r in as_rows(COUNTS, reader.query(select_all(COUNTS)))}


def test_catch_up_folds_in_batches_and_readers_query_portably(store_url: str) -> None:
    store = open_store(store_url)
    _append(store, "a", 5)
    _append(store, "b", 2)
    assert not store.is_current("test.counts")  # never caught up: no table yet
    assert catch_up(store, PROJECTION, batch=3) == 7
    assert store.is_current("test.counts")
    assert catch_up(store, PROJECTION) == 0
    assert _counts(store) == {"a": 5, "b": 2}
    rows = store.query(
        "SELECT stream_id, weight FROM test_counts WHERE events >= :n ORDER BY stream_id",
        {"n": 3},
    )
    assert rows == [("a", 2.5)]
    _append(store, "b", 1)
    assert not store.is_current("test.counts")
    assert catch_up(store, PROJECTION) == 1
    assert _counts(store) == {"a": 5, "b": 3}

    reader = open_reader(store_url)  # the store opened for reading runs the same query text
    assert reader is not None and reader.is_current("test.counts")
    assert reader.query(
        "SELECT stream_id, weight FROM test_counts WHERE events >= :n ORDER BY stream_id",
        {"n": 3},
    ) == [("a", 2.5), ("b", 1.5)]
    reader.close()

    reset(store, PROJECTION)
    assert _counts(store) == {} and store.get_checkpoint("test.counts") == 0
    assert catch_up(store, PROJECTION) == 8
    assert _counts(store) == {"a": 5, "b": 3}


def test_a_projection_that_declares_its_types_reads_only_those_up_to_the_head(
    store_url: str,
) -> None:
    """A fold that says which types it reads gets only those, in batches; its checkpoint
    still reaches the head when the last events are of other types (no batch read again),
    and a pass with a projection that reads everything reads everything."""
    store = open_store(store_url)
    _append(store, "a", 9)  # T0..T8
    _append(store, "b", 3)  # T0..T2
    seen: list[list[str]] = []

    def only(view: View, events: Sequence[RecordedEvent]) -> list[Row]:
        seen.append([f"{e.stream_id}{e.type}" for e in events])
        return count(view, events)

    picky = Projection(COUNTS, "test.picky", only, reads=frozenset({"T1", "T2", "T5"}))
    assert catch_up(store, picky, batch=2) == 5
    assert seen == [["aT1", "aT2"], ["aT5", "bT1"], ["bT2"]]
    assert store.get_checkpoint("test.picky") == store.head().position == 12
    assert catch_up(store, picky) == 0 and seen[-1] == ["bT2"]  # nothing read again
    _append(store, "b", 4)  # T3..T6: one of them is read
    assert catch_up(store, picky) == 1 and seen[-1] == ["bT5"]
    assert store.get_checkpoint("test.picky") == 16
    _append(store, "b", 1)  # T7: none of its types
    assert catch_up(store, picky) == 0 and store.get_checkpoint("test.picky") == 17
    assert _counts(store) == {"a": 3, "b": 3}
    with store.snapshot() as view:
        assert [e.position for e in view.read_after(0, 10, ["T8", "T0"])] == [1, 9, 10]
        assert view.read_after(0, 10, []) == []
        assert view.head_position() == 17


def test_folding_does_not_hold_the_write_lock(store_url: str) -> None:
    """While one process folds, others append: the fold must not hold the ledger's write lock.
    The appends land after the folded batch and are folded by the next catch-up."""
    store = open_store(store_url)
    # A generous wait: while the fold does not hold the lock the append never waits, so the
    # verdict does not hang on the machine's speed; if it held it, the append fails after it.
    other = open_store(store_url, busy_timeout=30.0)
    _append(store, "a", 3)

    appended = []

    def fold_while_appending(view: View, events: Sequence[RecordedEvent]) -> list[Row]:
        if not appended:
            _append(other, "a", 1)  # would wait for the lock, then fail, if catch-up held it
            appended.append(other.head_position())
        return count(view, events)

    # The event appended during the first round's fold is folded by the next round.
    assert catch_up(store, Projection(COUNTS, "test.counts", fold_while_appending), batch=10) == 4
    assert appended == [4]
    assert _counts(store) == {"a": 4}
    assert catch_up(store, PROJECTION) == 0


def test_a_catch_up_that_loses_the_race_writes_nothing(store_url: str) -> None:
    """Two catch-ups at once: the one whose checkpoint moved under it drops its rows and
    starts again from the winner's checkpoint, so no event is applied twice."""
    store = open_store(store_url)
    rival = open_store(store_url, busy_timeout=30.0)  # generous, as above
    _append(store, "a", 3)
    _append(store, "b", 1)
    raced = []

    def fold_then_lose(view: View, events: Sequence[RecordedEvent]) -> list[Row]:
        rows = count(view, events)
        if not raced:
            raced.append(True)
            _append(rival, "b", 2)
            assert catch_up(rival, PROJECTION) == 6  # the rival wins while this one folds
        return rows

    assert catch_up(store, Projection(COUNTS, "test.counts", fold_then_lose)) == 0
    assert _counts(store) == {"a": 3, "b": 3}
    assert store.get_checkpoint("test.counts") == store.head_position() == 6


def test_serial_table_keeps_the_first_row_for_a_unique_value(store_url: str) -> None:
    outbox = TableSpec(
        "test_outbox",
        key="seq",
        serial=True,
        columns=(
            ColumnSpec("seq", ColumnType.INTEGER),
            ColumnSpec("id", ColumnType.TEXT, 200, nullable=False, unique=True),
            ColumnSpec("big", ColumnType.INTEGER),
        ),
    )

    def rows(view: View, events: Sequence[RecordedEvent]) -> list[Row]:
        return [{"id": e.stream_id, "big": 2**63 - 1 - e.position} for e in events]

    store = open_store(store_url)
    _append(store, "x", 2)
    _append(store, "y", 1)
    assert catch_up(store, Projection(outbox, "test.outbox", rows)) == 3
    got = store.query("SELECT seq, id, big FROM test_outbox ORDER BY seq")
    assert [(r[1], r[2]) for r in got] == [("x", 2**63 - 2), ("y", 2**63 - 4)]
    assert got[0][0] < got[1][0]


def test_projection_tables_exist_once_the_checkpoint_does(store_url: str) -> None:
    store = open_store(store_url)
    store.ensure_projection(COUNTS, "test.counts")
    store.ensure_projection(COUNTS, "test.counts")  # idempotent
    assert store.query("SELECT count(*) FROM test_counts") == [(0,)]
    assert store.get_checkpoint("test.counts") == 0
