"""One pass for every projection (issue #29): a catch-up reads each batch of events once and
feeds every projection that is behind, each from its own checkpoint; a crash between batches
leaves each projection at a checkpoint its rows match; an append during the catch-up is folded
by the next round; and the jobs, usage and spend tables caught up together in small batches
hold what each caught up alone holds."""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path

import pytest

from imagen.core.job import JobState, evolve, fold
from imagen.projections import catchup, spend
from imagen.projections.jobs import table as jobs_table
from imagen.projections.usage import table as usage_table
from imagen.repository import to_recorded
from ledger import NewEvent, open_store
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
    catch_up_all,
    select_all,
)
from tests.benchmarks.bench_jobs import _job_events


def _counter(name: str, seen: list[list[int]] | None = None) -> Projection:
    """Events per stream; not idempotent on purpose, so an event applied twice shows."""
    table = TableSpec(
        name,
        key="stream_id",
        columns=(ColumnSpec("stream_id", ColumnType.TEXT), ColumnSpec("n", ColumnType.INTEGER)),
    )

    def count(view: View, events: Sequence[RecordedEvent]) -> list[Row]:
        if seen is not None:
            seen.append([e.position for e in events])
        rows = view.rows(table, {e.stream_id for e in events})
        for e in events:
            rows.setdefault(e.stream_id, {"stream_id": e.stream_id, "n": 0})["n"] += 1
        return list(rows.values())

    return Projection(table, f"test.{name}", count)


def _counts(store, p: Projection) -> dict[str, int]:  # type: ignore[no-untyped-def]
    return {r["stream_id"]: r["n"] for r in as_rows(p.table, store.query(select_all(p.table)))}


def _append(store, stream: str, n: int) -> None:  # type: ignore[no-untyped-def]
    version = store.stream_version(stream)
    store.append(stream, [NewEvent(f"T{version + i}", {}) for i in range(n)], version)


def test_one_pass_feeds_each_projection_after_its_own_checkpoint(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'l.db'}", durability="normal")
    _append(store, "a", 4)
    _append(store, "b", 3)
    ahead_seen: list[list[int]] = []
    behind, ahead = _counter("behind"), _counter("ahead", ahead_seen)
    assert catch_up(store, ahead, batch=2) == 7  # one projection is current, one never ran
    _append(store, "b", 2)
    ahead_seen.clear()
    other = open_store(f"sqlite:///{tmp_path / 'l.db'}", busy_timeout=30.0)

    appended: list[int] = []

    def append_while_folding(view: View, events: Sequence[RecordedEvent]) -> list[Row]:
        if not appended:  # a writer during the catch-up: never waits on it, never lost
            _append(other, "c", 1)
            appended.append(other.head_position())
        return behind.fold(view, events)

    racing = Projection(behind.table, behind.checkpoint, append_while_folding)
    assert catch_up_all(store, [racing, ahead], batch=4) == {"test.behind": 10, "test.ahead": 3}
    assert appended == [10]
    # The one ahead was fed only what came after its checkpoint, in the same reads.
    assert ahead_seen == [[8], [9, 10]]
    assert _counts(store, behind) == _counts(store, ahead) == {"a": 4, "b": 5, "c": 1}
    assert store.get_checkpoint("test.behind") == store.get_checkpoint("test.ahead") == 10


def test_a_catch_up_killed_between_batches_leaves_consistent_checkpoints(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'l.db'}", durability="normal")
    _append(store, "a", 5)
    _append(store, "b", 4)
    one, two = _counter("one"), _counter("two")
    assert catch_up(store, two, batch=3) == 9
    _append(store, "a", 3)
    rounds: list[int] = []

    def dies_in_round_two(view: View, events: Sequence[RecordedEvent]) -> list[Row]:
        rounds.append(events[0].position)
        if len(rounds) == 2:
            raise KeyboardInterrupt  # the process killed mid catch-up
        return one.fold(view, events)

    with pytest.raises(KeyboardInterrupt):
        catch_up_all(
            store, [Projection(one.table, one.checkpoint, dies_in_round_two), two], batch=4
        )
    # Round one was written whole, round two not at all: each table is the fold of the events
    # up to its own checkpoint.
    assert store.get_checkpoint("test.one") == 4 and _counts(store, one) == {"a": 4}
    assert store.get_checkpoint("test.two") == 9
    assert _counts(store, two) == {"a": 5, "b": 4}
    assert catch_up_all(store, [one, two]) == {"test.one": 8, "test.two": 3}
    assert _counts(store, one) == _counts(store, two) == {"a": 8, "b": 4}


