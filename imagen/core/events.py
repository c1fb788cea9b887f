"""The catalogue of everything that can happen to a job.

Each event is a frozen dataclass with a stable `type` name (its class name) and a JSON-safe
payload. Events are never rewritten: when a payload changes shape, bump `SCHEMA_VERSION` on the
class and teach `upcast` to read the old shape.

Secrets never appear here: requests carry header values already redacted, and credentials are
named by the environment variable that holds them, never by value.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar

from imagen.core.failures import Failure

JSON = dict[str, Any]

REDACTED = "[redacted]"
SECRET_HEADERS = frozenset(
    {"authorization", "proxy-authorization", "apikey", "x-api-key", "cookie"}
)


def redact_headers(headers: dict[str, str] | tuple[tuple[str, str], ...]) -> dict[str, str]:
    items = headers.items() if isinstance(headers, dict) else headers
    return {k: (REDACTED if k.lower() in SECRET_HEADERS else v) for k, v in items}


@dataclass(frozen=True)
class Event:
    SCHEMA_VERSION: ClassVar[int] = 1

    @classmethod
    def type_name(cls) -> str:
        return cls.__name__

    def to_data(self) -> JSON:
        return dataclasses.asdict(self)


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
    via: str = "create"  # create | lookup
    url: str = ""


@dataclass(frozen=True)
class LookupConcluded(Event):
    """After an uncertain create, what the lookup of earlier remote jobs found."""

    matches: list[str]
    decision: str  # adopt | create | ambiguous | refused (a listing link to another origin)


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


# -- results -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ImageStored(Event):
    path: str
    sha256: str
    bytes: int
    format: str
    width: int
    height: int
    source: str = ""


@dataclass(frozen=True)
class CancelRequested(Event):
    reason: str  # user | timeout


@dataclass(frozen=True)
class JobSucceeded(Event):
    result: JSON = field(default_factory=dict)


@dataclass(frozen=True)
class JobFailed(Event):
    """`reason` is the adapter's own word for what happened (e.g. prediction_failed);
    `category` is what kind of failure it is, which decides the exit code (app/outcome.py).

    Schema 2: `category` replaced schema 1's `exit_code` (see `upcast`)."""

    SCHEMA_VERSION: ClassVar[int] = 2

    reason: str
    message: str
    category: Failure

    def __post_init__(self) -> None:
        if not isinstance(self.category, Failure):
            try:
                category = Failure(self.category)
            except ValueError:
                # A category from a newer imagen: still a failure, reported plainly.
                category = Failure.UNEXPECTED
            object.__setattr__(self, "category", category)

    def to_data(self) -> JSON:
        return {**super().to_data(), "category": self.category.value}


@dataclass(frozen=True)
class JobCancelled(Event):
    """`remote_cancelled` is true only when imagen verified that the remote job will not run
    (or finish); `detail` says what was done and seen, in words a user can act on."""

    reason: str
    remote_cancelled: bool = False
    detail: str = ""


@dataclass(frozen=True)
class JobInterrupted(Event):
    """The process was told to stop (SIGTERM, SIGHUP): the remote job keeps running and
    `imagen resume` picks it up."""

    signal: str


TERMINAL_TYPES = frozenset({"JobSucceeded", "JobFailed", "JobCancelled"})

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
        StreamMessage,
        ProgressObserved,
        ImageStored,
        CancelRequested,
        JobSucceeded,
        JobFailed,
        JobCancelled,
        JobInterrupted,
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


def upcast(type_name: str, schema_version: int, data: JSON) -> JSON:
    """Bring an old payload to the current shape."""
    if type_name == "JobFailed" and schema_version < 2:
        data = dict(data)
        exit_code = data.pop("exit_code", 1)
        data["category"] = _V1_FAILURE_REASONS.get(data.get("reason", "")) or _V1_EXIT_CODES.get(
            exit_code, Failure.UNEXPECTED
        )
    return data


def from_data(type_name: str, schema_version: int, data: JSON) -> Event:
    cls = CATALOGUE.get(type_name)
    if cls is None:
        raise ValueError(f"unknown event type {type_name!r}")
    return cls(**upcast(type_name, schema_version, data))
