"""`imagen generate PROMPT`."""

from __future__ import annotations

import json
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
    from imagen.caller import resolve_caller
    from imagen.cli.jobs import mention_interrupted
    from imagen.cli.progress import RichReporter
    from imagen.errors import UserError
    from imagen.exit_codes import ExitCode
    from imagen.outputs import write_sidecar
    from imagen.request import BadInput, GenerateInputs, check_prompt, parse_options, parse_size
    from imagen.runner import Halted, MissingCredential, Runner
    from imagen.service import exit_code, failure_message, new_seed, prepare, summary

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
    from imagen import jobs_index

    jobs_index.catch_up(store)
    mention_interrupted(store)
    reporter = RichReporter(env.stderr)
    runner = Runner(store, env, reporter)
    try:
        state = runner.submit(prepared.job_id, prepared.request)
        state = runner.run(prepared.job_id, state)
    except MissingCredential as exc:
        raise UserError(str(exc), ExitCode.BAD_INPUT) from None
    except Halted as exc:
        raise UserError(f"job {prepared.job_id}: {exc}", ExitCode(exc.exit_code)) from None
    finally:
        reporter.close()
    write_sidecar(state)
    code = exit_code(state)
    if json_output:
        print(json.dumps(summary(state)), file=env.stdout)
    elif state.image and code == ExitCode.OK:
        print(state.image.path, file=env.stdout)
    message = failure_message(state)
    if message and code != ExitCode.OK:
        context.err(f"imagen: error: {message}")
    if code == ExitCode.OK and state.image:
        _after_success(state, cfg, preview)
    sync_usage_best_effort(store, cfg)
    return int(code)


def sync_usage_best_effort(store, cfg) -> None:  # type: ignore[no-untyped-def]
    """After a job: send usage with a short timeout; a failure is one warning, never a failed image."""
    if not cfg.usage.supabase_url:
        return
    from imagen.usage_remote import SyncError, sync

    try:
        sync(store, cfg, context.ENV, timeout_s=3.0)
    except SyncError as exc:
        context.err(
            f"imagen: warning: usage not synced ({exc}); it stays queued for `imagen usage sync`"
        )


def _after_success(state, cfg, flag: bool | None) -> None:  # type: ignore[no-untyped-def]
    try:
        from imagen import preview as pv
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
