"""Time as imagen writes and reads it: the one timestamp format, and times as people read them.

Pure: the current time and the local zone are passed in (the shell's Environment has both).

- Machine form (`iso`): UTC, microseconds, `Z` -- `2026-11-25T12:00:00.000000Z`. It is the
  ledger's `recorded_at` form, so stored times sort as text and compare across engines; every
  JSON output, sidecar and projection column uses it.
- Human form (`human`): local time, `2026-11-25 13:00:00`, with the zone's name where a reader
  could not otherwise tell (`human(..., zone=True)` -> `2026-11-25 13:00:00 CET`).
- File names (`file_stamp`): local time, `20261125-130000`.
- `--since`/`--until` (`parse_moment`): an age (30m, 24h, 7d, 2w), a plain date (local
  midnight), a local date and time, or any ISO 8601 time with its offset.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, tzinfo

from imagen.core.inputs import BadInput

ISO_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"
_AGE = re.compile(r"^(\d{1,6})([mhdw])$", re.ASCII)
_AGE_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$", re.ASCII)


def iso(moment: datetime) -> str:
    """The machine form of an aware datetime (any zone in, UTC out)."""
    if moment.tzinfo is None:
        raise ValueError("a naive datetime has no place in imagen's records: give it a zone")
    return moment.astimezone(UTC).strftime(ISO_FORMAT)


# `iso`'s form as text (a year from 1000: below, strftime writes fewer digits).
_ISO_TEXT = re.compile(r"[1-9]\d{3}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", re.ASCII)


def is_iso_text(text: str) -> bool:
    """Whether `text`, a time `parse_iso` reads, is `iso`'s form of it already (then
    `iso(parse_iso(text)) == text`)."""
    return _ISO_TEXT.fullmatch(text) is not None


def parse_iso(text: str) -> datetime:
    """An ISO 8601 time as recorded (a `Z` or an offset) as an aware UTC datetime."""
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        raise ValueError(f"{text!r} has no zone")
    return moment.astimezone(UTC)


def human(moment: datetime | str, local: tzinfo, *, zone: bool = False) -> str:
    """Local time to the second, as people read it; `zone` adds the zone's name."""
    at = (parse_iso(moment) if isinstance(moment, str) else moment).astimezone(local)
    text = at.strftime("%Y-%m-%d %H:%M:%S")
    return f"{text} {at.tzname() or at.strftime('%z')}" if zone else text


def local_day(moment: datetime | str, local: tzinfo) -> str:
    """The local calendar day (`2026-11-25`) a moment falls on: days begin at local midnight,
    whatever the UTC offset (and its changes at DST) is."""
    at = parse_iso(moment) if isinstance(moment, str) else moment
    return at.astimezone(local).strftime("%Y-%m-%d")


def file_stamp(moment: datetime, local: tzinfo) -> str:
    """A default output file name's time: local, sortable, no characters a shell quotes."""
    return moment.astimezone(local).strftime("%Y%m%d-%H%M%S")


def parse_moment(text: str, now: datetime, local: tzinfo, flag: str = "--since") -> datetime:
    """A `--since`/`--until` value as an aware datetime (see the module doc)."""
    value = text.strip()
    m = _AGE.match(value)
    if m:
        return now - timedelta(**{_AGE_UNITS[m[2]]: int(m[1])})
    try:
        if _DATE.match(value):
            day = datetime.fromisoformat(value)
            return day.replace(tzinfo=local)  # the day starts at local midnight
        moment = datetime.fromisoformat(value.replace("Z", "+00:00").replace(" ", "T", 1))
    except ValueError:
        raise BadInput(
            f"{flag} {text!r}: use an age (30m, 24h, 7d, 2w), a date (2026-11-01, local "
            "midnight) or a time (2026-11-01T12:00 local, or with Z or an offset)"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=local)


def parse_since(text: str, now: datetime, local: tzinfo, flag: str = "--since") -> str:
    """`parse_moment` in the machine form, for comparing with stored times."""
    return iso(parse_moment(text, now, local, flag))
