"""Reading the local usage table with plain SQL through any ledger reader (no SQLAlchemy)."""

from __future__ import annotations

from typing import Any

from imagen.projections.usage.fold import COLUMNS

TABLE = "imagen_usage_v1"
CHECKPOINT = "imagen.usage.v1"
GROUPS = ("backend", "model", "caller")


def is_current(reader: Any) -> bool:
    try:
        row = reader.fetch(
            f"SELECT position FROM projection_checkpoints WHERE name = {reader.param}",
            (CHECKPOINT,),
        )
    except Exception:
        return False
    return bool(row) and row[0][0] == reader.head_position()


def _where(reader: Any, since: str | None, until: str | None) -> tuple[str, tuple[Any, ...]]:
    clauses, params = [], []
    if since:
        clauses.append(f"created_at >= {reader.param}")
        params.append(since)
    if until:
        clauses.append(f"created_at < {reader.param}")
        params.append(until)
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), tuple(params)


def rows(
    reader: Any, *, since: str | None = None, until: str | None = None
) -> list[dict[str, Any]]:
    where, params = _where(reader, since, until)
    sql = f"SELECT {', '.join(COLUMNS)} FROM {TABLE}{where} ORDER BY created_at DESC, id"
    return [dict(zip(COLUMNS, r, strict=True)) for r in reader.fetch(sql, params)]


def grouped(
    reader: Any, by: list[str], *, since: str | None = None, until: str | None = None
) -> list[dict[str, Any]]:
    """Images, total cost and mean latency per group, computed by the database."""
    keys = [k for k in by if k in GROUPS]  # names are whitelisted: they become SQL identifiers
    where, params = _where(reader, since, until)
    cols = ", ".join(keys)
    sql = (
        f"SELECT {cols}, count(*), sum(cost_usd_estimate), avg(latency_ms) FROM {TABLE}{where} "
        f"GROUP BY {cols} ORDER BY {cols}"
    )
    out = []
    for r in reader.fetch(sql, params):
        row = dict(zip(keys, r[: len(keys)], strict=True))
        row.update(images=r[-3], cost_usd=r[-2], mean_latency_ms=r[-1])
        out.append(row)
    return out
