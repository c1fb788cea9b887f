"""Replicate adapter (pure): FLUX on api.replicate.com.

Configuration, input normalisation and probing live here beside `decide`, so everything about
this backend is in one module.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from imagen.backends.common import (
    Exchange,
    config_of,
    configured_model,
    current_downloads,
    exchanges,
    next_image_index,
    no_checks,
    no_stream,
    nothing_missing,
    pending_retry,
    request_id,
    retries,
    retry_time,
)
from imagen.backends.contract import Option
from imagen.core.actions import Action, CheckHeld, Halt, HttpRequest, Record, StoreImage
from imagen.core.events import (
    CancelRequested,
    ForceNewRequested,
    JobCancelled,
    JobFailed,
    JobSucceeded,
    LookupConcluded,
    RemoteIdsHeld,
    RemoteJobAccepted,
    RequestFailed,
    ResponseReceived,
    RetryScheduled,
    RunnerClaimed,
)
from imagen.core.failures import Failure
from imagen.core.inputs import BadInput, GenerateInputs, check_extra, check_int_range
from imagen.core.job import JobState, Recorded, image_path, iso

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
MAX_OUTPUTS = 4  # cog-flux predict.py: num_outputs ge=1 le=4 (schnell, dev)
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


# Seeds cog-flux uses as given (predict.py, bfl_predictor.py, fp8/flux_pipeline.py @51e81e0):
# 0 means "pick a random seed" in the bf16 path (`if not seed`), and the default fp8 path
# (go_fast) reduces the seed modulo 2^32-1. So 1..2^32-2 is what reproduces on both paths.
SEED_MIN, SEED_MAX = 1, 2**32 - 2


@dataclass(frozen=True)
class _Input:
    """A model input an -o may set: its JSON type and inclusive range (cog-flux predict.py)."""

    kind: type | tuple[type, ...]
    low: float | None = None
    high: float | None = None


_SCHNELL_EXTRA = {
    "go_fast": _Input(bool),
    "disable_safety_checker": _Input(bool),
    "output_quality": _Input(int, 0, 100),
}
# Extra inputs imagen checks for the models it knows; other models' inputs are passed as given
# (Replicate validates them, and a 422 is recorded as a failed, unpaid job).
EXTRA_INPUTS: dict[str, dict[str, _Input]] = {
    "flux-schnell": _SCHNELL_EXTRA,
    "flux-dev": {
        **_SCHNELL_EXTRA,
        "guidance": _Input((int, float), 0, 10),
        "prompt_strength": _Input((int, float), 0, 1),
        "image": _Input(str),
    },
}


def _check_extra(name: str, extra: Mapping[str, Any]) -> None:
    check_extra(dict(extra))
    known = EXTRA_INPUTS.get(name)
    if known is None:
        return
    for key, value in extra.items():
        spec = known.get(key)
        if spec is None:
            raise BadInput(
                f"-o {key}: {name} has no such input; it takes {', '.join(sorted(known))}"
            )
        kinds = spec.kind if isinstance(spec.kind, tuple) else (spec.kind,)
        if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
            raise BadInput(
                f"-o {key}={value!r}: {name} wants {'/'.join(k.__name__ for k in kinds)}"
            )
        if spec.low is not None and spec.high is not None and not spec.low <= value <= spec.high:
            raise BadInput(f"-o {key}={value!r}: {name} takes {spec.low:g} to {spec.high:g}")


def normalise(inputs: GenerateInputs, options: Mapping[str, Any]) -> dict[str, Any]:
    """The request's params: what is sent (aspect_ratio, megapixels, steps, seed, format) and
    what we expect back (width, height). Every value is checked against what the model takes
    (ranges in docs/usage.md), so nothing Replicate would refuse or change is recorded."""
    model = str(options.get("model") or DEFAULT_MODEL)
    name = model_name(model)
    check_int_range("--seed", inputs.seed, SEED_MIN, SEED_MAX, "the seeds cog-flux uses as given")
    asked: dict[str, Any] | None = None
    if inputs.aspect:
        if inputs.aspect not in ASPECT_SIZES:
            raise BadInput(f"--aspect {inputs.aspect!r}: use one of {', '.join(ASPECT_SIZES)}")
        aspect, megapixels = inputs.aspect, "1"
    elif inputs.size:
        if not all(64 <= side <= 4096 for side in inputs.size):
            raise BadInput(
                f"--size {inputs.size[0]}x{inputs.size[1]}: use 64 to 4096 pixels a side "
                "(Replicate makes the nearest aspect ratio)"
            )
        aspect = nearest_aspect(*inputs.size)
        megapixels = "0.25" if inputs.size[0] * inputs.size[1] <= 400_000 else "1"
    else:
        aspect, megapixels = "1:1", "1"
    if name in MAX_STEPS:
        steps = inputs.steps if inputs.steps is not None else options.get("default_steps")
        steps = steps if steps is not None else DEFAULT_STEPS[name]
        check_int_range("--steps", steps, 1, MAX_STEPS[name], f"{name} on Replicate")
    elif inputs.steps is not None:
        raise BadInput(f"--steps {inputs.steps}: imagen sends no step count to {name}")
    else:
        steps = None
    fmt = inputs.output_format or "png"
    if fmt not in FORMATS:
        raise BadInput(f"output format {fmt!r}: use one of {', '.join(FORMATS)}")
    if not 1 <= inputs.count <= (MAX_OUTPUTS if name in MAX_STEPS else 1):
        raise BadInput(
            f"--per-job {inputs.count}: {name} makes "
            + (f"1 to {MAX_OUTPUTS} images" if name in MAX_STEPS else "one image")
            + " per prediction"
        )
    extra = {**(options.get("inputs") or {}), **inputs.extra}
    _check_extra(name, extra)
    w, h = ASPECT_SIZES[aspect]
    if megapixels == "0.25":
        w, h = w // 2, h // 2
    if inputs.size and inputs.size != (w, h):
        asked = {"size": f"{inputs.size[0]}x{inputs.size[1]}"}
    params = {
        "seed": inputs.seed,
        "aspect_ratio": aspect,
        "megapixels": megapixels if name in MAX_STEPS else None,
        "steps": steps,
        "output_format": fmt,
        "count": inputs.count,
        "width": w,
        "height": h,
        "extra": extra,
        "timeout_s": float(options.get("timeout_s") or DEFAULT_TIMEOUT_S.get(name, 120.0)),
    }
    if asked:
        # Replicate makes fixed sizes per aspect ratio: say what was asked beside what is made.
        params["asked"] = asked
    return params


FILE_OPTIONS: tuple[str, ...] = ()
# What decide reads (Retry-After; Date: Replicate's clock, which measures the lookup window) and
# what explains a rate limit or a sync wait in an audit.
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
        "date",
    }
)


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


_RANGES: dict[str, tuple[float, float]] = {
    "timeout_s": (1, 86400),
    "wait_s": (1, 60),
    "poll_interval_s": (0.05, 3600),
    "retry_base_s": (0, 60),
    "max_image_mb": (0.001, 4096),
    "price_usd": (0, 1000),
}


def validate_request(params: Mapping[str, Any], options: Mapping[str, Any]) -> None:
    """Configuration values in range, checked before anything is paid for."""
    for key, (low, high) in _RANGES.items():
        value = options.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise BadInput(f"{key} = {value!r}: give a number from {low:g} to {high:g}")
        if not (math.isfinite(value) and low <= value <= high):
            raise BadInput(f"{key} = {value!r}: give a number from {low:g} to {high:g}")
    base = str(options.get("base_url") or DEFAULT_BASE_URL)
    if origin(base) is None:
        raise BadInput(f"base_url = {base!r}: give an http(s) URL without user:password@")


# -- the state machine -----------------------------------------------------------------------
#
# Money rules, each enforced below and tested from event histories in
# tests/test_replicate_decide.py:
# - a succeeded prediction is always fetched, whatever the clock says (no deadline check comes
#   before learning the prediction's state in this process, and a cancel reply that says
#   `succeeded` is downloaded);
# - the token goes only to the API's own origin (scheme, host and port equal base_url's);
# - a create whose outcome is unknown is looked up before anything else, and at most
#   MAX_UNCERTAIN_CREATES creates may end unknown (counted over the job's whole history);
# - the lookup window is measured on Replicate's clock (the listing's Date header) and by
#   elapsed time on ours, so a skewed local clock cannot hide the prediction;
# - a prediction another job holds is never adopted (CheckHeld asks the ledger; the answer is
#   an event).

LOOKUP_MARGIN_S = 300  # latency and Date-header rounding allowance around the lookup window
MAX_LOOKUP_PAGES = 20
MAX_429_RETRIES = 3
MAX_UNCERTAIN_CREATES = 3
MAX_RETRY_AFTER_S = 60.0  # a server asking for more is not obeyed beyond this
MAX_BACKOFF_S = 30.0
RETRIES_PER_RUN = 3  # network/5xx failures tolerated per process once the deadline has passed
PAST_DEADLINE_MAX_WAIT_S = 5.0
_ID = re.compile(r"^[A-Za-z0-9_-]{1,100}$")


def _base(state: JobState) -> str:
    return str(config_of(state).get("base_url") or DEFAULT_BASE_URL).rstrip("/")


def _token_env(state: JobState) -> str:
    return str(config_of(state).get("api_token_env") or "REPLICATE_API_TOKEN")


def _num(state: JobState, key: str, default: float) -> float:
    value = config_of(state).get(key)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return default
    return float(value)


def origin(url: str) -> tuple[str, str, int] | None:
    """(scheme, host, port) of an http(s) URL, None for anything else (or with userinfo).

    Credentials go only where this equals the configured API's origin: a prefix test would
    accept `https://api.replicate.com.evil.tld/` or `https://api.replicate.com@evil/`.
    """
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.hostname or "@" in parts.netloc:
        return None
    return scheme, parts.hostname.lower().rstrip("."), port or (443 if scheme == "https" else 80)


def same_origin(url: str, base: str) -> bool:
    mine = origin(base)
    return mine is not None and origin(url) == mine


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


def _timeout(state: JobState) -> float:
    assert state.request is not None
    value = state.request.params.get("timeout_s")
    return float(value) if isinstance(value, int | float) and value > 0 else 60.0


def _deadline(state: JobState) -> datetime:
    """`timeout_s` after the first create left: when money started, as Replicate counts its
    Cancel-After. (A job resumed long after it was requested, with nothing created yet, gets its
    whole timeout rather than a create cancelled at once.)"""
    creates = exchanges(state, "create")
    assert state.started_at is not None and state.now is not None
    start = creates[0].sent_at.at if creates else state.now
    return start + timedelta(seconds=_timeout(state))


def _create(state: JobState, not_before: str | None = None) -> HttpRequest:
    req = state.request
    assert req is not None
    timeout = _timeout(state)
    wait = max(1, min(int(_num(state, "wait_s", 60)), 60, int(timeout)))
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
    """A GET to the API: the token is attached only when the URL is on the API's origin."""
    return HttpRequest(
        request_id(state, purpose),
        purpose,
        "GET",
        url,
        timeout_s=15,
        auth_env=_token_env(state) if same_origin(url, _base(state)) else None,
        not_before=not_before,
    )


