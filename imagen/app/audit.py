"""What `imagen audit` checks, derived from the verified chain alone.

Projections (the jobs table, sidecars) are caches: audit never takes a path or a sha256 from
them. It folds the verified events itself, checks the files against that fold, and reports any
projection that disagrees with it, or whose checkpoint is past the chain's head, as a finding.

One pass, in flat memory: each event is verified, then folded into its job; a job is held only
while it is open. Once it ends (or, past `OPEN_LIMIT` open jobs, the longest idle ones) it is
settled: its invariants, files and recorded spend figure checked, its rows compared with the
cached tables a few hundred jobs at a time, and dropped. A settled job that has events later
(after its end: itself a finding; or an idle one resuming) is read again up to there and
settled again, its first findings replaced.

A long chain is audited in two halves side by side (`_scan_in_halves`, two processes), to the
same verdict as one pass.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import os
import stat
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from operator import itemgetter
from pathlib import Path
from typing import Any

from imagen.core.events import current_shapes, newer_than_this, payload_of
from imagen.projections.jobs import fold as projection
from imagen.projections.jobs.query import CHECKPOINT
from imagen.projections.usage.fold import READS as USAGE_READS
from imagen.repository import payload
from ledger.chain import ChainWalk, Head, VerifyReport
from ledger.events import RecordedEvent
from ledger.interface import Reader, TableSpec

IDENTITY_STREAM = "$ledger"
OPEN_LIMIT = 2000  # open jobs held at most; past it the longest idle are settled early
# Events from which an audit runs in two processes (below, a second one would not pay).
PARALLEL_FROM = 200_000
SETTLE = 500  # settled jobs compared with the cached tables per query

Problem = dict[str, Any]


_READ_FLAGS = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
_WHOLE = 1 << 24  # a file up to this size is hashed from one read


def file_sha256(path: Path | str) -> str | None:
    """The sha256 of the regular file at `path`, None if there is none this process can read
    (missing, a directory, a FIFO: opened without blocking, so one never hangs audit or the
    gallery; a link loop, a name too long, no permission, a read error). One open, fstat and
    read for an image-sized file: audit hashes every image, and a stat before and the 256 KiB
    buffer `file_digest` allocates per file were half of it (measured)."""
    opened = _open_regular(path)
    if opened is None:
        return None
    fd, size = opened
    try:
        if size < _WHOLE:
            data = os.read(fd, size + 1)  # (+1: a file grown since is read to its end)
            if len(data) <= size:
                return hashlib.sha256(data).hexdigest()
            os.lseek(fd, 0, os.SEEK_SET)
        with open(fd, "rb", closefd=False) as fh:
            return hashlib.file_digest(fh, "sha256").hexdigest()
    except OSError:
        return None
    finally:
        os.close(fd)


def _small_regular_file(path: str, limit: int = _WHOLE) -> bytes | None:
    """The bytes of the regular file at `path`, None if there is none or it is over `limit`
    (a sidecar: a FIFO in its place must not hang the audit either)."""
    opened = _open_regular(path)
    if opened is None:
        return None
    fd, size = opened
    try:
        data = os.read(fd, min(size, limit) + 1)
        return data if len(data) <= limit else None
    except OSError:
        return None
    finally:
        os.close(fd)


def _open_regular(path: Path | str) -> tuple[int, int] | None:
    """A descriptor open on the regular file at `path` (the caller closes it) and its size,
    or None (no such file, or one that cannot be opened: whatever the chain names, never an
    error that ends the audit)."""
    try:
        fd = os.open(path, _READ_FLAGS)
    except (OSError, ValueError):  # (ValueError: a NUL in a hostile path)
        return None
    info = os.fstat(fd)
    if stat.S_ISREG(info.st_mode):
        return fd, info.st_size
    os.close(fd)
    return None


@dataclass(frozen=True)
class Cache:
    """A cached table audit compares with its own fold: its spec (name, the columns compared,
    and the key a row is looked up by), what a row is called in a finding, and where it is
    cached."""

    spec: TableSpec  # the table's columns audit compares, looked up by its `key`
    what: str
    where: str
    ref: Callable[[str], dict[str, Any]]

    @property
    def table(self) -> str:
        return self.spec.name

    @property
    def columns(self) -> tuple[str, ...]:
        return self.spec.column_names

    @property
    def key(self) -> str:
        return self.spec.key


def caches() -> dict[str, Cache]:
    from imagen.projections import spend
    from imagen.projections.jobs.table import JOBS
    from imagen.projections.usage.table import USAGE

    # The usage table's rows are told apart by `id` (its key is the outbox's counter).
    usage = TableSpec(USAGE.name, "id", USAGE.columns[1:])
    return {
        "jobs": Cache(JOBS, "job", "the jobs projection", lambda k: {"job_id": k}),
        "usage": Cache(
            usage,
            "usage row",
            "the usage table",
            lambda k: {"projection": "usage", "row": k},
        ),
        "spend": Cache(
            spend.SPEND,
            "spend row",
            "the spend table",
            lambda k: {"projection": "spend", "job_id": k},
        ),
    }


def comparable(store: Any, head: int) -> set[str]:
    """The cached tables whose checkpoint is the chain's head (after catching them up): only
    those can be compared row by row (behind: appended since; ahead: reported as such)."""
    from imagen.projections import spend
    from imagen.projections.usage.table import CHECKPOINT as USAGE_CHECKPOINT

    names = {"jobs": CHECKPOINT, "usage": USAGE_CHECKPOINT, "spend": spend.CHECKPOINT}
    out = set()
    with store.snapshot() as view:
        for name, checkpoint in names.items():
            if view.has_checkpoint(checkpoint) and view.checkpoint(checkpoint) == head:
                out.add(name)
    return out


class KeySet:
    """A set of keys in constant memory: per bucket of their hashes, a count and an xor.
    Two sets that differ differ in some bucket, which names the few keys to look at."""

    BUCKETS = 4096

    def __init__(self) -> None:
        self.count = [0] * self.BUCKETS
        self.xor = [0] * self.BUCKETS

    def flip(self, key: str, n: int = 1) -> None:
        h = hash(key)
        b = h % self.BUCKETS
        self.count[b] += n
        self.xor[b] ^= h

    @classmethod
    def bucket(cls, key: str) -> int:
        return hash(key) % cls.BUCKETS

    def add(self, other: KeySet) -> None:
        """The keys of both (a key's hash is the same in a process forked from this one)."""
        for b in range(self.BUCKETS):
            self.count[b] += other.count[b]
            self.xor[b] ^= other.xor[b]

    def differing(self, other: KeySet) -> set[int]:
        return {
            b
            for b in range(self.BUCKETS)
            if self.count[b] != other.count[b] or self.xor[b] != other.xor[b]
        }


@dataclass(slots=True)
class _Job:
    """A job while it is open: its last version and event, its row so far, the events its
    usage and spend rows are folded from (each with its decoded data: `_rows`) and the images
    it stored (path -> sha256, position)."""

    version: int = 0
    last: RecordedEvent | None = None
    row: dict[str, Any] | None = None
    events: list[tuple[RecordedEvent, Any]] = field(default_factory=list)
    images: dict[str, tuple[str, int]] = field(default_factory=dict)

    def add(self, jid: str, e: RecordedEvent, data: Any) -> None:
        """One more of the job's events, folded as the jobs projection folds it."""
        self.version = e.stream_version
        self.last = e
        row = self.row
        if row is None:
            row = self.row = projection.new_row(jid, e.recorded_at)
        # In place and unpriced: the cost is set once, when the row is compared (`_rows`).
        # An event that only moves the row's times is folded here, as `fold_into` does.
        if e.type in projection.READS or row["terminal_events"]:
            projection.step(row, e.type, data, e.recorded_at, e.position, e.schema_version)
        else:
            row["updated_at"], row["last_position"] = e.recorded_at, e.position
        if e.type in USAGE_READS:
            self.events.append((e, data))
        if e.type == "ImageStored":
            self.images[str(data.get("path"))] = (str(data.get("sha256")), e.position)

    @classmethod
    def read(cls, store: Any, jid: str, before: int) -> _Job:
        """The job as its events before position `before` make it, read from the ledger."""
        job = cls()
        for e in store.read_stream(jid):
            if e.position < before:
                job.add(jid, e, payload(e))
        return job


@dataclass(slots=True)
class _Settled:
    """What audit keeps of a settled job until its batch is compared with the caches."""

    jid: str
    rows: dict[str, dict[str, dict[str, Any]]]  # cache name -> key -> row folded
    images: int = 0  # images it counted as checked
    sidecars: tuple[str, ...] = ()  # sidecars it found naming it (`Audit.sidecars`)


@dataclass
class Scan:
    report: VerifyReport
    problems: list[Problem]
    newer: dict[str, int]
    images_checked: int
    folders: set[Path]  # where the chain's images are
    most_open: int  # the most jobs held at once (flat memory: bounded by OPEN_LIMIT)
    halves: bool = False  # audited in two processes (`_scan_in_halves`)
    sidecars: KeySet | None = None  # the sidecars found naming their job (`Audit.sidecars`)


class Audit:
    """One pass over the chain: see the module doc."""

    def __init__(
        self,
        store: Any,
        start: Head | None,
        compare: set[str],
        *,
        open_limit: int = OPEN_LIMIT,
        settle: int = SETTLE,
        handoff: int | None = None,
    ) -> None:
        self.store = store
        self.walk = ChainWalk(start)
        self.begin = self.walk.head.position
        # The first half of a parallel audit: a job with events after this position is the
        # second half's (which reads the job's earlier events), so this half drops it.
        self.handoff = handoff
        self.compare = {name: c for name, c in caches().items() if name in compare}
        self.open_limit, self.settle_size = open_limit, settle
        self.held: dict[str, _Job] = {}
        self.current = current_shapes()  # `newer_than_this`'s common case, checked in line
        self.others: dict[str, int] = {}  # streams that are not jobs ("$ledger", "$budgets")
        self.newer: dict[str, int] = {}
        self.found: dict[str, list[Problem]] = {}  # per job, replaced when it is settled again
        self.checked = 0  # images checked
        self.pending: dict[str, _Settled] = {}
        self.keys = {name: KeySet() for name in self.compare}
        # The sidecars found naming their own job (checked with its image): known, so the
        # search for files of unknown jobs need not read them again (`check_unknown_files`).
        self.sidecars = KeySet()
        self.folders: set[str] = set()
        self.most_open = 0

    def run(
        self, head: int, progress: Callable[[int], None] | None = None, batch: int = 5000
    ) -> Part:
        from ledger.projection import no_cycle_collection

        # One read view up to the head the audit starts from, one batch in memory at a time;
        # the cycle collector waits until the pass is done (ledger/projection.py says why).
        with no_cycle_collection():
            for chunk in self.store.read_batches(self.begin, batch=batch, until=head):
                if not self.feed(chunk):
                    break
                if progress is not None:
                    progress(self.walk.head.position)
            for jid, job in list(self.held.items()):
                if job.last is not None:  # (not one opened by an event the chain broke at)
                    self._release(jid)
            self._settle()
        return self.part()

    def feed(self, events: Iterable[RecordedEvent]) -> bool:
        """Verify and fold `events` (the next in the chain); False once the chain breaks."""
        held, current = self.held, self.current
        for e in events:
            sid = e.stream_id
            job = held.get(sid)
            if job is None and not sid.startswith("$"):
                job = held[sid] = _Job() if e.stream_version == 1 else self._open(sid, e.position)
                if len(held) > self.most_open:
                    self.most_open = len(held)
            if job is None:
                last = self.others.get(sid)
                if last is None:
                    last = self.others[sid] = self._other_before(sid)
            else:
                last = job.version
            if not self.walk.step(e, last):
                return False
            data = None if sid == IDENTITY_STREAM else payload_of(e.data_json)
            if data is not None and not (
                (shape := current.get(e.type)) is not None
                and shape[0] == e.schema_version
                and type(data) is dict
                and shape[1].issuperset(data)
            ):
                if what := newer_than_this(e.type, e.schema_version, data):
                    self.newer[what] = self.newer.get(what, 0) + 1
            if job is None:  # the ledger's identity, budgets: not a job
                self.others[sid] = e.stream_version
                continue
            job.add(sid, e, data)
            if e.type in _ENDS:
                self._release(sid)  # ended: settled now, its state dropped
            elif len(held) > self.open_limit:
                idle = sorted(held, key=lambda j: held[j].last.position)  # type: ignore[union-attr]
                for jid in idle[: len(held) - self.open_limit // 2]:
                    self._release(jid)
        return True

    def _other_before(self, sid: str) -> int:
        """The version a stream that is not a job ("$budgets") had where the audit began:
        0 from the genesis, else as the ledger holds it up to there (vouched for by the
        checkpoint's hash)."""
        if not self.begin:
            return 0
        rows = self.store.query(
            "SELECT coalesce(max(stream_version), 0) FROM events"
            " WHERE stream_id = :sid AND position <= :begin",
            {"sid": sid, "begin": self.begin},
        )
        return int(rows[0][0])

    def _open(self, jid: str, position: int) -> _Job:
        """A job not held: new, or (its events before `position` in the ledger) settled
        earlier in this audit or begun before the checkpoint it started from. Those events
        were verified by this walk, or are vouched for by the checkpoint's hash."""
        job = _Job.read(self.store, jid, position)
        if job.last is not None and job.last.position > self.begin:
            # Settled before in this audit: what it counted then is taken back.
            settled = self.pending.pop(jid, None)
            if settled is None:
                succeeded = job.row is not None and job.row["status"] == "succeeded"
                rows = {n: r for n, r in _rows(jid, job).items() if n in self.compare}
                settled = _Settled(jid, rows, len(job.images) if succeeded else 0)
            self._take_back(settled)
        return job

    def _take_back(self, settled: _Settled) -> None:
        """Undo what settling a job counted: its findings, images checked and keys."""
        self.found.pop(settled.jid, None)
        self.checked -= settled.images
        for side in settled.sidecars:
            self.sidecars.flip(side, -1)
        for name, rows in settled.rows.items():
            for key in rows:
                self.keys[name].flip(key, -1)

    def _settled(self, jid: str, job: _Job) -> _Settled:
        """A job's rows folded, and its own checks (findings kept by job)."""
        from imagen.projections import spend

        rows = _rows(jid, job)
        assert job.row is not None
        problems = invariants(job.row)
        last = job.last
        assert last is not None
        if job.row["terminal_events"] and last.type in _ENDS:
            end = spend.End(jid, last.position, last.data_json, last.recorded_at)
            # Its data as decoded already (an end is one of the events `_Job.events` keeps).
            data = job.events[-1][1] if job.events and job.events[-1][0] is last else None
            if (found := spend.recorded_difference(end, rows["spend"].get(jid), data)) is not None:
                problems.append(found)
        checked, sidecars = 0, []
        if job.row["status"] == "succeeded":
            for path, (sha, position) in job.images.items():
                found, side = check_image(jid, path, sha, position)
                problems.extend(found)
                if side is not None:
                    self.sidecars.flip(side)
                    sidecars.append(side)
            checked = len(job.images)
            self.checked += checked
        self.folders.update(os.path.dirname(p) for p in job.images)  # (a Path per image: slow)
        if problems:
            self.found[jid] = problems
        rows = {n: r for n, r in rows.items() if n in self.compare}
        return _Settled(jid, rows, checked, tuple(sidecars))

    def _release(self, jid: str) -> None:
        settled = self._settled(jid, self.held.pop(jid))
        for name, rows in settled.rows.items():
            for key in rows:
                self.keys[name].flip(key)
        self.pending[jid] = settled
        if len(self.pending) >= self.settle_size:
            self._settle()

    def _settle(self) -> None:
        """The settled jobs' rows against the cached tables, one query per table."""
        if self.handoff is not None and self.pending:
            for jid in _continued(self.store, list(self.pending), self.handoff):
                self._take_back(self.pending.pop(jid))  # the second half's to settle
        for name, cache in self.compare.items():
            want = {k: r for s in self.pending.values() for k, r in s.rows[name].items()}
            if not want:
                continue
            columns, need = cache.columns, frozenset(cache.columns)
            have = self.store.row_values(cache.spec, want)  # (tuples: no dict per row)
            values = _values_of(columns)
            for s in self.pending.values():
                for k, w in s.rows[name].items():
                    h = have.get(k)
                    if h is not None and w.keys() >= need and values(w) == h:
                        continue  # the same, exactly: most rows
                    cached = None if h is None else dict(zip(columns, h, strict=True))
                    if (p := _differ(k, w, cached, cache)) is not None:
                        self.found.setdefault(s.jid, []).append(p)
        self.pending.clear()

    def part(self) -> Part:
        """What this pass found, to be finished alone or merged with the other half's."""
        return Part(
            self.walk.report(),
            [p for found in self.found.values() for p in found],
            self.newer,
            self.checked,
            self.folders,
            self.most_open,
            self.keys,
            self.sidecars,
        )


@dataclass
class Part:
    """One pass's findings over a stretch of the chain (picklable: a parallel audit's second
    half comes back from its process as one)."""

    report: VerifyReport
    problems: list[Problem]
    newer: dict[str, int]
    checked: int
    folders: set[str]
    most_open: int
    keys: dict[str, KeySet]  # cache name -> the keys of the rows folded
    sidecars: KeySet


def _finish(store: Any, begin: int, compare: set[str], parts: Sequence[Part]) -> Scan:
    """The parts (in chain order, each starting where the one before ended) as one scan: the
    checks that need the whole chain (a file two jobs stored; rows cached that no job folds,
    on a full audit) run once, over all of them."""
    first = parts[0]
    report, problems = first.report, list(first.problems)
    newer, checked = dict(first.newer), first.checked
    folders, most_open = set(first.folders), first.most_open
    keys, sidecars = first.keys, first.sidecars
    for part in parts[1:]:
        report = VerifyReport(
            report.checked + part.report.checked,
            part.report.head,
            part.report.first_broken,
            part.report.reason,
        )
        problems += part.problems
        for what, n in part.newer.items():
            newer[what] = newer.get(what, 0) + n
        checked += part.checked
        folders |= part.folders
        most_open = max(most_open, part.most_open)
        for name, more in part.keys.items():
            keys[name].add(more)
        sidecars.add(part.sidecars)
    problems = _last_stored(store, report.head.position, problems)
    if not begin and report.first_broken is None:
        for name, cache in caches().items():
            if name in compare:
                problems.extend(_extra(store, report.head.position, cache, keys[name], name))
    problems.sort(key=_rank)
    folder_paths = {Path(f) for f in folders}
    return Scan(report, problems, newer, checked, folder_paths, most_open, sidecars=sidecars)


_ORDER = {"invariant": 0, "image_missing": 1, "image_modified": 1, "sidecar": 1}
_TABLES = {"jobs": 0, "usage": 1, "spend": 2}


def _rank(problem: Problem) -> int:
    """Findings by kind, cached rows last, table by table; else in the order jobs were
    settled (the same in one pass as in two halves)."""
    if problem["kind"] == "projection":
        return 3 + _TABLES.get(problem.get("projection", "jobs"), 3)
    return _ORDER.get(problem["kind"], 2)


def _extra(store: Any, head: int, cache: Cache, folded: KeySet, name: str) -> list[Problem]:
    """Rows cached that the chain's fold does not have (a full audit only): the cached
    keys are read a page at a time into a KeySet; in the few buckets where it differs
    from the keys folded, each cached key's job is folded again to tell."""
    cached = KeySet()
    for page in _keys(store, cache):
        for k in page:
            cached.flip(k)
    differ = folded.differing(cached)
    if not differ:
        return []
    problems = []
    for page in _keys(store, cache):
        for k in page:
            if folded.bucket(k) in differ and not _folds(store, head, k, name):
                problems.append(_differ(k, None, {}, cache))  # type: ignore[arg-type]
    return [p for p in problems if p is not None]


def _folds(store: Any, head: int, key: str, name: str) -> bool:
    """Whether the chain's fold has `key` in cache `name` (its job folded again)."""
    for jid in dict.fromkeys((key, key.rpartition(":")[0])):
        if not jid or jid.startswith("$"):
            continue
        job = _Job.read(store, jid, head + 1)
        if job.row is not None and key in _rows(jid, job)[name]:
            return True
    return False


def _continued(store: Any, job_ids: list[str], after: int) -> list[str]:
    """Those of the jobs that have events after position `after`. (`position + 0`: looked up
    through each stream's index, not a range of positions that may be half the ledger.)"""
    found: list[str] = []
    for i in range(0, len(job_ids), 500):
        part = job_ids[i : i + 500]
        names = {f"j{n}": jid for n, jid in enumerate(part)}
        rows = store.query(
            f"SELECT DISTINCT stream_id FROM events WHERE stream_id IN "
            f"({', '.join(':' + n for n in names)}) AND position + 0 > :after",
            {**names, "after": after},
        )
        found += [r[0] for r in rows]
    return found


_ENDS = frozenset(("JobSucceeded", "JobFailed", "JobCancelled"))


def scan(
    store: Any,
    head: Head,
    *,
    start: Head | None = None,
    compare: Iterable[str] = (),
    progress: Callable[[int], None] | None = None,
    open_limit: int = OPEN_LIMIT,
    parallel_from: int = PARALLEL_FROM,
) -> Scan:
    """The chain up to `head` verified (from `start`, a checkpoint an earlier audit verified,
    or from the genesis), its jobs folded and checked, and compared with the cached tables
    named in `compare` (see `comparable`). From `parallel_from` events on, in two processes
    (`_scan_in_halves`)."""
    wanted = set(compare)
    begin = start.position if start else 0
    if head.position - begin >= max(parallel_from, 2) and _can_fork():
        return _scan_in_halves(store, head, start, wanted, progress, open_limit)
    part = Audit(store, start, wanted, open_limit=open_limit).run(head.position, progress)
    return _finish(store, begin, wanted, [part])


def _scan_in_halves(
    store: Any,
    head: Head,
    start: Head | None,
    compare: set[str],
    progress: Callable[[int], None] | None,
    open_limit: int,
) -> Scan:
    """The chain's two halves audited side by side: this process takes the first (and the
    bar), a forked one the second, from the first's last event (whose hash the first half
    verifies). A job belongs to the half with its last event: the first drops a job that
    goes on after the middle, and the second reads that job's earlier events. Each half's
    findings, counts and cached-row keys then merge as one pass's (`_finish`). A chain broken
    in either half, or a second half that failed, is audited again in one pass, so every
    verdict is the one-pass audit's."""
    import multiprocessing

    begin = start.position if start else 0
    middle = begin + (head.position - begin) // 2
    second = Head(middle, store.hashes_at([middle])[middle])
    context = multiprocessing.get_context("fork")
    receive, send = context.Pipe(duplex=False)
    for stream in (sys.stdout, sys.stderr):
        stream.flush()  # (or the child would write what is buffered a second time)
    child = context.Process(
        target=_second_half,
        args=(store, second, head.position, compare, open_limit, send, os.getpid()),
        daemon=True,
    )
    child.start()
    send.close()
    try:
        scaled = None
        if progress is not None:

            def scaled(position: int) -> None:  # both halves go at about the same pace
                progress(min(begin + 2 * (position - begin), head.position))

        first = Audit(store, start, compare, open_limit=open_limit, handoff=middle).run(
            middle, scaled
        )
        try:
            outcome, last = receive.recv()
        except EOFError:  # the process died
            outcome, last = "failed", None
        child.join(timeout=30)
    finally:
        receive.close()
        if child.is_alive():
            child.terminate()
            child.join(timeout=30)
    if outcome == "ok" and first.report.first_broken is None and last.report.first_broken is None:
        return dataclasses.replace(_finish(store, begin, compare, [first, last]), halves=True)
    part = Audit(store, start, compare, open_limit=open_limit).run(head.position, progress)
    return _finish(store, begin, compare, [part])


def _second_half(
    store: Any,
    start: Head,
    until: int,
    compare: set[str],
    open_limit: int,
    send: Any,
    parent: int,
) -> None:
    """In the forked process: the chain after `start` audited, the part sent back."""
    store.engine.dispose(close=False)  # the parent's connections stay the parent's

    def orphaned(_position: int) -> None:
        if os.getppid() != parent:  # the audit that asked is gone: stop
            raise SystemExit(1)

    try:
        part = Audit(store, start, compare, open_limit=open_limit).run(until, orphaned)
        send.send(("ok", part))
    except BaseException as exc:  # noqa: BLE001 - the parent audits this half itself
        with contextlib.suppress(BaseException):
            send.send(("failed", f"{type(exc).__name__}: {exc}"))
    finally:
        send.close()


def _can_fork() -> bool:
    """Two processes only where forking is safe and pays: POSIX fork, no other thread (a
    fork copies none of them, nor what they hold), two CPUs this process may use."""
    import threading

    if not hasattr(os, "fork") or threading.active_count() > 1:
        return False
    cpus = (
        os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else range(os.cpu_count() or 1)
    )
    return len(cpus) >= 2


def _rows(jid: str, job: _Job) -> dict[str, dict[str, dict[str, Any]]]:
    """The rows each cached table holds for the job, keyed as there: its jobs row, its usage
    rows and its spend row (none before its request), folded as the projections fold them."""
    from imagen.projections import spend
    from imagen.projections.usage.fold import usage_rows

    # Folded from the types usage and spend rows come from (`_Job.events`), as the usage
    # table reads them when caught up alone (the rows are the same: tests/support/properties.py).
    state = _fold_job(jid, job.events)
    usage = usage_rows(state)
    spend_row = spend.row(state, usage)
    return {
        "jobs": {jid: projection.priced(job.row) if job.row else {}},
        "usage": {r["id"]: r for r in usage},
        "spend": {} if spend_row is None else {jid: spend_row},
    }


def _fold_job(jid: str, events: Sequence[tuple[RecordedEvent, Any]]) -> Any:
    from imagen.core.job import fold as fold_job
    from imagen.repository import to_recorded

    return fold_job(jid, [to_recorded(e, data) for e, data in events])


def _batched(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    chunk: list[Any] = []
    for item in items:
        chunk.append(item)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


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


def invariants(row: dict[str, Any]) -> list[Problem]:
    """One job's row: one terminal event at most, and nothing after it."""
    problems: list[Problem] = []
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
                "message": f"job {jid} has {row['events_after_terminal']} event(s) after it ended",
            }
        )
    return problems


def check_image(
    jid: str, path_text: str, sha: str, position: int
) -> tuple[list[Problem], str | None]:
    """A succeeded job's image (the chain's path and sha256, stored at `position`) and its
    sidecar: the findings, and the sidecar's path when it names this job and image."""
    digest = file_sha256(path_text)  # (strings, not Paths: audit checks every image)
    side_text = f"{path_text}.json"
    if digest is None:
        path = Path(path_text)
        # Something there that is no readable file (a directory, a FIFO, a link loop, no
        # permission) is not missing: the message says so.
        what = "unreadable (no regular file it may read)" if os.path.lexists(path) else "missing"
        return [
            {
                "kind": "image_missing",
                "job_id": jid,
                "path": path_text,
                "position": position,
                "message": f"job {jid}: image {what}: {path}",
            }
        ], None
    problems: list[Problem] = []
    if digest != sha:
        path = Path(path_text)
        problems.append(
            {
                "kind": "image_modified",
                "job_id": jid,
                "path": path_text,
                "position": position,
                "message": f"job {jid}: image modified since it was stored: {path}",
            }
        )
    try:
        text = _small_regular_file(side_text)
        data = None if text is None else json.loads(text)
        ok = (
            isinstance(data, dict)
            and data.get("job_id") == jid
            and isinstance(data.get("image"), dict)
            and data["image"].get("sha256") == sha
            and data["image"].get("path") == path_text
        )
    except (OSError, ValueError):
        ok = False
    if ok:
        return problems, side_text
    side = Path(side_text)
    missing = not side.exists()
    problems.append(
        {
            "kind": "sidecar",
            "job_id": jid,
            "path": str(side),
            "position": position,
            # A crash right after JobSucceeded leaves no sidecar: name the fix.
            "message": f"job {jid}: sidecar missing: {side} (`imagen resume {jid}` "
            "or `imagen rebuild` writes it)"
            if missing
            else f"job {jid}: sidecar differs from the ledger: {side} "
            "(`imagen rebuild` rewrites it)",
        }
    )
    return problems, None


_FILE_KINDS = ("image_missing", "image_modified", "sidecar")


def _last_stored(store: Any, head: int, problems: list[Problem]) -> list[Problem]:
    """A path two jobs stored is the later one's: a file finding of the earlier job there is
    dropped (only when there are file findings: the image events are read again, a page at
    a time, for the paths they name)."""
    paths = {
        p["path"].removesuffix(".json") if p["kind"] == "sidecar" else p["path"]: 0
        for p in problems
        if p["kind"] in _FILE_KINDS
    }
    if not paths:
        return problems
    after = 0
    while rows := store.query(
        "SELECT position, data FROM events WHERE type = 'ImageStored' AND position > :a"
        " AND position <= :h ORDER BY position LIMIT 5000",
        {"a": after, "h": head},
    ):
        for position, data in rows:
            try:
                path = json.loads(data).get("path")
            except (ValueError, AttributeError):
                continue
            if path in paths:
                paths[path] = position
        after = rows[-1][0]
    kept = []
    for p in problems:
        if p["kind"] in _FILE_KINDS:
            path = p["path"].removesuffix(".json") if p["kind"] == "sidecar" else p["path"]
            if paths[path] > p["position"]:
                continue  # a later job stored this path: its own check covers it
        kept.append({k: v for k, v in p.items() if k != "position" or p["kind"] not in _FILE_KINDS})
    return kept


def check_unknown_files(
    store: Any,
    head: int,
    parents: Iterable[Path],
    folders: Sequence[Path],
    known: KeySet | None = None,
) -> list[Problem]:
    """Sidecars (and their images) for jobs the chain does not have, in the folders the chain's
    images are in and in `folders` (the configured output directory): what a removed tail
    leaves on disk, whatever the projections and the head file were made to say. A job
    recorded after `head` (one running while audit reads) is not unknown.

    `known`: the sidecars the scan found naming their own job (`Audit.sidecars`). The folders'
    `.json` files are listed first (names only): where a bucket of them holds exactly the
    known ones, none is read again; the others are read as every one is without `known`."""
    problems: list[Problem] = []
    found: list[tuple[Path, str]] = []
    places = sorted(set(parents) | set(folders))
    unread = None if known is None else _unknown_buckets(places, known)
    for folder in places:
        try:
            entries = (
                e
                for e in os.scandir(folder)
                if e.name.endswith(".json") and (unread is None or KeySet.bucket(e.path) in unread)
            )
            sides = ((folder / e.name, jid) for e in entries if (jid := _sidecar_job(e)))
            # Any event of the job (those after `head` too: a job running while audit reads,
            # or past a break in the chain) makes it known; asked in chunks, never all at once.
            for chunk in _batched(sides, 500):
                known_ids = _streams_present(store, {jid for _, jid in chunk})
                found.extend((side, jid) for side, jid in chunk if jid not in known_ids)
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


def _unknown_buckets(places: Sequence[Path], known: KeySet) -> set[int] | None:
    """The buckets whose `.json` files in `places` are not exactly the `known` sidecars (None:
    a folder could not be listed, so every file is read)."""
    listed = KeySet()
    for folder in places:
        try:
            for e in os.scandir(folder):
                if e.name.endswith(".json"):
                    listed.flip(e.path)
        except FileNotFoundError:
            continue  # (no files there to read either)
        except OSError:
            return None
    return listed.differing(known)


def _sidecar_job(side: os.DirEntry[str]) -> str | None:
    """The job an imagen sidecar names, when it is one written beside its own image path.
    (A directory entry knows whether it is a link or a file without asking the system again:
    audit reads every sidecar in the chain's folders.)"""
    try:
        if side.is_symlink() or not side.is_file() or side.stat().st_size > 10_000_000:
            return None
        with open(side.path, "rb") as fh:
            data = json.loads(fh.read())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("image"), dict):
        return None
    jid = data.get("job_id")
    if not isinstance(jid, str) or data["image"].get("path") != side.path[: -len(".json")]:
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
    from imagen.runner.files import atomic_write

    try:
        # A temporary file of its own (two audits at once never write one file), synced.
        atomic_write(path, (json.dumps({"verified": kept}, indent=1) + "\n").encode())
    except OSError:
        pass  # the audit stands; the next one starts from the genesis


