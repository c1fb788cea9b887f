"""`imagen worker`: drive jobs recorded elsewhere (`generate --detach`, from any machine sharing
the ledger) and jobs whose driver died, until stopped.

No queue but the ledger. A job is claimable when `imagen resume` would take it: unfinished and
nobody driving it (never claimed; its claimant's process gone, on this host; its lease lapsed,
on another). A worker takes one by appending its claim at the version it read, so of several
workers racing for a job exactly one succeeds; the others get JobTakenOver and move on. While
it drives a job the runner renews the lease between steps (runner/loop.py `_renew_lease`); a
worker killed with -9 stops renewing and, once the lease lapses, the others take its jobs over,
resuming each from its last recorded event (never re-sending a create blind).

Budgets are the job's caller's, as recorded in its request, checked when it was recorded:
the worker's own identity governs nothing. SIGTERM/SIGINT stop the worker: each job in flight
is recorded interrupted at its next step, left for any worker (or `imagen resume`) to finish.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from imagen.app.errors import UserError
from imagen.app.exit_codes import ExitCode
from imagen.app.session import Session
from imagen.core.job import JobState
from imagen.runner import signals

POLL_S = 1.0  # between looks at the ledger for new work


@dataclass(frozen=True)
class WorkerOptions:
    backend: str | None = None  # only jobs recorded for this backend
    max_jobs: int | None = None  # jobs driven at once (None: the backend's batch concurrency)
    only: tuple[str, ...] = ()  # only these jobs (the runner `generate --detach` starts)
    exit_when_idle: bool = False  # stop once nothing is left to take or driving
    poll_s: float = POLL_S


class WorkerWatch(Protocol):
    """Who follows the worker (the CLI prints; a test collects). Called from worker threads."""

    def on_start(self, job_id: str) -> None: ...

    def on_done(self, outcome: Any) -> None:
        """A job this worker drove has stopped (app/batch.py Outcome)."""

    def skipped(self, job_id: str, reason: str) -> None:
        """A claimable job this worker cannot run (its backend unusable here); said once."""

    def reporter(self) -> Any: ...


def jobs_at_once(session: Session, options: WorkerOptions) -> int:
    """--max, else the batch runner's concurrency for --backend, else its fallback."""
    from imagen.app import batch as b

    if options.max_jobs is not None:
        if not 1 <= options.max_jobs <= 64:
            raise UserError(f"--max {options.max_jobs}: use 1 to 64")
        return options.max_jobs
    if options.backend:
        known = session.config().backend(options.backend)
        configured = known.options.get("max_concurrency")
        return int(configured) if configured else b.DEFAULT_CONCURRENCY.get(known.type, 4)
    return b.FALLBACK_CONCURRENCY


def claimable(session: Session, store: Any, options: WorkerOptions) -> list[str]:
    """Jobs nobody drives, oldest first: those recorded for a worker and not yet claimed, and
    what `imagen resume --all` would take (or, with `only`, those of the listed jobs)."""
    from imagen.app.liveness import job_owner_alive, row_owner_alive
    from imagen.projections.jobs import query as jobs_query
    from imagen.projections.jobs import table as jobs_index
    from imagen.repository import load

    if options.only:
        out = []
        for jid in options.only:
            state = load(store, jid)
            if not state.finished and not job_owner_alive(state, session.env):
                out.append(jid)
        return out
    jobs_index.catch_up(store)
    alive = row_owner_alive(session.env)
    found = []
    for status in ("interrupted", "requested"):  # requested: recorded unclaimed (--detach)
        rows = jobs_query.query(store, alive, status=status, backend=options.backend, limit=None)
        found += [(r["created_at"], r["batch_index"] or 0, r["job_id"]) for r in rows]
    return [jid for *_, jid in sorted(found)]


