"""Reading what Replicate answered: prediction bodies, listings, dates, headers, output URLs.

Public: the adapter and `imagen audit --provider` (app/reconcile.py, projections/reconcile.py)
read Replicate's answers with these functions alone. Every field is checked: a malformed answer
never raises.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from imagen.backends.common import Exchange, backoff_delay, finite
from imagen.core.events import RequestFailed, ResponseReceived

# What decide reads (Retry-After; Date: Replicate's clock, which measures the lookup window) and
# what explains a rate limit or a sync wait in an audit.

RECORDED_HEADERS = frozenset(
    {
        "content-type",
        "content-length",
        "retry-after",
        "location",
        "preference-applied",
        "ratelimit-remaining",
        "ratelimit-reset",
        "date",
    }
)


MAX_RETRY_AFTER_S = 60.0  # a server asking for more is not obeyed beyond this
MAX_BACKOFF_S = 30.0

PREDICTION_ID = re.compile(r"^[A-Za-z0-9_-]{1,100}$")


def origin(url: str) -> tuple[str, str, int] | None:
    """(scheme, host, port) of an http(s) URL, None for anything else (or with userinfo).

    Credentials go only where this equals the configured API's origin: a prefix test would
    accept `https://api.replicate.com.evil.tld/` or `https://api.replicate.com@evil/`.
    """
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.hostname or "@" in parts.netloc:
        return None
    return scheme, parts.hostname.lower().rstrip("."), port or (443 if scheme == "https" else 80)


def same_origin(url: str, base: str) -> bool:
    mine = origin(base)
    return mine is not None and origin(url) == mine


def prediction(body: Any) -> dict[str, Any] | None:
    """The body as a prediction object, if it is one we can act on."""
    if (
        isinstance(body, dict)
        and isinstance(body.get("id"), str)
        and PREDICTION_ID.match(body["id"])
        and isinstance(body.get("status"), str)
    ):
        return body
    return None


def header_value(outcome: ResponseReceived, name: str) -> str:
    headers = outcome.headers if isinstance(outcome.headers, dict) else {}
    value = headers.get(name)
    return value if isinstance(value, str) else ""


def retry_after(outcome: ResponseReceived, attempt: int, base: float) -> float:
    """Retry-After header, else the body's retry_after, else '~Ns' in the detail, else backoff;
    never more than MAX_RETRY_AFTER_S (a server may ask for a day)."""
    delay: float | None = None
    header = header_value(outcome, "retry-after").strip()
    if re.fullmatch(r"\d+(\.\d+)?", header):
        delay = float(header)
    body = outcome.body if isinstance(outcome.body, dict) else {}
    if delay is None:
        delay = finite(body.get("retry_after"))  # an integer of any size: JSON allows it
    if delay is None:
        m = re.search(r"~(\d{1,6})s", str(body.get("detail", ""))[:2000])
        delay = float(m[1]) if m else None
    if delay is None or not math.isfinite(delay) or delay < 0:
        delay = backoff_delay(base, attempt, MAX_BACKOFF_S)
    return min(delay, MAX_RETRY_AFTER_S)


def describe_body(outcome: ResponseReceived) -> str:
    """What an unusable answer was, in a few words (never the whole body)."""
    body = outcome.body
    ctype = header_value(outcome, "content-type").split(";")[0].strip() or "no content type"
    if isinstance(body, dict):
        detail = body.get("detail") or body.get("title")
        if isinstance(detail, str) and detail:
            return detail[:300]
        # Sorted: the ledger keeps a body's keys sorted, so a resumed job says the same.
        keys = ", ".join(sorted(map(str, body)))[:200]
        return f"a JSON object that is not a prediction (keys: {keys})"
    if isinstance(body, str):
        start = " ".join(body.split())[:60]
        return f"a {ctype} body, not JSON ({start!r}{'…' if len(body) > 60 else ''})"
    return f"a JSON {type(body).__name__}, not an object"


def describe(outcome: Any) -> str:
    if isinstance(outcome, ResponseReceived):
        return f"HTTP {outcome.status}: {describe_body(outcome)}"
    if isinstance(outcome, RequestFailed):
        return f"{outcome.error}: {outcome.message}"
    return "no answer recorded"


def listing_body(ex: Exchange) -> dict[str, Any] | None:
    o = ex.outcome
    if isinstance(o, ResponseReceived) and o.status == 200 and isinstance(o.body, dict):
        if isinstance(o.body.get("results"), list):
            return o.body
    return None


_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_HTTP_DATE = re.compile(
    r"(?:[A-Z][a-z]{2}, )?(\d{1,2}) ([A-Z][a-z]{2}) (\d{4}) (\d\d):(\d\d):(\d\d) GMT"
)


def http_date(text: str) -> datetime | None:
    """An HTTP Date (IMF-fixdate, RFC 9110 5.6.7), None when it is anything else. (email.utils
    would do, but it imports socket and random, which the pure core must not load.)"""
    m = _HTTP_DATE.fullmatch(text.strip())
    if not m or m[2] not in _MONTHS:
        return None
    try:
        return datetime(
            int(m[3]),
            _MONTHS.index(m[2]) + 1,
            int(m[1]),
            int(m[4]),
            int(m[5]),
            int(m[6]),
            tzinfo=UTC,
        )
    except ValueError:
        return None


def created_at(p: dict[str, Any]) -> datetime | None:
    value = p.get("created_at")
    if not isinstance(value, str):
        return None
    m = re.fullmatch(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)", value)
    if not m:
        return None
    frac = (m[2] or "0")[:6].ljust(6, "0")
    try:
        moment = datetime.fromisoformat(f"{m[1]}.{frac}{'+00:00' if m[3] == 'Z' else m[3]}")
    except ValueError:
        return None
    return moment.astimezone(UTC)


def oldest_created(body: dict[str, Any]) -> datetime | None:
    times = [t for p in body["results"] if isinstance(p, dict) and (t := created_at(p)) is not None]
    return min(times) if times else None


def outputs(prediction: dict[str, Any]) -> list[str]:
    output = prediction.get("output")
    items = output if isinstance(output, list) else [output]
    return [o for o in items if isinstance(o, str) and o]


def seed_from_logs(logs: Any) -> int | None:
    m = re.search(r"Using seed: (\d{1,19})", logs[:100_000]) if isinstance(logs, str) else None
    return int(m[1]) if m else None
