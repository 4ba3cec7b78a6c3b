"""sfer's modules import one way: no import cycle among them, lazy imports (inside functions)
and Cython's cimports included, and the layers of the package hold (the compiled modules,
which import-linter does not see, included).

The sources are read from the installed package (it ships its .py, .pyx, .pxd and .tp files).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Dict, List, Set

import sfer

PKG_DIR = Path(sfer.__file__).resolve().parent
PATTERNS = ("*.py", "*.pyx", "*.pxd", "*.pxi.tp", "*.pyx.tp")

# Cython's import lines: `from sfer.x cimport ...`, `from sfer import x`, `cimport sfer.x`
_CY_FROM = re.compile(r"^[ \t]*from[ \t]+(sfer(?:\.\w+)?)[ \t]+c?import[ \t]+(\([^)]*\)|[^\n]*)",
                      re.M)
_CY_IMPORT = re.compile(r"^\s*c?import\s+(sfer(?:\.\w+)?)", re.M)


def _module_of(path: Path) -> str:
    stem = path.name.split(".")[0]
    return "sfer" if stem == "__init__" else f"sfer.{stem}"


def _modules() -> Dict[str, List[Path]]:
    found: Dict[str, List[Path]] = {}
    for pattern in PATTERNS:
        for path in PKG_DIR.glob(pattern):
            found.setdefault(_module_of(path), []).append(path)
    return found


def _targets(package: str, names: List[str], known: Set[str]) -> Set[str]:
    """``from package import names``: the submodules among names, else the package itself."""
    if package != "sfer":
        return {package}
    subs = {f"sfer.{n}" for n in names if f"sfer.{n}" in known}
    return subs or {"sfer"}


def _imports_of(path: Path, known: Set[str]) -> Set[str]:
    text = path.read_text(encoding="utf-8")
    out: Set[str] = set()
    if path.suffix == ".py":
        for node in ast.walk(ast.parse(text)):  # every import, module level or not
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                if node.module.split(".")[0] == "sfer":
                    out |= _targets(node.module, [a.name for a in node.names], known)
            elif isinstance(node, ast.Import):
                out |= {a.name for a in node.names if a.name.split(".")[0] == "sfer"}
    else:
        for package, names in _CY_FROM.findall(text):
            names = names.strip("()").split("#")[0]
            out |= _targets(package, [n.split()[0] for n in names.split(",") if n.strip()],
                            known)
        out |= set(_CY_IMPORT.findall(text))
    return out


def import_graph() -> Dict[str, Set[str]]:
    """Each sfer module's imports of sfer modules (.pyx and .pxd of one module are one)."""
    modules = _modules()
    known = set(modules)
    graph: Dict[str, Set[str]] = {}
    for module, paths in modules.items():
        edges: Set[str] = set()
        for path in paths:
            edges |= _imports_of(path, known)
        graph[module] = (edges & known) - {module}
    return graph


def _cycle(graph: Dict[str, Set[str]]) -> List[str]:
    """One import cycle, as a list of modules, or []."""
    state: Dict[str, int] = {}  # 1: on the current path, 2: done
    path: List[str] = []

    def visit(m: str) -> List[str]:
        state[m] = 1
        path.append(m)
        for n in sorted(graph.get(m, ())):
            if state.get(n) == 1:
                return path[path.index(n):] + [n]
            if n not in state:
                found = visit(n)
                if found:
                    return found
        path.pop()
        state[m] = 2
        return []

    for m in sorted(graph):
        if m not in state:
            found = visit(m)
            if found:
                return found
    return []


def test_the_graph_sees_the_package():
    graph = import_graph()
    assert {"sfer._grad", "sfer._fill", "sfer._runtime", "sfer._grad_inputs",
            "sfer._errors"} <= set(graph)
    assert "sfer._runtime" in graph["sfer._grad"]  # a cimport
    assert "sfer._grad_inputs" in graph["sfer._grad"]


def test_no_import_cycle():
    assert _cycle(import_graph()) == []


def test_cycle_finder_finds_one():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) == []


def test_layers_hold():
    """Each module imports only modules below it: the messages at the bottom, then the
    runtime and the helpers, the input rules, the ops, the specification, the package."""
    graph = import_graph()
    below = {
        "sfer._errors": set(),
        "sfer._runtime": {"sfer._errors", "sfer._openmp"},
        "sfer._dtypes": {"sfer._errors"},
        "sfer._convert": {"sfer._errors"},
        "sfer._grad_inputs": {"sfer._errors", "sfer._dtypes", "sfer._convert", "sfer._runtime"},
        "sfer._fill_inputs": {"sfer._errors", "sfer._dtypes", "sfer._convert"},
        "sfer._ragged_inputs": {"sfer._errors", "sfer._convert"},
        "sfer._arrow": {"sfer._errors", "sfer._ragged", "sfer._result"},
    }
    for module, allowed in below.items():
        assert graph[module] <= allowed, (module, graph[module] - allowed)
    for module in ("sfer._grad", "sfer._fill", "sfer._ragged"):
        assert "sfer" not in graph[module] and "sfer.reference" not in graph[module]
        assert "sfer._arrow" not in graph[module]
    assert "sfer._grad" not in graph["sfer._fill"] and "sfer._fill" not in graph["sfer._grad"]
    for module in ("sfer._grad", "sfer._fill"):
        assert "sfer._ragged" not in graph[module] and module not in graph["sfer._ragged"]
