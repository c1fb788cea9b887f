"""The gallery's entries: one per job, what a person sees of it (pure).

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
from imagen.projections.sidecar import sidecar

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


def entry(state: JobState, status: str) -> dict[str, Any]:
    """One gallery entry: JSON-ready values only (the page escapes and renders them as text)."""
    req = state.request
    params = req.params if req is not None and isinstance(req.params, dict) else {}
    side = sidecar(state)
    image = state.image if status == "succeeded" else None
    width = image.width if image else params.get("width")
    height = image.height if image else params.get("height")
    error = None
    if isinstance(state.terminal, JobFailed):
        error = state.terminal.message or state.terminal.reason
    elif status == "cancelled" and state.terminal is not None:
        error = getattr(state.terminal, "reason", None) or "cancelled"
    return {
        "job_id": state.job_id,
        "status": status,
        "created_at": iso(state.started_at) if state.started_at else None,
        "prompt": req.prompt if req else "",
        "seed": params.get("seed"),
        "width": width,
        "height": height,
        "size": f"{width}x{height}" if width and height else None,
        "steps": params.get("steps"),
        "model": req.model if req else None,
        "backend": req.backend if req else None,
        "backend_type": req.backend_type if req else None,
        "caller": (req.caller or None) if req else None,
        "cost_usd": req.price_usd if req else None,
        "latency_ms": side["latency_ms"] if side else None,
        "error": error,
        "image_path": image.path if image else None,
        "sha256": image.sha256 if image else None,
        "format": image.format if image else None,
        "command": regenerate_command(state),
    }