# -- reading what came back (every field is checked: a malformed answer never raises) ----------


def _prediction(body: Any) -> dict[str, Any] | None:
    """The body as a prediction object, if it is one we can act on."""
    if (
        isinstance(body, dict)
        and isinstance(body.get("id"), str)
        and _ID.match(body["id"])
        and isinstance(body.get("status"), str)
    ):
        return body
    return None


def _header(outcome: ResponseReceived, name: str) -> str:
    headers = outcome.headers if isinstance(outcome.headers, dict) else {}
    value = headers.get(name)
    return value if isinstance(value, str) else ""


def _retry_after(outcome: ResponseReceived, attempt: int, base: float) -> float:
    """Retry-After header, else the body's retry_after, else '~Ns' in the detail, else backoff;
    never more than MAX_RETRY_AFTER_S (a server may ask for a day)."""
    delay: float | None = None
    header = _header(outcome, "retry-after").strip()
    if re.fullmatch(r"\d+(\.\d+)?", header):
        delay = float(header)
    body = outcome.body if isinstance(outcome.body, dict) else {}
    ra = body.get("retry_after")
    if delay is None and isinstance(ra, int | float) and not isinstance(ra, bool):
        delay = float(ra)
    if delay is None:
        m = re.search(r"~(\d{1,6})s", str(body.get("detail", ""))[:2000])
        delay = float(m[1]) if m else None
    if delay is None or not math.isfinite(delay) or delay < 0:
        delay = min(base * 2 ** min(attempt, 16), MAX_BACKOFF_S)
    return min(delay, MAX_RETRY_AFTER_S)


