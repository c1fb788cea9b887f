"""What a ComfyUI job reports: the model or workflow that ran, the machine, the inputs the
graph carried (sidecars, usage)."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

from imagen.backends.comfyui.inputs import DEFAULT_MODEL
from imagen.backends.comfyui.job import client_id, current_prompt, posted_client, server_url
from imagen.backends.comfyui.wire import stats_body, system_facts
from imagen.backends.common import config_of, exchanges, last_sent
from imagen.core.events import JobMoved
from imagen.core.job import JobState


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
    if options.get("workflow"):
        # Configured but not read (missing, unreadable): never the FLUX UNet it would not use.
        name = str(options["workflow"]).replace("\\", "/").rsplit("/", 1)[-1]
        return f"workflow {name} (file missing or unreadable)"
    return configured or str(options.get("unet") or DEFAULT_MODEL)


# -- the result ------------------------------------------------------------------------------


def success_result(state: JobState) -> dict[str, Any]:
    req = state.request
    assert req is not None and state.image is not None
    cfg = config_of(state)
    stats = next(
        (b for ex in reversed(exchanges(state, "system_stats")) if (b := stats_body(ex.outcome))),
        None,
    )
    latency = (
        round((state.now - state.started_at).total_seconds() * 1000)
        if state.now and state.started_at
        else None
    )
    workflow = workflow_info(cfg)
    sent = sent_inputs(state)
    return {
        "model": describe_model(cfg),
        "workflow": workflow or "flux-schnell",
        "seed_used": req.params.get("seed"),
        "latency_ms": latency,
        # What the posted graph took, never the defaults it may not have used (a custom
        # workflow without a sampler took none of them).
        **{k: sent.get(k) for k in ("steps", "sampler", "scheduler")},
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
        "client_id": _posted_under(state),
        "server": server_url(state),  # the server that made the image (a pool's member)
        "moved": len(state.events_of(JobMoved)),  # pool members left for another
        **system_facts(stats),
        "path": state.image.path,
        "sha256": state.image.sha256,
        "images": [i.path for i in state.images],
    }


def sent_inputs(state: JobState) -> dict[str, Any]:
    """Seed, steps, sampler, scheduler and batch size of the graph last posted to /prompt, read
    from its nodes (None for what it does not hold)."""
    sent = last_sent(state, "prompt")
    body = sent.body if sent else None
    graph = body.get("prompt") if isinstance(body, dict) else None
    if not isinstance(graph, dict):
        return {}
    out: dict[str, Any] = {}
    for node in graph.values():
        if not isinstance(node, dict) or not isinstance(node.get("inputs"), dict):
            continue
        kind, inputs = node.get("class_type"), node["inputs"]
        for key in ("seed", "noise_seed"):  # any node's: KSampler, RandomNoise, ImageAddNoise...
            if isinstance(inputs.get(key), int) and not isinstance(inputs[key], bool):
                out.setdefault("seed", inputs[key])
        if kind in ("KSampler", "KSamplerAdvanced", "BasicScheduler"):
            if isinstance(inputs.get("steps"), int):
                out.setdefault("steps", inputs["steps"])
        if kind in ("KSampler", "KSamplerAdvanced", "KSamplerSelect", "BasicScheduler"):
            for key, name in (("sampler_name", "sampler"), ("scheduler", "scheduler")):
                if isinstance(inputs.get(key), str):
                    out.setdefault(name, inputs[key])
        if kind in ("EmptySD3LatentImage", "EmptyLatentImage"):
            if isinstance(inputs.get("batch_size"), int):
                out.setdefault("count", inputs["batch_size"])
    # Only what the graph holds: a sidecar never claims a seed or steps a workflow did not take.
    return {"seed": None, "steps": None, "sampler": None, "scheduler": None, **out}


def _posted_under(state: JobState) -> str:
    """The client id the current prompt was posted under (each connection has its own)."""
    pid = current_prompt(state)
    return (posted_client(state, pid) if pid else None) or client_id(state)
