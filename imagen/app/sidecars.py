"""Writing a finished job's derived files (the sidecar), atomically, from its events."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from imagen.core.job import JobState
from imagen.projections.sidecar import sidecar
from imagen.runner.files import atomic_write


def sidecar_path(image_path: str) -> Path:
    return Path(f"{image_path}.json")


def render_sidecar(data: dict[str, Any]) -> bytes:
    return (json.dumps(data, indent=2, ensure_ascii=False, sort_keys=False) + "\n").encode()


def write_sidecar(state: JobState) -> Path | None:
    data = sidecar(state)
    if data is None:
        return None
    path = sidecar_path(data["image"]["path"])
    atomic_write(path, render_sidecar(data))
    return path
