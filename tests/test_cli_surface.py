"""One CLI surface: --json everywhere, complete piped output with a header row, one-line errors
in imagen's style, no tracebacks (a closed pipe included), global -q/-v, `generate -`, shell
completion, examples in every command's help, config URL and preview checks, `imagen open`."""

from __future__ import annotations

import inspect
import json
import os
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from imagen.cli.commands import COMMANDS as _COMMANDS
from tests.support.cli import ROOT, Sandbox

# Commands that print data (and so take --json).
DATA_COMMANDS = {
    "backends",
    "config show",
    "jobs",
    "show",
    "resume",
    "cancel",
    "audit",
    "rebuild",
    "usage",
    "usage sync",
    "budget list",
    "wait",
    "worker",
    "whoami",
    "generate",
    "gallery",
    "skills install",
    "skills status",
    "skills uninstall",
}


def _commands() -> Iterator[tuple[str, Any]]:
    """Every command as (`name [sub]`, its cyclopts App), nested apps included."""
    from imagen.cli.app import app

    for name in _COMMANDS:
        sub = app[name]
        if sub.default_command is not None:
            yield name, sub
        for child in sub:
            if child in sub.help_flags or child in sub.version_flags:
                continue
            yield f"{name} {child}", sub[child]


def _help(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    from imagen.cli.app import app

    capsys.readouterr()
    app.meta([*argv, "--help"])
    return capsys.readouterr().out


def test_every_command_follows_the_conventions(capsys: pytest.CaptureFixture[str]) -> None:
    seen = set()
    for name, sub in _commands():
        seen.add(name)
        text = _help(name.split(), capsys)
        assert "Examples of use:" in text, f"`imagen {name} --help` has no Examples of use: block"
        assert "--empty-" not in text and "--json-output" not in text, name
        assert [w for w in text.split() if w.startswith("--no-")] in ([], ["--no-preview"]), name
        options = [line.split()[0] for line in text.splitlines() if line.startswith("  --")]
        assert ("--json" in options) == (name in DATA_COMMANDS), name
        fn = sub.default_command
        for param in inspect.signature(fn).parameters.values():
            if param.annotation in (bool, "bool") or "bool" in str(param.annotation):
                assert param.kind is inspect.Parameter.KEYWORD_ONLY, (
                    f"{name}: boolean {param.name} must be keyword-only (after `*,`)"
                )
        first = (inspect.getdoc(fn) or "").splitlines()[0]
        if name in _COMMANDS:
            assert first == _COMMANDS[name][1], (
                f"{name}: the docstring's first line must equal its _COMMANDS help"
            )
    assert DATA_COMMANDS <= seen


def test_fast_help_equals_the_cyclopts_help(capsys: pytest.CaptureFixture[str]) -> None:
    from imagen.cli.fast import top_help

    # `imagen -q --help` goes through cyclopts; `imagen --help` is answered without it.
    assert _help(["-q"], capsys) == top_help()


def test_fast_answers_equal_cyclopts_answers(tmp_path: Path) -> None:
    """`--version` and `config path` are answered without cyclopts (cli/fast.py); with a global
    option in front they go through cyclopts, which must say the same."""
    box = Sandbox(tmp_path)
    for argv in (["--version"], ["config", "path"]):
        fast = box.run(*argv)
        full = box.run("-q", *argv)
        assert fast.returncode == full.returncode == 0, (fast.stderr, full.stderr)
        assert fast.stdout == full.stdout and fast.stdout.strip(), argv


@pytest.fixture
def box(tmp_path: Path) -> Sandbox:
    return Sandbox(tmp_path)


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["audit", "yes"], "unexpected argument: yes (see `imagen audit --help`)"),
        (["backends", "yes"], "no backend 'yes'"),  # NAME, never --check
        (["jobs", "--limit", "x"], 'invalid value for --limit: unable to convert "x" into int'),
        (["jobs", "--json-output"], "unknown option: --json-output"),
        (["nope"], 'unknown command "nope"'),
        (["genrate", "a fox"], 'unknown command "genrate". Did you mean "generate"?'),
        (["jobs", "--limit", "-1"], "--limit -1: give 1 or more rows"),
        (["-x", "jobs"], "unknown option: -x (see `imagen --help`)"),
        (["generate"], "no prompt: pass the text to draw"),
        (["generate", "--typo"], "unknown option: --typo (see `imagen generate --help`)"),
    ],
)
def test_parse_errors_are_one_line_in_imagens_style(
    box: Sandbox, argv: list[str], expected: str
) -> None:
    box.write_config("")
    result = box.run(*argv)
    assert result.returncode == 2
    [line] = result.stderr.splitlines()
    assert line.startswith("imagen: error: ") and expected in line, line
    assert result.stdout == ""


