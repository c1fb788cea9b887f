"""Replicate adapter (pure): FLUX on api.replicate.com.

Configuration, input normalisation and probing live here beside `decide`, so everything about
this backend is in one module.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from imagen.backends.common import (
    config_of,
    configured_model,
    exchanges,
    no_checks,
    no_stream,
    nothing_missing,
    pending_retry,
    request_id,
    retries,
    retry_time,
)
from imagen.backends.contract import Option
from imagen.core.actions import Action, Halt, HttpRequest, Record, StoreImage
from imagen.core.events import (
    CancelRequested,
    ForceNewRequested,
    JobCancelled,
    JobFailed,
    JobSucceeded,
    LookupConcluded,
    RemoteJobAccepted,
    RequestFailed,
    ResponseReceived,
    RetryScheduled,
)
from imagen.core.failures import Failure
from imagen.core.inputs import BadInput, GenerateInputs
from imagen.core.job import JobState, iso

DEFAULT_MODEL = "black-forest-labs/flux-schnell"
DEFAULT_BASE_URL = "https://api.replicate.com"

CONFIG: dict[str, Option] = {
    "api_token_env": Option((str,), "REPLICATE_API_TOKEN", "env var holding the API token"),
    "base_url": Option((str,), DEFAULT_BASE_URL, "API base URL (a test double, a proxy)", url=True),
    "poll_interval_s": Option(
        (float, int), 0.5, "seconds between polls when waiting", positive=True
    ),
    "wait_s": Option((int,), 60, "Prefer: wait=N seconds on create (1-60)", minimum=1, maximum=60),
    "inputs": Option((dict,), None, "extra model inputs sent with every request"),
    "retry_base_s": Option(
        (float, int), 1.0, "first backoff delay for 429 (doubles each time)", minimum=0
    ),
    "max_image_mb": Option((float, int), 64, "refuse downloads larger than this", positive=True),
}

# Output sizes at 1 megapixel (cog-flux); megapixels "0.25" halves both sides.
ASPECT_SIZES: dict[str, tuple[int, int]] = {
    "1:1": (1024, 1024),
    "16:9": (1344, 768),
    "21:9": (1536, 640),
    "3:2": (1216, 832),
    "2:3": (832, 1216),
    "4:5": (896, 1088),
    "5:4": (1088, 896),
    "3:4": (896, 1152),
    "4:3": (1152, 896),
    "9:16": (768, 1344),
    "9:21": (640, 1536),
}
FORMATS = ("png", "webp", "jpg")
MAX_STEPS = {"flux-schnell": 4, "flux-dev": 50}
DEFAULT_STEPS = {"flux-schnell": 4, "flux-dev": 28}
DEFAULT_TIMEOUT_S = {"flux-schnell": 60.0, "flux-dev": 120.0}


def model_name(model: str) -> str:
    return model.split(":", 1)[0].split("/")[-1]


def nearest_aspect(width: int, height: int) -> str:
    target = math.log(width / height)
    return min(
        ASPECT_SIZES, key=lambda a: abs(math.log(ASPECT_SIZES[a][0] / ASPECT_SIZES[a][1]) - target)
    )


def normalise(inputs: GenerateInputs, options: Mapping[str, Any]) -> dict[str, Any]:
    """The request's params: what is sent (aspect_ratio, megapixels, steps, seed, format) and
    what we expect back (width, height)."""
    model = str(options.get("model") or DEFAULT_MODEL)
    name = model_name(model)
    if inputs.aspect:
        if inputs.aspect not in ASPECT_SIZES:
            raise BadInput(f"--aspect {inputs.aspect!r}: use one of {', '.join(ASPECT_SIZES)}")
        aspect, megapixels = inputs.aspect, "1"
    elif inputs.size:
        aspect = nearest_aspect(*inputs.size)
        megapixels = "0.25" if inputs.size[0] * inputs.size[1] <= 400_000 else "1"
    else:
        aspect, megapixels = "1:1", "1"
    steps = inputs.steps or options.get("default_steps") or DEFAULT_STEPS.get(name)
    if steps is not None and name in MAX_STEPS and not 1 <= steps <= MAX_STEPS[name]:
        raise BadInput(f"--steps {steps}: {name} takes 1 to {MAX_STEPS[name]} steps")
    fmt = inputs.output_format or "png"
    if fmt not in FORMATS:
        raise BadInput(f"output format {fmt!r}: use one of {', '.join(FORMATS)}")
    w, h = ASPECT_SIZES[aspect]
    if megapixels == "0.25":
        w, h = w // 2, h // 2
    return {
        "seed": inputs.seed,
        "aspect_ratio": aspect,
        "megapixels": megapixels if name in MAX_STEPS else None,
        "steps": steps,
        "output_format": fmt,
        "width": w,
        "height": h,
        "extra": {**(options.get("inputs") or {}), **inputs.extra},
        "timeout_s": float(options.get("timeout_s") or DEFAULT_TIMEOUT_S.get(name, 120.0)),
    }


FILE_OPTIONS: tuple[str, ...] = ()
# What decide reads (Retry-After) and what explains a rate limit or a sync wait in an audit.
interpret_frame = no_stream  # Replicate is polled, never streamed
describe_model = configured_model
check_requests = no_checks
check_verdict = nothing_missing
RECORDED_HEADERS = frozenset(
    {
        "content-type",
        "content-length",
        "retry-after",
        "location",
        "preference-applied",
        "ratelimit-remaining",
        "ratelimit-reset",
    }
)


def validate_request(params: Mapping[str, Any], options: Mapping[str, Any]) -> None:
    """Nothing beyond normalise: Replicate reads no files."""


def status(options: Mapping[str, Any], env: Mapping[str, str]) -> str:
    name = options.get("api_token_env") or "REPLICATE_API_TOKEN"
    return "ok" if env.get(name) else f"not configured (set {name})"


def probe_request(options: Mapping[str, Any]) -> tuple[str, str, str | None]:
    base = str(options.get("base_url") or DEFAULT_BASE_URL).rstrip("/")
    return (
        "GET",
        f"{base}/v1/predictions",
        str(options.get("api_token_env") or "REPLICATE_API_TOKEN"),
    )


def probe_verdict(status_code: int, body: Any) -> str:
    if status_code == 200:
        return "ok (reachable, token accepted)"
    if status_code == 401:
        return "token rejected (check the token in the api_token_env variable)"
    return f"unexpected answer: HTTP {status_code}"


# -- the state machine -----------------------------------------------------------------------

TERMINAL = ("succeeded", "failed", "canceled", "aborted")
LOOKUP_MARGIN_S = 300  # clock skew allowance when asking for predictions created after a send
MAX_429_RETRIES = 3


def _base(state: JobState) -> str:
    return str(config_of(state).get("base_url") or DEFAULT_BASE_URL).rstrip("/")


def _token_env(state: JobState) -> str:
    return str(config_of(state).get("api_token_env") or "REPLICATE_API_TOKEN")


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
        inp["num_outputs"] = 1
        if p.get("steps"):
            inp["num_inference_steps"] = p["steps"]
        if p.get("megapixels"):
            inp["megapixels"] = p["megapixels"]
    inp.update(p.get("extra") or {})
    return inp


def _create(state: JobState, not_before: str | None = None) -> HttpRequest:
    req = state.request
    assert req is not None
    timeout = float(req.params.get("timeout_s") or 60)
    wait = max(1, min(int(config_of(state).get("wait_s") or 60), 60, int(timeout)))
    ref, _, version = req.model.partition(":")
    if version:
        url, body = (
            f"{_base(state)}/v1/predictions",
            {"version": version, "input": model_input(state)},
        )
    else:
        url, body = f"{_base(state)}/v1/models/{ref}/predictions", {"input": model_input(state)}
    headers = (("Prefer", f"wait={wait}"), ("Cancel-After", f"{max(5, int(timeout))}s"))
    return HttpRequest(
        request_id(state, "create"),
        "create",
        "POST",
        url,
        headers,
        body,
        timeout_s=wait + 10,
        auth_env=_token_env(state),
        not_before=not_before,
    )


def _get(state: JobState, purpose: str, url: str, not_before: str | None = None) -> HttpRequest:
    return HttpRequest(
        request_id(state, purpose),
        purpose,
        "GET",
        url,
        timeout_s=15,
        auth_env=_token_env(state),
        not_before=not_before,
    )


def _retry_after(outcome: ResponseReceived, attempt: int, base: float) -> float:
    """Retry-After header, else the body's retry_after, else '~Ns' in the detail, else backoff."""
    header = outcome.headers.get("retry-after")
    if header and header.strip().replace(".", "", 1).isdigit():
        return float(header)
    body = outcome.body if isinstance(outcome.body, dict) else {}
    if isinstance(body.get("retry_after"), int | float):
        return float(body["retry_after"])
    m = re.search(r"~(\d+)s", str(body.get("detail", "")))
    if m:
        return float(m[1])
    return base * 2**attempt


