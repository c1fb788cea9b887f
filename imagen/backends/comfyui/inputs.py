"""ComfyUI's configuration and inputs: what a config may set, and the request's params checked
against the ranges ComfyUI's nodes accept (before anything is recorded)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from imagen.backends.contract import Option
from imagen.core.inputs import BadInput, GenerateInputs, check_extra, check_int_range

DEFAULT_MODEL = "flux1-schnell-fp8.safetensors"
DEFAULT_URL = "http://127.0.0.1:8188"

CONFIG: dict[str, Option] = {
    "url": Option((str,), DEFAULT_URL, "ComfyUI base URL", url=True),
    "urls": Option((list,), None, "several ComfyUI servers, a pool (instead of url)"),
    "member_grace_s": Option(
        (float, int),
        3.0,
        "a pool member silent this long gets no new jobs; its unfinished job moves",
        positive=True,
    ),
    "overflow": Option(
        (str,), None, "a Replicate backend a pool's job goes to when no member answers"
    ),
    "overflow_after_s": Option(
        (float, int),
        None,
        "a pool's job overflows when every member's queue would keep it waiting longer",
        positive=True,
    ),
    "image_s": Option(
        (float, int),
        None,
        "seconds a member takes per queued prompt, for that wait (default: as observed)",
        positive=True,
    ),
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
