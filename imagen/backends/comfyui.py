"""ComfyUI adapter (pure): FLUX.1 schnell on a local (or proxied) ComfyUI server."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from imagen.backends.common import (
    config_of,
    exchanges,
    pending_retry,
    request_id,
    retries,
    retry_time,
)
from imagen.backends.contract import Option
from imagen.core.actions import Action, FollowStream, HttpRequest, OpenStream, Record, StoreImage
from imagen.core.events import (
    CancelRequested,
    JobCancelled,
    JobFailed,
    JobSucceeded,
    LookupConcluded,
    RemoteJobAccepted,
    RequestFailed,
    ResponseReceived,
    RetryScheduled,
    RunnerClaimed,
    StreamClosed,
    StreamMessage,
    StreamOpened,
)
from imagen.core.failures import Failure
from imagen.core.inputs import BadInput, GenerateInputs
from imagen.core.job import JobState, Recorded, iso

DEFAULT_MODEL = "flux1-schnell-fp8.safetensors"
DEFAULT_URL = "http://127.0.0.1:8188"

CONFIG: dict[str, Option] = {
    "url": Option((str,), DEFAULT_URL, "ComfyUI base URL", url=True),
    "unet": Option((str,), DEFAULT_MODEL, "diffusion model file (models/unet)"),
    "clip_l": Option((str,), "clip_l.safetensors", "CLIP-L text encoder (models/clip)"),
    "t5xxl": Option((str,), "t5xxl_fp8_e4m3fn.safetensors", "T5-XXL text encoder (models/clip)"),
    "vae": Option((str,), "ae.safetensors", "VAE file (models/vae)"),
    "sampler": Option((str,), "euler", "KSampler sampler_name"),
    "scheduler": Option((str,), "simple", "KSampler scheduler"),
    "token_env": Option((str,), None, "env var with a bearer token for an auth proxy"),
    "workflow": Option((str,), None, "your own API-format workflow JSON with placeholders"),
    "unreachable_hint": Option(
        (str,),
        "is ComfyUI running? see docs/setup-comfyui.md",
        "what to tell the user when the server cannot be reached",
    ),
    "poll_interval_s": Option(
        (float, int), 0.5, "seconds between /history polls (fallback)", positive=True
    ),
    "retry_base_s": Option(
        (float, int), 0.5, "delay before the one retry on 5xx/network", minimum=0
    ),
}
# Files named by these options are read by the shell and stored in the job request as
# `<key>_content`, so a resumed job runs the same graph even if the file changed.
FILE_OPTIONS: tuple[str, ...] = ("workflow",)
RECORDED_HEADERS = frozenset({"content-type", "content-length"})

ASPECTS = {
    "1:1": (1024, 1024),
    "16:9": (1344, 768),
    "3:2": (1216, 832),
    "2:3": (832, 1216),
    "4:3": (1152, 896),
    "3:4": (896, 1152),
    "9:16": (768, 1344),
    "21:9": (1536, 640),
}


def normalise(inputs: GenerateInputs, options: Mapping[str, Any]) -> dict[str, Any]:
    if inputs.aspect:
        if inputs.aspect not in ASPECTS:
            raise BadInput(f"--aspect {inputs.aspect!r}: use one of {', '.join(ASPECTS)} or --size")
        width, height = ASPECTS[inputs.aspect]
    else:
        width, height = inputs.size or (1024, 1024)
    if width % 16 or height % 16:
        raise BadInput(
            f"--size {width}x{height}: FLUX needs multiples of 16, e.g. "
            f"{round(width / 16) * 16}x{round(height / 16) * 16}"
        )
    fmt = inputs.output_format or "png"
    if fmt != "png":
        raise BadInput(f"output format {fmt!r}: ComfyUI's SaveImage writes png only")
    steps = inputs.steps or options.get("default_steps") or 4
    if not 1 <= steps <= 100:
        raise BadInput(f"--steps {steps}: use 1 to 100")
    return {
        "seed": inputs.seed,
        "width": width,
        "height": height,
        "steps": steps,
        "output_format": "png",
        "aspect_ratio": inputs.aspect,
        "extra": dict(inputs.extra),
        "timeout_s": float(options.get("timeout_s") or 300.0),
    }


def status(options: Mapping[str, Any], env: Mapping[str, str]) -> str:
    token_env = options.get("token_env")
    if token_env and not env.get(token_env):
        return f"not configured (set {token_env})"
    return "ok"


def probe_request(options: Mapping[str, Any]) -> tuple[str, str, str | None]:
    return (
        "GET",
        f"{str(options.get('url') or DEFAULT_URL).rstrip('/')}/system_stats",
        options.get("token_env"),
    )


def probe_verdict(status_code: int, body: Any) -> str:
    if status_code == 200 and isinstance(body, dict):
        devices = body.get("devices") or [{}]
        version = (body.get("system") or {}).get("comfyui_version", "?")
        return f"ok (ComfyUI {version}, {devices[0].get('name', 'unknown device')})"
    if status_code in (401, 403):
        return "rejected by the proxy (check token_env)"
    return f"unexpected answer: HTTP {status_code}"


# -- the graph -------------------------------------------------------------------------------

MISSING_MODEL_NODES = {
    "UNETLoader",
    "DualCLIPLoader",
    "VAELoader",
    "CheckpointLoaderSimple",
    "CLIPLoader",
    "UnetLoaderGGUF",
}
SETUP_DOC = "docs/setup-comfyui.md"


def flux_schnell_graph(
    prompt: str, params: Mapping[str, Any], cfg: Mapping[str, Any], prefix: str
) -> dict[str, Any]:
    """The canonical FLUX.1 schnell API-format workflow (separate UNET, CLIP and VAE files)."""
    w, h = params["width"], params["height"]
    return {
        "1": {
            "class_type": "UNETLoader",
            "inputs": {"unet_name": cfg.get("unet") or DEFAULT_MODEL, "weight_dtype": "default"},
        },
        "2": {
            "class_type": "DualCLIPLoader",
            "inputs": {
                "clip_name1": cfg.get("t5xxl") or "t5xxl_fp8_e4m3fn.safetensors",
                "clip_name2": cfg.get("clip_l") or "clip_l.safetensors",
                "type": "flux",
            },
        },
        "3": {
            "class_type": "VAELoader",
            "inputs": {"vae_name": cfg.get("vae") or "ae.safetensors"},
        },
        "4": {"class_type": "CLIPTextEncode", "inputs": {"text": prompt, "clip": ["2", 0]}},
        "5": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["2", 0]}},
        "6": {
            "class_type": "EmptySD3LatentImage",
            "inputs": {"width": w, "height": h, "batch_size": 1},
        },
        "7": {
            "class_type": "ModelSamplingFlux",
            "inputs": {
                "model": ["1", 0],
                "max_shift": 1.15,
                "base_shift": 0.5,
                "width": w,
                "height": h,
            },
        },
        "8": {
            "class_type": "KSampler",
            "inputs": {
                "model": ["7", 0],
                "seed": params["seed"],
                "steps": params["steps"],
                "cfg": 1.0,
                "sampler_name": cfg.get("sampler") or "euler",
                "scheduler": cfg.get("scheduler") or "simple",
                "positive": ["4", 0],
                "negative": ["5", 0],
                "latent_image": ["6", 0],
                "denoise": 1.0,
            },
        },
        "9": {"class_type": "VAEDecode", "inputs": {"samples": ["8", 0], "vae": ["3", 0]}},
        "10": {
            "class_type": "SaveImage",
            "inputs": {"images": ["9", 0], "filename_prefix": prefix},
        },
    }


def custom_graph(
    text: str, prompt: str, params: Mapping[str, Any], cfg: Mapping[str, Any], prefix: str
) -> dict[str, Any]:
    """A user's API-format workflow with {{prompt}} {{seed}} {{steps}} {{width}} {{height}}
    {{sampler}} {{scheduler}} placeholders. A string that is exactly one placeholder takes the
    value's own type (numbers stay numbers); SaveImage nodes get the job's filename_prefix."""
    values = {
        "prompt": prompt,
        "seed": params["seed"],
        "steps": params["steps"],
        "width": params["width"],
        "height": params["height"],
        "sampler": cfg.get("sampler") or "euler",
        "scheduler": cfg.get("scheduler") or "simple",
    }

    def fill(v: Any) -> Any:
        if isinstance(v, str):
            m = re.fullmatch(r"\{\{(\w+)\}\}", v)
            if m and m[1] in values:
                return values[m[1]]
            return re.sub(r"\{\{(\w+)\}\}", lambda k: str(values.get(k[1], k[0])), v)
        if isinstance(v, dict):
            return {k: fill(x) for k, x in v.items()}
        if isinstance(v, list):
            return [fill(x) for x in v]
        return v

    graph = fill(json.loads(text))
    for node in graph.values():
        if isinstance(node, dict) and node.get("class_type") == "SaveImage":
            node.setdefault("inputs", {})["filename_prefix"] = prefix
    return graph


def validate_request(params: Mapping[str, Any], options: Mapping[str, Any]) -> None:
    """Check a custom workflow before anything is recorded."""
    text = options.get("workflow_content")
    if text is None:
        return
    try:
        graph = custom_graph(text, "x", params, options, "p")
    except ValueError as exc:
        raise BadInput(f"workflow {options.get('workflow')}: not valid JSON: {exc}") from None
    if not isinstance(graph, dict) or not any(
        isinstance(n, dict) and n.get("class_type") == "SaveImage" for n in graph.values()
    ):
        raise BadInput(
            f"workflow {options.get('workflow')}: an API-format graph with a SaveImage node "
            "is needed (ComfyUI: Workflow > Export (API))"
        )


# -- the state machine -----------------------------------------------------------------------

_NS = uuid.UUID("6b1f3c52-6a43-4c55-9d1c-3f0c2a7e9a10")


def _url(state: JobState) -> str:
    return str(config_of(state).get("url") or DEFAULT_URL).rstrip("/")


def prompt_id(state: JobState) -> str:
    """Chosen by imagen, deterministic per job and submission, recorded before POST /prompt."""
    n = len(exchanges(state, "prompt")) - (1 if _pending_prompt(state) else 0)
    return str(uuid.uuid5(_NS, f"{state.job_id}:{max(n, 0)}"))


def client_id(state: JobState) -> str:
    """One websocket client per process driving the job."""
    claim = state.last(RunnerClaimed)
    return str(uuid.uuid5(_NS, f"{state.job_id}:client:{claim.version if claim else 0}"))


def _pending_prompt(state: JobState) -> bool:
    p = exchanges(state, "prompt")
    return bool(p) and p[-1].outcome is None


def _submitted_id(state: JobState) -> str | None:
    p = exchanges(state, "prompt")
    return p[-1].sent.body.get("prompt_id") if p and isinstance(p[-1].sent.body, dict) else None


def _prefix(state: JobState) -> str:
    return f"imagen/{state.job_id}"


def _graph(state: JobState) -> dict[str, Any]:
    req = state.request
    assert req is not None
    cfg = config_of(state)
    if cfg.get("workflow_content"):
        return custom_graph(cfg["workflow_content"], req.prompt, req.params, cfg, _prefix(state))
    return flux_schnell_graph(req.prompt, req.params, cfg, _prefix(state))


def _req(
    state: JobState,
    purpose: str,
    method: str,
    path: str,
    body: Any = None,
    not_before: str | None = None,
    timeout_s: float = 10,
) -> HttpRequest:
    return HttpRequest(
        request_id(state, purpose),
        purpose,
        method,
        f"{_url(state)}{path}",
        json_body=body,
        timeout_s=timeout_s,
        auth_env=config_of(state).get("token_env"),
        not_before=not_before,
    )


def _unreachable(state: JobState, outcome: RequestFailed) -> Record:
    hint = config_of(state).get("unreachable_hint") or "is ComfyUI running?"
    return Record(
        (
            JobFailed(
                "unreachable",
                f"cannot reach ComfyUI at {_url(state)} ({outcome.error}: "
                f"{outcome.message}); {hint}",
                Failure.UNREACHABLE,
            ),
        )
    )


def _validation_failure(body: Any) -> Record:
    body = body if isinstance(body, dict) else {}
    node_errors = body.get("node_errors") or {}
    missing: list[str] = []
    other: list[str] = []
    for node in node_errors.values():
        for err in node.get("errors", []):
            line = f"{node.get('class_type')}: {err.get('message')}: {err.get('details')}"
            if (
                err.get("type") == "value_not_in_list"
                and node.get("class_type") in MISSING_MODEL_NODES
            ):
                info = err.get("extra_info") or {}
                missing.append(
                    f"{info.get('received_value') or err.get('details')} "
                    f"({node.get('class_type')}.{info.get('input_name')})"
                )
            else:
                other.append(line)
    if missing:
        return Record(
            (
                JobFailed(
                    "models_missing",
                    "ComfyUI is missing model files: "
                    + ", ".join(missing)
                    + f"; see {SETUP_DOC} for what to download and where it goes",
                    Failure.MODELS_MISSING,
                ),
            )
        )
    error = body.get("error") or {}
    detail = (
        "; ".join(other)
        or (error.get("message") if isinstance(error, dict) else str(error))
        or str(body)[:300]
    )
    return Record(
        (
            JobFailed(
                "invalid_workflow",
                f"ComfyUI rejected the workflow: {detail}",
                Failure.INVALID_INPUT,
            ),
        )
    )


def _stream_state(state: JobState) -> str:
    """'open' | 'failed' | 'closed' | 'none' for this process's websocket."""
    floor = state.last(RunnerClaimed).version if state.last(RunnerClaimed) else 0  # type: ignore[union-attr]
    result = "none"
    for rec in state.history:
        if rec.version <= floor:
            continue
        e = rec.event
        if isinstance(e, StreamOpened):
            result = "open"
        elif isinstance(e, StreamClosed):
            result = "closed"
        elif isinstance(e, RequestFailed) and e.purpose == "stream":
            result = "failed"
    return result