def _detail(outcome: ResponseReceived) -> str:
    body = outcome.body
    if isinstance(body, dict):
        return str(body.get("detail") or body.get("title") or body)
    return f"HTTP {outcome.status}"


def _http_failure(
    state: JobState, purpose: str, outcome: ResponseReceived, retry: Action | None
) -> Action:
    """Answers that are not a prediction: what they mean and whether to try again."""
    status = outcome.status
    base = float(config_of(state).get("retry_base_s") or 1.0)
    if status == 401:
        return Record(
            (
                JobFailed(
                    "unauthorized",
                    f"Replicate rejected the API token: set {_token_env(state)} to a valid token",
                    Failure.UNAUTHORIZED,
                ),
            )
        )
    if status == 402:
        return Record(
            (
                JobFailed(
                    "out_of_credit",
                    f"Replicate: out of credit ({_detail(outcome)})",
                    Failure.OUT_OF_CREDIT,
                ),
            )
        )
    if status == 422:
        body = outcome.body if isinstance(outcome.body, dict) else {}
        fields = "; ".join(
            f"{f.get('field')}: {f.get('description')}" for f in body.get("invalid_fields") or []
        )
        return Record(
            (
                JobFailed(
                    "invalid_input",
                    f"Replicate rejected the input: {fields or _detail(outcome)}",
                    Failure.INVALID_INPUT,
                ),
            )
        )
    if status == 429:
        n = retries(state, purpose, "429")
        if n < MAX_429_RETRIES and retry is not None:
            return Record(
                (
                    RetryScheduled(
                        purpose, n + 1, _retry_after(outcome, n, base), "429 rate limited"
                    ),
                )
            )
        return Record(
            (
                JobFailed(
                    "rate_limited",
                    f"Replicate kept rate-limiting after {n} retries: {_detail(outcome)}",
                    Failure.RATE_LIMITED,
                ),
            )
        )
    if status >= 500:
        if retries(state, purpose, "5xx") < 1 and retry is not None:
            return Record((RetryScheduled(purpose, 1, base, f"5xx HTTP {status}"),))
        return Record(
            (
                JobFailed(
                    "server_error",
                    f"Replicate answered HTTP {status} twice: {_detail(outcome)}",
                    Failure.SERVER_ERROR,
                ),
            )
        )
    if status == 404:
        return Record(
            (
                JobFailed(
                    "not_found",
                    f"Replicate: not found ({_detail(outcome)}); check the model name",
                    Failure.NOT_FOUND,
                ),
            )
        )
    return Record(
        (
            JobFailed(
                "unexpected",
                f"Replicate answered HTTP {status}: {_detail(outcome)}",
                Failure.UNEXPECTED,
            ),
        )
    )


