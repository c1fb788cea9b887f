"""Money as imagen shows it: exact decimal strings with six places ("0.003000").

Floats cannot hold 0.003 exactly (three of them print as 0.009000000000000001), so every sum is
done in Decimal and every JSON output carries a string. Six places match the remote usage
column (numeric(12, 6)).
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation, localcontext

PLACES = Decimal("0.000001")


def to_decimal(value: object) -> Decimal | None:
    """A price as recorded (float, int, str) to Decimal; None for anything that is not money."""
    if value is None or isinstance(value, bool):
        return None
    try:
        d = Decimal(str(value))
    except (InvalidOperation, ValueError):
        return None
    return d if d.is_finite() else None


def _text(d: Decimal) -> str:
    with localcontext() as ctx:
        ctx.prec = 80  # a recorded price can be any number: never raise while showing it
        try:
            return str(d.quantize(PLACES))
        except InvalidOperation:
            return str(d)


def usd(value: object) -> str | None:
    """The JSON form: "0.003000", or None when there is no amount."""
    d = to_decimal(value)
    return None if d is None else _text(d)


def times(price: object, n: int) -> str | None:
    d = to_decimal(price)
    if d is None:
        return None
    with localcontext() as ctx:
        ctx.prec = 80
        return _text(d * n)


def total(values: list[object]) -> str:
    with localcontext() as ctx:
        ctx.prec = 80
        return _text(sum((to_decimal(v) or Decimal(0) for v in values), Decimal(0)))
