"""A list column of a Parquet file through sfer: from_arrow, the forward op, a toy gradient.

    python examples/parquet_pipeline.py                          # writes a file, then reads it
    python examples/parquet_pipeline.py --data clicks.parquet --column ids
    python examples/parquet_pipeline.py --dask                   # one Dask task per row group

Without ``--data`` (or when the file does not exist) a Parquet file with a ``list<int64>``
column is written first: ``--rows`` rows of 0..19 ids, about a third of them empty (null or
``[]``), in row groups of ``--row-group-size`` rows; without ``--data`` it goes to a temporary
directory, removed at exit.

Each row group is one batch: ``sfer.from_arrow`` turns its column into a COO sparse tensor
(``[row, position]`` indices, the ids as values, a view of Arrow's buffer),
``sfer.sparse_fill_empty_rows`` gives each empty row the id ``--default`` (-1), and
``sfer.sparse_fill_empty_rows_grad`` takes a toy gradient back through ``reverse_index_map``
(the gradient of ``sum(w * embedding(id))`` with one weight per output position: ``d_values``
for the ids that were there, ``d_default_value`` for the ones added).  The script prints rows/s
and a checksum of every batch's results, which is the same in both modes.

``--dask``: one ``dask.delayed`` task per row group, each reading its own row group from the
file, computed with ``--scheduler`` (threads by default: sfer releases the GIL; each task calls
sfer with ``--num-threads``, 1 by default in this mode so that the tasks share the cores).
Needs pyarrow (``pip install 'sfer[arrow]'``), and dask for ``--dask``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

import sfer


def write_data(path, rows, row_group_size, seed=0):
    """A Parquet file with a list<int64> column "ids" (and a row number), rows of 0..19 ids,
    about a third of them empty (null or [])."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(0, 20, size=rows)
    lengths[rng.random(rows) < 0.3] = 0
    offsets = np.zeros(rows + 1, dtype=np.int32)
    np.cumsum(lengths, out=offsets[1:])
    ids = pa.array(rng.integers(0, 1_000_000, size=int(offsets[-1])))
    nulls = pa.array((lengths == 0) & (rng.random(rows) < 0.5))
    column = pa.ListArray.from_arrays(pa.array(offsets), ids, mask=nulls)
    table = pa.table({"row": pa.array(np.arange(rows)), "ids": column})
    pq.write_table(table, path, row_group_size=row_group_size)


def run_batch(column, default, num_threads):
    """One batch: (rows, entries, a checksum of the results)."""
    coo = sfer.from_arrow(column, num_threads=num_threads)
    fill = sfer.sparse_fill_empty_rows(*coo, default, num_threads=num_threads)
    n_full = fill.output_values.shape[0]
    weights = (np.arange(n_full, dtype=np.float32) % 7) * np.float32(0.25)  # d loss / d output
    grad = sfer.sparse_fill_empty_rows_grad(fill.reverse_index_map, weights,
                                            num_threads=num_threads)
    checksum = (int(fill.output_indices.sum()) + int(fill.output_values.sum())
                + float(grad.d_values.sum()) + float(grad.d_default_value))
    return int(coo.dense_shape[0]), int(coo.values.shape[0]), checksum


def run_row_group(path, column, group, default, num_threads):
    """One Dask task: read row group ``group`` and run it."""
    table = pq.ParquetFile(path).read_row_group(group, columns=[column])
    return run_batch(table.column(column), default, num_threads)


def run_serial(path, column, default, num_threads):
    f = pq.ParquetFile(path)
    return [run_batch(f.read_row_group(g, columns=[column]).column(column), default,
                      num_threads) for g in range(f.num_row_groups)]


def run_dask(path, column, default, num_threads, scheduler):
    import dask

    groups = pq.ParquetFile(path).num_row_groups
    tasks = [dask.delayed(run_row_group)(path, column, g, default, num_threads)
             for g in range(groups)]
    return list(dask.compute(*tasks, scheduler=scheduler))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", help="the Parquet file (written first if it does not exist)")
    ap.add_argument("--column", default="ids", help="the list column (default: ids)")
    ap.add_argument("--rows", type=int, default=1_000_000, help="rows of a written file")
    ap.add_argument("--row-group-size", type=int, default=100_000)
    ap.add_argument("--default", type=int, default=-1, help="the id of an empty row")
    ap.add_argument("--num-threads", type=int, default=None)
    ap.add_argument("--dask", action="store_true", help="one Dask task per row group")
    ap.add_argument("--scheduler", default="threads", choices=["threads", "processes",
                                                               "synchronous"])
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="sfer-parquet-") as tmp:
        path = args.data or os.path.join(tmp, "lists.parquet")
        if not os.path.exists(path):
            write_data(path, args.rows, args.row_group_size)
            print(f"wrote {path}: {args.rows} rows in row groups of {args.row_group_size}")
        t0 = time.perf_counter()
        if args.dask:
            threads = args.num_threads or 1
            results = run_dask(path, args.column, args.default, threads, args.scheduler)
        else:
            results = run_serial(path, args.column, args.default, args.num_threads)
        seconds = time.perf_counter() - t0
    rows = sum(r for r, _, _ in results)
    entries = sum(n for _, n, _ in results)
    mode = f"dask ({args.scheduler}), " if args.dask else ""
    print(f"{mode}{len(results)} batches, {rows} rows, {entries} ids: {seconds:.3f} s, "
          f"{rows / seconds:,.0f} rows/s")
    print(f"checksum {sum(c for _, _, c in results):.6g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
