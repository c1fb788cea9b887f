"""How every command prints data, so that all of them behave alike (docs/usage.md, "Output").

- `--json`: a list is ONE JSON array of objects (`print_json(rows)`); one thing is one object.
  Keys are the same names as the plain-text header, values are complete and machine-readable.
- stdout is a terminal: an aligned table with a header row, sized to the terminal; only a
  column marked `shrink` (free text such as a prompt) is shortened to fit, with "…".
- stdout is not a terminal (a pipe, a file): a header row then one tab-separated line per row,
  every value complete (no truncation, no padding); tabs and newlines inside values become spaces.

Notes for people (counts, hints) go to stderr through `context.note`, never into the data.
"""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TextIO


@dataclass(frozen=True)
class Column:
    key: str
    # How a value looks in a terminal table; the plain (TSV/JSON-like) text is `plain_text`.
    tty: Callable[[Any], str] | None = None
    align: str = "<"
    shrink: bool = False  # may be shortened to fit the terminal (one free-text column)
    # Left out of a terminal too narrow for the table (the highest first) rather than have
    # its rows wrap; 0: always shown. Piped and --json output always has every column.
    drop: int = 0


def plain_text(value: Any) -> str:
    """One cell: tabs and newlines become spaces (one row stays one line), other control
    characters are shown escaped (text from a shared ledger must not drive a terminal)."""
    from imagen.cli.safe import printable

    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(round(value, 6))  # sums of prices: 0.045, not 0.045000000000000005
    return printable(str(value).replace("\t", " ").replace("\r\n", " ").replace("\n", " "))


def _tty_text(value: Any) -> str:
    return "-" if value is None or value == "" else plain_text(value)


def _cell(column: Column, value: Any) -> str:
    if column.tty is None:
        return _tty_text(value)
    from imagen.cli.safe import printable

    return printable(column.tty(value))


def outputs(shape: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Declare what a command prints with --json (a TypedDict, list[...] of one, or a union):
    `imagen discover` publishes its JSON Schema (app/contract.py json_schema), and the tests
    validate real outputs against it."""

    def mark(command: Callable[..., Any]) -> Callable[..., Any]:
        command.__json_output__ = shape  # type: ignore[attr-defined]
        return command

    return mark


def print_json(data: Any, out: TextIO | None = None) -> None:
    print(json.dumps(data, default=str, ensure_ascii=False), file=out or sys.stdout)


def table(
    rows: Iterable[Mapping[str, Any]],
    columns: Sequence[Column],
    *,
    footer: Mapping[str, Any] | None = None,
    out: TextIO | None = None,
    isatty: bool | None = None,
) -> None:
    """Print rows under a header: aligned in a terminal, tab-separated otherwise.

    `footer` (a totals row) is shown only in a terminal: piped output stays pure data."""
    out = out or sys.stdout
    tty = out.isatty() if isatty is None else isatty
    rows = list(rows)
    if not tty:
        print("\t".join(c.key for c in columns), file=out)
        for r in rows:
            print("\t".join(plain_text(r.get(c.key)) for c in columns), file=out)
        return
    cells = [[c.key.upper() for c in columns]]
    for r in rows:
        cells.append([_cell(c, r.get(c.key)) for c in columns])
    if footer is not None:
        cells.append([_tty_text(footer.get(c.key)) if c.key in footer else "" for c in columns])
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
    room = shutil.get_terminal_size((120, 24)).columns
    keep = _fitting(columns, widths, room)
    columns = [columns[i] for i in keep]
    cells = [[line[i] for i in keep] for line in cells]
    widths = [widths[i] for i in keep]
    over = sum(widths) + 2 * (len(columns) - 1) - room
    for i, c in enumerate(columns):
        if over > 0 and c.shrink:
            cut = min(over, widths[i] - 10)
            if cut > 0:
                widths[i] -= cut
                over -= cut
    for line in cells:
        parts = []
        for i, c in enumerate(columns):
            text = line[i]
            if len(text) > widths[i]:
                text = text[: widths[i] - 1] + "…"
            last = i == len(columns) - 1
            parts.append(text if last and c.align == "<" else f"{text:{c.align}{widths[i]}}")
        print("  ".join(parts).rstrip(), file=out)


def _fitting(columns: Sequence[Column], widths: list[int], room: int) -> list[int]:
    """The indexes of the columns shown: droppable ones leave (highest `drop` first) while
    the table would not fit even with its shrinkable column cut to 10 characters."""
    keep = list(range(len(columns)))

    def least(i: int) -> int:
        return min(widths[i], 10) if columns[i].shrink else widths[i]

    for i in sorted((i for i in keep if columns[i].drop), key=lambda i: -columns[i].drop):
        if sum(least(k) for k in keep) + 2 * (len(keep) - 1) <= room:
            break
        keep.remove(i)
    return keep
