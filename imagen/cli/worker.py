"""`imagen worker`, `imagen wait`, and what `generate --detach` prints (app/worker.py,
app/wait.py and app/detach.py do the work)."""

from __future__ import annotations

import json
import signal
import threading
from typing import Annotated, Any

from imagen.app.contract import GeneratedJob
from imagen.app.exit_codes import ExitCode, most_severe
from imagen.cli import context, render
from imagen.cli.params import Parameter


@render.outputs(GeneratedJob)  # one per job and line, as it ends
def worker(
    *,
    backend: Annotated[str | None, Parameter(name=["--backend", "-b"])] = None,
    max_: Annotated[int | None, Parameter(name="--max")] = None,
    only: Annotated[list[str] | None, Parameter(consume_multiple=True)] = None,
    exit_when_idle: bool = False,
    json_output: Annotated[bool, Parameter(name="--json")] = False,
) -> int:
    """Drive jobs recorded for workers, on this machine, until stopped.

    Takes jobs recorded by `generate --detach` and jobs whose driver died. Run one on each machine that should make images (one ledger: PostgreSQL shared through
    IMAGEN_LEDGER_URL). Each job is claimed through the ledger, so no two workers drive one;
    a worker that dies leaves its jobs to the others once its lease lapses (120 s, or
    IMAGEN_LEASE_SECONDS). stdout: one line per image as it lands (--json: one object per job);
    stderr: one line per job taken and per failure. SIGTERM or Ctrl-C stops it: jobs in flight
    are left resumable, for another worker or `imagen resume`.

    Examples of use:
      imagen worker
      imagen worker --backend flux-schnell-replicate --max 8

    Parameters
    ----------
    backend
        Only jobs recorded for this backend (as this machine's config names it).
    max_
        Jobs driven at once, 1 to 64 (default: the backend's batch concurrency, else 4).
    only
        Only these job ids (the worker `generate --detach` starts uses it).
    exit_when_idle
        Exit once nothing is left to take and nothing is in flight here.
    json_output
        One JSON object per job as it ends, instead of image paths.
    """
    from imagen.app import batch as b
    from imagen.app.worker import WorkerOptions, jobs_at_once, run_worker

    session = context.session()
    options = WorkerOptions(
        backend=backend,
        max_jobs=max_,
        only=tuple(only or ()),
        exit_when_idle=exit_when_idle,
    )
    width = jobs_at_once(session, options)
    stop = b.Stop()
    watch = _Watch(json_output)
    old = _install_signals(stop)
    try:
        env = session.env
        context.note(
            f"worker pid {env.pid} on {env.host}: taking jobs"
            + (f" for {backend}" if backend else "")
            + f", {width} at once; Ctrl-C or SIGTERM stops it"
        )
        run_worker(session, options, stop, watch)
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)
    t = watch.tally
    stopped = f" (stopped by {stop.value})" if stop.value else ""
    context.note(f"worker: {t['succeeded']} done, {t['failed']} not done{stopped}")
    return int(ExitCode.OK)


class _Watch:
    def __init__(self, json_output: bool) -> None:
        self.json_output = json_output
        self.lock = threading.Lock()
        self.tally = {"succeeded": 0, "failed": 0}

    def on_start(self, job_id: str) -> None:
        context.note(f"worker: job {job_id} taken")

    def on_done(self, o: Any) -> None:
        out = context.session().env.stdout
        with self.lock:
            self.tally["succeeded" if o.code == ExitCode.OK else "failed"] += 1
            if self.json_output:
                print(json.dumps(o.summary), file=out)
            elif o.code == ExitCode.OK:
                for path in o.images:
                    print(path, file=out)
            out.flush()
            if o.message and o.code != ExitCode.OK:
                context.err(f"imagen: error: {o.message}")

    def skipped(self, job_id: str, reason: str) -> None:
        context.err(f"imagen: worker: not taking job {job_id}: {reason}")

    def reporter(self) -> Any:
        return None


