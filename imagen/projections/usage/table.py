"""The local usage table: follows the ledger from a checkpoint; the outbox for Supabase sync.

`seq` orders rows as they were projected; the remote sync confirms rows up to a seq
(checkpoint `imagen.usage.synced.v3`), so anything not confirmed is sent again next time.
Declared through the ledger's projection API, so no SQL dialect appears here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from imagen.core.events import TERMINAL_TYPES
from imagen.projections.usage.fold import LOCAL_COLUMNS, READS
from ledger.events import RecordedEvent
from ledger.interface import Reader
from ledger.projection import ColumnSpec, ColumnType, Projection, Row, TableSpec, View, as_rows
from ledger.projection import catch_up as catch_up_projection
from ledger.projection import reset as reset_projection

if TYPE_CHECKING:
    from ledger import EventStore

# v3: a cancelled job counts like a failed one (its stored images, and what an accepted
# prediction did not deliver): projections/cost.py. Rows already sent are ignored remotely.
TABLE = "imagen_usage_v3"
CHECKPOINT = "imagen.usage.v3"
SYNCED = "imagen.usage.synced.v3"

_T, _I, _R = ColumnType.TEXT, ColumnType.INTEGER, ColumnType.REAL

USAGE = TableSpec(
    TABLE,
    key="seq",
    serial=True,
    # Unbounded text (any recorded string fits); values made to fit by usage/fold.py.
    columns=(
        ColumnSpec("seq", _I),
        ColumnSpec("id", _T, nullable=False, unique=True),
        ColumnSpec("created_at", _T, nullable=False, index=True),
        ColumnSpec("backend", _T),
        ColumnSpec("model", _T),
        ColumnSpec("seed", _T),  # exact decimal text: seeds go to 2^64-1, past a signed integer
        ColumnSpec("prompt_hash", _T),
        ColumnSpec("latency_ms", _I),
        ColumnSpec("cost_micros", _I),  # exact money: sums in SQL never round
        ColumnSpec("caller", _T, index=True),
        ColumnSpec("outcome", _T),  # image | paid_failed
    ),
    # Covering indexes: `imagen usage` groups a million rows from the index alone.
    indexes=(
        (
            "ix_imagen_usage_v3_backend_model",
            ("backend", "model", "outcome", "cost_micros", "latency_ms"),
        ),
        ("ix_imagen_usage_v3_caller_cost", ("caller", "outcome", "cost_micros", "latency_ms")),
    ),
)
assert USAGE.column_names[1:] == LOCAL_COLUMNS


def fold(view: View, events: Sequence[RecordedEvent]) -> list[Row]:
    """A row for each job the events end (the table keeps a job's first row)."""
    from imagen.projections.feed import job_usage

    ended = dict.fromkeys(e.stream_id for e in events if e.type in TERMINAL_TYPES)
    usage = job_usage(view, events, ended)
    rows = {r["id"]: dict(r) for jid in ended for r in usage[jid]}
    return list(rows.values())


PROJECTION = Projection(USAGE, CHECKPOINT, fold, dependent_checkpoints=(SYNCED,), reads=READS)


def catch_up(
    store: EventStore, *, batch: int = 20000, progress: Callable[[int], None] | None = None
) -> int:
    return catch_up_projection(store, PROJECTION, batch=batch, progress=progress)


def unsynced(reader: Reader, limit: int) -> list[dict[str, Any]]:
    rows = reader.query(
        f"SELECT {', '.join(USAGE.column_names)} FROM {TABLE} WHERE seq > :after "
        "ORDER BY seq LIMIT :limit",
        {"after": reader.get_checkpoint(SYNCED), "limit": int(limit)},
    )
    return as_rows(USAGE, rows)


def snapshot(reader: Reader) -> dict[str, tuple[Any, ...]]:
    """Every row, by id (for `imagen rebuild`'s before and after)."""
    rows = reader.query(f"SELECT {', '.join(LOCAL_COLUMNS)} FROM {TABLE}")
    return {r[0]: tuple(r) for r in rows}


def reset(store: EventStore) -> None:
    """Empty the table (and what was synced from it) for a rebuild."""
    reset_projection(store, PROJECTION)
