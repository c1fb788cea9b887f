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
import sqlite3
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from imagen.core.events import newer_than_this
from imagen.projections.jobs import fold as projection
from imagen.projections.jobs.fold import COLUMNS
from imagen.projections.jobs.query import CHECKPOINT, TABLE
from ledger.chain import ChainWalk, Head, VerifyReport, as_row
from ledger.events import RecordedEvent
from ledger.interface import Reader

IDENTITY_STREAM = "$ledger"

Problem = dict[str, Any]


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class Spill:
    """Audit's state of the jobs it does not hold in memory (every job once it ended, and the
    oldest open ones past a bound): a throwaway SQLite file in a temporary directory, so an
    audit's memory does not grow with the ledger. It holds only what audit folded (rows,
    usage and spend rows, image paths), never events: not a second reader of the ledger."""

    def __init__(self) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="imagen-audit-")
        self.db = sqlite3.connect(Path(self._dir.name) / "audit.db")
        self.db.executescript(
            "PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF; PRAGMA cache_size=-4000;"
            "CREATE TABLE jobs (job_id TEXT PRIMARY KEY, version INTEGER, status TEXT,"
            " row TEXT, spend TEXT);"
            "CREATE TABLE usage (id TEXT PRIMARY KEY, job_id TEXT, row TEXT);"
            "CREATE TABLE images (path TEXT PRIMARY KEY, job_id TEXT, sha256 TEXT,"
            " position INTEGER);"
        )

    def put(self, jobs: Iterable[tuple[str, int, dict[str, Any], list[Any], Any]]) -> None:
        for jid, version, row, usage, spend_row in jobs:
            self.db.execute(
                "INSERT OR REPLACE INTO jobs VALUES (?, ?, ?, ?, ?)",
                (jid, version, row["status"], json.dumps(row), json.dumps(spend_row)),
            )
            self.db.execute("DELETE FROM usage WHERE job_id = ?", (jid,))
            self.db.executemany(
                "INSERT OR IGNORE INTO usage VALUES (?, ?, ?)",
                [(r["id"], jid, json.dumps(r)) for r in usage],
            )

    def put_images(self, images: dict[str, tuple[str, str, int]]) -> None:
        self.db.executemany(
            "INSERT INTO images VALUES (?, ?, ?, ?) ON CONFLICT (path) DO UPDATE SET"
            " job_id = excluded.job_id, sha256 = excluded.sha256, position = excluded.position"
            " WHERE excluded.position > images.position",
            [(p, jid, sha, pos) for p, (jid, sha, pos) in images.items()],
        )

    def get(self, job_ids: Iterable[str]) -> dict[str, tuple[int, dict[str, Any]]]:
        out: dict[str, tuple[int, dict[str, Any]]] = {}
        for chunk in _batched(sorted(job_ids), 500):
            marks = ", ".join("?" * len(chunk))
            sql = f"SELECT job_id, version, row FROM jobs WHERE job_id IN ({marks})"
            for jid, version, row in self.db.execute(sql, chunk):
                out[jid] = (version, json.loads(row))
        return out

    def pages(self, sql: str, size: int = 500) -> Iterator[list[tuple[Any, ...]]]:
        cursor = self.db.execute(sql)
        while rows := cursor.fetchmany(size):
            yield rows

    def close(self) -> None:
        self.db.close()
        self._dir.cleanup()


@dataclass(slots=True)
class _Job:
    """A job audit holds in memory: its last version, its row so far, and its events while
    all of them are held (None once it was spilled: what needs them reads the stream again)."""

    version: int
    row: dict[str, Any] | None
    events: list[RecordedEvent] | None = field(default_factory=list)


@dataclass
class Scan:
    report: VerifyReport
    spill: Spill
    newer: dict[str, int]
    start: int  # 0: the whole chain; else the checkpoint an incremental audit started after
    spend_recorded: list[Problem]


OPEN_LIMIT = 2000  # open jobs held in memory at most; past it the oldest are spilled


