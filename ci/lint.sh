#!/usr/bin/env bash
# Style and layering checks, with pinned tools in a temporary virtual environment:
#   ruff          the Python files (pyproject.toml [tool.ruff])
#   cython-lint   the .pyx and .pxd files (pyproject.toml [tool.cython-lint]; pycodestyle is
#                 what it runs for the style rules)
#   lint-imports  import-linter's contracts for the Python layer (pyproject.toml
#                 [tool.importlinter]; tests/test_layers.py covers the compiled modules too)
#   ci/function_lengths.py   no function over 60 code lines in a .pyx, 80 in a .py
#
#   bash ci/lint.sh
#
# Environment: PYTHON, the interpreter to make the venv with (default python3).
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
"${PYTHON:-python3}" -m venv "$WORK/venv"
V=$("$WORK/venv/bin/python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
"$WORK/venv/bin/python" -m pip install -q --disable-pip-version-check \
    ruff==0.17.6 cython-lint==0.22.1 pycodestyle==2.15.0 import-linter==2.17 grimp==3.20 \
    cython numpy -c "ci/lock/py$V-build.txt"
export PATH="$WORK/venv/bin:$PATH"
# The Tempita templates rendered (as a build renders them: the .pxi files the .pyx include,
# which cython-lint reads), nothing else built.
"$WORK/venv/bin/python" setup.py render_templates

status=0
run() {
    echo "== $*"
    "$@" || status=1
}
run ruff check .
run cython-lint sfer/*.pyx sfer/*.pxd
run lint-imports
run python ci/function_lengths.py
exit $status
