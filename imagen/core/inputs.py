"""Turning what the user typed into a job request (pure: no clock, no environment)."""

from __future__ import annotations

import json
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


_SIZE = re.compile(r"^(\d{2,5})[xX×](\d{2,5})$")


def parse_size(text: str) -> tuple[int, int]:
    m = _SIZE.match(text.strip())
    if not m:
        raise BadInput(f"--size {text!r}: use WIDTHxHEIGHT, e.g. 1024x768")
    w, h = int(m[1]), int(m[2])
    if not (64 <= w <= 4096 and 64 <= h <= 4096):
        raise BadInput(f"--size {text!r}: width and height must be between 64 and 4096")
    return w, h


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
    return out


def check_prompt(prompt: str) -> str:
    if not prompt or not prompt.strip():
        raise BadInput(
            'the prompt is empty: pass the text to draw, e.g. imagen generate "a red fox"'
        )
    return prompt


def slug(text: str, limit: int = 40) -> str:
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    words = re.sub(r"[^a-zA-Z0-9]+", "-", ascii_text.lower()).strip("-")
    return (words[:limit].rstrip("-")) or "image"


def file_name(date: str, prompt: str, seed: int, ext: str) -> str:
    return f"{date}-{slug(prompt)}-{seed}.{ext}"
