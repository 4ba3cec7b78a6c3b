#!/usr/bin/env bash
# Sanitizer run: build sfer's extension with AddressSanitizer + UndefinedBehaviorSanitizer,
# install it into a fresh virtual environment with the test requirements, and run the whole
# pytest suite against the *installed* package with the sanitizer runtimes active.
#
#   bash ci/sanitize.sh [pytest args...]
#
# Any sanitizer report (in pytest itself or in a subprocess a test starts) makes this script
# exit non-zero, and the report is printed.  Needs: python3 (3.11+: tomllib), gcc with libasan/libubsan,
# network access to PyPI.  Environment:
#   PYTHON              interpreter for the venv (default python3)
#   CC                  base C compiler (default gcc)
#   SFER_SANITIZE_OPT   optimisation level of the instrumented build (default -O1)
#   ASAN_OPTIONS, UBSAN_OPTIONS   appended to ours (later options win)
#   SFER_SANITIZE_KEEP  1: keep the work directory (venv, build log, sanitizer logs) for debugging
#   PYTHONMALLOC        default "malloc": Python objects go through malloc, so ASan also sees
#                       them (use-after-free of a Python object, overflow into one)
#
# How the flags reach the build.  setup.py puts its own "-O3 -g0" in extra_compile_args, and
# the interpreter's sysconfig CFLAGS carry "-fwrapv"; both land on the command line AFTER
# anything in $CFLAGS/$LDFLAGS, so "-g" would be cancelled (no file:line in reports) and
# "-fwrapv" would silently disable the signed-overflow check.  So CC is a tiny wrapper that
# appends the sanitizer flags LAST to every gcc call setuptools makes: compile, the shared-link
# (LDSHARED is derived from CC) and the OpenMP probe (compile, link, run).  The installed module
# is then checked: it must need libasan + libubsan and call their report hooks.
#
# CPython is not instrumented: the ASan runtime is LD_PRELOADed into pytest (and inherited by
# the subprocesses tests start).  detect_leaks=0: CPython keeps objects alive until exit by
# design, which LeakSanitizer would report; sfer's own leak test is separate.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
PY=${PYTHON:-python3}
BASE_CC=${CC:-gcc}
OPT=${SFER_SANITIZE_OPT:--O1}
SAN_FLAGS="-fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer -fno-wrapv -g $OPT"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/sfer-sanitize.XXXXXX")
if [[ ${SFER_SANITIZE_KEEP:-0} == 1 ]]; then
    trap 'echo "sanitize: kept $WORK (SFER_SANITIZE_KEEP=1)"' EXIT
else
    trap 'rm -rf "$WORK"' EXIT
fi
SRC=$WORK/src
VENV=$WORK/venv
LOGS=$WORK/sanitizer-logs
mkdir -p "$SRC" "$WORK/bin" "$LOGS"
START=$SECONDS

say() { printf '\n=== sanitize: %s\n' "$*"; }

LIBASAN=$("$BASE_CC" -print-file-name=libasan.so)
if [[ ! -e $LIBASAN ]]; then
    echo "sanitize: $BASE_CC has no libasan.so (got '$LIBASAN'); install libasan / gcc's sanitizers" >&2
    exit 2
fi
LIBASAN=$(readlink -f "$LIBASAN")

# 1. A clean copy of the sources: never reuse build/, a stale sfer/*.c or an installed
#    .so from the checkout (setuptools would skip an "up-to-date" extension and ship it
#    uninstrumented), and never write build outputs into the checkout.
say "copying sources to $SRC"
tar -C "$REPO" -cf - \
    --exclude=./.git --exclude=./build --exclude=./dist --exclude=./wheelhouse \
    --exclude='*.egg-info' --exclude='*.so' --exclude='*.o' --exclude='./sfer/*.c' \
    --exclude=__pycache__ --exclude=.hypothesis --exclude=.pytest_cache --exclude=.mypy_cache \
    --exclude='./.venv*' --exclude='./venv*' --exclude=./benchmarks/results \
    --exclude=./benchmarks/asv/.asv . \
    | tar -C "$SRC" -xf -