def _snapshot(state: JobState) -> dict[str, Any] | None:
    """The latest prediction object we received for our remote id."""
    for rec in reversed(state.history):
        e = rec.event
        if (
            isinstance(e, ResponseReceived)
            and isinstance(e.body, dict)
            and e.body.get("id") == state.remote_id
            and "status" in e.body
        ):
            return e.body
    return None


def _first_output(prediction: dict[str, Any]) -> str | None:
    output = prediction.get("output")
    if isinstance(output, list):
        output = output[0] if output else None
    return output if isinstance(output, str) and output else None


def _lookup_url(state: JobState, sent_at: datetime) -> str:
    after = iso(sent_at - timedelta(seconds=LOOKUP_MARGIN_S))
    return f"{_base(state)}/v1/predictions?{urlencode({'created_after': after})}"


def _matches(state: JobState) -> list[str]:
    """Predictions in the lookup pages whose input is the input this job sent."""
    creates = exchanges(state, "create")
    sent = (
        creates[-1].sent.body.get("input", {})
        if creates and isinstance(creates[-1].sent.body, dict)
        else {}
    )
    found: list[str] = []
    for ex in _lookups_since_create(state):
        body = ex.outcome.body if isinstance(ex.outcome, ResponseReceived) else None
        for p in (body or {}).get("results", []) if isinstance(body, dict) else []:
            inp = p.get("input") or {}
            if all(inp.get(k) == v for k, v in sent.items()) and p["id"] not in found:
                found.append(p["id"])
    return found