def run_worker(
    session: Session,
    options: WorkerOptions,
    stop: Any,
    watch: WorkerWatch,
    *,
    idle: Callable[[], None] | None = None,
) -> int:
    """Take and drive jobs until `stop` (app/batch.py Stop, set by the caller's signal
    handlers) says to, or, with `exit_when_idle`, until nothing is left. `idle()` is called
    each time a look at the ledger found nothing new to take (tests wait on it). Exit 0."""
    from imagen.app import batch as b
    from imagen.app.runners import new_runner

    store = session.store()
    env = session.env
    cfg = session.config()
    if options.backend:
        cfg.backend(options.backend)  # an unknown name: one line naming the configured ones
    width = jobs_at_once(session, options)
    mode = cfg.output.sidecar_mode
    gate = b.Gate()
    cond = threading.Condition()
    pending: deque[str] = deque()
    mine: set[str] = set()  # queued or in flight here
    skipped: set[str] = set()  # claimable but not runnable here: said once, not retried

    def take(state: JobState) -> None:
        """run_one's check, under its fresh read: still nobody's, and runnable here."""
        from imagen.app.liveness import job_owner_alive
        from imagen.app.resume import check_backend_usable

        if job_owner_alive(state, env):
            raise UserError(f"job {state.job_id} is driven elsewhere", ExitCode.CONFLICT)
        check_backend_usable(session, state, state.job_id)

    def drive(runner: Any, jid: str) -> None:
        from imagen.app.liveness import job_owner_alive
        from imagen.repository import load

        state = load(store, jid)
        if state.finished or job_owner_alive(state, env):
            return  # taken (or finished) by another worker since the look
        watch.on_start(jid)
        try:
            outcome = b.run_one(runner, store, jid, mode, resume=take)
        except Exception as exc:  # a bug or the ledger failing: this job, said once
            outcome = b.Outcome(
                jid,
                ExitCode.INTERNAL,
                f"job {jid}: internal error ({type(exc).__name__}: {str(exc)[:200]})",
                {"job_id": jid, "status": "interrupted"},
                (),
                "interrupted",
                None,
            )
        if outcome.code == ExitCode.CONFLICT:
            return  # another worker claimed it first: theirs
        if outcome.code == ExitCode.BAD_INPUT:
            skipped.add(jid)
            watch.skipped(jid, outcome.message or "its backend is not usable here")
            return
        if outcome.status not in ("succeeded", "failed", "cancelled") and not stop.terminating:
            skipped.add(jid)  # halted for a person: not taken again by this worker
        watch.on_done(outcome)

    def work() -> None:
        runner = new_runner(
            store, env, watch.reporter(), interrupt=stop.get, gate=gate, image_mode=mode
        )
        while not stop.terminating:
            with cond:
                while not pending and not stop.terminating and not done.is_set():
                    cond.wait(0.2)
                if stop.terminating or (done.is_set() and not pending):
                    return
                jid = pending.popleft()
            try:
                drive(runner, jid)
            finally:
                with cond:
                    mine.discard(jid)
                    cond.notify_all()

    done = threading.Event()
    threads = [
        threading.Thread(target=work, name=f"imagen-worker-{n}", daemon=True) for n in range(width)
    ]
    for t in threads:
        signals.start(t)  # a stop signal is the main thread's (imagen/runner/signals.py)
    try:
        while stop.get() is None:
            found = claimable(session, store, options)
            with cond:
                new = [j for j in found if j not in mine and j not in skipped]
                pending.extend(new)
                mine.update(new)
                cond.notify_all()
                busy = bool(mine)
            if not new and idle is not None:
                idle()
            if options.exit_when_idle and not busy and not [j for j in found if j not in skipped]:
                break
            _pause(options.poll_s, stop, cond, mine if options.exit_when_idle else None)
    finally:
        done.set()
        with cond:
            cond.notify_all()
        b.wait_for_workers(threads, stop)
    return int(ExitCode.OK)


def _pause(seconds: float, stop: Any, cond: threading.Condition, mine: set[str] | None) -> None:
    """Until the next look at the ledger: `seconds`, cut short by a stop, or (exiting when
    idle) by the last job here ending."""
    end = time.monotonic() + seconds
    with cond:
        while stop.get() is None:
            left = end - time.monotonic()
            if left <= 0 or (mine is not None and not mine):
                return
            cond.wait(min(left, 0.2))
