"""Ending an unfinished job for good (`imagen cancel`).

The adapter's own cancel path runs first, so remote work is stopped (and that is recorded) the
same way Ctrl-C stops it. When that cannot run (the backend type is gone, its token is not set,
the adapter fails, or a person would have to decide), the end is still recorded, saying why
remote work may not have been cancelled: a job that can never finish must not be reported as
interrupted forever.
"""

from __future__ import annotations

from typing import Any

from imagen.app.errors import UserError
from imagen.app.exit_codes import ExitCode
from imagen.app.session import Session
from imagen.core.events import CancelRequested, JobCancelled
from imagen.core.job import JobState
from imagen.repository import load
from imagen.runner.environment import Environment
from ledger import ConcurrencyError, NewEvent


def cancel(session: Session, job_id: str) -> tuple[JobState, str]:
    """End the job `job_id` names (an id or a unique prefix): the final state and a one-line
    account of what happened."""
    from imagen.app.outcome import resolve_job_id
    from imagen.app.runners import new_runner

    store = session.store()
    jid = resolve_job_id(store, job_id)
    with session.reporting() as reporter:
        state, said = _cancel(
            store,
            jid,
            session.env,
            new_runner(
                store, session.env, reporter, image_mode=session.config().output.sidecar_mode
            ),
        )
    # The adapter's cancel may have found the work finished and stored its images: the job
    # ends complete, sidecars written (audit is clean without a resume), as generate ends it.
    from imagen.app.drive import settle

    settle(session, state)
    return state, said


def _cancel(store: Any, job_id: str, env: Environment, runner: Any) -> tuple[JobState, str]:
    from imagen.app.liveness import job_owner_alive

    state = load(store, job_id)
    if state.finished:
        return state, f"job {job_id} already {state.status}; nothing to cancel"
    if job_owner_alive(state, env):
        claim = state.claim
        assert claim is not None
        raise UserError(
            f"job {job_id} is being driven by pid {claim.pid} on {claim.host}: interrupt that "
            "process (Ctrl-C cancels it), or stop it (kill -TERM) and run `imagen cancel` again",
            ExitCode.CONFLICT,
        )
    why = ""
    try:
        state = runner.run(job_id, state, resumed=True, extra=[CancelRequested("user")])
    except UserError:
        raise
    except Exception as exc:  # the backend type is gone, a token is missing, the adapter broke
        why = f"{type(exc).__name__}: {exc}"[:300]
    state = load(store, job_id)
    if not state.finished:
        end = JobCancelled(
            "user",
            remote_cancelled=False,
            detail=f"remote work was not cancelled by imagen ({why or 'the adapter did not end the job'})"
            if state.remote_id or state.in_flight
            else f"ended without the adapter ({why or 'it did not end the job'})",
        )
        try:
            store.append(
                job_id,
                [NewEvent(end.type_name(), end.to_data(), end.SCHEMA_VERSION)],
                expected_version=state.version,
            )
        except ConcurrencyError:
            raise UserError(
                f"job {job_id} changed while cancelling it; run `imagen cancel {job_id}` again",
                ExitCode.CONFLICT,
            ) from None
        state = load(store, job_id)
    t = state.terminal
    if isinstance(t, JobCancelled):
        if t.remote_cancelled:
            return state, f"cancelled job {job_id}; the remote job was cancelled"
        if t.detail:
            return state, f"cancelled job {job_id}; {t.detail}"
        return state, f"cancelled job {job_id}; no remote work was running"
    return state, f"job {job_id} ended {state.status} while being cancelled"
