"""Big ledgers (issue #29): the first `imagen jobs` and the first `imagen usage` (every projection
caught up from nothing), and a catch-up after 1,000 new jobs, each beside its baseline in the
same run.

Baseline ("raw fold"): a fresh interpreter that only reads every event row through SQLAlchemy
and json-decodes its payload. Ledgers are made by `bench_jobs.build` (10k and 40k jobs by
default: IMAGEN_BENCH_BIGLEDGER_JOBS=10000,40000,100000 adds the 100k figures).

The incremental figure (IMAGEN_BENCH_BIGLEDGER_BIG jobs, 40k by default; the issue asks 100k):
the ledger is caught up, 1,000 jobs are appended, and the catch-up of those is timed in-process
beside a raw fold of just their events, and beside the same catch-up on a 1,000-job ledger.

IMAGEN_BENCH_BIGLEDGER_CODE=/path/to/another/checkout runs the `imagen` subprocesses from there
(the figures before a change, beside the same baseline).
"""

from __future__ import annotations

import inspect
import os
import resource
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ledger import open_store
from ledger.events import canonical_json, event_hash
from tests.benchmarks.bench_jobs import _job_events, build
from tests.benchmarks.report import line
from tests.benchmarks.sandbox import bytecode_cached

SIZES = [
    int(n or 0) for n in os.environ.get("IMAGEN_BENCH_BIGLEDGER_JOBS", "10000,40000").split(",")
]
BIG = int(os.environ.get("IMAGEN_BENCH_BIGLEDGER_BIG", "40000"))
NEW = 1000
RUNS = int(os.environ.get("IMAGEN_BENCH_BIGLEDGER_RUNS", "3"))
ROOT = Path(__file__).resolve().parents[2]
# The checkout whose `imagen` the subprocesses run (another one, e.g. main, for before/after).
CODE = os.environ.get("IMAGEN_BENCH_BIGLEDGER_CODE", str(ROOT))


def raw_fold(path: str, after: int) -> int:
    """The baseline: read every event row after `after` through SQLAlchemy and decode its JSON,
    nothing else. Run as its own source in a fresh interpreter (`RAW_FOLD`), or in-process."""
    import json

    from sqlalchemy import create_engine

    engine = create_engine(f"sqlite:///{path}")
    n = 0
    with engine.connect() as conn:
        rows = conn.exec_driver_sql(
            "SELECT position, event_id, stream_id, stream_version, type, schema_version, data,"
            " recorded_at, prev_hash, hash FROM events WHERE position > ? ORDER BY position",
            (after,),
        )
        for row in rows:
            json.loads(row[6])
            n += 1
    engine.dispose()
    return n


RAW_FOLD = inspect.getsource(raw_fold) + "\nimport sys\nraw_fold(sys.argv[1], int(sys.argv[2]))\n"


def _env(db: Path, tmp: Path) -> dict[str, str]:
    env = {
        **os.environ,
        "IMAGEN_LEDGER_URL": f"sqlite:///{db}",
        "IMAGEN_CONFIG": "",
        "PYTHONPATH": CODE,
        "XDG_CONFIG_HOME": str(tmp),
    }
    return bytecode_cached(env, tmp)


