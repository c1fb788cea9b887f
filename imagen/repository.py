"""A job from the ledger: read its stream, decode and upcast each event, fold.

Its own floor (tests/test_floors.py): below the runner and the projections, which both load
jobs, and above the core and the ledger, which it joins."""

from __future__ import annotations

from typing import Any

from imagen.core.events import payload_of
from imagen.core.job import UNREAD, JobState, Recorded, fold
from ledger.events import RecordedEvent


def payload(e: RecordedEvent) -> Any:
    """The event's payload as JSON; one that is not JSON is kept visible as `{"data": text}`
    (it decodes as an event this imagen cannot read)."""
    return payload_of(e.data_json)


def to_recorded(e: RecordedEvent, data: Any = UNREAD) -> Recorded:
    """`data`: the event's `payload`, when the caller has it already (decoded once); else it
    is decoded, with the event, only if something reads the event."""
    return Recorded.stored(
        e.type, e.schema_version, data, e.data_json, e.stream_version, e.recorded_at, e.position
    )


def load(reader: Any, job_id: str) -> JobState:
    """`reader` is an EventStore or a read-only ledger reader."""
    return fold(job_id, [to_recorded(e) for e in reader.read_stream(job_id)])
