"""Start-up: `imagen generate` is parsed by cyclopts like every command (one parser; only
`--help`, `--version` and `config path` are answered without it, tests/test_cli_surface.py), and
its path stays lean: no rich (no terminal here), Pillow (the PNG is checked without it) or
alembic (the ledger exists at head) once the ledger exists. (The time itself is measured in
tests/benchmarks/bench_replicate.py.)"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.support.cli import Sandbox
from tests.support.doubles import TOKEN, replicate_double


def test_generate_has_one_parser() -> None:
    """cli/fast.py answers nothing for a generate command line: cyclopts parses it all."""
    from imagen.cli import fast

    for argv in (["generate", "a cat"], ["-q", "generate", "x", "--json"], ["generate"]):
        assert fast.answer(argv) is None, argv
    assert not [name for name in vars(fast) if "generate" in name.lower()]


def test_generate_on_an_existing_ledger_loads_cyclopts_and_nothing_it_does_not_need(
    tmp_path: Path,
) -> None:
    """The second generate (the ledger exists at head) in a fresh interpreter: cyclopts parsed
    it, and no alembic, rich or Pillow is in sys.modules at exit. The first creates the ledger,
    which is alembic's work."""
    probe = tmp_path / "modules.json"
    code = (
        "import atexit, json, sys\n"
        "atexit.register(lambda: open(sys.argv[1], 'w').write(json.dumps(sorted(sys.modules))))\n"
        "from imagen.cli import main\n"
        "main(sys.argv[2:])\n"
    )
    with replicate_double() as rep:
        box = Sandbox(tmp_path / "box", env={"REPLICATE_API_TOKEN": TOKEN})
        box.root.mkdir()
        box.write_backend(
            "rep", "replicate", model="black-forest-labs/flux-schnell", base_url=rep.url
        )
        first = box.run("generate", "a first fox", "--json")
        assert first.returncode == 0, first.stderr
        second = subprocess.run(
            [sys.executable, "-c", code, str(probe), "generate", "a second fox", "--json"],
            capture_output=True,
            text=True,
            env=box.env,
            cwd=box.root,
            timeout=120,
        )
    assert second.returncode == 0, second.stderr
    assert Path(json.loads(second.stdout)["image"]).is_file()
    modules = json.loads(probe.read_text())
    loaded = {m.split(".")[0] for m in modules}
    assert "cyclopts" in loaded
    assert {"alembic", "rich", "PIL"} & loaded == set()
    assert {"imagen.cli.generate", "imagen.app.generate"} <= set(modules)  # it really ran
    assert len(box.job_ids()) == 2


def test_the_use_cases_run_without_cyclopts(tmp_path: Path) -> None:
    """What the agent server will do: build a Session and call app/ directly (generate, then
    cancel of the finished job), in a fresh interpreter that never imports cyclopts or the CLI."""
    code = (
        "import json, sys\n"
        "from imagen.app.session import Session\n"
        "from imagen.app import generate as g\n"
        "from imagen.app.cancel import cancel\n"
        "lines = []\n"
        "session = Session(lines=lines.append)\n"
        "state = g.generate(session, g.inputs('a quiet fox', seed=3))\n"
        "_, message = cancel(session, state.job_id)\n"
        "mods = {m.split('.')[0] for m in sys.modules} | set(sys.modules)\n"
        "print(json.dumps([state.status, message, sorted(m for m in mods\n"
        "    if m in ('cyclopts', 'rich') or m.startswith('imagen.cli'))]))\n"
    )
    with replicate_double() as rep:
        box = Sandbox(tmp_path / "box", env={"REPLICATE_API_TOKEN": TOKEN})
        box.root.mkdir()
        box.write_backend(
            "rep", "replicate", model="black-forest-labs/flux-schnell", base_url=rep.url
        )
        done = subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            env=box.env,
            cwd=box.root,
            timeout=120,
        )
    assert done.returncode == 0, done.stderr
    status, message, cli_modules = json.loads(done.stdout)
    assert status == "succeeded"
    assert "already succeeded" in message
    assert cli_modules == []
