"""`generate --detach`: record the job(s) exactly as `generate` would, hand them to a background
runner and return their ids at once (`imagen wait ID…` follows them; app/wait.py).

The jobs are recorded unclaimed: a worker claims each through the ledger (app/worker.py), so
a job is driven by one process whichever takes it. Budgets are checked as they are recorded,
against the caller named in each request, so a job over budget is recorded refused here, as
in the foreground, and no worker ever sees it.

Who runs them: on a local (SQLite) ledger a detached `imagen worker --only ID… --exit-when-idle`
started here, in its own session (closing the terminal does not stop it), its output in a log
file beside the ledger. On a shared PostgreSQL ledger the team's `imagen worker`s drain them,
and the output names are left to the machine that writes the images.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from imagen.app.session import Session
from imagen.core.inputs import GenerateInputs


def detach_one(
    session: Session,
    job_inputs: GenerateInputs,
    *,
    backend: str | None = None,
    output: str | None = None,
    overwrite: bool = False,
    overflow: str | None = None,
) -> list[str]:
    """Prepare and record one job unclaimed (its budget checked); its id in a list."""
    from imagen.app.prepare import prepare_for, release_output, reserve_output
    from imagen.app.runners import new_runner
    from imagen.app.wait import shared_ledger

    env = session.env
    prepared = prepare_for(
        session, job_inputs, backend=backend, output=output, overwrite=overwrite, overflow=overflow
    )
    for note in prepared.notes:
        session.err(f"imagen: note: {note}")
    store = session.store()
    local = not shared_ledger(session)
    if local:
        reserve_output(prepared.request)
    try:
        new_runner(store, env).submit_many([(prepared.job_id, prepared.request)], claimed=False)
    except BaseException:
        if local:
            release_output(prepared.request, False)
        raise
    return [prepared.job_id]


def detach_batch(session: Session, plan: Any, source: Any) -> list[str]:
    """Validate and record a batch's members unclaimed (app/batch.py, as a foreground batch
    records them); their ids in batch order. A member whose output name was taken since
    validation is not recorded, and said so."""
    from imagen.app import batch as b
    from imagen.app.errors import UserError
    from imagen.app.runners import new_runner
    from imagen.app.wait import shared_ledger
    from imagen.core.inputs import BadInput

    try:
        try:
            b.validate(plan, source, lambda text: session.note(f"note: {text}"))
        except BadInput as exc:
            raise UserError(str(exc)) from None
        store = session.store()
        recorded = b.record(
            plan,
            source,
            new_runner(store, session.env),
            b.new_batch_id(),
            detached=True,
            reserve=not shared_ledger(session),
        )
    finally:
        source.close()
    for where, exc in recorded.refused:
        session.err(f"imagen: error: {where}: {exc}; not recorded")
    ids = [jid for queue in recorded.queues.values() for jid in queue]
    return ids


def hand_over(session: Session, job_ids: list[str], concurrency: int | None = None) -> Path | None:
    """Start the background runner for `job_ids` on a local ledger (its log file's path); on a
    shared ledger the workers take them (None). Jobs already ended (refused over budget) need
    no runner. It runs as many at once as a foreground batch would (`concurrency`: --concurrency)."""
    import subprocess
    import sys
    import threading

    from imagen.app.config import ledger_url
    from imagen.app.wait import shared_ledger
    from imagen.core.times import file_stamp
    from imagen.repository import load

    if shared_ledger(session):
        return None
    store = session.store()
    from collections import deque

    from imagen.app import batch as b

    todo: list[str] = []
    recorded = b.Recorded("", {}, {})
    for jid in job_ids:
        state = load(store, jid)
        if state.finished or state.request is None:
            continue
        todo.append(jid)
        recorded.queues.setdefault(state.request.backend, deque()).append(jid)
        recorded.backend_types[state.request.backend] = state.request.backend_type
    if not todo:
        return None
    width = sum(b.concurrency(recorded, session.config(), concurrency).values())
    ledger_file = Path(ledger_url(session.config()).removeprefix("sqlite:///").split("?")[0])
    logs = ledger_file.parent / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    log = logs / f"worker-{file_stamp(session.env.clock(), session.env.tz)}-{todo[0][:8]}.log"
    argv = [sys.executable, "-m", "imagen"]
    if session.config_path:
        argv += ["--config", session.config_path]
    argv += ["worker", "--exit-when-idle", "--max", str(min(width, 64)), "--only", *todo]
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=dict(session.env.env),
            start_new_session=True,  # its own session: a closing terminal's SIGHUP misses it
            close_fds=True,
        )
    # Reaped when it ends, should this process outlive it (the MCP server): no zombie.
    threading.Thread(target=proc.wait, name="imagen-detached-reaper", daemon=True).start()
    return log
