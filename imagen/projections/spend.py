"""What each job commits against budgets: one row per job, and the sums a budget checks.

A job still under way commits its full price (price x images asked for: it may be billed any
moment). An ended job commits what `imagen usage` counts as billed for it (the same
`usage_rows`, not a second rule): stored images, and the missing images of a prediction the
provider accepted and then failed; a request the provider refused (401, 402, 422, connection
refused) commits nothing. An ended job counts in the window it ended in, as in `imagen usage`;
one under way counts in every current window.

A budget's figure never comes from the table (`imagen_spend_v1`): any writer can edit a table,
and a zeroed row would lift a budget. `ChainSpend` folds the same rows from the events
themselves (the guard reads them under the write lock), and the table is a cache for reports
that `imagen audit` compares with that fold (`differences`).
"""

from __future__ import annotations

import bisect
import json
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

from imagen.core.events import TERMINAL_TYPES
from imagen.core.job import JobState
from imagen.core.times import is_iso_text, iso, parse_iso
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

HUGE = 2**53  # micro-dollars: over any budget, and sums of many still fit in 64 bits


def row(state: JobState, billed: list[Row] | None = None) -> Row | None:
    """`billed`: the job's `usage_rows`, when the caller has them already."""
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
        billed = usage_rows(state) if billed is None else billed
        out["spent_micros"] = sum(max(r["cost_micros"] or 0, 0) for r in billed)
        out["ended_at"] = state.ended_iso  # as usage_rows dates the job
    return out


_RECORDED = ("caller", "backend", "reserved_micros", "spent_micros")


def at_end(state: JobState) -> dict[str, object] | None:
    """What a terminal event records of its job (core/events.py SPEND_AT_END): the job's row,
    less what the event itself says (its stream, its time)."""
    r = row(state)
    if r is None or r["ended_at"] is None:
        return None
    return {k: r[k] for k in _RECORDED}


class End(NamedTuple):
    """What the budget check reads of a job's terminal event (not the whole event: the cold
    fold reads one per ended job)."""

    stream_id: str
    position: int
    data_json: str
    recorded_at: str

    def spend(self, payload: Any = None) -> Any:
        """The figure the end recorded; `payload`: its data, when the caller has decoded it."""
        if payload is None:
            try:
                payload = json.loads(self.data_json)
            except ValueError:
                return None
        return payload.get("spend") if isinstance(payload, dict) else None


def _recorded_row(e: End, spend: Any = None) -> Row | None:
    """The row a terminal event recorded (SPEND_AT_END), or None when it recorded none."""
    spend = e.spend() if spend is None else spend
    if not isinstance(spend, dict) or set(spend) != set(_RECORDED):
        return None
    caller, backend = spend["caller"], spend["backend"]
    figures = [spend["reserved_micros"], spend["spent_micros"]]
    if not all(isinstance(x, str) or x is None for x in (caller, backend)) or not all(
        isinstance(x, int) and not isinstance(x, bool) and 0 <= x <= HUGE for x in figures
    ):
        return None
    # As `row` dates the job: its last event's time, in `iso`'s form (the ledger's own).
    at = e.recorded_at
    ended = at if is_iso_text(at) else iso(parse_iso(at))
    return {"job_id": e.stream_id, **spend, "ended_at": ended}


def last_ends(view: Any, position: int) -> tuple[list[End], list[str]]:
    """The terminal events up to `position` that are their job's last event (whose recorded
    figure is the job's whole story), and every job's id, in one read view. Both read the
    (type, stream_id) index and the (stream_id, stream_version) one, never the whole table."""
    rows = view.query(
        "SELECT e.stream_id, e.position, e.data, e.recorded_at FROM events e WHERE e.type IN"
        " ('JobSucceeded', 'JobFailed', 'JobCancelled') AND e.position <= :p AND NOT EXISTS"
        " (SELECT 1 FROM events x WHERE x.stream_id = e.stream_id AND"
        " x.stream_version > e.stream_version AND x.position <= :p)",
        {"p": position},
    )
    jobs = view.query(
        "SELECT DISTINCT stream_id FROM events WHERE type = 'JobRequested' AND position <= :p",
        {"p": position},
    )
    ends = [End(*values) for values in rows]
    return [e for e in ends if _is_job(e.stream_id)], [j for (j,) in jobs if _is_job(j)]


def recorded_differences(view: Any, position: int, folded: dict[str, Row]) -> list[dict[str, Any]]:
    """For `imagen audit`: each terminal event's recorded figure (SPEND_AT_END) against its
    job folded whole. A figure a writer forged into an end (what a process's first budget
    check sums instead of folding the job) is a finding."""
    found = (recorded_difference(e, folded.get(e.stream_id)) for e in last_ends(view, position)[0])
    return [p for p in found if p is not None]


