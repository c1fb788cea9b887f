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


def sidecar_problem(state: JobState) -> dict[str, Any] | None:
    """What is wrong with a succeeded job's sidecar on disk (missing, or not what the ledger
    says), with the command that fixes it; None when it is right (or the job has none)."""
    data = sidecar(state)
    if data is None:
        return None
    path = sidecar_path(data["image"]["path"])
    try:
        current = path.read_bytes() if path.is_file() else None
    except OSError:
        current = None
    if current == render_sidecar(data):
        return None
    jid = state.job_id
    if current is None:
        return {
            "kind": "sidecar_missing",
            "job_id": jid,
            "path": str(path),
            "message": f"job {jid}: sidecar missing: {path} (`imagen resume {jid}` writes it)",
        }
    return {
        "kind": "sidecar_differs",
        "job_id": jid,
        "path": str(path),
        "message": f"job {jid}: sidecar differs from the ledger: {path} "
        "(`imagen rebuild` rewrites it)",
    }
