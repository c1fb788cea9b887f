"""The gallery's entries: one per image a job stored (one for a job without images), what a
person sees of it (pure).

Built from each job's folded state (the ledger is the truth, not the sidecar on disk), with the
status the jobs projection decided (liveness is the shell's business). The page itself is written
by imagen/app/gallery.py.
"""

from __future__ import annotations

import json
import re
import shlex
from typing import Any

from imagen.core.events import JobFailed
from imagen.core.job import JobState
from imagen.core.times import iso
from imagen.projections.cost import cost_usd
from imagen.projections.sidecar import sidecars

# `imagen generate` refuses a prompt that looks like an option (and reads stdin for "-"): such a
# prompt is piped in instead, which is what its error message advises.
_OPTION_LIKE = re.compile(r"--?[A-Za-z][\w-]*(=.*)?")


def regenerate_command(state: JobState) -> str | None:
    """The shell command that asks for the same image again (same prompt, seed, backend, size,
    steps, format and extra inputs), quoted for a POSIX shell; None without a request."""
    req = state.request
    if req is None:
        return None
    p = req.params if isinstance(req.params, dict) else {}
    args: list[str] = []
    if p.get("seed") is not None:
        args += ["--seed", str(p["seed"])]
    args += ["--backend", req.backend]
    width, height = p.get("width"), p.get("height")
    # Replicate takes an aspect ratio (at 1 megapixel unless a small --size asked for 0.25).
    if p.get("aspect_ratio") and p.get("megapixels") in (None, "1"):
        args += ["--aspect", str(p["aspect_ratio"])]
    elif isinstance(width, int) and isinstance(height, int):
        args += ["--size", f"{width}x{height}"]
    if p.get("steps") is not None:
        args += ["--steps", str(p["steps"])]
    fmt = p.get("output_format")
    if fmt and fmt != "png":
        args += ["--format", str(fmt)]
    extra = p.get("extra")
    if isinstance(extra, dict):
        for key, value in extra.items():
            text = value if isinstance(value, str) else json.dumps(value)
            args += ["-o", f"{key}={text}"]
    tail = " ".join(shlex.quote(a) for a in args)
    prompt = req.prompt
    if prompt == "-" or _OPTION_LIKE.fullmatch(prompt):
        return f"printf '%s\\n' {shlex.quote(prompt)} | imagen generate - {tail}"
    return f"imagen generate {shlex.quote(prompt)} {tail}"


def entries(state: JobState, status: str) -> list[dict[str, Any]]:
    """The job's gallery entries: one per stored image of a succeeded job, in index order, else
    exactly one (failed, cancelled, running, or succeeded without an image on record).
    JSON-ready values only (the page escapes and renders them as text)."""
    req = state.request
    params = req.params if req is not None and isinstance(req.params, dict) else {}
    docs = sidecars(state)
    images = list(state.images) if status == "succeeded" else []
    error = None
    if isinstance(state.terminal, JobFailed):
        error = state.terminal.message or state.terminal.reason
    elif status == "cancelled" and state.terminal is not None:
        error = getattr(state.terminal, "reason", None) or "cancelled"
    common = {
        "job_id": state.job_id,
        "status": status,
        "created_at": iso(state.started_at) if state.started_at else None,
        "prompt": req.prompt if req else "",
        "seed": params.get("seed"),
        "steps": params.get("steps"),
        "model": req.model if req else None,
        "backend": req.backend if req else None,
        "backend_type": req.backend_type if req else None,
        "caller": (req.caller or None) if req else None,
        "cost_usd": cost_usd(state),
        "latency_ms": docs[0]["latency_ms"] if docs else None,
        "error": error,
        "command": regenerate_command(state),
        "count": len(images),
    }
    if not images:
        width, height = params.get("width"), params.get("height")
        return [
            {
                **common,
                "index": None,
                "width": width,
                "height": height,
                "size": f"{width}x{height}" if width and height else None,
                "image_path": None,
                "sha256": None,
                "format": None,
            }
        ]
    return [
        {
            **common,
            "index": image.index,
            "width": image.width,
            "height": image.height,
            "size": f"{image.width}x{image.height}",
            "image_path": image.path,
            "sha256": image.sha256,
            "format": image.format,
        }
        for image in images
    ]
