"""Floors only point down: cli -> app -> projections / runner -> repository -> backends ->
core, ledger. And no import cycle anywhere.

Every import in the source counts: module level, inside functions, under TYPE_CHECKING (a lazy
import is still a dependency; it only moves when the cost is paid). Read from the AST of every
module under imagen/ (the doubles in imagen/testing aside: they are test equipment, not a floor)
and ledger/. A failure names the importing file, its line and what it imports.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Floor of each package (the longest matching prefix decides). A module may import its own
# package (cli/jobs.py -> cli/render.py) and anything on a lower floor; never a floor above,
# and never a sibling on the same floor (runner and projections know nothing of each other;
# the ledger knows nothing of images, the core nothing of the ledger).
FLOORS = {
    "imagen.__main__": 6,
    "imagen.cli": 5,
    "imagen.app": 4,
    "imagen.runner": 3,
    "imagen.projections": 3,
    "imagen.repository": 2,
    "imagen.backends": 1,
    "imagen.core": 0,
    "ledger": 0,
    "imagen": 0,  # imagen/__init__.py: the version, nothing else
}
EXCLUDED = ("imagen.testing",)


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _sources() -> dict[str, Path]:
    found = {}
    for top in ("imagen", "ledger"):
        for path in sorted((ROOT / top).rglob("*.py")):
            name = _module_name(path)
            if not any(name == e or name.startswith(e + ".") for e in EXCLUDED):
                found[name] = path
    return found


SOURCES = _sources()


def _ours(name: str) -> bool:
    return name.split(".")[0] in ("imagen", "ledger")


def _imports(name: str, source: str, is_package: bool = False) -> Iterator[tuple[int, str]]:
    """(line, imported module) for every import in the module's source, at any depth."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if _ours(alias.name):
                    yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = name.split(".") if is_package else name.split(".")[:-1]
                package = package[: len(package) - (node.level - 1)]
                base = ".".join(package + ([base] if base else []))
            if not _ours(base):
                continue
            for alias in node.names:
                # `from imagen.cli import jobs` imports the module imagen.cli.jobs;
                # `from imagen.cli import HELP` imports imagen.cli itself.
                sub = f"{base}.{alias.name}"
                yield node.lineno, sub if sub in SOURCES else base


def _graph() -> dict[str, dict[str, int]]:
    """module -> {imported module -> first line importing it}."""
    graph: dict[str, dict[str, int]] = {}
    for name, path in SOURCES.items():
        edges: dict[str, int] = {}
        for line, target in _imports(name, path.read_text(), path.name == "__init__.py"):
            if target != name and not any(
                target == e or target.startswith(e + ".") for e in EXCLUDED
            ):
                edges.setdefault(target, line)
        graph[name] = edges
    return graph


GRAPH = _graph()


def _package(name: str) -> str:
    return max((p for p in FLOORS if name == p or name.startswith(p + ".")), key=len)


def test_every_module_has_a_floor() -> None:
    # A new top-level module under imagen/ must say where it stands (else it is floor 0 as
    # `imagen` itself, which would let it be imported by everything and import nothing).
    loose = [
        n
        for n in SOURCES
        if n.count(".") == 1 and n.startswith("imagen.") and _package(n) == "imagen"
    ]
    assert not loose, f"give these modules a floor in FLOORS: {loose}"


def test_floors_only_point_down() -> None:
    wrong = []
    for name, edges in GRAPH.items():
        mine = _package(name)
        for target, line in edges.items():
            theirs = _package(target)
            if theirs == mine or FLOORS[theirs] < FLOORS[mine]:
                continue
            wrong.append(
                f"{SOURCES[name].relative_to(ROOT)}:{line} imports {target} "
                f"({mine} is floor {FLOORS[mine]}, {theirs} floor {FLOORS[theirs]})"
            )
    assert not wrong, "imports against the floors:\n" + "\n".join(wrong)


def _cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[list[str]] = []
    counter = 0
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(graph.get(root, ())))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in graph:
                    continue
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(graph[child])))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
    return found


def _describe(component: list[str]) -> str:
    inside = set(component)
    lines = [
        f"  {SOURCES[a].relative_to(ROOT)}:{line} imports {b}"
        for a in component
        for b, line in GRAPH[a].items()
        if b in inside
    ]
    return f"cycle {' <-> '.join(component)}:\n" + "\n".join(lines)


def _cycles_where(inside_ledger: bool) -> list[list[str]]:
    return [c for c in _cycles(GRAPH) if all(m.startswith("ledger") for m in c) == inside_ledger]


def test_no_import_cycle() -> None:
    cycles = _cycles_where(inside_ledger=False)
    assert not cycles, "\n".join(_describe(c) for c in cycles)


def test_no_import_cycle_inside_the_ledger() -> None:
    cycles = _cycles_where(inside_ledger=True)
    assert not cycles, "\n".join(_describe(c) for c in cycles)


def test_the_checks_see_what_they_must() -> None:
    """The scan itself: imports inside functions, under TYPE_CHECKING and relative ones are
    edges, and a planted cycle is found."""
    source = (
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n"
        "    from imagen.app.config import Config\n"
        "def f():\n"
        "    import imagen.cli.render\n"
        "    from ..projections import spend\n"
        "    from imagen.cli import HELP\n"
    )
    assert [t for _, t in _imports("imagen.runner.loop", source)] == [
        "imagen.app.config",
        "imagen.cli.render",
        "imagen.projections.spend",
        "imagen.cli",
    ]
    assert _cycles({"a": {"b": 1}, "b": {"c": 1}, "c": {"a": 1}, "d": {"a": 1}}) == [
        ["a", "b", "c"]
    ]


def test_the_cli_builds_no_runner() -> None:
    """Commands call use cases (imagen/app/); every Runner is built by app/runners.py with the
    caller's budgets and the held-ids check, never by a command."""
    built = [
        f"{path.relative_to(ROOT)}:{node.lineno}"
        for name, path in SOURCES.items()
        if name.startswith("imagen.cli")
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Call)
        and (getattr(node.func, "id", None) or getattr(node.func, "attr", None)) == "Runner"
    ]
    assert not built, f"Runner built in the CLI (use imagen.app.runners.new_runner): {built}"


def test_the_mcp_server_stands_on_the_cli_floor_beside_cyclopts_not_on_it() -> None:
    """imagen/cli/mcp_server.py is a second shell at the cli floor: it calls app/ use cases and
    takes from the CLI only the global options' session (cli/context.py), never a command or
    cyclopts; and no other module imports it (only `imagen mcp` pays for the SDK)."""
    name = "imagen.cli.mcp_server"
    from_cli = {t for t in GRAPH[name] if t.startswith("imagen.cli")}
    assert from_cli == {"imagen.cli.context"}, from_cli
    text = SOURCES[name].read_text()
    assert "import cyclopts" not in text and "from cyclopts" not in text
    importers = [n for n, edges in GRAPH.items() if name in edges]
    assert importers == [], importers
