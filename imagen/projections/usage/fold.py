"""Usage rows: one per generated (or paid-for) image, folded from a job's events (pure).

The raw prompt never leaves the machine: rows carry its sha256 only.
"""

from __future__ import annotations

import hashlib
from typing import Any

from imagen.core.events import JobFailed, JobSucceeded, RemoteJobAccepted
from imagen.core.job import JobState, iso

COLUMNS = (
    "id",
    "created_at",
    "backend",
    "model",
    "seed",
    "prompt_hash",
    "latency_ms",
    "cost_usd_estimate",
    "caller",
)


def prompt_hash(prompt: str) -> str:
    return hashlib.sha256(prompt.encode()).hexdigest()


def usage_row(state: JobState) -> dict[str, Any] | None:
    """A row for a job that produced an image, or that was paid for and then failed (a
    prediction whose output the provider deleted still costs money)."""
    req, end = state.request, state.terminal
    if req is None or end is None:
        return None
    paid_and_failed = (
        isinstance(end, JobFailed)
        and state.last(RemoteJobAccepted) is not None
        and bool(req.price_usd)
    )
    if not (isinstance(end, JobSucceeded) or paid_and_failed):
        return None
    ended = state.history[-1].at
    latency = round((ended - state.started_at).total_seconds() * 1000) if state.started_at else None
    return {
        "id": state.job_id,
        "created_at": iso(ended),
        "backend": req.backend,
        "model": req.model,
        "seed": req.params.get("seed"),
        "prompt_hash": prompt_hash(req.prompt),
        "latency_ms": latency,
        "cost_usd_estimate": req.price_usd,
        "caller": req.caller,
    }
