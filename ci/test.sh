#!/usr/bin/env bash
# The README's test command: build the wheel, install it into a fresh virtual environment with
# the test requirements, and run pytest against the *installed* package (never the source tree,
# so a packaging mistake fails the tests).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

SFER_TOOLS_VENV="$WORK/tools" bash ci/build_wheel.sh

"$PY" -m venv "$WORK/venv"
"$WORK/venv/bin/python" -m pip install -q --upgrade pip
"$WORK/venv/bin/python" -m pip install -q wheelhouse/sfer-*.whl -r ci/requirements-test.txt

# The stub must match the compiled module.
(cd "$WORK" && "$WORK/venv/bin/python" -m mypy.stubtest sfer --ignore-missing-stub \
    --allowlist "$OLDPWD/ci/stubtest-allowlist.txt")

# The venv's pytest console script does not put the checkout on sys.path: `import sfer` finds
# the installed wheel (tests/test_package.py checks that).
"$WORK/venv/bin/pytest" -q -p no:cacheprovider tests "$@"
