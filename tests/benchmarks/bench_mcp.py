"""MCP: one `imagen mcp` server making 8 images with concurrent `generate` calls (the official
SDK's stdio client) beside 8 `imagen generate` processes started at once; the same Replicate
double (1 s predictions), the same ledger, in turn in the same run, medians of a few rounds.
The server's wall is given with and without its start-up (an agent starts it once)."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import anyio
from mcp.client.session import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client

from imagen.testing.replicate import ReplicateDouble
from tests.benchmarks.report import line
from tests.benchmarks.sandbox import TOKEN, replicate_env

IMAGES = 8
ROUNDS = 3
PREDICTION_S = 1.0


def _processes(env: dict[str, str], tag: str) -> float:
    start = time.perf_counter()
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "imagen", "generate", f"process {tag} {i}", "--json"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(IMAGES)
    ]
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
        assert Path(json.loads(out)["image"]).is_file()
    return time.perf_counter() - start


async def _server(env: dict[str, str], tag: str) -> tuple[float, float]:
    """(wall from launching the server to the 8th image, wall of the 8 calls alone)."""
    params = StdioServerParameters(command=sys.executable, args=["-m", "imagen", "mcp"], env=env)
    start = time.perf_counter()
    async with stdio_client(params) as (read, write):
        async with ClientSession(read, write) as session:
            await session.initialize()
            ready = time.perf_counter()

            async def one(i: int) -> None:
                r = await session.call_tool("generate", {"prompt": f"server {tag} {i}"})
                assert not r.is_error, r.content[0].text
                assert Path(json.loads(r.content[0].text)["image"]).is_file()

            async with anyio.create_task_group() as tg:
                for i in range(IMAGES):
                    tg.start_soon(one, i)
            done = time.perf_counter()
    return done - start, done - ready


def run() -> None:
    with ReplicateDouble(token=TOKEN) as rep, tempfile.TemporaryDirectory() as tmp:
        env = replicate_env(Path(tmp), rep.url)
        subprocess.run(  # the ledger exists at head for both sides
            [sys.executable, "-m", "imagen", "generate", "warm-up", "--json"],
            env=env,
            capture_output=True,
            check=True,
        )
        rep.behaviour(duration=PREDICTION_S)
        procs, whole, calls = [], [], []
        for r in range(ROUNDS):
            procs.append(_processes(env, str(r)))
            w, c = anyio.run(_server, env, str(r))
            whole.append(w)
            calls.append(c)
        base = statistics.median(procs)
        line(
            f"{IMAGES} images: MCP server, with its start (s)",
            statistics.median(whole),
            base,
            "s",
            higher_is_better=False,
        )
        line(
            f"{IMAGES} images: MCP server, calls alone (s)",
            statistics.median(calls),
            base,
            "s",
            higher_is_better=False,
        )
        print(
            f"  baseline: {IMAGES} `imagen generate` processes at once; predictions take "
            f"{PREDICTION_S:g} s; medians of {ROUNDS} rounds",
            flush=True,
        )
