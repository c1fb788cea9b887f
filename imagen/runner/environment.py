"""Everything the shell touches from the outside world, injectable for tests."""

from __future__ import annotations

import os
import socket
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
from pathlib import Path
from typing import TextIO
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError


def _now() -> datetime:
    return datetime.now(UTC)


def proc_start(pid: int) -> str:
    """The process's start time in clock ticks since boot ('' where /proc is absent): with the
    pid it names one process, as pids are reused (recorded in a claim, checked by liveness)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


def local_zone(env: Mapping[str, str] | None = None) -> tzinfo:
    """The zone people here read times in: $TZ if it names a zone, else /etc/localtime, else
    the current UTC offset (a fixed offset knows no DST: the last resort)."""
    name = (env if env is not None else os.environ).get("TZ", "").lstrip(":")
    if name:
        try:
            return ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError, OSError):
            pass
    try:
        with open("/etc/localtime", "rb") as fh:
            return ZoneInfo.from_file(fh, key="localtime")
    except (OSError, ValueError):
        return datetime.now(UTC).astimezone().tzinfo or UTC


@dataclass
class Environment:
    env: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    stdout: TextIO = field(default_factory=lambda: sys.stdout)
    stderr: TextIO = field(default_factory=lambda: sys.stderr)
    clock: Callable[[], datetime] = _now
    sleep: Callable[[float], None] = time.sleep
    pid: int = field(default_factory=os.getpid)
    # IMAGEN_HOST: the name claims record, where machines share a hostname (containers).
    host: str = field(default_factory=lambda: os.environ.get("IMAGEN_HOST") or socket.gethostname())
    tz: tzinfo = field(default_factory=local_zone)

    @property
    def stdout_isatty(self) -> bool:
        return self.stdout.isatty()

    @property
    def testing(self) -> bool:
        return self.env.get("IMAGEN_TESTING") == "1"