def test_unexpected_errors_are_one_line_and_v_shows_the_traceback(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import io

    from imagen.cli import context
    from imagen.runner.environment import Environment

    def bug() -> None:
        raise RuntimeError("something imagen did not expect\nsecond line")

    for verbosity, traceback_shown in ((0, False), (1, True)):
        stderr = io.StringIO()
        session = context.new_session(verbosity=verbosity, env=Environment(stderr=stderr))
        monkeypatch.setattr(context, "_session", session)
        assert context.run_guarded(bug) == 70
        lines = stderr.getvalue().splitlines()
        assert lines[-1] == (
            "imagen: error: internal error (RuntimeError: something imagen did not expect); "
            "run again with -v for details and report it"
        )
        assert ("Traceback (most recent call last):" in lines) is traceback_shown


def test_a_config_file_that_is_not_text_is_a_config_error(box: Sandbox) -> None:
    (box.root / "config.toml").write_bytes(b"\xff\xfe\x00binary")
    result = box.run("backends")
    assert (
        result.returncode == 2 and "not UTF-8" in result.stderr and "config.toml" in result.stderr
    )
    assert len(result.stderr.splitlines()) == 1


def _closed_pipe_run(box: Sandbox, *args: str) -> subprocess.CompletedProcess[str]:
    """Run with stdout a real pipe whose reader is already gone: the first write gets EPIPE."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        return subprocess.run(
            box.cmd(*args),
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            env=box.env,
            cwd=box.root,
            timeout=120,
        )
    finally:
        os.close(write_end)


@pytest.mark.parametrize(
    "argv", [["--help"], ["config", "show"], ["config", "path"], ["backends"], ["jobs"]]
)
def test_a_closed_pipe_is_quiet(box: Sandbox, argv: list[str]) -> None:
    box.write_config("")
    result = _closed_pipe_run(box, "-q", *argv)
    assert result.stderr == "", result.stderr
    assert result.returncode == 141


def test_head_closing_early_on_a_long_listing(sandbox: Sandbox) -> None:
    for i in range(3):
        assert sandbox.run("generate", f"fox {i}", "--seed", str(i)).returncode == 0
    assert sandbox.run("show", sandbox.job_ids()[0]).returncode == 0
    shown = _closed_pipe_run(sandbox, "show", sandbox.job_ids()[0])
    assert shown.stderr == "" and shown.returncode == 141
    piped = subprocess.run(
        ["/bin/sh", "-c", " ".join(sandbox.cmd("jobs")) + " | head -1"],
        capture_output=True,
        text=True,
        env=sandbox.env,
        cwd=sandbox.root,
        timeout=120,
    )
    assert piped.stdout.startswith("job_id\tcreated_at\tstatus")
    assert "Traceback" not in piped.stderr and "Exception" not in piped.stderr


def test_piped_jobs_are_complete_tab_separated_with_a_header(sandbox: Sandbox) -> None:
    empty = sandbox.run("jobs")  # no ledger yet: still the header, and [] with --json
    assert empty.stdout.startswith("job_id\tcreated_at") and len(empty.stdout.splitlines()) == 1
    assert json.loads(sandbox.run("jobs", "--json").stdout) == []
    prompt = "a very long prompt " * 12 + "\twith a tab\nand a newline"
    assert sandbox.run("generate", prompt, "--seed", "5").returncode == 0
    [job_id] = sandbox.job_ids()
    lines = sandbox.run("jobs").stdout.splitlines()
    header, row = lines[0].split("\t"), lines[1].split("\t")
    assert header == [
        "job_id",
        "created_at",
        "status",
        "backend",
        "model",
        "server",
        "cost_usd",
        "prompt",
    ]
    fields = dict(zip(header, row, strict=True))
    assert fields["job_id"] == job_id and fields["status"] == "succeeded"
    assert fields["prompt"] == prompt.replace("\t", " ").replace("\n", " ")  # never cut
    [as_json] = json.loads(sandbox.run("jobs", "--json").stdout)
    assert as_json["job_id"] == job_id and as_json["prompt"] == prompt
    assert json.loads(sandbox.run("resume", job_id, "--json").stdout)[0]["job_id"] == job_id


def test_terminal_table_has_a_header_and_fits(monkeypatch: pytest.MonkeyPatch) -> None:
    import io

    from imagen.cli import render

    monkeypatch.setenv("COLUMNS", "60")
    out = io.StringIO()
    rows = [{"name": "a", "n": 1.5, "text": "x" * 200}, {"name": "bbb", "n": None, "text": "y"}]
    columns = [
        render.Column("name"),
        render.Column("n", align=">"),
        render.Column("text", shrink=True),
    ]
    render.table(rows, columns, footer={"name": "total"}, out=out, isatty=True)
    lines = out.getvalue().splitlines()
    assert lines[0].split() == ["NAME", "N", "TEXT"]
    assert all(len(line) <= 60 for line in lines) and lines[1].endswith("…")
    assert lines[2].split() == ["bbb", "-", "y"] and lines[3].strip() == "total"


def test_at_80_columns_tables_drop_columns_rather_than_wrap_or_cut_a_status(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import io

    from imagen.cli import render
    from imagen.cli.backends import COLUMNS as BACKENDS
    from imagen.cli.jobs import JOB_COLUMNS

    monkeypatch.setenv("COLUMNS", "80")
    status = "not configured (set REPLICATE_API_TOKEN)"
    backends = [
        {"name": "flux-schnell-replicate", "type": "replicate", "default": True, "status": status},
        {"name": "flux-schnell-local", "type": "comfyui", "default": False, "status": "ok"},
    ]
    for row in backends:
        row["model"] = "black-forest-labs/flux-schnell"
    job = {
        "job_id": "0123456789abcdef",
        "created_at": "2026-12-06T03:14:23.000000Z",
        "status": "succeeded",
        "backend": "flux-schnell-replicate",
        "model": "black-forest-labs/flux-schnell",
        "cost_usd": "0.003000",
        "prompt": "a red fox in the snow, watercolour, " * 3,
    }
    for rows, columns, kept in ((backends, BACKENDS, status), ([job], JOB_COLUMNS, "$0.003")):
        out = io.StringIO()
        render.table(rows, columns, out=out, isatty=True)
        lines = out.getvalue().splitlines()
        assert all(len(line) <= 80 for line in lines), lines
        assert kept in lines[1]
        piped = io.StringIO()
        render.table(rows, columns, out=piped, isatty=False)
        assert len(piped.getvalue().splitlines()[0].split("\t")) == len(columns)  # all kept


def test_quiet_and_verbose_are_global(sandbox: Sandbox) -> None:
    assert "no interrupted jobs" in sandbox.run("resume", "--all").stderr
    quiet = sandbox.run("-q", "resume", "--all")
    assert quiet.returncode == 0 and quiet.stderr == ""
    loud = sandbox.run("generate", "a loud fox", "--seed", "1", "-v")
    assert loud.returncode == 0, loud.stderr
    assert "imagen: requested echo" in loud.stderr and "imagen: succeeded" in loud.stderr


def test_generate_dash_reads_the_prompt_from_stdin(sandbox: Sandbox) -> None:
    result = subprocess.run(
        sandbox.cmd("generate", "-", "--seed", "9"),
        input="a fox read from stdin\n",
        capture_output=True,
        text=True,
        env=sandbox.env,
        cwd=sandbox.root,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    sidecar = json.loads(Path(result.stdout.strip() + ".json").read_text())
    assert sidecar["prompt"] == "a fox read from stdin"
    empty = subprocess.run(
        sandbox.cmd("generate", "-"), input="", capture_output=True, text=True, env=sandbox.env
    )
    assert empty.returncode == 2 and "prompt is empty" in empty.stderr


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_bash_completion_script_registers_and_completes(box: Sandbox) -> None:
    script = box.run("completion", "bash")
    assert script.returncode == 0, script.stderr
    (box.root / "imagen.bash").write_text(script.stdout)
    probe = (
        f"source {box.root / 'imagen.bash'}; complete -p imagen; "
        "COMP_WORDS=(imagen gen); COMP_CWORD=1; _imagen; printf '%s\\n' \"${COMPREPLY[@]}\""
    )
    done = subprocess.run(["bash", "-c", probe], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert "generate" in done.stdout.split()


def test_url_without_scheme_is_a_config_error(box: Sandbox) -> None:
    box.write_config('[backends.local]\ntype = "comfyui"\nurl = "127.0.0.1:8188"\n')
    result = box.run("backends", "--check")
    assert result.returncode == 2
    [line] = result.stderr.splitlines()
    assert "backends.local.url = '127.0.0.1:8188' is not a URL" in line
    assert "Warning" not in result.stderr
    box.write_config("")
    result = box.run("backends", env={"SUPABASE_URL": "example.supabase.co"})
    assert result.returncode == 2 and "SUPABASE_URL" in result.stderr


def test_missing_config_suggests_a_command_that_creates_it(box: Sandbox, tmp_path: Path) -> None:
    target = tmp_path / "elsewhere" / "my imagen.toml"
    result = box.run("--config", str(target), "backends")
    assert result.returncode == 2
    suggestion = shlex.split(result.stderr.split("`")[1])
    assert suggestion == ["imagen", "config", "init", "--path", str(target)]
    assert box.run(*suggestion[1:]).returncode == 0
    assert target.exists()
    assert box.run("--config", str(target), "backends").returncode == 0


def test_preview_true_is_accepted_and_bad_imagen_preview_stops_before_paying(
    sandbox: Sandbox,
) -> None:
    config = (sandbox.root / "config.toml").read_text()
    sandbox.write_config(config + "preview = true\n")
    shown = json.loads(sandbox.run("config", "show", "--json").stdout)
    assert shown["output"]["preview"] == "on"
    bad = sandbox.run("generate", "a fox", env={"IMAGEN_PREVIEW": "sometimes"})
    assert bad.returncode == 2 and "IMAGEN_PREVIEW='sometimes' is invalid" in bad.stderr
    assert sandbox.job_ids() == []  # nothing recorded, nothing paid


def _recording_opener(directory: Path, name: str) -> Path:
    """A stand-in desktop opener: records its arguments and exits, as xdg-open does."""
    program = directory / name
    program.write_text(
        f"#!{sys.executable}\nimport json, sys\n"
        f"open({str(directory / 'opened.json')!r}, 'w').write(json.dumps(sys.argv[1:]))\n"
    )
    program.chmod(0o755)
    return directory / "opened.json"


def test_open_outside_tmux_uses_the_desktop_opener(sandbox: Sandbox, tmp_path: Path) -> None:
    image = sandbox.run("generate", "a fox to open", "--seed", "2").stdout.strip()
    [job_id] = sandbox.job_ids()
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    opened = _recording_opener(bin_dir, "xdg-open")
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "DISPLAY": ":0"}
    result = sandbox.run("open", job_id[:6], env=env)
    assert result.returncode == 0, result.stderr
    assert json.loads(opened.read_text()) == [image]
    headless = sandbox.run("open", job_id[:6], env={"PATH": env["PATH"], "DISPLAY": ""})
    assert headless.returncode == 2 and "no desktop session" in headless.stderr
    assert image in headless.stderr  # the user can still open it by hand


def test_detects_the_first_installed_viewer(tmp_path: Path) -> None:
    from imagen.app.preview import detect_viewer

    for name in ("viu", "chafa"):
        (tmp_path / name).write_text("#!/bin/sh\n")
        (tmp_path / name).chmod(0o755)
    command = detect_viewer({"PATH": str(tmp_path)})
    assert command is not None and command[:2] == ("/bin/sh", "-c")
    assert command[3:] == (str(tmp_path / "chafa"), "{path}")  # chafa comes before viu
    (tmp_path / "tmux-img").write_text("#!/bin/sh\n")
    (tmp_path / "tmux-img").chmod(0o755)
    assert detect_viewer({"PATH": str(tmp_path)}) == (
        str(tmp_path / "tmux-img"),
        "--hold",
        "{path}",
    )
    assert detect_viewer({"PATH": str(tmp_path / "empty")}) is None


def test_help_runs_without_cyclopts_or_rich() -> None:
    for argv in (["--help"], ["--version"], ["config", "path"]):
        out = subprocess.run(
            [sys.executable, "-X", "importtime", "-m", "imagen", *argv],
            capture_output=True,
            text=True,
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        assert out.returncode == 0
        imported = {line.split("|")[-1].strip() for line in out.stderr.splitlines() if "|" in line}
        assert not {"cyclopts", "rich", "tomllib", "sqlalchemy"} & imported, argv
