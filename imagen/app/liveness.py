"""Is the process that claimed a job still driving it?

Same host: the pid must exist and have the start time recorded with the claim (pids are
reused). Another host (a shared PostgreSQL ledger): only the lease tells.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from imagen.core.job import parse_time
from imagen.runner.environment import proc_start

if TYPE_CHECKING:
    from imagen.app.session import Session
    from imagen.core.job import JobState
    from imagen.runner.environment import Environment

__all__ = [
    "job_owner_alive",
    "mention_interrupted",
    "owner_alive",
    "proc_start",
    "row_owner_alive",
]


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


def row_owner_alive(env: Environment) -> Callable[[dict[str, Any]], bool]:
    """For the jobs table's queries (projections/jobs/query.py): is the process that claimed
    this row's job still driving it? The projection stores the claim; whether its owner lives
    is this machine's business, asked here."""

    def alive(row: dict[str, Any]) -> bool:
        return owner_alive(
            pid=row["pid"],
            host=row["host"],
            started=row["proc_start"],
            claimed_at=parse_time(row["claimed_at"]) if row["claimed_at"] else None,
            lease_seconds=row["lease_seconds"],
            my_host=env.host,
            now=env.clock(),
        )

    return alive


def mention_interrupted(session: Session, reader: Any) -> None:
    """A note when jobs were left interrupted (`imagen resume --all` finishes them)."""
    from imagen.projections.jobs import query as jobs_query

    n = jobs_query.count_interrupted(reader, row_owner_alive(session.env))
    if n:
        session.note(f"{n} interrupted job(s); finish them with `imagen resume --all`")
