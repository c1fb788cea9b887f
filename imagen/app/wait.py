"""`imagen wait ID…` as a library call: block until each job has ended, telling each as it does.

The jobs are driven by someone else (a worker started by `generate --detach`, or the `imagen
worker`s of a shared ledger), so waiting only reads the ledger: a cheap look at its head
position, and the streams of the jobs still open only when it moved. The polls back off from
50 ms to 1 s, so a long wait costs one tiny query a second. Stopping the wait (the timeout,
Ctrl-C) touches no job: they stay with whoever drives them.

When is a job over? When it has finished (succeeded, failed, cancelled). On a local (SQLite)
ledger also when its driver died without finishing it: nobody else will take it, so it is
reported interrupted (`imagen resume ID` finishes it). On a shared PostgreSQL ledger the
`imagen worker`s take such a job over once its lease lapses, so the wait goes on.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from imagen.app.errors import UserError
from imagen.app.session import Session
from imagen.core.job import JobState

FIRST_POLL_S = 0.05
LAST_POLL_S = 1.0


@dataclass(frozen=True)
class Waited:
    """How a wait ended: `pending` names the jobs that had not ended (a timeout or Ctrl-C)."""

    pending: tuple[str, ...]
    interrupted: bool = False  # Ctrl-C stopped the wait

    @property
    def complete(self) -> bool:
        return not self.pending


def resolve_ids(session: Session, ids: Sequence[str]) -> list[str]:
    """Full job ids from ids or unique prefixes (NOT_FOUND, exit 6, for one that names none)."""
    from imagen.app.outcome import resolve_job_id

    if not ids:
        raise UserError("give one or more job ids (as `generate --detach` printed them)")
    reader = session.reader()
    out: list[str] = []
    for given in ids:
        jid = resolve_job_id(reader, given)
        if jid not in out:
            out.append(jid)
    return out


def is_over(state: JobState, session: Session, *, workers_take_over: bool) -> bool:
    """Has the job ended, as far as waiting is concerned (see the module doc)?"""
    from imagen.app.liveness import job_owner_alive

    if state.finished:
        return True
    if workers_take_over or state.claim is None:
        return False  # not claimed yet: queued for a worker
    return not job_owner_alive(state, session.env)


def shared_ledger(session: Session) -> bool:
    """Is the ledger one that `imagen worker`s on other machines drain (PostgreSQL)?"""
    from imagen.app.config import ledger_url

    return not ledger_url(session.config()).startswith("sqlite")


def wait(
    session: Session,
    job_ids: Sequence[str],
    *,
    on_end: Callable[[JobState], object],
    timeout_s: float | None = None,
    sleep: Callable[[float], None] | None = None,
    monotonic: Callable[[], float] = time.monotonic,
) -> Waited:
    """Block until every job in `job_ids` (full ids: `resolve_ids`) is over, calling
    `on_end(state)` for each as it ends (in the order they end); give up after `timeout_s`.
    Ctrl-C ends the wait (Waited.interrupted), never a job."""
    from imagen.core.job import evolve
    from imagen.repository import load, to_recorded

    reader: Any = session.reader()
    takes_over = shared_ledger(session)
    pause = sleep or session.env.sleep
    deadline = None if timeout_s is None else monotonic() + max(0.0, timeout_s)
    states: dict[str, JobState] = {}
    for jid in job_ids:
        if jid not in states:
            states[jid] = load(reader, jid)
    open_ = list(states)
    head = -1
    delay = FIRST_POLL_S
    try:
        while True:
            now_head = reader.head_position()
            if now_head != head:
                head = now_head
                delay = FIRST_POLL_S  # something moved: look again soon
                still: list[str] = []
                for jid in open_:
                    state = states[jid]
                    for e in reader.read_stream(jid, after_version=state.version):
                        state = evolve(state, to_recorded(e))
                    states[jid] = state
                    if is_over(state, session, workers_take_over=takes_over):
                        on_end(state)
                        del states[jid]  # told: its state is not kept
                    else:
                        still.append(jid)
                open_ = still
            elif not takes_over and any(states[j].claim is not None for j in open_):
                # A driver that dies appends nothing: liveness is checked without a new event.
                over = [
                    j for j in open_ if is_over(states[j], session, workers_take_over=takes_over)
                ]
                for jid in over:
                    on_end(states.pop(jid))
                open_ = [j for j in open_ if j not in over]
            if not open_:
                return Waited(())
            if deadline is not None and monotonic() >= deadline:
                return Waited(tuple(open_))
            wait_s = delay if deadline is None else min(delay, max(0.0, deadline - monotonic()))
            pause(wait_s)
            delay = min(LAST_POLL_S, delay * 2)
    except KeyboardInterrupt:
        return Waited(tuple(open_), interrupted=True)
