"""The job list: one summary row per job, folded from events (pure).

The shell keeps these rows in a table that follows the ledger from a checkpoint, so `imagen jobs`
reads an index instead of the whole ledger. Every value is made to fit its column
(projections/safe.py): no recorded event can break the table.

Cost is the one figure of imagen/projections/cost.py, over the facts folded here (price, images
asked for and stored, whether the provider accepted the job, how it ended).
"""

from __future__ import annotations

from typing import Any

from imagen.core import money
from imagen.core.events import TERMINAL_TYPES, readable
from imagen.projections import safe
from imagen.projections.cost import billed

COLUMNS = (
    "job_id",
    "created_at",
    "updated_at",
    "status",
    "backend",
    "model",
    "caller",
    "prompt",
    "price_usd",
    "count",
    "accepted",
    "cost_usd",
    "images",
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
    "batch",
    "batch_index",
    "server",
)

_STATUS = {"JobSucceeded": "succeeded", "JobFailed": "failed", "JobCancelled": "cancelled"}

# The types `step` folds beyond a row's times (keep in step with its branches): only their
# payloads are read, so a catch-up that feeds only this table json-decodes no other payload
# (requests and responses, most of a ledger's events and bytes, only move a row's times).
READS = frozenset(
    {
        "JobRequested",
        "JobOverflowed",
        "JobPlaced",
        "JobMoved",
        "RunnerClaimed",
        "RunnerRenewed",
        "JobInterrupted",
        "RemoteJobAccepted",
        "ImageStored",
        *TERMINAL_TYPES,
    }
)


def _cost(r: dict[str, Any]) -> str | None:
    return billed(
        r["price_usd"],
        asked=r["count"] or 1,
        stored=r["images"] or 0,
        accepted=bool(r["accepted"]),
        succeeded=r["status"] == "succeeded",
    ).usd


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
    r = dict(row) if row else new_row(job_id, recorded_at)
    step(r, type_name, data, recorded_at, position, schema_version)
    return priced(r)


def new_row(job_id: str, recorded_at: str) -> dict[str, Any]:
    """The row of a job before its first event is folded."""
    return {c: None for c in COLUMNS} | {
        "job_id": job_id,
        "created_at": recorded_at,
        "status": "requested",
        "accepted": 0,
        "images": 0,
        "terminal_events": 0,
        "events_after_terminal": 0,
    }


def priced(r: dict[str, Any]) -> dict[str, Any]:
    """The row with its cost, which depends only on the facts folded: set once after the
    last `step` of a batch, not after each event."""
    r["cost_usd"] = _cost(r)
    return r


def fold_into(rows: dict[str, dict[str, Any]], events: Any, payloads: dict[int, Any]) -> None:
    """`step` every job event (ledger rows, position order) into `rows` (by job id; a job's
    first event starts its row), without costs (see `priced`). Streams named "$..." ("$ledger",
    "$budgets") are not jobs. `payloads` holds the payloads of the types in `READS`.

    The loop does `step`'s first part itself for an event that only moves a row's times (most
    of a ledger: requests and responses): a call per event would cost more than the rest."""
    found = payloads.get
    for position, _, job_id, _, type_name, schema, _, recorded_at, _, _ in events:
        if job_id[:1] == "$":
            continue
        r = rows.get(job_id)
        if r is None:
            r = rows[job_id] = new_row(job_id, recorded_at)
        if type_name in READS or r["terminal_events"]:
            step(r, type_name, found(position), recorded_at, position, schema)
        else:
            r["updated_at"], r["last_position"] = recorded_at, position


def step(
    r: dict[str, Any],
    type_name: str,
    data: Any,
    recorded_at: str,
    position: int,
    schema_version: int = 1,
) -> None:
    """`apply` in place, without the cost (see `priced`). `data` is read only for the
    types in `READS` (a type read here must be there)."""
    r["updated_at"], r["last_position"] = recorded_at, position
    if r["terminal_events"]:
        r["events_after_terminal"] += 1
    # Any other type (most of a ledger: requests, responses) only moves the row's times.
    if type_name not in READS or not readable(type_name, schema_version):
        return
    data = data if isinstance(data, dict) else {}
    if type_name == "JobRequested":
        params = data.get("params") if isinstance(data.get("params"), dict) else {}
        count = safe.integer(params.get("count"), safe.INT32)
        r.update(
            backend=safe.text(data.get("backend")),
            model=safe.text(data.get("model")),
            caller=safe.text(data.get("caller")),
            prompt=safe.text(data.get("prompt")),
            price_usd=money.usd(data.get("price_usd")),
            count=count if count and count > 0 else 1,
            batch=safe.text(data.get("batch")) or None,
            batch_index=safe.integer(data.get("batch_index"), safe.INT32),
        )
    elif type_name == "JobOverflowed":  # the job became the overflow backend's (a paid job)
        r.update(
            backend=safe.text(data.get("backend")),
            model=safe.text(data.get("model")),
            price_usd=money.usd(data.get("price_usd")),
            server=safe.text(data.get("backend")),
        )
    elif type_name == "JobPlaced":  # v5: the pool member it runs on (sidecar.server_of)
        r["server"] = safe.text(data.get("server"))
    elif type_name == "JobMoved":
        r["server"] = None
    elif type_name == "RunnerClaimed":
        r.update(
            pid=safe.integer(data.get("pid")),
            host=safe.text(data.get("host")),
            proc_start=safe.text(data.get("proc_start")) or "",
            claimed_at=recorded_at,
            lease_seconds=safe.number(data.get("lease_seconds")),
        )
        if not r["terminal_events"]:
            r["status"] = "running"
    elif type_name == "RunnerRenewed":
        r["claimed_at"] = recorded_at  # the lease runs from the latest renewal
    elif type_name == "JobInterrupted" and not r["terminal_events"]:
        r["status"] = "interrupted"
    elif type_name == "RemoteJobAccepted":
        r["remote_id"] = safe.text(data.get("remote_id"))
        r["accepted"] = 1
    elif type_name == "ImageStored":
        if not r["image_path"] or data.get("index", 0) == 0:
            r.update(image_path=safe.text(data.get("path")), sha256=safe.text(data.get("sha256")))
        r["images"] = (r["images"] or 0) + 1
        r["accepted"] = 1  # an image on disk was made: whatever else was recorded, it was billed
    if type_name in TERMINAL_TYPES:
        r["terminal_events"] += 1
        r["status"] = _STATUS[type_name]
        if type_name != "JobSucceeded":
            r["error"] = safe.text(data.get("message")) or safe.text(data.get("reason"))
