"""Help text layout: plain two-column text, the same in a terminal, a pipe and docs/usage.md.

Pure string functions (no rich, no cyclopts) so that imagen/cli/fast.py can answer
`imagen --help` without importing cyclopts; HelpFormatter adapts them to cyclopts' panels.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from typing import Any

WIDTH = 100  # fixed, so help reads the same everywhere and docs/usage.md is reproducible
GAP = 2
MAX_LABEL = 30


def panel(title: str, entries: Sequence[tuple[str, str]]) -> str:
    """`Title:` then one entry per label, descriptions aligned and wrapped to WIDTH."""
    if not entries:
        return ""
    label_w = min(max(len(label) for label, _ in entries), MAX_LABEL)
    indent = 2 + label_w + GAP
    lines = [f"{title}:"]
    for label, desc in entries:
        wrapped = textwrap.wrap(desc, WIDTH - indent) or [""]
        if len(label) > label_w:
            lines.append(f"  {label}")
            lines += [" " * indent + w for w in wrapped if w]
        else:
            lines.append(f"  {label:<{label_w}}{' ' * GAP}{wrapped[0]}".rstrip())
            lines += [" " * indent + w for w in wrapped[1:]]
    return "\n".join(lines) + "\n\n"


def usage(text: str) -> str:
    text = text.strip()
    return (text if text.startswith("Usage:") else f"Usage: {text}") + "\n\n"


def description(text: str) -> str:
    text = text.strip("\n").rstrip()
    return f"{text}\n\n" if text else ""


def _plain(obj: Any) -> str:
    if obj is None:
        return ""
    if hasattr(obj, "primary_renderable"):  # cyclopts' InlineText: text plus appended notes
        return " ".join(
            p for p in (_plain(obj.primary_renderable), *(_plain(t) for t in obj.texts)) if p
        )
    if hasattr(obj, "plain"):
        return str(obj.plain)
    return str(obj)


class HelpFormatter:
    """cyclopts' HelpFormatter protocol over the functions above."""

    def _write(self, console: Any, text: str) -> None:
        if text:
            console.file.write(text)

    def render_usage(self, console: Any, options: Any, usage_text: Any) -> None:
        self._write(console, usage(_plain(usage_text)) if usage_text else "")

    def render_description(self, console: Any, options: Any, desc: Any) -> None:
        self._write(console, description(_plain(desc)))

    def __call__(self, console: Any, options: Any, help_panel: Any) -> None:
        entries = []
        for e in help_panel.entries:
            if help_panel.format == "parameter":
                label = ", ".join(e.display_labels_with_metavar)
                parts = [_plain(e.description).strip()]
                if e.choices:
                    parts.append(f"[choices: {', '.join(e.choices)}]")
                if e.env_var:
                    parts.append(f"[env var: {', '.join(e.env_var)}]")
                if e.default is not None and str(e.default) not in ("False", ""):
                    parts.append(f"[default: {e.default}]")
                if e.required:
                    parts.append("[required]")
                desc = " ".join(p for p in parts if p)
            else:
                label = ", ".join([*e.positive_names, *e.positive_shorts])
                desc = _plain(e.description).strip()
            if label:
                entries.append((label, desc))
        self._write(console, panel(_plain(help_panel.title), entries))
