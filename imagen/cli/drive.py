"""Driving a job from a command: progress on stderr, runner errors as one-line user errors, the
sidecar written, the outcome printed. Shared by generate, resume and demo."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from imagen.app.errors import UserError
from imagen.app.exit_codes import ExitCode
from imagen.cli import context
from imagen.core.events import Event, JobRequested
from imagen.core.job import JobState


def drive(
    store: Any,
    job_id: str,
    *,
    request: JobRequested | None = None,
    state: JobState | None = None,
    resumed: bool = False,
    extra: Sequence[Event] = (),
    sidecar_mode: int | None = None,
) -> JobState:
    from imagen.app.runners import new_runner
    from imagen.app.sidecars import write_sidecar
    from imagen.cli.progress import RichReporter
    from imagen.runner.loop import Halted, JobTakenOver, MissingCredential

    reporter = RichReporter(
        context.ENV.stderr,
        enabled=False if context.VERBOSITY != 0 else None,
        events=context.VERBOSITY > 0,
    )
    runner = new_runner(store, context.ENV, reporter)
    try:
        if request is not None:
            state = runner.submit(job_id, request)
        state = runner.run(job_id, state, resumed=resumed, extra=list(extra))
    except JobTakenOver as exc:
        raise UserError(str(exc), ExitCode.CONFLICT) from None
    except MissingCredential as exc:
        # Checked before anything is recorded; this is the token vanishing mid-run.
        raise UserError(str(exc), ExitCode.BACKEND_UNAVAILABLE) from None
    except Halted as exc:
        from imagen.app.outcome import FAILURE_EXIT_CODES

        code = FAILURE_EXIT_CODES[exc.category] if exc.category else ExitCode.CONFLICT
        raise UserError(f"job {job_id}: {exc}", code) from None
    finally:
        reporter.close()
    if state is not None and state.finished:
        from imagen.app.prepare import release_output

        release_output(state.request, {i.index for i in state.images})
    write_sidecar(
        state, context.config().output.sidecar_mode if sidecar_mode is None else sidecar_mode
    )
    if state.request is not None:
        from pathlib import Path

        from imagen.runner.files import sweep_temp_files

        sweep_temp_files(Path(state.request.output_path).parent, context.ENV.clock().timestamp())
    return state


def report(
    state: JobState, *, json_output: bool, collect: list[dict[str, Any]] | None = None
) -> ExitCode:
    """Print the image path (or JSON) on stdout and any failure on stderr; return the exit code.

    With `collect`, the JSON summary is appended there instead (a command printing a list)."""
    from imagen.app.outcome import exit_code, failure_message, summary

    code = exit_code(state)
    if json_output and collect is not None:
        collect.append(summary(state))
    elif json_output:
        print(json.dumps(summary(state)), file=context.ENV.stdout)
    elif state.images and code == ExitCode.OK:
        for image in state.images:
            print(image.path, file=context.ENV.stdout)
    message = failure_message(state)
    if message and code != ExitCode.OK:
        context.err(f"imagen: error: {message}")
    return code


def sync_usage_best_effort(store: Any, cfg: Any) -> None:
    """After a job: send usage with a short timeout; a failure is one warning, never a failed image."""
    if not cfg.usage.supabase_url:
        return
    from imagen.app.remote import SyncError
    from imagen.app.usage_sync import AnchorRefused, sync

    try:
        sync(store, cfg, context.ENV, timeout_s=3.0)
    except AnchorRefused as exc:
        context.err(f"imagen: warning: {exc}")
    except SyncError as exc:
        context.warn(f"usage not synced ({exc}); it stays queued for `imagen usage sync`")
