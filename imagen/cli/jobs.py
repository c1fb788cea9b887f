"""`imagen jobs`, `imagen show`, `imagen resume`."""

from __future__ import annotations

import json
from typing import Annotated

from imagen.app.errors import UserError
from imagen.app.exit_codes import ExitCode
from imagen.app.liveness import row_owner_alive
from imagen.cli import context, render
from imagen.cli.params import Parameter
from imagen.cli.safe import printable

STATUSES = ("running", "interrupted", "succeeded", "failed", "cancelled")


def jobs(
    *,
    since: str | None = None,
    status: str | None = None,
    backend: str | None = None,
    caller: str | None = None,
    batch: str | None = None,
    limit: int | None = None,
    json_output: Annotated[bool, Parameter(name="--json")] = False,
) -> None:
    """List jobs from the ledger.

    Newest first: id, time, status, backend, model, cost, prompt. In a terminal the id is
    shortened (any unique prefix works with show and resume); piped, every value is complete.

    Examples of use:
      imagen jobs
      imagen jobs --status interrupted --since 24h
      imagen jobs --json | jq -r '.[] | select(.status == "succeeded") | .image_path'
      imagen jobs | cut -f1,3          # piped: tab-separated, with a header row
      imagen jobs --batch 5d1e         # one batch's jobs, in batch order

    Parameters
    ----------
    since
        Only jobs since this age (30m, 24h, 7d, 2w), local date (2026-11-01: from local
        midnight) or time (2026-11-01T12:00 local, or with Z or an offset).
    status
        running, interrupted, succeeded, failed or cancelled.
    backend
        Only this backend instance.
    caller
        Only this caller.
    batch
        Only this batch's jobs (its id or a unique prefix), in batch order.
    limit
        At most this many rows (default 20; every job of a --batch).
    json_output
        Print a JSON array of jobs (keys as in the header row, plus image_path and error).
    """
    from imagen.core.times import parse_since
    from imagen.projections.jobs import query as jobs_query

    if status and status not in STATUSES:
        raise UserError(f"--status {status!r}: use one of {', '.join(STATUSES)}")
    try:
        reader = context.jobs_reader()
    except context.NoLedgerYet as exc:
        context.note(str(exc))  # an empty list (header row, or []) is the honest answer
        reader = None
    batch_id = None
    if batch is not None and reader is not None:
        batch_id = resolve_batch_id(reader, batch)
    elif batch is not None:
        raise UserError(f"no batch matches {batch!r}", ExitCode.NOT_FOUND)
    if limit is None:
        limit = None if batch_id else 20
    rows = (
        []
        if reader is None
        else list(
            jobs_query.query(
                reader,
                row_owner_alive(context.ENV),
                since=parse_since(since, context.ENV.clock(), context.ENV.tz) if since else None,
                status=status,
                backend=backend,
                caller=caller,
                batch=batch_id,
                limit=limit,
            )
        )
    )
    if reader is not None and not json_output and status != "interrupted":
        mention_interrupted(reader)
    data = [{k: r[k] for k in JOB_FIELDS} for r in rows]
    if json_output:
        render.print_json(data)
    else:
        render.table(data, JOB_COLUMNS)


JOB_FIELDS = (
    "job_id",
    "created_at",
    "status",
    "backend",
    "model",
    "caller",
    "cost_usd",
    "images",
    "prompt",
    "image_path",
    "error",
    "batch",
)
JOB_COLUMNS = [
    render.Column("job_id", tty=lambda v: v[:8]),
    render.Column("created_at", tty=lambda v: _local(v)),
    render.Column("status"),
    render.Column("backend"),
    render.Column("model"),
    render.Column("cost_usd", tty=lambda v: _dollars(v), align=">"),
    render.Column("prompt", shrink=True),
]


def _local_moment(moment):  # type: ignore[no-untyped-def]
    from imagen.core.times import human

    return human(moment, context.ENV.tz, zone=True)


def _local(value: str) -> str:
    """A stored time as people here read it: local, with the zone's name."""
    from imagen.core.times import human

    try:
        return human(value, context.ENV.tz, zone=True)
    except ValueError:  # not a time (a hand-edited row): shown as stored
        return value


def _dollars(amount: str | None) -> str:
    """$0.003 for people (three places unless more are needed); the exact text is in --json."""
    from imagen.core.money import to_decimal

    d = to_decimal(amount)
    if d is None:
        return "-"
    shown = f"{d:.3f}"
    return f"${shown if to_decimal(shown) == d else d.normalize()}"


def resolve_batch_id(reader, prefix: str) -> str:  # type: ignore[no-untyped-def]
    from imagen.projections.jobs import query as jobs_query

    found = jobs_query.batches_with_prefix(reader, prefix)
    if not found:
        raise UserError(f"no batch matches {prefix!r} (see `imagen jobs`)", ExitCode.NOT_FOUND)
    if len(found) > 1 and prefix not in found:
        raise UserError(f"{prefix!r} matches several batches; give more characters")
    return prefix if prefix in found else found[0]


