"""Random kill -9 against the Replicate double: the money figures (not run in CI).

    python -m tests.soak.random_kill_replicate --jobs 40 [--parallel 4] [--seed 1]

Starts N `imagen generate` processes (a few at a time) against a local Replicate double with
random behaviour (run time, a lost create reply, 5xx/429 on polls and lists, a slow download),
kills each with SIGKILL at a random moment, then runs `imagen resume --all` until nothing is
left to resume (at most 4 rounds), and counts from the double and the ledger:

- runs: jobs started; killed: kills that landed before the process ended (some before the job
  was even recorded: jobs_recorded counts the others);
- billed: predictions the double created (what Replicate would charge);
- double-billed: billed predictions no job holds, plus predictions held by two jobs;
- paid images lost: predictions that succeeded on the double whose job kept no image;
- cancelled at the deadline, failed, left halted: the other honest endings.

The jobs' timeout (4 s) is short and the kills land up to 5 s in, so many resumes come after
the deadline: a succeeded prediction must still be fetched.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from imagen.testing.replicate import ReplicateDouble
from tests.support.cli import Sandbox

TOKEN = "r8_soak_token_0123456789abcdef"


def _script(rep: ReplicateDouble, rng: random.Random) -> str:
    """Random behaviour for the next prediction, and maybe a fault; returns a label."""
    rep.behaviour(duration=rng.uniform(0.2, 3.0))
    roll = rng.random()
    if roll < 0.15:
        rep.reset_after_create()
        return "lost create reply"
    if roll < 0.25:
        rep.fail_next("get", status=rng.choice([429, 500, 502, 503]), times=rng.randint(1, 3))
        return "poll errors"
    if roll < 0.30:
        rep.fail_next("list", status=503)
        rep.reset_after_create()
        return "lost reply, lookup 503"
    if roll < 0.35:
        rep.slow_next("file", rng.uniform(0.5, 2.0))
        return "slow download"
    return "plain"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=40)
    parser.add_argument("--parallel", type=int, default=3)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--max-kill-s", type=float, default=10.0)
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    root = Path(tempfile.mkdtemp(prefix="imagen-soak-"))
    labels: Counter[str] = Counter()
    killed = 0
    started = time.monotonic()
    with ReplicateDouble(token=TOKEN) as rep:
        box = Sandbox(root, env={"REPLICATE_API_TOKEN": TOKEN})
        box.write_backend(
            "rep",
            "replicate",
            model="black-forest-labs/flux-schnell",
            base_url=rep.url,
            poll_interval_s=0.2,
            retry_base_s=0.05,
            wait_s=1,
            timeout_s=4,
        )
        box.out.mkdir(parents=True, exist_ok=True)
        pending = list(range(args.jobs))
        while pending:
            batch, pending = pending[: args.parallel], pending[args.parallel :]
            procs = []
            for i in batch:
                labels[_script(rep, rng)] += 1
                out = box.out / f"job-{i}.png"
                proc = box.popen("generate", f"soak {i}", "--seed", str(i), "--output", str(out))
                procs.append((proc, time.monotonic() + rng.uniform(0, args.max_kill_s)))
            for proc, kill_at in procs:
                try:  # its end, or its kill time, whichever comes first
                    proc.wait(timeout=max(0.0, kill_at - time.monotonic()))
                except subprocess.TimeoutExpired:
                    pass
                if proc.poll() is None:
                    proc.send_signal(signal.SIGKILL)
                    killed += 1
                proc.communicate(timeout=120)
        rounds = []
        for _ in range(4):
            result = box.run("resume", "--all")
            rounds.append(result.returncode)
            print(result.stderr, file=sys.stderr)
            if "no interrupted jobs" in result.stderr:
                break
        figures = _figures(box, rep)
    figures.update(
        runs=args.jobs,
        killed=killed,
        resume_rounds=rounds,
        faults=dict(labels),
        seconds=round(time.monotonic() - started, 1),
        ledger=str(root / "ledger.db"),
    )
    print(json.dumps(figures, indent=2))
    return 0 if figures["double_billed"] == 0 and figures["paid_images_lost"] == 0 else 1


def _figures(box: Sandbox, rep: ReplicateDouble) -> dict[str, object]:
    holders: dict[str, list[str]] = {}
    endings: Counter[str] = Counter()
    kept: dict[str, bool] = {}
    for job in box.job_ids():
        events = box.events(job)
        types = [e.type for e in events]
        for e in events:
            if e.type == "RemoteJobAccepted":
                holders.setdefault(e.data["remote_id"], []).append(job)
        end = next((t for t in reversed(types) if t.startswith("Job") and t != "JobRequested"), "")
        endings[end or "unfinished"] += 1
        stored = [e.data for e in events if e.type == "ImageStored"]
        ok = (
            end == "JobSucceeded"
            and bool(stored)
            and Path(stored[-1]["path"]).exists()
            and hashlib.sha256(Path(stored[-1]["path"]).read_bytes()).hexdigest()
            == stored[-1]["sha256"]
        )
        for e in events:
            if e.type == "RemoteJobAccepted":
                kept[e.data["remote_id"]] = ok
    predictions = rep.predictions
    orphans = [pid for pid in predictions if pid not in holders]
    shared = [pid for pid, jobs in holders.items() if len(set(jobs)) > 1]
    lost = [
        pid for pid, p in predictions.items() if p["status"] == "succeeded" and not kept.get(pid)
    ]
    return {
        "jobs_recorded": len(box.job_ids()),
        "billed": rep.billed,
        "double_billed": len(orphans) + len(shared),
        "orphan_predictions": orphans,
        "predictions_held_by_two_jobs": shared,
        "paid_images_lost": len(lost),
        "lost": lost,
        "prediction_status": dict(Counter(p["status"] for p in predictions.values())),
        "job_endings": dict(endings),
        "token_in_ledger": TOKEN in box.ledger_text(),
    }


if __name__ == "__main__":
    sys.exit(main())