def recorded_difference(e: End, want: Row | None, payload: Any = None) -> dict[str, Any] | None:
    """One job's terminal event (its last) against the job's row folded whole; None when its
    recorded figure agrees, or it recorded none (an older imagen's end: folded, not summed).
    `payload`: the event's data, when the caller has decoded it."""
    spend = e.spend(payload)
    if spend is None:
        return None
    recorded = _recorded_row(e, spend)
    differ = (
        ["spend"]
        if recorded is None or want is None
        else [k for k in (*_RECORDED, "ended_at") if recorded.get(k) != want.get(k)]
    )
    if not differ:
        return None
    return {
        "kind": "spend_recorded",
        "job_id": e.stream_id,
        "position": e.position,
        "columns": differ,
        "message": f"job {e.stream_id}: the figure its end recorded (event "
        f"{e.position}) disagrees with the job's own events on {', '.join(differ)}; "
        "budget checks summed a false figure",
    }


def _is_job(stream_id: str) -> bool:
    return not stream_id.startswith("$")  # "$ledger", "$budgets": not jobs


def fold(view: View, events: Sequence[RecordedEvent]) -> list[Row]:
    from imagen.projections.feed import job_states, job_usage

    # Every job an event touched, folded whole up to the batch's end, as `ChainSpend` folds
    # it (the last event's time dates an ended job).
    touched = dict.fromkeys(e.stream_id for e in events if _is_job(e.stream_id))
    states = job_states(view, events, touched)
    ended = [j for j in touched if states[j].terminal is not None]
    usage = job_usage(view, events, ended)
    rows = (row(states[jid], usage.get(jid)) for jid in touched)
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


class ChainSpend:
    """What each job commits, folded from the chain itself: the figure a budget is checked
    against. Never read from the spend table, which any writer can edit (a row can be zeroed,
    an event cannot: the ledger's triggers refuse UPDATE and DELETE).

    A cache, kept in memory and keyed by the chain: the rows of every job (of `callers`, or
    of all) as folded up to `position`, whose hash was `hash`. `advance(view)` first checks
    that the chain still holds that hash there (a ledger restored, rebuilt or replaced, or a
    group commit rolled back, starts over from nothing), then folds only the events after it.
    So a process pays one fold of the ledger (outside the write lock: `Budgets.prepare`) and
    each paid create after that the events since its previous one."""

    def __init__(self, callers: frozenset[str] | None = None) -> None:
        self.callers = callers
        self._lock = threading.Lock()  # one advance at a time (a batch's workers share this)
        self._forget()

    def _forget(self) -> None:
        self.position, self.hash = 0, ""
        self.rows: dict[str, Row] = {}
        self._sums = _Sums()
        self._others: set[str] = set()  # jobs of callers not wanted here

    def advance(self, view: LockedView, *, batch: int = 5000, trust_ends: bool = True) -> None:
        """Fold up to the chain's head. `trust_ends`: a cold fold (nothing cached) takes an
        ended job's row from its terminal event (SPEND_AT_END) when that event is the job's last,
        instead of folding the job; `imagen audit` folds every job (trust_ends=False) and
        compares (`recorded_differences`)."""
        with self._lock:
            if self.position and view.hash_at(self.position) != self.hash:
                self._forget()
            if self.position == 0 and trust_ends:
                self._cold(view)
            cold = self.position == 0
            pending: dict[str, list[RecordedEvent]] = {}  # a cold fold's streams under way
            folded: set[str] = set()  # folded at their end in this cold fold
            touched: set[str] = set()  # to read again whole
            while True:
                events = view.read_after(self.position, batch)
                for e in events:
                    jid = e.stream_id
                    if not _is_job(jid) or jid in self._others:
                        continue
                    if e.type == "JobRequested" and not self._wanted(e):
                        self._others.add(jid)
                        pending.pop(jid, None)
                        self.rows.pop(jid, None)
                    elif not cold or jid in folded:
                        touched.add(jid)  # e.g. an event after the job's end
                    else:
                        pending.setdefault(jid, []).append(e)
                        if e.type in TERMINAL_TYPES:  # fold it now: memory stays bounded
                            self._put(jid, _fold(jid, pending.pop(jid)))
                            folded.add(jid)
                if events:
                    self.position, self.hash = events[-1].position, events[-1].hash
                if len(events) < batch:
                    break
            for jid, evs in pending.items():
                self._put(jid, _fold(jid, evs))
            for jid in touched - self._others:
                self._put(jid, load_job(view, jid))

    def _cold(self, view: LockedView) -> None:
        """The first fold of a process: the recorded rows of jobs whose terminal event is their
        last (read by type, their stream versions in the same snapshot), every other job (under
        way, ended by an older imagen, or with events after its end) folded whole."""
        head = view.query("SELECT position, hash FROM events ORDER BY position DESC LIMIT 1")
        if not head:
            return
        position, hash_ = head[0]
        ends, jobs = last_ends(view, position)
        done: set[str] = set()
        for e in ends:
            r = _recorded_row(e)
            if r is None:
                continue
            done.add(e.stream_id)
            if self.callers is not None and r["caller"] not in self.callers:
                self._others.add(e.stream_id)
                continue
            self.rows[e.stream_id] = r
            self._sums.add(e.stream_id, r)
        for jid in jobs:
            if jid not in done:
                self._put(jid, load_job(view, jid))
        self.position, self.hash = position, hash_

    def _wanted(self, e: RecordedEvent) -> bool:
        return self.callers is None or _caller(e) in self.callers or _caller(e) is None

    def _put(self, jid: str, state: JobState) -> None:
        r = row(state)
        old = self.rows.pop(jid, None)
        if old is not None:
            self._sums.remove(jid, old)
        if r is None:
            return
        if self.callers is not None and r["caller"] not in self.callers:
            self._others.add(jid)
            return
        self.rows[jid] = r
        self._sums.add(jid, r)

    def committed(self, filters: Sequence[Filter]) -> list[int]:
        """Micro-dollars committed for each filter, as of the last `advance` (each the sum of
        `_contribution` over the rows, read from running sums: no walk over every job)."""
        with self._lock:
            return [self._sums.total(f) for f in filters]


