"""Reading the local usage table with portable SQL through any ledger `Reader` (no SQLAlchemy)."""

from __future__ import annotations

from datetime import tzinfo
from typing import Any

from imagen.projections.usage.fold import LOCAL_COLUMNS, micros_text
from imagen.projections.usage.table import CHECKPOINT, TABLE
from ledger.interface import Reader

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
    """One row per image (and per paid-but-failed prediction), newest first; money as an
    exact decimal string."""
    where, params = _where(since, until)
    sql = f"SELECT {', '.join(LOCAL_COLUMNS)} FROM {TABLE}{where} ORDER BY created_at DESC, id"
    out = []
    for r in reader.query(sql, params):
        row = dict(zip(LOCAL_COLUMNS, r, strict=True))
        row["cost_usd"] = micros_text(row.pop("cost_micros"))
        out.append(row)
    return out


def grouped(
    reader: Reader, by: list[str], *, since: str | None = None, until: str | None = None
) -> list[dict[str, Any]]:
    """Images, paid-but-failed predictions, exact total cost and mean image latency per group,
    computed by the database."""
    keys = [k for k in by if k in GROUPS]  # names are whitelisted: they become SQL identifiers
    where, params = _where(since, until)
    cols = ", ".join(keys)
    sql = (
        f"SELECT {cols}, "
        "sum(CASE WHEN outcome = 'paid_failed' THEN 0 ELSE 1 END), "
        "sum(CASE WHEN outcome = 'paid_failed' THEN 1 ELSE 0 END), "
        "sum(cost_micros), "
        "avg(CASE WHEN outcome = 'paid_failed' THEN NULL ELSE latency_ms END) "
        f"FROM {TABLE}{where} GROUP BY {cols} ORDER BY {cols}"
    )
    out = []
    for r in reader.query(sql, params):
        row = dict(zip(keys, r[: len(keys)], strict=True))
        images, failed, cost, latency = r[-4:]
        row.update(
            images=int(images or 0),
            paid_failed=int(failed or 0),
            cost_usd=micros_text(int(cost or 0)),
            mean_latency_ms=float(latency) if latency is not None else None,
        )
        out.append(row)
    return out


def grouped_by_day(
    rows_: list[dict[str, Any]], by: list[str], local: tzinfo
) -> list[dict[str, Any]]:
    """Usage rows (`rows`, or the remote table's) grouped with `day` among the keys: the local
    calendar day of `created_at`. A database cannot group by it (it knows no local zone and
    its DST changes), so the rows are summed here, exactly (decimal money) as `grouped` does."""
    from imagen.core.times import local_day
    from imagen.projections.usage.sync import group

    keys = [k for k in by if k in (*GROUPS, "day")]
    days = []
    for r in rows_:
        try:
            day = local_day(str(r.get("created_at")), local)
        except ValueError:
            day = None  # a remote row's time that does not parse still counts, under no day
        days.append({**r, "day": day})
    return group(days, keys)
