"""ComfyUI adapter (pure): FLUX.1 schnell on a local (or proxied) ComfyUI server."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from imagen.actions import Action
from imagen.backends.spec import Option
from imagen.job import JobState
from imagen.request import BadInput, GenerateInputs

DEFAULT_MODEL = "flux1-schnell-fp8.safetensors"
DEFAULT_URL = "http://127.0.0.1:8188"

CONFIG: dict[str, Option] = {
    "url": Option((str,), DEFAULT_URL, "ComfyUI base URL"),
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
    "poll_interval_s": Option((float, int), 0.5, "seconds between /history polls (fallback)"),
    "retry_base_s": Option((float, int), 0.5, "delay before the one retry on 5xx/network"),
}
# Files named by these options are read by the shell and stored in the job request as
# `<key>_content`, so a resumed job runs the same graph even if the file changed.
FILE_OPTIONS = ("workflow",)

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


def decide(state: JobState) -> Action:
    raise NotImplementedError("the ComfyUI adapter is being written")
