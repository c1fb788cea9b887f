"""Reading the local usage table with portable SQL through any ledger `Reader` (no SQLAlchemy)."""

from __future__ import annotations

from typing import Any

from imagen.projections.usage.fold import COLUMNS
from imagen.projections.usage.table import CHECKPOINT, TABLE
from ledger.reader import Reader

GROUPS = ("backend", "model", "caller")


def is_current(reader: Reader) -> bool:
    return reader.is_current(CHECKPOINT)


def _where(since: str | None, until: str | None) -> tuple[str, dict[str, object]]:
    clauses, params = [], {}
    if since:
        clauses.append("created_at >= :since")
        params["since"] = since
    if until:
        clauses.append("created_at < :until")
        params["until"] = until
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), params


def rows(
    reader: Reader, *, since: str | None = None, until: str | None = None
) -> list[dict[str, Any]]:
    where, params = _where(since, until)
    sql = f"SELECT {', '.join(COLUMNS)} FROM {TABLE}{where} ORDER BY created_at DESC, id"
    return [dict(zip(COLUMNS, r, strict=True)) for r in reader.query(sql, params)]


def grouped(
    reader: Reader, by: list[str], *, since: str | None = None, until: str | None = None
) -> list[dict[str, Any]]:
    """Images, total cost and mean latency per group, computed by the database."""
    keys = [k for k in by if k in GROUPS]  # names are whitelisted: they become SQL identifiers
    where, params = _where(since, until)
    cols = ", ".join(keys)
    sql = (
        f"SELECT {cols}, count(*), sum(cost_usd_estimate), avg(latency_ms) FROM {TABLE}{where} "
        f"GROUP BY {cols} ORDER BY {cols}"
    )
    out = []
    for r in reader.query(sql, params):
        row = dict(zip(keys, r[: len(keys)], strict=True))
        row.update(images=r[-3], cost_usd=r[-2], mean_latency_ms=r[-1])
        out.append(row)
    return out
