"""`imagen skills`: the /imagine SKILL.md is valid Agent Skills front matter, short, shipped
in the wheel, installed atomically where each tool looks, and removed only when imagen wrote
it. (Every command in it runs: tests/test_docs.py::test_every_command_in_the_skill_runs.)"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from imagen.app import skills
from imagen.app.errors import UserError
from tests.support.cli import ROOT


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("HOME", str(tmp_path))
    return tmp_path


def test_the_skill_is_agent_skills_front_matter_and_a_short_body() -> None:
    text = skills.render()
    front, body = re.fullmatch(r"---\n(.*?)\n---\n(.*)", text, re.S).groups()  # type: ignore[union-attr]
    fields = dict(re.findall(r"^(\w[\w-]*): ?(.*)$", front, re.M))
    assert fields["name"] == "imagine"
    # The description is what an agent matches a task against: it must say when to use it.
    assert "Use when" in fields["description"] and len(fields["description"]) <= 1024
    assert re.search(r"^  written-by: imagen \S+ \(imagen skills install\)$", front, re.M)
    assert 1500 <= len(body.encode()) <= 3000, len(body.encode())
    for lesson in ("--json", "exit code", "imagen resume", "--force-new", "whoami", "budget"):
        assert lesson.lower() in body.lower(), lesson
    # Inside a package directory and not ignored by git: hatch puts it in the wheel.
    assert skills.TEMPLATE.is_relative_to(ROOT / "imagen")
    ignored = subprocess.run(["git", "check-ignore", "-q", str(skills.TEMPLATE)], cwd=ROOT)
    assert ignored.returncode == 1


def test_install_status_uninstall_in_each_place(home: Path) -> None:
    project = home / "proj" / ".agents" / "skills"
    claude = home / ".claude" / "skills" / "imagine" / "SKILL.md"
    assert skills.status("claude").state == "missing"
    assert skills.install("claude").state == "current"
    assert claude.read_text() == skills.render()
    assert skills.install(str(project)).path == project / "imagine" / "SKILL.md"
    assert skills.status("agents").path == home / ".agents" / "skills" / "imagine" / "SKILL.md"
    # No temp file left beside it (written through a temp file, then renamed).
    assert sorted(p.name for p in claude.parent.iterdir()) == ["SKILL.md"]

    # Another imagen version wrote it: stale, and install brings it up to date.
    claude.write_text(skills.render("0.0.1"))
    assert (skills.status("claude").state, skills.status("claude").written_by) == (
        "stale",
        "0.0.1",
    )
    assert skills.install("claude").state == "current"

    # Edited since: kept by install and uninstall, replaced or removed only with force.
    claude.write_text(skills.render().replace("Never re-run", "Feel free to re-run"))
    assert skills.status("claude").state == "changed"
    with pytest.raises(UserError, match="--force"):
        skills.install("claude")
    with pytest.raises(UserError, match="--force"):
        skills.uninstall("claude")
    assert "Feel free" in claude.read_text()
    assert skills.install("claude", force=True).state == "current"

    # Uninstall removes the file and the imagine/ folder, never a neighbour or the skills dir.
    (project / "imagine" / "notes.md").write_text("mine")
    assert skills.uninstall("claude").state == "missing"
    assert not claude.parent.exists() and claude.parent.parent.is_dir()
    assert skills.uninstall(str(project)).state == "missing"
    assert (project / "imagine" / "notes.md").read_text() == "mine"
    assert skills.uninstall("claude").state == "missing"  # nothing there: nothing to do


def test_a_skill_imagen_did_not_write_is_never_replaced_or_removed_unasked(home: Path) -> None:
    theirs = home / ".agents" / "skills" / "imagine" / "SKILL.md"
    theirs.parent.mkdir(parents=True)
    theirs.write_text("---\nname: imagine\ndescription: someone else's\n---\nhello\n")
    assert skills.status("agents").state == "foreign"
    with pytest.raises(UserError, match="not written by imagen"):
        skills.install("agents")
    with pytest.raises(UserError, match="not written by imagen"):
        skills.uninstall("agents", force=True)
    assert "someone else's" in theirs.read_text()
    assert skills.install("agents", force=True).state == "current"
    with pytest.raises(UserError, match="--target ''"):
        skills.status("")