cat >"$WORK/bin/sanitize-cc" <<EOF
#!/bin/sh
# appends the sanitizer flags after setup.py's -O3 -g0 and sysconfig's -fwrapv
exec $BASE_CC "\$@" $SAN_FLAGS
EOF
chmod +x "$WORK/bin/sanitize-cc"

# 2. The venv: build requirements (from pyproject.toml, for a --no-build-isolation build whose
#    compiler we control) and the test requirements.
say "creating venv and installing build + test requirements"
"$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" - "$SRC/pyproject.toml" >"$WORK/build-requirements.txt" <<'EOF'
import sys, tomllib
with open(sys.argv[1], "rb") as f:
    print("\n".join(tomllib.load(f)["build-system"]["requires"]))
EOF
V=$("$VENV/bin/python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
if [[ ${SFER_LATEST_DEPS:-0} == 1 ]]; then
    PINS=(--upgrade --upgrade-strategy eager)
else   # the pinned sets of ci/lock (refresh: bash ci/lock.sh), as ci/test.sh installs them
    PINS=(-c "ci/lock/py$V.txt" -c "ci/lock/py$V-build.txt")
fi
"$VENV/bin/python" -m pip install -q -r "$WORK/build-requirements.txt" -r ci/requirements-test.txt \
    "${PINS[@]}"

# 3. The instrumented build.
say "building sfer with: $SAN_FLAGS"
if ! env CC="$WORK/bin/sanitize-cc" SFER_OPENMP="${SFER_OPENMP:-required}" \
        ASAN_OPTIONS=detect_leaks=0 \
        "$VENV/bin/python" -m pip install -v --no-build-isolation --no-deps --no-cache-dir "$SRC" \
        >"$WORK/build.log" 2>&1; then
    tail -n 80 "$WORK/build.log"
    echo "sanitize: FAILED: the instrumented build failed (log tail above)" >&2
    exit 1
fi
grep -m1 -E '^ *sfer: (building|SFER_OPENMP)' "$WORK/build.log" | sed 's/^ */  /' || true
echo "  (sanitize-cc appends the flags above after each command line below)"
grep -m1 -E 'sanitize-cc .*_grad\.c' "$WORK/build.log" | sed 's/^ */  compile: /' || true
grep -m1 -E 'sanitize-cc .*-shared' "$WORK/build.log" | sed 's/^ */  link:    /' || true

# Every compiled module of the package must be instrumented.
SOS=$(ls "$VENV"/lib/python*/site-packages/sfer/*.so)
for SO in $SOS; do
    needed=$(readelf -d "$SO" | grep NEEDED || true)
    undef=$(nm -D --undefined-only "$SO")
    if ! grep -q 'libasan' <<<"$needed" || ! grep -q 'libubsan' <<<"$needed" \
            || ! grep -q '__asan_report' <<<"$undef" || ! grep -q '__ubsan_handle' <<<"$undef"; then
        echo "$needed"
        echo "sanitize: FAILED: $SO is not instrumented with ASan + UBSan" >&2
        exit 1
    fi
    echo "  $SO: NEEDED $(grep -oE 'lib(asan|ubsan|gomp)[^]]*' <<<"$needed" | tr '\n' ' ')"
done

# 4. The test suite under the sanitizers.
# Where reports go.  ASan honours log_path (one file per process, so reports from subprocesses
# that tests start are found too).  GCC's UBSan runtime (libubsan, a separate library from
# libasan) does NOT honour log_path when libasan is preloaded (seen with gcc 12): its reports
# go to fd 2 whatever UBSAN_OPTIONS says (log_path is set anyway, for runtimes that honour it).
# pytest's default --capture=fd would swallow them when the process aborts, so pytest runs
# with --capture=sys (C-level stderr reaches the console and the log below) and the log is
# also searched for reports.
export SFER_SANITIZE=1
export PYTHONMALLOC=${PYTHONMALLOC:-malloc}
export ASAN_OPTIONS="detect_leaks=0:abort_on_error=1:halt_on_error=1:allocator_may_return_null=1:detect_stack_use_after_return=1:log_path=$LOGS/asan${ASAN_OPTIONS:+:$ASAN_OPTIONS}"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:abort_on_error=1:log_path=$LOGS/ubsan${UBSAN_OPTIONS:+:$UBSAN_OPTIONS}"
# libstdc++ right after libasan: ASan intercepts __cxa_throw and must find the real one when a
# C++ library (pyarrow's Parquet reader, in tests/test_arrow.py) throws; with libstdc++ loaded
# only later by dlopen, ASan's interceptor has no real function and aborts the process.
LIBSTDCXX=$("$BASE_CC" -print-file-name=libstdc++.so.6)
[[ -f $LIBSTDCXX ]] || { echo "sanitize: no libstdc++.so.6 from $BASE_CC" >&2; exit 1; }
PRELOAD="$LIBASAN:$LIBSTDCXX${LD_PRELOAD:+:$LD_PRELOAD}"
SIGNATURES='ERROR: AddressSanitizer|ERROR: LeakSanitizer|runtime error: |SUMMARY: (Address|UndefinedBehavior)Sanitizer'

print_reports() {   # print the report files; return 0 when there were any
    local f found=1
    for f in $(find "$LOGS" -type f -size +0 | sort); do
        [[ $found -eq 1 ]] && say "SANITIZER REPORTS (log files)"
        found=0
        echo "----- $(basename "$f")"
        cat "$f"
    done
    return $found
}

say "pytest under ASan+UBSan (LD_PRELOAD=$PRELOAD)"
echo "  ASAN_OPTIONS=$ASAN_OPTIONS"
echo "  UBSAN_OPTIONS=$UBSAN_OPTIONS"
echo "  PYTHONMALLOC=$PYTHONMALLOC SFER_SANITIZE=$SFER_SANITIZE"
# Preflight: the instrumented module imports under the preloaded runtime and runs a parallel
# call (from $WORK, so that the checkout is not on sys.path).  Correctness is the suite's job.
if ! (cd "$WORK" && env LD_PRELOAD="$PRELOAD" "$VENV/bin/python" -c '
import numpy as np, sfer
sfer.sparse_fill_empty_rows_grad(np.arange(0, 200000, 2), np.ones(200000), num_threads=2)
print(f"  preflight: sfer {sfer.__version__} from {sfer.__file__}, openmp_enabled={sfer.openmp_enabled()}")
'); then
    print_reports || true
    echo "sanitize: FAILED: preflight import/call under the sanitizers failed" >&2
    exit 1
fi

T0=$SECONDS
set +e
# The venv's pytest console script does not put the checkout on sys.path (and conftest strips
# it): `import sfer` finds the instrumented install.
env LD_PRELOAD="$PRELOAD" "$VENV/bin/pytest" -q -p no:cacheprovider --capture=sys tests "$@" \
    2>&1 | tee "$WORK/pytest.log"
rc=${PIPESTATUS[0]}
set -e
T1=$SECONDS

# 5. Verdict: any report file, any report text in pytest's output (UBSan; a subprocess's
#    report quoted in a failure message), or a failing pytest, is a failure.
had_files=0
print_reports && had_files=1
in_log=$(grep -cE "$SIGNATURES" "$WORK/pytest.log" || true)
summary=$(grep -E '^(=+ )?[0-9]+ (passed|failed|error|skipped|deselected|xfailed|xpassed).* in [0-9.]+s' \
    "$WORK/pytest.log" | tail -n 1 || true)
say "summary"
echo "  sanitizers: AddressSanitizer + UndefinedBehaviorSanitizer ($SAN_FLAGS)"
echo "  pytest:     ${summary:-<no summary: pytest died (exit $rc)>}"
echo "  pytest wall time: $((T1 - T0)) s; total $((SECONDS - START)) s"
if [[ $had_files -eq 1 || $in_log -gt 0 ]]; then
    [[ $in_log -gt 0 ]] && grep -m 5 -E "$SIGNATURES" "$WORK/pytest.log" | sed 's/^/  found: /'
    echo "sanitize: FAILED: sanitizer report(s) (printed above)" >&2
    exit 1
fi
if [[ $rc -ne 0 ]]; then
    echo "sanitize: FAILED: pytest exit status $rc" >&2
    exit "$rc"
fi
echo "sanitize: OK (no sanitizer reports)"
