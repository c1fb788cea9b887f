"""The job list: one summary row per job, folded from events (pure).

The shell keeps these rows in a table that follows the ledger from a checkpoint, so `imagen jobs`
reads an index instead of the whole ledger.
"""

from __future__ import annotations

from typing import Any

from imagen.core.events import TERMINAL_TYPES, readable

COLUMNS = (
    "job_id",
    "created_at",
    "updated_at",
    "status",
    "backend",
    "model",
    "caller",
    "prompt",
    "cost_usd",
    "image_path",
    "sha256",
    "remote_id",
    "pid",
    "host",
    "proc_start",
    "claimed_at",
    "lease_seconds",
    "terminal_events",
    "events_after_terminal",
    "last_position",
    "error",
)

_STATUS = {"JobSucceeded": "succeeded", "JobFailed": "failed", "JobCancelled": "cancelled"}


def apply(
    row: dict[str, Any] | None,
    job_id: str,
    type_name: str,
    data: dict[str, Any],
    recorded_at: str,
    position: int,
    schema_version: int = 1,
) -> dict[str, Any]:
    """Fold one event into the job's row (a new row for the job's first event). An event
    this imagen cannot read (a newer imagen's type or schema version) only moves the row's
    times: its meaning is unknown here."""
    r = (
        dict(row)
        if row
        else {c: None for c in COLUMNS}
        | {
            "job_id": job_id,
            "created_at": recorded_at,
            "status": "requested",
            "terminal_events": 0,
            "events_after_terminal": 0,
        }
    )
    r["updated_at"], r["last_position"] = recorded_at, position
    if r["terminal_events"]:
        r["events_after_terminal"] += 1
    if not readable(type_name, schema_version):
        return r
    if type_name == "JobRequested":
        r.update(
            backend=data.get("backend"),
            model=data.get("model"),
            caller=data.get("caller"),
            prompt=data.get("prompt"),
            cost_usd=data.get("price_usd"),
        )
    elif type_name == "RunnerClaimed":
        r.update(
            pid=data.get("pid"),
            host=data.get("host"),
            proc_start=data.get("proc_start", ""),
            claimed_at=recorded_at,
            lease_seconds=data.get("lease_seconds"),
        )
        if not r["terminal_events"]:
            r["status"] = "running"
    elif type_name == "RunnerRenewed":
        r["claimed_at"] = recorded_at  # the lease runs from the latest renewal
    elif type_name == "JobInterrupted" and not r["terminal_events"]:
        r["status"] = "interrupted"
    elif type_name == "RemoteJobAccepted":
        r["remote_id"] = data.get("remote_id")
    elif type_name == "ImageStored":
        r.update(image_path=data.get("path"), sha256=data.get("sha256"))
    if type_name in TERMINAL_TYPES:
        r["terminal_events"] += 1
        r["status"] = _STATUS[type_name]
        if type_name != "JobSucceeded":
            r["error"] = data.get("message") or data.get("reason")
    return r
