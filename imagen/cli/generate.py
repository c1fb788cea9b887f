"""`imagen generate PROMPT`."""

from __future__ import annotations

import re
import shlex
import sys
from typing import TYPE_CHECKING, Annotated

from imagen.app.contract import GeneratedJob
from imagen.cli import context, render
from imagen.cli.params import Parameter

if TYPE_CHECKING:
    from imagen.core.job import JobState


@render.outputs(GeneratedJob)
def generate(
    # allow_leading_hyphen: so that `-` (read stdin) reaches us; option-like words are refused below
    # (only the first: global options such as -v after the prompts stay global options)
    prompt: Annotated[str | None, Parameter(allow_leading_hyphen=True)] = None,
    /,
    *more: str,
    backend: Annotated[str | None, Parameter(name=["--backend", "-b"])] = None,
    size: str | None = None,
    aspect: str | None = None,
    seed: int | None = None,
    steps: int | None = None,
    count: Annotated[int, Parameter(name=["--count", "-n"])] = 1,
    per_job: int = 1,
    from_: Annotated[str | None, Parameter(name="--from", allow_leading_hyphen=True)] = None,
    concurrency: int | None = None,
    option: Annotated[list[str] | None, Parameter(name=["--option", "-o"])] = None,
    output: str | None = None,
    format: Annotated[str | None, Parameter(name="--format")] = None,
    force: bool = False,
    json_output: Annotated[bool, Parameter(name="--json")] = False,
    preview: Annotated[bool | None, Parameter(name="--preview", negative="--no-preview")] = None,
    detach: bool = False,
    dry_run: bool = False,
    overflow: str | None = None,
) -> int:
    """Generate an image from a prompt, or many at once.

    Prints the image path on stdout (or one JSON object with --json); progress goes to stderr.
    A sidecar <image>.json beside the image records how it was made. Several prompts, --count
    or --from make a batch: one job per image, a few at a time, one line per image on stdout as
    it lands (--json: one object per job with its input's index), a summary on stderr.

    Examples of use:
      imagen generate "a lighthouse at dusk, oil painting" --aspect 16:9
      imagen generate "a red fox" -b flux-dev-replicate --seed 42 -o guidance=3.5
      echo "a prompt from a file or another program" | imagen generate -
      imagen generate "a cat" --json | jq -r .image
      imagen generate "a fox" "an owl" -n 4 --output ~/owls-and-foxes/
      imagen generate --from prompts.txt --concurrency 4
      imagen generate --from prompts.jsonl --json   # {"prompt": "...", "seed": 7, "aspect": "16:9"}
      imagen generate "a red fox" --dry-run --json   # the price and the request; nothing sent

    Parameters
    ----------
    prompt
        What to draw; `-` reads it from standard input.
    more
        More prompts: several make a batch.
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
        Images per prompt, each its own job with its own seed (--seed S: S, S+1, ...).
    per_job
        Images made by each job in one prediction or prompt (Replicate num_outputs 1-4,
        ComfyUI batch_size); each gets its own file and sidecar: NAME.png, NAME-2.png, ...
    from_
        A file of prompts, one per line, or JSON Lines whose objects may set prompt, seed,
        count, size, aspect, steps, backend, format and options for their line; `-` reads
        standard input. Every line is checked before anything is recorded.
    concurrency
        Jobs in flight at once per backend (default: the backend's max_concurrency, else 12 on
        Replicate and 2 on ComfyUI).
    option
        Extra model input as key=value (repeatable), e.g. -o guidance=3.5.
    output
        Image path (its .png/.jpg/.webp extension sets the format), or a directory (an existing
        one, or ending in /) to put the default name in; default: the output directory,
        date-slug-seed.ext. A batch takes a directory.
    format
        png (default), webp or jpg (Replicate); an --output extension sets it too.
    force
        Overwrite an existing output file.
    json_output
        Print one JSON object instead of the path.
    preview
        Open (or not) a preview window in tmux; default from config/IMAGEN_PREVIEW.
    detach
        Record the job(s), hand them to a background worker and print their ids at once
        (--json: the job objects as they stand); `imagen wait ID…` waits for them.
    dry_run
        Check everything (config, backend, inputs, output, budget), then print the request that
        would be sent (credentials redacted), what it would cost and whether the caller's
        budget admits it; record and send nothing. One prompt (--per-job for more images).
    overflow
        A Replicate backend (see `imagen backends`) a ComfyUI pool's job goes to, paid and
        under your budget, when no member answers or its queue is too long (the pool's
        overflow_after_s); instead of the pool's own `overflow`.
    """
    from imagen.app import generate as use_case
    from imagen.app.errors import UserError
    from imagen.app.exit_codes import ExitCode
    from imagen.cli.report import report

    prompts = ([] if prompt is None else [prompt]) + list(more)
    for word in prompts:
        if word != "-" and re.fullmatch(r"--?[A-Za-z][\w-]*(=.*)?", word):
            raise UserError(
                f"unknown option: {word} (see `imagen generate --help`); to draw that text, "
                f"pipe it: echo {shlex.quote(word)} | imagen generate -"
            )
    if from_ is not None and prompts:
        raise UserError("give prompts or --from, not both")
    if from_ is None and not prompts:
        raise UserError(
            'no prompt: pass the text to draw, e.g. imagen generate "a red fox" (or --from FILE)'
        )
    # Checked for one image too: a bad value is a bad input whether or not it is used.
    if concurrency is not None and not 1 <= concurrency <= 64:
        raise UserError(f"--concurrency {concurrency}: use 1 to 64")
    if dry_run and detach:
        raise UserError("--dry-run records nothing and --detach records for later: give one")
    if dry_run and (from_ is not None or len(prompts) > 1 or count != 1):
        raise UserError(
            "--dry-run prices one job: give one prompt, without --count or --from "
            "(--per-job N for several images in it)"
        )
    if from_ is not None or len(prompts) > 1 or count != 1:
        if "-" in prompts:
            raise UserError("`-` reads one prompt; for many, use --from - (one per line)")
        from imagen.cli.batch import run_batch

        return run_batch(
            prompts=list(prompts),
            from_file=from_,
            backend=backend,
            size=size,
            aspect=aspect,
            seed=seed,
            steps=steps,
            output_format=format,
            options=option or [],
            count=count,
            per_job=per_job,
            output=output,
            force=force,
            json_output=json_output,
            concurrency=concurrency,
            detach=detach,
            overflow=overflow,
        )
    assert prompt is not None
    session = context.session()
    cfg = session.config()
    if dry_run:
        return _dry_run(
            _read_stdin_prompt() if prompt == "-" else prompt,
            dict(seed=seed, size=size, aspect=aspect, steps=steps, output_format=format),
            option,
            per_job,
            backend=backend,
            output=output,
            force=force,
            json_output=json_output,
            overflow=overflow,
        )
    # Before anything is recorded or paid: a bad IMAGEN_PREVIEW is a bad input, not a warning
    # after the image was bought.
    preview_mode = _preview_mode(cfg, preview)
    if prompt == "-":
        prompt = _read_stdin_prompt()
    job_inputs = use_case.inputs(
        prompt,
        seed=seed,
        size=size,
        aspect=aspect,
        steps=steps,
        output_format=format,
        options=option,
        per_job=per_job,
    )
    if detach:
        from imagen.app.detach import detach_one
        from imagen.cli.worker import detached

        ids = detach_one(
            session, job_inputs, backend=backend, output=output, overwrite=force, overflow=overflow
        )
        return detached(ids, json_output=json_output)
    codes: list[ExitCode] = []

    def shown(state: JobState) -> None:
        # Printed (and previewed) before usage is synced: the sync may wait on the network.
        codes.append(report(state, json_output=json_output))
        if codes[0] == ExitCode.OK and state.image and preview_mode is not None:
            _after_success(state, cfg, preview_mode)
        hint = _unreachable_hint(state, cfg)
        if hint is not None:
            context.note(hint)

    use_case.generate(
        session,
        job_inputs,
        backend=backend,
        output=output,
        overwrite=force,
        shown=shown,
        overflow=overflow,
    )
    return int(codes[0])


