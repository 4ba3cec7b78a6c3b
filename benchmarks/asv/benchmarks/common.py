"""What the asv benchmarks share: the thread counts, and the data of benchmarks/bench*.py.

The data come from the hand-written benchmarks' own generators (one definition of each case):
``bench.make_maps`` / ``bench.make_grad`` for the grad, ``bench_fill.make_inputs`` for the
forward op, ``bench_ragged.make`` for ragged_to_sparse.  asv imports this suite from the working
tree (the commit under test only provides the installed sfer), so benchmarks/ is two folders up.
Each generator is cached per process: asv calls ``setup`` once per parameter combination and
repeat, and the data depend on fewer parameters than that.
"""

from __future__ import annotations

import functools
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, os.pardir))
import bench_fill  # noqa: E402  (the stdlib and NumPy only, at import)
import bench_ragged  # noqa: E402  (the same)

#: num_threads values: one thread (small containers, OMP_NUM_THREADS=1), two (this VM's cores),
#: and 16, more threads than cores on small machines, a path big machines take
THREADS = [1, 2, 16]


@functools.lru_cache(maxsize=4)
def grad_inputs(n_full: int, kind: str, dtype: str):
    """bench.py's map (int64, 90% of positions kept; ``increasing`` or ``shuffled``) and
    ``grad_values`` for N_full = n_full (a power of ten)."""
    import bench  # imports sfer, so only where the grad is timed

    exponent = len(str(n_full)) - 1
    return bench.make_maps(exponent, [kind])[kind], bench.make_grad(exponent, np.dtype(dtype))


@functools.lru_cache(maxsize=2)
def fill_inputs(case: str, rows: int):
    """bench_fill.py's inputs of ``case`` with ``rows`` dense rows."""
    return bench_fill.make_inputs({c.name: c for c in bench_fill.CASES}[case], rows)


@functools.lru_cache(maxsize=2)
def ragged_inputs(rows: int):
    """bench_ragged.py's values (float32) and row_splits (rows of 0..19 entries)."""
    return bench_ragged.make(rows)
