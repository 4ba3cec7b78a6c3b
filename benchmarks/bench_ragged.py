"""Benchmark sfer.ragged_to_sparse against the NumPy composite and TensorFlow.

    python benchmarks/bench_ragged.py [--tf-python /tmp/venv-tf/bin/python] [--repeat 15]

The data (the issue's): float32 values, rows of 0..19 entries (uniform), 100 rows (N ~ 1e3)
and 1e6 rows (N ~ 1e7).  Each timing is the median of ``--repeat`` samples; a sample of a
short call runs it enough times to last 20 ms and divides.

* sfer: ``sfer.ragged_to_sparse(values, row_splits)`` (threads: sfer.get_num_threads(), or
  ``--num-threads``); the output checked against the NumPy composite once.
* NumPy: the composite: ``np.repeat`` of the row ids, position = ``arange`` minus the
  repeated row starts, stacked into int64 ``[N, 2]`` indices.
* TensorFlow: ``tf.RaggedTensor.from_row_splits(values, row_splits).to_sparse()`` (eager),
  in its own process: this script run by ``--tf-python`` (an interpreter with tensorflow;
  TensorFlow is never a dependency of sfer or of its tests).  Left out without it.

Beside them: sfer writing into one ``out=`` array, the same each call (as a pipeline of
batches of one size can), and ``np.ones`` of the indices' shape (one thread): a new array of
that size, whose fresh pages the kernel zeroes at first touch -- on large inputs most of a
call's time.  TensorFlow's allocator keeps its memory between calls (no page faults in a
loop of calls), so ``out=`` is the like-for-like comparison with it.

The targets (issue 19): >= 4x TensorFlow and >= 8x NumPy at N ~ 1e7, >= 100x TensorFlow at
N ~ 1e3.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

SIZES = {"1e3": 100, "1e7": 1_000_000}   # rows; ~9.5 entries per row


def make(rows, seed=0):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(0, 20, size=rows)
    splits = np.zeros(rows + 1, dtype=np.int64)
    np.cumsum(lengths, out=splits[1:])
    values = rng.standard_normal(int(splits[-1])).astype(np.float32)
    return values, splits


def median_time(fn, repeat):
    fn()
    t0 = time.perf_counter()
    fn()
    once = max(time.perf_counter() - t0, 1e-7)
    inner = max(1, int(0.02 / once))
    samples = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        for _ in range(inner):
            fn()
        samples.append((time.perf_counter() - t0) / inner)
    return float(np.median(samples))


def numpy_composite(values, splits):
    lengths = np.diff(splits)
    rows = np.repeat(np.arange(lengths.shape[0], dtype=np.int64), lengths)
    pos = np.arange(values.shape[0], dtype=np.int64) - np.repeat(splits[:-1], lengths)
    return np.stack([rows, pos], axis=1), values, np.array([lengths.shape[0], lengths.max()])


def tf_worker(repeat):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import tensorflow as tf

    out = {"tensorflow": tf.__version__}
    for name, rows in SIZES.items():
        values, splits = make(rows)
        v, s = tf.constant(values), tf.constant(splits)
        out[name] = median_time(lambda: tf.RaggedTensor.from_row_splits(v, s).to_sparse(),
                                repeat)
    print(json.dumps(out))


def tf_times(python, repeat):
    if not python:
        return None
    proc = subprocess.run([python, os.path.abspath(__file__), "--tf-worker", "--repeat",
                           str(repeat)], capture_output=True, text=True, timeout=1200)
    if proc.returncode != 0:
        print(f"TensorFlow worker failed:\n{proc.stderr[-2000:]}", file=sys.stderr)
        return None
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tf-python", default=None, help="an interpreter with tensorflow")
    ap.add_argument("--repeat", type=int, default=15)
    ap.add_argument("--num-threads", type=int, default=None)
    ap.add_argument("--tf-worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.tf_worker:
        return tf_worker(args.repeat)

    import sfer

    tf = tf_times(args.tf_python, args.repeat)
    threads = args.num_threads or sfer.get_num_threads()
    print(f"sfer {sfer.__version__}, {threads} thread(s), {os.cpu_count()} CPUs; NumPy "
          f"{np.__version__}" + (f"; TensorFlow {tf['tensorflow']}" if tf else
                                 "; TensorFlow: not run (--tf-python)"))
    print(f"{'N':>10} {'sfer':>10} {'sfer out=':>10} {'np.ones':>10} {'NumPy':>10} "
          f"{'TF':>10} {'vs NumPy':>9} {'vs TF':>8} {'out= vs TF':>10}")
    for name, rows in SIZES.items():
        values, splits = make(rows)
        want = numpy_composite(values, splits)
        got = sfer.ragged_to_sparse(values, splits, num_threads=args.num_threads)
        assert np.array_equal(got.indices, want[0]) and np.array_equal(got.dense_shape, want[2])
        t_sfer = median_time(lambda: sfer.ragged_to_sparse(values, splits,
                                                           num_threads=args.num_threads),
                             args.repeat)
        out = np.empty_like(want[0])
        t_out = median_time(lambda: sfer.ragged_to_sparse(values, splits, out=out,
                                                          num_threads=args.num_threads),
                            args.repeat)
        t_ones = median_time(lambda: np.ones(want[0].shape, np.int64), args.repeat)
        t_np = median_time(lambda: numpy_composite(values, splits), args.repeat)
        t_tf = tf[name] if tf else float("nan")
        print(f"{values.shape[0]:>10} {t_sfer * 1e3:>8.4f}ms {t_out * 1e3:>8.4f}ms "
              f"{t_ones * 1e3:>8.4f}ms {t_np * 1e3:>8.3f}ms {t_tf * 1e3:>8.3f}ms "
              f"{t_np / t_sfer:>8.1f}x {t_tf / t_sfer:>7.1f}x {t_tf / t_out:>9.1f}x")
    print("targets: >= 8x NumPy and >= 4x TF at N ~ 1e7; >= 100x TF at N ~ 1e3")


if __name__ == "__main__":
    main()
