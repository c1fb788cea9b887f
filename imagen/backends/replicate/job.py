"""What a Replicate job's record says (its recorded config, deadline, latest prediction, how
its creates ended) and the requests built from it: shared by every step of the machine."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from imagen.backends.common import backoff_delay, config_of, exchanges, finite, http_request
from imagen.backends.replicate.inputs import MAX_STEPS, api_base_of, model_name, token_env_of
from imagen.backends.replicate.wire import MAX_BACKOFF_S, prediction, same_origin
from imagen.core.actions import HttpRequest
from imagen.core.events import RequestFailed, ResponseReceived
from imagen.core.job import JobState, Recorded

MAX_429_RETRIES = 3
MAX_UNCERTAIN_CREATES = 3

RETRIES_PER_RUN = 3  # network/5xx failures tolerated per process once the deadline has passed
PAST_DEADLINE_MAX_WAIT_S = 5.0


def api_base(state: JobState) -> str:
    return api_base_of(config_of(state))


def token_env(state: JobState) -> str:
    return token_env_of(config_of(state))


def setting(state: JobState, key: str, default: float) -> float:
    """A number from the recorded config, `default` when it is absent or not a finite number."""
    value = finite(config_of(state).get(key))
    return default if value is None else value


def model_input(state: JobState) -> dict[str, Any]:
    req = state.request
    assert req is not None
    p = req.params
    inp: dict[str, Any] = {
        "prompt": req.prompt,
        "seed": p["seed"],
        "aspect_ratio": p["aspect_ratio"],
        "output_format": p["output_format"],
    }
    if model_name(req.model) in MAX_STEPS:
        inp["num_outputs"] = state.count
        if p.get("steps"):
            inp["num_inference_steps"] = p["steps"]
        if p.get("megapixels"):
            inp["megapixels"] = p["megapixels"]
    inp.update(p.get("extra") or {})
    return inp


def job_timeout(state: JobState) -> float:
    assert state.request is not None
    value = state.request.params.get("timeout_s")
    return float(value) if isinstance(value, int | float) and value > 0 else 60.0


def job_deadline(state: JobState) -> datetime:
    """`timeout_s` after the first create left: when money started, as Replicate counts its
    Cancel-After. (A job resumed long after it was requested, with nothing created yet, gets its
    whole timeout rather than a create cancelled at once.)"""
    creates = exchanges(state, "create")
    assert state.started_at is not None and state.now is not None
    start = creates[0].sent_at.at if creates else state.now
    return start + timedelta(seconds=job_timeout(state))


def create_request(state: JobState, not_before: str | None = None) -> HttpRequest:
    req = state.request
    assert req is not None
    timeout = job_timeout(state)
    wait = max(1, min(int(setting(state, "wait_s", 60)), 60, int(timeout)))
    ref, _, version = req.model.partition(":")
    if version:
        url, body = (
            f"{api_base(state)}/v1/predictions",
            {"version": version, "input": model_input(state)},
        )
    else:
        url, body = f"{api_base(state)}/v1/models/{ref}/predictions", {"input": model_input(state)}
    headers = (("Prefer", f"wait={wait}"), ("Cancel-After", f"{max(5, int(timeout))}s"))
    return http_request(
        state,
        "create",
        "POST",
        url,
        headers=headers,
        body=body,
        timeout_s=wait + 10,
        auth_env=token_env(state),
        not_before=not_before,
    )


def get_request(
    state: JobState, purpose: str, url: str, not_before: str | None = None
) -> HttpRequest:
    """A GET to the API: the token is attached only when the URL is on the API's origin."""
    return http_request(
        state,
        purpose,
        "GET",
        url,
        timeout_s=15,
        auth_env=token_env(state) if same_origin(url, api_base(state)) else None,
        not_before=not_before,
    )


def backoff(state: JobState, attempt: int) -> float:
    return backoff_delay(setting(state, "retry_base_s", 1.0), attempt, MAX_BACKOFF_S)


def last_after(state: JobState, kind: type, version: int) -> Recorded | None:
    """The last event of a kind recorded after `version`."""
    for rec in reversed(state.history):
        if rec.version <= version:
            return None
        if isinstance(rec.event, kind):
            return rec
    return None


def snapshot(state: JobState) -> tuple[dict[str, Any], int] | None:
    """The latest prediction object for our remote id (from create, poll or cancel answers),
    with the version it was recorded at."""
    for rec in reversed(state.history):
        e = rec.event
        if isinstance(e, ResponseReceived) and e.status in (200, 201, 202):
            p = prediction(e.body)
            if p is not None and p["id"] == state.remote_id:
                return p, rec.version
    return None


def create_outcome(outcome: Any) -> str:
    """accepted | refused | throttled | rejected | unknown (the create may have been made)."""
    if outcome is None:
        return "unknown"
    if isinstance(outcome, RequestFailed):
        return "refused" if outcome.error == "refused" else "unknown"
    if outcome.status in (200, 201, 202):
        return "accepted" if prediction(outcome.body) is not None else "unknown"
    if outcome.status == 429:
        return "throttled"
    if 400 <= outcome.status < 500:
        return "rejected"
    return "unknown"  # 5xx (a gateway may answer after the API created it), 1xx/3xx


def uncertain_creates(state: JobState) -> int:
    """Creates whose outcome was never known: each may have been paid. Counted over the job's
    whole history, across resumes."""
    return sum(1 for ex in exchanges(state, "create") if create_outcome(ex.outcome) == "unknown")