def _install_signals(stop: Any) -> dict[int, Any]:
    """SIGTERM, SIGHUP and Ctrl-C all stop the worker the same way: jobs in flight are
    recorded interrupted at their next step (never cancelled: they are someone's order)."""

    def on_signal(signum: int, _frame: object) -> None:
        if stop.value is None:
            context.note("worker: stopping; jobs in flight are left resumable")
        stop.terminate(signal.Signals(signum).name)

    return {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)}


@render.outputs(GeneratedJob)  # one per job and line, as it ends
def wait(
    *ids: str,
    timeout: float | None = None,
    json_output: Annotated[bool, Parameter(name="--json")] = False,
) -> int:
    """Wait for jobs to end (from generate --detach); print them as generate would.

    `generate --detach` printed their ids. Prints each job as it ends: its image paths (--json: one object per job). Exit code: the
    worst of the jobs' codes, as `generate` would exit; 75 when --timeout passed (or Ctrl-C
    stopped the wait) before every job ended: those jobs go on, with whoever drives them.

    Examples of use:
      imagen wait 3f9c2a1b
      imagen wait $(imagen generate "a fox" -n 4 --detach) --timeout 600

    Parameters
    ----------
    ids
        Job ids, or unique prefixes of them.
    timeout
        Seconds to wait at most.
    json_output
        One JSON object per job, as `generate --json` prints it.
    """
    from imagen.app.errors import UserError
    from imagen.app.wait import resolve_ids
    from imagen.app.wait import wait as wait_for
    from imagen.cli.report import report

    if timeout is not None and not timeout >= 0:
        raise UserError(f"--timeout {timeout}: give seconds, 0 or more")
    session = context.session()
    job_ids = resolve_ids(session, ids)
    worst = ExitCode.OK

    def on_end(state: Any) -> None:
        nonlocal worst
        # An unfinished job here was left interrupted: its line names `imagen resume ID`.
        worst = most_severe(worst, report(state, json_output=json_output))
        context.session().env.stdout.flush()

    waited = wait_for(session, job_ids, on_end=on_end, timeout_s=timeout)
    if waited.complete:
        return int(worst)
    left = " ".join(j[:8] for j in waited.pending)
    why = "stopped waiting" if waited.interrupted else f"--timeout {timeout:g} s passed"
    context.err(
        f"imagen: {why}: {len(waited.pending)} job(s) not ended yet ({left}); they go on; "
        f"`imagen wait {left}` waits again"
    )
    return int(ExitCode.STILL_RUNNING)


def detached(ids: list[str], *, json_output: bool, concurrency: int | None = None) -> int:
    """After `generate --detach` recorded `ids`: start their runner (a local ledger) and print
    the ids (text) or each job object as it stands (--json). A job already ended (refused
    over budget) is reported as `generate` would, and sets the exit code."""
    from imagen.app.contract import job_object
    from imagen.app.detach import hand_over
    from imagen.app.outcome import exit_code, failure_message
    from imagen.repository import load

    session = context.session()
    log = hand_over(session, ids, concurrency)
    store = session.store()
    out = session.env.stdout
    worst = ExitCode.OK
    objects = []
    for jid in ids:
        state = load(store, jid)
        if state.finished:
            worst = most_severe(worst, exit_code(state))
            message = failure_message(state)
            if message and exit_code(state) != ExitCode.OK:
                context.err(f"imagen: error: {message}")
        if json_output:
            objects.append(job_object(state))
        else:
            print(jid, file=out)
    if json_output:
        print(json.dumps(objects), file=out)
    out.flush()
    if ids:
        from imagen.app.wait import shared_ledger

        if log is not None:
            who = f"; a background worker runs them (log: {log})"
        elif shared_ledger(session):
            who = "; the ledger's workers run them (`imagen worker`)"
        else:
            who = ""
        hint = " ".join(ids) if len(ids) <= 8 else "ID… (the ids above)"
        context.note(f"{len(ids)} job(s) recorded{who}; `imagen wait {hint}` waits for them")
    return int(worst)
