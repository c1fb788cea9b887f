"""The progress websocket, frame by frame: `interpret_frame` (pure; the runner only reads
frames and hands them over)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from imagen.backends.comfyui.wire import as_dict, snippet
from imagen.backends.common import finite
from imagen.core.actions import FrameOutcome, Progress
from imagen.core.events import Event, ProgressObserved, StreamMessage

TERMINAL_KINDS = ("execution_success", "execution_error", "execution_interrupted")
NOTABLE_KINDS = ("execution_start", "execution_cached", "executed")

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
    classes = as_dict(ctx.get("classes"))

    def label(node: Any) -> str:
        known = classes.get(node) if isinstance(node, str) else None
        return str(known or f"node {snippet(node, 40)}")

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
        value, top = finite(data.get("value")), finite(data.get("max"))
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
            info = as_dict(info)
            value, top = finite(info.get("value")), finite(info.get("max"))
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
    key = snippet(node, 40)
    recorded = as_dict(ctx.get("recorded"))
    last = recorded.get(key)
    events: tuple[Event, ...] = ()
    if last is None or (step > last and (step == total or step * 4 // total > last * 4 // total)):
        events = (ProgressObserved(name, step, total),)
        ctx = {**ctx, "recorded": {**recorded, key: step}}
    return FrameOutcome(ctx, events, Progress(name, step, total))


def _trim(data: dict[str, Any]) -> dict[str, Any]:
    """Stream payloads can carry whole graphs; keep what an audit needs."""
    return {k: v for k, v in data.items() if k not in {"current_inputs", "current_outputs"}}
