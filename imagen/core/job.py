"""A job's state is a fold of its events: `evolve(state, recorded) -> state`.

Time enters only here, from the ledger's `recorded_at`: `state.now` is the time of the latest
event, so adapters can compute deadlines and poll times without reading a clock.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from imagen.core.times import iso, parse_iso

__all__ = ["iso", "parse_time"]

from imagen.core.events import (
    TERMINAL_TYPES,
    CancelRequested,
    Event,
    ImageStored,
    JobInterrupted,
    JobOverflowed,
    JobRequested,
    RemoteJobAccepted,
    RequestFailed,
    RequestSent,
    ResponseReceived,
    RunnerClaimed,
    RunnerRenewed,
    UnknownEvent,
)


@dataclass(frozen=True)
class Recorded:
    """An event as the ledger holds it: with its stream version and time."""

    event: Event
    version: int
    at: datetime
    position: int = 0
    unknown_fields: tuple[str, ...] = ()  # dropped when read: written by a newer imagen


@dataclass(frozen=True)
class JobState:
    job_id: str
    version: int = 0
    request: JobRequested | None = None
    history: tuple[Recorded, ...] = ()
    started_at: datetime | None = None
    now: datetime | None = None
    remote_id: str | None = None
    images: tuple[ImageStored, ...] = ()
    cancel: CancelRequested | None = None
    terminal: Event | None = None
    claim: RunnerClaimed | None = None
    claim_at: datetime | None = None
    interrupted: JobInterrupted | None = None
    in_flight: dict[str, RequestSent] = field(default_factory=dict)

    @property
    def image(self) -> ImageStored | None:
        """The first image (index 0), for callers that show one."""
        return self.images[0] if self.images else None

    @property
    def count(self) -> int:
        """How many images the job asked for (1 for requests recorded before `count`)."""
        return image_count(self.request)

    def stored(self, index: int) -> ImageStored | None:
        return next((i for i in self.images if i.index == index), None)

    @property
    def finished(self) -> bool:
        return self.terminal is not None

    @property
    def status(self) -> str:
        """succeeded | failed | cancelled | interrupted | running | requested (liveness of the
        owning process is decided by the shell, which can see processes)."""
        if self.terminal is not None:
            return {"JobSucceeded": "succeeded", "JobFailed": "failed"}.get(
                type(self.terminal).__name__, "cancelled"
            )
        if self.interrupted is not None:
            return "interrupted"
        return "running" if self.claim else "requested"

    @property
    def from_newer_imagen(self) -> list[Recorded]:
        """Events this imagen could not fully read (see `events.decode`)."""
        return [r for r in self.history if isinstance(r.event, UnknownEvent) or r.unknown_fields]

    def events_of(self, kind: type[Event]) -> list[Recorded]:
        return [r for r in self.history if isinstance(r.event, kind)]

    def last(self, kind: type[Event]) -> Recorded | None:
        for r in reversed(self.history):
            if isinstance(r.event, kind):
                return r
        return None

    def after(self, seconds: float) -> str:
        """The ISO time `seconds` after the latest event (for not_before fields)."""
        assert self.now is not None
        return iso(self.now + timedelta(seconds=seconds))


# The one timestamp implementation lives in core/times.py; these names are what adapters use.
parse_time = parse_iso


def image_count(request: JobRequested | None) -> int:
    if request is None:
        return 1
    value = request.params.get("count") if isinstance(request.params, dict) else None
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 1 else 1


def image_path(output_path: str, index: int) -> str:
    """Where image `index` of a job goes: the output path itself for the first, then
    `name-2.png`, `name-3.png`... beside it."""
    if index == 0:
        return output_path
    head, dot, ext = output_path.rpartition(".")
    if not dot or "/" in ext:
        return f"{output_path}-{index + 1}"
    return f"{head}-{index + 1}.{ext}"


def evolve(state: JobState, rec: Recorded) -> JobState:
    fields = {"history": (*state.history, rec), "in_flight": dict(state.in_flight)}
    _advance(state, fields, rec)
    return replace(state, **fields)  # type: ignore[arg-type]


def _advance(state: JobState, changes: dict[str, object], rec: Recorded) -> None:
    """The changes one event makes to a job's state, into `changes` (whose `in_flight` is a
    dict of its own, changed in place); `state` for what `changes` does not hold yet."""
    e = rec.event
    changes["version"], changes["now"] = rec.version, rec.at
    if isinstance(e, JobRequested):
        changes.update(request=e, started_at=rec.at)
    elif isinstance(e, RunnerClaimed):
        changes.update(claim=e, claim_at=rec.at, interrupted=None)
    elif isinstance(e, RunnerRenewed):
        changes["claim_at"] = rec.at
    elif isinstance(e, RequestSent):
        changes["in_flight"][e.request_id] = e  # type: ignore[index]
    elif isinstance(e, ResponseReceived | RequestFailed):
        changes["in_flight"].pop(e.request_id, None)  # type: ignore[attr-defined]
    elif isinstance(e, RemoteJobAccepted):
        changes["remote_id"] = e.remote_id
    elif isinstance(e, ImageStored):
        # One entry per index, in index order; a re-stored index replaces the earlier one.
        images = changes.get("images", state.images)
        kept = [i for i in images if i.index != e.index]  # type: ignore[attr-defined]
        changes["images"] = tuple(sorted([*kept, e], key=lambda i: i.index))
    elif isinstance(e, JobOverflowed) and changes.get("request", state.request) is not None:
        # The job is the overflow backend's from here: its adapter, its price. (The request
        # from `changes`: `fold` passes the empty start state for every event.)
        changes["request"] = replace(
            changes.get("request", state.request),  # type: ignore[type-var]
            backend=e.backend,
            backend_type=e.backend_type,
            model=e.model,
            params=e.params,
            backend_config=e.backend_config,
            price_usd=e.price_usd,
        )
    elif isinstance(e, CancelRequested):
        changes["cancel"] = e
    elif isinstance(e, JobInterrupted):
        changes["interrupted"] = e
    if type(e).__name__ in TERMINAL_TYPES:
        changes["terminal"] = e


def fold(job_id: str, recorded: list[Recorded]) -> JobState:
    """`evolve` over every event, building the state once (not once per event)."""
    start = JobState(job_id)
    fields: dict[str, object] = {"history": tuple(recorded), "in_flight": {}}
    for rec in recorded:
        _advance(start, fields, rec)
    return replace(start, **fields)  # type: ignore[arg-type]
