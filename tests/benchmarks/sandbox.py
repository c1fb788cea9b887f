"""A throwaway imagen set-up for a benchmark: a config naming one double, a ledger, the
environment a CLI subprocess runs in, and `imagen generate` run and timed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
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
