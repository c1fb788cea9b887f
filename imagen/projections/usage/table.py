"""The local usage table: follows the ledger from a checkpoint; the outbox for Supabase sync.

`seq` orders rows as they were projected; the remote sync confirms rows up to a seq
(checkpoint `imagen.usage.synced`), so anything not confirmed is sent again next time.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    Column,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    delete,
    insert,
    select,
)

from imagen.core.events import TERMINAL_TYPES
from imagen.projections.usage.fold import COLUMNS, usage_row
from imagen.projections.usage.query import CHECKPOINT, TABLE  # noqa: E402
from ledger import EventStore

SYNCED = "imagen.usage.synced"

metadata = MetaData()
usage = Table(
    TABLE,
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("id", String(200), nullable=False, unique=True),
    Column("created_at", String(32), nullable=False, index=True),
    Column("backend", String(100)),
    Column("model", String(200)),
    Column("seed", Integer),
    Column("prompt_hash", String(64)),
    Column("latency_ms", Integer),
    Column("cost_usd_estimate", Float),
    Column("caller", String(200), index=True),
    # Covering indexes: `imagen usage` groups a million rows from the index alone.
    Index(
        "ix_imagen_usage_v1_backend_model", "backend", "model", "cost_usd_estimate", "latency_ms"
    ),
    Index("ix_imagen_usage_v1_caller_cost", "caller", "cost_usd_estimate", "latency_ms"),
)


def catch_up(store: EventStore, *, batch: int = 20000) -> int:
    from imagen.runner.load import load

    store.ensure_projection(metadata, CHECKPOINT)
    added = 0
    while True:
        after = store.get_checkpoint(CHECKPOINT)
        ended: list[str] = []
        last = after
        for e in store.read_all(after, batch=batch):
            last = e.position
            if e.type in TERMINAL_TYPES:
                ended.append(e.stream_id)
            if last - after >= batch:
                break
        if last == after:
            return added
        rows = [r for r in (usage_row(load(store, jid)) for jid in ended) if r]
        with store.transaction() as conn:
            if store.get_checkpoint(CHECKPOINT, conn) != after:
                continue
            if rows:
                known = {
                    r[0]
                    for r in conn.execute(
                        select(usage.c.id).where(usage.c.id.in_([r["id"] for r in rows]))
                    )
                }
                fresh = [r for r in rows if r["id"] not in known]
                if fresh:
                    conn.execute(insert(usage), fresh)
                    added += len(fresh)
            store.set_checkpoint(CHECKPOINT, last, conn)


def unsynced(store: EventStore, limit: int) -> list[dict[str, Any]]:
    after = store.get_checkpoint(SYNCED)
    stmt = select(usage).where(usage.c.seq > after).order_by(usage.c.seq).limit(limit)
    with store.engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(stmt)]


def rebuild(store: EventStore) -> list[str]:
    """Re-derive the table from the ledger alone; report rows that differed."""
    catch_up(store)
    with store.engine.connect() as conn:
        before = {r.id: tuple(r._mapping[c] for c in COLUMNS) for r in conn.execute(select(usage))}
    with store.transaction() as conn:
        conn.execute(delete(usage))
        store.set_checkpoint(CHECKPOINT, 0, conn)
        store.set_checkpoint(SYNCED, 0, conn)  # re-sending is harmless: upserts ignore duplicates
    catch_up(store)
    with store.engine.connect() as conn:
        after = {r.id: tuple(r._mapping[c] for c in COLUMNS) for r in conn.execute(select(usage))}
    return [
        f"usage: row {k} differed and was rebuilt"
        for k in sorted(before.keys() | after.keys())
        if before.get(k) != after.get(k)
    ]