def _backoff(state: JobState, attempt: int) -> float:
    return min(_num(state, "retry_base_s", 1.0) * 2 ** min(attempt, 16), MAX_BACKOFF_S)


def _describe_body(outcome: ResponseReceived) -> str:
    """What an unusable answer was, in a few words (never the whole body)."""
    body = outcome.body
    ctype = _header(outcome, "content-type").split(";")[0].strip() or "no content type"
    if isinstance(body, dict):
        detail = body.get("detail") or body.get("title")
        if isinstance(detail, str) and detail:
            return detail[:300]
        return f"a JSON object that is not a prediction (keys: {', '.join(map(str, body))[:200]})"
    if isinstance(body, str):
        start = " ".join(body.split())[:60]
        return f"a {ctype} body, not JSON ({start!r}{'…' if len(body) > 60 else ''})"
    return f"a JSON {type(body).__name__}, not an object"


def _describe(outcome: Any) -> str:
    if isinstance(outcome, ResponseReceived):
        return f"HTTP {outcome.status}: {_describe_body(outcome)}"
    if isinstance(outcome, RequestFailed):
        return f"{outcome.error}: {outcome.message}"
    return "no answer recorded"


def _http_failure(state: JobState, outcome: ResponseReceived) -> Action:
    """A create answered with an error that says nothing was created."""
    status = outcome.status
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
                    f"Replicate: out of credit ({_describe_body(outcome)})",
                    Failure.OUT_OF_CREDIT,
                ),
            )
        )
    if status == 422:
        body = outcome.body if isinstance(outcome.body, dict) else {}
        fields_ = body.get("invalid_fields")
        fields = "; ".join(
            f"{f.get('field')}: {f.get('description')}"
            for f in (fields_ if isinstance(fields_, list) else [])
            if isinstance(f, dict)
        )
        return Record(
            (
                JobFailed(
                    "invalid_input",
                    f"Replicate rejected the input: {fields or _describe_body(outcome)}",
                    Failure.INVALID_INPUT,
                ),
            )
        )
    if status == 404:
        return Record(
            (
                JobFailed(
                    "not_found",
                    f"Replicate: not found ({_describe_body(outcome)}); check the model name",
                    Failure.NOT_FOUND,
                ),
            )
        )
    return Record(
        (
            JobFailed(
                "unexpected",
                f"Replicate answered HTTP {status}: {_describe_body(outcome)}",
                Failure.UNEXPECTED,
            ),
        )
    )


