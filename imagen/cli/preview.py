"""`imagen preview ID`: open a job's image in a sibling tmux window."""

from __future__ import annotations

from pathlib import Path

from imagen.app.errors import UserError
from imagen.app.exit_codes import ExitCode
from imagen.cli import context


def preview(job_id: str, /) -> int:
    """Open the job's image in a new tmux window with output.preview_command.

    Parameters
    ----------
    job_id
        The job id or any unique prefix of it.
    """
    from imagen.app import preview as pv
    from imagen.app.outcome import resolve_job_id
    from imagen.runner.load import load

    store = context.reader()
    state = load(store, resolve_job_id(store, job_id))
    if state.image is None:
        raise UserError(f"job {state.job_id} has no image ({state.status})", ExitCode.NOT_FOUND)
    try:
        pv.spawn(
            Path(state.image.path), context.config().output.preview_command, env=context.ENV.env
        )
    except pv.PreviewError as exc:
        # The image is on disk either way: a preview problem is a warning, not a failure.
        context.err(f"imagen: warning: preview: {exc}")
    return 0