def _stream_end(state: JobState, pid: str) -> Recorded | None:
    for rec in reversed(state.history):
        e = rec.event
        if (
            isinstance(e, StreamMessage)
            and e.data.get("prompt_id") == pid
            and e.kind in TERMINAL_KINDS
        ):
            return rec
    return None


TERMINAL_KINDS = ("execution_success", "execution_error", "execution_interrupted")


def decide(state: JobState) -> Action:
    req = state.request
    assert req is not None
    if state.image is not None:
        return Record((JobSucceeded(_result(state)),))
    if state.cancel is not None:
        return _cancel(state)

    if state.remote_id is None:
        stream = _stream_state(state)
        if stream == "none" and not exchanges(state, "prompt"):
            return OpenStream(
                f"{_url(state).replace('http', 'ws', 1)}/ws?clientId={client_id(state)}",
                client_id(state),
                auth_env=config_of(state).get("token_env"),
            )
        return _submit(state)

    pid = state.remote_id
    history = _history_result(state, pid)
    if history is not None:
        return history
    deadline = state.started_at + timedelta(seconds=float(req.params.get("timeout_s") or 300))  # type: ignore[operator]
    end_rec = _stream_end(state, pid)
    if end_rec is not None:
        end: StreamMessage = end_rec.event  # type: ignore[assignment]
        if end.kind == "execution_error":
            return Record(
                (
                    JobFailed(
                        "execution_error",
                        f"ComfyUI: {end.data.get('node_type')} failed: "
                        f"{str(end.data.get('exception_message', '')).strip()}",
                        Failure.GENERATION_FAILED,
                    ),
                )
            )
        if end.kind == "execution_interrupted":
            return Record(
                (
                    JobFailed(
                        "interrupted",
                        "ComfyUI interrupted the prompt (another client "
                        "or the server's interrupt button)",
                        Failure.GENERATION_FAILED,
                    ),
                )
            )
        polled_since = any(
            ex.sent_at.version > end_rec.version for ex in exchanges(state, "history")
        )
        return _poll_history(state, pid, immediate=not polled_since, deadline=deadline)
    if not exchanges(state, "system_stats"):
        return _req(state, "system_stats", "GET", "/system_stats", timeout_s=3)
    if _stream_state(state) == "open":
        return FollowStream(
            "prompt_id",
            pid,
            "progress",
            TERMINAL_KINDS,
            notable_kinds=("execution_start", "execution_cached"),
            deadline=iso(deadline),
        )
    return _poll_history(state, pid, immediate=False, deadline=deadline)


