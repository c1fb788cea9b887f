"""What `imagen audit` checks, derived from the verified chain alone.

Projections (the jobs table, sidecars) are caches: audit never takes a path or a sha256 from
them. It folds the verified events itself, checks the files against that fold, and reports any
projection that disagrees with it, or whose checkpoint is past the chain's head, as a finding.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from imagen.core.events import newer_than_this
from imagen.projections.jobs import fold as projection
from imagen.projections.jobs.fold import COLUMNS
from imagen.projections.jobs.query import CHECKPOINT, TABLE
from ledger.interface import Reader

IDENTITY_STREAM = "$ledger"

Problem = dict[str, Any]


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fold_chain(
    store: Any, head: int, newer: dict[str, int] | None = None
) -> tuple[dict[str, dict[str, Any]], dict[str, tuple[str, str]]]:
    """Every job's row and, per image path, the last job that stored an image there (with its
    sha256), from the events up to `head` (the verified part of the chain). `newer` counts
    what was written by a newer imagen (see `newer_events`)."""
    rows: dict[str, dict[str, Any]] = {}
    images: dict[str, tuple[str, str]] = {}
    for e in store.read_all(0):
        if e.position > head:
            break
        if e.stream_id == IDENTITY_STREAM:
            continue
        if newer is not None and (what := newer_than_this(e.type, e.schema_version, e.data)):
            newer[what] = newer.get(what, 0) + 1
        if e.stream_id.startswith("$"):  # budgets: not a job
            continue
        data = e.data
        rows[e.stream_id] = projection.apply(
            rows.get(e.stream_id),
            e.stream_id,
            e.type,
            data,
            e.recorded_at,
            e.position,
            e.schema_version,
        )
        if e.type == "ImageStored":
            images[str(data.get("path"))] = (e.stream_id, str(data.get("sha256")))
    return rows, images


def newer_events(newer: dict[str, int]) -> list[dict[str, Any]]:
    """Notes, not problems: a shared ledger may hold events from a newer imagen, which this one
    shows as unknown and leaves out of its folds."""
    return [
        {
            "kind": "newer_imagen",
            "what": what,
            "events": n,
            "message": f"{n} event(s) with {what}: written by a newer imagen (not a problem; "
            "this imagen shows them as unknown and leaves them out of its folds)",
        }
        for what, n in sorted(newer.items())
    ]


def invariants(rows: dict[str, dict[str, Any]]) -> list[Problem]:
    problems: list[Problem] = []
    for jid, row in rows.items():
        if row["terminal_events"] > 1:
            problems.append(
                {
                    "kind": "invariant",
                    "job_id": jid,
                    "message": f"job {jid} has {row['terminal_events']} terminal events",
                }
            )
        if row["events_after_terminal"]:
            problems.append(
                {
                    "kind": "invariant",
                    "job_id": jid,
                    "message": f"job {jid} has {row['events_after_terminal']} event(s) "
                    "after it ended",
                }
            )
    return problems


def check_files(
    rows: dict[str, dict[str, Any]], images: dict[str, tuple[str, str]]
) -> tuple[list[Problem], int]:
    """Each succeeded job's image (the chain's path and sha256) and its sidecar."""
    problems: list[Problem] = []
    checked = 0
    for path_text, (jid, sha) in images.items():
        if rows.get(jid, {}).get("status") != "succeeded":
            continue
        checked += 1
        path = Path(path_text)
        if not path.is_file():
            problems.append(
                {
                    "kind": "image_missing",
                    "job_id": jid,
                    "path": path_text,
                    "message": f"job {jid}: image missing: {path}",
                }
            )
            continue
        if file_sha256(path) != sha:
            problems.append(
                {
                    "kind": "image_modified",
                    "job_id": jid,
                    "path": path_text,
                    "message": f"job {jid}: image modified since it was stored: {path}",
                }
            )
        side = Path(f"{path_text}.json")
        try:
            data = json.loads(side.read_bytes())
            ok = (
                isinstance(data, dict)
                and data.get("job_id") == jid
                and isinstance(data.get("image"), dict)
                and data["image"].get("sha256") == sha
                and data["image"].get("path") == path_text
            )
        except (OSError, ValueError):
            ok = False
        if not ok:
            missing = not side.exists()
            problems.append(
                {
                    "kind": "sidecar",
                    "job_id": jid,
                    "path": str(side),
                    # A crash right after JobSucceeded leaves no sidecar: name the fix.
                    "message": f"job {jid}: sidecar missing: {side} (`imagen resume {jid}` "
                    "or `imagen rebuild` writes it)"
                    if missing
                    else f"job {jid}: sidecar differs from the ledger: {side} "
                    "(`imagen rebuild` rewrites it)",
                }
            )
    return problems, checked


def check_unknown_files(
    store: Any,
    head: int,
    rows: dict[str, dict[str, Any]],
    images: dict[str, tuple[str, str]],
    folders: Sequence[Path],
) -> list[Problem]:
    """Sidecars (and their images) for jobs the chain does not have, in the folders the chain's
    images are in and in `folders` (the configured output directory): what a removed tail
    leaves on disk, whatever the projections and the head file were made to say. A job
    recorded after `head` (one running while audit reads) is not unknown."""
    problems: list[Problem] = []
    later: set[str] | None = None
    where = sorted({Path(p).parent for p in images} | set(folders))
    for folder in where:
        try:
            names = sorted(e.name for e in os.scandir(folder) if e.name.endswith(".json"))
        except OSError:
            continue
        for name in names:
            side = folder / name
            jid = _sidecar_job(side)
            if jid is None or jid in rows:
                continue
            if later is None:
                later = {e.stream_id for e in store.read_all(head)}
            if jid in later:
                continue
            image = Path(str(side)[: -len(".json")])
            with_image = (
                "the image " + str(image) + " and its sidecar"
                if image.is_file()
                else (f"the sidecar {side}")
            )
            problems.append(
                {
                    "kind": "unknown_job_files",
                    "job_id": jid,
                    "path": str(side),
                    "message": f"{with_image} belong to job {jid}, which the ledger does not "
                    "have: its events were removed (or another ledger wrote them here)",
                }
            )
    return problems


def _sidecar_job(side: Path) -> str | None:
    """The job an imagen sidecar names, when it is one written beside its own image path."""
    try:
        if side.is_symlink() or not side.is_file() or side.stat().st_size > 10_000_000:
            return None
        data = json.loads(side.read_bytes())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("image"), dict):
        return None
    jid = data.get("job_id")
    if not isinstance(jid, str) or data["image"].get("path") != str(side)[: -len(".json")]:
        return None
    return jid


def check_checkpoints(store: Reader, head: int) -> list[Problem]:
    """A projection that has seen events the chain no longer has: the chain lost its tail."""
    problems: list[Problem] = []
    for name, position in store.query("SELECT name, position FROM projection_checkpoints"):
        if position > head:
            problems.append(
                {
                    "kind": "checkpoint_past_head",
                    "projection": name,
                    "message": f"projection {name} has seen position {position} but the chain "
                    f"ends at {head}: events were removed from the ledger",
                }
            )
    return problems


def _compare(
    want: dict[str, dict[str, Any]],
    have: dict[str, dict[str, Any]],
    columns: Sequence[str],
    ref: Callable[[str], dict[str, Any]],
    what: str,
    where: str,
) -> list[Problem]:
    """A cache (`have`) against the chain's own fold (`want`), keyed alike: each row missing,
    extra or differing is a finding that names `what` it is and `where` it is cached."""
    problems: list[Problem] = []
    for key in sorted(want.keys() | have.keys()):
        w, h = want.get(key), have.get(key)
        found = {"kind": "projection", **ref(key)}
        if w is None or h is None:
            side = "missing from" if h is None else "not in the chain but in"
            problems.append(
                {**found, "message": f"{what} {key} is {side} {where} (`imagen rebuild`)"}
            )
            continue
        differ = [c for c in columns if not _same(w.get(c), h.get(c))]
        if differ:
            problems.append(
                {
                    **found,
                    "columns": differ,
                    "message": f"{what} {key}: {where} disagrees with the chain on "
                    f"{', '.join(differ)} (`imagen rebuild`)",
                }
            )
    return problems


def check_jobs_projection(
    store: Reader, rows: dict[str, dict[str, Any]], head: int
) -> list[Problem]:
    """The jobs table against the chain's own fold (after catching it up)."""
    try:
        checkpoint = store.get_checkpoint(CHECKPOINT)
        stored_rows = store.query(f"SELECT {', '.join(COLUMNS)} FROM {TABLE}")
    except Exception:  # noqa: BLE001 - no projection table yet: nothing cached to disagree
        return []
    if checkpoint != head:
        return []  # not comparable (behind: catch-up failed; ahead: reported above)
    stored = {r[0]: dict(zip(COLUMNS, r, strict=True)) for r in stored_rows}
    return _compare(rows, stored, COLUMNS, lambda k: {"job_id": k}, "job", "the jobs projection")