# -- where this process began -------------------------------------------------------------------


def run_start(state: JobState) -> int:
    """The version of the first claim by the process now driving the job (0 if none).

    Lease renewals re-append RunnerClaimed with the same pid and process start; a resume is a
    new process. Whatever was concluded before this version is re-learnt (polls are free)."""
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


def _after(state: JobState, kind: type, version: int) -> Recorded | None:
    """The last event of a kind recorded after `version`."""
    for rec in reversed(state.history):
        if rec.version <= version:
            return None
        if isinstance(rec.event, kind):
            return rec
    return None


def _snapshot(state: JobState) -> tuple[dict[str, Any], int] | None:
    """The latest prediction object for our remote id (from create, poll or cancel answers),
    with the version it was recorded at."""
    for rec in reversed(state.history):
        e = rec.event
        if isinstance(e, ResponseReceived) and e.status in (200, 201, 202):
            p = _prediction(e.body)
            if p is not None and p["id"] == state.remote_id:
                return p, rec.version
    return None


# -- the decision ---------------------------------------------------------------------------------


def decide(state: JobState) -> Action:
    req = state.request
    assert req is not None
    if state.finished:
        return Record(())  # the job has ended: nothing more to send or record
    found = _snapshot(state) if state.images else None
    if found is not None and next_image_index(state, len(_outputs(found[0]))) is None:
        snap = found[0]
        metrics = snap.get("metrics")
        return Record(
            (
                JobSucceeded(
                    {
                        "prediction_id": state.remote_id,
                        "metrics": metrics if isinstance(metrics, dict) else None,
                        "seed_used": _seed_from_logs(snap.get("logs")) or req.params.get("seed"),
                        "path": state.images[0].path,
                        "sha256": state.images[0].sha256,
                        "images": [i.path for i in state.images],
                        "outputs_returned": len(_outputs(snap)),
                    }
                ),
            )
        )
    if state.remote_id is None:
        if state.cancel is not None:
            return _cancel_before_accepted(state)
        return _submit(state)

    found = _snapshot(state)
    snap = found[0] if found else None
    status = snap.get("status") if snap else None
    if snap is not None and status == "succeeded":
        # Paid and finished: fetched whatever the clock says, and whatever a Ctrl-C asked (a
        # finished prediction cannot be cancelled; a second Ctrl-C stops the runner at once and
        # leaves the job resumable).
        return _download(state, snap)
    if snap is not None and status == "failed":
        error = snap.get("error")
        return Record(
            (
                JobFailed(
                    "prediction_failed",
                    f"Replicate: the prediction failed: {str(error)[:500] if error else 'no reason given'}",
                    Failure.GENERATION_FAILED,
                ),
            )
        )
    if snap is not None and status in ("canceled", "aborted"):
        if state.cancel is not None:
            return Record((JobCancelled(state.cancel.reason, remote_cancelled=True),))
        return Record(
            (
                JobFailed(
                    "prediction_canceled",
                    f"Replicate: the prediction was {status}"
                    + (" (deadline reached)" if snap.get("deadline") else ""),
                    Failure.GENERATION_FAILED,
                ),
            )
        )
    if state.cancel is not None:
        return _cancel(state)
    return _poll(state, found[1] if found else 0)


# -- creating, at most a few times ---------------------------------------------------------------


def _create_outcome(outcome: Any) -> str:
    """accepted | refused | throttled | rejected | unknown (the create may have been made)."""
    if outcome is None:
        return "unknown"
    if isinstance(outcome, RequestFailed):
        return "refused" if outcome.error == "refused" else "unknown"
    if outcome.status in (200, 201, 202):
        return "accepted" if _prediction(outcome.body) is not None else "unknown"
    if outcome.status == 429:
        return "throttled"
    if 400 <= outcome.status < 500:
        return "rejected"
    return "unknown"  # 5xx (a gateway may answer after the API created it), 1xx/3xx


def uncertain_creates(state: JobState) -> int:
    """Creates whose outcome was never known: each may have been paid. Counted over the job's
    whole history, across resumes."""
    return sum(1 for ex in exchanges(state, "create") if _create_outcome(ex.outcome) == "unknown")