def mention_interrupted(reader) -> None:  # type: ignore[no-untyped-def]
    from imagen.projections.jobs import query as jobs_query

    n = jobs_query.count_interrupted(reader, row_owner_alive(context.ENV))
    if n:
        context.note(f"{n} interrupted job(s); finish them with `imagen resume --all`")


def show(job_id: str, /, *, json_output: Annotated[bool, Parameter(name="--json")] = False) -> None:
    """Show one job's whole timeline.

    Every recorded event, with its time from the job's start: requests, responses, polls,
    retries, progress, result. Read offline from the ledger.

    Examples of use:
      imagen show 3f2a
      imagen show 3f2a --json | jq '.events[] | .text'

    Parameters
    ----------
    job_id
        The job id or any unique prefix of it.
    json_output
        Print one JSON object {job_id, status, events}.
    """
    from imagen.app.outcome import resolve_job_id
    from imagen.projections.timeline import timeline
    from imagen.repository import load

    reader = context.reader()
    state = load(reader, resolve_job_id(reader, job_id))
    rows = timeline(state)
    if json_output:
        print(json.dumps({"job_id": state.job_id, "status": _status(state), "events": rows}))
        return
    req = state.request
    print(printable(f"job {state.job_id}  {_status(state)}"))
    if state.started_at is not None:
        print(f"started {_local_moment(state.started_at)}")
    if req:
        print(f"prompt: {printable(req.prompt)}")
    for r in rows:
        print(f"  +{r['t']:8.3f}s  {printable(r['text'])}")


def _status(state) -> str:  # type: ignore[no-untyped-def]
    from imagen.app.liveness import job_owner_alive as owner_alive

    if state.status == "running" and not owner_alive(state, context.ENV):
        return "interrupted"
    return state.status


def resume(
    job_id: str | None = None,
    /,
    *,
    all_: Annotated[bool, Parameter(name="--all")] = False,
    force_new: bool = False,
    json_output: Annotated[bool, Parameter(name="--json")] = False,
) -> int:
    """Finish interrupted jobs without paying twice.

    Continues each job from its last recorded event with the same runner; a job driven by a
    live process is refused (exit 5). A batch id resumes every unfinished job of that batch.

    Examples of use:
      imagen resume 3f2a
      imagen resume --all
      imagen resume 5d1e2f3a           # a batch: each of its unfinished jobs
      imagen resume 3f2a --force-new   # only when imagen cannot tell if Replicate got the request

    Parameters
    ----------
    job_id
        The job id or a unique prefix, or a batch id (or prefix).
    all_
        Resume every interrupted job.
    force_new
        When imagen cannot tell whether an earlier request created a remote job, create a new one.
    json_output
        Print a JSON array with one object per job resumed.
    """
    from imagen.app.exit_codes import most_severe
    from imagen.app.outcome import resolve_job_id
    from imagen.cli.drive import sync_usage_best_effort
    from imagen.projections.jobs import query as jobs_query
    from imagen.projections.jobs import table as jobs_index

    if bool(job_id) == all_:
        raise UserError("give a job id or --all")
    store = context.store()
    batch = None
    if job_id and not all_:
        jobs_index.catch_up(store)
        batch = _batch_named(store, job_id)
    if all_ or batch:
        jobs_index.catch_up(store)
        rows = list(
            jobs_query.query(
                store, row_owner_alive(context.ENV), status="interrupted", batch=batch, limit=None
            )
        )
        # A crash right after the success was recorded leaves the job without its sidecar:
        # completing what a success implies is resuming too.
        from imagen.app.sidecars import sidecar_path

        rows += [
            r
            for r in jobs_query.query(
                store, row_owner_alive(context.ENV), status="succeeded", batch=batch, limit=None
            )
            if r["image_path"] and not sidecar_path(r["image_path"]).exists()
        ]
        ids = [r["job_id"] for r in rows]
        all_ = True  # each job on its own, as --all
        if len(rows) > 1 and not force_new:
            # Several at once, as a batch runs (each job still resumed on its own).
            from imagen.cli.batch import resume_many

            code = resume_many(
                store,
                rows,
                json_output=json_output,
                label=f"batch {batch}" if batch else "resume",
                hint=f"imagen resume {batch}" if batch else "imagen resume --all",
            )
            sync_usage_best_effort(store, context.config())
            return code
    else:
        ids = [resolve_job_id(store, job_id or "")]
    worst = ExitCode.OK
    collected: list[dict] = []
    for jid in ids:
        try:
            code = _resume_one(
                store, jid, force_new=force_new, json_output=json_output, collect=collected
            )
        except UserError as exc:
            if not all_:
                raise
            # Each job on its own: one that halts or cannot run does not stop the rest.
            message = str(exc) if str(exc).startswith(f"job {jid}") else f"job {jid}: {exc}"
            context.err(f"imagen: error: {message}")
            code = exc.code
        except Exception as exc:
            if not all_ or context.ledger_failure(exc) is not None:
                raise  # the ledger itself failed: no other job can be recorded either
            context.err(
                f"imagen: error: job {jid} could not be resumed ({type(exc).__name__}: "
                f"{str(exc)[:200]}); it stays interrupted"
            )
            code = ExitCode.JOB_FAILED
        worst = most_severe(worst, code)
    if json_output:
        render.print_json(collected)
    if all_ and not ids:
        context.note(f"batch {batch}: no unfinished jobs" if batch else "no interrupted jobs")
    if ids:
        sync_usage_best_effort(store, context.config())
    return int(worst)


