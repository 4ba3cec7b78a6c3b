#!/usr/bin/env bash
# Build the GNU OpenMP runtime (libgomp.so.1) that sfer's wheels carry, so that it needs nothing
# newer than glibc 2.17 (manylinux2014).
#
#   bash ci/build_libgomp.sh [OUTDIR]        (default OUTDIR: build/libgomp-glibc2.17)
#
# Why.  auditwheel copies the system's libgomp into the wheel.  Debian 12's libgomp is linked
# against glibc 2.36, so it references pthread_create@GLIBC_2.34, dlopen@GLIBC_2.34 (glibc 2.34
# moved libpthread and libdl into libc and gave their functions new versions) and
# pthread_getaffinity_np@GLIBC_2.32: the wheel becomes manylinux_2_34.  sfer's own extensions
# need no more than GLIBC_2.14 (memcpy), so the bundled libgomp alone sets the floor.
#
# How.  The same libgomp, from the GCC sources that match the installed gcc (Debian's
# gcc-N-source package), is compiled by that gcc (libgomp is written for GCC; clang rejects
# it), and then LINKED by `zig cc -target x86_64-linux-gnu.2.17` from the ziglang PyPI
# package, whose glibc stubs offer only the symbols and versions glibc 2.17 had.  The objects
# name functions without versions; the link binds each to its 2.17 version (pthread_create@
# GLIBC_2.2.5 in libpthread.so.0, and so on), and --no-undefined makes any function that 2.17
# lacks a link error instead of a silent gap.  The extensions keep being compiled by gcc with
# -fopenmp (GNU's GOMP_* ABI) and run on this runtime unchanged: same GCC release, same
# exported symbols and versions, same fork and thread behaviour.
#
# The result is cached: OUTDIR/stamp records the inputs (gcc version, source tarball, zig
# version, glibc target, this script), and a second run with the same inputs reuses the build.
#
# Needs: gcc, make, the gcc-N-source tarball (installed with apt-get when missing and this runs
# as root; or point SFER_GCC_SOURCE at a gcc-X.Y.Z tarball of the installed gcc's version),
# network access to PyPI (ziglang).  Environment: PYTHON (interpreter for the zig venv,
# default python3).
set -euo pipefail
SELF=$(readlink -f "$0")
cd "$(dirname "$0")/.."
OUT=${1:-build/libgomp-glibc2.17}
GLIBC=2.17
ZIG_VERSION=0.17.1          # pinned: the link (stubs, linker) should not change under us
PY=${PYTHON:-python3}
JOBS=$(nproc 2>/dev/null || echo 2)

say() { printf '=== build_libgomp: %s\n' "$*"; }
die() { printf 'build_libgomp: FAILED: %s\n' "$*" >&2; exit 1; }

# The runtime must come from the same GCC release as the compiler that builds the extensions:
# gcc emits calls into libgomp's GOMP_* ABI of its own release.
GCC_VERSION=$(gcc -dumpfullversion)
GCC_MAJOR=${GCC_VERSION%%.*}