def _submit(state: JobState) -> Action:
    creates = exchanges(state, "create")
    if not creates:
        return _create(state)
    last = creates[-1]
    if _after(state, ForceNewRequested, last.sent_at.version) is not None:
        return _create(state)  # the user accepted the risk of paying twice, once
    if pending_retry(state, "create") is not None:
        return _create(state, retry_time(state, "create"))
    kind = _create_outcome(last.outcome)
    if kind == "accepted":
        assert isinstance(last.outcome, ResponseReceived)
        body = last.outcome.body
        urls = body.get("urls")
        get = urls.get("get") if isinstance(urls, dict) else None
        return Record((RemoteJobAccepted(body["id"], url=get if isinstance(get, str) else ""),))
    if kind == "refused":  # the connection was refused: nothing was sent, a retry is safe
        if retries(state, "create", "refused") < 1:
            return Record(
                (RetryScheduled("create", 1, _backoff(state, 0), "refused: connection refused"),)
            )
        assert isinstance(last.outcome, RequestFailed)
        return Record(
            (
                JobFailed(
                    "unreachable",
                    f"cannot reach Replicate at {_base(state)}: {last.outcome.message}",
                    Failure.UNREACHABLE,
                ),
            )
        )
    if kind == "throttled":
        assert isinstance(last.outcome, ResponseReceived)
        n = retries(state, "create", "429")
        delay = _retry_after(last.outcome, n, _num(state, "retry_base_s", 1.0))
        assert state.now is not None
        if n < MAX_429_RETRIES and state.now + timedelta(seconds=delay) < _deadline(state):
            return Record((RetryScheduled("create", n + 1, delay, "429 rate limited"),))
        why = (
            f"after {n} retries"
            if n >= MAX_429_RETRIES
            else f"and asks to wait {delay:g} s, past the job's {_timeout(state):g} s timeout"
        )
        return Record(
            (
                JobFailed(
                    "rate_limited",
                    f"Replicate kept rate-limiting {why}: {_describe_body(last.outcome)}",
                    Failure.RATE_LIMITED,
                ),
            )
        )
    if kind == "rejected":
        assert isinstance(last.outcome, ResponseReceived)
        return _http_failure(state, last.outcome)
    return _after_unknown_create(state, last)


def _after_unknown_create(state: JobState, last: Exchange) -> Action:
    """The create may have made a prediction: look it up before creating again."""
    concluded = _after(state, LookupConcluded, last.sent_at.version)
    if concluded is not None and concluded.event.decision == "create":  # type: ignore[attr-defined]
        n = uncertain_creates(state)
        if n < MAX_UNCERTAIN_CREATES:
            return _create(state, iso(concluded.at + timedelta(seconds=_backoff(state, n - 1))))
        return Record(
            (
                JobFailed(
                    "unreachable",
                    f"Replicate never answered a create in {n} attempts "
                    f"(last: {_describe(last.outcome)}) and lists no prediction from them, "
                    "so nothing was paid",
                    Failure.UNREACHABLE,
                ),
            )
        )
    return _lookup(state, last, on_none=None)


def _round_start(state: JobState, create: Exchange) -> int:
    return max(create.sent_at.version, run_start(state))


def _lookup(state: JobState, create: Exchange, on_none: Action | None) -> Action:
    """List recent predictions and find the one this job's create made.

    The window is measured on Replicate's clock: the first page's Date header, minus the time
    that passed on our clock between the first create and this lookup (a duration, unaffected
    by an offset between the clocks), minus a margin. Candidates must echo our input exactly
    (the seed is chosen and recorded before any create, so inputs are unique) and not be held by
    another job.
    """
    start = _round_start(state, create)
    concluded = _after(state, LookupConcluded, start)
    if concluded is not None:
        decision = concluded.event.decision  # type: ignore[attr-defined]
        matches = concluded.event.matches  # type: ignore[attr-defined]
        if decision == "create" and on_none is not None:
            return on_none
        if decision == "ambiguous":
            return Halt(
                f"{len(matches)} predictions match this job's input ({', '.join(matches)}); "
                "imagen will not guess which one is yours: "
                f"`imagen resume {state.job_id} --force-new` creates a new one"
            )
        if decision == "refused":
            return Halt(
                "the listing of predictions links to another origin, which imagen does not "
                "follow with the token, so it cannot tell whether the create reached Replicate: "
                f"resume later, or `imagen resume {state.job_id} --force-new` to create a new "
                "prediction (possibly paying twice)"
            )
    pages = [ex for ex in exchanges(state, "lookup") if ex.sent_at.version > start]
    first_url = f"{_base(state)}/v1/predictions"
    if not pages:
        return _get(state, "lookup", first_url)
    last = pages[-1]
    if last.outcome is None or pending_retry(state, "lookup") is not None:
        return _get(state, "lookup", last.sent.url, retry_time(state, "lookup"))
    body = (
        last.outcome.body
        if isinstance(last.outcome, ResponseReceived) and last.outcome.status == 200
        else None
    )
    if not (isinstance(body, dict) and isinstance(body.get("results"), list)):
        failures = sum(
            1
            for ex in pages
            if not (isinstance(ex.outcome, ResponseReceived) and ex.outcome.status == 200)
            or not isinstance(getattr(ex.outcome, "body", None), dict)
        )
        if failures < 3:
            return Record(
                (
                    RetryScheduled(
                        "lookup",
                        failures,
                        _backoff(state, failures - 1),
                        f"lookup failed: {_describe(last.outcome)}"[:300],
                    ),
                )
            )
        return Halt(
            f"the create request may have reached Replicate but the lookup failed "
            f"({_describe(last.outcome)}); resume later, or `imagen resume {state.job_id} "
            "--force-new` to create a new prediction (possibly paying twice)"
        )
    answered = [ex for ex in pages if _listing(ex) is not None]
    cutoff = _cutoff(state, answered[0])
    candidates = _candidates(state, answered, cutoff)
    nxt = body.get("next")
    oldest = _oldest(body)
    more = isinstance(nxt, str) and nxt and (cutoff is None or oldest is None or oldest >= cutoff)
    if more:
        if not same_origin(nxt, _base(state)):
            return Record((LookupConcluded(candidates, "refused"),))
        if len(answered) < MAX_LOOKUP_PAGES:
            return _get(state, "lookup", nxt)
        if not candidates:
            return Halt(
                f"more than {MAX_LOOKUP_PAGES} pages of predictions since this job's create; "
                "imagen cannot tell whether it reached Replicate: "
                f"`imagen resume {state.job_id} --force-new` creates a new prediction"
            )
    if candidates:
        checked = _after(state, RemoteIdsHeld, start)
        if checked is None or set(candidates) - set(checked.event.checked):  # type: ignore[attr-defined]
            return CheckHeld(tuple(candidates))
        held = checked.event.held  # type: ignore[attr-defined]
        candidates = [c for c in candidates if c not in held]
    if len(candidates) == 1:
        return Record(
            (
                LookupConcluded(candidates, "adopt"),
                RemoteJobAccepted(candidates[0], via="lookup"),
            )
        )
    if len(candidates) > 1:
        return Record((LookupConcluded(candidates, "ambiguous"),))
    if on_none is not None:
        return on_none
    return Record((LookupConcluded([], "create"),))


