"""What a job costs: one figure, decided here and nowhere else (pure).

Every surface shows this figure: `imagen jobs`, `show`, `generate --json`, the sidecars, the
gallery, and the usage rows (which split it into one row per image plus one for a prediction's
undelivered images, summing to it); the budgets' spent amount is the sum of those rows.

The rule (docs/usage.md, "Money"): the provider reports no cost, so imagen counts price x images
the provider may bill:
- every stored image (an image on disk was made, so it was billed, whatever else was recorded);
- once the provider accepted the prediction, the images asked for that it did not deliver,
  unless the job succeeded: a prediction that failed, timed out, was cancelled or is still
  under way may be billed for what ran (a succeeded one delivered what it billed);
- nothing for a request the provider never accepted (refused, over budget, never sent).

A job without a price (no rate known, e.g. local ComfyUI) has no cost figure (None).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from imagen.core import money
from imagen.core.events import JobSucceeded, RemoteJobAccepted
from imagen.core.job import JobState
from imagen.projections import safe


@dataclass(frozen=True, slots=True)
class Billed:
    """The images a job is counted as billed for, and their price."""

    price_usd: object  # as recorded: None when no rate is known
    images: int  # stored images
    undelivered: int  # asked for, not delivered, by a prediction that may bill them

    @property
    def micros(self) -> int | None:
        """The cost in micro-dollars (None without a price)."""
        return micros(self.price_usd, self.images + self.undelivered)

    @property
    def usd(self) -> str | None:
        """The cost as the JSON form ("0.003000"), None without a price."""
        return micros_text(self.micros)


def billed(
    price_usd: object, *, asked: int, stored: int, accepted: bool, succeeded: bool
) -> Billed:
    """The rule above over a job's facts (the jobs table folds them one event at a time)."""
    undelivered = max(asked - stored, 0) if accepted and not succeeded else 0
    return Billed(price_usd, stored, undelivered)


def of_job(state: JobState) -> Billed:
    accepted = bool(state.images) or state.last(RemoteJobAccepted) is not None
    return billed(
        state.request.price_usd if state.request else None,
        asked=state.count,
        stored=len(state.images),
        accepted=accepted,
        succeeded=isinstance(state.terminal, JobSucceeded),
    )


def cost_usd(state: JobState) -> str | None:
    """The job's cost as every surface shows it."""
    return of_job(state).usd


def micros(price: object, n: int = 1) -> int | None:
    """Price x n in exact micro-dollars (None for a price that is not money, or past any
    column: projections/safe.py)."""
    d = money.to_decimal(price)
    if d is None:
        return None
    return safe.integer(int((d * n * 1_000_000).to_integral_value()))


def micros_text(value: int | None) -> str | None:
    """Micro-dollars to the JSON form "0.003000"."""
    return None if value is None else money.usd(Decimal(value) / 1_000_000)
