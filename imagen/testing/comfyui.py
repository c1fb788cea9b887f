"""A ComfyUI-protocol-faithful server (HTTP + websocket on one port), for tests and the demo.

It answers what imagen's ComfyUI adapter uses the way ComfyUI 0.3.x does (server.py,
execution.py, main.py's prompt_worker are the authority; see /work/shared/reference/comfyui.md):
POST /prompt with ComfyUI's validation and error bodies, a single FIFO worker that emits the
websocket sequence to the submitting client, /history, /view with its path checks, /queue,
/interrupt, /system_stats, /object_info and /models. Every route is also served under /api.
Images are real PNGs (synthetic, deterministic from the seed) written to an output dir.

    with ComfyUIDouble(step_time=0.0) as comfy:
        client = ComfyUIClient(comfy.url)
        comfy.hold_next()   # scripting: faults, holds, websocket drops, execution errors

Run standalone: `python -m imagen.testing.comfyui [--port N] [--models DIR]`; the first line
printed is the base URL.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import copy
import heapq
import io
import json
import logging
import mimetypes
import os
import random
import re
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
import traceback
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from http import HTTPStatus
from typing import Any
from urllib.parse import urlsplit

from aiohttp import WSMsgType, web
from PIL import Image
from PIL.PngImagePlugin import PngInfo

__all__ = ["ComfyUIDouble", "DEFAULT_MODELS", "free_port", "main"]

log = logging.getLogger(__name__)

COMFYUI_VERSION = "0.3.64"
DEFAULT_MODELS: dict[str, list[str]] = {
    "diffusion_models": ["flux1-schnell-fp8.safetensors", "flux1-schnell.safetensors"],
    "text_encoders": ["clip_l.safetensors", "t5xxl_fp8_e4m3fn.safetensors"],
    "vae": ["ae.safetensors"],
}
# Legacy folder names ComfyUI maps onto the current ones (folder_paths.map_legacy).
_FOLDER_ALIASES = {"unet": "diffusion_models", "clip": "text_encoders"}
_FOLDER_DIRS = {
    "diffusion_models": ("unet", "diffusion_models"),
    "text_encoders": ("clip", "text_encoders"),
    "vae": ("vae",),
}
# Keys of folder_paths.folder_names_and_paths, for GET /models.
_MODEL_FOLDERS = (
    "checkpoints",
    "configs",
    "loras",
    "vae",
    "text_encoders",
    "diffusion_models",
    "clip_vision",
    "style_models",
    "embeddings",
    "diffusers",
    "vae_approx",
    "controlnet",
    "gligen",
    "upscale_models",
    "custom_nodes",
    "hypernetworks",
    "photomaker",
    "classifiers",
    "model_patches",
    "audio_encoders",
)
_MODEL_EXTENSIONS = {".ckpt", ".pt", ".pt2", ".bin", ".pth", ".safetensors", ".pkl", ".sft"}
_ROUTES = {"prompt", "history", "view", "system_stats", "queue", "interrupt", "object_info", "ws"}
_GIB = 1024**3
_RAM_TOTAL = 64 * _GIB
_RAM_FREE = 48 * _GIB
_VRAM_TOTAL = 24 * _GIB
_VRAM_BASELINE = _GIB // 2  # CUDA context and the desktop, never given back
_TORCH_SLACK = _GIB // 4  # reserved-but-free torch memory while a model is loaded
_MAX_RESOLUTION = 16384
_SAMPLERS = [
    "euler",
    "euler_cfg_pp",
    "euler_ancestral",
    "euler_ancestral_cfg_pp",
    "heun",
    "heunpp2",
    "dpm_2",
    "dpm_2_ancestral",
    "lms",
    "dpm_fast",
    "dpm_adaptive",
    "dpmpp_2s_ancestral",
    "dpmpp_2s_ancestral_cfg_pp",
    "dpmpp_sde",
    "dpmpp_sde_gpu",
    "dpmpp_2m",
    "dpmpp_2m_cfg_pp",
    "dpmpp_2m_sde",
    "dpmpp_2m_sde_gpu",
    "dpmpp_2m_sde_heun",
    "dpmpp_2m_sde_heun_gpu",
    "dpmpp_3m_sde",
    "dpmpp_3m_sde_gpu",
    "ddpm",
    "lcm",
    "ipndm",
    "ipndm_v",
    "deis",
    "res_multistep",
    "res_multistep_cfg_pp",
    "res_multistep_ancestral",
    "res_multistep_ancestral_cfg_pp",
    "gradient_estimation",
    "gradient_estimation_cfg_pp",
    "er_sde",
    "seeds_2",
    "seeds_3",
    "sa_solver",
    "sa_solver_pece",
    "ddim",
    "uni_pc",
    "uni_pc_bh2",
]
_SCHEDULERS = [
    "simple",
    "sgm_uniform",
    "karras",
    "exponential",
    "ddim_uniform",
    "beta",
    "normal",
    "linear_quadratic",
    "kl_optimal",
]
_OOM_TIPS = (
    "This error means you ran out of memory on your GPU.\n\nTIPS: If the workflow worked before "
    "you might have accidentally set the batch_size to a large number."
)
# What an execution_error traceback looks like (list of frames as traceback.format_tb gives).
_FAKE_TRACEBACK = [
    '  File "/ComfyUI/execution.py", line 496, in execute\n'
    "    output_data, output_ui, has_subgraph, has_pending_tasks = await get_output_data("
    "prompt_id, unique_id, obj, input_data_all, execution_block_cb=execution_block_cb, "
    "pre_execute_cb=pre_execute_cb, hidden_inputs=hidden_inputs)\n",
    '  File "/ComfyUI/execution.py", line 315, in get_output_data\n'
    "    return_values = await _async_map_node_over_list(prompt_id, unique_id, obj, "
    "input_data_all, obj.FUNCTION, allow_interrupt=True)\n",
]


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now (to model a refused connection)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _now_ms() -> int:
    return int(time.time() * 1000)


# The FUNCTION of the V1 nodes that raise in the double (a traceback's last frame).
_FUNCTIONS = {
    "SaveImage": "save_images",
    "EmptyImage": "generate",
    "KSampler": "sample",
    "UNETLoader": "load_unet",
    "DualCLIPLoader": "load_clip",
    "VAELoader": "load_vae",
}
# Node output kinds that are plain Python values in ComfyUI (format_value shows them as is).
_PRIMITIVES = {"INT", "FLOAT", "STRING", "BOOLEAN"}
# Nodes whose IS_CHANGED returns time.time(): never cached (websocket_image_save.py).
_NEVER_CACHED = {"SaveImageWebsocket"}


def _full_type_name(klass: type) -> str:
    # ComfyUI's execution.full_type_name: builtins are bare, others module-qualified.
    module = klass.__module__
    return klass.__qualname__ if module == "builtins" else f"{module}.{klass.__qualname__}"


# ------------------------------------------------------------------------------ node catalogue

# What server.py's /object_info shows for these nodes in 0.3.64 beyond the catalogue below:
# input hints and tooltips, descriptions, output tooltips; "v3" marks comfy_api io.ComfyNode
# classes (every NodeInfoV1 key, display_name null unless set). Taken from a real server.
_REAL_NODES: dict[str, dict[str, Any]] = {
    "DualCLIPLoader": {
        "description": "[Recipes]\n"
        "\n"
        "sdxl: clip-l, clip-g\n"
        "sd3: clip-l, clip-g / clip-l, t5 / clip-g, t5\n"
        "flux: clip-l, t5\n"
        "hidream: at least one of t5 or llama, recommended t5 and "
        "llama\n"
        "hunyuan_image: qwen2.5vl 7b and byt5 small"
    },
    "CLIPTextEncode": {
        "inputs": {
            "text": {"tooltip": "The text to be encoded."},
            "clip": {"tooltip": "The CLIP model used for encoding the text."},
        },
        "description": "Encodes a text prompt using a CLIP model into an embedding "
        "that can be used to guide the diffusion model towards "
        "generating specific images.",
        "output_tooltips": [
            "A conditioning containing the embedded text used to guide the diffusion model."
        ],
    },
    "EmptyLatentImage": {
        "inputs": {
            "width": {"tooltip": "The width of the latent images in pixels."},
            "height": {"tooltip": "The height of the latent images in pixels."},
            "batch_size": {"tooltip": "The number of latent images in the batch."},
        },
        "description": "Create a new batch of empty latent images to be denoised via sampling.",
        "output_tooltips": ["The empty latent image batch."],
    },
    "EmptySD3LatentImage": {"output_tooltips": [None], "display_name": None, "v3": True},
    "KSampler": {
        "inputs": {
            "model": {"tooltip": "The model used for denoising the input latent."},
            "seed": {
                "control_after_generate": True,
                "tooltip": "The random seed used for creating the noise.",
            },
            "steps": {"tooltip": "The number of steps used in the denoising process."},
            "cfg": {
                "round": 0.01,
                "tooltip": "The Classifier-Free Guidance scale balances "
                "creativity and adherence to the prompt. Higher "
                "values result in images more closely matching the "
                "prompt however too high values will negatively "
                "impact quality.",
            },
            "sampler_name": {
                "tooltip": "The algorithm used when sampling, this "
                "can affect the quality, speed, and style "
                "of the generated output."
            },
            "scheduler": {
                "tooltip": "The scheduler controls how noise is "
                "gradually removed to form the image."
            },
            "positive": {
                "tooltip": "The conditioning describing the attributes "
                "you want to include in the image."
            },
            "negative": {
                "tooltip": "The conditioning describing the attributes "
                "you want to exclude from the image."
            },
            "latent_image": {"tooltip": "The latent image to denoise."},
            "denoise": {
                "tooltip": "The amount of denoising applied, lower values "
                "will maintain the structure of the initial "
                "image allowing for image to image sampling."
            },
        },
        "description": "Uses the provided model, positive and negative conditioning to "
        "denoise the latent image.",
        "output_tooltips": ["The denoised latent."],
    },
    "VAEDecode": {
        "inputs": {
            "samples": {"tooltip": "The latent to be decoded."},
            "vae": {"tooltip": "The VAE model used for decoding the latent."},
        },
        "description": "Decodes latent images back into pixel space images.",
        "output_tooltips": ["The decoded image."],
    },
    "SaveImage": {
        "inputs": {
            "images": {"tooltip": "The images to save."},
            "filename_prefix": {
                "tooltip": "The prefix for the file to save. "
                "This may include formatting "
                "information such as "
                "%date:yyyy-MM-dd% or %Empty Latent "
                "Image.width% to include values from "
                "nodes."
            },
        }
    },
    "FluxGuidance": {
        "inputs": {"conditioning": {}},
        "output_tooltips": [None],
        "display_name": None,
        "v3": True,
    },
    "PrimitiveString": {
        "inputs": {"value": {"multiline": False}},
        "output_tooltips": [None],
        "v3": True,
    },
    "StringLength": {"output_tooltips": [None], "v3": True},
    "EmptyImage": {"inputs": {"color": {"display": "color"}}},
    "ImageAddNoise": {
        "inputs": {
            "seed": {
                "control_after_generate": True,
                "tooltip": "The random seed used for creating the noise.",
            }
        }
    },
    "ImageBlur": {
        "inputs": {"image": {}},
        "output_tooltips": [None],
        "display_name": None,
        "v3": True,
    },
}


@dataclass(frozen=True)
class _NodeDef:
    name: str
    display_name: str
    category: str
    python_module: str
    required: dict[str, tuple[Any, ...]]
    outputs: tuple[str, ...]
    output_names: tuple[str, ...]
    optional: dict[str, tuple[Any, ...]] = field(default_factory=dict)
    hidden: dict[str, str] = field(default_factory=dict)
    output_node: bool = False
    description: str = ""

    def __post_init__(self) -> None:
        # What the real node classes add (tooltips, widget hints): one table, _REAL_NODES.
        real = _REAL_NODES.get(self.name, {})
        extras = real.get("inputs", {})
        v3 = "v3" in real
        for attr in ("required", "optional"):
            specs = {}
            for name, spec in getattr(self, attr).items():
                if name in extras or (v3 and len(spec) == 1):
                    base = dict(spec[1]) if len(spec) > 1 else {}
                    spec = (spec[0], {**base, **extras.get(name, {})})
                specs[name] = spec
            object.__setattr__(self, attr, specs)

    def inputs(self) -> Iterable[tuple[str, tuple[Any, ...], bool]]:
        for name, spec in self.required.items():
            yield name, spec, True
        for name, spec in self.optional.items():
            yield name, spec, False

    def object_info(self) -> dict[str, Any]:
        inputs: dict[str, Any] = {"required": {k: list(v) for k, v in self.required.items()}}
        order: dict[str, Any] = {"required": list(self.required)}
        if self.optional:
            inputs["optional"] = {k: list(v) for k, v in self.optional.items()}
            order["optional"] = list(self.optional)
        if self.hidden:
            inputs["hidden"] = dict(self.hidden)
            order["hidden"] = list(self.hidden)
        real = _REAL_NODES.get(self.name, {})
        info = {
            "input": inputs,
            "input_order": order,
            "output": list(self.outputs),
            "output_is_list": [False] * len(self.outputs),
            "output_name": list(self.output_names),
            "name": self.name,
            "display_name": real.get("display_name", self.display_name),
            "description": real.get("description", self.description),
            "python_module": self.python_module,
            "category": self.category,
            "output_node": self.output_node,
        }
        # server.py node_info: a V1 node has output_tooltips only if it sets OUTPUT_TOOLTIPS,
        # and no deprecated/experimental/api_node keys unless set; a V3 node (NodeInfoV1
        # dataclass) has every key.
        if "output_tooltips" in real:
            info["output_tooltips"] = real["output_tooltips"]
        if "v3" in real:
            info.update(deprecated=False, experimental=False, api_node=False)
        return info


def _node_defs(models: Mapping[str, list[str]]) -> dict[str, _NodeDef]:
    """The nodes the double knows, with combo options built from the installed models."""

    def size(default: int, step: int) -> tuple[Any, ...]:
        return ("INT", {"default": default, "min": 16, "max": _MAX_RESOLUTION, "step": step})

    batch = ("INT", {"default": 1, "min": 1, "max": 4096})
    encoders = list(models["text_encoders"])
    defs = [
        _NodeDef(
            "UNETLoader",
            "Load Diffusion Model",
            "advanced/loaders",
            "nodes",
            {
                "unet_name": (list(models["diffusion_models"]),),
                "weight_dtype": (["default", "fp8_e4m3fn", "fp8_e4m3fn_fast", "fp8_e5m2"],),
            },
            ("MODEL",),
            ("MODEL",),
        ),
        _NodeDef(
            "DualCLIPLoader",
            "DualCLIPLoader",
            "advanced/loaders",
            "nodes",
            {
                "clip_name1": (encoders,),
                "clip_name2": (encoders,),
                "type": (["sdxl", "sd3", "flux", "hunyuan_video", "hidream", "hunyuan_image"],),
            },
            ("CLIP",),
            ("CLIP",),
            optional={"device": (["default", "cpu"], {"advanced": True})},
        ),
        _NodeDef(
            "VAELoader",
            "Load VAE",
            "loaders",
            "nodes",
            {"vae_name": ([*models["vae"], "pixel_space"],)},
            ("VAE",),
            ("VAE",),
        ),
        _NodeDef(
            "CLIPTextEncode",
            "CLIP Text Encode (Prompt)",
            "conditioning",
            "nodes",
            {
                "text": ("STRING", {"multiline": True, "dynamicPrompts": True}),
                "clip": ("CLIP",),
            },
            ("CONDITIONING",),
            ("CONDITIONING",),
        ),
        _NodeDef(
            "EmptyLatentImage",
            "Empty Latent Image",
            "latent",
            "nodes",
            {"width": size(512, 8), "height": size(512, 8), "batch_size": batch},
            ("LATENT",),
            ("LATENT",),
        ),
        _NodeDef(
            "EmptySD3LatentImage",
            "EmptySD3LatentImage",
            "latent/sd3",
            "comfy_extras.nodes_sd3",
            {"width": size(1024, 16), "height": size(1024, 16), "batch_size": batch},
            ("LATENT",),
            ("LATENT",),
        ),
        _NodeDef(
            "ModelSamplingFlux",
            "ModelSamplingFlux",
            "advanced/model",
            "comfy_extras.nodes_model_advanced",
            {
                "model": ("MODEL",),
                "max_shift": ("FLOAT", {"default": 1.15, "min": 0.0, "max": 100.0, "step": 0.01}),
                "base_shift": ("FLOAT", {"default": 0.5, "min": 0.0, "max": 100.0, "step": 0.01}),
                "width": size(1024, 8),
                "height": size(1024, 8),
            },
            ("MODEL",),
            ("MODEL",),
        ),
        _NodeDef(
            "KSampler",
            "KSampler",
            "sampling",
            "nodes",
            {
                "model": ("MODEL",),
                "seed": ("INT", {"default": 0, "min": 0, "max": 0xFFFFFFFFFFFFFFFF}),
                "steps": ("INT", {"default": 20, "min": 1, "max": 10000}),
                "cfg": ("FLOAT", {"default": 8.0, "min": 0.0, "max": 100.0, "step": 0.1}),
                "sampler_name": (list(_SAMPLERS),),
                "scheduler": (list(_SCHEDULERS),),
                "positive": ("CONDITIONING",),
                "negative": ("CONDITIONING",),
                "latent_image": ("LATENT",),
                "denoise": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01}),
            },
            ("LATENT",),
            ("LATENT",),
        ),
        _NodeDef(
            "VAEDecode",
            "VAE Decode",
            "latent",
            "nodes",
            {"samples": ("LATENT",), "vae": ("VAE",)},
            ("IMAGE",),
            ("IMAGE",),
        ),
        _NodeDef(
            "SaveImage",
            "Save Image",
            "image",
            "nodes",
            {"images": ("IMAGE",), "filename_prefix": ("STRING", {"default": "ComfyUI"})},
            (),
            (),
            hidden={"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"},
            output_node=True,
            description="Saves the input images to your ComfyUI output directory.",
        ),
        _NodeDef(
            "FluxGuidance",
            "FluxGuidance",
            "advanced/conditioning/flux",
            "comfy_extras.nodes_flux",
            {
                "conditioning": ("CONDITIONING",),
                "guidance": ("FLOAT", {"default": 3.5, "min": 0.0, "max": 100.0, "step": 0.1}),
            },
            ("CONDITIONING",),
            ("CONDITIONING",),
        ),
        # Model-free core nodes (the recorded real session's graph uses these).
        _NodeDef(
            "PrimitiveString",
            "String",
            "utils/primitive",
            "comfy_extras.nodes_primitive",
            {"value": ("STRING", {})},
            ("STRING",),
            ("STRING",),
        ),
        _NodeDef(
            "StringLength",
            "Length",
            "utils/string",
            "comfy_extras.nodes_string",
            {"string": ("STRING", {"multiline": True})},
            ("INT",),
            ("length",),
        ),
        _NodeDef(
            "EmptyImage",
            "EmptyImage",
            "image",
            "nodes",
            {
                "width": ("INT", {"default": 512, "min": 1, "max": _MAX_RESOLUTION, "step": 1}),
                "height": ("INT", {"default": 512, "min": 1, "max": _MAX_RESOLUTION, "step": 1}),
                "batch_size": batch,
                "color": ("INT", {"default": 0, "min": 0, "max": 0xFFFFFF, "step": 1}),
            },
            ("IMAGE",),
            ("IMAGE",),
        ),
        _NodeDef(
            "ImageAddNoise",
            "ImageAddNoise",
            "image",
            "comfy_extras.nodes_images",
            {
                "image": ("IMAGE",),
                "seed": ("INT", {"default": 0, "min": 0, "max": 0xFFFFFFFFFFFFFFFF}),
                "strength": ("FLOAT", {"default": 0.5, "min": 0.0, "max": 1.0, "step": 0.01}),
            },
            ("IMAGE",),
            ("IMAGE",),
        ),
        _NodeDef(
            "ImageBlur",
            "Image Blur",
            "image/postprocessing",
            "comfy_extras.nodes_post_processing",
            {
                "image": ("IMAGE",),
                "blur_radius": ("INT", {"default": 1, "min": 1, "max": 31, "step": 1}),
                "sigma": ("FLOAT", {"default": 1.0, "min": 0.1, "max": 10.0, "step": 0.1}),
            },
            ("IMAGE",),
            ("IMAGE",),
        ),
        _NodeDef(
            "ImageFromBatch",
            "ImageFromBatch",
            "image/batch",
            "comfy_extras.nodes_images",
            {
                "image": ("IMAGE",),
                "batch_index": ("INT", {"default": 0, "min": 0, "max": 4095}),
                "length": ("INT", {"default": 1, "min": 1, "max": 4096}),
            },
            ("IMAGE",),
            ("IMAGE",),
        ),
        _NodeDef(
            "SaveImageWebsocket",
            "SaveImageWebsocket",
            "api/image",
            "custom_nodes.websocket_image_save",
            {"images": ("IMAGE",)},
            (),
            (),
            output_node=True,
        ),
        _NodeDef(
            "ConditioningZeroOut",
            "ConditioningZeroOut",
            "advanced/conditioning",
            "nodes",
            {"conditioning": ("CONDITIONING",)},
            ("CONDITIONING",),
            ("CONDITIONING",),
        ),
    ]
    # PreviewImage subclasses SaveImage (nodes.py): its description too, without the prefix.
    save = next(d for d in defs if d.name == "SaveImage")
    # comfy_extras/nodes_images.py: the animated savers share SaveImage's inputs, plus fps.
    fps = ("FLOAT", {"default": 6.0, "min": 0.01, "max": 1000.0, "step": 0.01})
    for name, more in (
        (
            "SaveAnimatedWEBP",
            {
                "lossless": ("BOOLEAN", {"default": True}),
                "quality": ("INT", {"default": 80, "min": 0, "max": 100}),
                "method": (["default", "fastest", "slowest"],),
            },
        ),
        ("SaveAnimatedPNG", {"compress_level": ("INT", {"default": 4, "min": 0, "max": 9})}),
    ):
        defs.append(
            replace(
                save,
                name=name,
                display_name=name,
                category="image/animation",
                python_module="comfy_extras.nodes_images",
                required={**save.required, "fps": fps, **more},
                description="",
            )
        )
    defs.append(
        replace(
            save, name="PreviewImage", display_name="Preview Image", required={"images": ("IMAGE",)}
        )
    )
    return {d.name: d for d in defs}


# ------------------------------------------------------------------------------- validation


def _is_link(value: Any) -> bool:
    return isinstance(value, list)


def _validate_inputs(
    graph: dict[str, Any],
    node_id: str,
    defs: Mapping[str, _NodeDef],
    validated: dict[str, tuple[bool, list[dict[str, Any]]]],
    visiting: list[str],
) -> tuple[bool, list[dict[str, Any]]]:
    """execution.validate_inputs: own errors of one node, recursing into linked nodes.

    Like ComfyUI, a node that is invalid only because an upstream node is invalid gets no
    errors of its own, and Python exceptions (a link to a missing node) propagate to the caller.
    """
    if node_id in validated:
        return validated[node_id]
    if node_id in visiting:
        cycle = visiting[visiting.index(node_id) :] + [node_id]
        path = " -> ".join(f"{n} ({graph[n]['class_type']})" for n in cycle)
        for n in cycle[:-1]:
            validated[n] = (
                False,
                [
                    {
                        "type": "dependency_cycle",
                        "message": "Dependency cycle detected",
                        "details": path,
                        "extra_info": {"node_id": n, "cycle_nodes": cycle[:-1]},
                    }
                ],
            )
        return validated[node_id]
    inputs = graph[node_id]["inputs"]
    spec = defs[graph[node_id]["class_type"]]
    errors: list[dict[str, Any]] = []
    valid = True
    for name, info, required in spec.inputs():
        input_type = info[0]
        extra = dict(info[1]) if len(info) > 1 else {}
        config = [input_type, extra]
        if name not in inputs:
            if required:
                errors.append(
                    {
                        "type": "required_input_missing",
                        "message": "Required input is missing",
                        "details": name,
                        "extra_info": {"input_name": name},
                    }
                )
            continue
        val = inputs[name]
        if _is_link(val):
            if len(val) != 2:
                errors.append(
                    {
                        "type": "bad_linked_input",
                        "message": "Bad linked input, must be a length-2 list of [node_id, slot_index]",
                        "details": name,
                        "extra_info": {
                            "input_name": name,
                            "input_config": config,
                            "received_value": val,
                        },
                    }
                )
                continue
            source_id = val[0]
            # These lookups raise KeyError/IndexError/TypeError on a bad link, as in ComfyUI.
            received_type = defs[graph[source_id]["class_type"]].outputs[val[1]]
            if received_type != input_type and "*" not in (received_type, input_type):
                errors.append(
                    {
                        "type": "return_type_mismatch",
                        "message": "Return type mismatch between linked nodes",
                        "details": f"{name}, received_type({received_type}) mismatch input_type({input_type})",
                        "extra_info": {
                            "input_name": name,
                            "input_config": config,
                            "received_type": received_type,
                            "linked_node": val,
                        },
                    }
                )
                continue
            try:
                visiting.append(node_id)
                try:
                    upstream = _validate_inputs(graph, source_id, defs, validated, visiting)
                finally:
                    visiting.pop()
                if upstream[0] is False:
                    valid = False
                    continue
            except Exception as ex:
                valid = False
                validated[source_id] = (
                    False,
                    [
                        {
                            "type": "exception_during_inner_validation",
                            "message": "Exception when validating inner node",
                            "details": str(ex),
                            "extra_info": {
                                "input_name": name,
                                "input_config": config,
                                "exception_message": str(ex),
                                "exception_type": _full_type_name(type(ex)),
                                "traceback": traceback.format_tb(ex.__traceback__),
                                "linked_node": val,
                            },
                        }
                    ],
                )
                continue
            continue
        try:
            if isinstance(val, dict) and "__value__" in val:
                val = inputs[name] = val["__value__"]
            # ComfyUI coerces literals in place, so the queued graph holds the converted values.
            if input_type == "INT":
                val = inputs[name] = int(val)
            elif input_type == "FLOAT":
                val = inputs[name] = float(val)
            elif input_type == "STRING":
                val = inputs[name] = str(val)
            elif input_type == "BOOLEAN":
                val = inputs[name] = bool(val)
        except Exception as ex:
            errors.append(
                {
                    "type": "invalid_input_type",
                    "message": f"Failed to convert an input value to a {input_type} value",
                    "details": f"{name}, {val}, {ex}",
                    "extra_info": {
                        "input_name": name,
                        "input_config": config,
                        "received_value": val,
                        "exception_message": str(ex),
                    },
                }
            )
            continue
        if "min" in extra and val < extra["min"]:
            errors.append(
                {
                    "type": "value_smaller_than_min",
                    "message": f"Value {val} smaller than min of {extra['min']}",
                    "details": name,
                    "extra_info": {
                        "input_name": name,
                        "input_config": config,
                        "received_value": val,
                    },
                }
            )
            continue
        if "max" in extra and val > extra["max"]:
            errors.append(
                {
                    "type": "value_bigger_than_max",
                    "message": f"Value {val} bigger than max of {extra['max']}",
                    "details": name,
                    "extra_info": {
                        "input_name": name,
                        "input_config": config,
                        "received_value": val,
                    },
                }
            )
            continue
        if isinstance(input_type, list) and val not in input_type:
            # Long lists (many scanned model files) are summarised, as ComfyUI does.
            big = len(input_type) > 20
            listed = f"(list of length {len(input_type)})" if big else str(input_type)
            errors.append(
                {
                    "type": "value_not_in_list",
                    "message": "Value not in list",
                    "details": f"{name}: {val!r} not in {listed}",
                    "extra_info": {
                        "input_name": name,
                        "input_config": None if big else config,
                        "received_value": val,
                    },
                }
            )
            continue
    previous = validated.get(node_id, (True, []))
    result = (
        previous[0] and valid and not errors,
        previous[1] + [e for e in errors if e not in previous[1]],
    )
    validated[node_id] = result
    return result


def _validate_prompt(
    graph: dict[str, Any], defs: Mapping[str, _NodeDef], targets: list[str] | None
) -> tuple[bool, dict[str, Any] | None, list[str], dict[str, Any]]:
    """execution.validate_prompt: (ok, error, good_outputs, node_errors)."""
    outputs: list[str] = []
    for node_id, node in graph.items():
        if not isinstance(node, dict) or "class_type" not in node:
            return (
                False,
                {
                    "type": "invalid_prompt",
                    "message": "Cannot execute because a node is missing the class_type property.",
                    "details": f"Node ID '#{node_id}'",
                    "extra_info": {},
                },
                [],
                {},
            )
        spec = defs.get(node["class_type"]) if isinstance(node["class_type"], str) else None
        if spec is None:
            return (
                False,
                {
                    "type": "invalid_prompt",
                    "message": f"Cannot execute because node {node['class_type']} does not exist.",
                    "details": f"Node ID '#{node_id}'",
                    "extra_info": {},
                },
                [],
                {},
            )
        if spec.output_node and (targets is None or node_id in targets):
            outputs.append(node_id)
    if not outputs:
        return (
            False,
            {
                "type": "prompt_no_outputs",
                "message": "Prompt has no outputs",
                "details": "",
                "extra_info": {},
            },
            [],
            {},
        )
    good: list[str] = []
    failed: list[tuple[str, list[dict[str, Any]]]] = []
    node_errors: dict[str, Any] = {}
    validated: dict[str, tuple[bool, list[dict[str, Any]]]] = {}
    for out in outputs:
        try:
            ok, reasons = _validate_inputs(graph, out, defs, validated, [])
        except Exception as ex:
            ok = False
            reasons = [
                {
                    "type": "exception_during_validation",
                    "message": "Exception when validating node",
                    "details": str(ex),
                    "extra_info": {
                        "exception_type": _full_type_name(type(ex)),
                        "traceback": traceback.format_tb(ex.__traceback__),
                    },
                }
            ]
            validated[out] = (False, reasons)
        if ok:
            good.append(out)
            continue
        failed.append((out, reasons))
        for node_id, (node_ok, node_reasons) in validated.items():
            if node_ok or not node_reasons:
                continue
            entry = node_errors.setdefault(
                node_id,
                {
                    "errors": node_reasons,
                    "dependent_outputs": [],
                    "class_type": graph[node_id]["class_type"],
                },
            )
            entry["dependent_outputs"].append(out)
    if not good:
        # As in ComfyUI, details only lists the output nodes' OWN errors (often none).
        lines = [f"{e['message']}: {e['details']}" for _, reasons in failed for e in reasons]
        return (
            False,
            {
                "type": "prompt_outputs_failed_validation",
                "message": "Prompt outputs failed validation",
                "details": "\n".join(lines),
                "extra_info": {},
            },
            [],
            node_errors,
        )
    return True, None, good, node_errors


# ------------------------------------------------------------------------------- execution


@dataclass
class _Value:
    """A node output inside the double; `repr_` is what ComfyUI's error payloads would show."""

    kind: str
    info: dict[str, Any]
    repr_: str

    def __str__(self) -> str:
        return self.repr_


