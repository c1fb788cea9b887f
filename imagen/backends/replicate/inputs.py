"""Replicate's configuration and inputs: what a config may set, and the request's params checked
against what the model takes (before anything is recorded or paid)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from imagen.backends.contract import Option
from imagen.backends.replicate.wire import origin
from imagen.core.inputs import BadInput, GenerateInputs, check_extra, check_int_range

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


def api_base_of(options: Mapping[str, Any]) -> str:
    """The API's base URL a backend's options name (without a trailing slash)."""
    return str(options.get("base_url") or DEFAULT_BASE_URL).rstrip("/")


def token_env_of(options: Mapping[str, Any]) -> str:
    """The environment variable holding the API token, as a backend's options name it."""
    return str(options.get("api_token_env") or "REPLICATE_API_TOKEN")


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
