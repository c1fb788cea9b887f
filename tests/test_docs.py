"""docs/: the command reference is the real --help, the docs are readable from any install, and
docs/testing.md's recipe works as written."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

from tests.support.cli import ROOT, Sandbox
from tests.support.doubles import TOKEN, TOKEN_ENV


def test_usage_reference_is_the_real_help() -> None:
    done = subprocess.run(
        [sys.executable, "scripts/usage_reference.py", "--check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 0, done.stderr
    from imagen.cli.commands import COMMANDS as _COMMANDS

    text = (ROOT / "docs" / "usage.md").read_text()
    for name in _COMMANDS:
        assert f"### `imagen {name}" in text, name


def test_docs_command_prints_every_doc(tmp_path: Path) -> None:
    box = Sandbox(tmp_path)
    listed = box.run("docs").stdout.split()
    assert listed == sorted(p.stem for p in (ROOT / "docs").glob("*.md"))
    shown = box.run("docs", "setup-comfyui")
    assert shown.stdout == (ROOT / "docs" / "setup-comfyui.md").read_text()
    wrong = box.run("docs", "nope")
    assert wrong.returncode == 2 and "topics: " in wrong.stderr


def test_the_wheel_carries_the_docs_and_hints_name_commands_not_paths() -> None:
    wheel = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["hatch"]["build"]
    assert wheel["targets"]["wheel"]["force-include"]["docs"] == "imagen/_docs"
    # No message imagen prints may send a wheel user to a path in a checkout they do not have.
    for path in (ROOT / "imagen").rglob("*.py"):
        for lineno, line in enumerate(path.read_text().splitlines(), 1):
            if line.lstrip().startswith("#") or '"""' in line:
                continue
            assert not re.search(r"""["'][^"']*\bdocs/[\w-]+\.md""", line), f"{path}:{lineno}"


def test_testing_md_recipe_works_against_the_standalone_double(tmp_path: Path) -> None:
    text = (ROOT / "docs" / "testing.md").read_text()
    config = re.search(r"<<'EOF'\n(.*?)\nEOF", text, re.S).group(1)  # type: ignore[union-attr]
    config = config.replace("/tmp/imagen-try", str(tmp_path / "try"))
    double = subprocess.Popen(
        [sys.executable, "-m", "imagen.testing.replicate", "--port", "0", "--token", TOKEN],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )
    try:
        url = double.stdout.readline().strip()  # type: ignore[union-attr]
        assert url.startswith("http://127.0.0.1:")
        config = re.sub(r"http://127\.0\.0\.1:8700", url, config)
        box = Sandbox(tmp_path, env=dict(TOKEN_ENV))
        box.write_config(config)
        box.env.pop("IMAGEN_LEDGER_URL")  # the recipe's own [ledger] url applies
        assert "token accepted" in box.run("backends", "--check").stdout
        made = box.run("generate", "a lighthouse at dusk", "--aspect", "16:9")
        assert made.returncode == 0, made.stderr
        assert Path(made.stdout.strip()).exists()
        assert (tmp_path / "try" / "ledger.db").exists()
    finally:
        double.terminate()
        double.wait(timeout=30)


def _sh_block(text: str, heading: str) -> str:
    """The first ```sh block after `heading` in a doc."""
    section = text.split(f"\n{heading}\n", 1)[1]
    return re.search(r"```sh\n(.*?)```", section, re.S).group(1)  # type: ignore[union-attr]


def test_detach_wait_and_worker_examples_run_as_written(tmp_path: Path) -> None:
    from tests.support.doubles import FAST, SCHNELL, replicate_double

    text = (ROOT / "docs" / "usage.md").read_text()
    detach = _sh_block(text, "## Detach and wait")
    workers = _sh_block(text, "### Workers on several machines")
    # The shared ledger is this sandbox's own (SQLite, so `--detach` starts its own worker):
    # the `export` is left out; the worker, which runs until stopped, exits once idle.
    workers = "".join(line for line in workers.splitlines(True) if not line.startswith("export "))
    assert "imagen worker --backend flux-schnell-replicate --max 8 " in workers
    workers = workers.replace("--max 8", "--max 8 --exit-when-idle")
    with replicate_double() as rep:
        box = Sandbox(tmp_path, env=dict(TOKEN_ENV))
        box.write_backend(
            "flux-schnell-replicate", "replicate", model=SCHNELL, base_url=rep.url, **FAST
        )
        (tmp_path / "prompts.txt").write_text("a heron\na crane\n")
        script = f'imagen() {{ "{sys.executable}" -m imagen "$@"; }}\nset -e\n{detach}{workers}'
        done = subprocess.run(
            ["bash", "-c", script], env=box.env, cwd=tmp_path, capture_output=True, text=True
        )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    paths = [p for p in lines if p.endswith(".png")]
    assert len(paths) == 4 + 2 and all(Path(p).is_file() for p in paths)
    assert lines.count("succeeded") == 4 and "wait exited" not in done.stdout


def _section(title: str) -> str:
    text = (ROOT / "docs" / "usage.md").read_text()
    return text.split(title, 1)[1].split("\n## ", 1)[0].split("\n### ", 1)[0]


def test_dry_run_examples_run_as_written(tmp_path: Path) -> None:
    """docs/usage.md "A price before paying": each example line, run by sh against the
    Replicate double with `imagen` on PATH, succeeds, and none records or sends anything."""
    import os

    from tests.support.cli import Sandbox
    from tests.support.doubles import FAST, SCHNELL, TOKEN_ENV, replicate_double

    [block] = re.findall(r"```sh\n(.*?)```", _section("### A price before paying"), re.S)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    shim = bin_dir / "imagen"
    shim.write_text(f'#!/bin/sh\nexec {sys.executable} -m imagen "$@"\n')
    shim.chmod(0o755)
    with replicate_double() as rep:
        (tmp_path / "box").mkdir()
        box = Sandbox(tmp_path / "box", env=dict(TOKEN_ENV))  # named as in the sample config
        box.write_backend(
            "flux-schnell-replicate", "replicate", model=SCHNELL, base_url=rep.url, **FAST
        )
        env = {**box.env, "PATH": f"{bin_dir}{os.pathsep}{box.env.get('PATH', '')}"}
        for example in block.strip().splitlines():
            done = subprocess.run(
                ["sh", "-ec", example], env=env, cwd=box.root, capture_output=True, text=True
            )
            assert done.returncode == 0 and done.stdout.strip() not in ("", "null"), (
                example,
                done.stderr,
            )
        assert rep.requests == [] and not (box.root / "ledger.db").exists()


def test_the_mcp_section_lists_the_servers_tools() -> None:
    """docs/usage.md "Agents: the MCP server": the client settings name `imagen mcp`, and the
    tools listed are the server's own (built in-process, no server started)."""
    import asyncio
    import json

    from imagen.cli.mcp_server import build

    section = _section("## Agents: the MCP server")
    [settings] = re.findall(r"```json\n(.*?)```", section, re.S)
    server = json.loads(settings)["mcpServers"]["imagen"]
    assert [server["command"], *server["args"]] == ["imagen", "mcp"]
    listed = set(re.findall(r"^- `(\w+)`:", section, re.M))
    tools = {t.name for t in asyncio.run(build().list_tools())}
    assert listed == tools
