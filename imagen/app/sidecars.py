"""Writing a finished job's derived files (one sidecar per image), atomically, from its events.

Sidecars carry the full prompt, so they are written with the ledger's privacy (0600) unless
the config relaxes it (`[output] sidecar_mode`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from imagen.core.job import JobState
from imagen.projections.sidecar import sidecars
from imagen.runner.files import atomic_write

PRIVATE = 0o600


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


def missing_images(state: JobState) -> list[str]:
    """The paths of the job's stored images that are no longer files (removed after they
    were stored): no sidecar is written beside a missing image."""
    return [i.path for i in state.images if not Path(i.path).is_file()]


def write_sidecars(state: JobState, mode: int = PRIVATE) -> list[Path]:
    written = []
    gone = set(missing_images(state))
    for data in sidecars(state):
        if data["image"]["path"] in gone:
            continue  # a sidecar describes an image on disk, never an empty name
        path = sidecar_path(data["image"]["path"])
        if (path.exists() or path.is_symlink()) and sidecar_owner(path) != data["image"]["path"]:
            # Someone else's file took the name after the job was prepared: keep it.
            continue
        atomic_write(path, render_sidecar(data), mode=mode)
        written.append(path)
    return written


def write_sidecar(state: JobState, mode: int = PRIVATE) -> Path | None:
    """Write every sidecar of the job; return the first one's path."""
    written = write_sidecars(state, mode)
    return written[0] if written else None


def sidecar_problems(state: JobState) -> list[dict[str, Any]]:
    """What is wrong with a succeeded job's sidecars on disk (missing, or not what the ledger
    says), with the command that fixes it; [] when they are right (or the job has none)."""
    problems = []
    jid = state.job_id
    gone = set(missing_images(state))
    for data in sidecars(state):
        if data["image"]["path"] in gone:
            continue  # the image itself is missing: that is the problem, not its sidecar
        path = sidecar_path(data["image"]["path"])
        try:
            current = path.read_bytes() if path.is_file() else None
        except OSError:
            current = None
        if current == render_sidecar(data):
            continue
        if current is None:
            problems.append(
                {
                    "kind": "sidecar_missing",
                    "job_id": jid,
                    "path": str(path),
                    "message": f"job {jid}: sidecar missing: {path} "
                    f"(`imagen resume {jid}` writes it)",
                }
            )
        else:
            problems.append(
                {
                    "kind": "sidecar_differs",
                    "job_id": jid,
                    "path": str(path),
                    "message": f"job {jid}: sidecar differs from the ledger: {path} "
                    "(`imagen rebuild` rewrites it)",
                }
            )
    return problems


def sidecar_problem(state: JobState) -> dict[str, Any] | None:
    """The first sidecar problem of the job (see sidecar_problems)."""
    found = sidecar_problems(state)
    return found[0] if found else None
