"""The shape of the package a newcomer relies on: layers without cycles, small
modules, one concept each. import-linter (tox -e lint) holds the layer order;
these tests hold what it does not check."""

from __future__ import annotations

import ast
from pathlib import Path

import grimp
import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "mwai"
MAX_MODULE_LINES = 500
MAX_PACKAGE_MODULES = 10


def _modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def _strongly_connected(graph: grimp.ImportGraph) -> list[set[str]]:
    """Tarjan's algorithm over the module import graph: every cycle is a
    component of more than one module (or a module importing itself)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []
    counter = 0

    def visit(module: str) -> None:
        nonlocal counter
        index[module] = low[module] = counter
        counter += 1
        stack.append(module)
        on_stack.add(module)
        for imported in graph.find_modules_directly_imported_by(module):
            if imported not in index:
                visit(imported)
                low[module] = min(low[module], low[imported])
            elif imported in on_stack:
                low[module] = min(low[module], index[imported])
        if low[module] == index[module]:
            component = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == module:
                    break
            components.append(component)

    for module in sorted(graph.modules):
        if module not in index:
            visit(module)
    return components


def test_the_import_graph_has_no_cycles() -> None:
    graph = grimp.build_graph("mwai", cache_dir=None)
    cycles = [sorted(c) for c in _strongly_connected(graph) if len(c) > 1]
    assert cycles == []


def test_the_cycle_finder_finds_a_cycle(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    package = tmp_path / "cyclic"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from cyclic import b\n")
    (package / "b.py").write_text("from cyclic import c\n")
    (package / "c.py").write_text("from cyclic import a\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    graph = grimp.build_graph("cyclic", cache_dir=None)
    assert [sorted(c) for c in _strongly_connected(graph) if len(c) > 1] == [
        ["cyclic.a", "cyclic.b", "cyclic.c"]]


def test_no_module_is_over_the_size_a_reader_can_hold() -> None:
    sizes = {str(path.relative_to(PACKAGE.parent)): len(path.read_text().splitlines())
             for path in _modules()}
    assert {name: lines for name, lines in sizes.items() if lines > MAX_MODULE_LINES} == {}


def test_no_package_holds_more_than_ten_modules() -> None:
    crowded = {}
    for package in [PACKAGE, *(p for p in PACKAGE.rglob("*") if (p / "__init__.py").exists())]:
        entries = [p for p in package.iterdir()
                   if (p.suffix == ".py" and p.name not in ("__init__.py", "__main__.py"))
                   or (p / "__init__.py").exists()]
        if package == PACKAGE:
            continue  # the top level holds the shared vocabulary and the sub-packages
        if len(entries) > MAX_PACKAGE_MODULES:
            crowded[str(package.relative_to(PACKAGE.parent))] = len(entries)
    assert crowded == {}


def _function_level_imports(path: Path) -> list[str]:
    """mwai imports inside a function (a cycle dodged), or import_module of mwai."""
    found = []
    tree = ast.parse(path.read_text())
    for function in ast.walk(tree):
        if not isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        for node in ast.walk(function):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("mwai"):
                found.append(f"{path.name}:{node.lineno} from {node.module}")
            elif isinstance(node, ast.Import) and any(a.name.startswith("mwai")
                                                      for a in node.names):
                found.append(f"{path.name}:{node.lineno} import")
    for node in ast.walk(tree):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and node.func.attr == "import_module" and node.args
                and isinstance(node.args[0], ast.Constant)
                and str(node.args[0].value).startswith("mwai")):
            found.append(f"{path.name}:{node.lineno} import_module")
    return found


def test_no_mwai_import_hides_inside_a_function() -> None:
    assert [hit for path in _modules() for hit in _function_level_imports(path)] == []


def test_the_import_scan_sees_a_hidden_import(tmp_path: Path) -> None:
    module = tmp_path / "hidden.py"
    module.write_text("import importlib\n\ndef f():\n    from mwai.queue import store\n"
                      "    return importlib.import_module('mwai.runner.flow')\n")
    assert _function_level_imports(module) == ["hidden.py:4 from mwai.queue",
                                               "hidden.py:5 import_module"]