class _Sums:
    """The rows' contributions kept summed per caller and backend: the full price of jobs under
    way, and what ended jobs spent in order of their end, so a window's sum is one bisection."""

    def __init__(self) -> None:
        self.open: dict[tuple[str, str], int] = {}
        self.ended: dict[tuple[str, str], _Ended] = {}

    def add(self, jid: str, r: Row) -> None:
        key = (r["caller"], r["backend"])
        if r["ended_at"] is None:
            self.open[key] = self.open.get(key, 0) + int(r["reserved_micros"] or 0)
        else:
            self.ended.setdefault(key, _Ended()).add(
                jid, r["ended_at"], int(r["spent_micros"] or 0)
            )

    def remove(self, jid: str, r: Row) -> None:
        key = (r["caller"], r["backend"])
        if r["ended_at"] is None:
            self.open[key] -= int(r["reserved_micros"] or 0)
        else:
            self.ended[key].remove(jid)

    def total(self, f: Filter) -> int:
        keys = {k for k in (*self.open, *self.ended) if k[0] == f.caller}
        keys = {k for k in keys if not f.backend or k[1] == f.backend}
        out = 0
        for k in keys:
            out += self.open.get(k, 0)
            if k in self.ended:
                out += self.ended[k].since(f.since)
        return out


class _Ended:
    """What ended jobs spent, by the time they ended: sorted, with prefix sums. Jobs end in
    about the order they are read, so adding is an append; anything else (an end out of order,
    a job folded again) rebuilds the order once, at the next sum."""

    def __init__(self) -> None:
        self.where: dict[str, tuple[str, int]] = {}
        self.ats: list[str] = []
        self.prefix: list[int] = [0]
        self.dirty = False

    def add(self, jid: str, at: str, value: int) -> None:
        self.where[jid] = (at, value)
        if self.dirty or (self.ats and at < self.ats[-1]):
            self.dirty = True
            return
        self.ats.append(at)
        self.prefix.append(self.prefix[-1] + value)

    def remove(self, jid: str) -> None:
        del self.where[jid]
        self.dirty = True

    def since(self, since: str | None) -> int:
        if self.dirty:
            pairs = sorted(self.where.values())
            self.ats = [a for a, _ in pairs]
            self.prefix = [0]
            for _, v in pairs:
                self.prefix.append(self.prefix[-1] + v)
            self.dirty = False
        start = 0 if since is None else bisect.bisect_left(self.ats, since)
        return self.prefix[-1] - self.prefix[start]


def _fold(job_id: str, events: Sequence[RecordedEvent]) -> JobState:
    from imagen.core.job import fold as fold_job
    from imagen.repository import to_recorded

    return fold_job(job_id, [to_recorded(e) for e in events])


def load_job(view: View, job_id: str) -> JobState:
    from imagen.repository import load

    return load(view, job_id)


def _caller(e: RecordedEvent) -> object:
    try:
        data = e.data
    except ValueError:
        return None  # not JSON: decoding makes it an unknown event, which prices nothing
    return data.get("caller") if isinstance(data, dict) else None


def snapshot(reader: Any) -> dict[str, tuple[Any, ...]]:
    """Every row, by job id (for `imagen rebuild`'s before and after)."""
    names = ", ".join(SPEND.column_names)
    return {r[0]: r for r in reader.query(f"SELECT {names} FROM {TABLE}")}


def reset(store: EventStore) -> None:
    from ledger.projection import reset as reset_projection

    reset_projection(store, PROJECTION)


def rebuild(store: EventStore) -> list[str]:
    """Re-derive the table from the ledger alone (budgets trust it); report rows that differed."""
    from ledger.projection import differed

    catch_up(store)
    before = snapshot(store)
    reset(store)
    catch_up(store)
    return [f"spend: row {k} differed and was rebuilt" for k in differed(before, snapshot(store))]
