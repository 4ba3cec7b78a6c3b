"""Build script for sfer's compiled core.

OpenMP is detected the way scikit-learn does it: a tiny probe program is compiled, linked *and
run* with the OpenMP flags.  If it works, the extension is built with those flags; if not, the
build warns loudly and builds a serial extension (``sfer.openmp_enabled()`` is then False).

Environment variable ``SFER_OPENMP``:
    unset / "auto"      probe; fall back to a serial build with a warning
    "1" / "required"    probe; fail the build if OpenMP does not work
    "0" / "disabled"    do not probe; build serial on purpose
"""

import ast
import glob
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import warnings

import numpy as np
from Cython import Tempita
from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

PROBE = textwrap.dedent(
    r"""
    #include <omp.h>
    #include <stdio.h>
    int main(void) {
        int n = 0;
        #pragma omp parallel num_threads(2) reduction(+:n)
        n += 1;
        printf("%d %d\n", n, omp_get_max_threads() >= 1);
        return 0;
    }
    """
)


def _openmp_mode():
    raw = os.environ.get("SFER_OPENMP", "auto").strip().lower()
    modes = {"": "auto", "auto": "auto", "1": "required", "required": "required",
             "require": "required", "0": "disabled", "disabled": "disabled", "disable": "disabled"}
    if raw not in modes:
        raise SystemExit(f"SFER_OPENMP={raw!r}: expected one of auto, 1/required, 0/disabled")
    return modes[raw]


def _openmp_flags(compiler):
    """((compile_args, link_args), None) if OpenMP works with this compiler, else (None, reason)."""
    if sys.platform == "darwin":
        candidates = [(["-Xpreprocessor", "-fopenmp"], ["-lomp"])]
    elif sys.platform == "win32":
        candidates = [(["/openmp"], [])]
    else:
        candidates = [(["-fopenmp"], ["-fopenmp"])]
    last_error = "no candidate flags"
    for cflags, lflags in candidates:
        tmp = tempfile.mkdtemp(prefix="sfer-openmp-probe-")
        try:
            src = os.path.join(tmp, "probe.c")
            with open(src, "w") as f:
                f.write(PROBE)
            objs = compiler.compile([src], output_dir=tmp, extra_postargs=cflags)
            exe = os.path.join(tmp, "probe")
            compiler.link_executable(objs, "probe", output_dir=tmp, extra_postargs=lflags)
            out = subprocess.run([exe], capture_output=True, text=True, timeout=60,
                                 env={**os.environ, "OMP_NUM_THREADS": "2"})
            if out.returncode == 0 and out.stdout.split() == ["2", "1"]:
                return (cflags, lflags), None
            last_error = f"probe ran but printed {out.stdout!r} (exit {out.returncode})"
        except Exception as exc:  # compile, link or run failure
            last_error = f"{type(exc).__name__}: {exc}"
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return None, last_error


class BuildExt(build_ext):
    def build_extensions(self):
        mode = _openmp_mode()
        cflags, lflags = [], []
        if mode == "disabled":
            print("sfer: SFER_OPENMP=0: building without OpenMP (serial) on request")
        else:
            flags, why = _openmp_flags(self.compiler)
            if flags is None:
                msg = (
                    "\n" + "*" * 78 + "\n"
                    "sfer: OpenMP does not work with this compiler (" + str(why) + ").\n"
                    "sfer will be built SERIAL: correct, but it will not use several cores.\n"
                    "Set SFER_OPENMP=1 to make this an error, SFER_OPENMP=0 to silence it.\n"
                    + "*" * 78
                )
                if mode == "required":
                    raise SystemExit(msg)
                warnings.warn(msg)
                print(msg, file=sys.stderr)
            else:
                cflags, lflags = flags
                print(f"sfer: building with OpenMP ({' '.join(cflags)})")
        for ext in self.extensions:
            ext.extra_compile_args = list(ext.extra_compile_args) + cflags
            ext.extra_link_args = list(ext.extra_link_args) + lflags
        super().build_extensions()


def _dtype_table():
    """The tables of sfer/_dtypes.py (GRAD_VALUES, GRAD_INDEXES), read as literals: the build
    does not import sfer."""
    with open(os.path.join("sfer", "_dtypes.py"), encoding="utf-8") as f:
        tree = ast.parse(f.read())
    tables = {}
    for node in tree.body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            name, value = node.target.id, node.value
        elif isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
            name, value = node.targets[0].id, node.value
        else:
            continue
        if name in ("GRAD_VALUES", "GRAD_INDEXES"):
            tables[name] = ast.literal_eval(value)
    return tables


def render_templates():
    """sfer/*.pyx.tp and sfer/*.pxi.tp rendered with Cython's Tempita, as scikit-learn does:
    the dtype tables in, the .pyx/.pxi out (written only when their text changes, so that
    cythonize sees no change when there is none)."""
    tables = _dtype_table()
    for template in sorted(glob.glob(os.path.join("sfer", "*.p*.tp"))):
        with open(template, encoding="utf-8") as f:
            text = Tempita.sub(f.read(), **tables)
        target = template[:-len(".tp")]
        if os.path.exists(target):
            with open(target, encoding="utf-8") as f:
                if f.read() == text:
                    continue
        with open(target, "w", encoding="utf-8") as f:
            f.write(text)


render_templates()
if sys.argv[1:] == ["render_templates"]:  # `python setup.py render_templates`: only this
    sys.exit(0)                           # (ci/lint.sh lints the .pyx with its includes)

# -falign-loops=64: the hot loops start on a cache line.  Where one happened to cross a 64-byte
# line, the same code ran 12-15% slower (the forward op's row scan, after an unrelated change
# moved it: benchmarks/README.md, "Tuning constants"); no loop measured slower aligned.
compile_args = ([] if sys.platform == "win32"
                else ["-O3", "-g0", "-fno-math-errno", "-Wno-unused-function",
                      "-falign-loops=64"])
HEADERS = sorted(os.path.join("sfer", "src", f) for f in os.listdir(os.path.join("sfer", "src"))
                 if f.endswith(".h"))
PXDS = ["sfer/_openmp.pxd", "sfer/_common.pxd", "sfer/_runtime.pxd", "sfer/_grad_dispatch.pxi"]


def _extension(name):
    """sfer.<name>, from sfer/<name>.pyx; every one includes sfer/src/*.h and the .pxd files."""
    return Extension(
        f"sfer.{name}",
        [f"sfer/{name}.pyx"],
        include_dirs=[np.get_include(), os.path.join("sfer", "src")],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_9_API_VERSION")],
        extra_compile_args=compile_args,
        depends=HEADERS + PXDS,
    )


# _runtime: the process-wide state every op shares; _grad: the SparseFillEmptyRowsGrad op;
# _fill: the SparseFillEmptyRows op; _ragged: the ragged <-> sparse conversions.
extensions = [_extension("_runtime"), _extension("_grad"), _extension("_fill"),
              _extension("_ragged")]

setup(
    ext_modules=cythonize(
        extensions,
        compiler_directives={
            "language_level": "3",
            "boundscheck": False,
            "wraparound": False,
            "cdivision": True,
            "initializedcheck": False,
            "embedsignature": True,
        },
    ),
    cmdclass={"build_ext": BuildExt},
)
