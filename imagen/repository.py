"""A job from the ledger: read its stream, decode and upcast each event, fold.

Its own floor (tests/test_floors.py): below the runner and the projections, which both load
jobs, and above the core and the ledger, which it joins."""

from __future__ import annotations

from typing import Any

from imagen.core.events import decode
from imagen.core.job import JobState, Recorded, fold, parse_time
from ledger.events import RecordedEvent

_NOT_READ = object()


def payload(e: RecordedEvent) -> Any:
    """The event's payload as JSON; one that is not JSON is kept visible as `{"data": text}`
    (it decodes as an event this imagen cannot read)."""
    try:
        return e.data
    except ValueError:
        return {"data": e.data_json}


def to_recorded(e: RecordedEvent, data: Any = _NOT_READ) -> Recorded:
    """`data`: the event's `payload`, when the caller has it already (decoded once)."""
    decoded = decode(e.type, e.schema_version, payload(e) if data is _NOT_READ else data)
    return Recorded(
        decoded.event,
        e.stream_version,
        parse_time(e.recorded_at),
        e.position,
        decoded.unknown_fields,
    )


def load(reader: Any, job_id: str) -> JobState:
    """`reader` is an EventStore or a read-only ledger reader."""
    return fold(job_id, [to_recorded(e) for e in reader.read_stream(job_id)])
