"""The code's shape: packages in layers, no import cycle between them, modules of a size one
can read. Imports inside functions count as much as those at the top."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("common", "models", "web", "worker", "dev", "bench")
MODULES = ("celeryconfig",)
# Each may import those listed, and nothing else of the project.
MAY_IMPORT = {
    "celeryconfig": set(),
    "common": {"celeryconfig"},
    "models": {"common"},
    "web": {"common", "models", "celeryconfig"},
    "worker": {"common", "models", "web", "celeryconfig"},
    "dev": {"common"},
    "bench": {"common", "models", "web", "worker", "dev", "celeryconfig"},
}
MAX_LINES = 400


def _sources() -> list[Path]:
    files = [ROOT / f"{name}.py" for name in MODULES]
    for package in PACKAGES:
        files += sorted((ROOT / package).rglob("*.py"))
    return files


def _owner(path: Path) -> str:
    return path.relative_to(ROOT).parts[0].removesuffix(".py")


def _imported(path: Path) -> set[str]:
    """The project's top-level packages `path` imports, anywhere in it."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names & {*PACKAGES, *MODULES}


def test_each_package_imports_only_the_layers_below_it():
    strays = [
        f"{path.relative_to(ROOT)} imports {other}"
        for path in _sources()
        for other in sorted(_imported(path) - MAY_IMPORT[_owner(path)] - {_owner(path)})
    ]
    assert strays == []


def test_no_import_cycle_between_top_level_packages():
    graph: dict[str, set[str]] = {name: set() for name in MAY_IMPORT}
    for path in _sources():
        graph[_owner(path)] |= _imported(path) - {_owner(path)}

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        return any(
            step == goal or (step not in seen and reaches(step, goal, seen | {step}))
            for step in graph[start]
        )

    assert [name for name in graph if reaches(name, name, set())] == []


@pytest.mark.parametrize("path", _sources(), ids=lambda path: str(path.relative_to(ROOT)))
def test_modules_stay_readable_in_size(path):
    lines = len(path.read_text().splitlines())
    assert lines <= MAX_LINES, f"{lines} lines"
