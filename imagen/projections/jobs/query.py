"""Reading the jobs table with portable SQL through any ledger `Reader` (no SQLAlchemy needed).

Whether a running job's process still lives is not the table's to say: queries that report
status take `alive` (row -> is its owner driving it?), imagen/app/liveness.py's row_owner_alive."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from imagen.projections.jobs.fold import COLUMNS
from imagen.projections.jobs.table import CHECKPOINT, JOBS, TABLE
from ledger.interface import Reader
from ledger.projection import LockedView, as_rows, select_all


def is_current(reader: Reader) -> bool:
    """Has the projection seen every event? (Then a reader can answer without catching up.)"""
    return reader.is_current(CHECKPOINT)


def all_rows(reader: Reader) -> list[dict[str, Any]]:
    """Every row as stored (status without liveness), for audit and rebuild."""
    return as_rows(JOBS, reader.query(select_all(JOBS)))


Alive = Callable[[dict[str, Any]], bool]


def effective_status(row: dict[str, Any], alive: Alive) -> str:
    """running only while the owning process is alive (same host) or its lease holds."""
    if row["status"] not in ("running", "requested"):
        return row["status"]
    if row["status"] == "requested" and row["pid"] is None:
        return "requested"  # recorded for a worker (`generate --detach`), not yet claimed
    return "running" if alive(row) else "interrupted"


def query(
    reader: Reader,
    alive: Alive,
    *,
    since: str | None = None,
    status: str | None = None,
    backend: str | None = None,
    caller: str | None = None,
    batch: str | None = None,
    limit: int | None = 50,
) -> Iterator[dict[str, Any]]:
    """Newest first (a batch's members in batch order); each row's `status` has process
    liveness applied."""
    where: list[str] = []
    params: dict[str, object] = {}
    for column, value in (("backend", backend), ("caller", caller), ("batch", batch)):
        if value:
            where.append(f"{column} = :{column}")
            params[column] = value
    if since:
        where.append("created_at >= :since")
        params["since"] = since
    live_filter = status in ("running", "interrupted")
    if live_filter:
        # Liveness is decided per row below; finished jobs are excluded by the index.
        where.append("status IN ('running', 'requested', 'interrupted')")
    elif status:
        where.append("status = :status")
        params["status"] = status
    sql = f"SELECT {', '.join(COLUMNS)} FROM {TABLE}"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY batch_index, job_id" if batch else " ORDER BY created_at DESC, job_id"
    if limit and not live_filter:
        sql += f" LIMIT {int(limit)}"
    count = 0
    for values in reader.query(sql, params):
        row = dict(zip(COLUMNS, values, strict=True))
        row["status"] = effective_status(row, alive)
        if status and row["status"] != status:
            continue
        yield row
        count += 1
        if limit and count >= limit:
            return


def batches_with_prefix(reader: Reader, prefix: str, limit: int = 2) -> list[str]:
    """Batch ids starting with `prefix` (lowercase hex, as new_batch_id makes them)."""
    if not prefix or len(prefix) > 64 or not set(prefix) <= set("0123456789abcdef"):
        return []
    upper = prefix[:-1] + chr(ord(prefix[-1]) + 1)
    sql = (
        f"SELECT DISTINCT batch FROM {TABLE} WHERE batch >= :p AND batch < :u "
        f"ORDER BY batch LIMIT {int(limit)}"
    )
    return [str(b) for (b,) in reader.query(sql, {"p": prefix, "u": upper})]


def count_interrupted(reader: Reader, alive: Alive) -> int:
    return sum(1 for _ in query(reader, alive, status="interrupted", limit=None))


def holders(reader: Reader, remote_ids: list[str], *, except_job: str) -> dict[str, str]:
    """Which of these remote ids other jobs hold (remote id -> job id), from a current table."""
    if not remote_ids:
        return {}
    params: dict[str, object] = {f"r{i}": rid for i, rid in enumerate(remote_ids)}
    params["me"] = except_job
    marks = ", ".join(f":r{i}" for i in range(len(remote_ids)))
    sql = f"SELECT remote_id, job_id FROM {TABLE} WHERE remote_id IN ({marks}) AND job_id <> :me"
    return {str(remote): str(job) for remote, job in reader.query(sql, params)}


def holder_under_lock(view: LockedView, remote_id: str, *, except_job: str) -> str | None:
    """The job other than `except_job` that holds `remote_id`, read under the write lock (for
    the guard of the append that adopts it: imagen/app/runners.py). It reads the table up to its
    checkpoint and then every event after it (the table may lag), closing the gap between the
    runner's earlier RemoteIdsHeld check and this adoption: two jobs with one input never adopt
    one prediction."""
    if view.has_checkpoint(CHECKPOINT):
        held = holders(view, [remote_id], except_job=except_job)
        if remote_id in held:
            return held[remote_id]
        position = view.checkpoint(CHECKPOINT)
    else:
        position = 0
    while True:
        events = view.read_after(position, 5000)
        for e in events:
            if e.type == "RemoteJobAccepted" and e.stream_id != except_job:
                try:
                    data = e.data
                except ValueError:  # not ours to judge here: audit names a damaged event
                    continue
                if isinstance(data, dict) and data.get("remote_id") == remote_id:
                    return e.stream_id
        if len(events) < 5000:
            return None
        position = events[-1].position
