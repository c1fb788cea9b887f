"""`imagen open ID` and `imagen preview ID`: look at a job's image."""

from __future__ import annotations

from pathlib import Path

from imagen.app.errors import UserError
from imagen.app.exit_codes import ExitCode
from imagen.cli import context


def _image_of(job_id: str) -> Path:
    from imagen.app.outcome import resolve_job_id
    from imagen.repository import load

    store = context.session().reader()
    state = load(store, resolve_job_id(store, job_id))
    if state.image is None:
        raise UserError(
            f"job {state.job_id} has no image ({state.status})",
            ExitCode.NO_IMAGE,
            job_id=state.job_id,
        )
    return Path(state.image.path)


def open_(job_id: str, /, *, desktop: bool = False) -> int:
    """Open a job's image: tmux window or desktop viewer.

    Inside tmux, the session's preview window (one, reused) shows it with a terminal image
    viewer (output.preview_command, else the first installed of tmux-img, chafa, timg, viu,
    catimg).
    Elsewhere, or with --desktop, the desktop's opener shows it (xdg-open; open on macOS).

    Examples of use:
      imagen open 3f2a
      imagen open "$(imagen jobs --json | jq -r '.[0].job_id')" --desktop

    Parameters
    ----------
    job_id
        The job id or any unique prefix of it.
    desktop
        Use the desktop's opener even inside tmux.
    """
    from imagen.app import preview as pv

    image = _image_of(job_id)
    env = context.session().env.env
    try:
        if env.get("TMUX") and not desktop:
            pv.spawn(image, context.session().config().output.preview_command, env=env)
            context.note(f"opened {image} in the tmux preview window")
        else:
            opener = pv.open_on_desktop(image, env=env)
            context.note(f"opened {image} with {opener}")
    except pv.PreviewError as exc:
        other = (
            "; without --desktop it shows in a tmux window"
            if isinstance(exc, pv.NoDesktop) and env.get("TMUX")
            else ""
        )
        raise UserError(f"cannot open {image}: {exc}{other}") from None
    return 0


def preview(job_id: str, /) -> int:
    """Open a job's image in a tmux window.

    The same window `imagen generate` opens when preview is on (output.preview_command, else
    the first installed terminal image viewer). A failure is a warning: the image is on disk.

    Examples of use:
      imagen preview 3f2a

    Parameters
    ----------
    job_id
        The job id or any unique prefix of it.
    """
    from imagen.app import preview as pv

    image = _image_of(job_id)
    try:
        pv.spawn(
            image, context.session().config().output.preview_command, env=context.session().env.env
        )
    except pv.PreviewError as exc:
        # The image is on disk either way: a preview problem is a warning, not a failure.
        context.warn(f"preview: {exc}")
    return 0
