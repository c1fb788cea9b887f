"""What each job commits against budgets: one row per job, and the sums a budget checks.

A job still under way commits its full price (price x images asked for: it may be billed any
moment). An ended job commits what `imagen usage` counts as billed for it (the same
`usage_rows`, not a second rule): stored images, and the missing images of a prediction the
provider accepted and then failed; a request the provider refused (401, 402, 422, connection
refused) commits nothing. An ended job counts in the window it ended in, as in `imagen usage`;
one under way counts in every current window.

`committed` reads the table up to its checkpoint plus the events after it (folded here from
their streams), so inside an append's guard it sees every event committed before the guard.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from imagen.core.events import TERMINAL_TYPES
from imagen.core.job import JobState
from imagen.core.times import iso
from imagen.projections.usage.fold import micros, usage_rows
from ledger.events import RecordedEvent
from ledger.projection import (
    ColumnSpec,
    ColumnType,
    LockedView,
    Projection,
    Row,
    TableSpec,
    View,
)
from ledger.projection import catch_up as catch_up_projection

if TYPE_CHECKING:
    from ledger import EventStore

TABLE = "imagen_spend_v1"
CHECKPOINT = "imagen.spend.v1"

_T, _I = ColumnType.TEXT, ColumnType.INTEGER

SPEND = TableSpec(
    TABLE,
    key="job_id",
    columns=(
        ColumnSpec("job_id", _T),
        ColumnSpec("caller", _T),
        ColumnSpec("backend", _T),
        ColumnSpec("ended_at", _T),  # NULL while the job is under way
        ColumnSpec("reserved_micros", _I, nullable=False),  # the full price
        ColumnSpec("spent_micros", _I),  # once ended: what usage counts as billed
    ),
    # Covering: a budget's sum reads the index alone.
    indexes=(
        (
            "ix_imagen_spend_v1_caller",
            ("caller", "ended_at", "backend", "reserved_micros", "spent_micros"),
        ),
    ),
)

# Events that change a job's row: its request (the price) and its end (what was billed).
_CHANGES = TERMINAL_TYPES | {"JobRequested"}
HUGE = 2**53  # micro-dollars: over any budget, and sums of many still fit in 64 bits


def row(state: JobState) -> Row | None:
    req = state.request
    if req is None:
        return None
    reserved = micros(req.price_usd, state.count) if req.price_usd else 0
    # A price past any column still may not slip under a budget.
    reserved = HUGE if reserved is None else min(reserved, HUGE)
    out: Row = {
        "job_id": state.job_id,
        "caller": req.caller,
        "backend": req.backend,
        "ended_at": None,
        "reserved_micros": max(reserved, 0),
        "spent_micros": None,
    }
    if state.terminal is not None:
        billed = usage_rows(state)
        out["spent_micros"] = sum(max(r["cost_micros"] or 0, 0) for r in billed)
        out["ended_at"] = iso(state.history[-1].at)  # as usage_rows dates the job
    return out


def _is_job(stream_id: str) -> bool:
    return not stream_id.startswith("$")  # "$ledger", "$budgets": not jobs


def fold(view: View, events: Sequence[RecordedEvent]) -> list[Row]:
    from imagen.repository import load

    touched = dict.fromkeys(
        e.stream_id for e in events if e.type in _CHANGES and _is_job(e.stream_id)
    )
    rows = (row(load(view, jid)) for jid in touched)
    return [r for r in rows if r is not None]


PROJECTION = Projection(SPEND, CHECKPOINT, fold)


def catch_up(store: EventStore, *, batch: int = 20000) -> int:
    return catch_up_projection(store, PROJECTION, batch=batch)


@dataclass(frozen=True, slots=True)
class Filter:
    caller: str
    backend: str = ""  # "" for every backend
    since: str | None = None  # UTC ISO; None: since the ledger began


def _contribution(r: Row, f: Filter) -> int:
    if r["caller"] != f.caller or (f.backend and r["backend"] != f.backend):
        return 0
    if r["ended_at"] is None:
        return int(r["reserved_micros"] or 0)
    if f.since is not None and r["ended_at"] < f.since:
        return 0
    return int(r["spent_micros"] or 0)


def committed(view: LockedView, filters: Sequence[Filter], *, batch: int = 5000) -> list[int]:
    """Micro-dollars committed for each filter: the table's sums, with the jobs that events
    after its checkpoint touched taken from their streams instead."""
    from imagen.core.job import fold as fold_job
    from imagen.repository import load, to_recorded

    after = view.checkpoint(CHECKPOINT) if view.has_checkpoint(CHECKPOINT) else None
    callers = {f.caller for f in filters}
    tail: dict[str, Row] = {}
    loaded: set[str] = set()  # folded from the whole stream: final for this view
    position = after or 0
    while True:
        events = view.read_after(position, batch)
        ended = {e.stream_id for e in events if e.type in TERMINAL_TYPES}
        for e in events:
            if e.type not in _CHANGES or not _is_job(e.stream_id) or e.stream_id in loaded:
                continue
            if e.type == "JobRequested" and e.stream_id not in ended:
                # Requested and still under way: the request alone prices it (the common
                # case in a tail, read without another query), and only for these callers.
                if _caller(e) not in callers:
                    continue
                state = fold_job(e.stream_id, [to_recorded(e)])
            else:
                state = load(view, e.stream_id)
                loaded.add(e.stream_id)
            r = row(state)
            if r is not None:
                tail[e.stream_id] = r
        if len(events) < batch:
            break
        position = events[-1].position
    stale = view.rows(SPEND, tail) if after is not None and tail else {}
    totals = _table_sums(view, filters) if after is not None else [0] * len(filters)
    return [
        total
        - sum(_contribution(r, f) for r in stale.values())
        + sum(_contribution(r, f) for r in tail.values())
        for total, f in zip(totals, filters, strict=True)
    ]


def _caller(e: RecordedEvent) -> object:
    try:
        data = e.data
    except ValueError:
        return None  # not JSON: decoding makes it an unknown event, which prices nothing
    return data.get("caller") if isinstance(data, dict) else None


def _table_sums(view: LockedView, filters: Sequence[Filter]) -> list[int]:
    """Every filter's sum in one pass over the table (one range of the covering index per
    caller, not one per budget)."""
    out: list[int] = []
    callers = sorted({f.caller for f in filters})
    sums: dict[Filter, int] = {}
    for caller in callers:
        mine = [f for f in filters if f.caller == caller]
        params: dict[str, Any] = {"caller": caller}
        columns = []
        for n, f in enumerate(mine):
            cond = ["ended_at IS NULL"]
            if f.since is None:
                cond = ["1 = 1"]
            else:
                cond.append(f"ended_at >= :since{n}")
                params[f"since{n}"] = f.since
            when = f"({' OR '.join(cond)})"
            if f.backend:
                when += f" AND backend = :backend{n}"
                params[f"backend{n}"] = f.backend
            columns.append(
                f"coalesce(sum(CASE WHEN {when} THEN coalesce(spent_micros, reserved_micros) "
                "ELSE 0 END), 0)"
            )
        [values] = view.query(
            f"SELECT {', '.join(columns)} FROM {TABLE} WHERE caller = :caller", params
        )
        sums.update(zip(mine, (int(v or 0) for v in values), strict=True))
    out = [sums[f] for f in filters]
    return out


def rebuild(store: EventStore) -> list[str]:
    """Re-derive the table from the ledger alone (budgets trust it); report rows that differed."""
    from ledger.projection import reset

    catch_up(store)
    names = ", ".join(SPEND.column_names)
    before = {r[0]: r for r in store.query(f"SELECT {names} FROM {TABLE}")}
    reset(store, PROJECTION)
    catch_up(store)
    after = {r[0]: r for r in store.query(f"SELECT {names} FROM {TABLE}")}
    return [
        f"spend: row {k} differed and was rebuilt"
        for k in sorted(before.keys() | after.keys())
        if before.get(k) != after.get(k)
    ]