def _batch_named(store, name: str) -> str | None:  # type: ignore[no-untyped-def]
    """The batch `name` names (an id or a unique prefix), when it names no job; else None."""
    from imagen.projections.jobs import query as jobs_query

    batches = jobs_query.batches_with_prefix(store, name)
    if not batches:
        return None
    if name in batches:
        return name
    jobs = [] if set(name) - set("0123456789abcdef") else store.streams_with_prefix(name, limit=1)
    if jobs or len(batches) > 1:
        raise UserError(f"{name!r} matches several jobs or batches; give more characters")
    return batches[0]


def _check_backend_usable(state, jid: str) -> None:  # type: ignore[no-untyped-def]
    from imagen import backends

    req = state.request
    if req is None:
        return
    try:
        module = backends.load(req.backend_type)
    except ValueError:
        return  # the runner reports an unknown type on its own
    status = module.status(req.backend_config, context.ENV.env)
    if status != "ok":
        raise UserError(f"job {jid}: backend {req.backend} is {status}", ExitCode.BAD_INPUT)


def _resume_one(  # type: ignore[no-untyped-def]
    store, jid: str, *, force_new: bool, json_output: bool, collect: list[dict]
) -> ExitCode:
    from imagen.app.liveness import job_owner_alive as owner_alive
    from imagen.app.sidecars import write_sidecar
    from imagen.cli.drive import drive, report
    from imagen.core.events import ForceNewRequested
    from imagen.repository import load

    state = load(store, jid)
    if state.finished:
        from imagen.app.sidecars import sidecar_problem

        missing = sidecar_problem(state)
        written = write_sidecar(state, context.config().output.sidecar_mode)
        if missing is not None and written is not None:
            context.note(f"job {jid} already {state.status}; wrote its sidecar {written}")
        else:
            context.note(f"job {jid} already {state.status}")
        code = report(state, json_output=json_output, collect=collect)
    elif owner_alive(state, context.ENV):
        claim = state.claim
        assert claim is not None
        context.err(
            f"imagen: error: job {jid} is being driven by pid {claim.pid} on {claim.host}; "
            "not resuming it twice"
        )
        code = ExitCode.CONFLICT
    else:
        _check_backend_usable(state, jid)  # before the claim is appended: exit 2 records nothing
        extra = [ForceNewRequested("--force-new")] if force_new else []
        state = drive(store, jid, state=state, resumed=True, extra=extra)
        code = report(state, json_output=json_output, collect=collect)
    return code


def cancel(
    job_id: str, /, *, json_output: Annotated[bool, Parameter(name="--json")] = False
) -> int:
    """End an unfinished job: cancel remote work, record the end.

    Cancels the job's remote work if there is any (recorded, as Ctrl-C would), then records the
    end, so an interrupted job that can never finish stops being reported. Works when the
    backend is gone from the config or its adapter fails. A job driven by a live process is
    refused (exit 5); a finished job is left as it is.

    Examples of use:
      imagen cancel 3f2a
      imagen cancel 3f2a --json

    Parameters
    ----------
    job_id
        The job id or a unique prefix.
    json_output
        Print one JSON object.
    """
    from imagen.app.cancel import cancel as cancel_job
    from imagen.app.outcome import resolve_job_id
    from imagen.app.runners import new_runner
    from imagen.cli.progress import RichReporter
    from imagen.core.events import JobCancelled

    store = context.store()
    jid = resolve_job_id(store, job_id)
    reporter = RichReporter(context.ENV.stderr)
    try:
        state, message = cancel_job(
            store, jid, context.ENV, new_runner(store, context.ENV, reporter)
        )
    finally:
        reporter.close()
    if json_output:
        t = state.terminal
        print(
            json.dumps(
                {
                    "job_id": jid,
                    "status": state.status,
                    "remote_cancelled": isinstance(t, JobCancelled) and t.remote_cancelled,
                    "message": message,
                }
            )
        )
    else:
        context.err(f"imagen: {message}")
    return 0