def _lookups_since_create(state: JobState) -> list[Any]:
    creates = exchanges(state, "create")
    floor = creates[-1].sent_at.version if creates else 0
    return [ex for ex in exchanges(state, "lookup") if ex.sent_at.version > floor]


def _after(state: JobState, kind: type, version: int) -> Any:
    for rec in state.history:
        if rec.version > version and isinstance(rec.event, kind):
            return rec.event
    return None


def _cancel(state: JobState) -> Action:
    """Cancel: stop the remote prediction (so billing stops), then end the job cancelled."""
    assert state.cancel is not None
    reason = state.cancel.reason
    snap = _snapshot(state)
    if state.remote_id and (snap is None or snap.get("status") not in TERMINAL):
        cancels = exchanges(state, "cancel")
        if not cancels or (pending_retry(state, "cancel") and len(cancels) < 2):
            url = f"{_base(state)}/v1/predictions/{state.remote_id}/cancel"
            return HttpRequest(
                request_id(state, "cancel"),
                "cancel",
                "POST",
                url,
                timeout_s=15,
                auth_env=_token_env(state),
            )
        last = cancels[-1].outcome
        if isinstance(last, ResponseReceived) and last.status == 200:
            return Record((JobCancelled(reason, remote_cancelled=True),))
        if len(cancels) < 2:
            return Record((RetryScheduled("cancel", 1, 0.2, "cancel failed"),))
        return Record((JobCancelled(reason, remote_cancelled=False),))
    creates = exchanges(state, "create")
    if not state.remote_id and creates and creates[-1].outcome is None:
        # The create left but its answer never came: find the prediction to cancel it.
        decided = _decide_lookup(state, creates[-1])
        if decided is not None:
            return decided
    remote_cancelled = bool(snap and snap.get("status") == "canceled")
    return Record((JobCancelled(reason, remote_cancelled=remote_cancelled),))


def _decide_lookup(state: JobState, create: Any) -> Action | None:
    """After an unanswered create: list recent predictions and adopt the one with our input."""
    lookups = _lookups_since_create(state)
    if not lookups or (pending_retry(state, "lookup") and lookups[-1].outcome is not None):
        return _get(state, "lookup", _lookup_url(state, create.sent_at.at))
    last = lookups[-1]
    if last.outcome is None:
        return _get(state, "lookup", last.sent.url)
    if isinstance(last.outcome, ResponseReceived) and last.outcome.status == 200:
        body = last.outcome.body if isinstance(last.outcome.body, dict) else {}
        if body.get("next") and len(lookups) < 20:
            return _get(state, "lookup", str(body["next"]))
        matches = _matches(state)
        if len(matches) == 1:
            return Record(
                (LookupConcluded(matches, "adopt"), RemoteJobAccepted(matches[0], via="lookup"))
            )
        if not matches:
            if isinstance(_after(state, LookupConcluded, create.sent_at.version), LookupConcluded):
                return None
            return Record((LookupConcluded([], "create"),))
        return Record((LookupConcluded(matches, "ambiguous"),))
    if retries(state, "lookup") < 1:
        return Record(
            (
                RetryScheduled(
                    "lookup", 1, float(config_of(state).get("retry_base_s") or 1.0), "lookup failed"
                ),
            )
        )
    return Halt(
        f"the create request may have reached Replicate but the lookup failed "
        f"({_describe(last.outcome)}); resume later, or `imagen resume {state.job_id} --force-new` "
        "to create a new prediction (possibly paying twice)"
    )


