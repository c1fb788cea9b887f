"""The JSON sidecar beside each image: a projection of the job's events, rebuildable any time."""

from __future__ import annotations

from typing import Any

from imagen.core.events import ImageStored, JobSucceeded, RemoteJobAccepted, RequestSent
from imagen.core.job import JobState, iso


def sidecar(state: JobState) -> dict[str, Any] | None:
    if state.request is None or not isinstance(state.terminal, JobSucceeded) or state.image is None:
        return None
    req, image = state.request, state.image
    result = state.terminal.result
    done = state.history[-1].at
    started = state.started_at
    first_send = next((r for r in state.history if isinstance(r.event, RequestSent)), None)
    stored = state.last(ImageStored)
    accepted = state.last(RemoteJobAccepted)
    latency_ms = round((done - started).total_seconds() * 1000) if started else None
    return {
        "job_id": state.job_id,
        "backend": req.backend,
        "backend_type": req.backend_type,
        "model": req.model,
        "prompt": req.prompt,
        "seed": req.params.get("seed"),
        "width": image.width,
        "height": image.height,
        "size": f"{image.width}x{image.height}",
        "aspect_ratio": req.params.get("aspect_ratio"),
        "steps": req.params.get("steps"),
        "output_format": image.format,
        "extra_inputs": req.params.get("extra", {}),
        "latency_ms": latency_ms,
        "cost_usd_estimate": req.price_usd,
        "prediction_id": accepted.event.remote_id if accepted else None,  # type: ignore[attr-defined]
        "caller": req.caller,
        "image": {"path": image.path, "sha256": image.sha256, "bytes": image.bytes},
        "timings": {
            "requested_at": iso(started) if started else None,
            "first_request_at": iso(first_send.at) if first_send else None,
            "image_stored_at": iso(stored.at) if stored else None,
            "finished_at": iso(done),
        },
        "result": result,
        "imagen_version": req.imagen_version,
    }
