"""`imagen audit` and `imagen rebuild`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, NotRequired, TypedDict

from cyclopts import Parameter

from imagen.app.exit_codes import ExitCode
from imagen.cli import context, render
from imagen.cli.eventbar import event_bar


class Head(TypedDict):
    position: int
    hash: str


class AuditObject(TypedDict):
    """`audit --json`: each problem and note is {kind, message, ...} (their keys vary by kind)."""

    ok: bool
    events_verified: int
    head: Head
    images_checked: int
    problems: list[dict[str, Any]]
    notes: list[dict[str, Any]]
    provider: NotRequired[list[dict[str, Any]]]  # with --provider: each account as listed
    provider_complete: NotRequired[bool]


class RebuildObject(TypedDict):
    """`rebuild --json`."""

    jobs: int
    sidecars: int
    differences: list[str]


@render.outputs(AuditObject)
def audit(
    *,
    json_output: Annotated[bool, Parameter(name="--json")] = False,
    remote: bool = False,
    provider: bool = False,
    since: str | None = None,
    max_time: Annotated[str | None, Parameter(name="--max-time")] = None,
    from_position: Annotated[str | None, Parameter(name="--from-position")] = None,
) -> int:
    """Verify the ledger's chain, invariants and image files.

    Checks the hash chain (naming the first broken position), each job's invariants (one
    terminal event, nothing after it) and every stored image's sha256. Exit 4 on a problem.
    --provider also compares the ledger with Replicate's own list of predictions (exit 4 when
    the books differ, 3 when the list could not be read whole, in time included).

    Examples of use:
      imagen audit
      imagen audit --remote            # also compare the head last reported to Supabase
      imagen audit --provider --since 7d
      imagen audit --json | jq .problems
      imagen audit --from-position last   # only what was appended since the last audit

    Parameters
    ----------
    json_output
        Print one JSON report.
    remote
        Also check every chain head reported to Supabase and this machine's reported ledgers.
    provider
        Also reconcile with each configured Replicate account's list of predictions: those the
        ledger does not know, those it counts as billed that Replicate does not list, and
        status or output counts that differ.
    since
        With --provider: predictions created from this age (30m, 24h, 7d, 2w), local date
        (2026-11-01: from local midnight) or time (2026-11-01T12:00 local, or with Z or an
        offset); default: all. Without --provider: an incremental audit from the latest
        checkpoint an audit verified and recorded at or before that moment (as
        --from-position does).
    max_time
        With --provider: the longest reading Replicate's list may take, in seconds, every wait
        for a throttling server included (default 300); past it the list is not read whole
        (exit 3).
    from_position
        Verify the chain from a checkpoint an earlier audit recorded (`last`, or a position:
        the checkpoint at it or the latest before it), after checking that the chain still
        holds that checkpoint's hash; the head file and --remote are checked as always. The
        jobs with events after it are checked (their files and cached rows).
    """
    from imagen.app import audit as checks
    from imagen.projections.jobs import table as jobs_index

    since_at = None
    if since is not None:
        from imagen.core.times import parse_moment

        since_at = parse_moment(since, context.session().env.clock(), context.session().env.tz)
    limit_s = _max_time(max_time, provider)
    store = context.session().store()
    problems: list[dict[str, Any]] = []
    # --since without --provider: an incremental audit from a checkpoint recorded by then.
    start = _start(store, from_position, None if provider else since_at, since)
    head = store.head()
    if start is not None and store.hashes_at([start.position]).get(start.position) != start.hash:
        # The chain no longer holds what was verified: nothing after it can be trusted.
        problems.append(
            {
                "kind": "checkpoint",
                "position": start.position,
                "message": f"event {start.position} is not the one an earlier audit verified "
                f"there ({checks.checkpoint_path(store)}): the chain was rewritten; run a full "
                "`imagen audit`",
            }
        )
        problems.extend(store.head_file_problems(head))
        return _finish(json_output, problems, [], None, 0, head, 0)
    compare: set[str] = set()
    if not checks.check_checkpoints(store, head.position):
        # Caught up first (what `imagen jobs` would do), so the scan compares as it folds.
        from imagen.projections import spend
        from imagen.projections.usage import table as usage_table

        jobs_index.catch_up(store)
        usage_table.catch_up(store)
        try:
            spend.catch_up(store)
        except Exception:  # noqa: BLE001 - a ledger this process may only read: nothing cached
            pass
        compare = checks.comparable(store, head.position)
    parallel_from = _parallel_from(context.session().env.env)
    progress = event_bar("audit", start.position if start else 0, head.position, json_output)
    try:
        scanned = checks.scan(
            store,
            head,
            start=start,
            compare=compare,
            progress=progress,
            parallel_from=parallel_from,
        )
    finally:
        if progress is not None:
            progress(None)
    report = scanned.report
    if report.ok:
        from imagen.core.times import iso

        checks.record_checkpoint(
            checks.checkpoint_path(store), report.head, iso(context.session().env.clock())
        )
    else:
        problems.append(
            {
                "kind": "chain",
                "position": report.first_broken,
                "message": f"ledger chain broken at position {report.first_broken}: {report.reason}",
            }
        )
    head = report.head.position
    # Against the chain as verified (from a checkpoint: its hash vouches for what is before).
    problems.extend(store.head_file_problems(report.head))
    problems.extend(checks.check_checkpoints(store, head))
    # What is checked comes from the verified chain, never from a projection.
    notes = checks.newer_events(scanned.newer)
    trusted = report.ok and not any(p["kind"] == "checkpoint_past_head" for p in problems)
    problems.extend(
        p for p in scanned.problems if trusted or p["kind"] not in ("projection", "spend_recorded")
    )
    problems.extend(
        checks.check_unknown_files(
            store, head, scanned.folders, _output_folders(), scanned.sidecars
        )
    )
    checked_images = scanned.images_checked
    if remote:
        from imagen.app.usage_sync import audit_remote

        problems.extend(audit_remote(store, context.session().config(), context.session().env))
    accounts = None
    if provider:
        from imagen.app.reconcile import audit_provider

        found = audit_provider(
            store,
            context.session().config(),
            context.session().env,
            since=since_at,
            head=head,
            note=context.note,
            **({} if limit_s is None else {"max_time_s": limit_s}),
        )
        problems.extend(found.problems)
        notes.extend(found.notes)
        accounts = found.accounts
    return _finish(
        json_output, problems, notes, accounts, report.checked, report.head, checked_images
    )


def _finish(
    json_output: bool,
    problems: list[dict[str, Any]],
    notes: list[dict[str, Any]],
    accounts: list[dict[str, Any]] | None,
    checked: int,
    head: Any,
    checked_images: int,
) -> int:
    # A list not read whole (an error, the time limit) is not "ok", though nothing was found.
    incomplete = any(a["error"] for a in accounts or [])
    summary = {
        "ok": not problems and not incomplete,
        "events_verified": checked,
        "head": {"position": head.position, "hash": head.hash},
        "images_checked": checked_images,
        "problems": problems,
        "notes": notes,
    }
    if accounts is not None:
        summary["provider"] = accounts
        summary["provider_complete"] = not incomplete
    if json_output:
        print(json.dumps(summary))
    else:
        from imagen.cli.safe import printable

        for p in problems:
            print(printable(p["message"]))
        for n in notes:
            print(printable(f"note: {n['message']}"))
        for a in accounts or []:
            state = f"error: {a['error']}" if a["error"] else "listed whole"
            print(
                printable(
                    f"provider {', '.join(a['backends'])}: {a['listed']} prediction(s) in the "
                    f"window, {a['pages']} page(s), {len(a['retries'])} retry(ies); {state}"
                )
            )
        verdict = "PROBLEMS" if problems else "INCOMPLETE" if incomplete else "ok"
        print(
            f"{verdict}: {checked} events verified, "
            f"{checked_images} images checked, {len(problems)} problem(s); "
            f"head {head.position} {head.hash[:16]}"
        )
    if problems:
        return int(ExitCode.AUDIT_FAILED)
    return int(ExitCode.BACKEND_UNAVAILABLE if incomplete else ExitCode.OK)


def _start(store: Any, wanted: str | None, since: Any, since_text: str | None) -> Any:
    """--from-position, or --since without --provider: the recorded checkpoint to start
    from (None: the whole chain)."""
    from imagen.app import audit as checks
    from imagen.app.errors import UserError

    if wanted is None and since is None:
        return None
    text = "last" if wanted is None else wanted.strip()
    if text != "last" and not (text.isascii() and text.isdigit()):
        raise UserError(f"--from-position {wanted!r}: give `last` or a position, e.g. 120000")
    start = checks.choose_checkpoint(checks.checkpoint_path(store), text, before=since)
    if start is None:
        what = f"--from-position {wanted}" if wanted is not None else f"--since {since_text}"
        raise UserError(
            f"{what}: no audit recorded a verified checkpoint "
            f"{'there' if wanted is not None else 'by then'} "
            f"({checks.checkpoint_path(store)}); run `imagen audit` first"
        )
    return start


def _output_folders() -> list[Path]:
    """The configured output directory (where a removed job's files would be), if any."""
    from imagen.app.errors import UserError

    try:
        return [Path(context.session().config().output.directory).expanduser()]
    except UserError:
        return []


def _parallel_from(env: Any) -> int:
    """IMAGEN_AUDIT_PARALLEL_FROM: the events from which audit runs in two processes."""
    from imagen.app import audit as checks
    from imagen.app.errors import UserError

    text = env.get("IMAGEN_AUDIT_PARALLEL_FROM")
    if text is None or text == "":
        return checks.PARALLEL_FROM
    if not text.isascii() or not text.isdigit() or len(text) > 18:
        raise UserError(
            f"IMAGEN_AUDIT_PARALLEL_FROM={text[:40]!r}: give a number of events, e.g. 200000"
        )
    return int(text)


def _max_time(text: str | None, provider: bool) -> float | None:
    """--max-time: a positive number of seconds (ASCII digits), only with --provider; None:
    the default."""
    import re

    from imagen.app.errors import UserError

    if text is None:
        return None
    if not provider:
        raise UserError("--max-time needs --provider (it bounds reading the provider's list)")
    value = float(text) if re.fullmatch(r"[0-9]{1,9}(\.[0-9]{1,3})?", text.strip()) else 0.0
    if value <= 0:
        raise UserError(f"--max-time {text!r}: give a number of seconds above 0, e.g. 300")
    return value


@render.outputs(RebuildObject)
def rebuild(*, json_output: Annotated[bool, Parameter(name="--json")] = False) -> int:
    """Re-derive projections from the ledger and report differences.

    Rebuilds every projection (job list, sidecars, usage) from the ledger alone and reports
    what differed from what was there. Exit 4 when something differed (and was repaired), 0
    when nothing did.

    Examples of use:
      imagen rebuild
      imagen rebuild --json | jq .differences

    Parameters
    ----------
    json_output
        Print one JSON report.
    """
    from imagen.app.sidecars import render_sidecar, sidecar_owner, sidecar_path
    from imagen.projections import catchup, spend
    from imagen.projections.jobs import query as jobs_query
    from imagen.projections.jobs import table as jobs_index
    from imagen.projections.sidecar import sidecars as sidecars_of
    from imagen.projections.usage import table as usage_table
    from imagen.repository import load
    from ledger.projection import differed

    store = context.session().store()
    differences: list[str] = []
    # Every table current, then each rebuilt from the ledger alone: one pass over the events
    # each time for the three tables (projections/catchup.py).
    catchup.catch_up(store)
    before = {r["job_id"]: r for r in jobs_query.all_rows(store)}
    usage_before, spend_before = usage_table.snapshot(store), spend.snapshot(store)
    jobs_index.reset(store)
    usage_table.reset(store)  # (re-sending after the reset is harmless: the remote ignores
    spend.reset(store)  # duplicates)
    catchup.catch_up(store)
    after = {r["job_id"]: r for r in jobs_query.all_rows(store)}
    differences.extend(
        f"job list: row for {jid} differed and was rebuilt" for jid in differed(before, after)
    )
    sidecars = 0
    from imagen.runner.files import atomic_write

    for jid, row in after.items():
        if row["status"] != "succeeded":
            continue
        for data in sidecars_of(load(store, jid)):
            path = sidecar_path(data["image"]["path"])
            wanted = render_sidecar(data)
            if (path.exists() or path.is_symlink()) and sidecar_owner(path) != data["image"][
                "path"
            ]:
                differences.append(f"sidecar not written: {path} is a file imagen did not write")
                continue
            current = path.read_bytes() if path.exists() else None
            sidecars += 1
            if current == wanted or (current is not None and _same_json(current, wanted)):
                continue
            differences.append(f"sidecar {'missing' if current is None else 'differed'}: {path}")
            if Path(data["image"]["path"]).parent.exists():
                atomic_write(path, wanted, mode=context.session().config().output.sidecar_mode)
    from imagen.runner.files import sweep_temp_files

    folders = {Path(r["image_path"]).parent for r in after.values() if r.get("image_path")}
    for folder in sorted(folders):
        for gone in sweep_temp_files(folder, context.session().env.clock().timestamp()):
            differences.append(f"removed a temp file left by an interrupted write: {gone}")
    for name, was, now in (
        ("usage", usage_before, usage_table.snapshot(store)),
        ("spend", spend_before, spend.snapshot(store)),
    ):
        differences.extend(f"{name}: row {k} differed and was rebuilt" for k in differed(was, now))
    if json_output:
        print(json.dumps({"jobs": len(after), "sidecars": sidecars, "differences": differences}))
    else:
        for d in differences:
            print(d)
        print(
            f"rebuilt {len(after)} job rows, checked {sidecars} sidecars: "
            f"{len(differences)} difference(s)"
        )
    # A difference repaired is still a finding: a cache disagreed with the chain (exit 4).
    return int(ExitCode.AUDIT_FAILED if differences else ExitCode.OK)


def _same_json(a: bytes, b: bytes) -> bool:
    try:
        return json.loads(a) == json.loads(b)
    except ValueError:
        return False
