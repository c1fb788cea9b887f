"""The graph posted to /prompt: the built-in FLUX.1 schnell workflow or the user's own, filled
in from the job's recorded params and config."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from imagen.backends.comfyui.inputs import DEFAULT_MODEL
from imagen.backends.comfyui.outputs import KEPT_NODES, PREFIXED_NODES, refusal
from imagen.backends.comfyui.wire import as_dict
from imagen.backends.common import config_of, exchanges
from imagen.core.inputs import BadInput
from imagen.core.job import JobState

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
    value's own type (numbers stay numbers); the save nodes imagen keeps files of (SaveImage,
    SaveAnimatedPNG, SaveAnimatedWEBP) get the job's filename_prefix."""
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
        if isinstance(node, dict) and node.get("class_type") in PREFIXED_NODES:
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
        isinstance(n, dict) and n.get("class_type") in KEPT_NODES for n in graph.values()
    ):
        raise BadInput(
            f"workflow {options.get('workflow')}: an API-format graph with a SaveImage (or "
            "SaveAnimatedWEBP, SaveAnimatedPNG, PreviewImage) node is needed (ComfyUI: "
            "Workflow > Export (API))"
        )
    refused = refusal(options.get("workflow"), graph)
    if refused is not None:
        raise BadInput(refused)
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


def save_prefix(state: JobState) -> str:
    return f"imagen/{state.job_id}"


def job_graph(state: JobState) -> dict[str, Any]:
    req = state.request
    assert req is not None
    cfg = config_of(state)
    if cfg.get("workflow_content"):
        return custom_graph(
            cfg["workflow_content"], req.prompt, req.params, cfg, save_prefix(state)
        )
    return flux_schnell_graph(req.prompt, req.params, cfg, save_prefix(state))


def posted_classes(state: JobState) -> dict[str, str]:
    """node id -> class_type of the graph that was posted (for progress labels)."""
    p = exchanges(state, "prompt")
    body = p[-1].sent.body if p else None
    graph = body.get("prompt") if isinstance(body, dict) else None
    return {
        str(k): str(v.get("class_type"))
        for k, v in as_dict(graph).items()
        if isinstance(v, dict) and isinstance(v.get("class_type"), str)
    }
