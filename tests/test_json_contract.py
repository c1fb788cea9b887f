"""The JSON contract (app/contract.py) held by real outputs: every --json output of a run
against the Replicate double validates against the schema `imagen discover` publishes for its
command (jsonschema, the reference validator), failures print the error object on stdout, and
each exit code keeps its one meaning. In-process (the real CLI entry, the real ledger), so the
whole round stays fast."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from imagen.testing.replicate import ReplicateDouble
from tests.support.cli import Sandbox
from tests.support.doubles import rep_box

Run = Callable[..., tuple[int, Any, str]]


@pytest.fixture
def cli(
    tmp_path: Path,
    rep: ReplicateDouble,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> Iterator[tuple[Sandbox, Run]]:
    """The CLI run in this process over a sandbox: (exit code, parsed stdout, stderr)."""
    from imagen.cli import context
    from imagen.cli.app import run

    box = rep_box(tmp_path, rep)
    for k in [k for k in os.environ if k.startswith(("IMAGEN_", "MAI_", "TMUX"))]:
        monkeypatch.delenv(k)
    for k, v in box.env.items():
        monkeypatch.setenv(k, v)

    def call(*argv: str, caller: str = "agent-1") -> tuple[int, Any, str]:
        monkeypatch.setenv("MAI_FROM_ID", caller)
        context._session = None  # a fresh process's session: config and env read anew
        code = run(list(argv))
        out, err = capsys.readouterr()
        lines = [json.loads(line) for line in out.splitlines() if line.strip()]
        return code, (lines[0] if len(lines) == 1 else lines), err

    yield box, call
    context._session = None


@pytest.fixture(scope="module")
def discovered() -> dict[str, Any]:
    from imagen.cli.discover import describe

    return json.loads(json.dumps(describe()))


def check(discovered: dict[str, Any], command: str, doc: Any) -> None:
    [found] = [c for c in discovered["commands"] if c["name"] == command]
    jsonschema.validate(doc, found["json_output"])


def check_error(discovered: dict[str, Any], doc: Any, code: str, exit_: int) -> None:
    jsonschema.validate(doc, discovered["error_schema"])
    assert (doc["error"]["code"], doc["error"]["exit"]) == (code, exit_)


def test_every_output_validates_against_its_discovered_schema(
    cli: tuple[Sandbox, Run], discovered: dict[str, Any]
) -> None:
    box, run = cli
    code, made, err = run("generate", "a fox", "--seed", "7", "--json")
    assert code == 0, err
    check(discovered, "generate", made)
    assert made["images"] == [made["image"]] and Path(made["image"]).is_file()
    assert made["seed"] == 7 and made["cost_usd"] == "0.003000" and made["cost_final"] is True
    assert made["created_at"].endswith("Z") and made["error"] is None

    code, batch, err = run("generate", "an owl", "a hare", "--json", caller="agent-2")
    assert code == 0, err
    for job in batch:  # one object per line, each with its input's index
        check(discovered, "generate", job)
    assert sorted(j["index"] for j in batch) == [0, 1] and batch[0]["batch"]

    # A * budget governs a caller that has spent nothing: whoami shows it.
    assert run("budget", "set", "*", "0.004", "--per", "day")[0] == 0
    code, me, _ = run("whoami", "--json", caller="agent-new")
    check(discovered, "whoami", me)
    assert me["caller"] == "agent-new" and me["source"] == "env"
    assert [(b["default"], b["spent"], b["left"]) for b in me["budgets"]] == [
        (True, "0.000000", "0.004000")
    ]

    # Over budget: the job object of the failure, with its error object (exit 9).
    code, refused, _ = run("generate", "another fox", "--json")
    assert code == 9
    check(discovered, "generate", refused)
    assert refused["error"]["code"] == "over_budget" and refused["error"]["exit"] == 9
    assert refused["error"]["job_id"] == refused["job_id"] and refused["images"] == []

    code, listed, _ = run("jobs", "--json")
    check(discovered, "jobs", listed)
    assert {j["job_id"] for j in listed} >= {made["job_id"], refused["job_id"]}
    [same] = [j for j in listed if j["job_id"] == made["job_id"]]
    assert same == made  # one job object everywhere
    code, shown, _ = run("show", made["job_id"][:8], "--json")
    check(discovered, "show", shown)
    assert {k: v for k, v in shown.items() if k != "events"} == made
    code, site, _ = run("gallery", "--json", "--output", str(box.root / "site"))
    check(discovered, "gallery", site)
    assert made in site["jobs"]
    for argv in (["budget", "list", "--json"], ["usage", "--json"], ["usage", "--raw", "--json"]):
        code, doc, err = run(*argv)
        assert code == 0, err
        check(discovered, " ".join(a for a in argv[:2] if not a.startswith("-")), doc)
    [row] = [r for r in doc if r["id"].startswith(made["job_id"])]
    assert row["seed"] == 7  # usage --raw: an integer, as everywhere
    code, doc, _ = run("backends", "--json")
    check(discovered, "backends", doc)
    for argv in (["audit", "--json"], ["rebuild", "--json"], ["wait", made["job_id"], "--json"]):
        code, doc, err = run(*argv)
        assert code == 0, err
        check(discovered, argv[0], doc)
    code, doc, err = run("skills", "status", "--target", str(box.root / "skills"), "--json")
    assert code == 0 and [d["state"] for d in doc] == ["missing"], err
    check(discovered, "skills status", doc)
    # discover describes itself too.
    check(discovered, "discover", discovered)


def test_every_command_with_json_declares_its_output(discovered: dict[str, Any]) -> None:
    # discover's schemas are generated from the renderers' declared shapes: a --json command
    # that declares none would leave agents guessing.
    undeclared = [
        c["name"]
        for c in discovered["commands"]
        if any("--json" in p["names"] for p in c["parameters"]) and c["json_output"] is None
    ]
    assert not undeclared, undeclared


def test_failures_print_the_error_object_with_one_meaning_per_code(
    cli: tuple[Sandbox, Run], discovered: dict[str, Any]
) -> None:
    box, run = cli
    code, doc, err = run("jobs", "--limit", "many", "--json")  # a parse error (cyclopts)
    assert code == 2 and len(err.strip().splitlines()) == 1
    check_error(discovered, doc, "bad_input", 2)
    code, doc, err = run("show", "abc", "--json")  # no ledger yet
    assert code in (6, 7) and err.startswith("imagen: error:")
    code, made, _ = run("generate", "a fox", "--json")
    code, doc, err = run("show", "ffff", "--json")
    check_error(discovered, doc, "not_found", 6)
    assert doc["error"]["message"] in err and doc["error"]["hint"]
    code, doc, err = run("generate", "x", "--size", "big", "--json")
    check_error(discovered, doc, "bad_input", 2)
    # The ledger cannot be opened (exit 7): still the object.
    (box.root / "bad.db").write_text("not a database")
    os.environ["IMAGEN_LEDGER_URL"] = f"sqlite:///{box.root / 'bad.db'}"
    code, doc, err = run("jobs", "--json")
    check_error(discovered, doc, "ledger_error", 7)
    # Without --json, stdout stays empty: the error is the stderr line alone.
    code, doc, err = run("jobs")
    assert code == 7 and doc == [] and err.count("\n") == 1
    codes = {c["exit"]: c["code"] for c in discovered["exit_codes"]}
    assert len(set(codes.values())) == len(codes)
    assert codes[10] == "cancelled" and codes[11] == "no_image" and codes[3]


def test_open_on_a_job_without_an_image_is_no_image_not_not_found(
    cli: tuple[Sandbox, Run],
) -> None:
    _, run = cli
    assert run("budget", "set", "agent-1", "0", "--per", "day")[0] == 0
    code, refused, _ = run("generate", "a fox", "--json")
    assert code == 9
    code, _, err = run("open", refused["job_id"])
    assert code == 11 and "has no image" in err


def test_the_docs_exit_codes_and_agent_examples_are_the_codes(
    tmp_path: Path, rep: ReplicateDouble
) -> None:
    """docs/usage.md: the exit-code table lists exactly app/exit_codes.py's codes, and every
    example of "For programs and agents" runs as written (a shell, jq, the real CLI)."""
    import re
    import subprocess
    import sys

    from imagen.app.exit_codes import ExitCode
    from tests.support.cli import ROOT

    text = (ROOT / "docs" / "usage.md").read_text()
    table = text.split("## Exit codes", 1)[1].split("\n## ", 1)[0]
    assert [int(c) for c in re.findall(r"^\| (\d+) \|", table, re.M)] == [int(c) for c in ExitCode]
    section = text.split("## For programs and agents", 1)[1].split("\n## ", 1)[0]
    examples = re.search(r"```sh\n(.*?)```", section, re.S).group(1).splitlines()  # type: ignore[union-attr]
    box = rep_box(tmp_path, rep)
    bin_ = tmp_path / "bin"
    bin_.mkdir()
    (bin_ / "imagen").write_text(f'#!/bin/sh\nexec {sys.executable} -m imagen "$@"\n')
    (bin_ / "imagen").chmod(0o755)
    env = {**box.env, "PATH": f"{bin_}:/usr/bin:/bin", "MAI_FROM_ID": "agent-1"}
    outputs = []
    for line in filter(None, examples):
        done = subprocess.run(
            ["bash", "-c", line], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120
        )
        assert done.returncode == 0 and done.stdout.strip(), (line, done.stderr)  # jq's status
        assert "Traceback" not in done.stderr and "jq: error" not in done.stderr, line
        outputs.append(done.stdout.strip())
    assert "whoami" in outputs[0] and json.loads(outputs[1])["code"] == "over_budget"
    assert (
        outputs[2] == "agent-1"
        and Path(outputs[4]).is_file()
        and outputs[5].splitlines() == ["not_found", "exit 6"]
    )
