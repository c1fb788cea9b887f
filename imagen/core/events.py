"""The catalogue of everything that can happen to a job.

Each event is a frozen dataclass with a stable `type` name (its class name) and a JSON-safe
payload. Building one checks every field against its annotation (an enum field takes its
enum or its value; a wrong type or a NaN raises), so nothing malformed reaches an append.
Events are never rewritten: when a payload changes shape, bump `SCHEMA_VERSION` on the class
and register a step in `UPCASTERS` that reads the old shape.

Reading is forward compatible (a shared PostgreSQL ledger may hold events from a newer
imagen): `decode` never raises. An unknown type, a newer schema version or a payload that does
not fit becomes an `UnknownEvent` (folds ignore it; `show` and `audit` name it); fields this
imagen does not know are dropped and reported beside the event.

Secrets never appear here: requests carry header values already redacted, and credentials are
named by the environment variable that holds them, never by value.
"""

from __future__ import annotations

import dataclasses
import json
import math
import types
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from enum import Enum, StrEnum
from typing import Any, ClassVar, NamedTuple, Union, get_args, get_origin, get_type_hints

from imagen.core.failures import Failure

JSON = dict[str, Any]

REDACTED = "[redacted]"
SECRET_HEADERS = frozenset(
    {"authorization", "proxy-authorization", "apikey", "x-api-key", "cookie"}
)


def redact_headers(headers: dict[str, str] | tuple[tuple[str, str], ...]) -> dict[str, str]:
    items = headers.items() if isinstance(headers, dict) else headers
    return {k: (REDACTED if k.lower() in SECRET_HEADERS else v) for k, v in items}


class AcceptedVia(StrEnum):
    CREATE = "create"  # our create request was answered with the remote id
    LOOKUP = "lookup"  # found by looking up earlier remote jobs after an uncertain create


class LookupDecision(StrEnum):
    ADOPT = "adopt"  # earlier remote jobs match this job's exact input: one no other job holds
    # is this job's (they are interchangeable; the first in id order is taken)
    CREATE = "create"  # none matches: creating is safe
    # Older imagen halted when several matched (a person then chose resume --force-new, paying
    # again); still read in old ledgers, no longer decided.
    AMBIGUOUS = "ambiguous"
    RESUBMIT = "resubmit"  # the server lost the job before running it (ComfyUI restart)
    REFUSED = "refused"  # a listing linked to another origin: not followed, the job halts


class CancelReason(StrEnum):
    USER = "user"
    TIMEOUT = "timeout"


@dataclass(frozen=True)
class Event:
    SCHEMA_VERSION: ClassVar[int] = 1

    def __post_init__(self) -> None:
        checks = _shallow_checkers(type(self)) if _DECODING.get() else _checkers(type(self))
        for name, where, check in checks:
            value = getattr(self, name)
            conformed = check(value, where)
            if conformed is not value:
                object.__setattr__(self, name, conformed)

    @classmethod
    def type_name(cls) -> str:
        return cls.__name__

    def to_data(self) -> JSON:
        return dataclasses.asdict(self)


# -- field checks (built once per class from its annotations) ---------------------------------

Check = Callable[[Any, str], Any]
Checks = tuple[tuple[str, str, Check], ...]  # (field, "Class.field", check)
_CHECKS: dict[type, Checks] = {}
_SHALLOW: dict[type, Checks] = {}
# Set while decoding recorded events: their payload came from JSON, so values typed Any (and
# JSON objects) need no walk; every other field is still checked.
_DECODING: ContextVar[bool] = ContextVar("imagen_decoding", default=False)


def _checkers(cls: type) -> Checks:
    checks = _CHECKS.get(cls)
    if checks is None:
        hints = get_type_hints(cls)
        checks = _CHECKS[cls] = tuple(
            (f.name, f"{cls.__name__}.{f.name}", _check_for(hints[f.name]))
            for f in dataclasses.fields(cls)
        )
    return checks