def _submit(state: JobState) -> Action:
    prompts = exchanges(state, "prompt")
    body = {"prompt": _graph(state), "client_id": client_id(state), "prompt_id": prompt_id(state)}
    post = _req(state, "prompt", "POST", "/prompt", body, timeout_s=30)
    if not prompts:
        return post
    last = prompts[-1]
    if pending_retry(state, "prompt") is not None:
        return _req(state, "prompt", "POST", "/prompt", body, retry_time(state, "prompt"), 30)
    sent_id = _submitted_id(state)
    if last.outcome is None or (
        isinstance(last.outcome, RequestFailed) and last.outcome.error != "refused"
    ):
        # It may have been queued: look the id up instead of submitting again.
        found = _lookup(state, sent_id)
        if found is not None:
            return found
        return Record(
            (
                LookupConcluded([], "create"),
                RetryScheduled("prompt", 1, 0.0, "not found on the server"),
            )
        )
    o = last.outcome
    if isinstance(o, ResponseReceived):
        if o.status == 200 and isinstance(o.body, dict) and not o.body.get("node_errors"):
            return Record((RemoteJobAccepted(str(o.body.get("prompt_id") or sent_id)),))
        if o.status in (200, 400):
            return _validation_failure(o.body)
        if o.status >= 500:
            # A proxy may answer 5xx after ComfyUI queued the prompt: look before posting again.
            found = _lookup(state, sent_id)
            if found is not None:
                return found
        if o.status >= 500 and retries(state, "prompt", "5xx") < 1:
            return Record(
                (
                    RetryScheduled(
                        "prompt",
                        1,
                        float(config_of(state).get("retry_base_s") or 0.5),
                        f"5xx HTTP {o.status}",
                    ),
                )
            )
        if o.status in (401, 403):
            return Record(
                (
                    JobFailed(
                        "unauthorized",
                        f"ComfyUI (or its proxy) refused the request: HTTP {o.status}; "
                        "check the backend's token_env",
                        Failure.UNAUTHORIZED,
                    ),
                )
            )
        return Record(
            (
                JobFailed(
                    "server_error",
                    f"ComfyUI answered HTTP {o.status} to /prompt: {str(o.body)[:300]}",
                    Failure.SERVER_ERROR,
                ),
            )
        )
    if retries(state, "prompt", "network") < 1:
        return Record(
            (
                RetryScheduled(
                    "prompt",
                    1,
                    float(config_of(state).get("retry_base_s") or 0.5),
                    f"network: {o.error}",
                ),
            )
        )
    return _unreachable(state, o)


