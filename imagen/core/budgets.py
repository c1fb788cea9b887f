"""Budgets, folded from their events (pure): which apply to a request, and their windows.

A budget caps what one caller may commit per window: `amount_micros` per day, ISO week
(Monday 00:00 local time), calendar month, or in total. The caller "*" is the default: it
applies to every caller that has no budget of its own, each such caller getting its own
allowance. A budget may be limited to one backend. Windows follow the calendar of the zone
recorded when the budget was set (DST included), whatever the zone of the process that checks;
the app resolves the zone (imagen/app/budgets.py `zone_of`).

What counts against a budget is computed in imagen/projections/spend.py: what `imagen usage`
counts as billed for an ended job, the full price for a job still under way.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, timedelta, tzinfo

from imagen.core.events import BudgetPeriod, BudgetRemoved, BudgetSet, Event

DEFAULT = "*"
MAX_CALLER = 200
# ASCII digits only: `\d` alone also takes other scripts' digits ("١٢" would be $12).
_AMOUNT = re.compile(r"\$?(\d{1,12})(?:\.(\d{1,6}))?", re.ASCII)
_OFFSET = re.compile(r"([+-])(\d\d):(\d\d)", re.ASCII)


class BadBudget(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class Budget:
    caller: str
    per: BudgetPeriod
    amount_micros: int
    backend: str = ""  # "" for every backend
    set_by: str = ""
    set_at: str = ""  # when it was recorded (UTC ISO)
    zone: str = ""  # where its windows are (IANA name or "+02:00"); "" before zones were recorded

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.caller, self.per.value, self.backend)

    def describe(self) -> str:
        on = f" on {self.backend}" if self.backend else ""
        whose = "default (*)" if self.caller == DEFAULT else self.caller
        per = "in total" if self.per is BudgetPeriod.TOTAL else f"per {self.per.value}"
        return f"{whose} {per}{on}"


def parse_amount(text: str) -> int:
    """A budget in dollars ("5", "0.25", "12.000001") to micro-dollars. Plain decimals only:
    no sign, exponent, NaN or more than six places (imagen counts money in micro-dollars)."""
    m = _AMOUNT.fullmatch(text.strip())
    if m is None:
        raise BadBudget(
            f"amount {text!r}: give dollars as a plain decimal such as 5 or 0.25 "
            "(not negative, at most 12 digits before the point and 6 after)"
        )
    whole, frac = m.group(1), (m.group(2) or "").ljust(6, "0")
    return int(whole) * 1_000_000 + int(frac)


def check_caller(caller: str) -> str:
    if not caller.strip():
        raise BadBudget("caller: give a caller's name, or * for the default")
    if len(caller) > MAX_CALLER or any(ord(c) < 32 or ord(c) == 127 for c in caller):
        raise BadBudget(f"caller {caller[:40]!r}: at most {MAX_CALLER} printable characters")
    return caller


def fold(events: Iterable[tuple[Event, str]]) -> dict[tuple[str, str, str], Budget]:
    """The budgets in force after `events` (the budget stream in order, each with the time it
    was recorded). Events this imagen cannot read (decoded as unknown) change nothing."""
    budgets: dict[tuple[str, str, str], Budget] = {}
    for e, at in events:
        if isinstance(e, BudgetSet):
            b = Budget(e.caller, e.per, e.amount_micros, e.backend, e.set_by, at, e.zone)
            budgets[b.key] = b
        elif isinstance(e, BudgetRemoved):
            budgets.pop((e.caller, e.per.value, e.backend), None)
    return budgets


def applicable(budgets: Iterable[Budget], caller: str, backend: str) -> list[Budget]:
    """The budgets a request by `caller` on `backend` must fit: the caller's own, or the
    default's when the caller has none of its own."""
    every = list(budgets)
    own = [b for b in every if b.caller == caller]
    chosen = own if own else [b for b in every if b.caller == DEFAULT]
    return [b for b in chosen if not b.backend or b.backend == backend]


def window_start(per: BudgetPeriod, now: datetime, tz: tzinfo) -> datetime | None:
    """Where the window holding `now` starts (aware, in `tz`); None for `total`. Midnight is
    taken in `tz`, so a day that DST shortens or lengthens is still one calendar day."""
    today = now.astimezone(tz).date()
    if per is BudgetPeriod.DAY:
        first = today
    elif per is BudgetPeriod.WEEK:
        first = today - timedelta(days=today.weekday())
    elif per is BudgetPeriod.MONTH:
        first = today.replace(day=1)
    else:
        return None
    return _midnight(first, tz)


def window_end(per: BudgetPeriod, now: datetime, tz: tzinfo) -> datetime | None:
    """Where the window holding `now` ends (the next one's start); None for `total`."""
    start = window_start(per, now, tz)
    if start is None:
        return None
    first = start.date()
    if per is BudgetPeriod.DAY:
        nxt = first + timedelta(days=1)
    elif per is BudgetPeriod.WEEK:
        nxt = first + timedelta(days=7)
    else:
        nxt = (first.replace(day=28) + timedelta(days=4)).replace(day=1)
    return _midnight(nxt, tz)


def _midnight(day: date, tz: tzinfo) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=tz)


def format_offset(offset: timedelta) -> str:
    """A fixed zone as recorded when it has no name: "+02:00", "-05:30"."""
    minutes = round(offset.total_seconds() / 60)
    sign = "-" if minutes < 0 else "+"
    return f"{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"


def parse_offset(text: str) -> int | None:
    """Minutes east of UTC for a recorded fixed offset ("+02:00"), None for a zone name."""
    m = _OFFSET.fullmatch(text)
    if m is None or int(m.group(2)) > 23 or int(m.group(3)) > 59:
        return None
    minutes = int(m.group(2)) * 60 + int(m.group(3))
    return -minutes if m.group(1) == "-" else minutes