def _describe(outcome: Any) -> str:
    if isinstance(outcome, ResponseReceived):
        return f"HTTP {outcome.status}"
    return f"{outcome.error}: {outcome.message}"


def decide(state: JobState) -> Action:
    req = state.request
    assert req is not None
    if state.finished:
        return Record(())  # the job has ended: nothing more to send or record
    if state.image is not None:
        snap = _snapshot(state) or {}
        return Record(
            (
                JobSucceeded(
                    {
                        "prediction_id": state.remote_id,
                        "metrics": snap.get("metrics"),
                        "seed_used": _seed_from_logs(snap.get("logs")) or req.params.get("seed"),
                        "path": state.image.path,
                        "sha256": state.image.sha256,
                    }
                ),
            )
        )
    if state.cancel is not None:
        return _cancel(state)

    if state.remote_id is None:
        creates = exchanges(state, "create")
        if not creates:
            return _create(state)
        last = creates[-1]
        forced = _after(state, ForceNewRequested, last.sent_at.version)
        concluded = _after(state, LookupConcluded, last.sent_at.version)
        if forced is not None or (concluded is not None and concluded.decision == "create"):
            return _create(state)
        if concluded is not None and concluded.decision == "ambiguous":
            return Halt(
                f"{len(concluded.matches)} predictions match this job's input "
                f"({', '.join(concluded.matches)}); imagen will not guess which one is "
                f"yours: `imagen resume {state.job_id} --force-new` creates a new one"
            )
        if pending_retry(state, "create") is not None:
            return _create(state, retry_time(state, "create"))
        outcome = last.outcome
        if outcome is None:
            return _decide_lookup(state, last) or _create(state)
        if isinstance(outcome, RequestFailed):
            if outcome.error == "refused":
                if retries(state, "create", "refused") < 1:
                    return Record(
                        (
                            RetryScheduled(
                                "create",
                                1,
                                float(config_of(state).get("retry_base_s") or 1.0),
                                "refused: connection refused",
                            ),
                        )
                    )
                return Record(
                    (
                        JobFailed(
                            "unreachable",
                            f"cannot reach Replicate at {_base(state)}: {outcome.message}",
                            Failure.UNREACHABLE,
                        ),
                    )
                )
            # Reset or timed out after sending: the prediction may exist. Look before paying again.
            return _decide_lookup(state, last) or _create(state)
        if (
            outcome.status in (200, 201, 202)
            and isinstance(outcome.body, dict)
            and outcome.body.get("id")
        ):
            return Record(
                (
                    RemoteJobAccepted(
                        outcome.body["id"], url=str((outcome.body.get("urls") or {}).get("get", ""))
                    ),
                )
            )
        return _http_failure(state, "create", outcome, retry=_create(state))

    snap = _snapshot(state)
    status = snap.get("status") if snap else None
    if snap is not None and status == "succeeded":
        return _download(state, snap)
    if status == "failed":
        return Record(
            (
                JobFailed(
                    "prediction_failed",
                    f"Replicate: the prediction failed: {snap.get('error')}",
                    Failure.GENERATION_FAILED,
                ),
            )
        )  # type: ignore[union-attr]
    if status in ("canceled", "aborted"):
        return Record(
            (
                JobFailed(
                    "prediction_canceled",
                    f"Replicate: the prediction was {status} "
                    f"{'(deadline reached)' if snap.get('deadline') else ''}".rstrip(),
                    Failure.GENERATION_FAILED,
                ),
            )
        )  # type: ignore[union-attr]
    return _poll(state)


