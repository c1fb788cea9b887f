"""Printing a figure beside its baseline."""

from __future__ import annotations

import time
from collections.abc import Callable


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def line(
    label: str,
    ours: float,
    baseline: float,
    unit: str,
    higher_is_better: bool = True,
    target: str = "",
) -> None:
    ratio = ours / baseline if baseline else float("nan")
    better = "x of baseline" if higher_is_better else "x baseline time"
    print(
        f"{label:<48} {ours:>12,.3f} {unit:<10} baseline {baseline:>12,.3f} {unit:<10} "
        f"ratio {ratio:5.2f}{better[1:] if False else ' ' + better}"
        + (f"  (target {target})" if target else ""),
        flush=True,
    )
