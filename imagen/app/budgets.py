"""Budgets: setting them (ledger events), checking a request against them under the ledger's
write lock, and reporting spent and left per window.

The check is a guard on the append that records a new job (`Runner.submit`): it reads the
budgets and what the caller has committed inside the same locked transaction, so two processes
can never both take the last of a budget. What the caller has committed is folded from the
events themselves (`spend.ChainSpend`), never read from the spend table, which a writer can
edit. Rules: imagen/core/budgets.py; what counts as committed: imagen/projections/spend.py.

A budget's windows are in the zone recorded when it was set (`BudgetSet.zone`), whatever the
TZ of the process that checks; a budget set before zones were recorded follows the checking
process's zone, as it always did.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone, tzinfo
from typing import Any

from imagen.app.contract import BudgetObject, CallerBudget, Money, StandingObject
from imagen.core import budgets as rules
from imagen.core.budgets import DEFAULT, Budget
from imagen.core.events import (
    BUDGET_STREAM,
    BudgetPeriod,
    BudgetRemoved,
    BudgetSet,
    Event,
    JobRequested,
)
from imagen.core.failures import Failure
from imagen.core.job import JobState, image_count
from imagen.core.money import usd
from imagen.core.times import iso
from imagen.projections import spend
from imagen.projections.usage.fold import micros
from imagen.runner.admission import Refused
from ledger.events import NewEvent
from ledger.projection import Guard, LockedView

Clock = Callable[[], datetime]


def dollars(value: int) -> str:
    """Micro-dollars as imagen shows money ("0.003000")."""
    return usd(f"{value // 1_000_000}.{value % 1_000_000:06d}") or "0.000000"


class OverBudget(Refused):
    """A request would take its caller past `budget`: refused before anything is sent."""

    reason = "over_budget"
    category = Failure.BUDGET

    def __init__(self, budget: Budget, caller: str, spent: int, price: int) -> None:
        self.budget, self.caller, self.spent, self.price = budget, caller, spent, price
        left = max(budget.amount_micros - spent, 0)
        super().__init__(
            f"over budget: {budget.describe()} is ${dollars(budget.amount_micros)}; "
            f"{caller} has spent ${dollars(spent)}, ${dollars(left)} left, and this request "
            f"costs ${dollars(price)}; nothing was sent (`imagen budget list`)"
        )


def price_micros(request: JobRequested) -> int:
    if not request.price_usd or request.price_usd <= 0:
        return 0
    value = micros(request.price_usd, image_count(request))
    return spend.HUGE if value is None else min(value, spend.HUGE)


def in_force(view: Any) -> dict[tuple[str, str, str], Budget]:
    """The budgets the ledger holds now (`view`: a store, a snapshot or a guard's view)."""
    from imagen.repository import to_recorded

    recorded = (to_recorded(e) for e in view.read_stream(BUDGET_STREAM))
    return rules.fold((r.event, iso(r.at)) for r in recorded)


def zone_of(b: Budget, fallback: tzinfo) -> tzinfo:
    """The zone `b`'s windows are in: the one recorded when it was set; `fallback` (the
    checking process's zone) for a budget recorded before zones were, or one this machine
    does not know."""
    if not b.zone:
        return fallback
    offset = rules.parse_offset(b.zone)
    if offset is not None:
        return timezone(timedelta(minutes=offset))
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        return ZoneInfo(b.zone)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return fallback


def zone_name(tz: tzinfo, now: datetime) -> str:
    """What to record for `tz`: its IANA name when known, else its UTC offset now ("+02:00")."""
    key = getattr(tz, "key", None)
    if isinstance(key, str) and key and key != "localtime":
        return key
    if key == "localtime":
        named = _local_zone_name()
        if named:
            return named
    return rules.format_offset(now.astimezone(tz).utcoffset() or timedelta(0))


def _local_zone_name() -> str | None:
    """The IANA name behind /etc/localtime (a link into the zoneinfo tree), when it has one."""
    import os

    try:
        target = os.path.realpath("/etc/localtime")
    except OSError:
        return None
    marker = "/zoneinfo/"
    if marker not in target:
        return None
    name = target.split(marker, 1)[1]
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return None
    return name


def window_start(b: Budget, now: datetime, tz: tzinfo) -> datetime | None:
    return rules.window_start(b.per, now, zone_of(b, tz))


def window_end(b: Budget, now: datetime, tz: tzinfo) -> datetime | None:
    return rules.window_end(b.per, now, zone_of(b, tz))


def window_filters(
    budgets: Iterable[Budget], caller: str, now: datetime, tz: tzinfo
) -> list[spend.Filter]:
    out = []
    for b in budgets:
        start = window_start(b, now, tz)
        out.append(spend.Filter(caller, b.backend, None if start is None else iso(start)))
    return out


# The chain's spend per store and caller, shared by every Runner of a process (a batch's
# workers): each process folds the ledger once, then only the events since its last check.
_CHAINS: weakref.WeakKeyDictionary[Any, dict[str | None, spend.ChainSpend]] = (
    weakref.WeakKeyDictionary()
)
_CHAINS_LOCK = threading.Lock()


def chain_spend(store: Any, caller: str | None) -> spend.ChainSpend:
    """The cached fold of `caller`'s jobs (None: every caller's) for `store`."""
    with _CHAINS_LOCK:
        mine = _CHAINS.setdefault(store, {})
        found = mine.get(caller)
        if found is None:
            found = mine[caller] = spend.ChainSpend(None if caller is None else frozenset([caller]))
        return found


def guard(request: JobRequested, clock: Clock, tz: tzinfo, chain: spend.ChainSpend) -> Guard | None:
    """The check run under the write lock before `request` is recorded; None when the request
    costs nothing (a free job is never refused, whatever was spent)."""
    price = price_micros(request)
    if price == 0:
        return None

    def check(view: LockedView) -> None:
        applicable = rules.applicable(in_force(view).values(), request.caller, request.backend)
        if not applicable:
            return
        filters = window_filters(applicable, request.caller, clock(), tz)
        chain.advance(view)  # the events since this process's last look, under the lock
        for b, spent in zip(applicable, chain.committed(filters), strict=True):
            if spent + price > b.amount_micros:
                raise OverBudget(b, request.caller, spent, price)

    return check


class Budgets:
    """The Runner's admission (runner/admission.py): a paid job is refused when it would take
    its caller past a budget, checked under the write lock as it is recorded."""

    def __init__(self, store: Any, clock: Clock, tz: tzinfo) -> None:
        self.store, self.clock, self.tz = store, clock, tz

    def prepare(self, request: JobRequested) -> None:
        """Outside the lock, before a paid request when budgets exist: fold the chain up to
        now, so the guard under the lock folds only what was appended since."""
        if not price_micros(request) or not self.store.stream_version(BUDGET_STREAM):
            return
        with self.store.snapshot() as view:
            if rules.applicable(in_force(view).values(), request.caller, request.backend):
                chain_spend(self.store, request.caller).advance(view)

    def guard(self, request: JobRequested) -> Guard | None:
        return guard(request, self.clock, self.tz, chain_spend(self.store, request.caller))

    def at_end(self, state: JobState) -> dict[str, Any] | None:
        """Recorded in every job's terminal event, budgeted or not (a budget set later sums
        the caller's whole history): the job's spend row, by the one rule (projections/spend.py)."""
        return spend.at_end(state)


# -- setting -----------------------------------------------------------------------------------


def _new(event: Event) -> NewEvent:
    return NewEvent(event.type_name(), event.to_data(), event.SCHEMA_VERSION)


class NotOwner(Exception):
    """On a team PostgreSQL ledger, budgets are the owner role's to set and remove."""


def protect(store: Any) -> None:
    """Register the budget stream as protected: on PostgreSQL only the ledger's owner role may
    append to it (a database trigger refuses everyone else), so an agent running as the writer
    cannot raise or remove its own budget. Done by `imagen db upgrade ledger` and before every
    budget change (both the owner's)."""
    from ledger import ProtectedStreamError

    try:
        store.protect_streams([BUDGET_STREAM])
    except ProtectedStreamError as exc:
        raise NotOwner(f"budgets are the ledger owner's to change: {exc}") from None


def _append_budget_events(store: Any, events: list[NewEvent], version: int | None) -> None:
    from ledger import ProtectedStreamError

    protect(store)
    try:
        store.append(BUDGET_STREAM, events, version)
    except ProtectedStreamError as exc:
        raise NotOwner(f"budgets are the ledger owner's to change: {exc}") from None


def set_budget(
    store: Any, caller: str, amount: str, per: str, backend: str | None, by: str, zone: str = ""
) -> Budget:
    """Record a budget; `zone` (see `zone_name`) is where its windows' midnights are."""
    event = BudgetSet(
        rules.check_caller(caller),
        BudgetPeriod(per),
        rules.parse_amount(amount),
        backend or "",
        by,
        zone,
    )
    _append_budget_events(store, [_new(event)], None)
    return Budget(event.caller, event.per, event.amount_micros, event.backend, by, zone=zone)


def remove_budgets(
    store: Any, caller: str, per: str | None, backend: str | None, by: str
) -> list[Budget]:
    """Remove the caller's budgets matching `per` and `backend` (each when given)."""
    from ledger import ConcurrencyError

    while True:
        version = store.stream_version(BUDGET_STREAM)
        chosen = [
            b
            for b in in_force(store).values()
            if b.caller == caller
            and (per is None or b.per.value == per)
            and (backend is None or b.backend == backend)
        ]
        if not chosen:
            raise NoSuchBudget(caller, per, backend)
        events = [_new(BudgetRemoved(b.caller, b.per, b.backend, by)) for b in chosen]
        try:
            _append_budget_events(store, events, version)  # only if nobody changed them since
            return chosen
        except ConcurrencyError:
            continue


class NoSuchBudget(Exception):
    def __init__(self, caller: str, per: str | None, backend: str | None) -> None:
        which = (
            caller + (f" --per {per}" if per else "") + (f" --backend {backend}" if backend else "")
        )
        super().__init__(f"no budget matches {which} (`imagen budget list` shows them)")


# -- reporting ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Standing:
    """One budget as it stands for one caller in its current window."""

    budget: Budget
    caller: str
    start: datetime | None
    end: datetime | None
    spent: int

    @property
    def left(self) -> int:
        return max(self.budget.amount_micros - self.spent, 0)


def standings(store: Any, now: datetime, tz: tzinfo) -> list[tuple[Budget, list[Standing]]]:
    """Every budget in force with, per caller it governs, spent and left in the current window
    (folded from the chain, as the guard counts). A caller's own budget governs that caller;
    the default governs each caller with spend on record and no budget of its own."""
    with store.snapshot() as view:
        budgets = sorted(in_force(view).values(), key=lambda b: (b.caller == DEFAULT, b.key))
        if not budgets:
            return []
        chain = chain_spend(store, None)
        chain.advance(view)
    own = {b.caller for b in budgets if b.caller != DEFAULT}
    others = sorted({r["caller"] for r in chain.rows.values()} - own - {None})
    out = []
    for b in budgets:
        start = window_start(b, now, tz)
        since = None if start is None else iso(start)
        callers = [b.caller] if b.caller != DEFAULT else others
        sums = chain.committed([spend.Filter(c, b.backend, since) for c in callers])
        end = window_end(b, now, tz)
        out.append((b, [Standing(b, c, start, end, n) for c, n in zip(callers, sums, strict=True)]))
    return out


def governing(store: Any, caller: str, now: datetime, tz: tzinfo) -> list[Standing]:
    """The budgets that govern `caller` (its own, else the default's: rules.applicable) with
    spent and left now, the default's included when the caller has spent nothing yet."""
    with store.snapshot() as view:
        budgets = list(in_force(view).values())
        if not budgets:
            return []
        chain = chain_spend(store, caller)
        chain.advance(view)
    own = [b for b in budgets if b.caller == caller]
    chosen = sorted(own or [b for b in budgets if b.caller == DEFAULT], key=lambda b: b.key)
    sums = chain.committed(window_filters(chosen, caller, now, tz))
    return [
        Standing(b, caller, window_start(b, now, tz), window_end(b, now, tz), n)
        for b, n in zip(chosen, sums, strict=True)
    ]


def standing_json(s: Standing) -> StandingObject:
    return {"caller": s.caller, "spent": Money(dollars(s.spent)), "left": Money(dollars(s.left))}


def budget_json(b: Budget, rows: list[Standing], now: datetime, tz: tzinfo) -> BudgetObject:
    start, end = window_start(b, now, tz), window_end(b, now, tz)
    out: dict[str, Any] = {
        "caller": b.caller,
        "per": b.per.value,
        "backend": b.backend or None,
        "amount": dollars(b.amount_micros),
        # The one machine form (UTC, Z); `zone` says whose calendar drew the window.
        "window_start": None if start is None else iso(start),
        "window_end": None if end is None else iso(end),
        "set_by": b.set_by,
        "set_at": b.set_at,
        "zone": b.zone or None,
    }
    if b.caller == DEFAULT:
        out.update(spent=None, left=None, callers=[standing_json(s) for s in rows])
    else:
        [s] = rows
        out.update(spent=dollars(s.spent), left=dollars(s.left))
    return out  # type: ignore[return-value]


def by_caller(store: Any, now: datetime, tz: tzinfo) -> dict[str, list[CallerBudget]]:
    """Each caller's standing against every budget that governs it (for `imagen usage`)."""
    out: dict[str, list[CallerBudget]] = {}
    for _, rows in standings(store, now, tz):
        for s in rows:
            out.setdefault(s.caller, []).append(caller_budget(s))
    return out


def caller_budget(s: Standing) -> CallerBudget:
    b = s.budget
    return {
        "per": b.per.value,  # type: ignore[typeddict-item]
        "backend": b.backend or None,
        "amount": Money(dollars(b.amount_micros)),
        "spent": Money(dollars(s.spent)),
        "left": Money(dollars(s.left)),
        "default": b.caller == DEFAULT,
    }


def describe(entries: list[CallerBudget]) -> str:
    """ "0.006000 of 0.010000 per day; ..." for a table cell."""
    parts = []
    for e in entries:
        per = "in total" if e["per"] == "total" else f"per {e['per']}"
        on = f" on {e['backend']}" if e["backend"] else ""
        parts.append(f"{e['spent']} of {e['amount']} {per}{on}" + (" (*)" if e["default"] else ""))
    return "; ".join(parts)
