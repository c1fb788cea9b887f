"""`imagen jobs`, `imagen show`, `imagen resume`."""

from __future__ import annotations

from typing import Annotated

from imagen.app.contract import GeneratedJob, JobObject
from imagen.app.errors import UserError
from imagen.app.exit_codes import ExitCode
from imagen.app.liveness import mention_interrupted, row_owner_alive
from imagen.cli import context, render
from imagen.cli.params import Parameter
from imagen.cli.safe import printable
from imagen.projections.timeline import TimelineRow


class ShowObject(JobObject):
    """`show --json`: the job object and every recorded event."""

    events: list[TimelineRow]


class CancelObject(JobObject):
    """`cancel --json`: the job object, whether remote work was cancelled, and what was done."""

    remote_cancelled: bool
    message: str


STATUSES = ("requested", "running", "interrupted", "succeeded", "failed", "cancelled")


@render.outputs(list[JobObject])
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
      imagen jobs --json | jq -r '.[] | select(.status == "succeeded") | .image'
      imagen jobs | cut -f1,3          # piped: tab-separated, with a header row
      imagen jobs --batch 5d1e         # one batch's jobs, in batch order

    Parameters
    ----------
    since
        Only jobs since this age (30m, 24h, 7d, 2w), local date (2026-11-01: from local
        midnight) or time (2026-11-01T12:00 local, or with Z or an offset).
    status
        requested (recorded for a worker, not yet taken), running, interrupted, succeeded,
        failed or cancelled.
    backend
        Only this backend instance.
    caller
        Only this caller.
    batch
        Only this batch's jobs (its id or a unique prefix), in batch order.
    limit
        At most this many rows, 1 or more (default 20; every job of a --batch).
    json_output
        Print a JSON array of job objects (as `generate --json` prints; see `imagen discover`).
    """
    from imagen.core.times import parse_since
    from imagen.projections.jobs import query as jobs_query

    if status and status not in STATUSES:
        raise UserError(f"--status {status!r}: use one of {', '.join(STATUSES)}")
    if limit is not None and limit < 1:
        # Not a number of rows: 0 used to list every job and -1 one row.
        raise UserError(f"--limit {limit}: give 1 or more rows (leave it out for 20)")
    try:
        from imagen.cli.eventbar import catch_up_bar

        reader = context.session().jobs_reader(
            catch_up_bar("catching up the job list", json_output)
        )
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
                row_owner_alive(context.session().env),
                since=parse_since(since, context.session().env.clock(), context.session().env.tz)
                if since
                else None,
                status=status,
                backend=backend,
                caller=caller,
                batch=batch_id,
                limit=limit,
            )
        )
    )
    if reader is not None and not json_output and status != "interrupted":
        mention_interrupted(context.session(), reader)
    if json_output:
        render.print_json(job_objects(rows))
    else:
        render.table([{k: r[k] for k in JOB_FIELDS} for r in rows], JOB_COLUMNS)


def job_objects(rows: list[dict]) -> list[dict]:
    """The listed jobs as the one job object (app/contract.py), each read from the ledger
    (the table holds a summary; the object names every image and the inputs as sent)."""
    from imagen.app.contract import job_object
    from imagen.repository import load

    if not rows:
        return []
    reader = context.session().reader()
    return [dict(job_object(load(reader, r["job_id"]), status=r["status"])) for r in rows]


JOB_FIELDS = (
    "job_id",
    "created_at",
    "status",
    "backend",
    "model",
    "server",
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
    render.Column("backend", drop=1),
    render.Column("model", drop=2),
    render.Column("server", drop=3),
    render.Column("cost_usd", tty=lambda v: _dollars(v), align=">"),
    render.Column("prompt", shrink=True),
]


def _local_moment(moment):  # type: ignore[no-untyped-def]
    from imagen.core.times import human

    return human(moment, context.session().env.tz, zone=True)


def _local(value: str) -> str:
    """A stored time as people here read it: local, with the zone's name."""
    from imagen.core.times import human

    try:
        return human(value, context.session().env.tz, zone=True)
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


@render.outputs(ShowObject)
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
        Print the job object (as `generate --json` prints) with its `events`.
    """
    from imagen.app.outcome import resolve_job_id
    from imagen.projections.cost import cost_usd
    from imagen.projections.timeline import timeline
    from imagen.repository import load

    reader = context.session().reader()
    state = load(reader, resolve_job_id(reader, job_id))
    rows = timeline(state)
    cost = cost_usd(state)
    if json_output:
        from imagen.app.contract import job_object

        shown: ShowObject = {**job_object(state, status=_status(state)), "events": rows}
        render.print_json(shown)
        return
    req = state.request
    print(printable(f"job {state.job_id}  {_status(state)}"))
    if state.started_at is not None:
        print(f"started {_local_moment(state.started_at)}")
    if req:
        print(f"prompt: {printable(req.prompt)}")
    if cost is not None:
        print(f"cost: {_dollars(cost)}")
    for r in rows:
        print(f"  +{r['t']:8.3f}s  {printable(r['text'])}")


def _status(state) -> str:  # type: ignore[no-untyped-def]
    from imagen.app.liveness import job_owner_alive as owner_alive

    if state.status == "running" and not owner_alive(state, context.session().env):
        return "interrupted"
    return state.status


@render.outputs(list[GeneratedJob])
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
    from imagen.app.resume import resume as resume_jobs
    from imagen.cli.batch import BatchDrive
    from imagen.cli.report import report

    collected: list[dict] = []
    return resume_jobs(
        context.session(),
        job_id,
        all_=all_,
        force_new=force_new,
        shown=lambda state: report(state, json_output=json_output, collect=collected),
        watcher=lambda: BatchDrive(json_output, collected),
        ended=lambda: render.print_json(collected) if json_output else None,
    )


@render.outputs(CancelObject)
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
        Print the job object with `remote_cancelled` and `message`.
    """
    from imagen.app.cancel import cancel as cancel_job
    from imagen.core.events import JobCancelled

    state, message = cancel_job(context.session(), job_id)
    if json_output:
        from imagen.app.contract import job_object

        t = state.terminal
        done: CancelObject = {
            **job_object(state),  # type: ignore[typeddict-item]
            "remote_cancelled": isinstance(t, JobCancelled) and t.remote_cancelled,
            "message": message,
        }
        render.print_json(done)
    else:
        context.err(f"imagen: {message}")
    return 0
