"""Projections: read models kept in the ledger's database, declared without SQL dialects.

A projection declares its table as a `TableSpec` (portable column types), names its checkpoint,
and gives a `fold` that turns a batch of events into rows. `catch_up` keeps it in step with
the ledger for any number of processes at once:

1. In one read snapshot (no lock): read the checkpoint, the next batch of events after it, and
   whatever rows the fold needs. Rows and checkpoint are written together (step 2), so the rows
   seen are exactly the fold of the events up to that checkpoint.
2. Under the ledger's write lock, briefly: if the checkpoint is still where the snapshot saw it,
   write the rows and move the checkpoint, atomically; otherwise another process got there
   first, so drop the work and go round again from its checkpoint.

Folding never holds the write lock, so appends (`generate`) never wait for a projection.
`catch_up_all` does this for several projections in one pass: each batch is read once and
fed to every projection behind (a `Batch` they share), each written as in step 2.

Only the standard library here: importing it never imports SQLAlchemy.
"""

from __future__ import annotations

import bisect
import gc
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from ledger.events import RecordedEvent
from ledger.interface import (
    ColumnSpec,
    ColumnType,
    Guard,
    LockedView,
    Row,
    Store,
    TableSpec,
    View,
)

Fold = Callable[[View, Sequence[RecordedEvent]], list[Row]]


@dataclass(frozen=True, slots=True)
class Projection:
    """`fold(view, events)` returns the rows the events change (whole rows); it must be
    deterministic, so a batch folded twice gives the same rows."""

    table: TableSpec
    checkpoint: str
    fold: Fold
    # Checkpoints that start again from 0 with the table (e.g. an outbox's "sent up to").
    dependent_checkpoints: tuple[str, ...] = ()
    # The event types the fold reads (None: every type). Declared, a catch-up of this
    # projection alone reads only those, so the fold must give the same rows without the
    # others (it may still read whole streams through its view).
    reads: frozenset[str] | None = None


class Batch(Sequence[RecordedEvent]):
    """Events as one catch-up read them (position order). Every projection fed from the same
    read gets this batch, or the part of it after its own checkpoint (`after`): all share
    `memo`, so what one fold derives from the events (decoded payloads, folded streams) the
    next reuses instead of deriving again. Every part ends at the same position (`last`)."""

    __slots__ = ("_end", "_events", "_whole", "memo")

    def __init__(
        self,
        events: Sequence[RecordedEvent],
        whole: Batch | None = None,
        *,
        end: int | None = None,
    ) -> None:
        self._events = events
        # The position the read covered: its last event's, or past it for a read of some
        # types only (the events of other types up to there were skipped, not missed).
        self._end = (
            whole._end if whole is not None else (events[-1].position if end is None else end)
        )
        # The batch as read (every part's events are its tail), and what folds derived from it.
        # None for the batch as read: a reference to itself would be a cycle, and a batch in a
        # cycle (with all its memo) waits for the cycle collector, paused during a catch-up:
        # every batch would be kept until the end, then scanned at once (measured, a third of
        # a catch-up's time).
        self._whole = whole
        self.memo: dict[Any, Any] = {} if whole is None else whole.memo

    @property
    def whole(self) -> Batch:
        return self if self._whole is None else self._whole

    def __len__(self) -> int:
        return len(self._events)

    def __getitem__(self, i: Any) -> Any:
        return self._events[i]

    def __iter__(self) -> Iterator[RecordedEvent]:
        return iter(self._events)

    @property
    def last(self) -> int:
        return self._end

    def after(self, position: int) -> Batch:
        """The events after `position`, sharing this batch's memo."""
        events = self._events
        if not events or events[0].position > position:
            return self
        at = bisect.bisect_right(events, position, key=lambda e: e.position)
        return Batch(events[at:], self.whole)


Progress = Callable[[int], None]  # the position a catch-up has reached, after each batch


