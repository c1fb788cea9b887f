"""Workers on PostgreSQL: a 40-image batch submitted with `generate --detach`, drained by
`imagen worker` processes (standing in for machines: IMAGEN_HOST differs) against the Replicate
double (each prediction 1 s). Figures: wall and images/s for two workers beside one (same run,
same --max), and the 40-image kill -9 case: one of two workers killed mid-batch, the other
finishing its jobs after a 3 s lease; each job created once at the double either way."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from imagen.testing.postgres import PostgresCluster, PostgresUnavailable, create_database
from imagen.testing.replicate import ReplicateDouble
from ledger import open_store
from tests.benchmarks.report import line
from tests.benchmarks.sandbox import TOKEN, replicate_env

IMAGES, SECONDS, AT_ONCE, LEASE = 40, 1.0, 4, "3"


def _imagen(env: dict[str, str], *args: str, quiet: bool = False) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "imagen", *args],
        env=env,
        stdout=subprocess.DEVNULL if quiet else subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )


def _detach(env: dict[str, str]) -> list[str]:
    p = _imagen(env, "generate", "a paper boat", "-n", str(IMAGES), "--detach")
    out, _ = p.communicate()
    assert p.returncode == 0
    return out.split()


def _creates(url: str) -> Counter[str]:
    store = open_store(url, create=False)
    try:
        return Counter(
            e.stream_id
            for e in store.read_all()
            if e.type == "RequestSent" and e.data["purpose"] == "create"
        )
    finally:
        store.close()


def _drain(env: dict[str, str], hosts: list[str]) -> float:
    """Wall s for `hosts` workers (each --max AT_ONCE, --exit-when-idle) to drain the ledger."""
    start = time.perf_counter()
    procs = [
        _imagen(
            {**env, "IMAGEN_HOST": h},
            "worker",
            "--max",
            str(AT_ONCE),
            "--exit-when-idle",
            quiet=True,
        )
        for h in hosts
    ]
    for p in procs:
        assert p.wait() == 0
    return time.perf_counter() - start


def _accepted_by(url: str, host: str) -> int:
    store = open_store(url, create=False)
    owner: dict[str, str] = {}
    n = 0
    try:
        for e in store.read_all():
            if e.type == "RunnerClaimed":
                owner[e.stream_id] = e.data["host"]
            elif e.type == "RemoteJobAccepted" and owner.get(e.stream_id) == host:
                n += 1
    finally:
        store.close()
    return n


def _kill_one(env: dict[str, str], url: str, ids: list[str]) -> float:
    """Two workers; machine-a killed with -9 once it has jobs in flight; wall s until every job
    has ended (`imagen wait`)."""
    start = time.perf_counter()
    env = {**env, "IMAGEN_LEASE_SECONDS": LEASE}
    a, b = (
        _imagen({**env, "IMAGEN_HOST": h}, "worker", "--max", str(AT_ONCE), quiet=True)
        for h in ("machine-a", "machine-b")
    )
    while _accepted_by(url, "machine-a") < 2:
        time.sleep(0.05)  # readiness read from the ledger
    a.send_signal(signal.SIGKILL)
    a.wait()
    waited = _imagen(env, "wait", *ids, "--timeout", "300")
    waited.communicate()
    wall = time.perf_counter() - start
    assert waited.returncode == 0
    b.send_signal(signal.SIGTERM)
    assert b.wait() == 0
    return wall


def run() -> None:
    try:
        cluster = PostgresCluster().start()
    except PostgresUnavailable as exc:
        print(f"skipped: {exc}")
        return
    try:
        with ReplicateDouble(token=TOKEN) as rep, tempfile.TemporaryDirectory() as tmp:
            rep.behaviour(duration=SECONDS)
            walls = {}
            for n, hosts in ((1, ["machine-a"]), (2, ["machine-a", "machine-b"])):
                url = create_database(cluster.url)
                env = replicate_env(Path(tmp) / f"w{n}", rep.url)
                env["IMAGEN_LEDGER_URL"] = url
                ids = _detach(env)
                before = len(rep.predictions)
                walls[n] = _drain(env, hosts)
                assert len(rep.predictions) - before == IMAGES
                assert _creates(url) == Counter({j: 1 for j in ids})
            url = create_database(cluster.url)
            env = replicate_env(Path(tmp) / "kill", rep.url)
            env["IMAGEN_LEDGER_URL"] = url
            ids = _detach(env)
            killed = _kill_one(env, url, ids)
            assert _creates(url) == Counter({j: 1 for j in ids}), "a job executed twice"
            print(
                f"{IMAGES} detached jobs of {SECONDS:g} s on the Replicate double, PostgreSQL "
                f"ledger, workers --max {AT_ONCE}; baseline: one worker",
                flush=True,
            )
            line(f"wall s, 2 workers draining {IMAGES}", walls[2], walls[1], "s", False)
            line("images/s, 2 workers", IMAGES / walls[2], IMAGES / walls[1], "img/s", True)
            line(
                f"wall s, 2 workers, one killed -9 (lease {LEASE} s)",
                killed,
                walls[2],
                "s",
                False,
            )
            print("each job created exactly once at the double in every run", flush=True)
            load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
            print(f"load average during the run: {load} on {os.cpu_count()} cores", flush=True)
    finally:
        cluster.stop()
