"""sfer.ragged_to_sparse on bench_ragged.py's data: one ragged level, 1-D float32 values."""

from __future__ import annotations

import sfer

from .common import THREADS, bench_ragged, ragged_inputs


class RaggedToSparse:
    """One call of ``ragged_to_sparse(values, row_splits)``: rows of 0..19 entries (uniform),
    100 rows (N ~ 1e3) and 1e6 rows (N ~ 1e7), bench_ragged.py's two sizes."""

    params = (list(bench_ragged.SIZES), THREADS)
    param_names = ["n", "num_threads"]

    def setup(self, n, num_threads):
        if not hasattr(sfer, "ragged_to_sparse"):
            raise NotImplementedError("this sfer has no ragged_to_sparse")  # asv: skipped
        self.values, self.splits = ragged_inputs(bench_ragged.SIZES[n])

    def time_one_level(self, n, num_threads):
        sfer.ragged_to_sparse(self.values, self.splits, num_threads=num_threads)