def _listing(ex: Exchange) -> dict[str, Any] | None:
    o = ex.outcome
    if isinstance(o, ResponseReceived) and o.status == 200 and isinstance(o.body, dict):
        if isinstance(o.body.get("results"), list):
            return o.body
    return None


def _cutoff(state: JobState, first_page: Exchange) -> datetime | None:
    """The earliest created_at (Replicate's clock) a prediction of ours can have; None when the
    listing carried no usable Date header (then every page is searched, up to a bound)."""
    assert isinstance(first_page.outcome, ResponseReceived) and first_page.outcome_at is not None
    server_now = http_date(_header(first_page.outcome, "date"))
    if server_now is None:
        return None
    first_create = exchanges(state, "create")[0]
    elapsed = max(0.0, (first_page.sent_at.at - first_create.sent_at.at).total_seconds())
    return server_now - timedelta(seconds=elapsed + LOOKUP_MARGIN_S)


_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_HTTP_DATE = re.compile(
    r"(?:[A-Z][a-z]{2}, )?(\d{1,2}) ([A-Z][a-z]{2}) (\d{4}) (\d\d):(\d\d):(\d\d) GMT"
)


def http_date(text: str) -> datetime | None:
    """An HTTP Date (IMF-fixdate, RFC 9110 5.6.7), None when it is anything else. (email.utils
    would do, but it imports socket and random, which the pure core must not load.)"""
    m = _HTTP_DATE.fullmatch(text.strip())
    if not m or m[2] not in _MONTHS:
        return None
    try:
        return datetime(
            int(m[3]),
            _MONTHS.index(m[2]) + 1,
            int(m[1]),
            int(m[4]),
            int(m[5]),
            int(m[6]),
            tzinfo=UTC,
        )
    except ValueError:
        return None


def _created_at(p: dict[str, Any]) -> datetime | None:
    value = p.get("created_at")
    if not isinstance(value, str):
        return None
    m = re.fullmatch(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)", value)
    if not m:
        return None
    frac = (m[2] or "0")[:6].ljust(6, "0")
    try:
        moment = datetime.fromisoformat(f"{m[1]}.{frac}{'+00:00' if m[3] == 'Z' else m[3]}")
    except ValueError:
        return None
    return moment.astimezone(UTC)


def _oldest(body: dict[str, Any]) -> datetime | None:
    times = [
        t for p in body["results"] if isinstance(p, dict) and (t := _created_at(p)) is not None
    ]
    return min(times) if times else None


def _candidates(state: JobState, pages: list[Exchange], cutoff: datetime | None) -> list[str]:
    """Predictions in the pages whose echoed input is exactly what this job sent."""
    sent: dict[str, Any] = {}
    for ex in exchanges(state, "create"):
        if isinstance(ex.sent.body, dict) and isinstance(ex.sent.body.get("input"), dict):
            sent = ex.sent.body["input"]
    found: list[str] = []
    for ex in pages:
        listing = _listing(ex)
        for p in listing["results"] if listing else []:
            if (
                not isinstance(p, dict)
                or not isinstance(p.get("id"), str)
                or not _ID.match(p["id"])
            ):
                continue
            inp = p.get("input")
            if not isinstance(inp, dict) or any(
                k not in inp or inp[k] != v for k, v in sent.items()
            ):
                continue
            created = _created_at(p)
            if cutoff is not None and created is not None and created < cutoff:
                continue
            if p["id"] not in found:
                found.append(p["id"])
    return found