def scan(
    store: Any,
    head: Head,
    *,
    start: Head | None = None,
    progress: Callable[[int], None] | None = None,
    batch: int = 5000,
    open_limit: int = OPEN_LIMIT,
) -> Scan:
    """One pass over the chain up to `head` (from `start`, a verified checkpoint, or from the
    genesis): each event verified, then folded into its job's row as the jobs projection
    folds it. A job is held in memory only while it is open; once it ends (or past
    `open_limit` open jobs, the oldest) its row, its usage and spend rows and the images it
    stored go to the spill. So memory depends on the jobs under way, not the ledger's length."""
    from imagen.projections import spend

    walk = ChainWalk(start)
    spill = Spill()
    held: dict[str, _Job] = {}
    others: dict[str, int] = {}  # streams that are not jobs ("$ledger", "$budgets")
    newer: dict[str, int] = {}
    recorded: list[Problem] = []
    begin = walk.head.position
    broken = False

    def release(jids: Iterable[str]) -> None:
        out = []
        for jid in jids:
            job = held.pop(jid)
            state = (
                _fold_job(jid, job.events)
                if job.events is not None
                else _load_until(store, jid, walk.head.position)
            )
            assert job.row is not None
            out.append((jid, job.version, job.row, _usage_rows(state), spend.row(state)))
            last = job.events[-1] if job.events else None
            if last is not None and job.row["terminal_events"] and last.type in _ENDS:
                end = spend.End(jid, last.position, last.data_json, last.recorded_at)
                found = spend.recorded_difference(end, spend.row(state))
                if found is not None:
                    recorded.append(found)
        spill.put(out)

    for events in _batches(store, begin, head.position, batch):
        wanted: dict[str, int] = {}
        for e in events:
            if not e.stream_id.startswith("$") and e.stream_id not in held:
                wanted.setdefault(e.stream_id, e.stream_version)
        if wanted:
            _hold(store, spill, held, wanted, begin)
        images: dict[str, tuple[str, str, int]] = {}
        for e in events:
            sid = e.stream_id
            job = held.get(sid)
            if not walk.step(as_row(e), others.get(sid, 0) if job is None else job.version):
                broken = True
                break
            if sid == IDENTITY_STREAM:
                others[sid] = e.stream_version
                continue
            data = e.data
            if what := newer_than_this(e.type, e.schema_version, data):
                newer[what] = newer.get(what, 0) + 1
            if job is None:  # budgets: not a job
                others[sid] = e.stream_version
                continue
            job.version = e.stream_version
            job.row = projection.apply(
                job.row, sid, e.type, data, e.recorded_at, e.position, e.schema_version
            )
            if job.events is not None:
                job.events.append(e)
            if e.type == "ImageStored":
                images[str(data.get("path"))] = (sid, str(data.get("sha256")), e.position)
        release([j for j, job in held.items() if job.row and job.row["terminal_events"]])
        if len(held) > open_limit:
            oldest = sorted(held, key=lambda j: held[j].row["last_position"])  # type: ignore[index]
            release(oldest[: len(held) - open_limit // 2])
        spill.put_images(images)
        if progress is not None:
            progress(walk.head.position)
        if broken:
            break
    release([j for j, job in held.items() if job.row is not None])
    spill.db.commit()
    return Scan(walk.report(), spill, newer, begin, recorded)


_ENDS = ("JobSucceeded", "JobFailed", "JobCancelled")


def _batches(store: Any, after: int, head: int, size: int) -> Iterator[list[RecordedEvent]]:
    """The events after `after` up to `head`, in lists of `size` (read in batches by the
    store: never the whole ledger at once)."""
    from itertools import takewhile

    events = store.read_all(after, batch=size)
    return _batched(takewhile(lambda e: e.position <= head, events), size)


def _hold(
    store: Any, spill: Spill, held: dict[str, _Job], wanted: dict[str, int], begin: int
) -> None:
    """Bring the jobs of a batch into memory: from the spill (seen before), else new. After a
    checkpoint (`begin`), a job begun before it is read from the ledger up to the checkpoint,
    whose hash vouches for those events."""
    found = spill.get(wanted)
    for jid, first in wanted.items():
        if jid in found:
            version, row = found[jid]
            held[jid] = _Job(version, row, None)
        elif begin and first > 1:
            before = [e for e in store.read_stream(jid) if e.position <= begin]
            job = held[jid] = _Job(0, None, before)
            for e in before:
                job.version = e.stream_version
                job.row = projection.apply(
                    job.row, jid, e.type, e.data, e.recorded_at, e.position, e.schema_version
                )
        else:
            held[jid] = _Job(0, None)


def _fold_job(jid: str, events: Sequence[RecordedEvent]) -> Any:
    from imagen.core.job import fold as fold_job
    from imagen.repository import to_recorded

    return fold_job(jid, [to_recorded(e) for e in events])


def _load_until(store: Any, jid: str, position: int) -> Any:
    """A job spilled before it ended, folded again from its stream (up to the verified head)."""
    return _fold_job(jid, [e for e in store.read_stream(jid) if e.position <= position])


def _usage_rows(state: Any) -> list[dict[str, Any]]:
    from imagen.projections.usage.fold import usage_rows

    return usage_rows(state)


def _batched(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    chunk: list[Any] = []
    for item in items:
        chunk.append(item)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def rows_of(spill: Spill) -> Iterator[dict[str, Any]]:
    for page in spill.pages("SELECT row FROM jobs ORDER BY job_id"):
        for (row,) in page:
            yield json.loads(row)


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


def invariants(rows: Iterable[dict[str, Any]]) -> list[Problem]:
    problems: list[Problem] = []
    for row in rows:
        jid = row["job_id"]
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


def check_files(spill: Spill) -> tuple[list[Problem], int]:
    """Each succeeded job's image (the chain's path and sha256) and its sidecar."""
    problems: list[Problem] = []
    checked = 0
    for path_text, jid, sha in _images(spill):
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


def _images(spill: Spill) -> Iterator[tuple[str, str, str]]:
    """(path, job, sha256) of the last image stored at each path, by a job that succeeded."""
    for page in spill.pages(
        "SELECT i.path, i.job_id, i.sha256 FROM images i JOIN jobs j ON j.job_id = i.job_id"
        " WHERE j.status = 'succeeded' ORDER BY i.path"
    ):
        yield from page


def check_unknown_files(
    store: Any, head: int, spill: Spill, folders: Sequence[Path]
) -> list[Problem]:
    """Sidecars (and their images) for jobs the chain does not have, in the folders the chain's
    images are in and in `folders` (the configured output directory): what a removed tail
    leaves on disk, whatever the projections and the head file were made to say. A job
    recorded after `head` (one running while audit reads) is not unknown."""
    problems: list[Problem] = []
    parents = {Path(p).parent for page in spill.pages("SELECT path FROM images") for (p,) in page}
    found: list[tuple[Path, str]] = []
    for folder in sorted(parents | set(folders)):
        try:
            names = (e.name for e in os.scandir(folder) if e.name.endswith(".json"))
            sides = ((folder / n, jid) for n in names if (jid := _sidecar_job(folder / n)))
            # Any event of the job (those after `head` too: a job running while audit reads,
            # or past a break in the chain) makes it known; asked in chunks, never all at once.
            for chunk in _batched(sides, 500):
                known = _streams_present(store, {jid for _, jid in chunk})
                found.extend((side, jid) for side, jid in chunk if jid not in known)
        except OSError:
            continue
    for side, jid in sorted(found):
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


def _streams_present(store: Any, job_ids: set[str]) -> set[str]:
    keys = sorted(job_ids)
    marks = ", ".join(f":k{i}" for i in range(len(keys)))
    sql = f"SELECT DISTINCT stream_id FROM events WHERE stream_id IN ({marks})"
    return {r[0] for r in store.query(sql, {f"k{i}": k for i, k in enumerate(keys)})}


# -- the audit checkpoint: how far an audit verified the chain ------------------------------


def checkpoint_path(store: Any) -> Path:
    """Beside a SQLite ledger (`<ledger>.audit`, by its head file); for a ledger without a
    head file (PostgreSQL), in this user's state directory, named by the ledger's id."""
    if store.head_path is not None:
        return Path(str(store.head_path).removesuffix(".head") + ".audit")
    from platformdirs import user_state_path

    from imagen.app.paths import APP

    return user_state_path(APP) / "audit" / f"{store.identity() or 'empty'}.json"


def read_checkpoints(path: Path) -> list[dict[str, Any]]:
    try:
        data = json.loads(path.read_text())
        return [c for c in data["verified"] if isinstance(c, dict)]
    except (OSError, ValueError, KeyError, TypeError):
        return []


def record_checkpoint(path: Path, head: Head, at: str) -> None:
    """After a verified chain: the position it was verified up to, with its hash (kept for
    the last 100 audits, so --from-position can start from any of them)."""
    if head.position == 0:
        return
    kept = [c for c in read_checkpoints(path) if c.get("position") != head.position][-99:]
    kept.append({"position": head.position, "hash": head.hash, "verified_at": at})
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps({"verified": kept}, indent=1) + "\n")
        os.replace(tmp, path)
    except OSError:
        pass  # the audit stands; the next one starts from the genesis


def choose_checkpoint(path: Path, wanted: str) -> Head | None:
    """--from-position N: the recorded checkpoint at N or the last one before it; `last`:
    the latest. None when no audit recorded one there."""
    points = read_checkpoints(path)
    try:
        if wanted != "last":
            limit = int(wanted)
            points = [c for c in points if int(c["position"]) <= limit]
        best = max(points, key=lambda c: int(c["position"]), default=None)
        return None if best is None else Head(int(best["position"]), str(best["hash"]))
    except (ValueError, KeyError, TypeError):
        return None


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
    found = (
        _differ(key, want.get(key), have.get(key), columns, ref, what, where)
        for key in sorted(want.keys() | have.keys())
    )
    return [p for p in found if p is not None]


def _differ(
    key: str,
    w: dict[str, Any] | None,
    h: dict[str, Any] | None,
    columns: Sequence[str],
    ref: Callable[[str], dict[str, Any]],
    what: str,
    where: str,
) -> Problem | None:
    found = {"kind": "projection", **ref(key)}
    if w is None or h is None:
        side = "missing from" if h is None else "not in the chain but in"
        return {**found, "message": f"{what} {key} is {side} {where} (`imagen rebuild`)"}
    differ = [c for c in columns if not _same(w.get(c), h.get(c))]
    if not differ:
        return None
    return {
        **found,
        "columns": differ,
        "message": f"{what} {key}: {where} disagrees with the chain on "
        f"{', '.join(differ)} (`imagen rebuild`)",
    }


def _compare_table(
    store: Any,
    spill: Spill,
    want_sql: str,
    table: str,
    columns: Sequence[str],
    ref: Callable[[str], dict[str, Any]],
    what: str,
    where: str,
    *,
    whole: bool,
) -> list[Problem]:
    """A cached table against the rows audit folded (in the spill, `want_sql` giving key and
    row as JSON), a page at a time: never either side whole in memory. `whole`: the audit
    read the whole chain, so a cached row it did not fold is a finding too (an incremental
    audit folds only the jobs it read)."""
    key = columns[0]
    problems: list[Problem] = []
    for page in spill.pages(want_sql):
        want = {k: json.loads(r) for k, r in page}
        have = _cached(store, table, columns, want)
        for k, w in want.items():
            if (p := _differ(k, w, have.get(k), columns, ref, what, where)) is not None:
                problems.append(p)
    if whole:
        after = None
        while True:
            where_sql = "" if after is None else f" WHERE {key} > :after"
            keys = [
                r[0]
                for r in store.query(
                    f"SELECT {key} FROM {table}{where_sql} ORDER BY {key} LIMIT 1000",
                    {"after": after},
                )
            ]
            if not keys:
                break
            known = _spilled(spill, want_sql, keys)
            for k in keys:
                if k not in known:
                    problems.append(_differ(k, None, {}, columns, ref, what, where))  # type: ignore[arg-type]
            after = keys[-1]
    return problems


def _cached(
    store: Any, table: str, columns: Sequence[str], keys: Iterable[str]
) -> dict[str, dict[str, Any]]:
    wanted = sorted(keys)
    marks = ", ".join(f":k{i}" for i in range(len(wanted)))
    rows = store.query(
        f"SELECT {', '.join(columns)} FROM {table} WHERE {columns[0]} IN ({marks})",
        {f"k{i}": k for i, k in enumerate(wanted)},
    )
    return {r[0]: dict(zip(columns, r, strict=True)) for r in rows}


def _spilled(spill: Spill, want_sql: str, keys: Sequence[str]) -> set[str]:
    marks = ", ".join("?" * len(keys))
    sql = f"SELECT k FROM ({want_sql}) WHERE k IN ({marks})"
    return {k for (k,) in spill.db.execute(sql, list(keys))}


def check_jobs_projection(store: Reader, scanned: Scan, head: int) -> list[Problem]:
    """The jobs table against the chain's own fold (after catching it up)."""
    try:
        checkpoint = store.get_checkpoint(CHECKPOINT)
    except Exception:  # noqa: BLE001 - no projection table yet: nothing cached to disagree
        return []
    if checkpoint != head:
        return []  # not comparable (behind: catch-up failed; ahead: reported above)
    return _compare_table(
        store,
        scanned.spill,
        "SELECT job_id AS k, row FROM jobs ORDER BY job_id",
        TABLE,
        COLUMNS,
        lambda k: {"job_id": k},
        "job",
        "the jobs projection",
        whole=not scanned.start,
    )


def check_usage_projection(store: Any, scanned: Scan, head: int) -> list[Problem]:
    """The usage table (the outbox for Supabase) against usage rows folded from the chain: a row
    edited or deleted there would change what is reported as spent."""
    from imagen.projections.usage.fold import LOCAL_COLUMNS
    from imagen.projections.usage.table import CHECKPOINT as USAGE_CHECKPOINT
    from imagen.projections.usage.table import TABLE as USAGE_TABLE

    try:
        checkpoint = store.get_checkpoint(USAGE_CHECKPOINT)
    except Exception:  # noqa: BLE001 - no usage table yet: nothing cached to disagree
        return []
    if checkpoint != head:
        return []  # not comparable (behind: not caught up yet; ahead: reported above)
    return _compare_table(
        store,
        scanned.spill,
        "SELECT id AS k, row FROM usage ORDER BY id",
        USAGE_TABLE,
        LOCAL_COLUMNS,
        lambda k: {"projection": "usage", "row": k},
        "usage row",
        "the usage table",
        whole=not scanned.start,
    )


def check_spend_projection(store: Any, scanned: Scan, head: int) -> list[Problem]:
    """The spend table (a cache for reports) against the chain's own fold, as the jobs and
    usage tables are checked; and each job's recorded end figure against its fold."""
    from imagen.projections import spend

    try:
        spend.catch_up(store)
    except Exception:  # noqa: BLE001 - a ledger this process may only read: nothing cached
        pass
    problems = list(scanned.spend_recorded)
    with store.snapshot() as view:
        if not view.has_checkpoint(spend.CHECKPOINT) or view.checkpoint(spend.CHECKPOINT) != head:
            return problems  # not comparable (behind, ahead, or absent: a read-only ledger)
    return problems + _compare_table(
        store,
        scanned.spill,
        "SELECT job_id AS k, spend AS row FROM jobs WHERE spend != 'null' ORDER BY job_id",
        spend.SPEND.name,
        spend.SPEND.column_names,
        lambda k: {"projection": "spend", "job_id": k},
        "spend row",
        "the spend table",
        whole=not scanned.start,
    )


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        try:
            return math.isclose(float(a), float(b), rel_tol=1e-9)
        except (TypeError, ValueError):
            return False
    return a == b