def _lookup(state: JobState, pid: str | None) -> Action | None:
    """Find a prompt we may have queued: /history first (finished), then /queue."""
    if pid is None:
        return None
    floor = exchanges(state, "prompt")[-1].sent_at.version
    looked = [ex for ex in exchanges(state, "lookup") if ex.sent_at.version > floor]
    if not looked:
        return _req(state, "lookup", "GET", f"/history/{pid}")
    if len(looked) == 1:
        o = looked[0].outcome
        if (
            isinstance(o, ResponseReceived)
            and o.status == 200
            and isinstance(o.body, dict)
            and pid in o.body
        ):
            return Record((LookupConcluded([pid], "adopt"), RemoteJobAccepted(pid, via="lookup")))
        return _req(state, "lookup", "GET", "/queue")
    o = looked[-1].outcome
    if isinstance(o, ResponseReceived) and o.status == 200 and isinstance(o.body, dict):
        queued = [
            item[1]
            for key in ("queue_running", "queue_pending")
            for item in o.body.get(key, [])
            if isinstance(item, list) and len(item) > 1
        ]
        if pid in queued:
            return Record((LookupConcluded([pid], "adopt"), RemoteJobAccepted(pid, via="lookup")))
        return None
    if isinstance(o, RequestFailed):
        return _unreachable(state, o)
    return None