find_tarball() {
    if [[ -n ${SFER_GCC_SOURCE:-} ]]; then echo "$SFER_GCC_SOURCE"; return; fi
    ls /usr/src/gcc-"$GCC_MAJOR"/gcc-"$GCC_VERSION"*.tar.* 2>/dev/null | head -n 1 || true
}
TARBALL=$(find_tarball)
if [[ -z $TARBALL && $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
    say "installing Debian's gcc-$GCC_MAJOR-source (the GCC $GCC_VERSION sources)"
    apt-get install -y -q --no-install-recommends "gcc-$GCC_MAJOR-source" >/dev/null 2>&1 \
        || { apt-get update -q >/dev/null && \
             apt-get install -y -q --no-install-recommends "gcc-$GCC_MAJOR-source" >/dev/null; }
    TARBALL=$(find_tarball)
fi
[[ -n $TARBALL && -f $TARBALL ]] || die "no GCC $GCC_VERSION source tarball: install Debian's \
gcc-$GCC_MAJOR-source, or set SFER_GCC_SOURCE=/path/to/gcc-$GCC_VERSION.tar.xz (or build with \
SFER_LIBGOMP=system: the wheel then carries the system libgomp and a higher manylinux tag)"
TOP=$(basename "$TARBALL"); TOP=${TOP%%.tar.*}; TOP=${TOP%-dfsg}    # gcc-12.2.0
[[ $TOP == "gcc-$GCC_VERSION" ]] || die "$TARBALL is $TOP, but gcc is $GCC_VERSION"

STAMP="gcc=$GCC_VERSION source=$(basename "$TARBALL") zig=$ZIG_VERSION glibc=$GLIBC script=$(sha256sum "$SELF" | cut -c1-16)"
if [[ -f $OUT/libgomp.so.1 && -f $OUT/stamp && $(cat "$OUT/stamp") == "$STAMP" ]]; then
    say "up to date: $OUT/libgomp.so.1 ($STAMP)"
    exit 0
fi

rm -rf "$OUT"
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/sfer-libgomp.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

# 1. zig, from PyPI, in its own venv next to the output (reused by later runs).
say "zig $ZIG_VERSION (ziglang on PyPI)"
"$PY" -m venv "$OUT/zig-venv"
"$OUT/zig-venv/bin/python" -m pip install -q --disable-pip-version-check "ziglang==$ZIG_VERSION"
cat >"$OUT/zig-cc" <<EOF
#!/bin/sh
# a C compiler/linker driver whose libc is glibc $GLIBC (symbol versions included)
exec "$OUT/zig-venv/bin/python" -m ziglang cc -target x86_64-linux-gnu.$GLIBC "\$@"
EOF
chmod +x "$OUT/zig-cc"

# 2. libgomp's sources: only the directories its configure script and build use (the whole
#    GCC tree is ~1 GiB unpacked).
say "unpacking libgomp from $TARBALL"
SRC_TOP=$TOP
tar -C "$WORK" -xf "$TARBALL" --wildcards \
    "$SRC_TOP/libgomp/*" "$SRC_TOP/config/*" "$SRC_TOP/include/*" "$SRC_TOP/config.guess" \
    "$SRC_TOP/config.sub" "$SRC_TOP/ltmain.sh" "$SRC_TOP/install-sh" "$SRC_TOP/missing" \
    "$SRC_TOP/config-ml.in" "$SRC_TOP/mkinstalldirs" "$SRC_TOP/depcomp" "$SRC_TOP/compile"

# 3. Compile with gcc as GCC's own build does (configure picks the Linux futex, TLS and CET
#    settings).  No Fortran compiler: the Fortran OpenACC wrappers (acc_*_h_) are left out,
#    nothing else.  -ffile-prefix-map: the source paths in assert messages do not name the
#    temporary folder, so that two builds give the same bytes.
say "configuring and compiling libgomp $GCC_VERSION with gcc"
mkdir "$WORK/build"
if ! (cd "$WORK/build" && "$WORK/$SRC_TOP/libgomp/configure" --build=x86_64-linux-gnu \
        --host=x86_64-linux-gnu --target=x86_64-linux-gnu --disable-multilib --enable-shared \
        --disable-static CC=gcc FC=no CFLAGS="-O2 -ffile-prefix-map=$WORK/=" \
        >"$WORK/configure.log" 2>&1 \
      && make -C "$WORK/build" -j"$JOBS" >"$WORK/make.log" 2>&1); then
    tail -n 40 "$WORK/configure.log" "$WORK/make.log" 2>/dev/null
    die "libgomp did not configure/compile (log tail above)"
fi

# 4. Link the same PIC objects against glibc 2.17.  --undefined-version: libgomp.ver also names
#    the Fortran wrappers that were not built (lld refuses that by default).  --strip-debug:
#    the only debug info is that of the glibc stub zig compiles itself (atexit.c), which names
#    the zig venv's absolute path; without it two builds in different folders give the same
#    bytes (libgomp's own objects carry no debug info and no paths: -ffile-prefix-map above).
say "linking libgomp.so.1 against glibc $GLIBC with zig cc"
"$OUT/zig-cc" -shared -fPIC "$WORK"/build/.libs/*.o -ldl -lpthread \
    -Wl,--version-script="$WORK/build/libgomp.ver" -Wl,--undefined-version \
    -Wl,-soname,libgomp.so.1 -Wl,--no-undefined -Wl,--strip-debug -o "$OUT/libgomp.so.1"

# 5. Checks.  (a) nothing newer than glibc 2.17.
newest=$(objdump -T "$OUT/libgomp.so.1" | grep -oE 'GLIBC_[0-9.]+' | sed 's/GLIBC_//' | sort -uV | tail -n 1)
[[ $(printf '%s\n%s\n' "$newest" "$GLIBC" | sort -V | tail -n 1) == "$GLIBC" ]] \
    || die "libgomp.so.1 needs GLIBC_$newest (> $GLIBC)"
# (b) it exports everything the system's libgomp of the same release exports (name@version),
#     save the Fortran wrappers and the version-node names that GNU ld lists as symbols.
SYS_GOMP=$(gcc -print-file-name=libgomp.so)
exports() { nm -D --defined-only "$1" | awk '{print $NF}' | grep '@' | grep -v '_h_@' | sort; }
missing=$(comm -23 <(exports "$(readlink -f "$SYS_GOMP")") <(exports "$OUT/libgomp.so.1"))
[[ -z $missing ]] || die "libgomp.so.1 lacks exports of $SYS_GOMP: $(echo $missing | head -c 400)"
# (c) a gcc -fopenmp program runs a 2-thread parallel region on it.
cat >"$WORK/probe.c" <<'EOF'
#include <omp.h>
#include <stdio.h>
int main(void) {
    int n = 0;
    #pragma omp parallel num_threads(2) reduction(+:n)
    n += 1;
    printf("%d\n", n);
    return 0;
}
EOF
gcc -fopenmp "$WORK/probe.c" -o "$WORK/probe"
got=$(LD_LIBRARY_PATH="$OUT" OMP_NUM_THREADS=2 "$WORK/probe")
[[ $got == 2 ]] || die "probe printed '$got', expected 2"
# (grep without -q: -q exits at the first match, and under pipefail ldd's SIGPIPE then fails
# the check at random)
LD_LIBRARY_PATH="$OUT" ldd "$WORK/probe" | grep -F "$OUT/libgomp.so.1" >/dev/null \
    || die "probe did not load $OUT/libgomp.so.1"

echo "$STAMP" >"$OUT/stamp"
say "OK: $OUT/libgomp.so.1 (GCC $GCC_VERSION libgomp; newest glibc symbol version: $newest; sha256 $(sha256sum "$OUT/libgomp.so.1" | cut -c1-16))"
