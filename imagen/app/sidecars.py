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


def sidecar_owner(path: Path) -> str | None:
    """The image path an existing sidecar file was written for, or None when the file is not an
    imagen sidecar (or not a regular file): only imagen's own sidecar is ever replaced."""
    try:
        if not path.is_file() or path.is_symlink() or path.stat().st_size > 10_000_000:
            return None
        data = json.loads(path.read_bytes())
        image = data.get("image") if isinstance(data, dict) else None
        owner = image.get("path") if isinstance(image, dict) else None
    except (OSError, ValueError):
        return None
    return owner if isinstance(owner, str) and "job_id" in data else None


def write_sidecar(state: JobState) -> Path | None:
    data = sidecar(state)
    if data is None:
        return None
    path = sidecar_path(data["image"]["path"])
    if (path.exists() or path.is_symlink()) and sidecar_owner(path) != data["image"]["path"]:
        # Someone else's file took the name after the job was prepared: keep it.
        return None
    atomic_write(path, render_sidecar(data))
    return path
