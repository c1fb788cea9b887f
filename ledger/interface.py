"""What the ledger offers, as types (standard library only): projection tables declared without
SQL dialects, the views a fold and a guard read, and the store's interface as Protocols.

`Store` is what the app and the projections are written against; `ledger.store.EventStore`
is its one implementation, on SQLite and PostgreSQL alike. `Reader` is the read-only part
(what `open_reader` gives). Queries use `:name` parameters, so one SQL text (kept to portable
SQL) runs on every engine.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any, Protocol

from ledger.chain import Head, VerifyReport
from ledger.events import NewEvent, RecordedEvent

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


class LockedView(View, Protocol):
    """What an append's guard reads, inside the append's transaction under the write lock:
    the ledger as it stands at that instant, every event committed before included. A
    snapshot (`Store.snapshot`) reads the same way, without the lock."""

    def checkpoint(self, name: str) -> int: ...

    def has_checkpoint(self, name: str) -> bool: ...

    def read_after(
        self, after: int, limit: int, types: Collection[str] | None = None
    ) -> list[RecordedEvent]: ...

    def head_position(self) -> int: ...

    def hash_at(self, position: int) -> str | None: ...

    def query(
        self, sql: str, params: Mapping[str, object] | None = None
    ) -> list[tuple[Any, ...]]: ...


# A check run by `append(..., guard=...)` before it writes; it refuses the append by raising
# (nothing is written, the exception reaches the caller unchanged).
Guard = Callable[[LockedView], None]


class Reader(Protocol):
    def read_stream(self, stream_id: str, after_version: int = 0) -> list[RecordedEvent]: ...
    def streams_with_prefix(self, prefix: str, limit: int = 10) -> list[str]: ...
    def get_checkpoint(self, name: str) -> int: ...
    def is_current(self, checkpoint: str) -> bool: ...
    def head_position(self) -> int: ...
    def identity(self) -> str | None: ...
    def query(
        self, sql: str, params: Mapping[str, object] | None = None
    ) -> list[tuple[Any, ...]]: ...
    def close(self) -> None: ...


class Writer(Protocol):
    """The write API group commit (ledger/group.py) relies on, and nothing else."""

    def transaction(self) -> AbstractContextManager[Any]: ...
    def append(
        self,
        stream_id: str,
        new_events: Sequence[NewEvent],
        expected_version: int | None,
        *,
        conn: Any = None,
        guard: Guard | None = None,
    ) -> list[RecordedEvent]: ...


class Store(Reader, Writer, Protocol):
    """The event store (see ledger/store.py for the contract of each method)."""

    head_path: Path | None

    def head(self) -> Head: ...
    def stream_version(self, stream_id: str) -> int: ...
    def hashes_at(self, positions: Sequence[int]) -> dict[int, str]: ...
    def read_all(self, after: int = 0, *, batch: int = 5000) -> Iterator[RecordedEvent]: ...
    def read_batches(
        self, after: int = 0, *, batch: int = 20000, until: int | None = None
    ) -> Iterator[list[RecordedEvent]]: ...
    def verify(self, *, batch: int = 20000) -> VerifyReport: ...
    def snapshot(self) -> AbstractContextManager[LockedView]: ...
    def ensure_projection(self, table: TableSpec, checkpoint: str) -> None: ...
    def write_projection(
        self, table: TableSpec, rows: Sequence[Row], checkpoint: str, expected: int, position: int
    ) -> bool: ...
    def reset_projection(self, table: TableSpec, checkpoints: Sequence[str]) -> None: ...
    def set_checkpoint(self, name: str, position: int) -> None: ...
    def read_head_file(self) -> Head | None: ...
    def head_file_problems(self, head: Head) -> list[dict[str, object]]: ...
    def scratch(self) -> Store | None: ...
