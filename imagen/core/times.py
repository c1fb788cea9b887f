"""`--since`/`--until` values: ISO dates or times, or ages like 7d, 24h, 30m."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from imagen.core.inputs import BadInput

_AGE = re.compile(r"^(\d+)([dhm])$")


def parse_moment(text: str, now: datetime, flag: str = "--since") -> datetime:
    m = _AGE.match(text.strip())
    if m:
        unit = {"d": "days", "h": "hours", "m": "minutes"}[m[2]]
        return now - timedelta(**{unit: int(m[1])})
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise BadInput(
            f"{flag} {text!r}: use a date (2026-11-01), a time "
            "(2026-11-01T12:00) or an age (7d, 24h, 30m)"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def to_text(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_since(text: str, now: datetime) -> str:
    return to_text(parse_moment(text, now))
