"""The house's shape, checked on the source: imports run one way (front ends -> library -> method -> plumbing),
no module imports itself back through a circle, and no folder holds more than 15 modules."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("plumbing", "moco", "retrieval", "cli", "app", "bench")
MAY_IMPORT = {  # a package -> the project packages its modules may import
    "plumbing": set(),
    "moco": {"plumbing"},
    "retrieval": {"moco", "plumbing"},
    "cli": {"app", "retrieval", "moco", "plumbing"},  # `retrieval app` starts the app: front end to front end
    "app": {"retrieval", "moco", "plumbing"},
    "bench": {"bench", "cli", "app", "retrieval", "moco", "plumbing"},
}
MAX_MODULES = 15


def modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            parts = path.relative_to(REPO).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imports_of(path: Path, name: str) -> list[tuple[str, bool]]:
    """(module imported, at module level?) for each project import in the file."""
    tree = ast.parse(path.read_text(), str(path))
    top = set(map(id, tree.body))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against this module's package
                pkg = name.split(".")[: -node.level] if not path.name == "__init__.py" else name.split(".")
                base = ".".join([*pkg, base] if base else pkg)
            targets = [f"{base}.{a.name}" for a in node.names] + [base]
        else:
            continue
        out += [(t, id(node) in top) for t in targets if t.split(".")[0] in PACKAGES]
    return out


def test_imports_run_one_way():
    wrong = []
    for name, path in modules().items():
        package = name.split(".")[0]
        for target, _ in imports_of(path, name):
            other = target.split(".")[0]
            if other != package and other not in MAY_IMPORT[package]:
                wrong.append(f"{name} imports {target}")
    assert not wrong, "\n".join(wrong)


def test_no_import_circle_at_module_level():
    mods = modules()
    graph = {name: set() for name in mods}
    for name, path in mods.items():
        for target, at_top in imports_of(path, name):
            while target and target not in mods:
                target = target.rpartition(".")[0]  # `from a.b import c` where c is a name in a.b
            if at_top and target and target != name and not name.startswith(target + "."):
                graph[name].add(target)
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                pytest.fail("import circle: " + " -> ".join([*stack[stack.index(nxt) :], nxt]))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)


@pytest.mark.parametrize("root", [*PACKAGES, "tests"])
def test_no_folder_over_15_modules(root):
    crowded = {}
    for folder in [REPO / root, *(p for p in (REPO / root).rglob("*") if p.is_dir())]:
        n = len([p for p in folder.glob("*.py") if p.name != "__init__.py"])
        if n > MAX_MODULES:
            crowded[str(folder.relative_to(REPO))] = n
    assert not crowded, crowded