def _unreachable_hint(state: JobState, cfg) -> str | None:  # type: ignore[no-untyped-def]
    """After a backend that did not answer (the first run: no local ComfyUI yet): the ways on.
    Not recorded: the other backends are this config's, not the job's."""
    from imagen.core.events import JobFailed
    from imagen.core.failures import Failure

    t = state.terminal
    if not isinstance(t, JobFailed) or t.category is not Failure.UNREACHABLE:
        return None
    assert state.request is not None
    others = [name for name in cfg.backends if name != state.request.backend]
    another = (
        f"use another backend with --backend NAME ({', '.join(others[:3])}; "
        "`imagen backends --check` says which answer)"
        if others
        else "configure another backend (`imagen config show`)"
    )
    return (
        f"hint: {state.request.backend} did not answer: start its server, {another}, "
        "or try imagen on its built-in simulator with `imagen demo`"
    )


def _dry_run(
    prompt: str,
    words: dict,
    option: list[str] | None,
    per_job: int,
    *,
    backend: str | None,
    output: str | None,
    force: bool,
    json_output: bool,
    overflow: str | None,
) -> int:
    """`--dry-run`: the quote (app/quote.py) on stdout; exit 0 whether or not the budget admits
    it (that is in the answer)."""
    import json

    from imagen.app import generate as use_case
    from imagen.app.quote import quote
    from imagen.cli import render
    from imagen.cli.safe import printable

    session = context.session()
    job_inputs = use_case.inputs(prompt, options=option, per_job=per_job, **words)
    q = quote(
        session, job_inputs, backend=backend, output=output, overwrite=force, overflow=overflow
    )
    if json_output:
        render.print_json(q, out=session.env.stdout)
        return 0
    budget = q["budget"]
    lines = [
        "dry run: nothing recorded, nothing sent",
        f"backend  {q['backend']} ({q['backend_type']}, {q['model']})",
        f"caller   {q['caller']}",
        *(f"image    {path}" for path in q["images"]),
        f"cost     {'$' + q['cost_usd'] if q['cost_usd'] else 'no price known'}"
        + (
            f" ({len(q['images'])} x ${q['price_usd']})"
            if q["cost_usd"] and len(q["images"]) > 1
            else ""
        ),
        f"budget   {'admits it' if budget['admitted'] else 'refuses it: ' + budget['message']}",
    ]
    req = q["request"]
    if req is not None:
        lines.append(f"request  {req['method']} {req['url']}")
        lines += [f"  {k}: {v}" for k, v in req["headers"].items()]
        lines.append(json.dumps(req["body"], indent=2, ensure_ascii=False))
    for note in q["notes"]:
        context.note(f"note: {note}")
    for line in lines:
        print("\n".join(printable(part) for part in line.split("\n")), file=session.env.stdout)
    return 0


def _read_stdin_prompt() -> str:
    from imagen.app.errors import UserError

    if context.session().env.env.get("IMAGEN_TESTING") != "1" and sys.stdin.isatty():
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
        return pv.resolve_mode(cfg.output.preview, context.session().env.env, flag)
    except pv.PreviewError as exc:
        raise UserError(str(exc)) from None


def _after_success(state, cfg, mode) -> None:  # type: ignore[no-untyped-def]
    from imagen.app import preview as pv

    pv.preview(
        state.image.path,
        mode,
        command=cfg.output.preview_command,
        env=context.session().env.env,
        stdout_isatty=context.session().env.stdout_isatty,
        warn=context.warn,
    )