class _Interrupted(Exception):
    def __init__(self, node_id: str) -> None:
        super().__init__(node_id)
        self.node_id = node_id


class _NodeFailed(Exception):
    def __init__(
        self,
        node_id: str,
        message: str,
        exception_type: str,
        inputs: dict[str, Any],
    ) -> None:
        super().__init__(message)
        self.node_id = node_id
        self.message = message
        self.exception_type = exception_type
        self.inputs = inputs


@dataclass
class _Fault:
    status: int
    body: str | dict[str, Any] | None
    after: bool


@dataclass
class _ExecFault:
    node_type: str
    message: str
    exception_type: str
    after_steps: int


@dataclass
class _Run:
    number: float
    prompt_id: str
    graph: dict[str, Any]
    extra_data: dict[str, Any]
    outputs_to_execute: list[str]
    client_id: str | None
    messages: list[list[Any]] = field(default_factory=list)
    interrupted: bool = False
    progress_sent: int = 0
    drop_after: int | None = None
    drop_abrupt: bool = True
    exec_fault: _ExecFault | None = None
    progress_nodes: dict[str, Any] = field(default_factory=dict)


class _ExecutionList:
    """comfy_execution/graph.py ExecutionList: the order ComfyUI runs a prompt's nodes in.

    Nodes enter in add_node's depth-first order (inputs pushed in the graph's key order,
    popped last first); cached nodes are never added unless they are outputs themselves. Of
    the ready nodes (nothing pending upstream) ux_friendly_pick_node takes an output node,
    else one feeding an output, else one two links from an output, else the first.
    """

    def __init__(
        self, graph: dict[str, Any], defs: Mapping[str, _NodeDef], cached: set[str]
    ) -> None:
        self.graph, self.defs, self.cached = graph, defs, cached
        self.pending: dict[str, bool] = {}
        self.block_count: dict[str, int] = {}
        self.blocking: dict[str, dict[str, bool]] = {}

    def add_node(self, node_id: str) -> None:
        stack, links = [node_id], []
        while stack:
            unique_id = stack.pop()
            if unique_id in self.pending:
                continue
            self.pending[unique_id] = True
            self.block_count[unique_id] = 0
            self.blocking[unique_id] = {}
            for value in self.graph[unique_id]["inputs"].values():
                if _is_link(value) and len(value) == 2 and value[0] not in self.cached:
                    stack.append(value[0])
                    links.append((value[0], unique_id))
        for source, target in links:
            if target not in self.blocking[source]:
                self.blocking[source][target] = True
                self.block_count[target] += 1

    def _is_output(self, node_id: str) -> bool:
        spec = self.defs.get(self.graph[node_id]["class_type"])
        return spec is not None and spec.output_node

    def next(self) -> str | None:
        ready = [n for n in self.pending if self.block_count[n] == 0]
        if not ready:
            return None
        for node_id in ready:
            if self._is_output(node_id):
                return node_id
        for node_id in ready:
            if any(self._is_output(b) for b in self.blocking[node_id]):
                return node_id
        for node_id in ready:
            for b in self.blocking[node_id]:
                if any(self._is_output(b1) for b1 in self.blocking[b]):
                    return node_id
        return ready[0]

    def complete(self, node_id: str) -> None:
        del self.pending[node_id]
        for target in self.blocking.pop(node_id):
            self.block_count[target] -= 1


