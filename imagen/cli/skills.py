"""`imagen skills install|show|status|uninstall`: the /imagine skill for coding agents."""

from __future__ import annotations

from typing import Annotated, Literal, TypedDict

from cyclopts import App, Parameter

from imagen.cli import context, render

skills_app = App(name="skills", help="Install the /imagine skill that teaches agents imagen.")

Targets = Annotated[list[str] | None, Parameter(name="--target")]
Json = Annotated[bool, Parameter(name="--json")]


class SkillObject(TypedDict):
    """One place the skill is (or could be) installed."""

    target: str  # claude, agents or the directory given
    path: str
    state: Literal["current", "stale", "changed", "foreign", "missing"]
    written_by: str | None  # the imagen version that wrote it


def _report(found: list, json_output: bool) -> None:  # type: ignore[type-arg]
    if json_output:
        render.print_json([s.json() for s in found])
        return
    render.table(
        [{"target": s.target, "state": s.state, "path": str(s.path)} for s in found],
        [render.Column("target"), render.Column("state"), render.Column("path")],
    )


@skills_app.command
@render.outputs(list[SkillObject])
def install(*, target: Targets = None, force: bool = False, json_output: Json = False) -> None:
    """Write imagine/SKILL.md where agents look for skills.

    Rewrites a copy an older imagen wrote; a SKILL.md imagen did not write, or one edited
    since, is kept unless --force.

    Examples of use:
      imagen skills install
      imagen skills install --target agents --target .agents/skills

    Parameters
    ----------
    target
        claude (~/.claude/skills: Claude Code), agents (~/.agents/skills: Codex and other
        Agent Skills readers) or a skills directory such as a project's .agents/skills;
        repeatable. [default: claude]
    force
        Replace an imagine/SKILL.md that imagen did not write or that was edited.
    json_output
        Print a JSON array, one object per target: target, path, state, written_by.
    """
    from imagen.app import skills

    done = [skills.install(t, force=force) for t in target or ["claude"]]
    if not json_output:
        for s in done:
            context.note(f"/imagine skill installed: {s.path}")
    _report(done, json_output)


@skills_app.command
def show() -> None:
    """Print the SKILL.md that `install` writes.

    Examples of use:
      imagen skills show
    """
    from imagen.app import skills

    print(skills.render(), end="")


@skills_app.command
@render.outputs(list[SkillObject])
def status(*, target: Targets = None, json_output: Json = False) -> None:
    """Where the skill is installed, and whether it is this imagen's.

    States: current, stale (another imagen version wrote it: run install), changed (edited
    since imagen wrote it), foreign (not imagen's), missing.

    Examples of use:
      imagen skills status
      imagen skills status --json | jq -r '.[] | select(.state != "missing") | .path'

    Parameters
    ----------
    target
        Which: claude, agents or a directory. [default: claude and agents]
    json_output
        Print a JSON array, one object per target: target, path, state, written_by.
    """
    from imagen.app import skills

    _report([skills.status(t) for t in target or list(skills.KNOWN)], json_output)


@skills_app.command
@render.outputs(list[SkillObject])
def uninstall(*, target: Targets = None, force: bool = False, json_output: Json = False) -> None:
    """Remove the imagine/SKILL.md that imagen wrote (and its folder if then empty).

    A SKILL.md imagen did not write is never removed; one edited since only with --force.

    Examples of use:
      imagen skills uninstall
      imagen skills uninstall --target agents

    Parameters
    ----------
    target
        Where: claude, agents or a directory; repeatable. [default: claude]
    force
        Also remove an imagine/SKILL.md edited since imagen wrote it.
    json_output
        Print a JSON array, one object per target: target, path, state, written_by.
    """
    from imagen.app import skills

    done = [skills.uninstall(t, force=force) for t in target or ["claude"]]
    _report(done, json_output)
