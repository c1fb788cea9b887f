"""A driven job's outcome on the terminal: the image path (or JSON) on stdout, a failure on
stderr, and the exit code. Shared by generate, resume and demo."""

from __future__ import annotations

from typing import Any

from imagen.app.exit_codes import ExitCode
from imagen.cli import context, render
from imagen.core.job import JobState


def report(
    state: JobState, *, json_output: bool, collect: list[dict[str, Any]] | None = None
) -> ExitCode:
    """Print the image path (or the job object, app/contract.py) on stdout and any failure on
    stderr; return the exit code. With `collect`, the job object is appended there instead (a
    command printing a list)."""
    from imagen.app.contract import job_object
    from imagen.app.outcome import exit_code, failure_message

    env = context.session().env
    code = exit_code(state, env)
    if json_output:
        shown = job_object(state, env=env)
        if collect is not None:
            collect.append(dict(shown))
        else:
            render.print_json(shown, env.stdout)
    elif state.images and code == ExitCode.OK:
        for image in state.images:
            print(image.path, file=env.stdout)
    message = failure_message(state)
    if message and code != ExitCode.OK:
        context.err(f"imagen: error: {message}")
    return code
