"""Usage rows, folded from a job's events (pure).

The rows split the job's cost (imagen/projections/cost.py, the one rule) and sum to it: one
row per stored image (`outcome` "image", cost = the per-image price), and one row for the images
a prediction the provider accepted did not deliver because it failed, timed out or was
cancelled (`outcome` "paid_failed": the provider may bill it). A request the provider never
accepted costs nothing and has no row.

Values are made to fit the local and remote columns (projections/safe.py): seeds within
0..2^64-1 (numeric(20,0) remotely), latency within int4, text without NULs, money as exact
micro-dollars locally and a six-place decimal string on the wire. The raw prompt never leaves
the machine: rows carry its sha256 only.
"""

from __future__ import annotations

import hashlib
from typing import Any

from imagen.core import money
from imagen.core.events import TERMINAL_TYPES
from imagen.core.job import JobState, iso
from imagen.projections import safe
from imagen.projections.cost import micros, micros_text, of_job

__all__ = [
    "COLUMNS",
    "LOCAL_COLUMNS",
    "from_remote",
    "micros",
    "micros_text",
    "to_remote",
    "usage_rows",
]

# What goes to Supabase (mai.imagen_usage), in order.
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
    "outcome",
)
# The local table keeps money in integer micro-dollars so sums in SQL are exact.
LOCAL_COLUMNS = (
    "id",
    "created_at",
    "backend",
    "model",
    "seed",
    "prompt_hash",
    "latency_ms",
    "cost_micros",
    "caller",
    "outcome",
)
SEED_MAX = 2**64 - 1

# The event types a job's rows are read from: its request and what replaced it (an
# overflow), its images, its acceptance by the provider, its end, and the requests a backend
# reads its sent inputs back from (`sent_inputs`). The rows are the same without the job's
# other events (tests/support/properties.py checks it for every adapter's histories), so a
# catch-up of the usage table alone reads only these.
READS = frozenset(
    {
        "JobRequested",
        "JobOverflowed",
        "ImageStored",
        "RemoteJobAccepted",
        "RequestSent",
        *TERMINAL_TYPES,
    }
)


def prompt_hash(prompt: object) -> str:
    text = prompt if isinstance(prompt, str) else ""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def _seed(state: JobState) -> int | None:
    from imagen.projections.sidecar import sent_inputs

    req = state.request
    assert req is not None
    params = req.params if isinstance(req.params, dict) else {}
    seed = sent_inputs(state).get("seed", params.get("seed"))
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= SEED_MAX:
        return None
    return seed


def usage_rows(state: JobState) -> list[dict[str, Any]]:
    """The rows of an ended job (none while it is under way)."""
    req = state.request
    if req is None or state.terminal is None:
        return []
    bill = of_job(state)
    ended = state.ended_at or state.history[-1].at  # (not moved by what came after: READS)
    latency = (
        safe.integer(round((ended - state.started_at).total_seconds() * 1000), safe.INT32)
        if state.started_at
        else None
    )
    base = {
        "created_at": state.ended_iso or iso(ended),
        "backend": safe.text(req.backend) or "",
        "model": safe.text(req.model) or "",
        "seed": None if (seed := _seed(state)) is None else str(seed),
        "prompt_hash": prompt_hash(req.prompt),
        "latency_ms": latency,
        "caller": safe.text(req.caller),
    }
    rows = [
        {
            **base,
            "id": state.job_id if image.index == 0 else f"{state.job_id}:{image.index}",
            "cost_micros": micros(req.price_usd),
            "outcome": "image",
        }
        for image in state.images
    ]
    if bill.undelivered and req.price_usd:
        rows.append(
            {
                **base,
                "id": state.job_id if not state.images else f"{state.job_id}:failed",
                "cost_micros": micros(req.price_usd, bill.undelivered),
                "outcome": "paid_failed",
            }
        )
    return rows


def to_remote(row: dict[str, Any]) -> dict[str, Any]:
    """A local row as Supabase receives it (the remote column keeps its first name,
    `cost_usd_estimate`, for the same figure as `cost_usd`)."""
    out = {c: row.get(c) for c in COLUMNS if c != "cost_usd_estimate"}
    out["cost_usd_estimate"] = micros_text(row.get("cost_micros"))
    seed = row.get("seed")
    out["seed"] = int(seed) if isinstance(seed, str) and seed.isdigit() else None
    return {c: out.get(c) for c in COLUMNS}


def from_remote(row: dict[str, Any]) -> dict[str, Any]:
    """A remote row as `imagen usage` shows it: the same keys as a local row (`cost_usd`, the
    six-place decimal string)."""
    out = {k: v for k, v in row.items() if k != "cost_usd_estimate"}
    out["cost_usd"] = money.usd(row.get("cost_usd_estimate"))
    return out
