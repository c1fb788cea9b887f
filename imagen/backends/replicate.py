"""Replicate adapter (pure): FLUX on api.replicate.com.

Configuration, input normalisation and probing live here beside `decide`, so everything about
this backend is in one module.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from imagen.actions import Action
from imagen.backends.spec import Option
from imagen.job import JobState
from imagen.request import BadInput, GenerateInputs

DEFAULT_MODEL = "black-forest-labs/flux-schnell"
DEFAULT_BASE_URL = "https://api.replicate.com"

CONFIG: dict[str, Option] = {
    "api_token_env": Option((str,), "REPLICATE_API_TOKEN", "env var holding the API token"),
    "base_url": Option((str,), DEFAULT_BASE_URL, "API base URL (a test double, a proxy)"),
    "poll_interval_s": Option((float, int), 0.5, "seconds between polls when waiting"),
    "wait_s": Option((int,), 60, "Prefer: wait=N seconds on create (1-60)"),
    "inputs": Option((dict,), None, "extra model inputs sent with every request"),
    "retry_base_s": Option((float, int), 1.0, "first backoff delay for 429 (doubles each time)"),
    "max_image_mb": Option((float, int), 64, "refuse downloads larger than this"),
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


def decide(state: JobState) -> Action:
    raise NotImplementedError("the Replicate adapter is being written")
