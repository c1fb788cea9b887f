"""Is the process that claimed a job still driving it?

Same host: the pid must exist and have the start time recorded with the claim (pids are
reused). Another host (a shared PostgreSQL ledger): only the lease tells.
"""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from imagen.core.job import JobState
    from imagen.runner.environment import Environment


def proc_start(pid: int) -> str:
    """The process's start time in clock ticks since boot ('' where /proc is absent)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


def owner_alive(
    *,
    pid: int | None,
    host: str | None,
    started: str | None,
    claimed_at: datetime | None,
    lease_seconds: float | None,
    my_host: str,
    now: datetime,
) -> bool:
    # A recorded pid outside what the OS can hold names no process here (os.kill would raise).
    if host == my_host and isinstance(pid, int) and 0 < pid < 2**31:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return not started or proc_start(pid) == started
    if claimed_at is None:
        return False
    try:
        return (now - claimed_at).total_seconds() < float(lease_seconds or 0)
    except (OverflowError, TypeError, ValueError):
        return False


def job_owner_alive(state: JobState, env: Environment) -> bool:
    """Is the process that last claimed this unfinished job still driving it?"""
    claim = state.claim
    if claim is None or state.finished or state.interrupted is not None:
        return False
    return owner_alive(
        pid=claim.pid,
        host=claim.host,
        started=claim.proc_start,
        claimed_at=state.claim_at,
        lease_seconds=claim.lease_seconds,
        my_host=env.host,
        now=env.clock(),
    )