def _tables(store) -> dict[str, list[tuple[object, ...]]]:  # type: ignore[no-untyped-def]
    return {
        t: store.query(f"SELECT * FROM {t} ORDER BY 1")
        for t in (jobs_table.TABLE, usage_table.TABLE, spend.TABLE)
    }


def test_jobs_usage_and_spend_in_one_pass_equal_each_caught_up_alone(tmp_path: Path) -> None:
    """Small batches, so jobs span batches (and their earlier events are read from the
    ledger); a job still under way, one that failed and one cancelled end the ledger. The
    usage table caught up alone reads only the types it declares."""
    path = tmp_path / "l.db"
    store = open_store(f"sqlite:///{path}", durability="normal")
    for i in range(6):
        events = _job_events(i)
        if i == 3:
            events = events[:7]  # still under way
        elif i == 4:
            events = [
                *events[:5],
                ("JobFailed", {"reason": "x", "message": "m", "category": "unexpected"}),
            ]
        elif i == 5:
            events = [*events[:5], ("JobCancelled", {"reason": "user"})]
        store.append(f"job{i}", [NewEvent(t, d) for t, d in events], 0)
    # A late answer after job 2 ended, appended later (a later time): not a type the usage
    # table reads alone, so its rows are dated by the job's end whichever way it is read.
    late = _job_events(2)[3]
    assert late[0] == "ResponseReceived"
    store.append("job2", [NewEvent(*late)], len(_job_events(2)))
    store.close()
    shutil.copyfile(path, tmp_path / "alone.db")
    shutil.copyfile(path, tmp_path / "whole.db")

    together = open_store(f"sqlite:///{path}")
    applied = catchup.catch_up(together, batch=7)
    assert set(applied.values()) == {together.head_position()}
    alone = open_store(f"sqlite:///{tmp_path / 'alone.db'}")
    for module in (jobs_table, spend):
        module.catch_up(alone)
    usage_table.catch_up(alone, batch=4)  # alone, it reads only its types (usage/fold.py)
    assert _tables(together) == _tables(alone)
    whole = open_store(f"sqlite:///{tmp_path / 'whole.db'}")
    catchup.catch_up(whole)  # one batch: the late answer is folded with job 2's end
    assert _tables(whole) == _tables(alone)
    # Three images, and the accepted predictions of the failed and the cancelled job.
    assert len(_tables(alone)[usage_table.TABLE]) == 5
    assert catchup.catch_up(together) == {p.checkpoint: 0 for p in catchup.PROJECTIONS}

    # A job's state built in one go is the state evolved event by event.
    for i in range(6):
        recorded = [to_recorded(e) for e in together.read_stream(f"job{i}")]
        stepped = JobState(f"job{i}")
        for rec in recorded:
            stepped = evolve(stepped, rec)
        assert fold(f"job{i}", recorded) == stepped


def test_the_jobs_fold_reads_no_payload_of_a_type_outside_reads() -> None:
    """The jobs table's fold decodes only the payloads of `READS` (the rest stay undecoded)
    and `step` returns early for any other type: so no branch of `step` may name a type
    outside READS (it would never run), and such a type only moves a row's times."""
    import inspect

    from imagen.core.events import CATALOGUE, TERMINAL_TYPES
    from imagen.projections.jobs import fold as jobs_fold

    source = inspect.getsource(jobs_fold.step)
    assert TERMINAL_TYPES <= jobs_fold.READS <= CATALOGUE.keys()
    later = "2025-01-01T00:00:01.000000Z"
    for type_name in CATALOGUE.keys() - jobs_fold.READS:
        assert f'"{type_name}"' not in source, type_name
        row = jobs_fold.new_row("job", "2025-01-01T00:00:00.000000Z")
        jobs_fold.step(row, type_name, None, later, 2)
        assert row == dict(
            jobs_fold.new_row("job", row["created_at"]), updated_at=later, last_position=2
        ), type_name