def choose_checkpoint(path: Path, wanted: str, before: datetime | None = None) -> Head | None:
    """--from-position N: the recorded checkpoint at N or the last one before it; `last`:
    the latest. `before` (--since): only those verified at or before it. None when no
    audit recorded one there."""
    from imagen.core.times import parse_iso

    points = read_checkpoints(path)
    try:
        if wanted != "last":
            limit = int(wanted)
            points = [c for c in points if int(c["position"]) <= limit]
        if before is not None:
            points = [c for c in points if parse_iso(str(c["verified_at"])) <= before]
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


def _keys(store: Any, cache: Cache, size: int = 5000) -> Iterator[list[str]]:
    """The cached table's keys in order, a page at a time."""
    after = ""
    while keys := [
        r[0]
        for r in store.query(
            f"SELECT {cache.key} FROM {cache.table} WHERE {cache.key} > :after"
            f" ORDER BY {cache.key} LIMIT {size}",
            {"after": after},
        )
    ]:
        yield keys
        after = keys[-1]


def _values_of(columns: tuple[str, ...]) -> Callable[[dict[str, Any]], tuple[Any, ...]]:
    """A row's values in `columns` order, as a tuple (itemgetter's, also for one column)."""
    get = itemgetter(*columns)
    return get if len(columns) > 1 else lambda row: (get(row),)


def _differ(
    key: str, w: dict[str, Any] | None, h: dict[str, Any] | None, cache: Cache
) -> Problem | None:
    """A cached row (`h`) against the chain's own fold (`w`): missing, extra or differing is
    a finding that names what it is and where it is cached."""
    found = {"kind": "projection", **cache.ref(key)}
    what, where = cache.what, cache.where
    if w is None or h is None:
        side = "missing from" if h is None else "not in the chain but in"
        return {**found, "message": f"{what} {key} is {side} {where} (`imagen rebuild`)"}
    differ = [c for c in cache.columns if not _same(w.get(c), h.get(c))]
    if not differ:
        return None
    return {
        **found,
        "columns": differ,
        "message": f"{what} {key}: {where} disagrees with the chain on "
        f"{', '.join(differ)} (`imagen rebuild`)",
    }


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        try:
            return math.isclose(float(a), float(b), rel_tol=1e-9)
        except (TypeError, ValueError):
            return False
    return a == b
