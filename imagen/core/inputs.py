"""Turning what the user typed into a job request (pure: no clock, no environment)."""

from __future__ import annotations

import json
import math
import re
import unicodedata
from dataclasses import dataclass, field
from typing import Any


class BadInput(ValueError):
    """One line naming what to fix."""


@dataclass(frozen=True)
class GenerateInputs:
    prompt: str
    seed: int
    size: tuple[int, int] | None = None
    aspect: str | None = None
    steps: int | None = None
    output_format: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    count: int = 1

    def __post_init__(self) -> None:
        # Checked here, not by each backend, so that it holds for every backend and for
        # --from lines: an empty aspect would otherwise fall back to the default silently.
        if self.aspect is not None and not self.aspect.strip():
            raise BadInput("--aspect is empty: give a ratio such as 16:9, or leave it out")


_SIZE = re.compile(r"^(\d{2,5})[xX×](\d{2,5})$", re.ASCII)  # no other scripts' digits


def parse_size(text: str) -> tuple[int, int]:
    """WIDTHxHEIGHT; each backend checks the range it can make (or says what it maps to)."""
    m = _SIZE.match(text.strip())
    if not m:
        raise BadInput(f"--size {text!r}: use WIDTHxHEIGHT, e.g. 1024x768")
    return int(m[1]), int(m[2])


# Model inputs imagen sets itself from a flag: an -o with one of these names would be sent
# while the sidecar, --json and usage report the flag's value (or pay for images never kept).
SHADOWED: dict[str, str] = {
    "prompt": "the PROMPT argument",
    "seed": "--seed",
    "noise_seed": "--seed",
    "num_outputs": "--per-job",
    "batch_size": "--per-job",
    "num_inference_steps": "--steps",
    "steps": "--steps",
    "output_format": "--format (or an --output name ending .png/.jpg/.webp)",
    "aspect_ratio": "--aspect",
    "megapixels": "--size",
    "width": "--size",
    "height": "--size",
}


def check_extra(extra: dict[str, Any], flag: str = "-o") -> None:
    """No model input that has its own flag; nothing the ledger cannot hold exactly."""
    for key, value in extra.items():
        if key in SHADOWED:
            raise BadInput(f"{flag} {key}=...: {key} has its own flag; use {SHADOWED[key]}")
        problem = _unrecordable(value)
        if problem:
            raise BadInput(f"{flag} {key}=...: {problem}")


def _unrecordable(value: Any) -> str | None:
    if isinstance(value, float) and not math.isfinite(value):
        return "not a finite number"
    if isinstance(value, str) and "\x00" in value:
        return "contains a NUL character"
    if isinstance(value, list):
        return next((p for p in map(_unrecordable, value) if p), None)
    if isinstance(value, dict):
        return next((p for p in map(_unrecordable, [*value.keys(), *value.values()]) if p), None)
    return None


def parse_options(pairs: list[str]) -> dict[str, Any]:
    """`-o key=value`: values are JSON when they parse (numbers, true/false), else strings."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
            raise BadInput(
                f"-o {pair!r}: use key=value with a model input name, e.g. -o guidance=3.5"
            )
        try:
            out[key] = json.loads(value)
        except ValueError:
            out[key] = value
    check_extra(out)
    return out


def check_prompt(prompt: str) -> str:
    if not prompt or not prompt.strip():
        raise BadInput(
            'the prompt is empty: pass the text to draw, e.g. imagen generate "a red fox"'
        )
    if "\x00" in prompt:
        # Other control characters are kept (and shown escaped); a NUL cannot be recorded in a
        # PostgreSQL ledger (jsonb and text refuse it).
        raise BadInput(f"the prompt contains a NUL character at {prompt.index(chr(0))}: remove it")
    return prompt


def check_int_range(flag: str, value: int, low: int, high: int, why: str) -> None:
    if not low <= value <= high:
        raise BadInput(f"{flag} {value}: use {low} to {high} ({why})")


# What an --output name's extension says about the format.
EXTENSION_FORMATS = {".png": "png", ".jpg": "jpg", ".jpeg": "jpg", ".webp": "webp"}


def slug(text: str, limit: int = 40) -> str:
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    words = re.sub(r"[^a-zA-Z0-9]+", "-", ascii_text.lower()).strip("-")
    return (words[:limit].rstrip("-")) or "image"


def file_name(date: str, prompt: str, seed: int, ext: str) -> str:
    return f"{date}-{slug(prompt)}-{seed}.{ext}"
