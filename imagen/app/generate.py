"""`generate` as a library call: one prompt, one job, driven to its end.

The CLI (imagen/cli/generate.py) parses and renders; the agent server calls the same functions
with a Session it builds. A batch (several prompts, --count, --from) is imagen/app/batch.py's
`run_batch`."""

from __future__ import annotations

from collections.abc import Callable

from imagen.app.errors import UserError
from imagen.app.exit_codes import ExitCode
from imagen.app.session import Session
from imagen.core.inputs import GenerateInputs
from imagen.core.job import JobState


def inputs(
    prompt: str,
    *,
    seed: int | None = None,
    size: str | None = None,
    aspect: str | None = None,
    steps: int | None = None,
    output_format: str | None = None,
    options: list[str] | None = None,
    per_job: int = 1,
) -> GenerateInputs:
    """One job's inputs from the words a person gives (a bad one is a UserError, exit 2); the
    seed is chosen now when not given, before anything is recorded."""
    from imagen.app.prepare import new_seed
    from imagen.core.inputs import BadInput, check_prompt, parse_options, parse_size

    try:
        made = GenerateInputs(
            prompt=check_prompt(prompt),
            seed=new_seed() if seed is None else seed,
            size=parse_size(size) if size else None,
            aspect=aspect,
            steps=steps,
            output_format=output_format,
            extra=parse_options(options or []),
            count=per_job,
        )
        if size and aspect:
            raise BadInput("give --size or --aspect, not both")
    except BadInput as exc:
        raise UserError(str(exc), ExitCode.BAD_INPUT) from None
    return made


def generate(
    session: Session,
    job_inputs: GenerateInputs,
    *,
    backend: str | None = None,
    output: str | None = None,
    overwrite: bool = False,
    overflow: str | None = None,
    shown: Callable[[JobState], object] | None = None,
) -> JobState:
    """Prepare, record and drive one job; its end state (succeeded or not: see
    app/outcome.py for its exit code and message). `shown(state)` is called as soon as the
    job has ended, before usage is synced (best effort, which may wait on the network)."""
    from imagen.app.drive import drive, sync_usage_best_effort
    from imagen.app.liveness import mention_interrupted
    from imagen.app.prepare import prepare_for, reserve_output
    from imagen.projections.jobs import table as jobs_index

    prepared = prepare_for(
        session, job_inputs, backend=backend, output=output, overwrite=overwrite, overflow=overflow
    )
    for note in prepared.notes:
        session.err(f"imagen: note: {note}")
    store = session.store()
    jobs_index.catch_up(store)
    mention_interrupted(session, store)
    reserve_output(prepared.request)
    state = drive(session, store, prepared.job_id, request=prepared.request)
    if shown is not None:
        shown(state)
    sync_usage_best_effort(session, store)
    return state
