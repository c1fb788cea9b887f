"""ComfyUI adapter (pure): FLUX.1 schnell on a local (or proxied) ComfyUI server."""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from imagen.backends.common import (
    config_of,
    current_download_retries,
    current_downloads,
    exchanges,
    next_image_index,
    pending_retry,
    request_id,
    retries,
    retry_time,
)
from imagen.backends.contract import Option
from imagen.core.actions import (
    Action,
    FollowStream,
    FrameOutcome,
    HttpRequest,
    OpenStream,
    Progress,
    Record,
    StoreImage,
)
from imagen.core.events import (
    CancelRequested,
    Event,
    JobCancelled,
    JobFailed,
    JobInterrupted,
    JobSucceeded,
    LookupConcluded,
    ProgressObserved,
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
from imagen.core.inputs import BadInput, GenerateInputs, check_extra, check_int_range
from imagen.core.job import JobState, Recorded, image_path, iso

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
        "is ComfyUI running? see `imagen docs setup-comfyui`",
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


MAX_BATCH = 4096  # ComfyUI comfy_extras/nodes_sd3.py EmptySD3LatentImage batch_size max


# Ranges of the built-in graph's inputs, from ComfyUI's own node definitions: KSampler
# (nodes.py: seed 0..0xffffffffffffffff, steps 1..10000) and EmptySD3LatentImage
# (comfy_extras/nodes_sd3.py: width/height 16..MAX_RESOLUTION=16384 step 16, batch_size 1..4096).
SEED_MAX = 2**64 - 1
MAX_STEPS = 10000
MIN_SIDE, MAX_SIDE = 16, 16384


def normalise(inputs: GenerateInputs, options: Mapping[str, Any]) -> dict[str, Any]:
    """Every value checked against the range ComfyUI's nodes accept, before anything is
    recorded (a value ComfyUI refuses would be a recorded, failed job)."""
    check_int_range("--seed", inputs.seed, 0, SEED_MAX, "ComfyUI KSampler seed")
    if inputs.aspect:
        if inputs.aspect not in ASPECTS:
            raise BadInput(f"--aspect {inputs.aspect!r}: use one of {', '.join(ASPECTS)} or --size")
        width, height = ASPECTS[inputs.aspect]
    else:
        width, height = inputs.size or (1024, 1024)
    if not (MIN_SIDE <= width <= MAX_SIDE and MIN_SIDE <= height <= MAX_SIDE):
        raise BadInput(
            f"--size {width}x{height}: ComfyUI takes {MIN_SIDE} to {MAX_SIDE} pixels a side"
        )
    if not options.get("workflow") and (width % 16 or height % 16):
        # FLUX's rule (latents are 1/8 size in 2x2 patches); a custom graph sets its own.
        raise BadInput(
            f"--size {width}x{height}: FLUX needs multiples of 16, e.g. "
            f"{max(16, round(width / 16) * 16)}x{max(16, round(height / 16) * 16)}"
        )
    fmt = inputs.output_format or "png"
    if fmt != "png":
        raise BadInput(
            f"output format {fmt!r}: ComfyUI's SaveImage writes png only "
            "(name the output .png, or use a Replicate backend for jpg/webp)"
        )
    steps = inputs.steps if inputs.steps is not None else options.get("default_steps") or 4
    check_int_range("--steps", steps, 1, MAX_STEPS, "ComfyUI KSampler steps")
    check_int_range("--per-job", inputs.count, 1, MAX_BATCH, "EmptySD3LatentImage batch_size")
    check_extra(dict(inputs.extra))
    if inputs.extra and not options.get("workflow"):
        key = next(iter(inputs.extra))
        raise BadInput(
            f"-o {key}: the built-in ComfyUI graph has no input {key!r}; put a {{{{{key}}}}} "
            "placeholder in your own workflow (backend option workflow = ...)"
        )
    return {
        "seed": inputs.seed,
        "count": inputs.count,
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
        about = machine(body)
        version = about["comfyui_version"] or "?"
        return f"ok (ComfyUI {version}, {about['device']['name'] or 'unknown device'})"
    if status_code in (401, 403):
        return "rejected by the proxy (check token_env)"
    return f"unexpected answer: HTTP {status_code}"


def _check_graph(options: Mapping[str, Any]) -> dict[str, Any]:
    params = {"seed": 1, "steps": 4, "width": 1024, "height": 1024}
    if isinstance(options.get("workflow_content"), str):
        return custom_graph(options["workflow_content"], "x", params, options, "p")
    return flux_schnell_graph("x", params, options, "p")


def check_requests(options: Mapping[str, Any]) -> list[tuple[str, str]]:
    """After a good probe: GET /object_info/{class} for each node type the job's graph uses
    (the loaders list the model files the server can load)."""
    try:
        graph = _check_graph(options)
    except ValueError:
        return []
    base = str(options.get("url") or DEFAULT_URL).rstrip("/")
    classes = sorted(
        {
            node["class_type"]
            for node in graph.values()
            if isinstance(node, dict) and isinstance(node.get("class_type"), str)
        }
    )
    return [("GET", f"{base}/object_info/{cls}") for cls in classes]


def check_verdict(options: Mapping[str, Any], answers: list[tuple[int | None, Any]]) -> str | None:
    """None when the server can run the job's graph; else what is missing, by name: model
    files a loader does not list, node types the server does not know."""
    if isinstance(options.get("workflow"), str) and "workflow_content" not in options:
        return None
    try:
        graph = _check_graph(options)
    except ValueError as exc:
        return f"workflow {options.get('workflow')} is not valid JSON ({exc})"
    info: dict[str, Any] = {}
    for (_method, url), (status, body) in zip(check_requests(options), answers, strict=False):
        cls = url.rsplit("/", 1)[-1]
        if status is None:
            return f"unreachable while asking /object_info/{cls}"
        if status != 200:
            return f"/object_info/{cls}: HTTP {status}"
        info[cls] = _dict(body).get(cls)
    unknown: set[str] = set()
    missing: list[str] = []
    for node in graph.values():
        if not isinstance(node, dict) or not isinstance(node.get("class_type"), str):
            continue
        cls = node["class_type"]
        if cls not in info:
            continue
        spec = info[cls]
        if not isinstance(spec, dict):
            unknown.add(cls)
            continue
        inputs = _dict(node.get("inputs"))
        declared = {
            **_dict(_dict(spec.get("input")).get("required")),
            **_dict(_dict(spec.get("input")).get("optional")),
        }
        for name, value in inputs.items():
            choices = declared.get(name)
            if not (isinstance(choices, list) and choices and isinstance(choices[0], list)):
                continue  # not a combo (a list of allowed values)
            if isinstance(value, str) and value not in choices[0]:
                what = "model file" if cls in MISSING_MODEL_NODES else "value"
                missing.append(f"{what} {value} ({cls}.{name})")
    problems = []
    if missing:
        problems.append("missing " + ", ".join(missing) + f"; see {SETUP_DOC}")
    if unknown:
        problems.append("node types not installed: " + ", ".join(sorted(unknown)))
    return "; ".join(problems) or None


def workflow_info(options: Mapping[str, Any]) -> dict[str, str] | None:
    """A custom workflow as recorded: its file name and the sha256 of the text that ran."""
    text = options.get("workflow_content")
    if not isinstance(text, str):
        return None
    name = str(options.get("workflow") or "workflow").replace("\\", "/").rsplit("/", 1)[-1]
    return {"file": name, "sha256": hashlib.sha256(text.encode("utf-8", "replace")).hexdigest()}


def describe_model(options: Mapping[str, Any], configured: str | None = None) -> str:
    """What ran: the workflow (a custom graph picks its own models), else the FLUX UNet file."""
    info = workflow_info(options)
    if info is not None:
        return f"workflow {info['file']} (sha256 {info['sha256'][:12]})"
    return configured or str(options.get("unet") or DEFAULT_MODEL)


# -- the graph -------------------------------------------------------------------------------

MISSING_MODEL_NODES = {
    "UNETLoader",
    "DualCLIPLoader",
    "VAELoader",
    "CheckpointLoaderSimple",
    "CLIPLoader",
    "UnetLoaderGGUF",
}
SETUP_DOC = "`imagen docs setup-comfyui`"  # a command: it works from a wheel install too


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
            "inputs": {"width": w, "height": h, "batch_size": params.get("count", 1)},
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
    {{count}} {{sampler}} {{scheduler}} placeholders, and {{key}} for each `-o key=value`. A string that is exactly one placeholder takes the
    value's own type (numbers stay numbers); SaveImage nodes get the job's filename_prefix."""
    values = {
        **(params.get("extra") or {}),  # -o key=value fills {{key}}
        "prompt": prompt,
        "seed": params["seed"],
        "steps": params["steps"],
        "width": params["width"],
        "height": params["height"],
        "count": params.get("count", 1),
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
    used = set(re.findall(r"\{\{(\w+)\}\}", text))
    for key in params.get("extra") or {}:
        if key not in used:
            raise BadInput(
                f"-o {key}: workflow {options.get('workflow')} has no {{{{{key}}}}} placeholder "
                "to put it in"
            )
    if params.get("count", 1) > 1 and "count" not in used:
        raise BadInput(
            f"--per-job {params['count']}: workflow {options.get('workflow')} has no {{{{count}}}} "
            "placeholder (put it in the latent's batch_size)"
        )


# -- reading what ComfyUI answered (every field checked: a malformed answer never raises) ----

_NS = uuid.UUID("6b1f3c52-6a43-4c55-9d1c-3f0c2a7e9a10")
TERMINAL_KINDS = ("execution_success", "execution_error", "execution_interrupted")
NOTABLE_KINDS = ("execution_start", "execution_cached", "executed")
# Reconnecting after a drop: 0.25 s, doubling, at most this far apart (a blip that ends is
# noticed within this time; a long outage costs two events per try).
RECONNECT_BASE_S = 0.25
RECONNECT_CAP_S = 2.0
MALFORMED_RETRIES = 2
CANCEL_CHECKS = 20  # /history checks (0.25 s apart) to see an interrupt take effect


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _num(value: Any) -> float | None:
    """A finite number from a JSON value, else None ("abc", null, true, NaN)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if value == value and abs(value) != float("inf") else None


def _text(value: Any, limit: int = 300) -> str:
    return (value if isinstance(value, str) else json.dumps(value, default=str))[:limit]


def queue_ids(body: Any) -> tuple[set[str], set[str]] | None:
    """(running, pending) prompt ids in a GET /queue answer, None when it is malformed.

    Items are `[number, prompt_id, graph, extra_data, outputs]` (execution.py); a bare id string
    is also read as the id (a summarised recording shows that shape)."""
    if not isinstance(body, dict):
        return None
    out: list[set[str]] = []
    for key in ("queue_running", "queue_pending"):
        items = body.get(key, [])
        if not isinstance(items, list):
            return None
        ids: set[str] = set()
        for item in items:
            if isinstance(item, list) and len(item) > 1 and isinstance(item[1], str):
                ids.add(item[1])
            elif isinstance(item, str):
                ids.add(item)
        out.append(ids)
    return out[0], out[1]


@dataclass(frozen=True)
class HistoryEntry:
    """A finished prompt as /history/{id} describes it."""

    ok: bool
    images: tuple[dict[str, str], ...] = ()
    failure: JobFailed | None = None


def read_history(body: Any, pid: str) -> HistoryEntry | str | None:
    """None: not finished (or unknown); a str: what is malformed; else the entry."""
    if not isinstance(body, dict):
        return f"the answer is {type(body).__name__}, not an object"
    if pid not in body:
        return None
    entry = body[pid]
    if not isinstance(entry, dict):
        return f"the entry is {type(entry).__name__}, not an object"
    status = entry.get("status", {})
    if not isinstance(status, dict):
        return f"status is {type(status).__name__}, not an object"
    if status.get("status_str") == "error":
        messages = status.get("messages")
        for item in messages if isinstance(messages, list) else []:
            if not (isinstance(item, list) and len(item) == 2 and isinstance(item[1], dict)):
                continue
            name, data = item
            if name == "execution_error":
                return HistoryEntry(False, failure=_execution_error(data))
            if name == "execution_interrupted":
                return HistoryEntry(
                    False,
                    failure=JobFailed(
                        "interrupted", "ComfyUI interrupted the prompt", Failure.GENERATION_FAILED
                    ),
                )
        return HistoryEntry(
            False,
            failure=JobFailed(
                "execution_error",
                "ComfyUI reported an error without details",
                Failure.GENERATION_FAILED,
            ),
        )
    outputs = entry.get("outputs", {})
    if not isinstance(outputs, dict):
        return f"outputs is {type(outputs).__name__}, not an object"
    images: list[dict[str, str]] = []
    for node in outputs.values():
        if not isinstance(node, dict):
            return "an output is not an object"
        listed = node.get("images", [])
        if not isinstance(listed, list):
            return "images is not a list"
        for img in listed:
            if not isinstance(img, dict) or not isinstance(img.get("filename"), str):
                return "an image is not an object with a filename"
            images.append(
                {
                    "filename": img["filename"],
                    "subfolder": img["subfolder"] if isinstance(img.get("subfolder"), str) else "",
                    "type": img["type"] if isinstance(img.get("type"), str) else "output",
                }
            )
    return HistoryEntry(True, tuple(images))


def _execution_error(data: Mapping[str, Any]) -> JobFailed:
    return JobFailed(
        "execution_error",
        f"ComfyUI: {_text(data.get('node_type'), 80)} failed: "
        f"{_text(data.get('exception_message', ''), 500).strip()}",
        Failure.GENERATION_FAILED,
    )


# -- who drives the job, and its connections -----------------------------------------------


def _identity(claim: RunnerClaimed) -> tuple[int, str, str]:
    return (claim.pid, claim.host, claim.proc_start)


def session_floor(state: JobState) -> int:
    """The version of the claim by which the process driving the job now took it.

    "This process" is pid + host + process start time: a lease renewal (RunnerRenewed, or a
    RunnerClaimed by the same process in older ledgers) does not start a new session, so the
    websocket it opened is still its own."""
    claims = state.events_of(RunnerClaimed)
    if not claims:
        return 0
    me = _identity(claims[-1].event)  # type: ignore[arg-type]
    floor = claims[-1].version
    for rec in reversed(claims[:-1]):
        if _identity(rec.event) != me:  # type: ignore[arg-type]
            break
        floor = rec.version
    return floor


def _session_start(state: JobState) -> datetime | None:
    floor = session_floor(state)
    for rec in state.history:
        if rec.version == floor:
            return rec.at
    return state.started_at


def client_id(state: JobState) -> str:
    """One websocket client id per job: ComfyUI sends a prompt's messages only to the client id
    it was posted with, so a resumed run must reconnect under the same id."""
    for ex in reversed(exchanges(state, "prompt")):
        body = ex.sent.body
        if isinstance(body, dict) and isinstance(body.get("client_id"), str):
            return body["client_id"]
    return str(uuid.uuid5(_NS, f"{state.job_id}:client"))


@dataclass(frozen=True)
class _Stream:
    state: str  # none | open | closed | failed
    at: Recorded | None  # the event that set it
    failures: int  # stream attempts that failed in a row (this session)
    why: str = ""  # the last failure or close reason


def _stream(state: JobState) -> _Stream:
    """This process's websocket, from the events since it claimed the job."""
    floor = session_floor(state)
    result = _Stream("none", None, 0)
    for rec in state.history:
        if rec.version <= floor:
            continue
        e = rec.event
        if isinstance(e, StreamOpened):
            result = _Stream("open", rec, 0)
        elif isinstance(e, StreamClosed):
            result = _Stream("closed", rec, result.failures, e.reason)
        elif isinstance(e, RequestFailed) and e.purpose == "stream":
            result = _Stream("failed", rec, result.failures + 1, e.error)
    return result


def _open_stream(state: JobState, not_before: str | None = None) -> OpenStream:
    return OpenStream(
        f"{_url(state).replace('http', 'ws', 1)}/ws?clientId={client_id(state)}",
        client_id(state),
        auth_env=config_of(state).get("token_env"),
        not_before=not_before,
    )


def _backoff(failures: int) -> float:
    return min(RECONNECT_BASE_S * 2 ** max(failures - 1, 0), RECONNECT_CAP_S)


# -- the prompt: submitted, accepted, lost ---------------------------------------------------


def _attempt_floor(state: JobState) -> int:
    """Version of the latest "ComfyUI lost the prompt" conclusion: a new attempt starts there."""
    for rec in reversed(state.history):
        if isinstance(rec.event, LookupConcluded) and rec.event.decision == "resubmit":
            return rec.version
    return 0


def _prompts(state: JobState) -> list[Any]:
    floor = _attempt_floor(state)
    return [ex for ex in exchanges(state, "prompt") if ex.sent_at.version > floor]


def current_prompt(state: JobState) -> str | None:
    """The accepted prompt of the current attempt, if any."""
    floor = _attempt_floor(state)
    rec = state.last(RemoteJobAccepted)
    return rec.event.remote_id if rec and rec.version > floor else None  # type: ignore[attr-defined]


def _accepted_at(state: JobState) -> int:
    rec = state.last(RemoteJobAccepted)
    return rec.version if rec else 0


def _posted_at(state: JobState, pid: str) -> int:
    """The version at which the POST of this prompt was recorded (0 if not found)."""
    for ex in reversed(exchanges(state, "prompt")):
        if isinstance(ex.sent.body, dict) and ex.sent.body.get("prompt_id") == pid:
            return ex.sent_at.version
    return 0


def prompt_id(state: JobState) -> str:
    """Chosen by imagen, deterministic per job and submission, recorded before POST /prompt."""
    p = exchanges(state, "prompt")
    n = len(p) - (1 if p and p[-1].outcome is None else 0)
    return str(uuid.uuid5(_NS, f"{state.job_id}:{max(n, 0)}"))


def _submitted_id(state: JobState) -> str | None:
    p = _prompts(state)
    body = p[-1].sent.body if p else None
    return body.get("prompt_id") if isinstance(body, dict) else None


def _prefix(state: JobState) -> str:
    return f"imagen/{state.job_id}"


def _url(state: JobState) -> str:
    return str(config_of(state).get("url") or DEFAULT_URL).rstrip("/")


def _graph(state: JobState) -> dict[str, Any]:
    req = state.request
    assert req is not None
    cfg = config_of(state)
    if cfg.get("workflow_content"):
        return custom_graph(cfg["workflow_content"], req.prompt, req.params, cfg, _prefix(state))
    return flux_schnell_graph(req.prompt, req.params, cfg, _prefix(state))


def _classes(state: JobState) -> dict[str, str]:
    """node id -> class_type of the graph that was posted (for progress labels)."""
    p = exchanges(state, "prompt")
    body = p[-1].sent.body if p else None
    graph = body.get("prompt") if isinstance(body, dict) else None
    return {
        str(k): str(v.get("class_type"))
        for k, v in _dict(graph).items()
        if isinstance(v, dict) and isinstance(v.get("class_type"), str)
    }


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


def _deadline(state: JobState) -> datetime | None:
    """This run's deadline: timeout_s after the process took the job (a resume gets its own)."""
    req = state.request
    start = _session_start(state)
    if req is None or start is None:
        return None
    timeout = _num(req.params.get("timeout_s")) or 300.0
    return start + timedelta(seconds=timeout)


def _past_deadline(state: JobState) -> bool:
    deadline = _deadline(state)
    return deadline is not None and state.now is not None and state.now >= deadline


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


def _still_unreachable(state: JobState, why: str) -> Record:
    """Past the deadline with the server out of reach: ComfyUI may still finish the prompt, so
    the job stays resumable instead of failing."""
    return Record((JobInterrupted(f"unreachable: {why}"[:200]),))


def _validation_failure(body: Any) -> Record:
    body = _dict(body)
    node_errors = body.get("node_errors")
    missing: list[str] = []
    other: list[str] = []
    for node in _dict(node_errors).values():
        node = _dict(node)
        errors = node.get("errors")
        for err in errors if isinstance(errors, list) else []:
            err = _dict(err)
            cls = _text(node.get("class_type"), 80)
            line = f"{cls}: {_text(err.get('message'), 200)}: {_text(err.get('details'), 300)}"
            if err.get("type") == "value_not_in_list" and cls in MISSING_MODEL_NODES:
                info = _dict(err.get("extra_info"))
                missing.append(
                    f"{_text(info.get('received_value') or err.get('details'), 200)} "
                    f"({cls}.{_text(info.get('input_name'), 80)})"
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
    error = body.get("error")
    detail = (
        "; ".join(other)
        or (_text(error.get("message"), 300) if isinstance(error, dict) else "")
        or (_text(error, 300) if error else "")
        or _text(body, 300)
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


# -- decide ----------------------------------------------------------------------------------


def decide(state: JobState) -> Action:
    if state.request is None:
        return Record((JobFailed("internal", "the job has no request", Failure.UNEXPECTED),))
    if state.finished:
        return Record(())  # the job has ended: nothing more to send or record
    if state.images:
        # Some images are on disk, so the prompt finished: fetch the rest and succeed, even
        # after a cancel (an image in hand is never thrown away).
        pid = current_prompt(state)
        return _follow(state, pid) if pid else Record((JobSucceeded(_result(state)),))
    if state.cancel is not None:
        return _cancel(state)
    pid = current_prompt(state)
    if pid is None:
        if _stream(state).state == "none":
            return _open_stream(state)  # before POST /prompt, so no message can be missed
        return _submit(state)
    return _follow(state, pid)


def _follow(state: JobState, pid: str) -> Action:
    """From acceptance to the image: listen, locate, reconnect, fetch."""
    # 1. What the latest /history answer says (after the end, a locate, or a poll).
    polls = [ex for ex in exchanges(state, "history") if ex.sent_at.version > _accepted_at(state)]
    last = polls[-1] if polls else None
    if last is not None and last.outcome is not None:
        o = last.outcome
        if isinstance(o, ResponseReceived) and o.status == 200:
            entry = read_history(o.body, pid)
            if isinstance(entry, HistoryEntry):
                return _finished(state, entry)
            if isinstance(entry, str):
                return _malformed(state, "history", f"/history/{pid}", entry)
    # 2. The stream said the prompt ended.
    end = _stream_end(state, pid)
    if end is not None:
        e: StreamMessage = end.event  # type: ignore[assignment]
        if e.kind == "execution_error":
            return Record((_execution_error(e.data),))
        if e.kind == "execution_interrupted":
            return Record(
                (
                    JobFailed(
                        "interrupted",
                        "ComfyUI interrupted the prompt (another client or the server's "
                        "interrupt button)",
                        Failure.GENERATION_FAILED,
                    ),
                )
            )
        after = [ex for ex in polls if ex.sent_at.version > end.version]
        if not after:
            return _req(state, "history", "GET", f"/history/{pid}")
        # execution_success comes just before ComfyUI writes the history entry: ask again.
        return _history_again(state, pid, after[-1])
    # 3. Machine facts, once per job (asked again by a later run when they are missing).
    stats = _system_stats_request(state)
    if stats is not None:
        return stats
    # 4. Where the prompt is, with this process's websocket.
    stream = _stream(state)
    if stream.state == "open":
        assert stream.at is not None
        if _posted_at(state, pid) > stream.at.version:
            return _follow_stream(state, pid)  # posted with this socket open: nothing missed
        return _locate(state, pid, since=stream.at.version, stream_open=True)
    if stream.state == "closed" and stream.why == "deadline":
        return Record((CancelRequested("timeout"),))
    if stream.state == "failed" and stream.why == "handshake":
        # The server answers but refuses websockets (a proxy): poll instead.
        assert stream.at is not None
        return _locate(state, pid, since=stream.at.version, stream_open=False)
    if _past_deadline(state) and stream.state != "none":
        return _still_unreachable(state, f"no connection to {_url(state)} ({stream.why})")
    not_before = None
    if stream.state == "failed" and stream.at is not None:
        not_before = iso(stream.at.at + timedelta(seconds=_backoff(stream.failures)))
    return _open_stream(state, not_before)


def _follow_stream(state: JobState, pid: str) -> FollowStream:
    deadline = _deadline(state)
    return FollowStream(
        {"prompt_id": pid, "classes": _classes(state), "recorded": {}},
        deadline=iso(deadline) if deadline else None,
        waiting=Progress("queued in ComfyUI"),
    )


def _locate(state: JobState, pid: str, *, since: int, stream_open: bool) -> Action:
    """After (re)connecting: /queue first, then /history. ComfyUI moves a prompt from the queue
    to the history under one lock, so a prompt in neither, in that order, is lost."""
    queue = [ex for ex in exchanges(state, "queue") if ex.sent_at.version > since]
    if not queue or (pending_retry(state, "queue") is not None and queue[-1].outcome is not None):
        return _req(state, "queue", "GET", "/queue", not_before=_retry_at(state, "queue"))
    o = queue[-1].outcome
    if o is None:
        return _req(state, "queue", "GET", "/queue")
    if isinstance(o, RequestFailed) or o.status != 200:
        if _past_deadline(state):
            return _still_unreachable(state, f"/queue: {_outcome_text(o)}")
        n = sum(1 for ex in queue if ex.outcome is not None)
        return Record((RetryScheduled("queue", n, _backoff(n), _outcome_text(o)),))
    ids = queue_ids(o.body)
    if ids is None:
        return _malformed(state, "queue", "/queue", "queue_running/queue_pending are not lists")
    if pid in ids[0] or pid in ids[1]:
        if stream_open:
            return _follow_stream(state, pid)
        return _poll(state, pid, since=queue[-1].outcome_at.version)  # type: ignore[union-attr]
    looked = [
        ex for ex in exchanges(state, "history") if ex.sent_at.version > queue[-1].sent_at.version
    ]
    if not looked or looked[-1].outcome is None:
        return _req(state, "history", "GET", f"/history/{pid}")
    h = looked[-1].outcome
    if isinstance(h, RequestFailed) or h.status != 200:
        if _past_deadline(state):
            return _still_unreachable(state, f"/history: {_outcome_text(h)}")
        n = len(looked)
        return Record((RetryScheduled("queue", n, _backoff(n), _outcome_text(h)),))
    # In neither place (a finished entry was handled by _follow): ComfyUI restarted and lost
    # it. ComfyUI is local and free, so a new attempt (a new prompt_id) finishes the job.
    return Record(
        (
            LookupConcluded([], "resubmit"),
            RetryScheduled(
                "prompt",
                len(exchanges(state, "prompt")) + 1,
                0.0,
                f"ComfyUI knows prompt {pid} neither in /queue nor in /history (restarted?)",
            ),
        )
    )


POLL_WINDOW_S = 60.0


def _poll(state: JobState, pid: str, *, since: int) -> Action:
    """No websocket (a proxy refused it): poll /history, the runner repeating the request while
    the answer stays `{}` (backing off to 5 s) and recording the repeats as one event. After
    each quiet window, /queue says whether the prompt is still there (a restart loses it)."""
    polls = [ex for ex in exchanges(state, "history") if ex.sent_at.version > since]
    deadline = _deadline(state)
    if _past_deadline(state) or deadline is None or state.now is None:
        return Record((CancelRequested("timeout"),))
    if polls and polls[-1].outcome is not None:
        last = polls[-1].outcome
        if isinstance(last, RequestFailed) or last.status != 200:
            # Unreachable again: back to reconnecting (the stream is the cheap probe).
            return _open_stream(state, state.after(RECONNECT_BASE_S))
        return _req(state, "queue", "GET", "/queue")  # a quiet window: is it still queued?
    window = min(POLL_WINDOW_S, (deadline - state.now).total_seconds())
    every = _num(config_of(state).get("poll_interval_s")) or 0.5
    return replace(
        _req(state, "history", "GET", f"/history/{pid}"),
        repeat_for_s=max(window, 0.0),
        repeat_every_s=every,
    )


def _history_again(state: JobState, pid: str, last: Any) -> Action:
    o = last.outcome
    if o is None:
        return _req(state, "history", "GET", f"/history/{pid}")
    n = len([ex for ex in exchanges(state, "history") if ex.sent_at.version > _accepted_at(state)])
    if isinstance(o, RequestFailed) or o.status != 200:
        if _past_deadline(state):
            return _still_unreachable(state, f"/history: {_outcome_text(o)}")
    elif _past_deadline(state):
        return Record((CancelRequested("timeout"),))
    delay = _backoff(n) if isinstance(o, RequestFailed) else min(0.1 * n, 2.0)
    return _req(state, "history", "GET", f"/history/{pid}", not_before=state.after(delay))


def _stream_end(state: JobState, pid: str) -> Recorded | None:
    for rec in reversed(state.history):
        e = rec.event
        if rec.version <= _accepted_at(state):
            return None
        if (
            isinstance(e, StreamMessage)
            and e.data.get("prompt_id") == pid
            and (e.kind in TERMINAL_KINDS or (e.kind == "executing" and e.data.get("node") is None))
        ):
            return rec
    return None


def _system_stats_request(state: JobState) -> HttpRequest | None:
    stats = exchanges(state, "system_stats")
    if any(_stats_body(ex.outcome) for ex in stats):
        return None
    floor = session_floor(state)
    if any(ex.sent_at.version > floor for ex in stats):
        return None  # one try per run: metadata never delays an image
    return _req(state, "system_stats", "GET", "/system_stats", timeout_s=3)


def _stats_body(o: Any) -> dict[str, Any] | None:
    if isinstance(o, ResponseReceived) and o.status == 200 and isinstance(o.body, dict):
        return o.body
    return None


def _outcome_text(o: Any) -> str:
    if isinstance(o, RequestFailed):
        return f"{o.error}: {o.message}"
    if isinstance(o, ResponseReceived):
        return f"HTTP {o.status}"
    return "no answer"


def _retry_at(state: JobState, purpose: str) -> str | None:
    return retry_time(state, purpose) if pending_retry(state, purpose) is not None else None


def _malformed(state: JobState, purpose: str, what: str, why: str) -> Action:
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
    path = last.url[len(_url(state)) :] if last.url.startswith(_url(state)) else last.url
    return _req(state, purpose, last.method, path, last.body, retry_time(state, purpose))


# -- submitting ------------------------------------------------------------------------------


def _submit(state: JobState) -> Action:
    prompts = _prompts(state)
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
        if o.status == 200 and isinstance(o.body, dict):
            errors = o.body.get("node_errors")
            if not errors:
                got = o.body.get("prompt_id")
                return Record((RemoteJobAccepted(got if isinstance(got, str) else str(sent_id)),))
            if isinstance(errors, dict):
                return _validation_failure(o.body)
            return _malformed(state, "prompt", "/prompt", "node_errors is not an object")
        if o.status == 200:
            return _malformed(state, "prompt", "/prompt", "the answer is not an object")
        if o.status == 400:
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
                        float(_num(config_of(state).get("retry_base_s")) or 0.5),
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
                    f"ComfyUI answered HTTP {o.status} to /prompt: {_text(o.body)}",
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
                    float(_num(config_of(state).get("retry_base_s")) or 0.5),
                    f"network: {o.error}",
                ),
            )
        )
    return _unreachable(state, o)


def _lookup(state: JobState, pid: str | None) -> Action | None:
    """Find a prompt we may have queued: /queue first (pending or running), then /history
    (finished). Not the other way round: a prompt that finished between the two asks would
    be in neither answer and be queued again. ComfyUI writes the history entry before the
    prompt leaves the queue, so in this order it is always found."""
    if pid is None:
        return None
    floor = _prompts(state)[-1].sent_at.version
    looked = [ex for ex in exchanges(state, "lookup") if ex.sent_at.version > floor]
    adopt = Record((LookupConcluded([pid], "adopt"), RemoteJobAccepted(pid, via="lookup")))
    if not looked:
        return _req(state, "lookup", "GET", "/queue")
    if looked[-1].outcome is None:
        return _req(state, "lookup", "GET", looked[-1].sent.url[len(_url(state)) :])
    o = looked[-1].outcome
    if len(looked) == 1:
        if isinstance(o, ResponseReceived) and o.status == 200:
            ids = queue_ids(o.body)
            if ids is not None and (pid in ids[0] or pid in ids[1]):
                return adopt
        return _req(state, "lookup", "GET", f"/history/{pid}")
    if isinstance(o, ResponseReceived) and o.status == 200 and isinstance(o.body, dict):
        if pid in o.body:
            return adopt
        return None
    if isinstance(o, RequestFailed):
        return _unreachable(state, o)
    return None


# -- the image -------------------------------------------------------------------------------


def _finished(state: JobState, entry: HistoryEntry) -> Action:
    if entry.failure is not None:
        return Record((entry.failure,))
    if not entry.images:
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
    saved = [i for i in entry.images if i["type"] == "output"] or list(entry.images)
    index = next_image_index(state, len(saved))
    if index is None:
        return Record((JobSucceeded(_result(state)),))
    img = saved[index]
    req = state.request
    assert req is not None
    query = urlencode(
        {"filename": img["filename"], "subfolder": img["subfolder"], "type": img["type"]}
    )
    downloads = [ex for ex in current_downloads(state) if ex.sent_at.version > _accepted_at(state)]
    store = StoreImage(
        request_id(state, "download"),
        f"{_url(state)}/view?{query}",
        image_path(req.output_path, index),
        expected_format="png",
        overwrite=req.overwrite,
        timeout_s=60,
        auth_env=config_of(state).get("token_env"),
        index=index,
    )
    if not downloads or downloads[-1].outcome is None:
        return store
    if pending_retry(state, "download") is not None:
        return replace(store, not_before=retry_time(state, "download"))
    last = downloads[-1].outcome
    if isinstance(last, RequestFailed) and last.error == "exists":
        return Record((JobFailed("output_exists", last.message, Failure.OUTPUT_EXISTS),))
    if isinstance(last, RequestFailed) and last.error in _NETWORK_ERRORS:
        # The image is done on the server: a blip must not lose it.
        if _past_deadline(state):
            return _still_unreachable(state, f"/view: {_outcome_text(last)}")
        n = current_download_retries(state)
        return Record((RetryScheduled("download", n + 1, _backoff(n + 1), _outcome_text(last)),))
    if current_download_retries(state) < 1:
        return Record((RetryScheduled("download", 1, 0.2, "download failed"),))
    return Record(
        (
            JobFailed(
                "download_failed",
                f"could not fetch the image from ComfyUI: {_outcome_text(last)}",
                Failure.DOWNLOAD_FAILED,
            ),
        )
    )


_NETWORK_ERRORS = ("refused", "timeout", "reset", "connection", "network", "dns", "unreachable")


# -- cancelling: look where the prompt is, do what stops it there, say what was verified ----


def _cancel(state: JobState) -> Action:
    assert state.cancel is not None
    reason = state.cancel.reason
    rec = state.last(CancelRequested)
    floor = rec.version if rec else 0
    pid = current_prompt(state) or _submitted_id(state)
    if pid is None:
        return Record((JobCancelled(reason, False, "nothing had been sent to ComfyUI"),))

    def since(purpose: str) -> list[Any]:
        return [ex for ex in exchanges(state, purpose) if ex.sent_at.version > floor]

    queue = since("cancel_queue")
    if not queue or queue[-1].outcome is None and len(queue) == 1:
        return _req(state, "cancel_queue", "GET", "/queue", timeout_s=5)
    where = _where(queue[0].outcome, pid)
    if where == "unknown":
        return Record(
            (
                JobCancelled(
                    reason,
                    False,
                    f"could not ask ComfyUI where prompt {pid} is "
                    f"({_outcome_text(queue[0].outcome)}); it may still run",
                ),
            )
        )
    if where == "pending":
        deletes = since("queue_delete")
        if not deletes:
            return _req(state, "queue_delete", "POST", "/queue", {"delete": [pid]}, timeout_s=5)
        if len(queue) < 2:
            return _req(state, "cancel_queue", "GET", "/queue", timeout_s=5)
        after = _where(queue[1].outcome, pid)
        if after == "gone":
            # Out of the queue: deleted, or it started (another prompt interrupted, the next
            # runs at once) and finished before the delete came. Only the history tells.
            looks = since("cancel_history")
            if not looks or looks[-1].outcome is None:
                return _req(state, "cancel_history", "GET", f"/history/{pid}", timeout_s=5)
            o = looks[-1].outcome
            entry = (
                read_history(o.body, pid)
                if isinstance(o, ResponseReceived) and o.status == 200
                else "no answer"
            )
            if entry is None:
                return Record(
                    (
                        JobCancelled(
                            reason, True, f"deleted prompt {pid} from ComfyUI's queue (verified)"
                        ),
                    )
                )
            if isinstance(entry, HistoryEntry) and entry.ok and entry.images:
                return _finished(state, entry)  # it ran: an image made is never thrown away
            return Record(
                (
                    JobCancelled(
                        reason,
                        isinstance(entry, HistoryEntry),
                        f"prompt {pid} started before it could be deleted from ComfyUI's queue "
                        + (
                            "and was stopped (verified)"
                            if isinstance(entry, HistoryEntry)
                            else f"; not verified ({entry})"
                        ),
                    ),
                )
            )
        if after != "running":
            return Record(
                (
                    JobCancelled(
                        reason,
                        False,
                        f"asked ComfyUI to delete queued prompt {pid}; "
                        f"not verified ({after}): it may still run",
                    ),
                )
            )
        where = "running"  # it started between the two looks: interrupt it
    if where == "running":
        if not since("interrupt"):
            return _req(state, "interrupt", "POST", "/interrupt", {"prompt_id": pid}, timeout_s=5)
    looks = since("cancel_history")
    if looks and looks[-1].outcome is not None:
        o = looks[-1].outcome
        entry = read_history(o.body, pid) if isinstance(o, ResponseReceived) else None
        if isinstance(entry, HistoryEntry):
            if where == "running" and not entry.ok:
                return Record((JobCancelled(reason, True, f"interrupted prompt {pid} (verified)"),))
            if entry.ok and entry.images:
                # It finished before the cancel could stop it: cancelling saves nothing now, and
                # an image made is never thrown away. decide() fetches the rest once one is in.
                return _finished(state, entry)
            return Record(
                (
                    JobCancelled(
                        reason,
                        False,
                        f"prompt {pid} had already finished on ComfyUI; the image was not fetched",
                    ),
                )
            )
        if where == "gone":
            return Record(
                (
                    JobCancelled(
                        reason,
                        False,
                        f"ComfyUI has prompt {pid} neither queued nor finished: nothing runs",
                    ),
                )
            )
        if len(looks) >= CANCEL_CHECKS:
            return Record(
                (
                    JobCancelled(
                        reason,
                        False,
                        f"asked ComfyUI to interrupt prompt {pid}; it had not stopped after "
                        f"{CANCEL_CHECKS * 0.25:g} s: it may still finish",
                    ),
                )
            )
        return _req(
            state,
            "cancel_history",
            "GET",
            f"/history/{pid}",
            not_before=state.after(0.25),
            timeout_s=5,
        )
    return _req(state, "cancel_history", "GET", f"/history/{pid}", timeout_s=5)


def _where(o: Any, pid: str) -> str:
    if not isinstance(o, ResponseReceived) or o.status != 200:
        return "unknown"
    ids = queue_ids(o.body)
    if ids is None:
        return "unknown"
    if pid in ids[0]:
        return "running"
    if pid in ids[1]:
        return "pending"
    return "gone"


# -- the stream, frame by frame (pure: the runner only reads frames and hands them over) ----


def _not_json(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def interpret_frame(context: Mapping[str, Any], frame: str | bytes) -> FrameOutcome:
    """What one websocket frame means for the prompt being followed.

    Text frames are `{"type", "data"}` (server.py send_json); only those whose data.prompt_id is
    ours count. `progress` (per step) and `progress_state` (every node: value, max, state)
    drive the display: a node with steps shows them (the sampler), a node without shows its
    class_type. Sampler progress is recorded sparsely (first, each quarter, last); start,
    cached, executed and the terminal message are recorded; `executing {node: null}` or a
    terminal message ends following. Anything malformed is ignored, never raised on.
    """
    ctx = dict(context)
    if not isinstance(frame, str):
        return FrameOutcome(ctx)  # binary preview images
    try:
        # NaN/Infinity are not JSON (Python accepts them) and no event may hold them.
        msg = json.loads(frame, parse_constant=_not_json)
    except ValueError:
        return FrameOutcome(ctx)
    if not isinstance(msg, dict) or not isinstance(msg.get("data"), dict):
        return FrameOutcome(ctx)
    kind, data = msg.get("type"), msg["data"]
    if not isinstance(kind, str) or data.get("prompt_id") != ctx.get("prompt_id"):
        return FrameOutcome(ctx)
    classes = _dict(ctx.get("classes"))

    def label(node: Any) -> str:
        known = classes.get(node) if isinstance(node, str) else None
        return str(known or f"node {_text(node, 40)}")

    if kind in TERMINAL_KINDS:
        return FrameOutcome(ctx, (StreamMessage(kind, _trim(data)),), Progress("finished"), True)
    if kind == "executing":
        node = data.get("node")
        if node is None:
            return FrameOutcome(ctx, (StreamMessage(kind, _trim(data)),), None, True)
        return FrameOutcome(ctx, (), Progress(label(node)))
    if kind in NOTABLE_KINDS:
        shown = Progress("started") if kind == "execution_start" else None
        return FrameOutcome(ctx, (StreamMessage(kind, _trim(data)),), shown)
    if kind == "progress":
        value, top = _num(data.get("value")), _num(data.get("max"))
        if value is None or top is None or top <= 0:
            return FrameOutcome(ctx)
        return _stepped(ctx, data.get("node"), label(data.get("node")), value, top)
    if kind == "progress_state":
        nodes = data.get("nodes")
        if not isinstance(nodes, dict):
            return FrameOutcome(ctx)
        events: list[Event] = []
        shown: Progress | None = None
        for node, info in nodes.items():
            info = _dict(info)
            value, top = _num(info.get("value")), _num(info.get("max"))
            if value is None or top is None:
                continue
            if top > 1 and info.get("state") in ("running", "finished"):
                out = _stepped(ctx, node, label(node), value, top)
                ctx, events = out.context, [*events, *out.events]
                if info.get("state") == "running" or shown is None or shown.total is None:
                    shown = out.progress
            elif info.get("state") == "running":
                shown = Progress(label(node))
        return FrameOutcome(ctx, tuple(events), shown)
    return FrameOutcome(ctx)


def _stepped(ctx: dict[str, Any], node: Any, name: str, value: float, top: float) -> FrameOutcome:
    step, total = int(min(max(value, 0), top)), int(top)
    key = _text(node, 40)
    recorded = _dict(ctx.get("recorded"))
    last = recorded.get(key)
    events: tuple[Event, ...] = ()
    if last is None or (step > last and (step == total or step * 4 // total > last * 4 // total)):
        events = (ProgressObserved(name, step, total),)
        ctx = {**ctx, "recorded": {**recorded, key: step}}
    return FrameOutcome(ctx, events, Progress(name, step, total))


def _trim(data: dict[str, Any]) -> dict[str, Any]:
    """Stream payloads can carry whole graphs; keep what an audit needs."""
    return {k: v for k, v in data.items() if k not in {"current_inputs", "current_outputs"}}


# -- the result ------------------------------------------------------------------------------


def _result(state: JobState) -> dict[str, Any]:
    req = state.request
    assert req is not None and state.image is not None
    cfg = config_of(state)
    stats = next(
        (b for ex in reversed(exchanges(state, "system_stats")) if (b := _stats_body(ex.outcome))),
        None,
    )
    latency = (
        round((state.now - state.started_at).total_seconds() * 1000)
        if state.now and state.started_at
        else None
    )
    workflow = workflow_info(cfg)
    return {
        "model": describe_model(cfg),
        "workflow": workflow or "flux-schnell",
        "seed_used": req.params.get("seed"),
        "latency_ms": latency,
        "steps": req.params.get("steps"),
        "sampler": cfg.get("sampler"),
        "scheduler": cfg.get("scheduler"),
        "width": state.image.width,
        "height": state.image.height,
        "prompt_id": current_prompt(state),
        "attempts": len(
            {
                ex.sent.body.get("prompt_id")
                for ex in exchanges(state, "prompt")
                if isinstance(ex.sent.body, dict)
            }
        ),
        "client_id": client_id(state),
        **machine(stats),
        "path": state.image.path,
        "sha256": state.image.sha256,
        "images": [i.path for i in state.images],
    }


def machine(stats: Mapping[str, Any] | None) -> dict[str, Any]:
    """What /system_stats says about the machine that made the image (None when unknown)."""
    system = _dict(_dict(stats).get("system"))
    devices = _dict(stats).get("devices")
    device = _dict(devices[0]) if isinstance(devices, list) and devices else {}
    total, free = _num(device.get("vram_total")), _num(device.get("vram_free"))
    version = system.get("comfyui_version")
    return {
        "device": {
            "name": device["name"] if isinstance(device.get("name"), str) else None,
            "type": device["type"] if isinstance(device.get("type"), str) else None,
        },
        "comfyui_version": version if isinstance(version, str) else None,
        "vram_total_mib": round(total / 2**20) if total is not None else None,
        "vram_used_mib": round((total - (free or 0)) / 2**20) if total is not None else None,
    }


def sent_inputs(state: JobState) -> dict[str, Any]:
    """Seed, steps and batch size of the graph last posted to /prompt, read from its nodes."""
    prompts = exchanges(state, "prompt")
    body = prompts[-1].sent.body if prompts else None
    graph = body.get("prompt") if isinstance(body, dict) else None
    if not isinstance(graph, dict):
        return {}
    out: dict[str, Any] = {}
    for node in graph.values():
        if not isinstance(node, dict) or not isinstance(node.get("inputs"), dict):
            continue
        kind, inputs = node.get("class_type"), node["inputs"]
        if kind in ("KSampler", "KSamplerAdvanced"):
            for key in ("seed", "noise_seed"):
                if isinstance(inputs.get(key), int):
                    out.setdefault("seed", inputs[key])
            if isinstance(inputs.get("steps"), int):
                out.setdefault("steps", inputs["steps"])
        elif kind == "RandomNoise" and isinstance(inputs.get("noise_seed"), int):
            out.setdefault("seed", inputs["noise_seed"])
        elif kind == "BasicScheduler" and isinstance(inputs.get("steps"), int):
            out.setdefault("steps", inputs["steps"])
        elif kind in ("EmptySD3LatentImage", "EmptyLatentImage"):
            if isinstance(inputs.get("batch_size"), int):
                out.setdefault("count", inputs["batch_size"])
    return out
