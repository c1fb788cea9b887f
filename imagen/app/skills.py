"""The /imagine agent skill: install, show, status and uninstall of imagine/SKILL.md.

A skill is a directory holding SKILL.md (YAML front matter, then Markdown), the Agent Skills
format that Claude Code reads from ~/.claude/skills/ and Codex and other AGENTS.md-aware tools
from ~/.agents/skills/ (a project's .agents/skills/ for one repository). The text ships inside
the package (imagen/app/skill/SKILL.md). What is written carries, in its front matter's
`metadata`, the imagen version that wrote it and a sha256 of the file itself, so `status` can
say up to date, stale or changed, and `uninstall` removes only a file imagen wrote and nobody
has edited since.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from imagen import __version__
from imagen.app.errors import UserError
from imagen.runner.files import atomic_write

NAME = "imagine"
TEMPLATE = Path(__file__).with_name("skill") / "SKILL.md"
# --target names -> the skills directory under $HOME (read when called: tests set HOME).
KNOWN = {"claude": (".claude", "skills"), "agents": (".agents", "skills")}
_SHA_LINE = re.compile(r"^  sha256: ([0-9a-f]{64})$", re.M)
_UNHASHED = "  sha256: -"


def skills_dir(target: str) -> Path:
    """`claude`, `agents`, or any directory (a project's `.agents/skills`, say)."""
    if target in KNOWN:
        return Path.home().joinpath(*KNOWN[target])
    if not target.strip():
        raise UserError("--target '': give claude, agents or a directory")
    return Path(target).expanduser().absolute()


def _hash(text: str) -> str:
    return hashlib.sha256(_SHA_LINE.sub(_UNHASHED, text).encode()).hexdigest()


def render(version: str = __version__) -> str:
    """The SKILL.md imagen writes: the shipped text plus who wrote it and its own sha256."""
    text = TEMPLATE.read_text(encoding="utf-8")
    head, sep, body = text.partition("\n---\n")
    stamped = (
        f"{head}\nmetadata:\n  written-by: imagen {version} (imagen skills install)\n"
        f"{_UNHASHED}{sep}{body}"
    )
    return stamped.replace(_UNHASHED, f"  sha256: {_hash(stamped)}", 1)


@dataclass(frozen=True)
class Status:
    target: str
    path: Path
    # missing | current | stale (imagen wrote it, another version) | changed (edited since) |
    # foreign (not written by imagen)
    state: str
    written_by: str | None = None

    def json(self) -> dict[str, str | None]:
        return {
            "target": self.target,
            "path": str(self.path),
            "state": self.state,
            "written_by": self.written_by,
        }


def status(target: str) -> Status:
    path = skills_dir(target) / NAME / "SKILL.md"
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return Status(target, path, "missing")
    except (OSError, UnicodeDecodeError):
        return Status(target, path, "foreign")
    found = re.search(r"^  written-by: imagen (\S+)", text, re.M)
    sha = _SHA_LINE.search(text)
    if found is None or sha is None:
        return Status(target, path, "foreign")
    version = found.group(1)
    if sha.group(1) != _hash(text):
        return Status(target, path, "changed", version)
    return Status(target, path, "current" if text == render() else "stale", version)


def install(target: str, *, force: bool = False) -> Status:
    """Write imagine/SKILL.md atomically; a file imagen did not write, or one edited since, is
    replaced only with `force`."""
    before = status(target)
    if before.state in ("foreign", "changed") and not force:
        why = "was not written by imagen" if before.state == "foreign" else "was edited"
        raise UserError(
            f"{before.path} {why}; keep it, or replace it with `imagen skills install --force`"
        )
    if before.state != "current":
        try:
            atomic_write(before.path, render().encode(), mode=0o644)
        except OSError as exc:
            raise UserError(f"cannot write {before.path}: {exc.strerror or exc}") from None
    return status(target)


def uninstall(target: str, *, force: bool = False) -> Status:
    """Remove imagine/SKILL.md if imagen wrote it (an edited one only with `force`; one imagen
    did not write, never), then the imagine/ directory if nothing else is in it."""
    before = status(target)
    if before.state == "missing":
        return before
    if before.state == "foreign":
        raise UserError(f"{before.path} was not written by imagen; left as it is")
    if before.state == "changed" and not force:
        raise UserError(
            f"{before.path} was edited since imagen wrote it; keep it, or remove it with "
            "`imagen skills uninstall --force`"
        )
    try:
        before.path.unlink()
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise UserError(f"cannot remove {before.path}: {exc.strerror or exc}") from None
    try:
        before.path.parent.rmdir()  # only when empty: files of others stay, with their folder
    except OSError:
        pass
    return status(target)
