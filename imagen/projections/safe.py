"""Making any recorded value fit a projection column (pure).

The ledger accepts any JSON; the tables that index it have types. An event recorded by an older
imagen, another tool or an attacker may carry a 70-digit seed, a NUL, a list where a string was
expected, or no such key at all: a projection stores what fits and drops what does not (the
event itself stays in the ledger, whole), so no read command can be broken by one event.
"""

from __future__ import annotations

import math
from typing import Any

INT64 = 2**63 - 1
INT32 = 2**31 - 1


def text(value: Any, limit: int | None = None) -> str | None:
    """A string column: strings as given (NULs removed: PostgreSQL text cannot hold them),
    numbers as their decimal text, anything else None."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        try:
            value = str(value)
        except ValueError:
            return None
    if not isinstance(value, str):
        return None
    value = value.replace("\x00", "")
    return value[:limit] if limit else value


def integer(value: Any, bound: int = INT64) -> int | None:
    """An integer column: an int within ±bound, else None."""
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return value if -bound - 1 <= value <= bound else None


def number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        f = float(value)
    except OverflowError:
        return None
    return f if math.isfinite(f) else None


def big_integer_text(value: Any) -> str | None:
    """Seeds: any size of integer, kept exactly as decimal text."""
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    try:
        return str(value)
    except ValueError:  # past Python's int-to-text digit limit
        return None
