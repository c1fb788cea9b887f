"""Start-up: `imagen generate` on a SQLite ledger runs without importing SQLAlchemy or cyclopts,
and its cyclopts-free parser (imagen/cli/fast.py) reads every command line it accepts exactly
as cyclopts does; whatever it is not sure of goes to cyclopts. (The time itself is measured in
tests/benchmarks/bench_replicate.py.)"""

from __future__ import annotations

import inspect
import json
import subprocess
import sys
import typing
from pathlib import Path

import pytest

from imagen.cli.fast import GENERATE_OPTIONS, GLOBAL_OPTIONS, parse_generate
from imagen.testing.replicate import ReplicateDouble
from tests.support.cli import Sandbox

TOKEN = "r8_startup_test_token_0123456789"


def _cyclopts(argv: list[str]) -> tuple[object, ...]:
    from imagen.cli.app import app

    _, meta, _ = app.meta.parse_args(argv)
    command, bound, _ = app.parse_args(list(meta.args))
    assert command.__name__ == "generate"
    return (
        tuple(bound.args),
        dict(bound.kwargs),
        meta.kwargs.get("config"),
        meta.kwargs.get("quiet", False),
        meta.kwargs.get("verbose", False),
    )


@pytest.mark.parametrize(
    "argv",
    [
        ["generate", "a cat"],
        ["generate", "a cat", "--json"],
        ["generate"],
        ["generate", "-"],
        ["generate", "", "--json"],
        ["generate", "generate"],
        ["generate", "a fox", "an owl", "-n", "4", "--output", "out/"],
        ["generate", "--json", "x", "--no-preview"],
        ["generate", "x", "--preview", "--force"],
        ["generate", "x", "--seed=5", "-n", "3", "--per-job", "2", "--steps", "007"],
        ["generate", "x", "--seed", "99999999999999999999"],
        ["generate", "x", "-b", "rep", "--size", "512x512", "--format", "webp"],
        ["generate", "x", "--aspect", "16:9", "--backend=local", "--output="],
        ["generate", "x", "-o", "a=1", "--option", "b=-2", "-o=c=3"],
        ["generate", "--from", "prompts.txt", "--concurrency", "4"],
        ["-q", "generate", "x"],
        ["--quiet", "--verbose", "generate", "x"],
        ["generate", "x", "-v", "--config", "c.toml"],
        ["--config=c.toml", "generate", "x", "-q"],
        ["--config", "generate", "generate", "x"],
        ["generate", "café ☕ — 猫", "--json"],
    ],
)
def test_the_fast_parser_binds_what_cyclopts_binds(argv: list[str]) -> None:
    parsed = parse_generate(argv)
    assert parsed is not None, argv
    ours = (parsed.prompts, parsed.options, parsed.config, parsed.quiet, parsed.verbose)
    assert ours == _cyclopts(argv)


@pytest.mark.parametrize(
    "argv",
    [
        ["generate", "--help"],
        ["generate", "x", "-h"],
        ["--version"],
        ["jobs"],
        ["-x", "generate", "x"],
        ["generate", "--typo", "x"],
        ["generate", "-x"],
        ["generate", "x", "-"],  # only the first prompt may be `-`
        ["generate", "x", "--seed", "-5"],  # a value starting with - (cyclopts decides)
        ["generate", "x", "--seed", "0x10"],
        ["generate", "x", "--seed", "٣"],
        ["generate", "x", "--seed", "1", "--seed", "2"],
        ["generate", "x", "--output"],
        ["generate", "x", "--json=true"],
        ["generate", "--", "-x"],
        ["generate", "--from", "-"],
        ["generate", "-qv", "x"],
        ["generate", "x\udcff"],  # not UTF-8: the full app's own refusal
        ["generate", "x", "--output", "x\udcc3"],
    ],
)
def test_what_the_fast_parser_is_not_sure_of_goes_to_cyclopts(argv: list[str]) -> None:
    assert parse_generate(argv) is None


def test_the_fast_options_mirror_generates_signature() -> None:
    """Every option of generate() is known here with its kind, and nothing else: an option
    added to generate() fails this test until the fast parser knows it too."""
    from imagen.cli.app import app

    generate = app["generate"].default_command
    hints = typing.get_type_hints(generate, include_extras=True)
    names: dict[str, set[str]] = {}
    for param in inspect.signature(generate).parameters.values():
        if param.kind is not inspect.Parameter.KEYWORD_ONLY:
            continue
        base = (
            typing.get_args(hints[param.name])[0]
            if hasattr(hints[param.name], "__metadata__")
            else hints[param.name]
        )
        kinds = {kind for name, kind in GENERATE_OPTIONS.values() if name == param.name}
        if base in (bool, bool | None):
            assert kinds <= {True, False} and True in kinds, param.name
        elif base in (int, int | None):
            assert kinds == {int}, param.name
        elif base in (str, str | None):
            assert kinds == {str}, param.name
        else:
            assert base == list[str] | None and kinds == {list}, param.name
        names[param.name] = {w for w, (name, _) in GENERATE_OPTIONS.items() if name == param.name}
    assert set(names) == {name for name, _ in GENERATE_OPTIONS.values()}
    # The words themselves are cyclopts' words for these parameters.
    for words in names.values():
        for word in words:
            argv = ["generate", "x", word] + (
                []
                if word.startswith("--")
                and word in ("--force", "--json", "--preview", "--no-preview")
                else ["1"]
            )
            assert parse_generate(argv) is not None
            assert _cyclopts(argv)[1] == parse_generate(argv).options, word
    assert {name for name, _ in GLOBAL_OPTIONS.values()} == {"config", "quiet", "verbose"}


def test_generate_on_a_sqlite_ledger_imports_neither_alembic_nor_cyclopts(
    tmp_path: Path,
) -> None:
    """The second generate (the ledger exists at head) in a fresh interpreter: no alembic,
    cyclopts, rich or Pillow (the PNG is checked without it) in sys.modules at exit.
    The first creates the ledger, which is SQLAlchemy's and alembic's work."""
    probe = tmp_path / "modules.json"
    code = (
        "import atexit, json, sys\n"
        "atexit.register(lambda: open(sys.argv[1], 'w').write(json.dumps(sorted(sys.modules))))\n"
        "from imagen.cli import main\n"
        "main(sys.argv[2:])\n"
    )
    with ReplicateDouble(token=TOKEN) as rep:
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
    loaded = {m.split(".")[0] for m in json.loads(probe.read_text())}
    assert {"alembic", "cyclopts", "rich", "PIL"} & loaded == set()
    assert "imagen.cli.generate" in json.loads(probe.read_text())  # it really ran
    assert len(box.job_ids()) == 2
