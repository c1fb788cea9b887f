"""`imagen audit` on ledgers of 10,000 and 40,000 jobs (IMAGEN_BENCH_AUDIT_JOBS, e.g.
"10000,40000,100000"), each beside a fresh interpreter that reads every event row through
SQLAlchemy and computes sha256 over its bytes, in the same run: wall time and peak memory
(the child's ru_maxrss). Issue 29's targets: audit within 3x that baseline, and peak memory at
the largest ledger within 1.3x of the smallest's (flat).

Ledgers come from `bench_jobs.build`, with each job's image and sidecar written where the
chain says, so the audit is clean (findings would grow with the ledger and are not what is
measured). The projections are caught up first (`imagen jobs`, `imagen usage`): that is
catch-up's cost (bench_jobs, bench_usage), not audit's; the spend table's too.

Audit is timed as it runs (two processes from `audit.PARALLEL_FROM` events, on two CPUs) and in
one process (IMAGEN_AUDIT_PARALLEL_FROM past the ledger), interleaved with the baseline; CPU
time is the process's and its children's.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

from tests.benchmarks.bench_jobs import _job_events, build
from tests.benchmarks.report import line
from tests.benchmarks.sandbox import bytecode_cached, measured

SIZES = [int(n) for n in os.environ.get("IMAGEN_BENCH_AUDIT_JOBS", "10000,40000").split(",")]
RUNS = int(os.environ.get("IMAGEN_BENCH_AUDIT_RUNS", "3"))
ROOT = Path(__file__).resolve().parents[2]

# A fresh interpreter: every event row read through SQLAlchemy, sha256 over its bytes.
BASELINE = """
import hashlib, sys
from sqlalchemy import create_engine
engine = create_engine(sys.argv[1])
n = 0
with engine.connect() as conn:
    result = conn.execution_options(stream_results=True, yield_per=20000).exec_driver_sql(
        "SELECT * FROM events ORDER BY position")
    for rows in result.partitions(20000):
        for row in rows:
            hashlib.sha256("\\x1f".join(map(str, row)).encode()).digest()
            n += 1
print(n)
"""


# The spend table's first catch-up (no command but audit does one): catch-up's cost, not audit's.
SPEND = """
import sys
from imagen.projections import spend
from ledger.store import open_store
store = open_store(sys.argv[1])
spend.catch_up(store)
store.close()
"""


def _run(
    argv: list[str], env: dict[str, str], ok: tuple[int, ...] = (0,)
) -> tuple[float, float, str, float]:
    """Wall time, peak RSS (MB), stdout, and CPU time (user + system: steadier than wall
    on a loaded machine)."""
    run = measured(argv, env)
    assert run.returncode in ok, (argv, run.returncode, run.stderr[-2000:])
    return run.wall, run.peak_mb, run.stdout, run.cpu


def _median(runs: list[tuple[float, float, str, float]]) -> tuple[float, float, str, float]:
    """Median wall and CPU time, the highest peak, the last output."""
    return (
        statistics.median(r[0] for r in runs),
        max(r[1] for r in runs),
        runs[-1][2],
        statistics.median(r[3] for r in runs),
    )


def _clean_ledger(root: Path, jobs: int) -> tuple[Path, int]:
    """A bench_jobs ledger whose images and sidecars are on disk as the chain records them."""
    out = root / "out"
    out.mkdir()
    db = root / "ledger.db"

    def events(i: int) -> list[tuple[str, dict]]:
        evs = _job_events(i)
        path = str(out / f"img{i}.png")
        body = b"png %d" % i
        sha = hashlib.sha256(body).hexdigest()
        (out / f"img{i}.png").write_bytes(body)
        for typ, data in evs:
            if typ == "JobRequested":
                data["output_path"] = path
            elif typ == "ImageStored":
                data.update(path=path, sha256=sha, bytes=len(body))
        return evs

    events_n = build(db, jobs, events)
    # Sidecars name the job's stream id: written once the ids are known.
    conn = sqlite3.connect(db)
    for sid, dj in conn.execute("SELECT stream_id, data FROM events WHERE type='ImageStored'"):
        data = json.loads(dj)
        side = Path(data["path"] + ".json")
        side.write_text(
            json.dumps({"job_id": sid, "image": {"path": data["path"], "sha256": data["sha256"]}})
        )
    conn.close()
    return db, events_n


def run() -> None:
    peaks: dict[int, float] = {}
    for jobs in SIZES:
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            t = time.perf_counter()
            db, events = _clean_ledger(root, jobs)
            print(
                f"\n{jobs:,} jobs / {events:,} events built in {time.perf_counter() - t:.1f}s",
                flush=True,
            )
            env = {
                **os.environ,
                "IMAGEN_LEDGER_URL": f"sqlite:///{db}",
                "IMAGEN_CONFIG": "",
                "PYTHONPATH": str(ROOT),
                "XDG_CONFIG_HOME": tmp,
                "HOME": tmp,
            }
            env = bytecode_cached(env, root)
            imagen = [sys.executable, "-m", "imagen"]
            _run([*imagen, "jobs", "--limit", "1"], env)
            _run([*imagen, "usage"], env)
            _run([sys.executable, "-c", SPEND, f"sqlite:///{db}"], env)
            # The built ledger, images and sidecars written out now: audit's fsync of its
            # checkpoint would otherwise flush them into its system time (bench_bigledger).
            os.sync()
            # As run (two processes from PARALLEL_FROM events), and in one process.
            one = {**env, "IMAGEN_AUDIT_PARALLEL_FROM": str(10**15)}
            base, ours, ones = [], [], []
            for _ in range(RUNS):  # interleaved: a load that comes and goes falls on all
                base.append(_run([sys.executable, "-c", BASELINE, f"sqlite:///{db}"], env))
                ours.append(_run([*imagen, "audit", "--json"], env, ok=(0, 4)))
                ones.append(_run([*imagen, "audit", "--json"], one, ok=(0, 4)))
            base_s, base_mb, n, base_cpu = _median(base)
            assert int(n) == events, n
            ours_s, ours_mb, out, ours_cpu = _median(ours)
            one_s, _, one_out, one_cpu = _median(ones)
            assert json.loads(one_out)["problems"] == json.loads(out)["problems"]
            report = json.loads(out)
            if report["problems"]:
                print(
                    f"  (audit found {len(report['problems'])} problem(s), e.g. "
                    f"{report['problems'][0]['message']})"
                )
            peaks[jobs] = ours_mb
            line(
                f"audit {jobs:,} jobs (wall, s)",
                ours_s,
                base_s,
                "s",
                higher_is_better=False,
                target="<= 3x",
            )
            line(
                f"audit {jobs:,} jobs (CPU, s)",
                ours_cpu,
                base_cpu,
                "s",
                higher_is_better=False,
                target="<= 3x",
            )
            line(
                f"audit {jobs:,} jobs, one process (wall, s)",
                one_s,
                base_s,
                "s",
                higher_is_better=False,
                target="<= 3x",
            )
            line(
                f"audit {jobs:,} jobs, one process (CPU, s)",
                one_cpu,
                base_cpu,
                "s",
                higher_is_better=False,
                target="<= 3x",
            )
            line(
                f"audit {jobs:,} jobs (peak RSS, MB)",
                ours_mb,
                base_mb,
                "MB",
                higher_is_better=False,
            )
    if len(peaks) > 1:
        small, big = min(peaks), max(peaks)
        line(
            f"audit peak RSS {big:,} vs {small:,} jobs (MB)",
            peaks[big],
            peaks[small],
            "MB",
            higher_is_better=False,
            target="<= 1.3x (flat)",
        )
