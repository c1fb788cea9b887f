"""Per-image prices in USD for Replicate's FLUX models (overridable per backend: price_usd).

For a model in the table, the table is a floor: a backend's `price_usd` may raise the estimate
(a dearer deployment) but never lower it. The price recorded in a job is what budgets count, and
the config is chosen by whoever runs imagen, so `price_usd = 0` would otherwise switch every
budget off and record real predictions as free. Models not in the table keep the configured
price (local ones cost nothing)."""

from __future__ import annotations

RATES_TAKEN = "2026-10-31"  # replicate.com/pricing, per output image

PRICES_USD: dict[str, float] = {
    "black-forest-labs/flux-schnell": 0.003,
    "black-forest-labs/flux-dev": 0.025,
    "black-forest-labs/flux-pro": 0.055,
    "black-forest-labs/flux-1.1-pro": 0.04,
}


def table_price(model: str) -> float | None:
    """The table's per-image rate for `model` (version pins ignored), None when unknown. Also
    what `imagen audit --provider` can hold recorded prices to."""
    return PRICES_USD.get(model.split(":", 1)[0])


def price_for(model: str, override: float | None = None) -> float | None:
    """The per-image estimate: the backend's override, never below the table's rate for a
    model the table knows; the table alone without one; None for models with no rate."""
    floor = table_price(model)
    if override is None:
        return floor
    return float(override) if floor is None else max(float(override), floor)


def below_table(model: str, override: float | None) -> float | None:
    """The table's rate when `override` is lower than it (the override is not used), else None."""
    floor = table_price(model)
    if override is None or floor is None or float(override) >= floor:
        return None
    return floor
