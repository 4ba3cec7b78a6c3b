"""sfer.sparse_fill_empty_rows_grad on bench.py's data (benchmarks/README.md, "What is
measured")."""

from __future__ import annotations

import inspect

import numpy as np

import sfer

from .common import THREADS, grad_inputs


class Grad:
    """One call of the grad: N_full 1e3 (the call floor) and 1e6 (a walk over the map), sorted
    (``increasing``) and ``shuffled`` maps, float32 and float64, with a preallocated ``out=``
    or not."""

    params = ([1_000, 1_000_000], ["increasing", "shuffled"], ["float32", "float64"],
              [False, True], THREADS)
    param_names = ["n_full", "map", "dtype", "out", "num_threads"]

    def setup(self, n_full, kind, dtype, out, num_threads):
        self.rim, self.g = grad_inputs(n_full, kind, dtype)
        self.kwargs = {"num_threads": num_threads}
        if out:
            if "out" not in inspect.signature(sfer.sparse_fill_empty_rows_grad).parameters:
                raise NotImplementedError("this sfer has no out=")  # asv: skipped
            self.kwargs["out"] = np.empty(self.rim.shape[0], dtype=dtype)

    def time_grad(self, n_full, kind, dtype, out, num_threads):
        sfer.sparse_fill_empty_rows_grad(self.rim, self.g, **self.kwargs)
