"""Reading what ComfyUI answered: /queue, /history, /system_stats, outcomes in a few words.

Public, like every adapter's wire module. Every field is checked: a malformed answer never
raises."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from imagen.backends.common import finite
from imagen.core.events import JobFailed, RequestFailed, ResponseReceived
from imagen.core.failures import Failure

# -- reading what ComfyUI answered (every field checked: a malformed answer never raises) ----


RECORDED_HEADERS = frozenset({"content-type", "content-length"})


def as_dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def snippet(value: Any, limit: int = 300) -> str:
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
                return HistoryEntry(False, failure=execution_error(data))
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
    for node_id, node in outputs.items():
        if not isinstance(node, dict):
            return "an output is not an object"
        listed = node.get("images", [])
        if not isinstance(listed, list):
            return "images is not a list"
        # Every list of files a node reports counts, whatever its key: SaveImage and the
        # animated savers report `images` (SaveWEBM and SaveVideo too, with `animated`), the
        # audio savers `audio`, SaveGLB `3d`, SaveLatent `latents`, custom nodes `gifs`... A
        # file of a kind imagen does not keep must be seen, so the job refuses it whole.
        for key, value in node.items():
            if key != "images" and not (
                isinstance(value, list) and any(isinstance(i, dict) for i in value)
            ):
                continue
            for img in value:
                if not isinstance(img, dict) or not isinstance(img.get("filename"), str):
                    if key != "images":
                        continue  # not a file list after all (a custom node's own shape)
                    return "an image is not an object with a filename"
                images.append(
                    {
                        "filename": img["filename"],
                        "subfolder": img["subfolder"]
                        if isinstance(img.get("subfolder"), str)
                        else "",
                        "type": img["type"] if isinstance(img.get("type"), str) else "output",
                        "node": str(node_id),
                        "key": key,
                    }
                )
    return HistoryEntry(True, tuple(images))


def execution_error(data: Mapping[str, Any]) -> JobFailed:
    return JobFailed(
        "execution_error",
        f"ComfyUI: {snippet(data.get('node_type'), 80)} failed: "
        f"{snippet(data.get('exception_message', ''), 500).strip()}",
        Failure.GENERATION_FAILED,
    )


def stats_body(o: Any) -> dict[str, Any] | None:
    if isinstance(o, ResponseReceived) and o.status == 200 and isinstance(o.body, dict):
        return o.body
    return None


def outcome_text(o: Any) -> str:
    if isinstance(o, RequestFailed):
        return f"{o.error}: {o.message}"
    if isinstance(o, ResponseReceived):
        return f"HTTP {o.status}"
    return "no answer"


def system_facts(stats: Mapping[str, Any] | None) -> dict[str, Any]:
    """What /system_stats says about the machine that made the image (None when unknown)."""
    system = as_dict(as_dict(stats).get("system"))
    devices = as_dict(stats).get("devices")
    device = as_dict(devices[0]) if isinstance(devices, list) and devices else {}
    total, free = finite(device.get("vram_total")), finite(device.get("vram_free"))
    version = system.get("comfyui_version")
    kind = device["type"] if isinstance(device.get("type"), str) else None
    return {
        "device": {
            "name": device["name"] if isinstance(device.get("name"), str) else None,
            "type": kind,
        },
        # On a CPU server (`--cpu`) ComfyUI reports the machine's RAM in its vram_* fields:
        # the keys stay (older readers), this says which memory they measure.
        "memory": None if kind is None else ("ram" if kind == "cpu" else "vram"),
        "comfyui_version": version if isinstance(version, str) else None,
        "vram_total_mib": round(total / 2**20) if total is not None else None,
        "vram_used_mib": round((total - (free or 0)) / 2**20) if total is not None else None,
    }
