"""A bar with events/s on stderr for long reads of the ledger (audit, a first catch-up).

`imagen audit` walks the chain and a first `imagen jobs` or `imagen usage` catches a table up
from nothing: on a team's ledger either can take many seconds. A terminal sees how far it got
and how fast, redrawn at most four times a second once the work has taken a second
(IMAGEN_PROGRESS_AFTER seconds: 0 shows it at once); nothing is printed with --json, -q or
-v, or when stderr is not a terminal, and the line is cleared when the work ends.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

Bar = Callable[[int | None], None]


def event_bar(label: str, start: int, end: int, json_output: bool = False) -> Bar | None:
    """A bar for events `start` (exclusive) to `end` on this command's stderr: call it with
    each position reached, then with None when done. None when nothing is to be shown."""
    stderr = _terminal(json_output)
    if stderr is None or end <= start:
        return None
    try:
        after = float(os.environ.get("IMAGEN_PROGRESS_AFTER", "1"))
    except ValueError:
        after = 1.0
    began = time.monotonic()
    shown = 0.0
    total = end - start

    def show(position: int | None) -> None:
        nonlocal shown
        if position is None:
            if shown:
                stderr.write("\r\x1b[K")
                stderr.flush()
            return
        now = time.monotonic()
        if now - began < after or (shown and now - shown < 0.25):
            return
        shown = now
        done = min(max(position - start, 0), total)
        part = done / total
        rate = done / max(now - began, 1e-9)
        stderr.write(
            f"\r{label} [{'#' * int(part * 30):<30}] {part:4.0%} "
            f"{done:,}/{total:,} events, {rate:,.0f}/s"
        )
        stderr.flush()

    return show


def catch_up_bar(label: str, json_output: bool = False) -> Callable[[int, int], Bar | None] | None:
    """What `Session.jobs_reader`/`usage_reader` take: a bar from the table's checkpoint to the
    ledger's head; None where none would show (so a catch-up asks for neither position)."""
    if _terminal(json_output) is None:
        return None
    return lambda start, end: event_bar(label, start, end, json_output)


def _terminal(json_output: bool) -> Any:
    """This command's stderr if a bar may be drawn on it (a terminal, no --json, -q or -v)."""
    from imagen.cli import context

    session = context.session()
    stderr = session.env.stderr
    if json_output or session.verbosity != 0 or not stderr.isatty():
        return None
    return stderr
