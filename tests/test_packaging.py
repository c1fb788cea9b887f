"""What a fresh machine gets from `pip install -e '.[test]'` is enough to import every test.

A module that the tests import but that only arrives because the developer's machine happens to
have it (`replicate` once) passes here and fails for a user; .ci/run catches it in a fresh venv,
this test catches it in seconds and names the package.
"""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FIRST_PARTY = {"imagen", "ledger", "tests"}


def _name(requirement: str) -> str:
    return re.split(r"[\s\[<>=!~;(]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def _declared(extras: tuple[str, ...]) -> set[str]:
    """Distributions pyproject.toml brings (with these extras), followed through their own
    requirements as installed here."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    todo = [_name(r) for r in project["dependencies"]]
    for extra in extras:
        todo += [_name(r) for r in project["optional-dependencies"][extra]]
    seen: set[str] = set()
    while todo:
        dist = todo.pop()
        if dist in seen:
            continue
        seen.add(dist)
        try:
            requires = metadata.requires(dist) or []
        except metadata.PackageNotFoundError:
            continue
        todo += [_name(r) for r in requires if "extra ==" not in r]
    return seen


def _imports(paths: list[Path]) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                found.setdefault(name.split(".")[0], path)
    return found


def _third_party(imports: dict[str, Path]) -> dict[str, Path]:
    return {
        m: p
        for m, p in imports.items()
        if m not in sys.stdlib_module_names and m not in FIRST_PARTY and m != "__future__"
    }


def _undeclared(modules: dict[str, Path], declared: set[str]) -> list[str]:
    owners = metadata.packages_distributions()
    missing = []
    for module, path in sorted(modules.items()):
        dists = {d.lower().replace("_", "-") for d in owners.get(module, [])}
        if not dists & declared:
            missing.append(
                f"{path.relative_to(ROOT)} imports {module} "
                f"(from {', '.join(sorted(dists)) or 'no installed distribution'})"
            )
    return missing


def test_every_module_the_tests_import_is_declared_by_the_test_extra() -> None:
    files = [p for p in (ROOT / "tests").rglob("*.py") if "benchmarks" not in p.parts]
    missing = _undeclared(_third_party(_imports(files)), _declared(("test",)))
    assert not missing, "add to [project.optional-dependencies] test: " + "; ".join(missing)


def test_every_module_imagen_imports_is_a_runtime_dependency() -> None:
    files = [*(ROOT / "imagen").rglob("*.py"), *(ROOT / "ledger").rglob("*.py")]
    missing = _undeclared(_third_party(_imports(files)), _declared(()))
    assert not missing, "add to [project] dependencies: " + "; ".join(missing)


def test_the_check_names_an_undeclared_import(tmp_path: Path) -> None:
    # The check itself can fail: a module only the developer's machine has is reported.
    probe = ROOT / "tests" / "_probe_import.py"
    imports = {"replicate": probe, "json": probe, "imagen": probe}
    missing = _undeclared(_third_party(imports), _declared(()))
    assert missing == ["tests/_probe_import.py imports replicate (from replicate)"]