def _history_result(state: JobState, pid: str) -> Action | None:
    """What the latest /history answer for our prompt says, if it says it is finished."""
    polls = exchanges(state, "history")
    if not polls or polls[-1].outcome is None:
        return None
    o = polls[-1].outcome
    if isinstance(o, RequestFailed):
        if pending_retry(state, "history") is not None:
            return _req(
                state, "history", "GET", f"/history/{pid}", not_before=retry_time(state, "history")
            )
        if retries(state, "history") < 1:
            return Record((RetryScheduled("history", 1, 0.5, f"network: {o.error}"),))
        return _unreachable(state, o)
    if not isinstance(o.body, dict) or pid not in o.body:
        return None
    entry = o.body[pid]
    status = entry.get("status") or {}
    if status.get("status_str") == "error":
        for name, data in status.get("messages") or []:
            if name == "execution_error":
                return Record(
                    (
                        JobFailed(
                            "execution_error",
                            f"ComfyUI: {data.get('node_type')} failed: "
                            f"{str(data.get('exception_message', '')).strip()}",
                            Failure.GENERATION_FAILED,
                        ),
                    )
                )
            if name == "execution_interrupted":
                return Record(
                    (
                        JobFailed(
                            "interrupted",
                            "ComfyUI interrupted the prompt",
                            Failure.GENERATION_FAILED,
                        ),
                    )
                )
        return Record(
            (
                JobFailed(
                    "execution_error",
                    "ComfyUI reported an error without details",
                    Failure.GENERATION_FAILED,
                ),
            )
        )
    images = [
        img for node in (entry.get("outputs") or {}).values() for img in node.get("images", [])
    ]
    if not images:
        return Record(
            (
                JobFailed(
                    "no_output",
                    "ComfyUI finished without an image (was the output cached or "
                    "dropped? see `imagen show`)",
                    Failure.GENERATION_FAILED,
                ),
            )
        )
    img = images[0]
    req = state.request
    assert req is not None
    query = urlencode(
        {
            "filename": img["filename"],
            "subfolder": img.get("subfolder", ""),
            "type": img.get("type", "output"),
        }
    )
    downloads = exchanges(state, "download")
    store = StoreImage(
        request_id(state, "download"),
        f"{_url(state)}/view?{query}",
        req.output_path,
        expected_format="png",
        overwrite=req.overwrite,
        timeout_s=60,
        auth_env=config_of(state).get("token_env"),
    )
    if (
        not downloads
        or downloads[-1].outcome is None
        or pending_retry(state, "download") is not None
    ):
        return store
    last = downloads[-1].outcome
    if isinstance(last, RequestFailed) and last.error == "exists":
        return Record((JobFailed("output_exists", last.message, Failure.OUTPUT_EXISTS),))
    if retries(state, "download") < 1:
        return Record((RetryScheduled("download", 1, 0.2, "download failed"),))
    return Record(
        (
            JobFailed(
                "download_failed",
                f"could not fetch the image from ComfyUI: "
                f"{getattr(last, 'message', None) or f'HTTP {last.status}'}",
                Failure.DOWNLOAD_FAILED,
            ),
        )
    )  # type: ignore[union-attr]


