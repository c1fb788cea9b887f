"""What a ComfyUI job's record says: which process drives it and its websocket, the prompt
of the current attempt, the deadline, and the requests built from them."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from imagen.backends.comfyui.inputs import DEFAULT_URL
from imagen.backends.comfyui.pool import moved_at, placed_server
from imagen.backends.common import (
    backoff_delay,
    config_of,
    exchanges,
    finite,
    http_request,
    pending_retry,
    retries,
    retry_time,
    run_start,
)
from imagen.core.actions import Action, HttpRequest, OpenStream, Record
from imagen.core.events import (
    JobFailed,
    JobInterrupted,
    LookupConcluded,
    RemoteJobAccepted,
    RequestFailed,
    RetryScheduled,
    StreamClosed,
    StreamOpened,
)
from imagen.core.failures import Failure
from imagen.core.job import JobState, Recorded

_NS = uuid.UUID("6b1f3c52-6a43-4c55-9d1c-3f0c2a7e9a10")

# Reconnecting after a drop: 0.25 s, doubling, at most this far apart (a blip that ends is
# noticed within this time; a long outage costs two events per try).
RECONNECT_BASE_S = 0.25
RECONNECT_CAP_S = 2.0
MALFORMED_RETRIES = 2


def session_start(state: JobState) -> datetime | None:
    floor = run_start(state)
    for rec in state.history:
        if rec.version == floor:
            return rec.at
    return state.started_at


def client_id(state: JobState) -> str:
    """The client id a prompt is posted under now: the open websocket's. ComfyUI sends a
    prompt's messages only to the client id it was posted with, and only while that id is in
    its socket table."""
    s = stream_state(state)
    if s.state == "open" and s.at is not None:
        return s.at.event.client_id  # type: ignore[attr-defined,no-any-return]
    for ex in reversed(exchanges(state, "prompt")):
        body = ex.sent.body
        if isinstance(body, dict) and isinstance(body.get("client_id"), str):
            return body["client_id"]
    return str(uuid.uuid5(_NS, f"{state.job_id}:client"))


def posted_client(state: JobState, pid: str) -> str | None:
    """The client id prompt `pid` was posted under (None if not found)."""
    for ex in reversed(exchanges(state, "prompt")):
        body = ex.sent.body
        if isinstance(body, dict) and body.get("prompt_id") == pid:
            got = body.get("client_id")
            return got if isinstance(got, str) else None
    return None


def connection_id(state: JobState) -> str:
    """A fresh client id for every websocket connection. ComfyUI's websocket_handler ends each
    connection with `sockets.pop(clientId)`: reconnecting under the same id, the old
    connection's late close (a half-open drop the server notices after imagen reconnected)
    would remove the new socket from the table and leave it deaf. A unique id cannot be taken
    away by another connection; a prompt posted under an earlier connection's id is then
    found by asking /queue and /history, never by waiting on the stream."""
    return str(uuid.uuid5(_NS, f"{state.job_id}:client:{state.version}"))


@dataclass(frozen=True)
class StreamState:
    state: str  # none | open | closed | failed
    at: Recorded | None  # the event that set it
    failures: int  # stream attempts that failed in a row (this session)
    why: str = ""  # the last failure or close reason


def stream_state(state: JobState) -> StreamState:
    """This process's websocket, from the events since it claimed the job (or since the job
    moved: a socket to the member it left says nothing of the next)."""
    floor = max(run_start(state), moved_at(state))
    result = StreamState("none", None, 0)
    for rec in state.history:
        if rec.version <= floor:
            continue
        e = rec.event
        if isinstance(e, StreamOpened):
            result = StreamState("open", rec, 0)
        elif isinstance(e, StreamClosed):
            result = StreamState("closed", rec, result.failures, e.reason)
        elif isinstance(e, RequestFailed) and e.purpose == "stream":
            result = StreamState("failed", rec, result.failures + 1, e.error)
    return result


def open_stream(state: JobState, not_before: str | None = None) -> OpenStream:
    cid = connection_id(state)
    return OpenStream(
        f"{server_url(state).replace('http', 'ws', 1)}/ws?clientId={cid}",
        cid,
        auth_env=config_of(state).get("token_env"),
        not_before=not_before,
    )


def backoff(failures: int) -> float:
    return backoff_delay(RECONNECT_BASE_S, max(failures - 1, 0), RECONNECT_CAP_S)


# -- the prompt: submitted, accepted, lost ---------------------------------------------------


def attempt_floor(state: JobState) -> int:
    """Version of the latest "ComfyUI lost the prompt" conclusion or move to another pool
    member: a new attempt starts there."""
    for rec in reversed(state.history):
        if isinstance(rec.event, LookupConcluded) and rec.event.decision == "resubmit":
            return max(rec.version, moved_at(state))
    return moved_at(state)


def attempt_prompts(state: JobState) -> list[Any]:
    floor = attempt_floor(state)
    return [ex for ex in exchanges(state, "prompt") if ex.sent_at.version > floor]


def current_prompt(state: JobState) -> str | None:
    """The accepted prompt of the current attempt, if any."""
    floor = attempt_floor(state)
    rec = state.last(RemoteJobAccepted)
    return rec.event.remote_id if rec and rec.version > floor else None  # type: ignore[attr-defined]


def accepted_at(state: JobState) -> int:
    rec = state.last(RemoteJobAccepted)
    return rec.version if rec else 0


def prompt_id(state: JobState) -> str:
    """Chosen by imagen, deterministic per job and submission, recorded before POST /prompt."""
    p = exchanges(state, "prompt")
    n = len(p) - (1 if p and p[-1].outcome is None else 0)
    return str(uuid.uuid5(_NS, f"{state.job_id}:{max(n, 0)}"))


def submitted_id(state: JobState) -> str | None:
    p = attempt_prompts(state)
    body = p[-1].sent.body if p else None
    return body.get("prompt_id") if isinstance(body, dict) else None


def server_url(state: JobState) -> str:
    """The server every request of the job goes to: in a pool, the member it is placed on."""
    return placed_server(state) or str(config_of(state).get("url") or DEFAULT_URL).rstrip("/")


def request(
    state: JobState,
    purpose: str,
    method: str,
    path: str,
    body: Any = None,
    not_before: str | None = None,
    timeout_s: float = 10,
) -> HttpRequest:
    return http_request(
        state,
        purpose,
        method,
        f"{server_url(state)}{path}",
        body=body,
        timeout_s=timeout_s,
        auth_env=config_of(state).get("token_env"),
        not_before=not_before,
    )


def run_deadline(state: JobState) -> datetime | None:
    """This run's deadline: timeout_s after the process took the job (a resume gets its own)."""
    req = state.request
    start = session_start(state)
    if req is None or start is None:
        return None
    timeout = finite(req.params.get("timeout_s")) or 300.0
    return start + timedelta(seconds=timeout)


