#!/usr/bin/env python3
"""Fail when a function is longer than the project allows: 60 code lines in a .pyx, 80 in a .py.

A code line is a line of the function that is not blank, not only a comment and not part of
its docstring.  Python files are read with ``ast``; Cython files by indentation (a function is
its ``def``/``cdef``/``cpdef`` line and the lines indented below it).

    python ci/function_lengths.py [FILE...]     (default: sfer/*.py, sfer/*.pyx)
"""

from __future__ import annotations

import ast
import glob
import re
import sys
from typing import Iterator, List, Tuple

LIMITS = {".py": 80, ".pyx": 60}
_CY_DEF = re.compile(r"^(\s*)(?:async\s+)?(?:c?p?def|cdef)\s+(?!class\b|struct\b|union\b|enum\b|"
                     r"extern\b|packed\b|fused\b|public\s+struct\b)[^=]*\(")


def _code_lines(lines: List[str]) -> int:
    """Code lines of a Cython function's lines (its signature first)."""
    sig_end = next((i for i, line in enumerate(lines) if line.rstrip().endswith(":")), 0)
    count, in_doc, quote, seen_code = 0, False, "", False
    for i, line in enumerate(lines):
        text = line.strip()
        if in_doc:
            in_doc = quote not in text
            continue
        if not text or text.startswith("#"):
            continue
        if i > sig_end and not seen_code and text[:3] in ('"""', "'''"):  # the docstring
            quote = text[:3]
            in_doc = text.count(quote) < 2
            continue
        if i > sig_end:
            seen_code = True
        count += 1
    return count


def python_functions(path: str) -> Iterator[Tuple[str, int, int]]:
    with open(path, encoding="utf-8") as f:
        source = f.read()
    lines = source.splitlines()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            first = body[0]
            skip = set()
            if (isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant)
                    and isinstance(first.value.value, str)):
                skip = set(range(first.lineno, first.end_lineno + 1))
            n = 0
            for no in range(node.lineno, node.end_lineno + 1):
                text = lines[no - 1].strip()
                if no in skip or not text or text.startswith("#"):
                    continue
                n += 1
            yield node.name, node.lineno, n


def cython_functions(path: str) -> Iterator[Tuple[str, int, int]]:
    with open(path, encoding="utf-8") as f:
        lines = f.read().splitlines()
    i = 0
    while i < len(lines):
        m = _CY_DEF.match(lines[i])
        if not m:
            i += 1
            continue
        indent = len(m.group(1))
        start = i
        j = i + 1
        while j < len(lines) and not lines[j - 1].rstrip().endswith(":"):
            j += 1      # the rest of the signature
        while j < len(lines) and (not lines[j].strip()
                                  or len(lines[j]) - len(lines[j].lstrip()) > indent):
            j += 1
        name = re.findall(r"(\w+)\s*(?:\[[^\]]*\])?\s*\(", lines[start])[0]
        yield name, start + 1, _code_lines(lines[start:j])
        i = j


def main(argv: List[str]) -> int:
    files = argv or sorted(glob.glob("sfer/*.py") + glob.glob("sfer/*.pyx"))
    bad = 0
    for path in files:
        suffix = ".pyx" if path.endswith(".pyx") else ".py"
        functions = cython_functions if suffix == ".pyx" else python_functions
        for name, line, n in functions(path):
            if n > LIMITS[suffix]:
                print(f"{path}:{line}: {name} has {n} code lines (at most {LIMITS[suffix]})")
                bad += 1
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
