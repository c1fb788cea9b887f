"""`imagen generate PROMPT`."""

from __future__ import annotations

import re
import shlex
import sys
from typing import Annotated

from cyclopts import Parameter

from imagen.cli import context


def generate(
    # allow_leading_hyphen: so that `-` (read stdin) reaches us; option-like words are refused below
    prompt: Annotated[str, Parameter(allow_leading_hyphen=True)],
    /,
    *,
    backend: Annotated[str | None, Parameter(name=["--backend", "-b"])] = None,
    size: str | None = None,
    aspect: str | None = None,
    seed: int | None = None,
    steps: int | None = None,
    count: int = 1,
    option: Annotated[list[str] | None, Parameter(name=["--option", "-o"])] = None,
    output: str | None = None,
    format: Annotated[str | None, Parameter(name="--format")] = None,
    force: bool = False,
    json_output: Annotated[bool, Parameter(name="--json")] = False,
    preview: Annotated[bool | None, Parameter(name="--preview", negative="--no-preview")] = None,
) -> int:
    """Generate an image from a prompt.

    Prints the image path on stdout (or one JSON object with --json); progress goes to stderr.
    A sidecar <image>.json beside the image records how it was made.

    Examples of use:
      imagen generate "a lighthouse at dusk, oil painting" --aspect 16:9
      imagen generate "a red fox" -b flux-dev-replicate --seed 42 -o guidance=3.5
      echo "a prompt from a file or another program" | imagen generate -
      imagen generate "a cat" --json | jq -r .image

    Parameters
    ----------
    prompt
        What to draw; `-` reads it from standard input.
    backend
        Backend instance name (see `imagen backends`); default from config.
    size
        WIDTHxHEIGHT; Replicate maps it to the nearest aspect ratio.
    aspect
        Aspect ratio such as 16:9 (instead of --size).
    seed
        Seed; chosen at random and recorded when not given.
    steps
        Inference steps; default from the backend.
    count
        How many images (Replicate num_outputs 1-4, ComfyUI batch_size); each gets its own
        file and sidecar: NAME.png, NAME-2.png, ...
    option
        Extra model input as key=value (repeatable), e.g. -o guidance=3.5.
    output
        Image path (its .png/.jpg/.webp extension sets the format), or a directory (an existing
        one, or ending in /) to put the default name in; default: the output directory,
        date-slug-seed.ext.
    format
        png (default), webp or jpg (Replicate); an --output extension sets it too.
    force
        Overwrite an existing output file.
    json_output
        Print one JSON object instead of the path.
    preview
        Open (or not) a preview window in tmux; default from config/IMAGEN_PREVIEW.
    """
    from imagen.app.caller import resolve_caller
    from imagen.app.errors import UserError
    from imagen.app.exit_codes import ExitCode
    from imagen.app.prepare import new_seed, prepare
    from imagen.cli.drive import drive, report, sync_usage_best_effort
    from imagen.cli.jobs import mention_interrupted
    from imagen.core.inputs import BadInput, GenerateInputs, check_prompt, parse_options, parse_size

    env = context.ENV
    cfg = context.config()
    # Before anything is recorded or paid: a bad IMAGEN_PREVIEW is a bad input, not a warning
    # after the image was bought.
    preview_mode = _preview_mode(cfg, preview)
    if prompt == "-":
        prompt = _read_stdin_prompt()
    elif re.fullmatch(r"--?[A-Za-z][\w-]*(=.*)?", prompt):
        raise UserError(
            f"unknown option: {prompt} (see `imagen generate --help`); to draw that text, "
            f"pipe it: echo {shlex.quote(prompt)} | imagen generate -"
        )
    try:
        inputs = GenerateInputs(
            prompt=check_prompt(prompt),
            seed=new_seed() if seed is None else seed,
            size=parse_size(size) if size else None,
            aspect=aspect,
            steps=steps,
            output_format=format,
            extra=parse_options(option or []),
            count=count,
        )
        if size and aspect:
            raise BadInput("give --size or --aspect, not both")
    except BadInput as exc:
        raise UserError(str(exc), ExitCode.BAD_INPUT) from None
    prepared = prepare(
        cfg,
        backend,
        inputs,
        output=output,
        overwrite=force,
        env=env,
        caller=resolve_caller(env.env),
    )
    for note in prepared.notes:
        context.err(f"imagen: note: {note}")
    store = context.store()
    from imagen.projections.jobs import table as jobs_index

    jobs_index.catch_up(store)
    mention_interrupted(store)
    from imagen.app.prepare import reserve_output

    reserve_output(prepared.request)
    state = drive(store, prepared.job_id, request=prepared.request)
    code = report(state, json_output=json_output)
    if code == ExitCode.OK and state.image and preview_mode is not None:
        _after_success(state, cfg, preview_mode)
    sync_usage_best_effort(store, cfg)
    return int(code)


def _read_stdin_prompt() -> str:
    from imagen.app.errors import UserError

    if context.ENV.env.get("IMAGEN_TESTING") != "1" and sys.stdin.isatty():
        context.note("reading the prompt from standard input (end with Ctrl-D)")
    try:
        text = sys.stdin.read()
    except UnicodeDecodeError:
        raise UserError("the prompt on standard input is not valid UTF-8") from None
    return text.strip()


def _preview_mode(cfg, flag: bool | None):  # type: ignore[no-untyped-def]
    """The preview mode, checked now; None when previews cannot work on this machine at all."""
    try:
        from imagen.app import preview as pv
    except ImportError:
        return None
    from imagen.app.errors import UserError

    try:
        return pv.resolve_mode(cfg.output.preview, context.ENV.env, flag)
    except pv.PreviewError as exc:
        raise UserError(str(exc)) from None


def _after_success(state, cfg, mode) -> None:  # type: ignore[no-untyped-def]
    from imagen.app import preview as pv

    pv.preview(
        state.image.path,
        mode,
        command=cfg.output.preview_command,
        env=context.ENV.env,
        stdout_isatty=context.ENV.stdout_isatty,
        warn=context.warn,
    )