def _shallow_checkers(cls: type) -> Checks:
    checks = _SHALLOW.get(cls)
    if checks is None:
        hints = get_type_hints(cls)
        checks = _SHALLOW[cls] = tuple(
            (f.name, f"{cls.__name__}.{f.name}", _check_for(hints[f.name], shallow=True))
            for f in dataclasses.fields(cls)
            if hints[f.name] is not Any
        )
    return checks


def _fail(where: str, value: Any, wanted: str) -> TypeError:
    shown = repr(value)
    shown = shown if len(shown) <= 60 else shown[:57] + "..."
    return TypeError(f"{where} must be {wanted}, not {type(value).__name__} {shown}")


def _check_for(hint: Any, shallow: bool = False) -> Check:
    if hint is Any:
        return _trusted if shallow else _json_value
    origin = get_origin(hint)
    if origin in (Union, types.UnionType):
        options = [a for a in get_args(hint) if a is not type(None)]
        inner = _check_for(options[0], shallow) if len(options) == 1 else _json_value
        return lambda v, where: None if v is None else inner(v, where)
    if isinstance(hint, type) and issubclass(hint, Enum):
        enum = hint

        def check_enum(v: Any, where: str) -> Any:
            if isinstance(v, enum):
                return v
            if isinstance(v, str):
                try:
                    return enum(v)
                except ValueError:
                    allowed = ", ".join(m.value for m in enum)
                    raise ValueError(f"{where} must be one of {allowed}, not {v!r}") from None
            raise _fail(where, v, enum.__name__)

        return check_enum
    if hint is bool:
        return _scalar(lambda v: isinstance(v, bool), "a bool")
    if hint is int:
        return _scalar(lambda v: isinstance(v, int) and not isinstance(v, bool), "an int")
    if hint is float:
        return _number
    if hint is str:
        return _scalar(lambda v: isinstance(v, str), "a str")
    if origin is dict:
        key, val = get_args(hint)
        check_val = _check_for(val, shallow)
        walk = not (shallow and val is Any)

        def check_dict(v: Any, where: str) -> Any:
            if not isinstance(v, dict):
                raise _fail(where, v, "a dict with str keys")
            if walk:
                for k, item in v.items():
                    if not isinstance(k, str):
                        raise _fail(where, v, "a dict with str keys")
                    check_val(item, f"{where}[{k!r}]")
            return v

        return check_dict
    if origin is list:
        (item_hint,) = get_args(hint)
        check_item = _check_for(item_hint, shallow)

        def check_list(v: Any, where: str) -> Any:
            if not isinstance(v, list):
                raise _fail(where, v, "a list")
            for i, item in enumerate(v):
                check_item(item, f"{where}[{i}]")
            return v

        return check_list
    raise TypeError(f"no check for annotation {hint!r}")  # a new field type: teach _check_for


def _scalar(ok: Callable[[Any], bool], wanted: str) -> Check:
    def check(v: Any, where: str) -> Any:
        if not ok(v):
            raise _fail(where, v, wanted)
        return v

    return check


def _number(v: Any, where: str) -> Any:
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise _fail(where, v, "a number")
    if isinstance(v, float) and not math.isfinite(v):
        raise ValueError(f"{where} must be finite, not {v!r}")
    return v


def _trusted(v: Any, where: str) -> Any:
    return v


def _json_value(v: Any, where: str) -> Any:
    """Anything the ledger can record as JSON (str keys, finite numbers)."""
    if v is None or isinstance(v, str | bool | int):
        return v
    if isinstance(v, float):
        return _number(v, where)
    if isinstance(v, list):
        for i, item in enumerate(v):
            _json_value(item, f"{where}[{i}]")
        return v
    if isinstance(v, dict):
        for k, item in v.items():
            if not isinstance(k, str):
                raise _fail(f"{where} key", k, "a str")
            _json_value(item, f"{where}[{k!r}]")
        return v
    raise _fail(where, v, "JSON (str, number, bool, None, list or dict)")


# -- a job is asked for ------------------------------------------------------------------------


