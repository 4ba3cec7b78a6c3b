"""sfer.sparse_fill_empty_rows on bench_fill.py's cases (benchmarks/README.md, "The forward op")."""

from __future__ import annotations

import sfer

from .common import THREADS, bench_fill, fill_inputs


class Fill:
    """One call of the forward op with bench_fill.py's inputs (float32 values, rank 2, about
    2 entries per non-empty row): ``small`` (500 rows), and ``sorted``, ``shuffled`` and
    ``no-empty`` with bench_fill.py's ``--quick`` size (QUICK_ROWS, 500,000 rows, N ~ 9e5;
    its full runs use 5e6)."""

    params = ([case.name for case in bench_fill.CASES], THREADS)
    param_names = ["case", "num_threads"]

    def setup(self, case, num_threads):
        if not hasattr(sfer, "sparse_fill_empty_rows"):
            raise NotImplementedError("this sfer has no forward op")  # asv: skipped
        rows = min({c.name: c for c in bench_fill.CASES}[case].dense_rows, bench_fill.QUICK_ROWS)
        self.inputs = fill_inputs(case, rows)

    def time_fill(self, case, num_threads):
        sfer.sparse_fill_empty_rows(**self.inputs, num_threads=num_threads)
