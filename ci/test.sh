#!/usr/bin/env bash
# The README's test command: build the wheel, install it into a fresh virtual environment with
# the test requirements, and run stubtest and pytest against the *installed* package (never the
# source tree, so a packaging mistake fails the tests).
#
#   bash ci/test.sh [pytest args...]
#
# Environment:
#   PYTHON            the interpreter to test with (default python3); a version such as 3.9
#                     is looked up the way ci/build_wheel.sh does (PATH, then ~/.pyenv)
#   SFER_WHEELHOUSE   a folder of already built wheels (CI builds them all first): install
#                     the one for PYTHON from there instead of building
#   SFER_LATEST_DEPS  1: ignore the pins and take the newest release of every build, runtime
#                     and test dependency (what a user meets today; run it before a release
#                     and when a dependency ships a new release).  Default: the pinned set of
#                     ci/lock/pyX.Y.txt (refresh: bash ci/lock.sh)
#   SFER_FRAMEWORKS   1: also install torch and JAX (ci/requirements-frameworks.txt, pinned by
#                     ci/lock/pyX.Y-frameworks.txt, which exists for CPython 3.11 only) and run
#                     tests/test_torch.py and tests/test_jax.py (pytest args replace these),
#                     where a missing torch or JAX then fails instead of skipping.  Default 0:
#                     those two modules skip, and stubtest skips sfer.torch and sfer.jax
#   anything ci/build_wheel.sh reads (SFER_LIBGOMP, SFER_OPENMP, ...)
set -euo pipefail
cd "$(dirname "$0")/.."
source ci/pythons.sh
PY=$(resolve_python "${PYTHON:-python3}")
[[ -n $PY ]] || { echo "test.sh: no CPython interpreter '${PYTHON:-python3}'" >&2; exit 1; }
TAG=cp$("$PY" -c 'import sys; print("%d%d" % sys.version_info[:2])')
VERSION=$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
LATEST=${SFER_LATEST_DEPS:-0}
FRAMEWORKS=${SFER_FRAMEWORKS:-0}
REQUIREMENTS=(-r ci/requirements-test.txt)
ALLOWLISTS=(--allowlist "$PWD/ci/stubtest-allowlist.txt")
PYTEST_ARGS=(tests "$@")
if [[ $FRAMEWORKS == 1 ]]; then
    REQUIREMENTS+=(-r ci/requirements-frameworks.txt)
    PYTEST_ARGS=(tests/test_torch.py tests/test_jax.py)
    [[ $# -eq 0 ]] || PYTEST_ARGS=("$@")
else
    ALLOWLISTS+=(--allowlist "$PWD/ci/stubtest-allowlist-noframeworks.txt")
fi
if [[ $LATEST == 1 ]]; then
    PINS=(--upgrade --upgrade-strategy eager)   # the newest of everything
else
    LOCK=ci/lock/py$VERSION.txt
    [[ $FRAMEWORKS == 1 ]] && LOCK=ci/lock/py$VERSION-frameworks.txt
    [[ -f $LOCK ]] || { echo "test.sh: no $LOCK (make it with: bash ci/lock.sh $VERSION)" >&2; exit 1; }
    PINS=(-c "$LOCK")
fi
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

if [[ -n ${SFER_WHEELHOUSE:-} ]]; then
    WHEELHOUSE=$SFER_WHEELHOUSE
else
    PYTHON=$PY SFER_TOOLS_VENV="$WORK/tools" SFER_LATEST_DEPS=$LATEST bash ci/build_wheel.sh
    WHEELHOUSE=wheelhouse
fi
WHEELS=("$WHEELHOUSE"/sfer-*-"$TAG"-"$TAG"-*.whl)
if [[ ${#WHEELS[@]} -ne 1 || ! -f ${WHEELS[0]} ]]; then
    echo "test.sh: expected one $TAG wheel in $WHEELHOUSE, found: ${WHEELS[*]}" >&2
    exit 1
fi
echo "=== test.sh: $("$PY" -c 'import sys; print("Python", sys.version.split()[0])'), ${WHEELS[0]}"

"$PY" -m venv "$WORK/venv"
"$WORK/venv/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip
"$WORK/venv/bin/python" -m pip install -q --disable-pip-version-check "${WHEELS[0]}" \
    "${REQUIREMENTS[@]}" "${PINS[@]}"
"$WORK/venv/bin/python" -m pip list --disable-pip-version-check --format=freeze \
    | grep -iE '^(numpy|ml.dtypes|pytest|hypothesis|mypy|pyarrow|torch|jax|jaxlib)==' | tr '\n' ' ' && echo

# The stubs must match the compiled modules.  The whole package is checked (its .py modules
# too), except on Python 3.9, where stubtest flags every module that imports typing.Any,
# Sequence, NamedTuple, ... ("is not a type": they are not classes at 3.9's run time): there
# only the compiled modules, the ones with .pyi stubs, are checked.
STUBTEST_MODULES=(sfer)
if [[ $TAG == cp39 ]]; then   # only the compiled modules (no sfer.torch/sfer.jax to allow)
    STUBTEST_MODULES=(sfer._runtime sfer._grad sfer._fill sfer._ragged)
    ALLOWLISTS=(--allowlist "$PWD/ci/stubtest-allowlist.txt")
fi
(cd "$WORK" && "$WORK/venv/bin/python" -m mypy.stubtest "${STUBTEST_MODULES[@]}" \
    --ignore-missing-stub "${ALLOWLISTS[@]}")

# The venv's pytest console script does not put the checkout on sys.path: `import sfer` finds
# the installed wheel (tests/test_package.py checks that).
# SFER_WHEEL: tests/test_package.py opens the wheel itself (its licence files).
SFER_WHEEL=$(readlink -f "${WHEELS[0]}") SFER_FRAMEWORKS=$FRAMEWORKS \
    "$WORK/venv/bin/pytest" -q -p no:cacheprovider "${PYTEST_ARGS[@]}"