# -- waiting for the prediction --------------------------------------------------------------------


def _poll_ok(ex: Exchange, remote_id: str | None) -> bool:
    o = ex.outcome
    if not isinstance(o, ResponseReceived) or o.status != 200:
        return False
    p = _prediction(o.body)
    return p is not None and p["id"] == remote_id


def _poll(state: JobState, seen_at: int) -> Action:
    """Polls are free and safe to repeat: keep polling with backoff until the deadline. A failure
    never fails the job (the prediction is paid and may finish); past the deadline a run gives
    up after a few tries and leaves the job resumable."""
    assert state.now is not None
    url = f"{_base(state)}/v1/predictions/{state.remote_id}"
    start = run_start(state)
    polls = exchanges(state, "poll")
    last = polls[-1] if polls else None
    if pending_retry(state, "poll") is not None:
        return _get(state, "poll", url, retry_time(state, "poll"))
    if last is not None and last.outcome is None:
        return _get(state, "poll", url)  # died while polling: ask again
    if seen_at <= start and (last is None or last.sent_at.version <= start):
        return _get(state, "poll", url)  # this process has not seen the prediction yet: look first
    if last is not None and last.sent_at.version > seen_at and not _poll_ok(last, state.remote_id):
        return _poll_failed(state, polls, start)
    interval = max(0.05, _num(state, "poll_interval_s", 0.5))
    next_at = state.now + timedelta(seconds=interval)
    if next_at >= _deadline(state):
        return Record((CancelRequested("timeout"),))
    return _get(state, "poll", url, iso(next_at))


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
            f"set {_token_env(state)} to the token that created it"
            if o.status in (401, 403)
            else "check base_url and the token's account"
        )
        return Halt(
            f"Replicate answered HTTP {o.status} about prediction {state.remote_id} "
            f"({_describe_body(o)}); it is paid and may have finished: {fix}, then "
            f"`imagen resume {state.job_id}`",
            Failure.UNAUTHORIZED if o.status in (401, 403) else Failure.NOT_FOUND,
        )
    delay = (
        _retry_after(o, failed - 1, _num(state, "retry_base_s", 1.0))
        if isinstance(o, ResponseReceived) and o.status == 429
        else _backoff(state, failed - 1)
    )
    before_deadline = state.now + timedelta(seconds=delay) < _deadline(state)
    # Past the deadline a run tries a few more times, briefly; a server asking for a long wait
    # (Retry-After: 86400) gets a resumable stop instead.
    if before_deadline or (this_run < RETRIES_PER_RUN and delay <= PAST_DEADLINE_MAX_WAIT_S):
        return Record((RetryScheduled("poll", failed, delay, f"poll: {_describe(o)}"[:300]),))
    return Halt(
        f"lost Replicate while waiting for prediction {state.remote_id} ({_describe(o)}); "
        f"it is paid and may still finish: `imagen resume {state.job_id}` once Replicate is "
        "reachable",
        Failure.UNREACHABLE,
    )


# -- cancelling -------------------------------------------------------------------------------


def _cancel(state: JobState) -> Action:
    """Stop a running prediction (so billing stops). A cancel reply that says the prediction
    succeeded is handled by decide as any other snapshot: it is downloaded."""
    assert state.cancel is not None
    cancel_at = state.last(CancelRequested)
    assert cancel_at is not None
    cancels = [ex for ex in exchanges(state, "cancel") if ex.sent_at.version > cancel_at.version]
    url = f"{_base(state)}/v1/predictions/{state.remote_id}/cancel"
    request = HttpRequest(
        request_id(state, "cancel"),
        "cancel",
        "POST",
        url,
        timeout_s=15,
        auth_env=_token_env(state),
    )
    if not cancels or pending_retry(state, "cancel") is not None:
        return request
    last = cancels[-1]
    if last.outcome is None:
        return request  # died mid-cancel; cancelling again is harmless
    if isinstance(last.outcome, ResponseReceived) and last.outcome.status == 200:
        # Accepted but not terminal yet (a real cancel answers `canceled` at once).
        return Record((JobCancelled(state.cancel.reason, remote_cancelled=True),))
    if len(cancels) < 2:
        return Record(
            (RetryScheduled("cancel", 1, 0.2, f"cancel: {_describe(last.outcome)}"[:300]),)
        )
    if state.cancel.reason == "user":
        return Record((JobCancelled("user", remote_cancelled=False),))
    return Halt(
        f"could not cancel prediction {state.remote_id} at the deadline "
        f"({_describe(last.outcome)}); it may still finish and is paid: "
        f"`imagen resume {state.job_id}` fetches it or cancels it",
        Failure.UNREACHABLE,
    )


