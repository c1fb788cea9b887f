"""A throwaway imagen set-up for a benchmark: a config naming one double, a ledger, the
environment a CLI subprocess runs in, and `imagen generate` run and timed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

TOKEN = "r8_benchmark_token_0123456789"
ROOT = Path(__file__).resolve().parents[2]


def replicate_env(root: Path, url: str, ledger: str = "ledger.db") -> dict[str, str]:
    backend = f"""
default_backend = "rep"
[backends.rep]
type = "replicate"
model = "black-forest-labs/flux-schnell"
base_url = "{url}"
"""
    return _env(root, backend, ledger, {"REPLICATE_API_TOKEN": TOKEN})


def comfyui_env(root: Path, url: str, ledger: str = "ledger.db") -> dict[str, str]:
    backend = f"""
default_backend = "local"
[backends.local]
type = "comfyui"
url = "{url}"
"""
    return _env(root, backend, ledger, {})


def _env(root: Path, backend: str, ledger: str, extra: dict[str, str]) -> dict[str, str]:
    root.mkdir(parents=True, exist_ok=True)
    (root / "config.toml").write_text(f'{backend}[output]\ndirectory = "{root / "out"}"\n')
    return {
        **os.environ,
        "IMAGEN_CONFIG": str(root / "config.toml"),
        "IMAGEN_LEDGER_URL": f"sqlite:///{root / ledger}",
        "PYTHONPATH": str(ROOT),
        "IMAGEN_PREVIEW": "off",
        **extra,
    }


def generate(env: dict[str, str], *args: str) -> tuple[float, list[dict[str, Any]]]:
    """`imagen generate ARGS --json`: (wall s, one object per job); it must succeed."""
    start = time.perf_counter()
    r = subprocess.run(
        [sys.executable, "-m", "imagen", "generate", *args, "--json"],
        env=env,
        capture_output=True,
        text=True,
    )
    elapsed = time.perf_counter() - start
    assert r.returncode == 0, r.stderr
    return elapsed, [json.loads(x) for x in r.stdout.splitlines() if x.strip()]


# Linux keeps a process's peak RSS across exec, from the process it was forked from: a child
# forked by a benchmark (which holds a ledger it built, or a double whose state grows with
# every request it serves) would report the benchmark's own peak if that is higher. So a
# small launcher, a fresh interpreter, forks the measured command and reports its peak and
# CPU time.
_LAUNCH = """
import os, subprocess, sys
proc = subprocess.Popen(sys.argv[1:])
_, status, usage = os.wait4(proc.pid, 0)
sys.stderr.write(f"\\nrusage {usage.ru_maxrss} {usage.ru_utime + usage.ru_stime}\\n")
sys.exit(os.waitstatus_to_exitcode(status))
"""


@dataclass(frozen=True)
class Measured:
    wall: float  # s
    peak_mb: float  # the command's peak RSS
    cpu: float  # s, user + system: steadier than wall on a loaded machine
    returncode: int
    stdout: str
    stderr: str


def measured(argv: list[str], env: dict[str, str]) -> Measured:
    """`argv` run to its end, with its own peak memory and CPU time (see `_LAUNCH`)."""
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", _LAUNCH, *argv], env=env, capture_output=True, check=False
    )
    wall = time.perf_counter() - start
    err, _, report = proc.stderr.decode(errors="replace").rstrip().rpartition("\n")
    _, peak_kb, cpu = report.split()
    return Measured(
        wall, int(peak_kb) / 1024, float(cpu), proc.returncode, proc.stdout.decode(), err
    )


def bytecode_cached(env: dict[str, str], root: Path) -> dict[str, str]:
    """`env` with Python's bytecode cache, as an installed imagen runs (pip compiles it), kept
    under `root` so no checkout is written to. PYTHONDONTWRITEBYTECODE (set where these
    benchmarks run) compiles imagen's ~100 modules from source on every command (its
    baselines' site-packages are compiled already), and a checkout's own stale __pycache__
    makes two checkouts, or two runs of one, differ by more than their code."""
    cached = {k: v for k, v in env.items() if k != "PYTHONDONTWRITEBYTECODE"}
    cached["PYTHONPYCACHEPREFIX"] = str(root / "pycache")
    return cached
