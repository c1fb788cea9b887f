"""One process driving 32 jobs at once against an instant Replicate double, durability full:
images/s with group commit (the default) beside the same run without it, and commits per image;
then the same through the CLI, `imagen generate --from FILE --concurrency 32` (start-up,
sidecars and usage rows included), beside `--concurrency 1` in the same run.

The runner is the real one (tests/support/inprocess.py: the app layer's prepare, the Runner,
the urllib3 transport), one per worker thread as a batch runs it; the double runs in its own
process (its image encoding is not ours to count) and answers at once. Images are 512x512 so
that the double's encoder stays out of the way. The two configurations alternate, twice each,
so neither gets the quieter moments of a shared machine. Issue 15's target: >= 30 images/s."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from imagen.app.runners import new_runner
from imagen.core.inputs import GenerateInputs
from ledger import open_store
from tests.benchmarks.report import line
from tests.benchmarks.sandbox import ROOT, TOKEN, generate, replicate_env
from tests.support.inprocess import environment, prepared

WORKERS, JOBS, ROUNDS = 32, 256, 2


def _fsync_ms(root: Path) -> float:
    fd = os.open(root / "fsync-probe", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        start = time.perf_counter()
        for i in range(100):
            os.pwrite(fd, b"x" * 64, i * 64)
            os.fsync(fd)
        return (time.perf_counter() - start) * 10
    finally:
        os.close(fd)


def _batch(url: str, root: Path, group_commit: bool) -> tuple[float, float]:
    """(images/s, commits per image) for JOBS jobs driven by WORKERS threads."""
    store = open_store(f"sqlite:///{root / 'ledger.db'}", group_commit=group_commit)
    commits_before = store.commits.value
    envt = environment({"REPLICATE_API_TOKEN": TOKEN})
    todo = [
        prepared(
            root / "out",
            "replicate",
            {"base_url": url, "model": "black-forest-labs/flux-schnell"},
            GenerateInputs(f"throughput {i}", seed=i + 1, size=(512, 512)),
            envt,
        )
        for i in range(JOBS)
    ]
    lock, failed = threading.Lock(), []

    def worker() -> None:
        while True:
            with lock:
                if not todo:
                    return
                job = todo.pop()
            runner = new_runner(store, envt)
            runner.submit(job.job_id, job.request)
            if runner.run(job.job_id).status != "succeeded":
                failed.append(job.job_id)

    start = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(WORKERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    report = store.verify()
    store.close()
    assert not failed and report.ok, (failed, report)
    return JOBS / elapsed, (store.commits.value - commits_before) / JOBS


def _cli(url: str, root: Path, concurrency: int) -> float:
    """images/s of one `imagen generate --from` of JOBS lines, wall time of the command."""
    env = replicate_env(root, url)
    prompts = root / "prompts.txt"
    prompts.write_text("".join(f"a brass key, take {i}\n" for i in range(JOBS)))
    argv = ["--from", str(prompts), "--size", "512x512", "--concurrency", str(concurrency)]
    elapsed, done = generate(env, *argv)
    assert len(done) == JOBS and {d["status"] for d in done} == {"succeeded"}
    return JOBS / elapsed


def run() -> None:
    double = subprocess.Popen(
        [sys.executable, "-m", "imagen.testing.replicate", "--token", TOKEN],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        assert double.stdout is not None
        url = double.stdout.readline().strip()
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            print(f"fsync on this disk: {_fsync_ms(root):.2f} ms", flush=True)
            rates: dict[bool, list[float]] = {True: [], False: []}
            commits: dict[bool, float] = {}
            for r in range(ROUNDS):
                for grouped in (True, False) if r % 2 == 0 else (False, True):
                    where = root / f"{'group' if grouped else 'single'}-{r}"
                    rate, commits[grouped] = _batch(url, where, grouped)
                    rates[grouped].append(rate)
            line(
                f"{WORKERS} jobs at once, durable: images/s",
                max(rates[True]),
                max(rates[False]),
                "images/s",
                target=">= 30 images/s; baseline: the same without group commit",
            )
            line(
                "commits (fsyncs) per image",
                commits[True],
                commits[False],
                "commits",
                higher_is_better=False,
            )
            line(
                f"imagen generate --from ({JOBS} lines) --concurrency {WORKERS}",
                _cli(url, root / "cli-32", WORKERS),
                _cli(url, root / "cli-1", 1),
                "images/s",
                target=">= 30 images/s; baseline: --concurrency 1",
            )
    finally:
        double.terminate()
        double.wait(10)
