"""The package's import structure (static, from the source: no imports run): no import cycles between modules, and
each room imports only the rooms docs/architecture.md allows."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Dict, Set

PACKAGE = Path(__file__).resolve().parents[1] / "featurenerf_ns"

ALLOWED = {  # room -> rooms it may import (docs/architecture.md, "may import")
    "utils": set(),
    "cameras": {"utils"},
    "model_components": {"utils"},
    "data": {"utils", "cameras", "model_components", "teachers", "fields"},
    "weights": {"utils", "data", "teachers", "encoders"},
    "teachers": {"utils", "data", "weights"},
    "encoders": {"utils", "model_components", "weights", "teachers"},
    "fields": {"utils", "cameras", "model_components"},
    "models": {"utils", "data", "model_components", "encoders", "fields", "teachers"},
    "eval": {"utils", "cameras", "model_components", "data", "teachers"},
    "exporters": {"utils", "cameras", "model_components", "data", "teachers", "eval"},
    "editing": {"utils", "cameras", "model_components", "data", "eval", "exporters"},
    "viewer": {"utils", "cameras", "model_components", "data", "teachers", "fields", "eval", "exporters"},
    "pipelines": {
        "utils",
        "cameras",
        "model_components",
        "data",
        "teachers",
        "fields",
        "models",
        "eval",
        "exporters",
        "viewer",
    },
}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(tree: ast.Module, known: Set[str]) -> Set[str]:
    """Package modules imported at module level (TYPE_CHECKING blocks excluded), resolved to known modules."""

    def resolve(name: str) -> str:
        while name not in known and "." in name:
            name = name.rsplit(".", 1)[0]
        return name

    out: Set[str] = set()

    def visit(body):
        for node in body:
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                continue
            if isinstance(node, (ast.If, ast.Try)):
                visit(node.body)
                visit(node.orelse)
                for h in getattr(node, "handlers", []):
                    visit(h.body)
            if (
                isinstance(node, ast.ImportFrom)
                and node.level == 0
                and (node.module or "").startswith("featurenerf_ns")
            ):
                out.update(resolve(f"{node.module}.{a.name}") for a in node.names)
            elif isinstance(node, ast.Import):
                out.update(resolve(a.name) for a in node.names if a.name.startswith("featurenerf_ns"))

    visit(tree.body)
    return out


def _graph() -> Dict[str, Set[str]]:
    paths = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {m: _imports(ast.parse(p.read_text()), set(paths)) - {m} for m, p in paths.items()}


def _all_imports(tree: ast.Module) -> Set[str]:
    """Rooms imported anywhere in a module (function-local imports included)."""
    rooms = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("featurenerf_ns."):
            rooms.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            rooms.update(a.name.split(".")[1] for a in node.names if a.name.startswith("featurenerf_ns."))
    return rooms


def test_no_import_cycles():
    graph = _graph()
    state: Dict[str, int] = {}
    stack: list = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(n) :] + [n]))
            if n not in state:
                visit(n)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)


def test_rooms_import_only_what_the_architecture_allows():
    bad = []
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE).with_suffix("").parts
        room = rel[0]
        if room not in ALLOWED:
            continue  # method_configs, bench, scripts: may import everything
        for other in _all_imports(ast.parse(path.read_text())) - {room}:
            if other not in ALLOWED[room]:
                bad.append(f"{path.relative_to(PACKAGE)} imports {other}")
    assert not bad, bad
