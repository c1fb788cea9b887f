"""The jobs table: the job-list projection kept in the ledger database, caught up on read.

It is derived data: dropped and rebuilt whenever its version changes (or `imagen rebuild`).
Declared through the ledger's projection API, so no SQL dialect appears here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from imagen.projections.jobs import fold as projection
from ledger.events import RecordedEvent
from ledger.projection import ColumnSpec, ColumnType, Projection, Row, TableSpec, View
from ledger.projection import catch_up as catch_up_projection
from ledger.projection import reset as reset_projection

if TYPE_CHECKING:
    from ledger import EventStore

# v4: cost_usd is the one figure of projections/cost.py (0 when nothing was billed).
# v5: server, the pool member (or overflow backend) that made the job's image.
TABLE = "imagen_jobs_v5"
CHECKPOINT = "imagen.jobs.v5"

_T, _I, _R = ColumnType.TEXT, ColumnType.INTEGER, ColumnType.REAL

JOBS = TableSpec(
    TABLE,
    key="job_id",
    # Unbounded text everywhere: a recorded string of any length fits (a varchar(n) would refuse
    # it on PostgreSQL); integers are bounded by the fold (projections/safe.py).
    columns=(
        ColumnSpec("job_id", _T),
        ColumnSpec("created_at", _T, index=True),
        ColumnSpec("updated_at", _T),
        ColumnSpec("status", _T, index=True),
        ColumnSpec("backend", _T),
        ColumnSpec("model", _T),
        ColumnSpec("caller", _T),
        ColumnSpec("prompt", _T),
        # Money as exact decimal text ("0.003000"): see imagen/core/money.py.
        ColumnSpec("price_usd", _T),
        ColumnSpec("count", _I),
        ColumnSpec("accepted", _I),
        ColumnSpec("cost_usd", _T),
        ColumnSpec("images", _I),
        ColumnSpec("image_path", _T),
        ColumnSpec("sha256", _T),
        ColumnSpec("remote_id", _T),
        ColumnSpec("pid", _I),
        ColumnSpec("host", _T),
        ColumnSpec("proc_start", _T),
        ColumnSpec("claimed_at", _T),
        ColumnSpec("lease_seconds", _R),
        ColumnSpec("terminal_events", _I),
        ColumnSpec("events_after_terminal", _I),
        ColumnSpec("last_position", _I),
        ColumnSpec("error", _T),
        ColumnSpec("batch", _T, index=True),  # v3: `imagen jobs --batch`, `imagen resume BATCH`
        ColumnSpec("batch_index", _I),
        ColumnSpec("server", _T),
    ),
)
assert JOBS.column_names == projection.COLUMNS


def fold(view: View, events: Sequence[RecordedEvent]) -> list[Row]:
    """The rows of every job the events touch, starting from the rows already there."""
    from imagen.projections.feed import payloads

    data = payloads(events, projection.READS)  # the payloads `step` reads (others: None)
    # "$ledger" (the ledger's id), "$budgets": streams that are not jobs.
    rows = view.rows(JOBS, {e.stream_id for e in events if e.stream_id[:1] != "$"})
    projection.fold_into(rows, events, data)  # rows: fresh dicts, ours to change
    return [projection.priced(r) for r in rows.values()]


PROJECTION = Projection(JOBS, CHECKPOINT, fold)


def catch_up(
    store: EventStore, *, batch: int = 20000, progress: Callable[[int], None] | None = None
) -> int:
    return catch_up_projection(store, PROJECTION, batch=batch, progress=progress)


def reset(store: EventStore) -> None:
    reset_projection(store, PROJECTION)