def _traceback(node_def: _NodeDef | None) -> list[str]:
    """What traceback.format_tb gives for an exception a node raised inside execution.py."""
    module = node_def.python_module.replace(".", "/") if node_def else "nodes"
    function = _FUNCTIONS.get(node_def.name if node_def else "", "execute")
    return [
        *_FAKE_TRACEBACK,
        '  File "/ComfyUI/execution.py", line 289, in _async_map_node_over_list\n'
        "    await process_inputs(input_dict, i)\n",
        '  File "/ComfyUI/execution.py", line 277, in process_inputs\n    result = f(**inputs)\n',
        f'  File "/ComfyUI/{module}.py", line 1, in {function}\n',
    ]


def _render(width: int, height: int, seed: int, index: int) -> Image.Image:
    # A 4x4 palette from the seed, stretched: deterministic, cheap at any size, not flat.
    rng = random.Random(f"{seed}:{index}")
    small = Image.new("RGB", (4, 4))
    small.putdata([(rng.randrange(256), rng.randrange(256), rng.randrange(256)) for _ in range(16)])
    return small.resize((width, height), Image.Resampling.BILINEAR)


def _next_counter(folder: str, base: str) -> int:
    # folder_paths.get_save_image_path: one past the highest `{base}_NNNNN_` already there.
    pattern = re.compile(rf"^{re.escape(base)}_(\d+)_")
    highest = 0
    with contextlib.suppress(FileNotFoundError):
        for name in os.listdir(folder):
            m = pattern.match(name)
            if m:
                highest = max(highest, int(m.group(1)))
    return highest + 1