@dataclass(frozen=True)
class JobRequested(Event):
    """Everything needed to run the job again from scratch, fixed before any money is spent.

    `params` holds the normalised user input (width, height, seed, steps, output_format, extra
    model inputs); `backend_config` the instance configuration at request time (secrets by env
    var name only), so a resume behaves like the original run even if the config changed.
    """

    backend: str
    backend_type: str
    model: str
    prompt: str
    params: JSON
    backend_config: JSON
    output_path: str
    overwrite: bool = False
    caller: str = ""
    price_usd: float | None = None
    imagen_version: str = ""
    # A member of a batch (`imagen generate` with several images): the batch's id, this job's
    # place in it (0..size-1) and the index of the input (prompt or --from line) it came from.
    # Empty for a job made alone; left out of the recorded payload then.
    batch: str = ""
    batch_index: int = 0
    batch_input: int = 0

    def to_data(self) -> JSON:
        data = super().to_data()
        if not self.batch:
            for key in ("batch", "batch_index", "batch_input"):
                del data[key]
        return data


@dataclass(frozen=True)
class RunnerClaimed(Event):
    """A process took charge of the job (at start and on resume). Older ledgers also recorded
    lease renewals this way; a renewal is now its own event (RunnerRenewed)."""

    pid: int
    host: str
    lease_seconds: float
    proc_start: str = ""
    resumed: bool = False


@dataclass(frozen=True)
class RunnerRenewed(Event):
    """The claiming process is still driving the job: its lease runs `lease_seconds` from now.
    Not a new claim: adapters keep treating the claiming process's connections as open."""

    pid: int
    lease_seconds: float


@dataclass(frozen=True)
class ForceNewRequested(Event):
    """The user chose to create a new remote job although an earlier one may exist."""

    reason: str = ""


# -- talking to the backend --------------------------------------------------------------------


@dataclass(frozen=True)
class RequestSent(Event):
    """Recorded (and committed) just before the request leaves, so a crash after sending is
    always visible on resume."""

    request_id: str
    purpose: str
    method: str
    url: str
    headers: dict[str, str] = field(default_factory=dict)
    body: Any = None


@dataclass(frozen=True)
class ResponseReceived(Event):
    request_id: str
    purpose: str
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: Any = None
    elapsed_ms: float = 0.0


@dataclass(frozen=True)
class RequestFailed(Event):
    """No HTTP response: refused, reset, timed out, or a response we could not use."""

    request_id: str
    purpose: str
    error: str
    message: str
    elapsed_ms: float = 0.0


@dataclass(frozen=True)
class PollsUnchanged(Event):
    """The request just recorded (an idempotent read) was repeated `count` more times over
    `seconds`, each answer identical to the one recorded next: polls summarised, not recorded
    one by one."""

    request_id: str
    purpose: str
    count: int
    seconds: float


@dataclass(frozen=True)
class RetryScheduled(Event):
    purpose: str
    attempt: int
    delay_s: float
    reason: str


@dataclass(frozen=True)
class RemoteJobAccepted(Event):
    """The backend holds the job under this id (a Replicate prediction, a ComfyUI prompt)."""

    remote_id: str
    via: AcceptedVia = AcceptedVia.CREATE
    url: str = ""


@dataclass(frozen=True)
class LookupConcluded(Event):
    """After an uncertain create, what the lookup of earlier remote jobs found."""

    matches: list[str]
    decision: LookupDecision


@dataclass(frozen=True)
class RemoteIdsHeld(Event):
    """Which of these remote ids other jobs in the ledger already hold (remote id -> job id).

    Recorded by the runner when an adapter asks (CheckHeld) before adopting a looked-up remote
    job, so that the decision "one remote job, one job" stays a pure function of events.
    """

    checked: list[str]
    held: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class StreamOpened(Event):
    url: str
    client_id: str


@dataclass(frozen=True)
class StreamClosed(Event):
    reason: str
    message: str = ""


@dataclass(frozen=True)
class StreamQuiet(Event):
    """The open stream brought nothing about the followed work for `seconds` (a socket can go
    deaf without closing: ComfyUI drops a client id from its table when an older connection
    under that id closes). It stays open; the adapter asks the server instead."""

    seconds: float


