#!/usr/bin/env python3
"""A/B timing of two builds of sfer's extension in one process, interleaved call by call.

On a shared VM the speed of memory and cores drifts over seconds to minutes, so two builds
timed in two processes, or one after the other, can differ by 30% or more for no reason in
the code.  Here both builds run in the same process on the same arrays, alternating A and B
(ABBA order), and the report gives each one's median and the median of the paired ratios.
The timing loop is sfer's own (``sfer._timing``, shared with bench.py and the ``sfer`` demo).

Usage::

    # two trees that each hold a built sfer/ package (e.g. copies of a checkout after
    # `python setup.py build_ext --inplace`, before and after a change)
    python benchmarks/ab.py BUILD_A BUILD_B 1e8:float32:increasing:2:out 1e7:float32:shuffled

A grad case is ``N_FULL:DTYPE:MAP[:THREADS[:out]]``: MAP is ``increasing`` or ``shuffled``
(90% of positions kept, int64), THREADS defaults to 2, and ``out`` passes a preallocated
``out=``.  A forward-op case is ``fill:CASE[:ROWS[:THREADS]]``: CASE is one of bench_fill.py's
cases (``small``, ``sorted``, ``shuffled``, ``no-empty``; its inputs, from its make_inputs),
ROWS the dense rows (the case's own by default), THREADS defaults to 2; the default value is a
``np.float32``, so that the call takes the C entry (``fast_fill``).  Results of A and B must be
bit-identical, or the script stops.  For example::

    python benchmarks/ab.py BUILD_A BUILD_B fill:small:500:1 fill:sorted:5e6:16 fill:shuffled
"""

from __future__ import annotations

import argparse
import importlib
import os
import shutil
import statistics
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_fill import CASES  # noqa: E402  (bench_fill imports the stdlib and NumPy only)
from bench_fill import make_inputs as make_fill_inputs  # noqa: E402

#: sfer._timing of this checkout, for builds that predate it (see load_builds)
TIMING_PY = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "sfer",
                         "_timing.py")
#: the forward op's cases, bench_fill.py's
FILL_CASES = {case.name: case for case in CASES}


def load_builds(build_a: str, build_b: str, root: str) -> dict:
    """Import each build's op extensions, each against its own ``sfer`` package:
    ``{"A": {"grad": module, "fill": module}, "B": ...}``.

    The grad op's module is ``_grad`` (``_core`` in builds from before the package was split),
    the forward op's ``_fill`` (absent from builds older than the op: no ``"fill"`` then).  An
    op module binds what it takes from its package (``sfer._runtime``'s functions, result
    types, input rules) when it is imported.  So each build's ``sfer`` package is copied into
    ``root`` and imported as ``sfer`` in turn, with its op modules; then ``sfer`` and its
    submodules leave ``sys.modules`` before the next build's are imported.  Each build thus runs
    with its own runtime, and builds whose runtimes differ both load.  The timing loop is the
    last build's ``sfer._timing``; a build older than it gets this checkout's copy.
    """
    def entry(build: str, stems: tuple):
        for stem in stems:
            found = [f for f in os.listdir(os.path.join(build, "sfer"))
                     if f.startswith(stem + ".") and f.endswith((".so", ".pyd"))]
            if len(found) == 1:
                return stem
        return None

    modules: dict = {}
    for name, build in (("A", build_a), ("B", build_b)):
        if entry(build, ("_grad", "_core")) is None:
            sys.exit(f"{build}/sfer: expected one built _grad (or _core) extension, found none")
        base = os.path.join(root, name)
        shutil.copytree(os.path.join(build, "sfer"), os.path.join(base, "sfer"))
        if not os.path.exists(os.path.join(base, "sfer", "_timing.py")):
            shutil.copy(TIMING_PY, os.path.join(base, "sfer", "_timing.py"))
        for key in [k for k in sys.modules if k == "sfer" or k.startswith("sfer.")]:
            del sys.modules[key]
        sys.path.insert(0, base)
        importlib.invalidate_caches()
        modules[name] = {}
        for op, stems in (("grad", ("_grad", "_core")), ("fill", ("_fill",))):
            stem = entry(build, stems)
            if stem is not None:
                modules[name][op] = importlib.import_module(f"sfer.{stem}")
        importlib.import_module("sfer._timing")
        sys.path.remove(base)
    return modules


