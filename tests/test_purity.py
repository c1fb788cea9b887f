"""The pure core stays pure: imagen.core, imagen.backends and the pure projection modules
import no I/O library and touch no clock, environment, file, process or randomness.

Two checks: importing them in a fresh interpreter adds none of the forbidden modules to
sys.modules (a transitive import counts), and their source (AST) neither imports os, time,
random... nor calls datetime.now, time.time, os.environ, open and the like.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PURE_PACKAGES = ("imagen/core", "imagen/backends")
PURE_PROJECTIONS = (
    "imagen/projections/sidecar.py",
    "imagen/projections/timeline.py",
    "imagen/projections/gallery.py",
    "imagen/projections/jobs/fold.py",
    "imagen/projections/usage/fold.py",
)

FORBIDDEN_MODULES = (
    # I/O libraries and effects
    "urllib3",
    "sqlalchemy",
    "socket",
    "subprocess",
    "websockets",
    "supabase",
    "psycopg",
    "aiohttp",
    "http",
    "asyncio",
    "threading",
    "tempfile",
    "shutil",
    "ledger",
    # randomness
    "random",
    "secrets",
    # the shell around the core
    "imagen.runner",
    "imagen.app",
    "imagen.cli",
    "imagen.testing",
)
FORBIDDEN_IMPORTS = {"os", "time", "random", "secrets", "sys", "io", "pathlib", "glob"}
FORBIDDEN_IMPORTS |= {m for m in FORBIDDEN_MODULES if "." not in m}
FORBIDDEN_CALLS = {
    "now",  # datetime.now / datetime.datetime.now
    "utcnow",
    "today",
    "time",  # time.time
    "time_ns",
    "monotonic",
    "perf_counter",
    "getenv",
    "open",
    "print",
    "input",
    "read_text",
    "write_text",
    "read_bytes",
    "write_bytes",
    "expanduser",
    "cwd",
    "home",
    "uuid1",
    "uuid4",
    "urandom",
    "getpid",
}
FORBIDDEN_ATTRIBUTES = {"environ"}


def pure_files() -> list[Path]:
    files = [p for pkg in PURE_PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))]
    return files + [ROOT / p for p in PURE_PROJECTIONS]


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def violations(source: str) -> list[str]:
    """What in this source would make it impure, one line each."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            names = []
        for name in names:
            if name.split(".")[0] in FORBIDDEN_IMPORTS or name.startswith(FORBIDDEN_MODULES):
                found.append(f"line {node.lineno}: imports {name}")
        if isinstance(node, ast.Call):
            func = node.func
            called = (
                func.id
                if isinstance(func, ast.Name)
                else func.attr
                if isinstance(func, ast.Attribute)
                else None
            )
            if called in FORBIDDEN_CALLS:
                found.append(f"line {node.lineno}: calls {called}()")
        if isinstance(node, ast.Attribute) and node.attr in FORBIDDEN_ATTRIBUTES:
            found.append(f"line {node.lineno}: reads .{node.attr}")
    return found


@pytest.mark.parametrize("path", pure_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_the_source_touches_no_clock_environment_file_or_randomness(path: Path) -> None:
    assert violations(path.read_text()) == []


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("from datetime import datetime\nx = datetime.now()", "calls now()"),
        ("import time\nx = time.time()", "imports time"),
        ("import os\nx = os.environ['A']", "reads .environ"),
        ("x = open('f').read()", "calls open()"),
        ("from urllib3 import PoolManager", "imports urllib3"),
        ("import secrets", "imports secrets"),
        ("from imagen.runner.http import Http", "imports imagen.runner.http"),
        ("import uuid\nx = uuid.uuid4()", "calls uuid4()"),
    ],
)
def test_the_source_check_catches_each_kind_of_effect(source: str, expected: str) -> None:
    assert any(expected in v for v in violations(source))


def test_importing_the_core_in_a_fresh_interpreter_loads_no_effectful_module() -> None:
    modules = [module_name(p) for p in pure_files()]
    script = (
        "import importlib, json, sys\n"
        "before = set(sys.modules)\n"
        f"for m in {modules!r}: importlib.import_module(m)\n"
        "print(json.dumps(sorted(set(sys.modules) - before)))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=60
    )
    assert done.returncode == 0, done.stderr
    loaded = json.loads(done.stdout)
    assert set(modules) <= set(loaded)  # they were really imported here, not before
    bad = [m for m in loaded if m.startswith(FORBIDDEN_MODULES)]
    assert bad == []