@dataclass(frozen=True)
class StreamMessage(Event):
    """A significant message from a progress stream (start, finish, error); step frames are
    summarised as ProgressObserved instead of being recorded one by one."""

    kind: str
    data: JSON = field(default_factory=dict)


@dataclass(frozen=True)
class ProgressObserved(Event):
    status: str
    step: int | None = None
    total: int | None = None


# -- pools (several servers behind one backend) -------------------------------------------------


@dataclass(frozen=True)
class MembersProbed(Event):
    """What the runner saw of each member of a pool (ProbeMembers): per server URL either
    {"status": 200, "sizes": {list name: length}} (e.g. ComfyUI's queue_running/queue_pending)
    or {"error": kind, "message": ...}; and `ours`, this process's jobs placed on each server
    and not yet ended (placed but maybe not posted, so not in the server's queue yet);
    `image_s`, how long the last of this process's jobs to finish on each server took once
    the one before it there had finished (its own run, not its wait), where one has."""

    answers: JSON = field(default_factory=dict)
    ours: dict[str, int] = field(default_factory=dict)
    image_s: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class JobPlaced(Event):
    """The job runs on this member of its pool, recorded before anything is posted to it:
    every later request (resume, cancel, lookups, downloads) goes to this server."""

    server: str
    load: int = 0  # the queue the placement saw there


@dataclass(frozen=True)
class JobMoved(Event):
    """The placed member stopped answering past the pool's grace period (or refused the
    post): its unfinished prompt is abandoned and the job placed again, an unpaid local
    re-execution."""

    server: str
    reason: str


@dataclass(frozen=True)
class JobOverflowed(Event):
    """No member of the job's pool answered (or its queue was too long): the job goes to
    `backend` instead, a paid create, admitted against the caller's budget as this event is
    recorded. From here the job's request is this backend's (core/job.py evolve): its adapter
    drives it, its price is reserved. Only decided while nothing was ever posted to a member,
    so a job is never both run locally and paid for."""

    backend: str
    backend_type: str
    model: str
    params: JSON
    backend_config: JSON
    price_usd: float | None
    reason: str


# -- results -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ImageStored(Event):
    """One image written to disk. A job asked for `count` images stores indexes 0..count-1;
    events recorded before several images existed carry no index and mean image 0."""

    path: str
    sha256: str
    bytes: int
    format: str
    width: int
    height: int
    source: str = ""
    index: int = 0
    frames: int = 1  # more than one: an animation (APNG, animated WebP or GIF)


@dataclass(frozen=True)
class CancelRequested(Event):
    reason: CancelReason


class _End(Event):
    """A job's end. `spend` (SPEND_AT_END, below) is written only when the runner gave one, so
    an end without it records what an end always recorded."""

    def to_data(self) -> JSON:
        data = super().to_data()
        if data.get("spend") is None:
            data.pop("spend", None)
        return data


@dataclass(frozen=True)
class JobSucceeded(_End):
    result: JSON = field(default_factory=dict)
    spend: JSON | None = None  # see SPEND_AT_END


@dataclass(frozen=True)
class JobFailed(_End):
    """`reason` is the adapter's own word for what happened (e.g. prediction_failed);
    `category` is what kind of failure it is, which decides the exit code (app/outcome.py).

    Schema 2: `category` replaced schema 1's `exit_code` (see `upcast`)."""

    SCHEMA_VERSION: ClassVar[int] = 2

    reason: str
    message: str
    category: Failure
    spend: JSON | None = None  # see SPEND_AT_END

    def __post_init__(self) -> None:
        if isinstance(self.category, str) and not isinstance(self.category, Failure):
            try:
                category = Failure(self.category)
            except ValueError:
                # A category from a newer imagen: still a failure (the job did end), reported
                # plainly, rather than an event this imagen cannot read.
                category = Failure.UNEXPECTED
            object.__setattr__(self, "category", category)
        super().__post_init__()

    def to_data(self) -> JSON:
        return {**super().to_data(), "category": self.category.value}


