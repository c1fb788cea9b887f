"""What an adapter can ask the runner to do. Actions are data; only the runner performs them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from imagen.core.events import Event
from imagen.core.failures import Failure


@dataclass(frozen=True)
class HttpRequest:
    """Send one request, not before `not_before` (ISO UTC; used for polls and retries).

    `auth_env` names the environment variable whose value the runner sends as a bearer token:
    the token itself never passes through an action or an event.
    """

    request_id: str
    purpose: str
    method: str
    url: str
    headers: tuple[tuple[str, str], ...] = ()
    json_body: Any = None
    timeout_s: float = 30.0
    auth_env: str | None = None
    not_before: str | None = None
    # Polling (idempotent GETs only): while the answer stays the same, send again every
    # `repeat_every_s` (x1.5 each time, at most 5 s) for up to `repeat_for_s`, and record the
    # repeats as one PollsUnchanged instead of two events per poll.
    repeat_for_s: float = 0.0
    repeat_every_s: float = 0.0


@dataclass(frozen=True)
class StoreImage:
    """Fetch an image (http(s) URL or data: URI), check it is a real image of the expected
    format and size, and write it atomically to `dest`."""

    request_id: str
    url: str
    dest: str
    expected_format: str | None = None
    max_bytes: int = 64 * 1024 * 1024
    overwrite: bool = False
    timeout_s: float = 60.0
    auth_env: str | None = None
    headers: tuple[tuple[str, str], ...] = ()
    not_before: str | None = None
    index: int = 0  # which of the job's images this is (recorded on ImageStored)
    # Fetch and check only, write nothing (purpose "check"): ComfyUI checks every output of a
    # job before storing any, so a bad last file never leaves a failed job with files on disk.
    check_only: bool = False


@dataclass(frozen=True)
class OpenStream:
    """Open a websocket (for progress and the completion push), not before `not_before`."""

    url: str
    client_id: str
    timeout_s: float = 5.0
    auth_env: str | None = None
    not_before: str | None = None


@dataclass(frozen=True)
class FollowStream:
    """Read the open stream, handing every frame to the adapter's pure `interpret_frame`
    together with `context` (adapter-owned, JSON-safe), until it says the stream is done or the
    deadline passes. The runner interprets nothing: it records the events the adapter returns,
    shows the progress it returns, and renews its lease while it waits."""

    context: dict[str, Any]
    deadline: str | None = None
    waiting: Progress | None = None  # what to show until a frame says otherwise
    # After this long without a frame the adapter says something of (events, progress, done),
    # the runner records StreamQuiet and returns, the stream left open.
    quiet_s: float | None = None


@dataclass(frozen=True)
class Progress:
    """What the progress display shows: `step` of `total` (None when the work has no steps)
    under `label` (e.g. the node that runs)."""

    label: str
    step: int | None = None
    total: int | None = None


@dataclass(frozen=True)
class FrameOutcome:
    """What one stream frame means: the context for the next frame, events to record, what to
    show, and whether following is done."""

    context: dict[str, Any]
    events: tuple[Event, ...] = ()
    progress: Progress | None = None
    done: bool = False


@dataclass(frozen=True)
class CheckHeld:
    """Ask the ledger which of these remote ids other jobs hold; the runner records the answer
    as RemoteIdsHeld (adapters cannot read the ledger themselves)."""

    remote_ids: tuple[str, ...]


@dataclass(frozen=True)
class ProbeMembers:
    """GET `path` from every member of a pool at once, not before `not_before`; the runner
    records one MembersProbed: each answer's status and the lengths of its top-level lists, or
    the failure, with this process's jobs in flight on each member. It interprets nothing."""

    urls: tuple[str, ...]
    path: str
    timeout_s: float = 3.0
    auth_env: str | None = None
    not_before: str | None = None


@dataclass(frozen=True)
class Record:
    """Record decisions the adapter reached from what it saw (retries, results, failures)."""

    events: tuple[Event, ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class Halt:
    """Stop driving the job without ending it: a person must decide (e.g. --force-new), or
    fix something and resume. The job stays resumable. The CLI exits with CONFLICT, or with the
    exit code of `category` when the halt is for a known kind of trouble (e.g. UNREACHABLE)."""

    message: str
    category: Failure | None = None


Action = (
    HttpRequest | StoreImage | OpenStream | FollowStream | CheckHeld | ProbeMembers | Record | Halt
)
