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

Only the standard library here: readers import this module without SQLAlchemy.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Any, Protocol

from ledger.events import RecordedEvent

if TYPE_CHECKING:
    from ledger.store import EventStore

Row = dict[str, Any]


class ColumnType(Enum):
    TEXT = "text"
    INTEGER = "integer"  # 64-bit signed on both engines
    REAL = "real"


@dataclass(frozen=True, slots=True)
class ColumnSpec:
    name: str
    type: ColumnType
    length: int | None = None  # a bound for short text (VARCHAR); None is unbounded TEXT
    nullable: bool = True
    index: bool = False
    unique: bool = False


@dataclass(frozen=True, slots=True)
class TableSpec:
    """A projection table: `key` is its primary key. With `serial`, the key is a counter the
    database assigns in insertion order (for outboxes); rows are then told apart by their
    `unique` columns and a row already present is kept, never replaced."""

    name: str
    key: str
    columns: tuple[ColumnSpec, ...]
    indexes: tuple[tuple[str, tuple[str, ...]], ...] = ()  # (name, columns)
    serial: bool = False

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    def column(self, name: str) -> ColumnSpec:
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(name)


class View(Protocol):
    """What a fold may read: a consistent snapshot of the ledger and the projection's rows."""

    def read_stream(self, stream_id: str, after_version: int = 0) -> list[RecordedEvent]: ...

    def rows(self, table: TableSpec, keys: Iterable[Any]) -> dict[Any, Row]: ...


Fold = Callable[[View, Sequence[RecordedEvent]], list[Row]]


class LockedView(View, Protocol):
    """What an append's guard reads, inside the append's transaction under the write lock:
    the ledger as it stands at that instant, every event committed before included."""

    def checkpoint(self, name: str) -> int: ...

    def has_checkpoint(self, name: str) -> bool: ...

    def read_after(self, after: int, limit: int) -> list[RecordedEvent]: ...

    def query(
        self, sql: str, params: Mapping[str, object] | None = None
    ) -> list[tuple[Any, ...]]: ...


# A check run by `append(..., guard=...)` before it writes; it refuses the append by raising
# (nothing is written, the exception reaches the caller unchanged).
Guard = Callable[[LockedView], None]


@dataclass(frozen=True, slots=True)
class Projection:
    """`fold(view, events)` returns the rows the events change (whole rows); it must be
    deterministic, so a batch folded twice gives the same rows."""

    table: TableSpec
    checkpoint: str
    fold: Fold
    # Checkpoints that start again from 0 with the table (e.g. an outbox's "sent up to").
    dependent_checkpoints: tuple[str, ...] = ()


def catch_up(store: EventStore, projection: Projection, *, batch: int = 20000) -> int:
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


def reset(store: EventStore, projection: Projection) -> None:
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
