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

Only the standard library here: importing it never imports SQLAlchemy.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
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


def catch_up(store: Store, projection: Projection, *, batch: int = 20000) -> int:
    """Fold every event after the projection's checkpoint into its table; returns how many
    events this call applied (0 when another process did the work)."""
    store.ensure_projection(projection.table, projection.checkpoint)
    applied = 0
    while True:
        with store.snapshot() as view:
            after = view.checkpoint(projection.checkpoint)
            events = view.read_after(after, batch)
            if not events:
                return applied
            rows = projection.fold(view, events)
        last = events[-1].position
        if store.write_projection(projection.table, rows, projection.checkpoint, after, last):
            applied += len(events)


def reset(store: Store, projection: Projection) -> None:
    """Empty the table and start its checkpoints again from 0 (the next catch-up rebuilds)."""
    store.ensure_projection(projection.table, projection.checkpoint)
    store.reset_projection(
        projection.table, (projection.checkpoint, *projection.dependent_checkpoints)
    )


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
    "TableSpec",
    "View",
    "as_rows",
    "catch_up",
    "reset",
    "select_all",
]
