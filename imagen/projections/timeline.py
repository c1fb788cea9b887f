"""A job's timeline for `imagen show`: each event as one line, times relative to the start."""

from __future__ import annotations

from typing import Any, TypedDict

from imagen.core.events import (
    CancelRequested,
    Event,
    ForceNewRequested,
    ImageStored,
    JobCancelled,
    JobFailed,
    JobInterrupted,
    JobRequested,
    JobSucceeded,
    LookupConcluded,
    PollsUnchanged,
    ProgressObserved,
    RemoteJobAccepted,
    RequestFailed,
    RequestSent,
    ResponseReceived,
    RetryScheduled,
    RunnerClaimed,
    RunnerRenewed,
    StreamClosed,
    StreamMessage,
    StreamOpened,
    StreamQuiet,
    UnknownEvent,
)
from imagen.core.job import JobState
from imagen.core.times import iso


def describe(e: Event) -> str:
    """One line for people; an event whose values cannot be shown that way is named instead."""
    try:
        return _describe(e)
    except (ValueError, TypeError, OverflowError, AttributeError, KeyError) as exc:
        return f"{type(e).__name__} (values not shown: {type(exc).__name__})"


def _describe(e: Event) -> str:
    match e:
        case JobRequested():
            p = e.params
            return (
                f"requested {e.backend} ({e.model}) seed={p.get('seed')} "
                f"{p.get('width')}x{p.get('height')} steps={p.get('steps')} → {e.output_path}"
            )
        case RunnerClaimed():
            return f"{'resumed' if e.resumed else 'claimed'} by pid {e.pid} on {e.host}"
        case RunnerRenewed():
            return f"lease renewed by pid {e.pid} ({e.lease_seconds:g} s)"
        case RequestSent():
            return f"→ {e.method} {e.url} [{e.purpose}]"
        case ResponseReceived():
            status = e.body.get("status") if isinstance(e.body, dict) else None
            extra = f" status={status}" if isinstance(status, str) else ""
            return f"← HTTP {e.status} in {e.elapsed_ms:.0f} ms [{e.purpose}]{extra}"
        case RequestFailed():
            return f"✗ {e.purpose} failed: {e.error}: {e.message}"
        case PollsUnchanged():
            return f"… asked {e.count} more times over {e.seconds:g} s, same answer [{e.purpose}]"
        case RetryScheduled():
            return f"retry {e.purpose} #{e.attempt} in {e.delay_s:g}s: {e.reason}"
        case RemoteJobAccepted():
            return f"remote job {e.remote_id} (via {e.via})"
        case LookupConcluded():
            return f"lookup of earlier remote jobs: {e.decision} {e.matches}"
        case ForceNewRequested():
            return f"user forced a new remote job: {e.reason}"
        case StreamOpened():
            return f"progress stream open ({e.client_id})"
        case StreamClosed():
            return f"progress stream closed: {e.reason} {e.message}".rstrip()
        case StreamQuiet():
            return f"progress stream quiet for {e.seconds:g} s: asking the server"
        case StreamMessage():
            return f"stream: {e.kind}"
        case ProgressObserved():
            steps = f" step {e.step}/{e.total}" if e.total else ""
            return f"progress: {e.status}{steps}"
        case ImageStored():
            return f"image stored {e.path} ({e.width}x{e.height} {e.format}, {e.bytes} bytes, sha256 {e.sha256[:12]}…)"
        case CancelRequested():
            return f"cancel requested ({e.reason})"
        case JobSucceeded():
            return "succeeded"
        case JobFailed():
            return f"failed ({e.reason}): {e.message}"
        case JobCancelled():
            if e.detail:
                return f"cancelled ({e.reason}): {e.detail}"
            return f"cancelled ({e.reason}){'; remote job cancelled' if e.remote_cancelled else ''}"
        case JobInterrupted():
            return f"interrupted by {e.signal}"
        case UnknownEvent():
            return f"unknown event {e.type} v{e.schema_version}, not read ({e.why}): written by a newer imagen?"
    return type(e).__name__


class TimelineRow(TypedDict):
    """One recorded event as `imagen show` lists it."""

    t: float  # seconds from the job's start
    at: str  # when it was recorded (the one Z form)
    type: str
    text: str
    data: dict[str, Any]


def timeline(state: JobState) -> list[TimelineRow]:
    start = state.started_at
    rows: list[TimelineRow] = []
    for rec in state.history:
        offset = (rec.at - start).total_seconds() if start else 0.0
        rows.append(
            {
                "t": round(offset, 3),
                "at": iso(rec.at),
                "type": type(rec.event).__name__,
                "text": describe(rec.event)
                + (
                    f" (+ fields from a newer imagen: {', '.join(rec.unknown_fields)})"
                    if rec.unknown_fields
                    else ""
                ),
                "data": rec.event.to_data(),
            }
        )
    return rows
