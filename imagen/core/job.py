"""A job's state is a fold of its events: `evolve(state, recorded) -> state`.

Time enters only here, from the ledger's `recorded_at`: `state.now` is the time of the latest
event, so adapters can compute deadlines and poll times without reading a clock.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from imagen.core.times import is_iso_text, iso, parse_iso

__all__ = ["iso", "parse_time"]

from imagen.core.events import (
    CATALOGUE,
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
    decode,
    payload_of,
)

UNREAD: Any = object()  # a payload not yet decoded from its JSON text


class DamagedRecord(ValueError):
    """A recorded value no imagen writes (the store writes every event's time itself): one
    line that names it and the audit that finds the edit, never a crash."""


class _Fields:
    __slots__ = (
        "_event",
        "_unknown",
        "_at",
        "_text",
        "_payload",
        "_schema",
        "version",
        "position",
        "kind",
    )


class _Building(_Fields):
    """A `Recorded` while `stored` fills it in: plain attribute stores (a quarter of the cost
    of going round the immutability guard, per event of a catch-up), then it becomes one."""

    __slots__ = ()


class Recorded(_Fields):
    """An event as the ledger holds it: with its stream version and time. Immutable.

    Read from the ledger (`stored`), its event is decoded and its time parsed only when first
    asked for: a fold looks at few of a job's events (requests and responses, most of a
    ledger, are only counted and dated), so a catch-up over millions of events builds only
    the events something reads. `kind` is the type name as recorded, known without decoding;
    the event it decodes to is of that catalogue type or an `UnknownEvent`."""

    __slots__ = ()

    def __init__(
        self,
        event: Event,
        version: int,
        at: datetime,
        position: int = 0,
        unknown_fields: tuple[str, ...] = (),  # dropped when read: written by a newer imagen
    ) -> None:
        kind = event.type if isinstance(event, UnknownEvent) else type(event).__name__
        _set(self, "_event", event)
        _set(self, "_unknown", unknown_fields)
        _set(self, "_at", at)
        _set(self, "_text", None)
        _set(self, "_payload", None)
        _set(self, "_schema", 0)
        _set(self, "version", version)
        _set(self, "position", position)
        _set(self, "kind", kind)

    @classmethod
    def stored(
        cls,
        kind: str,
        schema_version: int,
        payload: Any,
        text: str,
        version: int,
        at: str,
        position: int,
    ) -> Recorded:
        """An event from a ledger row: `text` its recorded JSON, `payload` that text already
        decoded (or `UNREAD`), `at` its recorded time."""
        rec = _new(_Building)
        rec._event = None
        rec._unknown = ()
        rec._at = rec._text = at
        rec._payload = text if payload is UNREAD else (payload,)
        rec._schema = schema_version
        rec.version = version
        rec.position = position
        rec.kind = kind
        _set(rec, "__class__", cls)
        return rec

    @property
    def event(self) -> Event:
        event = self._event
        if event is None:
            source = self._payload
            data = payload_of(source) if type(source) is str else source[0]
            decoded = decode(self.kind, self._schema, data)
            event = decoded.event
            _set(self, "_unknown", decoded.unknown_fields)
            _set(self, "_event", event)
            _set(self, "_payload", None)
        return event

    def may_have(self, name: str, value: object) -> bool:
        """False only when the event, decoded, would not have `value` in its field `name`:
        read from the payload alone where that is exact (a payload of the type's current
        schema: decoding keeps its field values or yields an UnknownEvent), so a search among
        many events of one type builds only the one it looks for."""
        if self._event is None:
            cls = CATALOGUE.get(self.kind)
            if cls is not None and self._schema == cls.SCHEMA_VERSION:
                source = self._payload
                if (
                    type(source) is str
                    and type(value) is str
                    and value not in source
                    and "\\u" not in source
                    and _required(cls, name)
                ):
                    # A JSON string decodes to `value` only if its text holds `value` as it is
                    # or writes a letter as a \u escape: with neither, the field (which the
                    # payload must give: no default) does not hold it.
                    return False
                data = payload_of(source) if type(source) is str else source[0]
                _set(self, "_payload", (data,))
                if type(data) is dict and name in data:
                    return bool(data[name] == value)
            return True
        return bool(getattr(self._event, name, _ABSENT) == value)

    @property
    def unknown_fields(self) -> tuple[str, ...]:
        self.event  # noqa: B018 -- decoding finds them
        return self._unknown

    @property
    def at(self) -> datetime:
        at = self._at
        if not isinstance(at, datetime):  # the recorded text (or a hostile writer's value)
            try:
                at = parse_iso(at)
            except (ValueError, TypeError, AttributeError):
                raise DamagedRecord(
                    f"event {self.position} was recorded at {str(self._at)[:40]!r}, which is "
                    "not a time: the ledger was edited outside imagen; `imagen audit` shows where"
                ) from None
            _set(self, "_at", at)
        return at

    @property
    def at_iso(self) -> str:
        """`iso(self.at)`: the recorded text itself when it is in that form already (the
        ledger's own), without formatting the time again (twice per job in a usage catch-up)."""
        at = self.at  # (a text that is no time raises here, as always)
        text = self._text
        return text if type(text) is str and is_iso_text(text) else iso(at)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"Recorded is immutable: cannot set {name!r}")

    def __reduce__(self) -> tuple[object, ...]:  # (copy and pickle: rebuilt, decoded)
        return (Recorded, (self.event, self.version, self.at, self.position, self.unknown_fields))

    def _key(self) -> tuple[object, ...]:
        return (self.event, self.version, self.at, self.position, self.unknown_fields)

    def __eq__(self, other: object) -> bool:
        if type(other) is not Recorded:
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash((self.version, self.position, self.kind))

    def __repr__(self) -> str:
        return (
            f"Recorded(event={self.event!r}, version={self.version!r}, at={self.at!r}, "
            f"position={self.position!r}, unknown_fields={self.unknown_fields!r})"
        )