def past_deadline(state: JobState) -> bool:
    deadline = run_deadline(state)
    return deadline is not None and state.now is not None and state.now >= deadline


def unreachable(state: JobState, outcome: RequestFailed) -> Record:
    hint = config_of(state).get("unreachable_hint") or "is ComfyUI running?"
    return Record(
        (
            JobFailed(
                "unreachable",
                f"cannot reach ComfyUI at {server_url(state)} ({outcome.error}: "
                f"{outcome.message}); {hint}",
                Failure.UNREACHABLE,
            ),
        )
    )


def still_unreachable(state: JobState, why: str) -> Record:
    """Past the deadline with the server out of reach: ComfyUI may still finish the prompt, so
    the job stays resumable instead of failing."""
    return Record((JobInterrupted(f"unreachable: {why}"[:200]),))


def retry_at(state: JobState, purpose: str) -> str | None:
    return retry_time(state, purpose) if pending_retry(state, purpose) is not None else None


def malformed(state: JobState, purpose: str, what: str, why: str) -> Action:
    """A malformed answer is recorded as a protocol error: asked again a few times, then the
    job fails with what was wrong (never an exception, never a crash loop on resume)."""
    if pending_retry(state, purpose) is not None:
        return _reissue(state, purpose)
    n = retries(state, purpose, "malformed")
    if n < MALFORMED_RETRIES:
        return Record((RetryScheduled(purpose, n + 1, 0.5, f"malformed {what}: {why}"),))
    return Record(
        (
            JobFailed(
                "protocol",
                f"ComfyUI's answer to {what} is malformed: {why}",
                Failure.UNEXPECTED,
            ),
        )
    )


def _reissue(state: JobState, purpose: str) -> HttpRequest:
    last = exchanges(state, purpose)[-1].sent
    path = (
        last.url[len(server_url(state)) :] if last.url.startswith(server_url(state)) else last.url
    )
    return request(state, purpose, last.method, path, last.body, retry_time(state, purpose))