@dataclass(frozen=True)
class JobCancelled(_End):
    """`remote_cancelled` is true only when imagen verified that the remote job will not run
    (or finish); `detail` says what was done and seen, in words a user can act on."""

    reason: str
    remote_cancelled: bool = False
    detail: str = ""
    spend: JSON | None = None  # see SPEND_AT_END


@dataclass(frozen=True)
class JobInterrupted(Event):
    """The process was told to stop (SIGTERM, SIGHUP): the remote job keeps running and
    `imagen resume` picks it up."""

    signal: str


# -- budgets (their own stream, BUDGET_STREAM: not a job) ----------------------------------------

BUDGET_STREAM = "$budgets"


class BudgetPeriod(StrEnum):
    DAY = "day"
    WEEK = "week"  # ISO: Monday 00:00 local time
    MONTH = "month"
    TOTAL = "total"  # since the ledger began


@dataclass(frozen=True)
class BudgetSet(Event):
    """`caller` (or "*", the default for every caller without a budget of its own) may spend
    at most `amount_micros` (micro-dollars) per `per` window, on `backend` only if given.
    Replaces the budget with the same caller, period and backend. `set_by`: who set it (as
    they named themselves). `zone`: where the windows' midnights are, an IANA name or a fixed
    UTC offset ("+02:00"), recorded when the budget was set; "" in budgets set before zones
    were recorded (their windows follow the checking process's zone)."""

    caller: str
    per: BudgetPeriod
    amount_micros: int
    backend: str = ""
    set_by: str = ""
    zone: str = ""


@dataclass(frozen=True)
class BudgetRemoved(Event):
    caller: str
    per: BudgetPeriod
    backend: str = ""
    removed_by: str = ""


TERMINAL_TYPES = frozenset({"JobSucceeded", "JobFailed", "JobCancelled"})
# SPEND_AT_END: a terminal event's `spend` is what the job commits against budgets as it ends
# (its row in imagen/projections/spend.py, computed by the one cost rule when the runner records
# the end, and recorded in the chain, which no writer can edit). A process's first budget check
# sums these instead of folding every ended job; None (an older imagen, or a path that does not
# record it): that job is folded whole, as before.

CATALOGUE: dict[str, type[Event]] = {
    cls.type_name(): cls
    for cls in (
        JobRequested,
        RunnerClaimed,
        RunnerRenewed,
        ForceNewRequested,
        RequestSent,
        ResponseReceived,
        RequestFailed,
        PollsUnchanged,
        RetryScheduled,
        RemoteJobAccepted,
        LookupConcluded,
        RemoteIdsHeld,
        StreamOpened,
        StreamClosed,
        StreamQuiet,
        StreamMessage,
        ProgressObserved,
        MembersProbed,
        JobPlaced,
        JobMoved,
        JobOverflowed,
        ImageStored,
        CancelRequested,
        JobSucceeded,
        JobFailed,
        JobCancelled,
        JobInterrupted,
        BudgetSet,
        BudgetRemoved,
    )
}


# JobFailed schema 1 recorded the exit code the adapter chose. Its reasons name the category
# (or a finer word for one); an unknown reason keeps the exit code it stood for.
_V1_FAILURE_REASONS: dict[str, Failure] = {
    **{f.value: f for f in Failure},
    "invalid_workflow": Failure.INVALID_INPUT,
    "prediction_failed": Failure.GENERATION_FAILED,
    "prediction_canceled": Failure.GENERATION_FAILED,
    "execution_error": Failure.GENERATION_FAILED,
    "interrupted": Failure.GENERATION_FAILED,
    "no_output": Failure.GENERATION_FAILED,
    "output_deleted": Failure.OUTPUT_LOST,
    "internal": Failure.UNEXPECTED,
}
_V1_EXIT_CODES: dict[int, Failure] = {2: Failure.INVALID_INPUT, 3: Failure.UNREACHABLE}