def _save_path(output_dir: str, prefix: str, width: int, height: int) -> tuple[str, str, str, int]:
    """folder_paths.get_save_image_path: (folder, subfolder, base name, counter) of a prefix."""
    prefix = prefix.replace("%width%", str(width)).replace("%height%", str(height))
    subfolder = os.path.dirname(os.path.normpath(prefix))
    base = os.path.basename(os.path.normpath(prefix))
    folder = os.path.join(output_dir, subfolder)
    if os.path.commonpath((output_dir, os.path.abspath(folder))) != output_dir:
        raise _SaveOutsideOutput(
            "**** ERROR: Saving image outside the output folder is not allowed."
            f"\n full_output_folder: {os.path.abspath(folder)}\n         output_dir: {output_dir}"
        )
    os.makedirs(folder, exist_ok=True)
    return folder, subfolder, base, _next_counter(folder, base)


def _save_pngs(
    output_dir: str,
    prefix: str,
    image: _Value,
    graph: dict[str, Any],
    extra_pnginfo: Any,
    folder_type: str = "output",
) -> list[dict[str, str]]:
    """SaveImage: `{prefix}_{counter:05}_.png`, subfolder from the prefix, PNG text chunks
    (PreviewImage: the same into the temp directory, `type` "temp")."""
    width, height = int(image.info["width"]), int(image.info["height"])
    folder, subfolder, base, counter = _save_path(output_dir, prefix, width, height)
    results = []
    for index in range(int(image.info["batch"])):
        meta = PngInfo()
        meta.add_text("prompt", json.dumps(graph))
        if isinstance(extra_pnginfo, dict):
            for key, value in extra_pnginfo.items():
                meta.add_text(key, json.dumps(value))
        name = f"{base.replace('%batch_num%', str(index))}_{counter:05}_.png"
        buf = io.BytesIO()
        _render(width, height, int(image.info["seed"]), index).save(
            buf, "PNG", pnginfo=meta, compress_level=4
        )
        with open(os.path.join(folder, name), "wb") as fh:
            fh.write(buf.getvalue())
        results.append({"filename": name, "subfolder": subfolder, "type": folder_type})
        counter += 1
    return results


def _save_animated(
    output_dir: str, prefix: str, image: _Value, graph: dict[str, Any], fmt: str
) -> dict[str, Any]:
    """SaveAnimatedWEBP / SaveAnimatedPNG (comfy_extras/nodes_images.py): the whole batch as
    the frames of one `{prefix}_{counter:05}_.webp` (or .png, an APNG); the ui carries
    `animated`, as a list once it is JSON (WEBP: more than one frame; APNG: always true)."""
    width, height = int(image.info["width"]), int(image.info["height"])
    folder, subfolder, base, counter = _save_path(output_dir, prefix, width, height)
    frames = [
        _render(width, height, int(image.info["seed"]), i) for i in range(int(image.info["batch"]))
    ]
    name = f"{base}_{counter:05}_.{fmt}"
    buf = io.BytesIO()
    if fmt == "webp":
        exif = frames[0].getexif()
        exif[0x0110] = f"prompt:{json.dumps(graph)}"
        frames[0].save(
            buf,
            "WEBP",
            save_all=True,
            append_images=frames[1:],
            duration=166,
            exif=exif,
            lossless=True,
        )
        animated = len(frames) != 1
    else:
        frames[0].save(
            buf, "PNG", save_all=True, append_images=frames[1:], duration=166, compress_level=4
        )
        animated = True
    with open(os.path.join(folder, name), "wb") as fh:
        fh.write(buf.getvalue())
    return {
        "images": [{"filename": name, "subfolder": subfolder, "type": "output"}],
        "animated": [animated],
    }


class _SaveOutsideOutput(Exception):
    pass


def _plain(value: Any) -> Any:
    """A primitive input's value, whether literal or linked from a node's output."""
    return value.info.get("value") if isinstance(value, _Value) else value


# ------------------------------------------------------------------------------------ server


