"""How a backend type declares its configuration keys (validated by imagen.app.config)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Option:
    types: tuple[type, ...]
    default: Any = None
    help: str = ""
    choices: tuple[Any, ...] = ()

    def describe(self) -> str:
        if self.choices:
            return " | ".join(repr(c) for c in self.choices)
        return " or ".join("number" if t is float else t.__name__ for t in self.types)


COMMON: dict[str, Option] = {
    "type": Option((str,), help="backend type"),
    "model": Option((str,), help="model reference"),
    "price_usd": Option((float, int), help="per-image price override, USD"),
    "timeout_s": Option((float, int), help="give up (and cancel remotely) after this many seconds"),
    "default_steps": Option((int,), help="inference steps when --steps is not given"),
}