def _job_failed_1_to_2(data: JSON) -> JSON:
    data = dict(data)
    exit_code = data.pop("exit_code", 1)
    data["category"] = _V1_FAILURE_REASONS.get(data.get("reason", "")) or _V1_EXIT_CODES.get(
        exit_code, Failure.UNEXPECTED
    )
    return data


# (type, version) -> the step that reads that version's payload as version + 1.
UPCASTERS: dict[tuple[str, int], Callable[[JSON], JSON]] = {
    ("JobFailed", 1): _job_failed_1_to_2,
}


def upcast(type_name: str, schema_version: int, data: JSON) -> JSON:
    """Bring an old payload to the current shape, one recorded version step at a time."""
    cls = CATALOGUE[type_name]
    if schema_version == cls.SCHEMA_VERSION:
        return data
    for version in range(max(schema_version, 1), cls.SCHEMA_VERSION):
        data = UPCASTERS[(type_name, version)](data)
    return data


@dataclass(frozen=True)
class UnknownEvent(Event):
    """An event this imagen cannot read, kept as recorded: from a newer imagen (a type it does
    not know, a newer schema version) or a payload that does not fit its type. Folds ignore it;
    `show` and `audit` name it; the runner will not drive a job that has one."""

    type: str
    schema_version: int
    data: JSON
    why: str


def readable(type_name: str, schema_version: int) -> bool:
    """Can this imagen read events of this type and version (before looking at the payload)?"""
    cls = CATALOGUE.get(type_name)
    return cls is not None and schema_version <= cls.SCHEMA_VERSION


_FIELDS: dict[str, frozenset[str]] = {}


def _field_names(type_name: str, cls: type) -> frozenset[str]:
    names = _FIELDS.get(type_name)
    if names is None:
        names = _FIELDS[type_name] = frozenset(f.name for f in dataclasses.fields(cls))
    return names


def current_shapes() -> dict[str, tuple[int, frozenset[str]]]:
    """Each type's current schema version and field names, by type name: a payload of that
    version whose keys are among them has nothing `newer_than_this` would name (a reader that
    checks every event asks this first, and the function only for the rest)."""
    return {name: (cls.SCHEMA_VERSION, _field_names(name, cls)) for name, cls in CATALOGUE.items()}


def newer_than_this(type_name: str, schema_version: int, data: JSON) -> str | None:
    """What in a recorded event this imagen does not know (for audit), or None. Cheaper than
    `decode`: names only, no payload checks."""
    cls = CATALOGUE.get(type_name)
    if cls is None:
        return f"type {type_name}"
    if schema_version > cls.SCHEMA_VERSION:
        return f"{type_name} schema version {schema_version}"
    names = _field_names(type_name, cls)
    if schema_version == cls.SCHEMA_VERSION and not names.issuperset(data):
        return f"{type_name} fields {', '.join(sorted(set(data) - names))}"
    return None


class _Plan:
    """How `decode` builds one event class from a recorded payload without its __init__:
    everything about the class (field names, defaults, which checks) worked out once, so an
    event pays only its own values' checks (a value of the field's plain JSON type, e.g. a
    str for a str field, needs none). The same checks as building it (`Event.__post_init__`
    while decoding): a payload either builds the event it would build, or raises."""

    __slots__ = ("cls", "names", "required", "defaults", "factories", "checks")

    def __init__(self, cls: type[Event]) -> None:
        hints = get_type_hints(cls)
        fields = dataclasses.fields(cls)
        self.cls = cls
        self.names = frozenset(f.name for f in fields)
        self.required = frozenset(
            f.name
            for f in fields
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        )
        self.defaults = {f.name: f.default for f in fields if f.default is not dataclasses.MISSING}
        self.factories = tuple(
            (f.name, f.default_factory)
            for f in fields
            if f.default_factory is not dataclasses.MISSING
        )
        self.checks = tuple(
            (name, where, check, _plain_types(hints[name]))
            for name, where, check in _shallow_checkers(cls)
        )

    def build(self, data: JSON) -> Event:
        values = {**self.defaults, **data}
        for name, factory in self.factories:
            if name not in data:
                values[name] = factory()
        for name, where, check, plain in self.checks:
            value = values[name]
            if type(value) not in plain:
                conformed = check(value, where)
                if conformed is not value:
                    values[name] = conformed
        event = object.__new__(self.cls)
        event.__dict__.update(values)
        return event