def _cancel_before_accepted(state: JobState) -> Action:
    """Cancelled before Replicate confirmed a prediction: if a create may have made one, find it
    (to cancel it, or to download it if it already finished)."""
    assert state.cancel is not None
    creates = exchanges(state, "create")
    giving_up = Record((JobCancelled(state.cancel.reason, remote_cancelled=False),))
    if creates and _create_outcome(creates[-1].outcome) == "accepted":
        # The create was answered but the cancel came before the answer was taken in: take it
        # in (RemoteJobAccepted), so the prediction is cancelled rather than left running.
        return _submit(state)
    if not creates or _create_outcome(creates[-1].outcome) != "unknown":
        return giving_up
    decided = _lookup(state, creates[-1], on_none=giving_up)
    if isinstance(decided, Halt):
        return giving_up
    return decided


# -- downloading ------------------------------------------------------------------------------


def _outputs(prediction: dict[str, Any]) -> list[str]:
    output = prediction.get("output")
    items = output if isinstance(output, list) else [output]
    return [o for o in items if isinstance(o, str) and o]


LOCAL_ERRORS = ("write", "exists")


def _download(state: JobState, snap: dict[str, Any]) -> Action:
    req = state.request
    assert req is not None
    urls = _outputs(snap)
    if not urls or snap.get("data_removed") is True:
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
    index = next_image_index(state, len(urls))
    if index is None:  # every output is on disk (decide succeeds first; kept for safety)
        index = len(urls) - 1
    url = urls[index]
    if not url.startswith("data:") and origin(url) is None:
        return Record(
            (
                JobFailed(
                    "unexpected",
                    f"Replicate gave an output imagen will not fetch: {url[:200]!r} "
                    "(only http(s) URLs without credentials and data: URIs)",
                    Failure.UNEXPECTED,
                ),
            )
        )
    max_mb = _num(state, "max_image_mb", 64)
    store = StoreImage(
        request_id(state, "download"),
        url,
        image_path(req.output_path, index),
        expected_format=req.params.get("output_format"),
        max_bytes=int((max_mb if max_mb > 0 else 64) * 1024 * 1024),
        overwrite=req.overwrite,
        timeout_s=60,
        auth_env=_token_env(state) if same_origin(url, _base(state)) else None,
        index=index,
    )
    downloads = current_downloads(state)  # this image's attempts (each image retried alone)
    if not downloads or pending_retry(state, "download") is not None:
        return store
    last = downloads[-1]
    o = last.outcome
    if o is None or last.sent_at.version <= run_start(state):
        return store  # died mid-download, or a new run after a failure: downloading is free
    if isinstance(o, ResponseReceived) and o.status in (404, 410):
        return Record(
            (
                JobFailed(
                    "output_deleted",
                    f"Replicate no longer serves the output (HTTP {o.status}); "
                    "API outputs are kept about an hour; the prediction was still paid for",
                    Failure.OUTPUT_LOST,
                ),
            )
        )
    if isinstance(o, RequestFailed) and o.error in LOCAL_ERRORS:
        # Paid; the image is at the URL recorded in the prediction while Replicate keeps it.
        fix = "move it away" if o.error == "exists" else "fix that"
        return Halt(
            f"the prediction is paid but its image cannot be saved: {o.message}; {fix}, then "
            f"`imagen resume {state.job_id}` (Replicate keeps outputs about an hour)",
        )
    tries = sum(1 for ex in downloads if ex.sent_at.version > run_start(state))
    if isinstance(o, RequestFailed) and o.error in ("invalid_image", "too_large"):
        if tries < 2:
            return Record((RetryScheduled("download", 1, 0.2, f"download: {_describe(o)}"[:300]),))
        return Record(
            (
                JobFailed(
                    "download_failed",
                    f"could not download the image: {_describe(o)}",
                    Failure.DOWNLOAD_FAILED,
                ),
            )
        )
    if tries <= RETRIES_PER_RUN:
        return Record(
            (
                RetryScheduled(
                    "download", tries, _backoff(state, tries - 1), f"download: {_describe(o)}"[:300]
                ),
            )
        )
    return Halt(
        f"could not download the image ({_describe(o)}); the prediction is paid: "
        f"`imagen resume {state.job_id}` tries again (Replicate keeps outputs about an hour)",
        Failure.UNREACHABLE,
    )


def _seed_from_logs(logs: Any) -> int | None:
    m = re.search(r"Using seed: (\d{1,19})", logs[:100_000]) if isinstance(logs, str) else None
    return int(m[1]) if m else None


_FIRST_CLASS = {
    "seed": "seed",
    "num_inference_steps": "steps",
    "steps": "steps",
    "output_format": "output_format",
    "aspect_ratio": "aspect_ratio",
    "megapixels": "megapixels",
    "num_outputs": "count",
    "prompt": None,
}


def sent_inputs(state: JobState) -> dict[str, Any]:
    """The inputs of the last create, as Replicate received them (for sidecars and usage)."""
    creates = exchanges(state, "create")
    body = creates[-1].sent.body if creates else None
    inp = body.get("input") if isinstance(body, dict) else None
    if not isinstance(inp, dict):
        return {}
    out: dict[str, Any] = {"extra": {}}
    for key, value in inp.items():
        name = _FIRST_CLASS.get(key, "")
        if name == "":
            out["extra"][key] = value
        elif name:
            out[name] = value
    return out
