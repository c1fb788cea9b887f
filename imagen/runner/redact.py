"""Secrets never reach the ledger: every text recorded from a server is scrubbed of the
credentials the runner sent, in whatever form a careless or hostile server echoes them.

Forms matched, for each secret of 8 characters or more (shorter ones would match by chance):
- each character as itself or escaped — percent (%72), JSON (\\u0072), C/Python (\\x72), an
  HTML entity (&#114; &#x72;, leading zeros allowed) or two hex digits (the whole token in
  hex) — in any mix, any case, with up to three separators (white space, `:`, `,`) between
  characters (a token split over lines, or hex printed with spaces);
- the token reversed;
- base64 of any text holding it, at each of the three alignments, standard and URL-safe.
tests/test_redact.py generates encodings of a token (hypothesis) and checks each is removed.
"""

from __future__ import annotations

import base64
import functools
import re
from typing import Any
from urllib.parse import quote, quote_plus

REDACTED = "[redacted]"
MIN_SECRET = 8
_SEPARATORS = r"[\s:,]{0,3}"


def _character(c: str) -> str:
    """A pattern for one character of a secret in any of its escaped forms, either case (a
    server may upper-case the token before escaping it)."""
    forms = [re.escape(c)]
    for n in sorted({ord(c.lower()), ord(c.upper())}):
        if n < 128:
            forms += [
                f"%{n:02x}",
                f"\\\\u{n:04x}",
                f"\\\\x{n:02x}",
                f"{n:02x}",
                f"&#0*{n};",
                f"&#x0*{n:x};",
            ]
    return "(?:" + "|".join(forms) + ")"


@functools.lru_cache(maxsize=8)
def secret_pattern(secrets: frozenset[str]) -> re.Pattern[str] | None:
    """One pattern matching every listed form of every secret (None when none is long enough)."""
    patterns: list[str] = []
    forms: set[str] = set()
    for secret in secrets:
        if len(secret) < MIN_SECRET:
            continue
        patterns.append(_SEPARATORS.join(_character(c) for c in secret))
        patterns.append(re.escape(secret[::-1]))
        forms |= {quote(secret, safe=""), quote_plus(secret)}
        raw = secret.encode()
        for k in range(3):
            encoded = base64.b64encode(b"\0" * k + raw).decode()
            # Characters whose 6 bits come from the secret alone, whatever precedes or follows.
            inner = encoded[(4 * k + 2) // 3 : (4 * (k + len(raw))) // 3]
            if len(inner) >= MIN_SECRET:
                forms |= {inner, inner.replace("+", "-").replace("/", "_")}
    if not patterns:
        return None
    alternatives = patterns + [re.escape(f) for f in sorted(forms, key=len, reverse=True)]
    return re.compile("|".join(alternatives), re.IGNORECASE)


def scrub(value: Any, pattern: re.Pattern[str] | None) -> Any:
    """`value` (JSON-like) with every match of `pattern` in its strings, keys included,
    replaced by REDACTED."""
    if pattern is None:
        return value
    if isinstance(value, str):
        return pattern.sub(REDACTED, value)
    if isinstance(value, dict):
        return {scrub(k, pattern): scrub(v, pattern) for k, v in value.items()}
    if isinstance(value, list):
        return [scrub(v, pattern) for v in value]
    return value
