"""Everything the shell touches from the outside world, injectable for tests."""

from __future__ import annotations

import os
import socket
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TextIO


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass
class Environment:
    env: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    stdout: TextIO = field(default_factory=lambda: sys.stdout)
    stderr: TextIO = field(default_factory=lambda: sys.stderr)
    clock: Callable[[], datetime] = _now
    sleep: Callable[[float], None] = time.sleep
    pid: int = field(default_factory=os.getpid)
    host: str = field(default_factory=socket.gethostname)

    @property
    def stdout_isatty(self) -> bool:
        return self.stdout.isatty()

    @property
    def testing(self) -> bool:
        return self.env.get("IMAGEN_TESTING") == "1"