_set = object.__setattr__
_REQUIRED: dict[tuple[type, str], bool] = {}


def _required(cls: type, name: str) -> bool:
    """Whether the event class's field `name` has no default (a payload must give it)."""
    key = (cls, name)
    if key not in _REQUIRED:
        f = getattr(cls, "__dataclass_fields__", {}).get(name)
        _REQUIRED[key] = (
            f is not None
            and f.default is dataclasses.MISSING
            and f.default_factory is dataclasses.MISSING
        )
    return _REQUIRED[key]


_ABSENT = object()
_new = object.__new__


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

    @property
    def in_flight(self) -> dict[str, RequestSent]:
        """Requests sent and not yet answered, by request id (worked out when asked: a fold
        need not decode a job's requests and responses)."""
        out: dict[str, RequestSent] = {}
        for r in self.history:
            if r.kind in _EXCHANGE_KINDS:
                e = r.event
                if isinstance(e, RequestSent):
                    out[e.request_id] = e
                elif isinstance(e, ResponseReceived | RequestFailed):
                    out.pop(e.request_id, None)
        return out

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
    def ended_at(self) -> datetime | None:
        """When the job ended: the time of the event that ended it (the last, if a hostile
        history has several), never of anything recorded after; None while under way."""
        if self.terminal is None:
            return None
        end = self._end()
        return self.now if end is None else end.at  # (a terminal is always in a history)

    @property
    def ended_iso(self) -> str | None:
        """`ended_at` in `iso`'s form."""
        if self.terminal is None:
            return None
        end = self._end()
        if end is None:
            return None if self.now is None else iso(self.now)
        return end.at_iso

    def _end(self) -> Recorded | None:
        """The event that ended the job: the last, if a hostile history has several."""
        return next((r for r in reversed(self.history) if r.kind in TERMINAL_TYPES), None)

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
        names = kinds_of(kind)
        return [
            r
            for r in self.history
            if (names is None or r.kind in names) and isinstance(r.event, kind)
        ]

    def last(self, kind: type[Event]) -> Recorded | None:
        names = kinds_of(kind)
        for r in reversed(self.history):
            if (names is None or r.kind in names) and isinstance(r.event, kind):
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


_EXCHANGE_KINDS = frozenset({"RequestSent", "ResponseReceived", "RequestFailed"})
_KINDS: dict[type, frozenset[str] | None] = {}


def kinds_of(cls: type[Event]) -> frozenset[str] | None:
    """The recorded type names whose events can be instances of `cls` (None: any, as for
    `Event` or `UnknownEvent`, which an event of any name decodes to when it does not fit).
    An event recorded as X decodes to CATALOGUE[X] or to an UnknownEvent, so a fold that
    looks for `cls` decodes only the events of these names."""
    if cls not in _KINDS:
        _KINDS[cls] = (
            None
            if issubclass(UnknownEvent, cls)
            else frozenset(n for n, c in CATALOGUE.items() if issubclass(c, cls))
        )
    return _KINDS[cls]


# The types `_advance` reads (keep in step with its branches): a job's other events (requests,
# responses, progress: most of them) only move its version and time, so folding never
# decodes them.
ADVANCES = frozenset(
    {
        "JobRequested",
        "RunnerClaimed",
        "RunnerRenewed",
        "RemoteJobAccepted",
        "ImageStored",
        "JobOverflowed",
        "CancelRequested",
        "JobInterrupted",
        *TERMINAL_TYPES,
    }
)


def evolve(state: JobState, rec: Recorded) -> JobState:
    fields: dict[str, object] = {"history": (*state.history, rec)}
    _advance(state, fields, rec)
    fields["version"], fields["now"] = rec.version, rec.at
    return replace(state, **fields)  # type: ignore[arg-type]


def _advance(state: JobState, changes: dict[str, object], rec: Recorded) -> None:
    """The changes one event makes to a job's state beyond its version and time, into
    `changes`; `state` for what `changes` does not hold yet."""
    if rec.kind not in ADVANCES:
        return
    e = rec.event
    if isinstance(e, JobRequested):
        changes.update(request=e, started_at=rec.at)
    elif isinstance(e, RunnerClaimed):
        changes.update(claim=e, claim_at=rec.at, interrupted=None)
    elif isinstance(e, RunnerRenewed):
        changes["claim_at"] = rec.at
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
    if not recorded:
        return start
    fields: dict[str, object] = {"history": tuple(recorded)}
    for rec in recorded:
        if rec.kind in ADVANCES:
            _advance(start, fields, rec)
    last = recorded[-1]
    fields["version"], fields["now"] = last.version, last.at
    return JobState(job_id, **fields)  # type: ignore[arg-type]
