"""What a Replicate job reports: its model, and the inputs Replicate received (sidecars, usage)."""

from __future__ import annotations

from typing import Any

from imagen.backends.common import configured_model, last_sent
from imagen.core.job import JobState

describe_model = configured_model

_FIRST_CLASS = {
    "seed": "seed",
    "num_inference_steps": "steps",
    "steps": "steps",
    "output_format": "output_format",
    "aspect_ratio": "aspect_ratio",
    "megapixels": "megapixels",
    "num_outputs": "count",
    "prompt": None,
}


def sent_inputs(state: JobState) -> dict[str, Any]:
    """The inputs of the last create, as Replicate received them (for sidecars and usage)."""
    sent = last_sent(state, "create")
    body = sent.body if sent else None
    inp = body.get("input") if isinstance(body, dict) else None
    if not isinstance(inp, dict):
        return {}
    out: dict[str, Any] = {"extra": {}}
    for key, value in inp.items():
        name = _FIRST_CLASS.get(key, "")
        if name == "":
            out["extra"][key] = value
        elif name:
            out[name] = value
    return out