_PLANS: dict[type, _Plan | None] = {}


def _plan(cls: type[Event]) -> _Plan | None:
    """None for a class whose building does more than the field checks (its own
    __post_init__): it is built by its __init__."""
    plan = _Plan(cls) if cls.__post_init__ is Event.__post_init__ else None
    _PLANS[cls] = plan
    return plan


def _plain_types(hint: Any) -> frozenset[type]:
    """The JSON types a value of this annotation may have and pass its check unchanged
    without being looked at (none for a float, which must be finite, or a walked container)."""
    if get_origin(hint) in (Union, types.UnionType):
        options = [a for a in get_args(hint) if a is not type(None)]
        inner = _plain_types(options[0]) if len(options) == 1 else frozenset()
        return inner | {type(None)}
    if hint in (str, bool):
        return frozenset({hint})
    if hint is int:
        return frozenset({int})
    if hint is float:
        return frozenset({int})
    if get_origin(hint) is dict and get_args(hint)[1] is Any:
        return frozenset({dict})
    return frozenset()


class Decoded(NamedTuple):
    """Immutable; a tuple (built in one step: one per event a fold reads)."""

    event: Event
    unknown_fields: tuple[str, ...] = ()  # dropped: written by a newer imagen


def decode(type_name: str, schema_version: int, data: Any) -> Decoded:
    """A recorded event as this imagen understands it. Never raises (see the module doc)."""
    cls = CATALOGUE.get(type_name)
    if cls is None:
        return Decoded(UnknownEvent(type_name, schema_version, _as_json(data), "unknown type"))
    if schema_version > cls.SCHEMA_VERSION:
        why = f"schema version {schema_version}, newer than this imagen's {cls.SCHEMA_VERSION}"
        return Decoded(UnknownEvent(type_name, schema_version, _as_json(data), why))
    if schema_version == cls.SCHEMA_VERSION and type(data) is dict:
        plan = _PLANS.get(cls) or _plan(cls)
        if plan is not None and plan.names.issuperset(data) and plan.required <= data.keys():
            try:
                return Decoded(plan.build(data))
            except (TypeError, ValueError):
                pass  # does not fit: the way below says why, as it always has
    token = _DECODING.set(True)
    try:
        data = upcast(type_name, schema_version, data)
        names = _field_names(type_name, cls)
        if names.issuperset(data):
            return Decoded(cls(**data))
        extra = tuple(sorted(k for k in data if k not in names))
        return Decoded(cls(**{k: v for k, v in data.items() if k in names}), extra)
    except (TypeError, ValueError, KeyError, AttributeError) as exc:
        why = f"payload does not fit: {exc}"
        return Decoded(UnknownEvent(type_name, schema_version, _as_json(data), why))
    finally:
        _DECODING.reset(token)


_scan = json.JSONDecoder().scan_once


def payload_of(text: str) -> Any:
    """A recorded payload from its JSON text, as `json.loads` reads it; text that is not JSON is
    kept visible as `{"data": text}` (it decodes as an event this imagen cannot read). The
    decoder's own scanner is called directly: the ledger's canonical text is one value with
    no whitespace around it, and `json.loads`' checks around the scan cost as much again."""
    try:
        value, end = _scan(text, 0)
        if end == len(text):
            return value
    except (StopIteration, ValueError):
        pass
    except RecursionError:  # nested past the interpreter's depth: a hostile writer's, unread
        return {"data": text}
    try:
        return json.loads(text)  # whitespace around the value, or the error's own verdict
    except (ValueError, RecursionError):
        return {"data": text}


def _as_json(data: Any) -> JSON:
    return data if isinstance(data, dict) else {"value": data}


def from_data(type_name: str, schema_version: int, data: JSON) -> Event:
    return decode(type_name, schema_version, data).event
