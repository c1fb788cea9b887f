"""The jobs table: the job-list projection kept in the ledger database, caught up on read.

It is derived data: dropped and rebuilt whenever its version changes (or `imagen rebuild`).
"""

from __future__ import annotations

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

from imagen.projections.jobs import fold as projection
from imagen.projections.jobs.query import CHECKPOINT, TABLE  # noqa: E402
from ledger import IDENTITY_STREAM, EventStore

metadata = MetaData()
jobs = Table(
    TABLE,
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
    store.ensure_projection(metadata, CHECKPOINT)
    applied = 0
    while True:
        after = store.get_checkpoint(CHECKPOINT)
        events = []
        last = after
        for e in store.read_all(after, batch=batch):
            last = e.position
            if e.stream_id != IDENTITY_STREAM:  # the ledger's own identity is not a job
                events.append(e)
            if last - after >= batch:
                break
        if last == after:
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
            store.set_checkpoint(CHECKPOINT, last, conn)
        applied += len(events)


def reset(store: EventStore) -> None:
    store.ensure_projection(metadata, CHECKPOINT)
    with store.transaction() as conn:
        conn.execute(delete(jobs))
        store.set_checkpoint(CHECKPOINT, 0, conn)