class ComfyUIDouble:
    """A running ComfyUI double on 127.0.0.1; ready when the constructor returns.

    Scripting methods are thread-safe; they take effect on the server's own event loop.
    """

    def __init__(
        self,
        step_time: float = 0.0,
        models: Mapping[str, list[str]] | None = None,
        models_dir: str | os.PathLike[str] | None = None,
        output_dir: str | os.PathLike[str] | None = None,
        token: str | None = None,
        port: int = 0,
        host: str = "127.0.0.1",
        node_time: float = 0.0,
        device: str = "cuda",
    ) -> None:
        self.step_time = step_time
        # Seconds of work every node but the sampler takes (the sampler takes step_time per
        # step); node_times overrides it per class. An interrupt waits for that work to end.
        self.node_time = node_time
        self.node_times: dict[str, float] = {}
        # "cuda" (a 24 GiB card) or "cpu" (ComfyUI on --cpu: memory figures are the RAM's).
        self.device = device
        # After a prompt, main.prompt_worker may run gc.collect() (at most every 10 s); it
        # holds the GIL, so the HTTP loop stalls this long. 0: no pause.
        self.gc_pause = 0.0
        self.token = token
        self.node_errors_with_200 = False
        self.send_progress_state = True  # ComfyUI >= 0.3.4x also sends `progress_state`
        self.vram_used_while_executing = 12 * _GIB  # a FLUX fp8 UNet plus text encoders
        self.models_dir = os.path.abspath(models_dir) if models_dir is not None else None
        # Per-folder overrides; keys may be the legacy names (unet, clip).
        self.models: dict[str, list[str]] = {
            _FOLDER_ALIASES.get(k, k): list(v) for k, v in (models or {}).items()
        }
        self._own_dirs = output_dir is None
        base = tempfile.mkdtemp(prefix="comfyui-double-")
        self.output_dir = (
            os.path.abspath(output_dir) if output_dir else os.path.join(base, "output")
        )
        self.input_dir = os.path.join(base, "input")
        self.temp_dir = os.path.join(base, "temp")
        self._base_dir = base
        for d in (self.output_dir, self.input_dir, self.temp_dir):
            os.makedirs(d, exist_ok=True)

        self._lock = threading.RLock()
        self._cond = threading.Condition(self._lock)
        self._executed = 0
        self._submitted = 0
        self._number = 0
        self._queue: list[tuple[Any, ...]] = []
        self._running: tuple[Any, ...] | None = None
        self._run: _Run | None = None
        self._history: dict[str, dict[str, Any]] = {}
        self._events: dict[str, list[tuple[str, dict[str, Any]]]] = {}
        self._requests: list[tuple[str, str]] = []
        self._sockets: dict[str, web.WebSocketResponse] = {}
        self._transports: dict[str, Any] = {}
        self._open_transports: set[Any] = set()  # every websocket's, in the table or not
        self._websockets_opened = 0
        self._last_node_id: str | None = None
        self._cache: dict[str, tuple[list[_Value], dict[str, Any] | None]] = {}
        self._fails: dict[str, deque[_Fault]] = {r: deque() for r in _ROUTES}
        self._slows: dict[str, deque[float]] = {r: deque() for r in _ROUTES}
        self._exec_faults: deque[_ExecFault] = deque()
        self._ws_drops: deque[tuple[int, bool]] = deque()
        self._holds = 0
        self._hold_event: asyncio.Event | None = None
        self._held: str | None = None
        self._closed = False
        self._offline = False
        self.reject_websockets = False
        self._hold_step: int | None = None
        self._node_holds: deque[str] = deque()
        self._node_hold_event: asyncio.Event | None = None
        self._last_gc = 0.0

        self._loop = asyncio.new_event_loop()
        self._wake = asyncio.Event()
        self._thread = threading.Thread(target=self._loop.run_forever, name="comfyui-double")
        self._thread.daemon = True
        self._thread.start()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
            sock.listen(128)
            sock.setblocking(False)
            self.host, self.port = host, int(sock.getsockname()[1])
            self.url = f"http://{host}:{self.port}"
            self._call(self._start(sock))
        except BaseException:
            sock.close()
            self._stop_loop()
            raise

    # ----------------------------------------------------------------- public, thread-safe

    @property
    def executed(self) -> int:
        """Prompts whose sampler actually ran (a fully cached re-run does not count)."""
        with self._lock:
            return self._executed

    @property
    def submitted(self) -> int:
        """Prompts accepted (queued) by POST /prompt."""
        with self._lock:
            return self._submitted

    @property
    def requests(self) -> list[tuple[str, str]]:
        """(method, path_qs) of every HTTP request and websocket upgrade received."""
        with self._lock:
            return list(self._requests)

    @property
    def held(self) -> str | None:
        """The prompt id currently parked by hold_next(), else None."""
        with self._lock:
            return self._held

    @property
    def running(self) -> str | None:
        """The prompt id the worker is executing, else None."""
        with self._lock:
            return self._running[1] if self._running else None

    @property
    def websockets_opened(self) -> int:
        """Websocket connections put in the socket table so far (reconnections included)."""
        with self._lock:
            return self._websockets_opened

    @property
    def clients(self) -> list[str]:
        """Client ids with an open websocket."""
        with self._lock:
            return list(self._sockets)

    def history(self, prompt_id: str) -> dict[str, Any] | None:
        """The /history entry for a finished prompt, else None."""
        with self._lock:
            entry = self._history.get(prompt_id)
            return copy.deepcopy(entry) if entry is not None else None

    def events_for(self, prompt_id: str) -> list[tuple[str, dict[str, Any]]]:
        """Websocket messages (type, data) emitted for this prompt, delivered or dropped."""
        with self._lock:
            return copy.deepcopy(self._events.get(prompt_id, []))

    def wait_until(self, predicate: Callable[[ComfyUIDouble], bool], timeout: float = 60.0) -> None:
        """Block until predicate(self) holds; re-checked on every server state change."""
        with self._cond:
            if not self._cond.wait_for(lambda: predicate(self), timeout=timeout):
                raise TimeoutError(f"condition not met within {timeout}s")

    def fail_next(
        self,
        route: str,
        status: int = 500,
        times: int = 1,
        body: str | dict[str, Any] | None = None,
        after: bool = False,
    ) -> None:
        """The next `times` requests to `route` answer `status`.

        `body` defaults to aiohttp's text for an unhandled exception (500) or `"{status}: {reason}"`;
        a dict is sent as JSON. With `after=True` the request is processed first (a POST /prompt
        is queued) and only the response is replaced, modelling a lost reply.
        """
        self._check_route(route)
        with self._lock:
            self._fails[route].extend(_Fault(status, body, after) for _ in range(times))

    def slow_next(self, route: str, seconds: float, times: int = 1) -> None:
        """Delay the next `times` requests to `route` by `seconds` before handling them."""
        self._check_route(route)
        with self._lock:
            self._slows[route].extend(seconds for _ in range(times))

    def execution_error(
        self,
        node_type: str = "KSampler",
        message: str = "CUDA error: an illegal memory access was encountered",
        exception_type: str = "RuntimeError",
        times: int = 1,
        after_steps: int = 0,
    ) -> None:
        """The next `times` executions fail at their first `node_type` node (after `after_steps`
        sampler steps if it is a sampler). Use exception_type="torch.OutOfMemoryError" for OOM."""
        with self._lock:
            self._exec_faults.extend(
                _ExecFault(node_type, message, exception_type, after_steps) for _ in range(times)
            )

    def drop_ws_after_progress(self, n: int, times: int = 1, abrupt: bool = True) -> None:
        """In the next `times` executions, close the submitting client's websocket(s) right after
        the n-th `progress` message; the run goes on and lands in history. `abrupt` drops the TCP
        connection without a close frame (a network failure); False sends close code 1001."""
        with self._lock:
            self._ws_drops.extend((n, abrupt) for _ in range(times))

    def hold_next(self) -> None:
        """Park the next execution just before its first sampler step (or, with no sampler to
        run, right after execution_cached) until release() or an interrupt."""
        with self._lock:
            self._holds += 1

    def hold_at_step(self, step: int) -> None:
        """Park the next sampler run after its `step`-th step until release() or an interrupt
        (a long job caught mid-way, deterministically)."""
        with self._lock:
            self._hold_step = step

    def hold_in_node(self, class_type: str) -> None:
        """Park the next execution inside the work of its first `class_type` node (after its
        `executing`) until release(). An interrupt does not end the park: like ComfyUI, it
        lands at the next node boundary or progress callback (a CPU ImageBlur that takes
        24 s to notice one)."""
        with self._lock:
            self._node_holds.append(class_type)

    def release(self) -> None:
        """Let the held execution go on; with none held yet, cancel one pending hold."""
        with self._lock:
            if self._node_hold_event is not None:
                self._loop.call_soon_threadsafe(self._node_hold_event.set)
            elif self._hold_event is not None:
                self._loop.call_soon_threadsafe(self._hold_event.set)
            elif self._holds > 0:
                self._holds -= 1

    def go_offline(self) -> None:
        """The network to the server drops (an ssh tunnel closing, a Wi-Fi blip): the port
        refuses connections and open ones (websockets, keep-alive) are cut, while the worker
        goes on executing and finishes what runs, as a real ComfyUI would."""
        self._call(self._go_offline())

    def go_online(self) -> None:
        """The network is back: the same port accepts connections again."""
        self._call(self._go_online())

    def restart(self) -> None:
        """ComfyUI restarts: everything in memory is gone (queue, running prompt, history,
        cache, websockets); files in the output dir stay. Serving resumes on the same port."""
        self._call(self._restart())

    def kill(self) -> None:
        """ComfyUI's process dies (a pool member lost): the port refuses connections, open
        ones are cut, and the queue, the running prompt and the history are gone (files in
        the output dir stay). `revive()` serves again on the same port, empty, as a restarted
        ComfyUI would."""
        self._call(self._kill())

    def revive(self) -> None:
        self._call(self._go_online())

    def close(self) -> None:
        """Stop serving: open websockets are cut, a held or running execution is abandoned."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        with contextlib.suppress(Exception):
            self._call(self._shutdown(), timeout=5.0)
        self._stop_loop()
        if self._own_dirs:
            shutil.rmtree(self._base_dir, ignore_errors=True)
        else:
            for d in (self.input_dir, self.temp_dir):
                shutil.rmtree(d, ignore_errors=True)
            with contextlib.suppress(OSError):
                os.rmdir(self._base_dir)

    def __enter__(self) -> ComfyUIDouble:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------------ internals

    @staticmethod
    def _check_route(route: str) -> None:
        if route not in _ROUTES:
            raise ValueError(f"unknown route {route!r}; expected one of {sorted(_ROUTES)}")

    def _call(self, coro: Coroutine[Any, Any, Any], timeout: float = 10.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5.0)
        if not self._thread.is_alive():
            self._loop.close()

    def _notify(self) -> None:
        with self._cond:
            self._cond.notify_all()

    def _model_lists(self) -> dict[str, list[str]]:
        lists: dict[str, list[str]] = {}
        for folder, defaults in DEFAULT_MODELS.items():
            if folder in self.models:
                lists[folder] = list(self.models[folder])
            elif self.models_dir is not None:
                lists[folder] = self._scan(folder)
            else:
                lists[folder] = list(defaults)
        return lists

    def _scan(self, folder: str) -> list[str]:
        # folder_paths.get_filename_list: recursive, known extensions, sorted, both dir names.
        assert self.models_dir is not None
        found: set[str] = set()
        for sub in _FOLDER_DIRS.get(folder, (folder,)):
            root = os.path.join(self.models_dir, sub)
            for dirpath, _dirs, files in os.walk(root, followlinks=True):
                for name in files:
                    if os.path.splitext(name)[1].lower() in _MODEL_EXTENSIONS:
                        found.add(os.path.relpath(os.path.join(dirpath, name), root))
        return sorted(found)

    async def _start(self, sock: socket.socket) -> None:
        app = web.Application(
            middlewares=[self._mw_record, self._mw_auth, self._mw_origin, self._mw_faults],
            client_max_size=100 * 1024 * 1024,
        )
        routes: list[tuple[str, str, Callable[[web.Request], Awaitable[web.StreamResponse]]]] = [
            ("GET", "/ws", self._h_ws),
            ("GET", "/", self._h_root),
            ("POST", "/prompt", self._h_post_prompt),
            ("GET", "/prompt", self._h_get_prompt),
            ("GET", "/history", self._h_history),
            ("GET", "/history/{prompt_id}", self._h_history_one),
            ("POST", "/history", self._h_post_history),
            ("GET", "/queue", self._h_queue),
            ("POST", "/queue", self._h_post_queue),
            ("POST", "/interrupt", self._h_interrupt),
            ("POST", "/free", self._h_free),
            ("GET", "/view", self._h_view),
            ("GET", "/system_stats", self._h_system_stats),
            ("GET", "/features", self._h_features),
            ("GET", "/object_info", self._h_object_info),
            ("GET", "/object_info/{node_class}", self._h_object_info_one),
            ("GET", "/models", self._h_models),
            ("GET", "/models/{folder}", self._h_models_folder),
            ("GET", "/embeddings", self._h_embeddings),
            ("GET", "/extensions", self._h_extensions),
        ]
        for method, path, handler in routes:
            app.router.add_route(method, path, handler)
            app.router.add_route(method, "/api" + path if path != "/" else "/api/", handler)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        self._site = web.SockSite(self._runner, sock)
        await self._site.start()
        self._worker_task = asyncio.get_running_loop().create_task(self._worker())

    async def _go_offline(self) -> None:
        with self._lock:
            self._offline = True
        await self._site.stop()
        for transport in list(self._open_transports):
            with contextlib.suppress(Exception):
                transport.abort()

    async def _go_online(self) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        sock.listen(128)
        sock.setblocking(False)
        self._site = web.SockSite(self._runner, sock)
        await self._site.start()
        with self._lock:
            self._offline = False
        self._notify()

    async def _restart(self) -> None:
        await self._kill()
        await self._go_online()

    async def _kill(self) -> None:
        await self._go_offline()
        self._worker_task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self._worker_task
        with self._lock:
            self._queue.clear()
            self._running = None
            self._run = None
            self._history.clear()
            self._cache = {}
            self._holds = 0
            self._held = None
            self._hold_event = None
        self._worker_task = asyncio.get_running_loop().create_task(self._worker())

    async def _shutdown(self) -> None:
        self._worker_task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self._worker_task
        for transport in list(self._open_transports):
            with contextlib.suppress(Exception):
                transport.abort()
        await self._runner.cleanup()

    # ------------------------------------------------------------------------ middleware

    @staticmethod
    def _route_of(request: web.Request) -> str | None:
        path = request.path[4:] if request.path.startswith("/api/") else request.path
        method = request.method
        if method == "POST" and path == "/prompt":
            return "prompt"
        if method == "GET" and (path == "/history" or path.startswith("/history/")):
            return "history"
        if method == "GET" and path in ("/view", "/system_stats", "/queue", "/ws"):
            return path[1:]
        if method == "POST" and path == "/interrupt":
            return "interrupt"
        if method == "GET" and path.startswith("/object_info"):
            return "object_info"
        return None

    @web.middleware
    async def _mw_record(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if self._offline and request.transport is not None:
            request.transport.abort()  # a kept-alive connection from before the drop
            return web.Response(status=503)  # never delivered: the connection is gone
        with self._lock:
            self._requests.append((request.method, request.path_qs))
        self._notify()
        return await handler(request)

    @web.middleware
    async def _mw_auth(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        # Models an auth proxy in front of ComfyUI (ComfyUI itself has no auth).
        if self.token is not None:
            if request.headers.get("Authorization", "") != f"Bearer {self.token}":
                return web.Response(
                    status=401,
                    text="401: Unauthorized",
                    headers={"WWW-Authenticate": 'Bearer realm="ComfyUI"'},
                )
        return await handler(request)

    @web.middleware
    async def _mw_origin(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        # server.py's CSRF guard: a loopback Host with a different Origin host is refused.
        host = request.headers.get("Host")
        origin = request.headers.get("Origin")
        if host and origin:
            host_parts = urlsplit("//" + host.lower())
            origin_parts = urlsplit(origin.lower())
            host_cmp = host.lower() if origin_parts.port is not None else host_parts.hostname
            origin_cmp = (
                origin_parts.netloc if host_parts.port is not None else origin_parts.hostname
            )
            if host_parts.hostname in ("127.0.0.1", "localhost", "::1") and host_cmp and origin_cmp:
                if host_cmp != origin_cmp:
                    return web.Response(status=403)
        return await handler(request)

    @web.middleware
    async def _mw_faults(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        route = self._route_of(request)
        if route is None:
            return await handler(request)
        with self._lock:
            delay = self._slows[route].popleft() if self._slows[route] else None
            fault = self._fails[route].popleft() if self._fails[route] else None
        if delay:
            await asyncio.sleep(delay)
        if fault is None:
            return await handler(request)
        if fault.after:
            with contextlib.suppress(Exception):
                await handler(request)
        if isinstance(fault.body, dict):
            return web.json_response(fault.body, status=fault.status)
        if fault.body is not None:
            return web.Response(status=fault.status, text=fault.body)
        if fault.status == 500:
            # aiohttp's answer to an unhandled exception in a handler.
            text = "500 Internal Server Error\n\nServer got itself in trouble"
            return web.Response(status=500, text=text)
        return web.Response(status=fault.status, text=f"{fault.status}: {_reason(fault.status)}")

    # -------------------------------------------------------------------------- websocket

    async def _send(self, event: str, data: dict[str, Any], sid: str | None) -> None:
        """server.send_json: to one client (dropped if it has no socket) or, with sid None, all."""
        prompt_id = data.get("prompt_id")
        if isinstance(prompt_id, str):
            with self._lock:
                self._events.setdefault(prompt_id, []).append((event, copy.deepcopy(data)))
            self._notify()
        message = json.dumps({"type": event, "data": data})
        if sid is None:
            targets = list(self._sockets.values())
        else:
            ws = self._sockets.get(sid)
            targets = [ws] if ws is not None else []
        for ws in targets:
            with contextlib.suppress(Exception):
                await ws.send_str(message)

    def _queue_info(self) -> dict[str, Any]:
        with self._lock:
            remaining = len(self._queue) + (1 if self._running else 0)
        return {"exec_info": {"queue_remaining": remaining}}

    async def _queue_updated(self) -> None:
        await self._send("status", {"status": self._queue_info()}, None)

    async def _h_ws(self, request: web.Request) -> web.StreamResponse:
        if self.reject_websockets:  # a reverse proxy without websocket support
            return web.Response(status=404, text="404: Not Found")
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        sid = request.rel_url.query.get("clientId", "") or uuid.uuid4().hex
        with self._lock:
            # Reconnecting replaces the old socket, which is left to die on its own: and when
            # it dies, its handler pops the client id whatever socket holds it now (server.py's
            # `finally: self.sockets.pop(sid, None)`), so the newer socket hears nothing more.
            self._sockets[sid] = ws
            self._transports[sid] = request.transport
            self._open_transports.add(request.transport)
            self._websockets_opened += 1
        self._notify()
        try:
            await ws.send_str(
                json.dumps({"type": "status", "data": {"status": self._queue_info(), "sid": sid}})
            )
            run = self._run
            if run is not None and run.client_id == sid and self._last_node_id is not None:
                # On reconnect ComfyUI re-sends the current node, without a prompt_id.
                await ws.send_str(
                    json.dumps({"type": "executing", "data": {"node": self._last_node_id}})
                )
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    await self._on_ws_text(ws, msg.data)
        except Exception:  # a cut connection ends the handler like any close
            pass
        finally:
            with self._lock:
                self._sockets.pop(sid, None)
                self._transports.pop(sid, None)
                self._open_transports.discard(request.transport)
            self._notify()
        return ws

    async def _on_ws_text(self, ws: web.WebSocketResponse, text: str) -> None:
        with contextlib.suppress(ValueError, AttributeError):
            msg = json.loads(text)
            if msg.get("type") == "feature_flags":
                await ws.send_str(json.dumps({"type": "feature_flags", "data": _FEATURES}))

    async def _drop_client(self, client_id: str | None, abrupt: bool) -> None:
        with self._lock:
            sids = [client_id] if client_id is not None else list(self._sockets)
            pairs = [(self._sockets.get(s), self._transports.get(s)) for s in sids]
        for ws, transport in pairs:
            if ws is None:
                continue
            if abrupt and transport is not None:
                transport.abort()
            else:
                with contextlib.suppress(Exception):
                    await ws.close(code=1001, message=b"Going away")

    # ------------------------------------------------------------------------- HTTP routes

    async def _h_root(self, request: web.Request) -> web.StreamResponse:
        return web.Response(text="<!doctype html><title>ComfyUI</title>", content_type="text/html")

    async def _h_post_prompt(self, request: web.Request) -> web.StreamResponse:
        # Malformed JSON is an unhandled exception in ComfyUI, so aiohttp's 500 text.
        try:
            body = await request.json()
        except ValueError:
            return _aiohttp_500()
        # server.py uses `in` on the body: a list or string body has no "prompt" (400), other
        # JSON values raise (500).
        if not isinstance(body, dict | list | str):
            return _aiohttp_500()
        if "number" in body:
            try:
                number: float = float(body["number"])  # type: ignore[call-overload,index]
            except (TypeError, ValueError):
                return _aiohttp_500()
        else:
            with self._lock:
                number = self._number
                if "front" in body and body["front"]:  # type: ignore[call-overload]
                    number = -number
                self._number += 1  # only when the client gave no number
        if not isinstance(body, dict) or "prompt" not in body:
            error = {
                "type": "no_prompt",
                "message": "No prompt provided",
                "details": "No prompt provided",
                "extra_info": {},
            }
            return web.json_response({"error": error, "node_errors": {}}, status=400)
        graph = body["prompt"]
        if isinstance(graph, list | str) and not graph:
            # validate_prompt iterates the prompt: an empty one has no output node.
            graph = {}
        if not isinstance(graph, dict):
            return _aiohttp_500()
        prompt_id = str(body.get("prompt_id", uuid.uuid4()))
        targets = body.get("partial_execution_targets")
        defs = _node_defs(self._model_lists())
        try:
            ok, error, good, node_errors = _validate_prompt(
                graph, defs, targets if isinstance(targets, list) else None
            )
        except Exception:
            return _aiohttp_500()
        if not ok and not (self.node_errors_with_200 and node_errors):
            return web.json_response({"error": error, "node_errors": node_errors}, status=400)
        extra_data = body.get("extra_data", {})
        if not isinstance(extra_data, dict):
            extra_data = {}
        if "client_id" in body:
            extra_data["client_id"] = body["client_id"]
        with self._lock:
            heapq.heappush(self._queue, (number, prompt_id, graph, extra_data, good))
            self._submitted += 1
        self._notify()
        self._wake.set()
        await self._queue_updated()
        return web.json_response(
            {"prompt_id": prompt_id, "number": number, "node_errors": node_errors}
        )

    async def _h_get_prompt(self, request: web.Request) -> web.StreamResponse:
        return web.json_response(self._queue_info())

    async def _h_history(self, request: web.Request) -> web.StreamResponse:
        query = request.rel_url.query
        max_items = int(query["max_items"]) if "max_items" in query else None
        offset = int(query.get("offset", -1))
        with self._lock:
            keys = list(self._history)
            if offset < 0 and max_items is not None:
                offset = len(keys) - max_items
            out: dict[str, Any] = {}
            for i, key in enumerate(keys):
                if i >= offset:
                    out[key] = copy.deepcopy(self._history[key])
                    if max_items is not None and len(out) >= max_items:
                        break
        return web.json_response(out)

    async def _h_history_one(self, request: web.Request) -> web.StreamResponse:
        prompt_id = request.match_info["prompt_id"]
        with self._lock:
            entry = self._history.get(prompt_id)
            out = {prompt_id: copy.deepcopy(entry)} if entry is not None else {}
        return web.json_response(out)

    async def _h_post_history(self, request: web.Request) -> web.StreamResponse:
        body = await _json_or_empty(request)
        with self._lock:
            if body.get("clear"):
                self._history.clear()
            for prompt_id in body.get("delete", []) or []:
                self._history.pop(str(prompt_id), None)
        self._notify()
        return web.Response(status=200)

    async def _h_queue(self, request: web.Request) -> web.StreamResponse:
        with self._lock:
            running = [list(copy.deepcopy(self._running))] if self._running else []
            pending = [list(copy.deepcopy(item)) for item in self._queue]
        return web.json_response({"queue_running": running, "queue_pending": pending})

    async def _h_post_queue(self, request: web.Request) -> web.StreamResponse:
        body = await _json_or_empty(request)
        changed = False
        with self._lock:
            if body.get("clear"):
                changed = bool(self._queue)
                self._queue.clear()
            for prompt_id in body.get("delete", []) or []:
                for i, item in enumerate(self._queue):
                    if item[1] == prompt_id:
                        self._queue.pop(i)
                        heapq.heapify(self._queue)
                        changed = True
                        break
        if changed:
            self._notify()
            await self._queue_updated()
        return web.Response(status=200)

    async def _h_interrupt(self, request: web.Request) -> web.StreamResponse:
        body = await _json_or_empty(request)
        wanted = body.get("prompt_id")
        run = self._run
        # With a prompt_id only that running prompt is interrupted; otherwise whatever runs.
        if run is not None and (not wanted or wanted == run.prompt_id):
            run.interrupted = True
            if self._hold_event is not None:
                self._hold_event.set()
        return web.Response(status=200)

    async def _h_free(self, request: web.Request) -> web.StreamResponse:
        await _json_or_empty(request)
        return web.Response(status=200)

    async def _h_view(self, request: web.Request) -> web.StreamResponse:
        query = request.rel_url.query
        if "filename" not in query:
            return web.Response(status=404)
        filename = query["filename"]
        base_dir: str | None = None
        for kind, directory in self._dirs().items():
            if filename.endswith(f" [{kind}]"):
                filename, base_dir = filename[: -len(kind) - 3], directory
                break
        if not filename or filename[0] == "/" or ".." in filename:
            return web.Response(status=400)
        if base_dir is None:
            base_dir = self._dirs().get(query.get("type", "output"))
        if base_dir is None:
            return web.Response(status=400)
        if "subfolder" in query:
            full = os.path.join(base_dir, query["subfolder"])
            if os.path.commonpath((os.path.abspath(full), base_dir)) != base_dir:
                return web.Response(status=403)
            base_dir = full
        filename = os.path.basename(filename)
        path = os.path.join(base_dir, filename)
        if not os.path.isfile(path):
            return web.Response(status=404)
        content_type = mimetypes.guess_type(filename)[0] or "application/octet-stream"
        if content_type in {"text/html", "application/xhtml+xml", "text/javascript", "text/css"}:
            content_type = "application/octet-stream"
        return web.FileResponse(
            path,
            headers={"Content-Disposition": f'filename="{filename}"', "Content-Type": content_type},
        )

    def _dirs(self) -> dict[str, str]:
        return {"output": self.output_dir, "input": self.input_dir, "temp": self.temp_dir}

    async def _h_system_stats(self, request: web.Request) -> web.StreamResponse:
        with self._lock:
            busy = self._running is not None
        used = self.vram_used_while_executing if busy else 0
        torch_total = used + _TORCH_SLACK if busy else 0
        argv = ["main.py", "--listen", self.host, "--port", str(self.port)]
        if self.device == "cpu":
            # model_management on --cpu: the device is the CPU and every memory figure,
            # torch's included, is the machine's RAM (the recording shows it).
            ram_free = _RAM_FREE - used
            argv.insert(1, "--cpu")
            device = {
                "name": "cpu",
                "type": "cpu",
                "index": None,
                "vram_total": _RAM_TOTAL,
                "vram_free": ram_free,
                "torch_vram_total": _RAM_TOTAL,
                "torch_vram_free": ram_free,
            }
        else:
            ram_free = _RAM_FREE
            device = {
                "name": "cuda:0 NVIDIA GeForce RTX 4090 : cudaMallocAsync",
                "type": "cuda",
                "index": 0,
                "vram_total": _VRAM_TOTAL,
                "vram_free": _VRAM_TOTAL - _VRAM_BASELINE - used,
                "torch_vram_total": torch_total,
                "torch_vram_free": _TORCH_SLACK if busy else 0,
            }
        return web.json_response(
            {
                "system": {
                    "os": os.name,
                    "ram_total": _RAM_TOTAL,
                    "ram_free": ram_free,
                    "comfyui_version": COMFYUI_VERSION,
                    "required_frontend_version": "1.27.10",
                    "installed_templates_version": "0.1.95",
                    "required_templates_version": "0.1.95",
                    "python_version": sys.version,
                    "pytorch_version": "2.8.0+cu128" if self.device != "cpu" else "2.8.0+cpu",
                    "embedded_python": False,
                    "argv": argv,
                },
                "devices": [device],
            }
        )

    async def _h_features(self, request: web.Request) -> web.StreamResponse:
        return web.json_response(_FEATURES)

    async def _h_object_info(self, request: web.Request) -> web.StreamResponse:
        defs = _node_defs(self._model_lists())
        return web.json_response({name: d.object_info() for name, d in defs.items()})

    async def _h_object_info_one(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["node_class"]
        spec = _node_defs(self._model_lists()).get(name)
        return web.json_response({name: spec.object_info()} if spec else {})

    async def _h_models(self, request: web.Request) -> web.StreamResponse:
        return web.json_response(list(_MODEL_FOLDERS))

    async def _h_embeddings(self, request: web.Request) -> web.StreamResponse:
        # server.py: the embeddings folder's files without their extension.
        names = self._scan("embeddings") if self.models_dir is not None else []
        return web.json_response([os.path.splitext(n)[0] for n in names])

    async def _h_extensions(self, request: web.Request) -> web.StreamResponse:
        # The frontend package's extension scripts (no custom node ships web files).
        return web.json_response(list(_EXTENSIONS))

    async def _h_models_folder(self, request: web.Request) -> web.StreamResponse:
        folder = request.match_info["folder"]
        if folder not in _MODEL_FOLDERS:
            return web.Response(status=404)
        return web.json_response(self._model_lists().get(folder, []))

    # ---------------------------------------------------------------------------- worker

    async def _worker(self) -> None:
        """main.prompt_worker: one prompt at a time, lowest number first."""
        while True:
            with self._lock:
                item = heapq.heappop(self._queue) if self._queue else None
                if item is not None:
                    self._running = copy.deepcopy(item)
            if item is None:
                self._wake.clear()
                await self._wake.wait()
                continue
            number, prompt_id, graph, extra_data, outputs = item
            run = _Run(number, prompt_id, graph, extra_data, outputs, extra_data.get("client_id"))
            with self._lock:
                self._run = run
                if self._ws_drops:
                    run.drop_after, run.drop_abrupt = self._ws_drops.popleft()
                if self._exec_faults:
                    run.exec_fault = self._exec_faults.popleft()
            self._notify()
            await self._queue_updated()
            try:
                status_str, completed, ui_outputs = await self._execute(run)
            except asyncio.CancelledError:
                raise
            except Exception as ex:  # a bug in the double must not kill the worker
                log.exception("ComfyUI double: execution crashed")
                run.messages.append(["execution_error", {"prompt_id": prompt_id, "error": str(ex)}])
                status_str, completed, ui_outputs = "error", False, {}
            hidden = {"api_key_comfy_org", "auth_token_comfy_org"}
            entry = {
                "prompt": [
                    number,
                    prompt_id,
                    graph,
                    {k: v for k, v in extra_data.items() if k not in hidden},
                    outputs,
                ],
                "outputs": ui_outputs,
                "status": {
                    "status_str": status_str,
                    "completed": completed,
                    "messages": run.messages,
                },
                "meta": {
                    node: {
                        "node_id": node,
                        "display_node": node,
                        "parent_node": None,
                        "real_node_id": node,
                    }
                    for node in ui_outputs
                },
            }
            with self._lock:
                self._history[prompt_id] = copy.deepcopy(entry)
                while len(self._history) > 10000:
                    self._history.pop(next(iter(self._history)))
                self._running = None
                self._run = None
            self._notify()
            await self._queue_updated()
            if run.client_id is not None:
                await self._send("executing", {"node": None, "prompt_id": prompt_id}, run.client_id)

    async def _add_message(
        self, run: _Run, event: str, data: dict[str, Any], broadcast: bool
    ) -> None:
        # PromptExecutor.add_message: timestamped, kept for history, sent if there is a client.
        data = {**data, "timestamp": _now_ms()}
        run.messages.append([event, data])
        if run.client_id is not None or broadcast:
            await self._send(event, data, run.client_id)

    def _signatures(self, graph: dict[str, Any]) -> dict[str, str]:
        # CacheKeySetInputSignature: a node is cached when its class, literal inputs and the
        # signatures of everything upstream match what the previous prompt computed.
        sigs: dict[str, str] = {}

        def sig(node_id: str) -> str:
            if node_id not in sigs:
                sigs[node_id] = ""  # cycles are rejected by validation; this just terminates
                node = graph[node_id]
                parts = []
                for name in sorted(node["inputs"]):
                    val = node["inputs"][name]
                    if _is_link(val) and len(val) == 2 and val[0] in graph:
                        parts.append([name, "link", sig(val[0]), val[1]])
                    else:
                        parts.append([name, val])
                if node["class_type"] in _NEVER_CACHED:
                    parts.append(["is_changed", uuid.uuid4().hex])
                sigs[node_id] = json.dumps([node["class_type"], parts], sort_keys=True)
            return sigs[node_id]

        for node_id in graph:
            sig(node_id)
        return sigs

    async def _progress_state(
        self, run: _Run, node_id: str, value: float, top: float, state: str
    ) -> None:
        if not self.send_progress_state:
            return
        run.progress_nodes[node_id] = {
            "value": value,
            "max": top,
            "state": state,
            "node_id": node_id,
            "prompt_id": run.prompt_id,
            "display_node_id": node_id,
            "parent_node_id": None,
            "real_node_id": node_id,
        }
        data = {"prompt_id": run.prompt_id, "nodes": copy.deepcopy(run.progress_nodes)}
        await self._send("progress_state", data, run.client_id)

    async def _execute(self, run: _Run) -> tuple[str, bool, dict[str, Any]]:
        """PromptExecutor.execute_async: stage nodes as ExecutionList orders them, run each,
        stop at the first error or at an interrupt seen at a node's start or a progress
        callback."""
        graph, prompt_id, client = run.graph, run.prompt_id, run.client_id
        defs = _node_defs(self._model_lists())
        await self._add_message(run, "execution_start", {"prompt_id": prompt_id}, False)
        sigs = self._signatures(graph)
        cached = [n for n in graph if sigs[n] in self._cache]
        await self._add_message(
            run, "execution_cached", {"nodes": cached, "prompt_id": prompt_id}, False
        )
        # current_outputs of an execution_error: the output cache's node ids, taken before
        # the run, which (CacheKeySetInputSignature) are all the prompt's nodes.
        all_nodes = list(graph)
        results: dict[str, list[_Value]] = {}
        ui_outputs: dict[str, Any] = {}
        new_cache: dict[str, tuple[list[_Value], dict[str, Any] | None]] = {}
        for node_id in cached:
            values, ui = self._cache[sigs[node_id]]
            results[node_id] = values
            new_cache[sigs[node_id]] = (values, ui)
            if ui is not None:  # history lists the UI cache of every node of the prompt
                ui_outputs[node_id] = ui
        plan = _ExecutionList(graph, defs, set(cached))
        for out in run.outputs_to_execute:
            plan.add_node(out)
        sampler_runs = any(
            graph[n]["class_type"] == "KSampler" and n not in cached for n in plan.pending
        )
        if not sampler_runs:
            await self._maybe_hold(run)
        executed: list[str] = []  # cached nodes are never "executed"
        sampler_completed = False
        node_id = ""
        try:
            while (staged := plan.next()) is not None:
                node_id = staged
                class_type = graph[node_id]["class_type"]
                if node_id in cached:
                    # execute(): a cached output node re-sends its UI and finishes at once.
                    await self._send_executed(run, node_id, self._cache[sigs[node_id]][1])
                    await self._progress_state(run, node_id, 1, 1, "finished")
                    plan.complete(node_id)
                    continue
                self._last_node_id = node_id
                # As recorded from ComfyUI 0.3.64: progress_state (running) comes before
                # `executing`, and `executed` before progress_state (finished, value = max).
                await self._progress_state(run, node_id, 0.0, 1.0, "running")
                if client is not None:
                    await self._send(
                        "executing",
                        {"node": node_id, "display_node": node_id, "prompt_id": prompt_id},
                        client,
                    )
                if run.interrupted:  # nodes.before_node_execution
                    raise _Interrupted(node_id)
                await self._node_work(run, node_id, class_type, results)
                values, ui = await self._run_node(run, node_id, results)
                if class_type == "KSampler":
                    sampler_completed = True
                results[node_id] = values
                new_cache[sigs[node_id]] = (values, ui)
                if ui is not None:
                    ui_outputs[node_id] = ui
                    await self._send_executed(run, node_id, ui)
                top = run.progress_nodes.get(node_id, {}).get("max", 1.0)
                await self._progress_state(run, node_id, top, top, "finished")
                executed.append(node_id)
                plan.complete(node_id)
            await self._add_message(run, "execution_success", {"prompt_id": prompt_id}, False)
            outcome: tuple[str, bool] = ("success", True)
        except _Interrupted as stop:
            await self._add_message(
                run,
                "execution_interrupted",
                {
                    "prompt_id": prompt_id,
                    "node_id": stop.node_id,
                    "node_type": graph[stop.node_id]["class_type"],
                    "executed": list(executed),
                },
                True,
            )
            outcome = ("error", False)
        except _NodeFailed as fail:
            tips = _OOM_TIPS if "OutOfMemory" in fail.exception_type else ""
            spec = defs.get(graph[fail.node_id]["class_type"])
            await self._add_message(
                run,
                "execution_error",
                {
                    "prompt_id": prompt_id,
                    "node_id": fail.node_id,
                    "node_type": graph[fail.node_id]["class_type"],
                    "executed": list(executed),
                    "exception_message": f"{fail.message}\n{tips}",
                    "exception_type": fail.exception_type,
                    "traceback": _traceback(spec),
                    "current_inputs": self._current_inputs(run, fail.node_id, results, spec),
                    "current_outputs": all_nodes,
                },
                False,
            )
            outcome = ("error", False)
        finally:
            self._last_node_id = None
        # Like HierarchicalCache.clean_unused: only this prompt's node outputs survive.
        self._cache = new_cache
        if sampler_completed:
            with self._lock:
                self._executed += 1
            self._notify()
        return outcome[0], outcome[1], ui_outputs

    async def _send_executed(self, run: _Run, node_id: str, ui: dict[str, Any] | None) -> None:
        if run.client_id is not None:
            data = {
                "node": node_id,
                "display_node": node_id,
                "output": ui,
                "prompt_id": run.prompt_id,
            }
            await self._send("executed", data, run.client_id)

    def _current_inputs(
        self,
        run: _Run,
        node_id: str,
        results: dict[str, list[_Value]],
        spec: _NodeDef | None,
    ) -> dict[str, list[Any]]:
        """execution.get_input_data + format_value: literals as given, linked values as
        str(value) (a primitive output as itself), then a V1 node's hidden inputs."""
        out: dict[str, list[Any]] = {}
        for name, val in run.graph[node_id]["inputs"].items():
            if _is_link(val) and len(val) == 2:
                if val[0] not in results or val[1] >= len(results[val[0]]):
                    out[name] = [None]
                    continue
                value = results[val[0]][val[1]]
                plain = value.info.get("value") if value.kind in _PRIMITIVES else None
                out[name] = [plain if plain is not None else str(value)]
            elif spec is not None and any(name == n for n, _, _ in spec.inputs()):
                out[name] = [val if isinstance(val, int | float | bool | str) else str(val)]
        for name, kind in (spec.hidden if spec is not None else {}).items():
            if kind == "PROMPT":
                out[name] = [str(run.graph)]
            elif kind == "EXTRA_PNGINFO":
                extra = run.extra_data.get("extra_pnginfo")
                out[name] = [None if extra is None else str(extra)]
            elif kind == "UNIQUE_ID":
                out[name] = [node_id]
        return out

    async def _node_work(
        self, run: _Run, node_id: str, class_type: str, results: dict[str, list[_Value]]
    ) -> None:
        """A node's own work, which no interrupt cuts short: its cost in time (the sampler's
        is per step, in _sample), a scripted park, and the errors a graph itself raises."""
        with self._lock:
            park = bool(self._node_holds) and self._node_holds[0] == class_type
            if park:
                self._node_holds.popleft()
                event = asyncio.Event()
                self._node_hold_event = event
                self._held = run.prompt_id
        if park:
            self._notify()
            try:
                await event.wait()
            finally:
                with self._lock:
                    self._node_hold_event = None
                    self._held = None
                self._notify()
        elif class_type != "KSampler":
            cost = self.node_times.get(class_type, self.node_time)
            if cost > 0:
                await asyncio.sleep(cost)
        if class_type == "EmptyImage":
            # torch.full([batch, height, width, 1]) of float32 on the CPU: past the RAM the
            # allocator refuses before anything is written.
            inputs = self._resolve(run, node_id, results)
            size = 4
            for name in ("batch_size", "height", "width"):
                size *= int(_plain(inputs[name]))
            if size > _RAM_TOTAL:
                raise _NodeFailed(
                    node_id,
                    "[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't "
                    f"allocate memory: you tried to allocate {size} bytes. Error code 12 "
                    "(Cannot allocate memory)",
                    "RuntimeError",
                    {},
                )

    async def _maybe_hold(self, run: _Run) -> None:
        with self._lock:
            if self._holds <= 0:
                return
            self._holds -= 1
            event = asyncio.Event()
            self._hold_event = event
            self._held = run.prompt_id
        self._notify()
        try:
            if not run.interrupted:
                await event.wait()
        finally:
            with self._lock:
                self._hold_event = None
                self._held = None
            self._notify()

    def _resolve(self, run: _Run, node_id: str, results: dict[str, list[_Value]]) -> dict[str, Any]:
        resolved: dict[str, Any] = {}
        for name, val in run.graph[node_id]["inputs"].items():
            if _is_link(val) and len(val) == 2:
                resolved[name] = results[val[0]][val[1]]
            else:
                resolved[name] = val
        return resolved

    async def _run_node(
        self, run: _Run, node_id: str, results: dict[str, list[_Value]]
    ) -> tuple[list[_Value], dict[str, Any] | None]:
        class_type = run.graph[node_id]["class_type"]
        inputs = self._resolve(run, node_id, results)
        formatted = {
            k: [v if isinstance(v, int | float | bool | str) or v is None else str(v)]
            for k, v in inputs.items()
        }
        fault = run.exec_fault
        if fault is not None and fault.node_type == class_type:
            run.exec_fault = None
            if class_type != "KSampler" or fault.after_steps <= 0:
                raise _NodeFailed(node_id, fault.message, fault.exception_type, formatted)
            run.exec_fault = fault  # the sampler raises it mid-way
        addr = f"0x7f{abs(hash((run.prompt_id, node_id))) % 0xFFFFFFFF:08x}"
        if class_type in ("UNETLoader", "DualCLIPLoader", "VAELoader"):
            self._check_model_file(node_id, class_type, inputs, formatted)
        if class_type == "UNETLoader" or class_type == "ModelSamplingFlux":
            return [
                _Value("MODEL", {}, f"<comfy.model_patcher.ModelPatcher object at {addr}>")
            ], None
        if class_type == "DualCLIPLoader":
            return [_Value("CLIP", {}, f"<comfy.sd.CLIP object at {addr}>")], None
        if class_type == "VAELoader":
            return [_Value("VAE", {}, f"<comfy.sd.VAE object at {addr}>")], None
        if class_type in ("CLIPTextEncode", "FluxGuidance", "ConditioningZeroOut"):
            return [
                _Value("CONDITIONING", {}, "[[tensor(...), {'pooled_output': tensor(...)}]]")
            ], None
        if class_type in ("EmptyLatentImage", "EmptySD3LatentImage"):
            info = {
                "width": inputs["width"],
                "height": inputs["height"],
                "batch": inputs["batch_size"],
            }
            return [_Value("LATENT", info, "{'samples': tensor(...)}")], None
        if class_type == "KSampler":
            latent = inputs["latent_image"]
            info = {**latent.info, "seed": inputs["seed"]}
            await self._sample(run, node_id, int(inputs["steps"]), formatted)
            return [_Value("LATENT", info, "{'samples': tensor(...)}")], None
        if class_type == "VAEDecode":
            return [_Value("IMAGE", dict(inputs["samples"].info), "tensor(...)")], None
        if class_type == "PrimitiveString":
            return [_Value("STRING", {"value": str(inputs["value"])}, repr(inputs["value"]))], None
        if class_type == "StringLength":
            n = len(str(_plain(inputs["string"])))
            return [_Value("INT", {"value": n}, str(n))], None
        if class_type == "EmptyImage":
            info = {
                "width": int(_plain(inputs["width"])),
                "height": int(_plain(inputs["height"])),
                "batch": int(_plain(inputs["batch_size"])),
                "seed": int(_plain(inputs.get("color", 0))),
            }
            return [_Value("IMAGE", info, "tensor(...)")], None
        if class_type in ("ImageAddNoise", "ImageBlur"):
            info = dict(inputs["image"].info)
            if class_type == "ImageAddNoise":
                info["seed"] = hash((info.get("seed", 0), int(_plain(inputs["seed"])))) % 2**31
            return [_Value("IMAGE", info, "tensor(...)")], None
        if class_type == "ImageFromBatch":
            info = dict(inputs["image"].info)
            start = min(info["batch"] - 1, int(_plain(inputs["batch_index"])))
            info["batch"] = min(info["batch"] - start, int(_plain(inputs["length"])))
            return [_Value("IMAGE", info, "tensor(...)")], None
        if class_type == "SaveImageWebsocket":
            await self._save_websocket(run, node_id, inputs["images"])
            return [], None
        if class_type in ("SaveImage", "PreviewImage"):
            image = inputs["images"]
            # PreviewImage: prefix "ComfyUI" + "_temp_" + five random letters, into temp.
            preview = class_type == "PreviewImage"
            letters = "".join(random.choice("abcdefghijklmnopqrstupvxyz") for _ in range(5))
            try:
                images = await asyncio.get_running_loop().run_in_executor(
                    None,
                    _save_pngs,
                    self.temp_dir if preview else self.output_dir,
                    f"ComfyUI_temp_{letters}"
                    if preview
                    else str(inputs.get("filename_prefix", "ComfyUI")),
                    image,
                    run.graph,
                    run.extra_data.get("extra_pnginfo"),
                    "temp" if preview else "output",
                )
            except _SaveOutsideOutput as ex:
                raise _NodeFailed(node_id, str(ex), "Exception", formatted) from None
            return [], {"images": images}
        if class_type in ("SaveAnimatedWEBP", "SaveAnimatedPNG"):
            try:
                ui = await asyncio.get_running_loop().run_in_executor(
                    None,
                    _save_animated,
                    self.output_dir,
                    str(inputs.get("filename_prefix", "ComfyUI")),
                    inputs["images"],
                    run.graph,
                    "webp" if class_type == "SaveAnimatedWEBP" else "png",
                )
            except _SaveOutsideOutput as ex:
                raise _NodeFailed(node_id, str(ex), "Exception", formatted) from None
            return [], ui
        raise _NodeFailed(node_id, f"{class_type} is not runnable", "RuntimeError", formatted)

    def _check_model_file(
        self, node_id: str, class_type: str, inputs: dict[str, Any], formatted: dict[str, Any]
    ) -> None:
        # A file removed after validation fails at load time, as folder_paths does.
        if self.models_dir is None:
            return
        folder, names = {
            "UNETLoader": ("diffusion_models", ["unet_name"]),
            "DualCLIPLoader": ("text_encoders", ["clip_name1", "clip_name2"]),
            "VAELoader": ("vae", ["vae_name"]),
        }[class_type]
        available = self._model_lists()[folder]
        for name in names:
            value = inputs.get(name)
            if value == "pixel_space" or value in available:
                continue
            raise _NodeFailed(
                node_id,
                f"Model in folder '{folder}' with filename '{value}' not found.",
                "FileNotFoundError",
                formatted,
            )

    async def _save_websocket(self, run: _Run, node_id: str, image: _Value) -> None:
        """custom_nodes/websocket_image_save.py: one progress update (0..n-1 of n) per image,
        each followed by the PNG as a binary frame (type 1 PREVIEW_IMAGE, format 2 PNG)."""
        n = int(image.info["batch"])
        for step in range(n):
            if run.interrupted:
                raise _Interrupted(node_id)
            await asyncio.sleep(self.step_time)
            data = {"value": step, "max": n, "prompt_id": run.prompt_id, "node": node_id}
            await self._progress_state(run, node_id, step, n, "running")
            await self._send("progress", data, run.client_id)
            buf = io.BytesIO()
            _render(int(image.info["width"]), int(image.info["height"]), 0, step).save(buf, "PNG")
            await self._send_bytes(b"\x00\x00\x00\x01\x00\x00\x00\x02" + buf.getvalue(), run)

    async def _send_bytes(self, frame: bytes, run: _Run) -> None:
        ws = self._sockets.get(run.client_id) if run.client_id is not None else None
        if ws is not None:
            with contextlib.suppress(Exception):
                await ws.send_bytes(frame)

    async def _sample(self, run: _Run, node_id: str, steps: int, formatted: dict[str, Any]) -> None:
        await self._maybe_hold(run)
        fault = run.exec_fault
        for step in range(1, steps + 1):
            if run.interrupted:
                raise _Interrupted(node_id)
            await asyncio.sleep(self.step_time)
            if run.interrupted:
                raise _Interrupted(node_id)
            if fault is not None and step > fault.after_steps:
                run.exec_fault = None
                raise _NodeFailed(node_id, fault.message, fault.exception_type, formatted)
            data = {"value": step, "max": steps, "prompt_id": run.prompt_id, "node": node_id}
            await self._progress_state(run, node_id, step, steps, "running")
            await self._send("progress", data, run.client_id)
            run.progress_sent += 1
            if self._hold_step == step:
                with self._lock:
                    self._hold_step = None
                    self._holds += 1
                await self._maybe_hold(run)
            if run.drop_after is not None and run.progress_sent >= run.drop_after:
                run.drop_after = None
                await self._drop_client(run.client_id, run.drop_abrupt)


