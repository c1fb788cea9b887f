"""Concurrency: 8 processes each generating 25 images at once against the doubles, on one
ledger (SQLite file, then PostgreSQL): no "database is locked" reaches a user, no event is
lost, and the ledger stays one valid hash chain.

Half the workers use the ComfyUI double, half the Replicate double, both served from this
process through two backends in one config, so both adapters' append patterns interleave.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from imagen.projections.jobs import table as jobs_index
from imagen.testing.comfyui import ComfyUIDouble
from imagen.testing.replicate import ReplicateDouble
from ledger import IDENTITY_STREAM, open_store
from tests.support.cli import Sandbox
from tests.support.doubles import TOKEN_ENV, comfyui_double, replicate_double

# CI runs these; `-m "not slow"` leaves them out of a quick local run.
pytestmark = pytest.mark.slow

WORKERS = 8
# Generates per worker in a row. Each PostgreSQL generate is a process that loads SQLAlchemy and
# a driver (a SQLite one no longer does), ~2.5x the CPU on CI's 2 cores: 10 in a row still
# interleave 8 writers on every append, at a third of the 25's minutes.
PER_WORKER = {"sqlite": 25, "postgres": 10}

# Runs in each worker process: block on one stdin line (the barrier), then run the real CLI
# PER_WORKER times in a row. Prints one JSON summary; exits 1 if any generate failed.
DRIVER = """
import json, subprocess, sys
backend, tag, out_dir, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
sys.stdin.readline()
failures, locked, outputs = [], [], []
for i in range(count):
    out = f"{out_dir}/{tag}-{i:02d}.png"
    r = subprocess.run(
        [sys.executable, "-m", "imagen", "generate", f"{tag} prompt {i}", "--backend", backend,
         "--size", "256x256", "--json", "--output", out],
        capture_output=True, text=True,
    )
    text = r.stdout + r.stderr
    if "locked" in text.lower():
        locked.append(text)
    if r.returncode != 0:
        failures.append({"i": i, "rc": r.returncode, "stderr": r.stderr[-2000:]})
    else:
        outputs.append(json.loads(r.stdout)["image"])
print(json.dumps({"failures": failures, "locked": locked, "outputs": outputs}))
sys.exit(1 if failures or locked else 0)
"""


@pytest.fixture
def doubles() -> Iterator[tuple[ComfyUIDouble, ReplicateDouble]]:
    with comfyui_double(step_time=0.0) as comfy, replicate_double() as rep:
        rep.behaviour(duration=0.0)
        yield comfy, rep


@pytest.fixture(params=["sqlite", "postgres"])
def box(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    doubles: tuple[ComfyUIDouble, ReplicateDouble],
) -> Sandbox:
    comfy, rep = doubles
    url = (
        f"sqlite:///{tmp_path / 'ledger.db'}"
        if request.param == "sqlite"
        else request.getfixturevalue("pg_url")
    )
    box = Sandbox(tmp_path, ledger_url=url, env=dict(TOKEN_ENV))
    box.write_config(f"""
[backends.local]
type = "comfyui"
url = "{comfy.url}"
poll_interval_s = 0.05
retry_base_s = 0.01
[backends.rep]
type = "replicate"
model = "black-forest-labs/flux-schnell"
base_url = "{rep.url}"
poll_interval_s = 0.05
retry_base_s = 0.01
[output]
directory = "{box.out}"
""")
    box.out.mkdir()
    return box


def run_workers(box: Sandbox, per_worker: int) -> list[str]:
    """Start WORKERS drivers (half ComfyUI, half Replicate), release them at once, and return
    the image paths they report; fails on any non-zero exit or any "locked" text."""
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", DRIVER, backend, f"w{k}", str(box.out), str(per_worker)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=box.env,
            cwd=box.root,
        )
        for k, backend in enumerate(["local", "rep"] * (WORKERS // 2))
    ]
    # The barrier: every driver is blocked on stdin (after its interpreter started); release
    # them all at once, so the first generates of all 8 collide.
    for w in workers:
        assert w.stdin is not None
        w.stdin.write("\n")
        w.stdin.flush()
    results = [w.communicate(timeout=600) for w in workers]
    for w, (out, err) in zip(workers, results, strict=True):
        assert "database is locked" not in (out + err).lower(), out + err
        assert w.returncode == 0, out + err
    return [p for out, _ in results for p in json.loads(out)["outputs"]]


def check_ledger(url: str, jobs: int) -> None:
    store = open_store(url)
    try:
        report = store.verify()
        assert report.ok, report
        events = list(store.read_all())
        last: dict[str, tuple[int, str]] = {}
        for e in events:
            last[e.stream_id] = (e.stream_version, e.type)
        assert last.pop(IDENTITY_STREAM) == (1, "LedgerCreated")
        assert len(last) == jobs
        assert {t for _, t in last.values()} == {"JobSucceeded"}
        # No gaps, no lost events: positions are 1..N and the streams' versions sum to N.
        assert [e.position for e in events] == list(range(1, len(events) + 1))
        assert sum(v for v, _ in last.values()) + 1 == len(events) == report.checked
    finally:
        store.close()


def test_eight_processes_generating_in_a_row(
    box: Sandbox, doubles: tuple[ComfyUIDouble, ReplicateDouble]
) -> None:
    comfy, rep = doubles
    # An existing ledger with its jobs index, as after a user's first generate: this test is
    # about concurrent appends. Creating both on first use is the test below.
    store = open_store(box.ledger_url)
    jobs_index.catch_up(store)
    store.close()

    per_worker = PER_WORKER["sqlite" if box.ledger_url.startswith("sqlite") else "postgres"]
    started = time.monotonic()
    outputs = run_workers(box, per_worker)
    print(f"{WORKERS}x{per_worker} generates in {time.monotonic() - started:.1f} s")

    assert len(outputs) == WORKERS * per_worker
    assert all(Path(p).is_file() for p in outputs)
    check_ledger(box.ledger_url, WORKERS * per_worker)
    assert comfy.executed == WORKERS // 2 * per_worker
    assert rep.billed == WORKERS // 2 * per_worker


# Regression: the first use of a fresh ledger by 8 processes at once (projection tables are
# created under the ledger's write lock).
def test_first_use_by_eight_processes_at_once(
    box: Sandbox, doubles: tuple[ComfyUIDouble, ReplicateDouble]
) -> None:
    comfy, rep = doubles
    outputs = run_workers(box, 1)
    assert len(outputs) == WORKERS and all(Path(p).is_file() for p in outputs)
    check_ledger(box.ledger_url, WORKERS)
    assert comfy.executed == rep.billed == WORKERS // 2
