"""The JSON sidecar beside each image: a projection of the job's events, rebuildable any time.

A job that made several images has one sidecar per image. What the sidecar says about the
inputs (seed, steps, format, size) comes from the request body imagen actually sent, as the
adapter reads it back (`sent_inputs`), never from what the user meant.
"""

from __future__ import annotations

from typing import Any

from imagen.core.events import (
    ImageStored,
    JobMoved,
    JobOverflowed,
    JobPlaced,
    JobSucceeded,
    RemoteJobAccepted,
    RequestSent,
)
from imagen.core.job import JobState, iso
from imagen.projections.cost import cost_usd


def sent_inputs(state: JobState) -> dict[str, Any]:
    """The inputs of the last submission, as the backend received them ({} if unknown)."""
    from imagen import backends

    req = state.request
    if req is None:
        return {}
    try:
        read = backends.load(req.backend_type).sent_inputs
        found = read(state)
    except Exception:  # an unknown backend type or a body of another shape: say nothing
        return {}
    return found if isinstance(found, dict) else {}


def expected_size(params: dict[str, Any]) -> str | None:
    """The size the request expects back, "WxH" (its params width and height), if it says."""
    width, height = params.get("width"), params.get("height")
    if isinstance(width, int) and isinstance(height, int):
        return f"{width}x{height}"
    return None


def server_of(state: JobState) -> str | None:
    """Where a job runs or ran: its ComfyUI pool member, or the backend it overflowed to
    (the jobs table's `server`, folded the same way); None for any other job, or a pool's
    job between a move and its next placement."""
    for rec in reversed(state.history):
        e = rec.event
        if isinstance(e, JobOverflowed):
            return e.backend
        if isinstance(e, JobPlaced):
            return e.server
        if isinstance(e, JobMoved):
            return None
    return None


def job_fields(state: JobState) -> dict[str, Any]:
    """What the ledger knows of a job whatever its end: backend, model, the inputs as sent,
    the size asked for, the remote id. A failed job's `--json` reports these too; a sidecar
    overrides the size with the image's own."""
    req = state.request
    if req is None:
        return {}
    params = req.params if isinstance(req.params, dict) else {}
    sent = sent_inputs(state)
    accepted = state.last(RemoteJobAccepted)
    return {
        "backend": req.backend,
        "model": req.model,
        "seed": sent.get("seed", params.get("seed")),
        "width": params.get("width"),
        "height": params.get("height"),
        "steps": sent.get("steps", params.get("steps")),
        "prediction_id": accepted.event.remote_id if accepted else None,  # type: ignore[attr-defined]
    }


def sidecars(state: JobState) -> list[dict[str, Any]]:
    """One document per stored image of a succeeded job (empty otherwise)."""
    if state.request is None or not isinstance(state.terminal, JobSucceeded) or not state.images:
        return []
    req = state.request
    params = req.params if isinstance(req.params, dict) else {}
    sent = sent_inputs(state)
    result = state.terminal.result
    done = state.history[-1].at
    started = state.started_at
    first_send = next((r for r in state.history if isinstance(r.event, RequestSent)), None)
    accepted = state.last(RemoteJobAccepted)
    latency_ms = round((done - started).total_seconds() * 1000) if started else None
    stored_at = {
        r.event.index: r.at  # type: ignore[attr-defined]
        for r in state.history
        if isinstance(r.event, ImageStored)
    }
    cost = cost_usd(state)
    asked = params.get("asked") if isinstance(params.get("asked"), dict) else None
    server = server_of(state)
    out = []
    for image in state.images:
        when = stored_at.get(image.index)
        doc: dict[str, Any] = {
            "job_id": state.job_id,
            "index": image.index,
            "count": len(state.images),
            "backend": req.backend,
            "backend_type": req.backend_type,
            "model": req.model,
            "prompt": req.prompt,
            "seed": sent.get("seed", params.get("seed")),
            "width": image.width,
            "height": image.height,
            "size": f"{image.width}x{image.height}",
            "aspect_ratio": sent.get("aspect_ratio", params.get("aspect_ratio")),
            "steps": sent.get("steps", params.get("steps")),
            "output_format": image.format,
            "frames": image.frames,  # the kind: more than one is an animation
            "extra_inputs": sent.get("extra", params.get("extra", {})),
            "latency_ms": latency_ms,
            "cost_usd": cost,  # the job's, all its images (projections/cost.py)
            "prediction_id": accepted.event.remote_id if accepted else None,  # type: ignore[attr-defined]
            "caller": req.caller,
            "image": {"path": image.path, "sha256": image.sha256, "bytes": image.bytes},
            "timings": {
                "requested_at": iso(started) if started else None,
                "first_request_at": iso(first_send.at) if first_send else None,
                "image_stored_at": iso(when) if when else None,
                "finished_at": iso(done),
            },
            "result": result,
            "imagen_version": req.imagen_version,
        }
        if asked is not None:
            doc["asked"] = asked
        if server is not None:  # a ComfyUI pool: the member, or the backend it overflowed to
            doc["server"] = server
        expected = expected_size(params)
        if expected is not None and expected != doc["size"]:
            # The backend made another size than imagen asked it for: the image is kept (it
            # was paid for), and the sidecar says what was expected beside what was made.
            doc["expected_size"] = expected
        out.append(doc)
    return out


def sidecar(state: JobState) -> dict[str, Any] | None:
    """The first image's sidecar (None unless the job succeeded with an image)."""
    docs = sidecars(state)
    return docs[0] if docs else None
