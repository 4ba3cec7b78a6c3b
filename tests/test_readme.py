"""The README's Python examples run as doctests against the installed sfer.

Every ```python block of README.md that holds a ``>>>`` prompt is an example; blocks without
one (the API signatures) are not run.  The examples run in the README's order in one shared
namespace, as a reader would type them into one interpreter session (a later block may use
``np`` and ``sfer`` imported by an earlier one).  Indented blocks (inside a list item) count
too.  The README is not installed with the package: it is found at the repository root, one
directory above this one (CI runs the suite from a clean clone, so it is there).

The examples show NumPy 2's scalar reprs (``np.float32(18.0)``); under NumPy 1.x the test is
skipped with a reason that says so.
"""

from __future__ import annotations

import doctest
import re
from pathlib import Path

import numpy as np
import pytest

README = Path(__file__).resolve().parents[1] / "README.md"

# A fenced block: an opening ```python line (any indentation), its body, and the first closing
# fence at the same indentation.
_BLOCK = re.compile(
    r"^(?P<indent>[ \t]*)```python[ \t]*\n(?P<body>.*?)^(?P=indent)```[ \t]*$",
    re.MULTILINE | re.DOTALL,
)

# NumPy's default print options: the examples' reprs assume them, whatever another test set.
_DEFAULT_PRINTOPTIONS = dict(
    edgeitems=3,
    threshold=1000,
    floatmode="maxprec",
    precision=8,
    suppress=False,
    linewidth=75,
    nanstr="nan",
    infstr="inf",
    sign="-",
    formatter=None,
    legacy=False,
)


def readme_examples(text: str) -> list[tuple[int, str]]:
    """(line number of the opening fence, dedented body) of each ```python block with a
    ``>>>`` prompt, in order."""
    examples = []
    for m in _BLOCK.finditer(text):
        indent = m.group("indent")
        lines = m.group("body").splitlines(keepends=True)
        body = "".join(line[len(indent) :] if line.startswith(indent) else line for line in lines)
        if re.search(r"^>>> ", body, re.MULTILINE):
            examples.append((text.count("\n", 0, m.start()) + 1, body))
    return examples


def test_readme_is_there():
    assert README.is_file(), (
        f"{README} not found: the README's examples are tested from the repository checkout "
        "(tests/ and README.md side by side)"
    )


def test_extractor_finds_indented_blocks_and_skips_prompt_free_ones():
    text = (
        "intro\n"
        "```python\nsig(x) -> y\n```\n"
        "* item\n\n"
        "  ```python\n  >>> 1 + 1\n  2\n  ```\n"
        "```python\n>>> print('a')\na\n```\n"
    )
    assert readme_examples(text) == [(7, ">>> 1 + 1\n2\n"), (11, ">>> print('a')\na\n")]


def test_readme_examples_run():
    if int(np.__version__.split(".")[0]) < 2:
        pytest.skip(
            f"README.md's examples show NumPy 2 scalar reprs (np.float32(18.0)); "
            f"NumPy {np.__version__} prints them differently"
        )
    text = README.read_text(encoding="utf-8")
    examples = readme_examples(text)
    assert len(examples) >= 3, f"expected the README's examples, found {len(examples)} blocks"

    parser = doctest.DocTestParser()
    globs: dict = {"__name__": "README"}
    report: list[str] = []

    def out(s: str) -> None:
        report.append(s)

    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS, verbose=False)
    failed_blocks = []
    tried = 0
    with np.printoptions(**_DEFAULT_PRINTOPTIONS):
        for line, body in examples:
            test = parser.get_doctest(body, globs, f"README.md line {line}", str(README), line)
            before = len(report)
            result = runner.run(test, out=out, clear_globs=False)
            globs = test.globs  # DocTest copied the namespace: carry it to the next block
            tried += result.attempted
            if len(report) > before:
                failed_blocks.append(line)
    assert tried > 0
    if failed_blocks:
        pytest.fail(
            f"README.md: the example(s) in the ```python block(s) at line(s) "
            f"{', '.join(map(str, failed_blocks))} do not give the output the README shows "
            f"(fix the README or the code):\n" + "".join(report),
            pytrace=False,
        )