_FEATURES = {"supports_preview_metadata": True, "max_upload_size": 104857600}
# GET /extensions of a stock 0.3.64 (frontend 1.27.10), as a real server listed them.
_EXTENSIONS = (
    "/extensions/core/groupNode.js",
    "/extensions/core/maskEditorOld.js",
    "/extensions/core/clipspace.js",
    "/extensions/core/maskEditorLayerFilenames.js",
    "/extensions/core/widgetInputs.js",
    "/extensions/core/groupNodeManage.js",
    *(
        f"/extensions/core/load3d/{name}.js"
        for name in (
            "NodeStorage",
            "ViewHelperManager",
            "ControlsManager",
            "RecordingManager",
            "ModelExporter",
            "AnimationManager",
            "LoaderManager",
            "LightingManager",
            "CameraManager",
            "SceneModelManager",
            "SceneManager",
            "PreviewManager",
            "EventManager",
        )
    ),
)


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def _aiohttp_500() -> web.Response:
    return web.Response(
        status=500, text="500 Internal Server Error\n\nServer got itself in trouble"
    )


async def _json_or_empty(request: web.Request) -> dict[str, Any]:
    # /interrupt, /queue and /history treat an empty or invalid body as {}.
    try:
        body = await request.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m imagen.testing.comfyui",
        description="Serve a ComfyUI-compatible HTTP + websocket API with synthetic images.",
    )
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--models", default=None, help="models dir (unet/, clip/, vae/, ...)")
    parser.add_argument("--output-dir", default=None, help="where images go (temp dir if unset)")
    parser.add_argument("--step-time", type=float, default=0.0, help="seconds per sampler step")
    parser.add_argument("--token", default=None, help="require Authorization: Bearer TOKEN")
    args = parser.parse_args(argv)
    double = ComfyUIDouble(
        step_time=args.step_time,
        models_dir=args.models,
        output_dir=args.output_dir,
        token=args.token,
        port=args.port,
        host=args.host,
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    print(double.url, flush=True)  # first line: callers read it to learn the port
    try:
        stop.wait()
    except KeyboardInterrupt:
        pass
    finally:
        double.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