def _poll_history(
    state: JobState, pid: str, *, immediate: bool, deadline: datetime | None = None
) -> Action:
    assert state.now is not None
    polls = exchanges(state, "history")
    interval = float(config_of(state).get("poll_interval_s") or 0.5)
    if immediate or not polls:
        return _req(state, "history", "GET", f"/history/{pid}")
    next_at = state.now + timedelta(seconds=interval)
    if deadline is not None and next_at >= deadline:
        return Record((CancelRequested("timeout"),))
    return _req(state, "history", "GET", f"/history/{pid}", not_before=iso(next_at))


def _cancel(state: JobState) -> Action:
    assert state.cancel is not None
    pid = state.remote_id or (_submitted_id(state) if exchanges(state, "prompt") else None)
    interrupts = exchanges(state, "interrupt")
    if pid and not interrupts:
        return _req(state, "interrupt", "POST", "/interrupt", {"prompt_id": pid}, timeout_s=5)
    done = (
        bool(interrupts)
        and isinstance(interrupts[-1].outcome, ResponseReceived)
        and interrupts[-1].outcome.status == 200
    )  # type: ignore[union-attr]
    return Record((JobCancelled(state.cancel.reason, remote_cancelled=done),))


def _result(state: JobState) -> dict[str, Any]:
    req = state.request
    assert req is not None and state.image is not None
    cfg = config_of(state)
    vram = None
    stats = exchanges(state, "system_stats")
    if (
        stats
        and isinstance(stats[-1].outcome, ResponseReceived)
        and isinstance(stats[-1].outcome.body, dict)
    ):
        devices = stats[-1].outcome.body.get("devices") or []
        if devices and devices[0].get("vram_total") is not None:
            vram = round((devices[0]["vram_total"] - devices[0].get("vram_free", 0)) / 2**20)
    latency = (
        round((state.now - state.started_at).total_seconds() * 1000)
        if state.now and state.started_at
        else None
    )
    return {
        "model": cfg.get("unet") or DEFAULT_MODEL,
        "seed_used": req.params["seed"],
        "latency_ms": latency,
        "steps": req.params["steps"],
        "sampler": cfg.get("sampler"),
        "scheduler": cfg.get("scheduler"),
        "width": state.image.width,
        "height": state.image.height,
        "prompt_id": state.remote_id,
        "client_id": client_id(state),
        "vram_used_mib": vram,
        "workflow": cfg.get("workflow") or "flux-schnell",
        "path": state.image.path,
        "sha256": state.image.sha256,
    }
