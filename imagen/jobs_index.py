"""The jobs table: the job-list projection kept in the ledger database, caught up on read.

It is derived data: dropped and rebuilt whenever its version changes (or `imagen rebuild`).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    delete,
    insert,
    select,
    update,
)

from imagen.environment import Environment
from imagen.job import parse_time
from imagen.liveness import owner_alive
from imagen.projections import jobs as projection
from ledger import EventStore

CHECKPOINT = "imagen.jobs.v1"

metadata = MetaData()
jobs = Table(
    "imagen_jobs_v1",
    metadata,
    Column("job_id", String(200), primary_key=True),
    Column("created_at", String(32), index=True),
    Column("updated_at", String(32)),
    Column("status", String(20), index=True),
    Column("backend", String(100)),
    Column("model", String(200)),
    Column("caller", String(200)),
    Column("prompt", Text),
    Column("cost_usd", Float),
    Column("image_path", Text),
    Column("sha256", String(64)),
    Column("remote_id", String(200)),
    Column("pid", Integer),
    Column("host", String(255)),
    Column("proc_start", String(40)),
    Column("claimed_at", String(32)),
    Column("lease_seconds", Float),
    Column("terminal_events", Integer),
    Column("events_after_terminal", Integer),
    Column("last_position", BigInteger),
    Column("error", Text),
)


def catch_up(store: EventStore, *, batch: int = 20000) -> int:
    """Fold events after the checkpoint into the table; returns how many were applied."""
    metadata.create_all(store.engine, checkfirst=True)
    applied = 0
    while True:
        after = store.get_checkpoint(CHECKPOINT)
        events = []
        for e in store.read_all(after, batch=batch):
            events.append(e)
            if len(events) >= batch:
                break
        if not events:
            return applied
        with store.transaction() as conn:
            if store.get_checkpoint(CHECKPOINT, conn) != after:
                continue  # another process caught up meanwhile; start again from its checkpoint
            ids = sorted({e.stream_id for e in events})
            rows: dict[str, dict[str, Any]] = {}
            for chunk in range(0, len(ids), 500):
                for row in conn.execute(
                    select(jobs).where(jobs.c.job_id.in_(ids[chunk : chunk + 500]))
                ):
                    rows[row.job_id] = dict(row._mapping)
            existing = set(rows)
            for e in events:
                rows[e.stream_id] = projection.apply(
                    rows.get(e.stream_id), e.stream_id, e.type, e.data, e.recorded_at, e.position
                )
            new = [r for k, r in rows.items() if k not in existing]
            if new:
                conn.execute(insert(jobs), new)
            for k in existing:
                conn.execute(update(jobs).where(jobs.c.job_id == k).values(rows[k]))
            store.set_checkpoint(CHECKPOINT, events[-1].position, conn)
        applied += len(events)


def reset(store: EventStore) -> None:
    metadata.create_all(store.engine, checkfirst=True)
    with store.transaction() as conn:
        conn.execute(delete(jobs))
        store.set_checkpoint(CHECKPOINT, 0, conn)


def query(
    store: EventStore,
    env: Environment,
    *,
    since: str | None = None,
    status: str | None = None,
    backend: str | None = None,
    caller: str | None = None,
    limit: int | None = 50,
) -> Iterator[dict[str, Any]]:
    """Newest first; each row carries `status` with process liveness applied."""
    stmt = select(jobs).order_by(jobs.c.created_at.desc(), jobs.c.job_id)
    if since:
        stmt = stmt.where(jobs.c.created_at >= since)
    if backend:
        stmt = stmt.where(jobs.c.backend == backend)
    if caller:
        stmt = stmt.where(jobs.c.caller == caller)
    unfinished = ("running", "requested", "interrupted")
    if status in ("running", "interrupted"):
        stmt = stmt.where(jobs.c.status.in_(unfinished))  # liveness is decided per row below
    elif status:
        stmt = stmt.where(jobs.c.status == status)
    count = 0
    with store.engine.connect() as conn:
        for row in conn.execution_options(yield_per=200).execute(stmt):
            r = dict(row._mapping)
            r["status"] = effective_status(r, env)
            if status and r["status"] != status:
                continue
            yield r
            count += 1
            if limit and count >= limit:
                return


def effective_status(row: dict[str, Any], env: Environment) -> str:
    """running only while the owning process is alive (same host) or its lease holds."""
    if row["status"] not in ("running", "requested"):
        return row["status"]
    alive = owner_alive(
        pid=row["pid"],
        host=row["host"],
        started=row["proc_start"],
        claimed_at=parse_time(row["claimed_at"]) if row["claimed_at"] else None,
        lease_seconds=row["lease_seconds"],
        my_host=env.host,
        now=env.clock(),
    )
    return "running" if alive else "interrupted"


def since_text(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def count_interrupted(store: EventStore, env: Environment) -> int:
    catch_up(store)
    return sum(1 for _ in query(store, env, status="interrupted", limit=None))
