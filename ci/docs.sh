#!/usr/bin/env bash
# Build the documentation (docs/, Sphinx) against the *installed* sfer, and run its examples.
#
#   bash ci/docs.sh [OUT_DIR]        (the HTML goes to OUT_DIR, default docs/_build/html)
#
# A fresh virtual environment gets the sfer wheel and the pinned ci/requirements-docs.txt;
# then `sphinx-build -W --keep-going -b html` (every warning is an error) and
# `sphinx-build -W -b doctest` (every >>> example of the pages, and of the docstrings the API
# page includes, must print what it shows).  autodoc imports the installed package, never the
# source tree (docs/conf.py refuses one), so the API page shows what users get.
#
# Environment:
#   PYTHON            the interpreter (default python3; Sphinx 9 needs CPython >= 3.11)
#   SFER_WHEELHOUSE   a folder of already built wheels (CI builds them first): install the one
#                     for PYTHON from there instead of building sfer from this checkout
#   SFER_LATEST_DEPS  1: build sfer with the newest build requirements; default: the pinned
#                     ones of ci/lock/pyX.Y-build.txt, as ci/build_wheel.sh builds
set -euo pipefail
cd "$(dirname "$0")/.."
source ci/pythons.sh
PY=$(resolve_python "${PYTHON:-python3}")
[[ -n $PY ]] || { echo "docs.sh: no CPython interpreter '${PYTHON:-python3}'" >&2; exit 1; }
OUT=$(realpath -m "${1:-docs/_build/html}")
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
t0=$SECONDS

if [[ -n ${SFER_WHEELHOUSE:-} ]]; then
    TAG=cp$("$PY" -c 'import sys; print("%d%d" % sys.version_info[:2])')
    WHEELS=("$SFER_WHEELHOUSE"/sfer-*-"$TAG"-"$TAG"-*.whl)
    if [[ ${#WHEELS[@]} -ne 1 || ! -f ${WHEELS[0]} ]]; then
        echo "docs.sh: expected one $TAG wheel in $SFER_WHEELHOUSE, found: ${WHEELS[*]}" >&2
        exit 1
    fi
    SFER=${WHEELS[0]}
fi
echo "=== docs.sh: $("$PY" -c 'import sys; print("Python", sys.version.split()[0])'), sfer from ${SFER:-this checkout}"

"$PY" -m venv "$WORK/venv"
PIP=("$WORK/venv/bin/python" -m pip -q --disable-pip-version-check)
if [[ -z ${SFER:-} ]]; then   # build sfer's wheel from this checkout (PEP 517 build isolation)
    CONSTRAINT=
    if [[ ${SFER_LATEST_DEPS:-0} != 1 ]]; then
        CONSTRAINT=$PWD/ci/lock/py$(python_version_of "$PY")-build.txt
        [[ -f $CONSTRAINT ]] || { echo "docs.sh: no $CONSTRAINT (make it with: bash ci/lock.sh)" >&2; exit 1; }
    fi
    PIP_CONSTRAINT=$CONSTRAINT "${PIP[@]}" wheel --no-deps -w "$WORK/wheel" .
    SFER=$(echo "$WORK"/wheel/sfer-*.whl)
fi
"${PIP[@]}" install -r ci/requirements-docs.txt
"${PIP[@]}" install "$SFER"    # its numpy requirement is met by the pinned numpy
echo "=== docs.sh: environment ready at $((SECONDS - t0)) s"

# Sphinx runs from $WORK: the checkout's sfer/ (no compiled modules) is then not on sys.path.
cd "$WORK"
"$WORK/venv/bin/sphinx-build" -q -W --keep-going -b html "$OLDPWD/docs" "$OUT"
"$WORK/venv/bin/sphinx-build" -q -W -b doctest "$OLDPWD/docs" "$WORK/doctest" \
    || { cat "$WORK/doctest/output.txt" >&2; exit 1; }
grep -E '^ +[0-9]+ tests$|failures in tests' "$WORK/doctest/output.txt" | tr -s ' ' | paste -sd, -
echo "=== docs.sh: built $OUT in $((SECONDS - t0)) s (HTML, and the examples passed as doctests)"
