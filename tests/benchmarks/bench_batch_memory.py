"""Batch memory: peak RSS of `imagen generate --from FILE` with a 1,000-line file beside the
same with a 100-line file (the baseline), against an instant Replicate double, in the same run.
Memory must not grow with the lines already done: issue 15's target is a flat ratio (~1.0x)."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from imagen.testing.replicate import ReplicateDouble
from tests.benchmarks.report import line
from tests.benchmarks.sandbox import TOKEN, measured, replicate_env


def _peak_rss_mb(argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    """(peak RSS in MB, wall s) of the command alone: measured by a launcher, not forked from
    this process, whose double holds every prediction it served (`sandbox.measured`)."""
    run = measured(argv, env)
    assert run.returncode == 0, run.stderr
    return run.peak_mb, run.wall


def run() -> None:
    with ReplicateDouble(token=TOKEN) as rep, tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        results = {}
        for lines in (100, 1000):
            env = replicate_env(root, rep.url, ledger=f"ledger-{lines}.db")
            prompts = root / f"prompts-{lines}.txt"
            prompts.write_text(
                "".join(f"a tin robot number {i}, in a field of rye\n" for i in range(lines))
            )
            argv = [sys.executable, "-m", "imagen", "generate", "--from", str(prompts)]
            results[lines] = _peak_rss_mb([*argv, "--size", "512x512"], env)
        (rss_1000, wall_1000), (rss_100, wall_100) = results[1000], results[100]
        print(
            f"instant Replicate double, default concurrency: 100 lines in {wall_100:.1f} s, "
            f"1,000 lines in {wall_1000:.1f} s",
            flush=True,
        )
        line(
            "peak RSS, 1,000-line --from (MB)",
            rss_1000,
            rss_100,
            "MB",
            higher_is_better=False,
            target="flat: ~1.0x the 100-line batch",
        )
