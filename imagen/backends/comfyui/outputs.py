"""Which of ComfyUI's output files imagen keeps, and which workflows it refuses for them.

imagen keeps images it can check byte by byte (runner/images.py): PNG (SaveImage, PreviewImage,
SaveAnimatedPNG's APNG), WebP (SaveAnimatedWEBP, animated or not), JPEG and GIF (custom
nodes). Everything else a stock ComfyUI saves (video, audio, 3D models, SVG, latents, model
weights) is refused: by `generate` and `backends --check` before anything is recorded when the
graph carries a stock node that saves it, and, for a custom node that turns out to save one,
by failing the job before any file is kept (a job never ends failed with files on disk).
docs/setup-comfyui.md ("Outputs") says the same to users.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# File extension -> the format runner/images.py checks it as.
KEPT_FORMATS = {"png": "png", "webp": "webp", "jpg": "jpg", "jpeg": "jpg", "gif": "gif"}

# Stock nodes whose files imagen keeps; the ones with a filename_prefix input get the job's.
KEPT_NODES = frozenset({"SaveImage", "PreviewImage", "SaveAnimatedPNG", "SaveAnimatedWEBP"})
PREFIXED_NODES = frozenset({"SaveImage", "SaveAnimatedPNG", "SaveAnimatedWEBP"})

# Stock nodes (ComfyUI 0.3.64: nodes.py, comfy_extras/) whose files imagen does not keep.
REFUSED_NODES = {
    "SaveWEBM": "video (.webm)",
    "SaveVideo": "video",
    "SaveAudio": "audio (.flac)",
    "SaveAudioMP3": "audio (.mp3)",
    "SaveAudioOpus": "audio (.opus)",
    "PreviewAudio": "audio (.flac)",
    "SaveGLB": "3D model (.glb)",
    "SaveSVGNode": "SVG",
    "SaveLatent": "latent (.latent)",
    "CheckpointSave": "model weights",
    "CLIPSave": "model weights",
    "VAESave": "model weights",
    "ModelSave": "model weights",
    "LoraSave": "model weights",
    "SaveLoRANode": "model weights",
}

KEPT_TEXT = "PNG, WebP (animated too), JPEG, GIF"


def file_format(filename: str) -> str | None:
    """The format a reported file is checked as, or None for a kind imagen does not keep."""
    head, dot, ext = filename.rpartition(".")
    return KEPT_FORMATS.get(ext.lower()) if dot and head else None


def refused_nodes(graph: Mapping[str, Any]) -> list[str]:
    """`id (Class: kind)` for each node of the graph that saves files imagen does not keep."""
    return [
        f"{node_id} ({node['class_type']}: {REFUSED_NODES[node['class_type']]})"
        for node_id, node in graph.items()
        if isinstance(node, dict) and node.get("class_type") in REFUSED_NODES
    ]


def refusal(name: Any, graph: Mapping[str, Any]) -> str | None:
    """The one-line refusal of a workflow whose nodes save kinds imagen does not keep."""
    refused = refused_nodes(graph)
    if not refused:
        return None
    return (
        f"workflow {name}: node {', '.join(refused)} saves files imagen does not keep "
        f"(it keeps {KEPT_TEXT}); remove the node or replace it with SaveImage or "
        "SaveAnimatedWEBP"
    )
