"""Text from the ledger shown on a terminal: a shared ledger is written by others, so a prompt or
a server's message could carry escape sequences that move the cursor, retitle the window or
hide text. Control characters are shown escaped, never sent to the terminal."""

from __future__ import annotations

import re

# C0 and C1 controls and DEL, plus the bidirectional overrides and isolates that reorder what
# follows them (CVE-2021-42574, "trojan source").
_UNSAFE = re.compile(r"[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def _escape(match: re.Match[str]) -> str:
    ch = match.group()
    named = {"\n": "\\n", "\r": "\\r", "\t": "\\t", "\x1b": "\\e"}.get(ch)
    if named:
        return named
    return f"\\x{ord(ch):02x}" if ord(ch) < 0x100 else f"\\u{ord(ch):04x}"


def printable(text: object) -> str:
    """`text` with every control character shown as an escape (\\e, \\n, \\x07, \\u202e)."""
    return _UNSAFE.sub(_escape, str(text))
