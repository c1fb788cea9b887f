"""Pure helpers shared by adapters: reading outcomes of requests out of a job's history, where
the driving process began, building requests, backing off."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from imagen.core.actions import FrameOutcome, HttpRequest
from imagen.core.events import (
    ImageStored,
    RequestFailed,
    RequestSent,
    ResponseReceived,
    RetryScheduled,
    RunnerClaimed,
)
from imagen.core.job import JobState, Recorded, iso

Outcome = ResponseReceived | RequestFailed
_EXCHANGE_KINDS = frozenset({"RequestSent", "ResponseReceived", "RequestFailed"})


@dataclass(frozen=True)
class Exchange:
    sent: RequestSent
    sent_at: Recorded
    outcome: Outcome | None
    outcome_at: Recorded | None


def exchanges(state: JobState, purpose: str) -> list[Exchange]:
    """Every request of a purpose in order, each with its outcome (None while unanswered)."""
    out: dict[str, Exchange] = {}
    for rec in state.history:
        if rec.kind not in _EXCHANGE_KINDS:
            continue  # not decoded: most of a job's events are not requests or responses
        e = rec.event
        if isinstance(e, RequestSent) and e.purpose == purpose:
            out[e.request_id] = Exchange(e, rec, None, None)
        elif isinstance(e, ResponseReceived | RequestFailed) and e.request_id in out:
            ex = out[e.request_id]
            out[e.request_id] = Exchange(ex.sent, ex.sent_at, e, rec)
    return list(out.values())


def last_sent(state: JobState, purpose: str) -> RequestSent | None:
    """The last request of a purpose (no answers read: only requests are decoded)."""
    for rec in reversed(state.history):
        if rec.kind == "RequestSent" and rec.may_have("purpose", purpose):
            e = rec.event
            if isinstance(e, RequestSent) and e.purpose == purpose:
                return e
    return None


def last_exchange(state: JobState, purpose: str) -> Exchange | None:
    found = exchanges(state, purpose)
    return found[-1] if found else None


def retries(state: JobState, purpose: str, reason: str | None = None) -> int:
    return sum(
        1
        for r in state.events_of(RetryScheduled)
        if r.event.purpose == purpose and (reason is None or r.event.reason.startswith(reason))  # type: ignore[attr-defined]
    )


def pending_retry(state: JobState, purpose: str) -> RetryScheduled | None:
    """A retry scheduled after the last request of this purpose, not yet acted on."""
    last_sent = max(
        (r.version for r in state.events_of(RequestSent) if r.event.purpose == purpose), default=0
    )  # type: ignore[attr-defined]
    for r in reversed(state.history):
        if r.version <= last_sent:
            return None
        if isinstance(r.event, RetryScheduled) and r.event.purpose == purpose:
            return r.event
    return None


def retry_time(state: JobState, purpose: str) -> str | None:
    """When a pending retry may go: its delay after the moment it was scheduled."""
    for r in reversed(state.history):
        if isinstance(r.event, RetryScheduled) and r.event.purpose == purpose:
            return iso(r.at + timedelta(seconds=r.event.delay_s))
    return None


def config_of(state: JobState) -> dict[str, Any]:
    """The backend configuration recorded with the request (not today's config file)."""
    assert state.request is not None
    return state.request.backend_config


def request_id(state: JobState, purpose: str) -> str:
    """Deterministic and unique within the job: the stream version the request will take."""
    return f"{purpose}-{state.version + 1}"


def run_start(state: JobState) -> int:
    """The version of the first claim by the process now driving the job (0 if none).

    "This process" is pid + host + process start time: a lease renewal (RunnerRenewed, or a
    RunnerClaimed by the same process in older ledgers) does not start a new session, so what
    it opened (a websocket) is still its own; a resume is a new process. Whatever was concluded
    before this version is re-learnt (polls are free)."""
    claims = state.events_of(RunnerClaimed)
    if not claims:
        return 0
    me = claims[-1].event
    start = claims[-1].version
    for rec in reversed(claims[:-1]):
        e = rec.event
        if (e.pid, e.host, e.proc_start) != (me.pid, me.host, me.proc_start):  # type: ignore[attr-defined]
            break
        start = rec.version
    return start


def http_request(
    state: JobState,
    purpose: str,
    method: str,
    url: str,
    *,
    headers: tuple[tuple[str, str], ...] = (),
    body: Any = None,
    timeout_s: float,
    auth_env: str | None,
    not_before: str | None = None,
) -> HttpRequest:
    """A request of `purpose`, its id the stream version it will take (see `request_id`)."""
    return HttpRequest(
        request_id(state, purpose),
        purpose,
        method,
        url,
        headers,
        body,
        timeout_s=timeout_s,
        auth_env=auth_env,
        not_before=not_before,
    )


def backoff_delay(base: float, attempt: int, cap: float) -> float:
    """`base` doubled per attempt, at most `cap` (the exponent is bounded so a long run of
    failures cannot overflow)."""
    return min(base * 2 ** min(attempt, 16), cap)


def finite(value: Any) -> float | None:
    """A finite number from a JSON or config value, else None ("abc", null, true, NaN, and an
    integer too large for a float: JSON carries integers of any size)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if number == number and abs(number) != float("inf") else None


def since_claim(state: JobState, kind: type) -> list[Recorded]:
    """Events of a kind recorded since the current process claimed the job."""
    last_claim = state.last(RunnerClaimed)
    floor = last_claim.version if last_claim else 0
    return [r for r in state.history if r.version > floor and isinstance(r.event, kind)]


def no_stream(context: dict[str, Any], frame: str | bytes) -> FrameOutcome:
    """interpret_frame for adapters that never ask to follow a stream: stop at once."""
    return FrameOutcome(dict(context), done=True)


def configured_model(options: Mapping[str, Any], configured: str) -> str:
    """model_name for adapters whose model is what the config names."""
    return configured


def no_checks(options: Mapping[str, Any]) -> list[tuple[str, str]]:
    """check_requests for adapters whose probe says all there is to say."""
    return []


def nothing_missing(options: Mapping[str, Any], answers: list[tuple[int | None, Any]]) -> None:
    """check_verdict for adapters without further checks."""
    return None


def _last_image_version(state: JobState) -> int:
    last = state.last(ImageStored)
    return last.version if last else 0


def current_downloads(state: JobState) -> list[Exchange]:
    """Download attempts for the image being fetched now (those after the last stored one)."""
    floor = _last_image_version(state)
    return [ex for ex in exchanges(state, "download") if ex.sent_at.version > floor]


def current_download_retries(state: JobState) -> int:
    floor = _last_image_version(state)
    return sum(
        1
        for r in state.events_of(RetryScheduled)
        if r.version > floor and r.event.purpose == "download"  # type: ignore[attr-defined]
    )


def next_image_index(state: JobState, total: int) -> int | None:
    """The lowest index in 0..total-1 not stored yet (None when every image is on disk)."""
    have = {i.index for i in state.images}
    return next((i for i in range(total) if i not in have), None)
