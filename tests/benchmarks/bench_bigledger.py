"""Big ledgers (issue #29): the first `imagen jobs` and the first `imagen usage` (every projection
caught up from nothing), and a catch-up after 1,000 new jobs, each beside its baseline in the
same run.

Baseline ("raw fold"): a fresh interpreter that only reads every event row through SQLAlchemy
and json-decodes its payload. Ledgers are made by `bench_jobs.build` (10k and 40k jobs by
default: IMAGEN_BENCH_BIGLEDGER_JOBS=10000,40000,100000 adds the 100k figures).

The incremental figure (IMAGEN_BENCH_BIGLEDGER_BIG jobs, 40k by default; the issue asks 100k):
the ledger is caught up, 1,000 jobs are appended, and the catch-up of those is timed in-process
beside a raw fold of just their events, and beside the same catch-up on a 1,000-job ledger.
"""

from __future__ import annotations

import os
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
from tests.benchmarks.report import line, timed

SIZES = [int(n) for n in os.environ.get("IMAGEN_BENCH_BIGLEDGER_JOBS", "10000,40000").split(",")]
BIG = int(os.environ.get("IMAGEN_BENCH_BIGLEDGER_BIG", "40000"))
NEW = 1000
RUNS = int(os.environ.get("IMAGEN_BENCH_BIGLEDGER_RUNS", "3"))
ROOT = Path(__file__).resolve().parents[2]

# The baseline: read every event row through SQLAlchemy and decode its JSON, nothing else.
RAW_FOLD = (
    "import json, sys\n"
    "from sqlalchemy import create_engine\n"
    "engine = create_engine('sqlite:///' + sys.argv[1])\n"
    "n = 0\n"
    "with engine.connect() as conn:\n"
    "    rows = conn.exec_driver_sql(\n"
    "        'SELECT position, event_id, stream_id, stream_version, type, schema_version, data,'\n"
    "        ' recorded_at, prev_hash, hash FROM events WHERE position > ? ORDER BY position',\n"
    "        (int(sys.argv[2]),))\n"
    "    for row in rows:\n"
    "        json.loads(row[6])\n"
    "        n += 1\n"
    "print(n)\n"
)


def _env(db: Path, tmp: Path) -> dict[str, str]:
    return {
        **os.environ,
        "IMAGEN_LEDGER_URL": f"sqlite:///{db}",
        "IMAGEN_CONFIG": "",
        "PYTHONPATH": str(ROOT),
        "XDG_CONFIG_HOME": str(tmp),
    }


def _run(argv: list[str], env: dict[str, str]) -> float:
    t = time.perf_counter()
    subprocess.run(argv, env=env, check=True, capture_output=True)
    return time.perf_counter() - t


def _first(source: Path, tmp: Path, args: list[str]) -> float:
    """Median wall time of `imagen ARGS` on fresh copies of a never-projected ledger."""
    times = []
    for i in range(RUNS):
        db = tmp / f"copy{i}.db"
        shutil.copyfile(source, db)
        times.append(_run([sys.executable, "-m", "imagen", *args], _env(db, tmp)))
        db.unlink()
    return statistics.median(times)


def _raw(db: Path, tmp: Path, after: int = 0) -> float:
    argv = [sys.executable, "-c", RAW_FOLD, str(db), str(after)]
    return statistics.median(_run(argv, _env(db, tmp)) for _ in range(RUNS))


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
    from imagen.projections import catchup

    store = open_store(f"sqlite:///{db}")
    try:
        return timed(lambda: catchup.catch_up(store))
    finally:
        store.close()


def bench_first(tmp: Path, jobs: int) -> None:
    db = tmp / f"ledger{jobs}.db"
    t = time.perf_counter()
    events = build(db, jobs)
    print(f"built {jobs:,} jobs / {events:,} events in {time.perf_counter() - t:.1f}s", flush=True)
    raw = _raw(db, tmp)
    first_jobs = _first(db, tmp, ["jobs", "--limit", "20"])
    first_usage = _first(db, tmp, ["usage"])
    raw_after = _raw(db, tmp)  # again, so a loaded machine shows in both
    base = min(raw, raw_after)
    print(f"(raw fold: {raw:.2f}s before, {raw_after:.2f}s after)", flush=True)
    line(f"first imagen jobs, {jobs:,} jobs (wall, s)", first_jobs, base, "s", False, "<= 1.5x")
    line(f"first imagen usage, {jobs:,} jobs (wall, s)", first_usage, base, "s", False, "<= 1.5x")
    db.unlink()


def _incremental(tmp: Path, jobs: int) -> tuple[float, float]:
    """(catch-up of NEW jobs appended to a caught-up ledger of `jobs`, raw fold of them)."""
    db = tmp / f"inc{jobs}.db"
    build(db, jobs)
    _catch_up_all(db)
    head = sqlite3.connect(db).execute("SELECT max(position) FROM events").fetchone()[0]
    extend(db, jobs, NEW)
    ours = _catch_up_all(db)
    raw = _raw(db, tmp, after=head)
    db.unlink()
    return ours, raw


def bench_incremental(tmp: Path) -> None:
    t = time.perf_counter()
    big, big_raw = _incremental(tmp, BIG)
    small, _ = _incremental(tmp, NEW)
    print(f"(incremental ledgers built and caught up in {time.perf_counter() - t:.1f}s)")
    line(
        f"catch-up of {NEW:,} new jobs on {BIG:,} (s; vs on {NEW:,})",
        big,
        small,
        "s",
        False,
        "~1x: in proportion to the new jobs",
    )
    line(
        f"catch-up of {NEW:,} new jobs on {BIG:,} (s; vs raw fold)",
        big,
        big_raw,
        "s",
        False,
    )


def run() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        for jobs in SIZES:
            bench_first(Path(tmp), jobs)
        bench_incremental(Path(tmp))
