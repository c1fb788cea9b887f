"""A trivial adapter that proves the job contract end to end: a test adapter, not a product.

One GET to `url` whose JSON answer is `{"image": <URL or data: URI>}`; one retry on a
network error or 5xx; then the image is stored and the job succeeds. It is registered only by
the tests: in-process by the pytest plugin tests/support/echo.py, in CLI subprocesses by
`python -m tests.support.imagen_cli` (see `register`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode

from imagen.backends.common import (
    configured_model,
    exchanges,
    last_exchange,
    no_checks,
    no_stream,
    nothing_missing,
    pending_retry,
    request_id,
    retries,
)
from imagen.backends.contract import Option
from imagen.core.actions import Action, HttpRequest, Record, StoreImage
from imagen.core.events import (
    JobCancelled,
    JobFailed,
    JobSucceeded,
    ResponseReceived,
    RetryScheduled,
)
from imagen.core.failures import Failure
from imagen.core.inputs import BadInput, GenerateInputs
from imagen.core.job import JobState

CONFIG: dict[str, Option] = {
    "url": Option((str,), help="the echo server's render URL", url=True),
    "token_env": Option((str,), help="env var with a bearer token to send"),
}
DEFAULT_MODEL = "echo"
FILE_OPTIONS: tuple[str, ...] = ()
RECORDED_HEADERS = frozenset({"content-type"})
interpret_frame = no_stream
describe_model = configured_model
check_requests = no_checks
check_verdict = nothing_missing


def register() -> None:
    from imagen import backends

    backends.register("echo", __name__)


def decide(state: JobState) -> Action:
    req = state.request
    assert req is not None
    if state.finished:
        return Record(())  # the job has ended: nothing more to send or record
    if state.image is not None:
        return Record((JobSucceeded({"path": state.image.path, "sha256": state.image.sha256}),))
    rendered = last_exchange(state, "render")
    in_hand = (
        rendered is not None
        and isinstance(rendered.outcome, ResponseReceived)
        and rendered.outcome.status == 200
    )
    if state.cancel is not None and not in_hand:  # once the image is made, keep it
        return Record((JobCancelled(state.cancel.reason),))
    query = urlencode(
        {"seed": req.params["seed"], "w": req.params["width"], "h": req.params["height"]}
    )
    send = HttpRequest(
        request_id(state, "render"),
        "render",
        "GET",
        f"{req.backend_config['url']}?{query}",
        timeout_s=5,
        auth_env=req.backend_config.get("token_env"),
    )
    renders = exchanges(state, "render")
    if not renders or pending_retry(state, "render") is not None:
        return send
    last = renders[-1]
    if last.outcome is None:
        return send  # sent, never answered (the process died): rendering is free, ask again
    if isinstance(last.outcome, ResponseReceived) and last.outcome.status == 200:
        body = last.outcome.body
        if not isinstance(body, dict) or not isinstance(body.get("image"), str):
            # A hostile or broken server's 200 (the runner records any body it cannot hold
            # as text): a failed render, never a crash.
            return Record(
                (
                    JobFailed(
                        "render", "render answered without an image", Failure.GENERATION_FAILED
                    ),
                )
            )
        download = last_exchange(state, "download")
        if download is not None and download.outcome is not None:
            return Record(
                (
                    JobFailed(
                        "download",
                        f"download failed: {_describe(download.outcome)}",
                        Failure.DOWNLOAD_FAILED,
                    ),
                )
            )
        return StoreImage(
            request_id(state, "download"),
            body["image"],
            req.output_path,
            overwrite=req.overwrite,
        )
    if _retryable(last.outcome) and retries(state, "render") == 0:
        return Record((RetryScheduled("render", 1, 0.0, "transient"),))
    return Record(
        (
            JobFailed(
                "render", f"render failed: {_describe(last.outcome)}", Failure.GENERATION_FAILED
            ),
        )
    )


def _retryable(outcome: object) -> bool:
    return not isinstance(outcome, ResponseReceived) or outcome.status >= 500


def _describe(outcome: object) -> str:
    if isinstance(outcome, ResponseReceived):
        return f"HTTP {outcome.status}"
    return f"{outcome.error}: {outcome.message}"  # type: ignore[attr-defined]


def normalise(inputs: GenerateInputs, options: Mapping[str, Any]) -> dict[str, Any]:
    if inputs.aspect:
        raise BadInput(f"--aspect {inputs.aspect!r}: the echo backend takes --size only")
    if (inputs.output_format or "png") != "png":
        raise BadInput(f"output format {inputs.output_format!r}: the echo backend makes png")
    if inputs.steps is not None and not 1 <= inputs.steps <= 100:
        raise BadInput(f"--steps {inputs.steps}: use 1 to 100")
    width, height = inputs.size or (64, 64)
    if inputs.count != 1:
        raise BadInput(f"--per-job {inputs.count}: the echo backend makes one image")
    return {
        "seed": inputs.seed,
        "width": width,
        "height": height,
        "steps": inputs.steps,
        "output_format": "png",
        "extra": dict(inputs.extra),
    }


def status(options: Mapping[str, Any], env: Mapping[str, str]) -> str:
    token_env = options.get("token_env")
    return f"not configured (set {token_env})" if token_env and not env.get(token_env) else "ok"


def validate_request(params: Mapping[str, Any], options: Mapping[str, Any]) -> None:
    """Nothing to check beyond normalise."""


def probe_request(options: Mapping[str, Any]) -> tuple[str, str, str | None]:
    return ("GET", str(options.get("url", "")), options.get("token_env"))


def probe_verdict(status_code: int, body: Any) -> str:
    if status_code == 200 and isinstance(body, dict) and "image" in body:
        return "ok (echo server)"
    return f"unexpected answer: HTTP {status_code}"


def sent_inputs(state: JobState) -> dict[str, Any]:
    return {}
