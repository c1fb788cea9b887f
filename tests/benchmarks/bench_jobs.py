"""`imagen jobs`, `imagen show` and `imagen audit` on a ledger of 100,000 jobs (~2M events),
beside raw sqlite3 reading the same rows in the same run.

The ledger is generated directly with sqlite3 and the ledger's own hash function (appending
2M events one job at a time through the store would only measure fsync).
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from ledger import open_store
from ledger.events import GENESIS_HASH, canonical_json, event_hash
from tests.benchmarks.report import line
from tests.benchmarks.sandbox import bytecode_cached

JOBS = int(os.environ.get("IMAGEN_BENCH_JOBS", "100000"))
ROOT = Path(__file__).resolve().parents[2]


def _job_events(i: int) -> list[tuple[str, dict]]:
    rid = f"p{i:07d}"
    ev: list[tuple[str, dict]] = [
        (
            "JobRequested",
            {
                "backend": "flux-schnell-replicate",
                "backend_type": "replicate",
                "model": "black-forest-labs/flux-schnell",
                "prompt": f"prompt number {i}",
                "params": {"seed": i, "width": 1024, "height": 1024, "steps": 4},
                "backend_config": {},
                "output_path": f"/tmp/img{i}.png",
                "overwrite": False,
                "caller": f"agent-{i % 8}",
                "price_usd": 0.003,
                "imagen_version": "0.1.0",
            },
        ),
        (
            "RunnerClaimed",
            {"pid": 1, "host": "bench", "lease_seconds": 120.0, "proc_start": "", "resumed": False},
        ),
        (
            "RequestSent",
            {
                "request_id": "create-3",
                "purpose": "create",
                "method": "POST",
                "url": "http://x/v1/predictions",
                "headers": {},
                "body": {"input": {"seed": i}},
            },
        ),
        (
            "ResponseReceived",
            {
                "request_id": "create-3",
                "purpose": "create",
                "status": 201,
                "headers": {},
                "body": {"id": rid, "status": "starting"},
                "elapsed_ms": 50.0,
            },
        ),
        ("RemoteJobAccepted", {"remote_id": rid, "via": "create", "url": ""}),
    ]
    for p in range(6):
        ev.append(
            (
                "RequestSent",
                {
                    "request_id": f"poll-{6 + 2 * p}",
                    "purpose": "poll",
                    "method": "GET",
                    "url": f"http://x/v1/predictions/{rid}",
                    "headers": {},
                    "body": None,
                },
            )
        )
        ev.append(
            (
                "ResponseReceived",
                {
                    "request_id": f"poll-{6 + 2 * p}",
                    "purpose": "poll",
                    "status": 200,
                    "headers": {},
                    "body": {
                        "id": rid,
                        "status": "processing" if p < 5 else "succeeded",
                        "output": ["http://x/o.png"],
                    },
                    "elapsed_ms": 20.0,
                },
            )
        )
    ev += [
        (
            "RequestSent",
            {
                "request_id": "download-18",
                "purpose": "download",
                "method": "GET",
                "url": "http://x/o.png",
                "headers": {},
                "body": None,
            },
        ),
        (
            "ResponseReceived",
            {
                "request_id": "download-18",
                "purpose": "download",
                "status": 200,
                "headers": {},
                "body": {"bytes": 1000},
                "elapsed_ms": 9.0,
            },
        ),
        (
            "ImageStored",
            {
                "path": f"/tmp/img{i}.png",
                "sha256": "0" * 64,
                "bytes": 1000,
                "format": "png",
                "width": 1024,
                "height": 1024,
                "source": "",
            },
        ),
        ("JobSucceeded", {"result": {"prediction_id": rid}}),
    ]
    return ev


def build(
    path: Path, jobs: int, events: Callable[[int], list[tuple[str, dict]]] | None = None
) -> int:
    open_store(f"sqlite:///{path}").close()  # schema via the real migrations
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA synchronous=OFF")
    pos, prev = 0, GENESIS_HASH
    rows = []
    for i in range(jobs):
        sid = hashlib.sha1(str(i).encode()).hexdigest()[:16]
        at = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(1_760_000_000 + i * 30)) + ".000000Z"
        for v, (typ, data) in enumerate((events or _job_events)(i), start=1):
            pos += 1
            dj = canonical_json(data)
            eid = str(uuid.UUID(int=pos))
            h = event_hash(prev, pos, eid, sid, v, typ, 1, dj, at)
            rows.append((pos, eid, sid, v, typ, 1, dj, at, prev, h))
            prev = h
        if len(rows) > 50_000:
            conn.executemany("INSERT INTO events VALUES (?,?,?,?,?,?,?,?,?,?)", rows)
            conn.commit()
            rows.clear()
    conn.executemany("INSERT INTO events VALUES (?,?,?,?,?,?,?,?,?,?)", rows)
    conn.commit()
    conn.close()
    return pos


def _wall(argv: list[str], env: dict[str, str], runs: int = 5) -> float:
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        subprocess.run(argv, env=env, check=True, capture_output=True)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def run() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "ledger.db"
        t = time.perf_counter()
        events = build(db, JOBS)
        print(
            f"built {JOBS:,} jobs / {events:,} events in {time.perf_counter() - t:.1f}s", flush=True
        )
        env = {
            **os.environ,
            "IMAGEN_LEDGER_URL": f"sqlite:///{db}",
            "IMAGEN_CONFIG": "",
            "PYTHONPATH": str(ROOT),
            "XDG_CONFIG_HOME": tmp,
        }
        env = bytecode_cached(env, Path(tmp))
        imagen = [sys.executable, "-m", "imagen"]
        subprocess.run([*imagen, "--help"], env=env, check=True, capture_output=True)  # (cached)
        t = time.perf_counter()
        subprocess.run([*imagen, "jobs", "--limit", "1"], env=env, check=True, capture_output=True)
        print(
            f"first `imagen jobs` (projection catch-up over the whole ledger): {time.perf_counter() - t:.1f}s"
        )

        from imagen.projections.jobs.table import PROJECTION

        JOBS_TABLE = PROJECTION.table.name  # the table version imagen reads now
        ours = _wall([*imagen, "jobs", "--limit", "20"], env)
        raw = _wall(
            [
                sys.executable,
                "-c",
                "import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); "
                f"print(c.execute('SELECT * FROM {JOBS_TABLE} ORDER BY created_at DESC LIMIT 20')"
                ".fetchall())",
                str(db),
            ],
            env,
        )
        line(
            "imagen jobs --limit 20 (wall, s)",
            ours,
            raw,
            "s",
            higher_is_better=False,
            target="<= 0.3 s",
        )

        some = (
            sqlite3.connect(db)
            .execute("SELECT stream_id FROM events WHERE position = ?", (events // 2,))
            .fetchone()[0]
        )
        ours = _wall([*imagen, "show", some[:10]], env)
        raw = _wall(
            [
                sys.executable,
                "-c",
                "import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); "
                "print(c.execute('SELECT * FROM events WHERE stream_id = ? ORDER BY stream_version', (sys.argv[2],)).fetchall())",
                str(db),
                some,
            ],
            env,
        )
        line("imagen show ID (wall, s)", ours, raw, "s", higher_is_better=False, target="<= 0.3 s")

        store = open_store(f"sqlite:///{db}")
        t = time.perf_counter()
        report = store.verify()
        verify_rate = report.checked / (time.perf_counter() - t)
        assert report.ok
        conn = sqlite3.connect(db)
        t = time.perf_counter()
        n = sum(1 for _ in conn.execute("SELECT * FROM events ORDER BY position"))
        raw_rate = n / (time.perf_counter() - t)
        line(
            "audit chain verification (events/s)",
            verify_rate,
            raw_rate,
            "events/s",
            target=">= 100,000/s",
        )
