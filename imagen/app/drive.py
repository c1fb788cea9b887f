"""Driving one job for a use case (generate, resume, demo): the runner's errors as one-line
user errors, the output names released, the sidecar written, stray temp files swept; and the
usage sync that follows a job."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from imagen.app.errors import UserError
from imagen.app.exit_codes import ExitCode
from imagen.app.session import Session
from imagen.core.events import Event, JobRequested
from imagen.core.job import JobState


def drive(
    session: Session,
    store: Any,
    job_id: str,
    *,
    request: JobRequested | None = None,
    state: JobState | None = None,
    resumed: bool = False,
    extra: Sequence[Event] = (),
) -> JobState:
    from imagen.app.runners import new_runner
    from imagen.runner.loop import Halted, JobTakenOver, MissingCredential

    try:
        with session.reporting() as reporter:
            runner = new_runner(
                store, session.env, reporter, image_mode=session.config().output.sidecar_mode
            )
            if request is not None:
                state = runner.submit(job_id, request)
            state = runner.run(job_id, state, resumed=resumed, extra=list(extra))
    except KeyboardInterrupt:
        # A second Ctrl-C stops at once: say which job is left unfinished and how to end it.
        raise KeyboardInterrupt(
            f"job {job_id} is left unfinished: finish it with `imagen resume {job_id}`"
        ) from None
    except JobTakenOver as exc:
        raise UserError(str(exc), ExitCode.CONFLICT, job_id=job_id) from None
    except MissingCredential as exc:
        # Checked before anything is recorded; this is the token vanishing mid-run.
        raise UserError(str(exc), ExitCode.BACKEND_UNAVAILABLE, job_id=job_id) from None
    except Halted as exc:
        from imagen.app.outcome import FAILURE_EXIT_CODES

        code = FAILURE_EXIT_CODES[exc.category] if exc.category else ExitCode.CONFLICT
        raise UserError(f"job {job_id}: {exc}", code, job_id=job_id) from None
    assert state is not None
    settle(session, state)
    return state


def settle(session: Session, state: JobState) -> None:
    """What follows a run however it ended (generate, resume, cancel): an ended job gives
    back the names it did not use, every stored image gets its sidecar, stray temp files go."""
    from imagen.app.sidecars import write_sidecar

    if state.finished:
        from imagen.app.prepare import release_output

        release_output(state.request, {i.path for i in state.images})
    write_sidecar(state, session.config().output.sidecar_mode)
    _note_unexpected_sizes(session, state)
    if state.request is not None:
        from pathlib import Path

        from imagen.runner.files import sweep_temp_files

        sweep_temp_files(Path(state.request.output_path).parent, session.env.clock().timestamp())


def _note_unexpected_sizes(session: Session, state: JobState) -> None:
    """Say when an image kept is not the size the backend was asked for (its sidecar says so
    too): kept, because a paid image is never thrown away."""
    from imagen.projections.sidecar import sidecars

    for doc in sidecars(state):
        if "expected_size" in doc:
            session.err(
                f"imagen: note: job {state.job_id}: {doc['image']['path']} is {doc['size']}, "
                f"not the {doc['expected_size']} asked for; kept as the backend made it"
            )


def sync_usage_best_effort(session: Session, store: Any) -> None:
    """After a job: send usage with a short timeout; a failure is one warning, never a failed image."""
    cfg = session.config()
    if not cfg.usage.supabase_url:
        return
    from imagen.app.remote import SyncError
    from imagen.app.usage_sync import AnchorRefused, sync

    try:
        sync(store, cfg, session.env, timeout_s=3.0)
    except AnchorRefused as exc:
        session.err(f"imagen: warning: {exc}")
    except SyncError as exc:
        session.warn(f"usage not synced ({exc}); it stays queued for `imagen usage sync`")
