"""The jobs table: the job-list projection kept in the ledger database, caught up on read.

It is derived data: dropped and rebuilt whenever its version changes (or `imagen rebuild`).
Declared through the ledger's projection API, so no SQL dialect appears here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from imagen.projections.jobs import fold as projection
from ledger.events import IDENTITY_STREAM, RecordedEvent
from ledger.projection import ColumnSpec, ColumnType, Projection, Row, TableSpec, View
from ledger.projection import catch_up as catch_up_projection
from ledger.projection import reset as reset_projection

if TYPE_CHECKING:
    from ledger import EventStore

TABLE = "imagen_jobs_v1"
CHECKPOINT = "imagen.jobs.v1"

_T, _I, _R = ColumnType.TEXT, ColumnType.INTEGER, ColumnType.REAL

JOBS = TableSpec(
    TABLE,
    key="job_id",
    columns=(
        ColumnSpec("job_id", _T, 200),
        ColumnSpec("created_at", _T, 32, index=True),
        ColumnSpec("updated_at", _T, 32),
        ColumnSpec("status", _T, 20, index=True),
        ColumnSpec("backend", _T, 100),
        ColumnSpec("model", _T, 200),
        ColumnSpec("caller", _T, 200),
        ColumnSpec("prompt", _T),
        ColumnSpec("cost_usd", _R),
        ColumnSpec("image_path", _T),
        ColumnSpec("sha256", _T, 64),
        ColumnSpec("remote_id", _T, 200),
        ColumnSpec("pid", _I),
        ColumnSpec("host", _T, 255),
        ColumnSpec("proc_start", _T, 40),
        ColumnSpec("claimed_at", _T, 32),
        ColumnSpec("lease_seconds", _R),
        ColumnSpec("terminal_events", _I),
        ColumnSpec("events_after_terminal", _I),
        ColumnSpec("last_position", _I),
        ColumnSpec("error", _T),
    ),
)
assert JOBS.column_names == projection.COLUMNS


def fold(view: View, events: Sequence[RecordedEvent]) -> list[Row]:
    """The rows of every job the events touch, starting from the rows already there."""
    events = [e for e in events if e.stream_id != IDENTITY_STREAM]  # the ledger's id: no job
    rows = view.rows(JOBS, {e.stream_id for e in events})
    for e in events:
        rows[e.stream_id] = projection.apply(
            rows.get(e.stream_id),
            e.stream_id,
            e.type,
            e.data,
            e.recorded_at,
            e.position,
            e.schema_version,
        )
    return list(rows.values())


PROJECTION = Projection(JOBS, CHECKPOINT, fold)


def catch_up(store: EventStore, *, batch: int = 20000) -> int:
    return catch_up_projection(store, PROJECTION, batch=batch)


def reset(store: EventStore) -> None:
    reset_projection(store, PROJECTION)
