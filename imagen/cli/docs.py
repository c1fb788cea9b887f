"""`imagen docs [TOPIC]`: the user documentation, readable from any install (wheel included)."""

from __future__ import annotations

from pathlib import Path

from imagen.app.errors import UserError


def _docs_dir() -> Path:
    package = Path(__file__).resolve().parents[1]
    shipped = package / "_docs"  # the wheel carries docs/ here (pyproject force-include)
    return shipped if shipped.is_dir() else package.parent / "docs"


def topics() -> list[str]:
    return sorted(p.stem for p in _docs_dir().glob("*.md"))


def docs(topic: str | None = None, /) -> int:
    """Print imagen's documentation (usage, setup-comfyui, testing, architecture).

    Without a topic, lists the topics. The same Markdown files as docs/ in the source.

    Examples of use:
      imagen docs
      imagen docs setup-comfyui
      imagen docs usage | less

    Parameters
    ----------
    topic
        Which document to print.
    """
    if topic is None:
        for name in topics():
            print(name)
        return 0
    path = _docs_dir() / f"{topic.removesuffix('.md')}.md"
    if not path.is_file():
        raise UserError(f"no documentation topic {topic!r}; topics: {', '.join(topics())}")
    print(path.read_text(encoding="utf-8"), end="")
    return 0