def _run(argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    """(wall, CPU) seconds of a subprocess: CPU time (user + system) is what a loaded machine
    (2 cores shared by many) disturbs least, so both are printed."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    # Not run from a checkout's directory: `-m imagen` would import the `imagen` there.
    subprocess.run(argv, env=env, check=True, capture_output=True, cwd=env["XDG_CONFIG_HOME"])
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def _first(source: Path, tmp: Path, args: list[str]) -> tuple[float, float]:
    """`imagen ARGS` on a fresh copy of a never-projected ledger."""
    db = tmp / "copy.db"
    shutil.copyfile(source, db)
    # The copy's dirty pages written out now, not by the measured command: its first commit's
    # fsync would otherwise flush them (ext4 orders data before its journal), system time
    # charged to imagen (~0.1 s on 100k jobs) and never to the raw fold, which only reads.
    os.sync()
    try:
        return _run([sys.executable, "-m", "imagen", *args], _env(db, tmp))
    finally:
        db.unlink()


def _raw(db: Path, tmp: Path, after: int = 0) -> tuple[float, float]:
    return _run([sys.executable, "-c", RAW_FOLD, str(db), str(after)], _env(db, tmp))


def extend(path: Path, first: int, jobs: int) -> int:
    """Append jobs `first`..`first+jobs-1` to a ledger made by `build` (the chain continued)."""
    import hashlib

    conn = sqlite3.connect(path)
    conn.execute("PRAGMA synchronous=OFF")
    pos, prev = conn.execute("SELECT position, hash FROM events ORDER BY position DESC").fetchone()
    rows = []
    for i in range(first, first + jobs):
        sid = hashlib.sha1(str(i).encode()).hexdigest()[:16]
        at = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(1_760_000_000 + i * 30)) + ".000000Z"
        for v, (typ, data) in enumerate(_job_events(i), start=1):
            pos += 1
            dj = canonical_json(data)
            eid = f"00000000-0000-0000-0000-{pos:012x}"
            h = event_hash(prev, pos, eid, sid, v, typ, 1, dj, at)
            rows.append((pos, eid, sid, v, typ, 1, dj, at, prev, h))
            prev = h
    conn.executemany("INSERT INTO events VALUES (?,?,?,?,?,?,?,?,?,?)", rows)
    conn.commit()
    conn.close()
    return int(pos)


def _catch_up_all(db: Path) -> float:
    """CPU seconds of catching every projection up (in this process)."""
    from imagen.projections import catchup

    store = open_store(f"sqlite:///{db}")
    try:
        start = time.process_time()
        catchup.catch_up(store)
        return time.process_time() - start
    finally:
        store.close()


def bench_first(tmp: Path, jobs: int) -> None:
    db = tmp / f"ledger{jobs}.db"
    t = time.perf_counter()
    events = build(db, jobs)
    print(f"built {jobs:,} jobs / {events:,} events in {time.perf_counter() - t:.1f}s", flush=True)
    runs: dict[str, list[tuple[float, float]]] = {"raw": [], "jobs": [], "usage": []}
    for _ in range(RUNS + 1):  # interleaved, so a load that comes and goes falls on all three
        runs["raw"].append(_raw(db, tmp))
        runs["jobs"].append(_first(db, tmp, ["jobs", "--limit", "20"]))
        runs["usage"].append(_first(db, tmp, ["usage"]))
    for r in runs.values():
        del r[0]  # the first round wrote the bytecode cache (_env)
    for i, what in enumerate(("wall", "CPU")):
        raw = statistics.median(r[i] for r in runs["raw"])
        for name, label in (("jobs", "imagen jobs --limit 20"), ("usage", "imagen usage")):
            ours = statistics.median(r[i] for r in runs[name])
            line(f"first {label}, {jobs:,} jobs ({what}, s)", ours, raw, "s", False, "<= 1.5x")
    db.unlink()


def _incremental(tmp: Path, jobs: int) -> tuple[float, float]:
    """(catch-up of NEW jobs appended to a caught-up ledger of `jobs`, raw fold of them)."""
    db = tmp / f"inc{jobs}.db"
    build(db, jobs)
    _catch_up_all(db)
    head = sqlite3.connect(db).execute("SELECT max(position) FROM events").fetchone()[0]
    extend(db, jobs, NEW)
    os.sync()  # (as `_first` says why: the built ledger's writes are not the catch-up's)
    ours = _catch_up_all(db)
    raw = statistics.median(_raw_in_process(db, head) for _ in range(RUNS))
    db.unlink()
    return ours, raw


def _raw_in_process(db: Path, after: int) -> float:
    """CPU seconds of the raw fold of the events after `after`, in this process."""
    start = time.process_time()
    raw_fold(str(db), after)
    return time.process_time() - start


def bench_incremental(tmp: Path) -> None:
    t = time.perf_counter()
    big, big_raw = _incremental(tmp, BIG)
    small, _ = _incremental(tmp, NEW)
    print(f"(incremental ledgers built and caught up in {time.perf_counter() - t:.1f}s)")
    line(
        f"catch-up of {NEW:,} new jobs on {BIG:,} (CPU s; vs on {NEW:,})",
        big,
        small,
        "s",
        False,
        "~1x: in proportion to the new jobs",
    )
    line(f"catch-up of {NEW:,} new jobs on {BIG:,} (CPU s; vs raw fold)", big, big_raw, "s", False)


def run() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        for jobs in SIZES:
            if jobs:
                bench_first(Path(tmp), jobs)
        if BIG:  # IMAGEN_BENCH_BIGLEDGER_BIG=0: not measured (e.g. for another checkout's figures)
            bench_incremental(Path(tmp))
