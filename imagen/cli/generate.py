"""`imagen generate PROMPT`."""

from __future__ import annotations

from typing import Annotated

from cyclopts import Parameter

from imagen.cli import context


def generate(
    prompt: str,
    /,
    *,
    backend: Annotated[str | None, Parameter(name=["--backend", "-b"])] = None,
    size: str | None = None,
    aspect: str | None = None,
    seed: int | None = None,
    steps: int | None = None,
    option: Annotated[list[str] | None, Parameter(name=["--option", "-o"])] = None,
    output: str | None = None,
    format: Annotated[str | None, Parameter(name="--format")] = None,
    force: bool = False,
    json_output: Annotated[bool, Parameter(name="--json")] = False,
    preview: Annotated[bool | None, Parameter(name="--preview", negative="--no-preview")] = None,
) -> int:
    """Generate an image from a prompt; print its path (or JSON with --json).

    Parameters
    ----------
    prompt
        What to draw.
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
    option
        Extra model input as key=value (repeatable), e.g. -o guidance=3.5.
    output
        Image path; default: the output directory, date-slug-seed.ext.
    format
        png (default), webp or jpg (Replicate).
    force
        Overwrite an existing output file.
    json_output
        Print one JSON object instead of the path.
    preview
        Open (or not) a tmux preview window; default from config/IMAGEN_PREVIEW.
    """
    from imagen.app.caller import resolve_caller
    from imagen.app.errors import UserError
    from imagen.app.exit_codes import ExitCode
    from imagen.app.prepare import new_seed, prepare
    from imagen.cli.drive import drive, report, sync_usage_best_effort
    from imagen.cli.jobs import mention_interrupted
    from imagen.core.inputs import BadInput, GenerateInputs, check_prompt, parse_options, parse_size

    env = context.ENV
    try:
        inputs = GenerateInputs(
            prompt=check_prompt(prompt),
            seed=new_seed() if seed is None else seed,
            size=parse_size(size) if size else None,
            aspect=aspect,
            steps=steps,
            output_format=format,
            extra=parse_options(option or []),
        )
        if size and aspect:
            raise BadInput("give --size or --aspect, not both")
    except BadInput as exc:
        raise UserError(str(exc), ExitCode.BAD_INPUT) from None
    cfg = context.config()
    prepared = prepare(
        cfg,
        backend,
        inputs,
        output=output,
        overwrite=force,
        env=env,
        caller=resolve_caller(env.env),
    )
    store = context.store()
    from imagen.projections.jobs import table as jobs_index

    jobs_index.catch_up(store)
    mention_interrupted(store)
    state = drive(store, prepared.job_id, request=prepared.request)
    code = report(state, json_output=json_output)
    if code == ExitCode.OK and state.image:
        _after_success(state, cfg, preview)
    sync_usage_best_effort(store, cfg)
    return int(code)


def _after_success(state, cfg, flag: bool | None) -> None:  # type: ignore[no-untyped-def]
    try:
        from imagen.app import preview as pv
    except ImportError:
        return
    try:
        mode = pv.resolve_mode(cfg.output.preview, context.ENV.env, flag)
    except pv.PreviewError as exc:
        context.err(f"imagen: warning: {exc}")
        return
    pv.preview(
        state.image.path,
        mode,
        command=cfg.output.preview_command,
        env=context.ENV.env,
        stdout_isatty=context.ENV.stdout_isatty,
        warn=lambda line: context.err(f"imagen: warning: {line}"),
    )
