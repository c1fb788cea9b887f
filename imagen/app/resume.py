"""`resume` as a library call: finish interrupted jobs without paying twice.

One job id: that job, continued from its last recorded event. A batch id, or every interrupted
job (`all_`): each on its own; several at once run as a batch runs (app/batch.py), a few at a
time per backend. A job driven by a live process is refused (exit 5); a finished job without
its sidecar gets it written (a crash right after the success was recorded), unless its image
was removed since (exit 4: one line saying so, and how it may come back)."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from imagen.app.errors import UserError
from imagen.app.exit_codes import ExitCode, most_severe
from imagen.app.session import Session
from imagen.core.job import JobState

if TYPE_CHECKING:
    from imagen.app.batch import Watcher


def resume(
    session: Session,
    job_id: str | None,
    *,
    all_: bool,
    force_new: bool,
    shown: Callable[[JobState], ExitCode],
    watcher: Callable[[], Watcher],
    ended: Callable[[], object] | None = None,
) -> int:
    """The exit code of the worst job. `shown(state)` renders one job's end and gives its exit
    code; `watcher()` follows several run at once (app/batch.py Watcher); `ended()` is called
    once every job has ended, before usage is synced (which may wait on the network)."""
    from imagen.app.drive import sync_usage_best_effort
    from imagen.app.liveness import row_owner_alive
    from imagen.app.outcome import resolve_job_id
    from imagen.projections.jobs import query as jobs_query
    from imagen.projections.jobs import table as jobs_index

    if bool(job_id) == all_:
        raise UserError("give a job id or --all")
    store = session.store()
    alive = row_owner_alive(session.env)
    batch = None
    if job_id and not all_:
        jobs_index.catch_up(store)
        batch = _batch_named(store, job_id)
    if all_ or batch:
        jobs_index.catch_up(store)
        rows = list(jobs_query.query(store, alive, status="interrupted", batch=batch, limit=None))
        # A crash right after the success was recorded leaves the job without its sidecar:
        # completing what a success implies is resuming too.
        from imagen.app.sidecars import sidecar_path

        rows += [
            r
            for r in jobs_query.query(store, alive, status="succeeded", batch=batch, limit=None)
            if r["image_path"]
            and not sidecar_path(r["image_path"]).exists()
            and Path(r["image_path"]).is_file()  # a removed image gets no sidecar either
        ]
        ids = [r["job_id"] for r in rows]
        all_ = True  # each job on its own, as --all
        if len(rows) > 1 and not force_new:
            # Several at once, as a batch runs (each job still resumed on its own).
            code = _resume_many(
                session,
                store,
                rows,
                watcher(),
                label=f"batch {batch}" if batch else "resume",
                hint=f"imagen resume {batch}" if batch else "imagen resume --all",
            )
            if ended is not None:
                ended()
            sync_usage_best_effort(session, store)
            return code
    else:
        ids = [resolve_job_id(store, job_id or "")]
    worst = ExitCode.OK
    for jid in ids:
        try:
            code = _resume_one(session, store, jid, force_new=force_new, shown=shown)
        except UserError as exc:
            if not all_:
                raise
            # Each job on its own: one that halts or cannot run does not stop the rest.
            message = str(exc) if str(exc).startswith(f"job {jid}") else f"job {jid}: {exc}"
            session.err(f"imagen: error: {message}")
            code = exc.code
        except Exception as exc:
            if not all_ or session.ledger_failure(exc) is not None:
                raise  # the ledger itself failed: no other job can be recorded either
            session.err(
                f"imagen: error: job {jid} could not be resumed ({type(exc).__name__}: "
                f"{str(exc)[:200]}); it stays interrupted"
            )
            code = ExitCode.JOB_FAILED
        worst = most_severe(worst, code)
    if ended is not None:
        ended()
    if all_ and not ids:
        session.note(f"batch {batch}: no unfinished jobs" if batch else "no interrupted jobs")
    if ids:
        sync_usage_best_effort(session, store)
    return int(worst)


def _batch_named(store: Any, name: str) -> str | None:
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


def check_backend_usable(session: Session, state: JobState, jid: str) -> None:
    from imagen import backends

    req = state.request
    if req is None:
        return
    try:
        module = backends.load(req.backend_type)
    except ValueError:
        return  # the runner reports an unknown type on its own
    status = module.status(req.backend_config, session.env.env)
    if status != "ok":
        raise UserError(f"job {jid}: backend {req.backend} is {status}", ExitCode.BAD_INPUT)


def _resume_one(
    session: Session,
    store: Any,
    jid: str,
    *,
    force_new: bool,
    shown: Callable[[JobState], ExitCode],
) -> ExitCode:
    from imagen.app.drive import drive
    from imagen.app.liveness import job_owner_alive as owner_alive
    from imagen.app.sidecars import write_sidecar
    from imagen.core.events import ForceNewRequested
    from imagen.repository import load

    state = load(store, jid)
    gone = missing_image_message(state) if state.finished else None
    if gone is not None:
        # Its image was removed after it was stored: no sidecar for an absent file, and no
        # path printed as if it were there. (Raised: one line, and the JSON error object.)
        raise UserError(gone, ExitCode.AUDIT_FAILED, job_id=jid)
    elif state.finished:
        from imagen.app.sidecars import sidecar_problem

        missing = sidecar_problem(state)
        written = write_sidecar(state, session.config().output.sidecar_mode)
        if missing is not None and written is not None:
            session.note(f"job {jid} already {state.status}; wrote its sidecar {written}")
        else:
            session.note(f"job {jid} already {state.status}")
        code = shown(state)
    elif owner_alive(state, session.env):
        claim = state.claim
        assert claim is not None
        raise UserError(
            f"job {jid} is being driven by pid {claim.pid} on {claim.host}; not resuming it twice",
            ExitCode.CONFLICT,
            job_id=jid,
        )
    else:
        # Before the claim is appended: exit 2 records nothing.
        check_backend_usable(session, state, jid)
        extra = [ForceNewRequested("--force-new")] if force_new else []
        state = drive(session, store, jid, state=state, resumed=True, extra=extra)
        code = shown(state)
    return code


def missing_image_message(state: JobState) -> str | None:
    """One line for a finished job whose stored image file is gone (None when none is): what
    is missing and how it may come back."""
    from imagen.app.sidecars import missing_images

    gone = missing_images(state)
    if not gone:
        return None
    more = f" (and {len(gone) - 1} more of its images)" if len(gone) > 1 else ""
    image = next(i for i in state.images if i.path == gone[0])
    if image.source.startswith(("http://", "https://")):
        replicate = state.request is not None and state.request.backend_type == "replicate"
        kept = " (Replicate keeps outputs about an hour)" if replicate else ""
        back = f"the backend's copy may still be downloadable{kept}: {image.source}"
    else:
        back = "put the file back"
    return (
        f"job {state.job_id}: its image {gone[0]}{more} is missing (removed after it was "
        f"stored), so no sidecar was written; {back}; until then `imagen audit` reports it "
        "as image_missing"
    )


def _resume_many(
    session: Session,
    store: Any,
    rows: list[dict[str, Any]],
    watcher: Watcher,
    *,
    label: str,
    hint: str,
) -> int:
    """Several jobs, each as `resume ID` would, a few at a time per backend as a batch runs."""
    from imagen.app import batch as b

    cfg = session.config()
    recorded = b.Recorded("", {}, {})
    for row in rows:
        backend = str(row.get("backend") or "")
        recorded.queues.setdefault(backend, deque()).append(row["job_id"])
        known = cfg.backends.get(backend)
        recorded.backend_types[backend] = known.type if known else ""
        recorded.total += 1
    stop = b.Stop()
    watcher.begin(recorded.total, stop)
    try:
        b.drive_recorded(
            session, store, recorded, None, stop, watcher, resume=lambda s: _resumable(session, s)
        )
    finally:
        watcher.close()
    return watcher.finish(recorded, label, hint)


def _resumable(session: Session, state: JobState) -> None:
    """May this process take the job over? (Raises UserError if not, as `resume ID` says.)"""
    from imagen.app.liveness import job_owner_alive

    if job_owner_alive(state, session.env):
        claim = state.claim
        raise UserError(
            f"job {state.job_id} is being driven by pid {claim.pid} on {claim.host}; "
            "not resuming it twice",
            ExitCode.CONFLICT,
        )
    check_backend_usable(session, state, state.job_id)