def check_usage_projection(store: Any, rows: dict[str, dict[str, Any]], head: int) -> list[Problem]:
    """The usage table (the outbox for Supabase) against usage rows folded from the chain: a row
    edited or deleted there would change what is reported as spent."""
    from imagen.projections.usage.fold import LOCAL_COLUMNS, usage_rows
    from imagen.projections.usage.table import CHECKPOINT as USAGE_CHECKPOINT
    from imagen.projections.usage.table import TABLE as USAGE_TABLE
    from imagen.repository import load

    try:
        checkpoint = store.get_checkpoint(USAGE_CHECKPOINT)
        stored_rows = store.query(f"SELECT {', '.join(LOCAL_COLUMNS)} FROM {USAGE_TABLE}")
    except Exception:  # noqa: BLE001 - no usage table yet: nothing cached to disagree
        return []
    if checkpoint != head:
        return []  # not comparable (behind: not caught up yet; ahead: reported above)
    stored = {r[0]: dict(zip(LOCAL_COLUMNS, r, strict=True)) for r in stored_rows}
    want: dict[str, dict[str, Any]] = {}
    for jid, row in rows.items():
        if row.get("status") in ("succeeded", "failed", "cancelled"):
            for r in usage_rows(load(store, jid)):
                want.setdefault(r["id"], r)
    return _compare(
        want,
        stored,
        LOCAL_COLUMNS,
        lambda k: {"projection": "usage", "row": k},
        "usage row",
        "the usage table",
    )


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        try:
            return math.isclose(float(a), float(b), rel_tol=1e-9)
        except (TypeError, ValueError):
            return False
    return a == b
