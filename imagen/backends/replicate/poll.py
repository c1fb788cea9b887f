"""Polling a prediction until it ends, the deadline passes or Replicate stays out of reach."""

from __future__ import annotations

from datetime import timedelta

from imagen.backends.common import Exchange, exchanges, pending_retry, retry_time, run_start
from imagen.backends.replicate.job import (
    PAST_DEADLINE_MAX_WAIT_S,
    RETRIES_PER_RUN,
    api_base,
    backoff,
    get_request,
    job_deadline,
    setting,
    token_env,
)
from imagen.backends.replicate.wire import describe, describe_body, prediction, retry_after
from imagen.core.actions import Action, Halt, Record
from imagen.core.events import CancelRequested, ResponseReceived, RetryScheduled
from imagen.core.failures import Failure
from imagen.core.job import JobState, iso

# -- waiting for the prediction --------------------------------------------------------------------


def _poll_ok(ex: Exchange, remote_id: str | None) -> bool:
    o = ex.outcome
    if not isinstance(o, ResponseReceived) or o.status != 200:
        return False
    p = prediction(o.body)
    return p is not None and p["id"] == remote_id


def poll(state: JobState, seen_at: int) -> Action:
    """Polls are free and safe to repeat: keep polling with backoff until the deadline. A failure
    never fails the job (the prediction is paid and may finish); past the deadline a run gives
    up after a few tries and leaves the job resumable."""
    assert state.now is not None
    url = f"{api_base(state)}/v1/predictions/{state.remote_id}"
    start = run_start(state)
    polls = exchanges(state, "poll")
    last = polls[-1] if polls else None
    if pending_retry(state, "poll") is not None:
        return get_request(state, "poll", url, retry_time(state, "poll"))
    if last is not None and last.outcome is None:
        return get_request(state, "poll", url)  # died while polling: ask again
    if seen_at <= start and (last is None or last.sent_at.version <= start):
        return get_request(
            state, "poll", url
        )  # this process has not seen the prediction yet: look first
    if last is not None and last.sent_at.version > seen_at and not _poll_ok(last, state.remote_id):
        return _poll_failed(state, polls, start)
    interval = max(0.05, setting(state, "poll_interval_s", 0.5))
    next_at = state.now + timedelta(seconds=interval)
    if next_at >= job_deadline(state):
        return Record((CancelRequested("timeout"),))
    return get_request(state, "poll", url, iso(next_at))


def _poll_failed(state: JobState, polls: list[Exchange], start: int) -> Action:
    assert state.now is not None
    last = polls[-1]
    o = last.outcome
    failed = 0
    for ex in reversed(polls):
        if _poll_ok(ex, state.remote_id):
            break
        failed += 1
    this_run = sum(
        1 for ex in polls if ex.sent_at.version > start and not _poll_ok(ex, state.remote_id)
    )
    if isinstance(o, ResponseReceived) and o.status in (401, 403, 404):
        fix = (
            f"set {token_env(state)} to the token that created it"
            if o.status in (401, 403)
            else "check base_url and the token's account"
        )
        return Halt(
            f"Replicate answered HTTP {o.status} about prediction {state.remote_id} "
            f"({describe_body(o)}); it is paid and may have finished: {fix}, then "
            f"`imagen resume {state.job_id}`",
            Failure.UNAUTHORIZED if o.status in (401, 403) else Failure.NOT_FOUND,
        )
    delay = (
        retry_after(o, failed - 1, setting(state, "retry_base_s", 1.0))
        if isinstance(o, ResponseReceived) and o.status == 429
        else backoff(state, failed - 1)
    )
    before_deadline = state.now + timedelta(seconds=delay) < job_deadline(state)
    # Past the deadline a run tries a few more times, briefly; a server asking for a long wait
    # (Retry-After: 86400) gets a resumable stop instead.
    if before_deadline or (this_run < RETRIES_PER_RUN and delay <= PAST_DEADLINE_MAX_WAIT_S):
        return Record((RetryScheduled("poll", failed, delay, f"poll: {describe(o)}"[:300]),))
    return Halt(
        f"lost Replicate while waiting for prediction {state.remote_id} ({describe(o)}); "
        f"it is paid and may still finish: `imagen resume {state.job_id}` once Replicate is "
        "reachable",
        Failure.UNREACHABLE,
    )