def parse_case(text: str):
    parts = text.split(":")
    if parts[0] == "fill":
        if not 2 <= len(parts) <= 4 or parts[1] not in FILL_CASES:
            raise argparse.ArgumentTypeError(
                f"bad case {text!r} (fill:CASE[:ROWS[:THREADS]], CASE one of "
                f"{', '.join(FILL_CASES)})")
        case = FILL_CASES[parts[1]]
        rows = int(float(parts[2])) if len(parts) > 2 else case.dense_rows
        return "fill", case, rows, int(parts[3]) if len(parts) > 3 else 2
    if len(parts) < 3 or parts[2] not in ("increasing", "shuffled"):
        raise argparse.ArgumentTypeError(f"bad case {text!r} (N_FULL:DTYPE:MAP[:THREADS[:out]])")
    threads = int(parts[3]) if len(parts) > 3 else 2
    return "grad", int(float(parts[0])), np.dtype(parts[1]), parts[2], threads, parts[4:] == ["out"]


def grad_calls(modules: dict, case):
    """The grad case's call of each build, and its label."""
    n_full, dtype, kind, threads, use_out = case
    rng = np.random.default_rng(0)
    g = rng.standard_normal(n_full).astype(dtype)
    rim = np.flatnonzero(rng.random(n_full) < 0.9)
    if kind == "shuffled":
        rim = rng.permutation(rim)
    out = np.zeros(rim.shape[0], dtype) if use_out else None
    calls = {name: (lambda m=m["grad"]: m.sparse_fill_empty_rows_grad(rim, g, num_threads=threads,
                                                                       out=out))
             for name, m in modules.items()}
    return calls, f"{n_full:.0e} {dtype.name} {kind} {threads}t{' out=' if use_out else ''}"


def fill_calls(modules: dict, case):
    """The forward-op case's call of each build, and its label."""
    fill_case, rows, threads = case
    if any("fill" not in m for m in modules.values()):
        sys.exit("a build has no _fill extension (the forward op): fill cases need both")
    t = make_fill_inputs(fill_case, rows)
    default = np.float32(t["default_value"])
    calls = {name: (lambda m=m["fill"]: m.sparse_fill_empty_rows(
                 t["indices"], t["values"], t["dense_shape"], default, num_threads=threads))
             for name, m in modules.items()}
    return calls, f"fill {fill_case.name} {rows:.0e} rows {threads}t"


def run_case(modules: dict, case, seconds: float) -> str:
    calls, label = (grad_calls if case[0] == "grad" else fill_calls)(modules, case[1:])
    a, b = calls["A"](), calls["B"]()
    if len(a) != len(b) or any(np.asarray(x).tobytes() != np.asarray(y).tobytes()
                               for x, y in zip(a, b)):
        sys.exit(f"A and B disagree on {label}")
    from sfer._timing import calibrate, time_interleaved  # build B's sfer (see load_builds)

    one, number = calibrate(calls["A"])  # seconds of a call, calls per sample
    rounds = max(10, min(200, int(seconds / (2 * one * number))))
    # one sample of each per round, A first in even rounds and B first in odd ones (ABBA)
    timing_a, timing_b = time_interleaved([calls["A"], calls["B"]], rounds=rounds, per_round=1)
    ta, tb = timing_a.seconds, timing_b.seconds
    paired = statistics.median(y / x for x, y in zip(timing_a.samples, timing_b.samples))
    return (f"{label:<32} A {ta * 1e3:10.4f} ms   B {tb * 1e3:10.4f} ms   "
            f"B/A {tb / ta:.3f} (paired median {paired:.3f}, {rounds} rounds)")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("build_a")
    parser.add_argument("build_b")
    parser.add_argument("cases", nargs="+", type=parse_case)
    parser.add_argument("--seconds", type=float, default=3.0, help="time budget per case")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as root:
        modules = load_builds(os.path.abspath(args.build_a), os.path.abspath(args.build_b),
                              root)
        for case in args.cases:
            print(run_case(modules, case, args.seconds), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
