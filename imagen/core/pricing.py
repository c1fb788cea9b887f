"""Per-image prices in USD for Replicate's FLUX models (overridable per backend: price_usd)."""

from __future__ import annotations

RATES_TAKEN = "2026-10-31"  # replicate.com/pricing, per output image

PRICES_USD: dict[str, float] = {
    "black-forest-labs/flux-schnell": 0.003,
    "black-forest-labs/flux-dev": 0.025,
    "black-forest-labs/flux-pro": 0.055,
    "black-forest-labs/flux-1.1-pro": 0.04,
}


def price_for(model: str, override: float | None = None) -> float | None:
    """The per-image estimate: the backend's override, else the table (by model, version
    pins ignored), else None for models we have no rate for (local ones cost nothing)."""
    if override is not None:
        return float(override)
    return PRICES_USD.get(model.split(":", 1)[0])