def _poll(state: JobState) -> Action:
    req = state.request
    assert req is not None and state.now is not None and state.started_at is not None
    url = f"{_base(state)}/v1/predictions/{state.remote_id}"
    polls = exchanges(state, "poll")
    last = polls[-1] if polls else None
    if (
        last is not None
        and last.outcome is not None
        and not (isinstance(last.outcome, ResponseReceived) and last.outcome.status == 200)
    ):
        if pending_retry(state, "poll") is None:
            o = last.outcome
            if isinstance(o, ResponseReceived):
                return _http_failure(state, "poll", o, retry=_get(state, "poll", url))
            failed_in_a_row = sum(1 for _ in _trailing_failures(polls))
            if failed_in_a_row < 2:
                return Record(
                    (RetryScheduled("poll", failed_in_a_row, 0.5, f"network: {o.error}"),)
                )
            return Record(
                (
                    JobFailed(
                        "unreachable",
                        f"lost Replicate while polling: {o.message}",
                        Failure.UNREACHABLE,
                    ),
                )
            )
        return _get(state, "poll", url, retry_time(state, "poll"))
    deadline = state.started_at + timedelta(seconds=float(req.params.get("timeout_s") or 60))
    interval = float(config_of(state).get("poll_interval_s") or 0.5)
    next_at = state.now + timedelta(seconds=interval)
    if next_at >= deadline:
        return Record((CancelRequested("timeout"),))
    return _get(state, "poll", url, iso(next_at) if polls or _snapshot(state) else None)


def _trailing_failures(polls: list[Any]) -> list[Any]:
    out = []
    for ex in reversed(polls):
        if isinstance(ex.outcome, RequestFailed):
            out.append(ex)
        else:
            break
    return out


def _download(state: JobState, snap: dict[str, Any]) -> Action:
    req = state.request
    assert req is not None
    url = _first_output(snap)
    if url is None or snap.get("data_removed"):
        return Record(
            (
                JobFailed(
                    "output_deleted",
                    "Replicate no longer has this prediction's output "
                    "(API outputs are kept about an hour); the prediction was still paid for",
                    Failure.OUTPUT_LOST,
                ),
            )
        )
    downloads = exchanges(state, "download")
    auth = _token_env(state) if url.startswith(_base(state)) else None
    max_bytes = int(float(config_of(state).get("max_image_mb") or 64) * 1024 * 1024)
    store = StoreImage(
        request_id(state, "download"),
        url,
        req.output_path,
        expected_format=req.params.get("output_format"),
        max_bytes=max_bytes,
        overwrite=req.overwrite,
        timeout_s=60,
        auth_env=auth,
    )
    if not downloads or pending_retry(state, "download") is not None:
        return store
    last = downloads[-1].outcome
    if last is None:
        return store  # the process died mid-download: downloading again is free
    if isinstance(last, ResponseReceived) and last.status in (404, 410):
        return Record(
            (
                JobFailed(
                    "output_deleted",
                    f"Replicate no longer serves the output (HTTP {last.status}); "
                    "API outputs are kept about an hour; the prediction was still paid for",
                    Failure.OUTPUT_LOST,
                ),
            )
        )
    if isinstance(last, RequestFailed) and last.error == "exists":
        return Record((JobFailed("output_exists", last.message, Failure.OUTPUT_EXISTS),))
    if retries(state, "download") < 1:
        return Record((RetryScheduled("download", 1, 0.2, f"download: {_describe(last)}"),))
    return Record(
        (
            JobFailed(
                "download_failed",
                f"could not download the image: {_describe(last)}",
                Failure.DOWNLOAD_FAILED,
            ),
        )
    )


def _seed_from_logs(logs: Any) -> int | None:
    m = re.search(r"Using seed: (\d+)", logs or "") if isinstance(logs, str) else None
    return int(m[1]) if m else None