def catch_up(
    store: Store, projection: Projection, *, batch: int = 20000, progress: Progress | None = None
) -> int:
    """Fold every event after the projection's checkpoint into its table; returns how many
    events this call applied (0 when another process did the work)."""
    return catch_up_all(store, [projection], batch=batch, progress=progress)[projection.checkpoint]


def catch_up_all(
    store: Store,
    projections: Sequence[Projection],
    *,
    batch: int = 20000,
    progress: Progress | None = None,
) -> dict[str, int]:
    """Catch every projection up in one pass over the events: each batch is read once, from
    the lowest checkpoint, and each projection behind folds the part after its own. Each
    projection's rows and checkpoint are then written as `catch_up` writes them (one
    transaction each, only if its checkpoint did not move meanwhile), so a crash between
    batches or writes leaves every projection at a checkpoint its rows match. Returns the
    events applied per checkpoint name."""
    if not projections:
        return {}  # (nothing would ever move a checkpoint: the pass would not end)
    for p in projections:
        store.ensure_projection(p.table, p.checkpoint)
    with no_cycle_collection():
        return _catch_up(store, projections, batch, progress)


def _catch_up(
    store: Store, projections: Sequence[Projection], batch: int, progress: Progress | None
) -> dict[str, int]:
    applied = {p.checkpoint: 0 for p in projections}
    # Only the types every fold reads, if each says (usage alone: a third of a ledger is
    # responses it never reads); one that does not say reads them all.
    types: frozenset[str] | None = frozenset()
    for p in projections:
        types = None if types is None or p.reads is None else types | p.reads
    while True:
        with store.snapshot() as view:
            at = {p.checkpoint: view.checkpoint(p.checkpoint) for p in projections}
            start = min(at.values(), default=0)
            events = view.read_after(start, batch, types)
            if types is not None and len(events) < batch:
                end = view.head_position()  # every event of those types up to the head
            elif events:
                end = events[-1].position
            else:
                return applied
            if end <= start:
                return applied
            whole = Batch(events, end=end)
            folded = [
                (p, part, p.fold(view, part))
                for p in projections
                if at[p.checkpoint] < whole.last
                for part in (whole.after(at[p.checkpoint]),)
            ]
        for p, part, rows in folded:
            if store.write_projection(p.table, rows, p.checkpoint, at[p.checkpoint], part.last):
                applied[p.checkpoint] += len(part)
        if progress is not None:
            progress(whole.last)


@contextmanager
def no_cycle_collection() -> Iterator[None]:
    """Folding a batch builds a great many objects that live until the batch is written (its
    events, their payloads, what the folds derive): the cycle collector would scan them all
    again and again (most of a catch-up's time, measured), though they hold no cycles and go
    by reference counting. So it waits until the catch-up is done."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def reset(store: Store, projection: Projection) -> None:
    """Empty the table and start its checkpoints again from 0 (the next catch-up rebuilds)."""
    store.ensure_projection(projection.table, projection.checkpoint)
    store.reset_projection(
        projection.table, (projection.checkpoint, *projection.dependent_checkpoints)
    )


def differed(before: Mapping[Any, Any], after: Mapping[Any, Any]) -> list[Any]:
    """The keys whose rows differ between two snapshots of a table (one missing from either
    included), in order: what a rebuild reports."""
    return [k for k in sorted(before.keys() | after.keys()) if before.get(k) != after.get(k)]


def as_rows(table: TableSpec, values: Iterable[Sequence[Any]]) -> list[Row]:
    names = table.column_names
    return [dict(zip(names, v, strict=True)) for v in values]


def select_all(table: TableSpec) -> str:
    """`SELECT <every column> FROM <table>`: the start of a portable reader query."""
    return f"SELECT {', '.join(table.column_names)} FROM {table.name}"


__all__ = [
    "ColumnSpec",
    "ColumnType",
    "Fold",
    "Guard",
    "LockedView",
    "Projection",
    "Row",
    "Batch",
    "TableSpec",
    "View",
    "as_rows",
    "catch_up",
    "catch_up_all",
    "differed",
    "reset",
    "select_all",
]
