#!/usr/bin/env python3
"""How far a memory-bound copy scales from one thread to two on this machine, into fresh and
into touched memory: the ceiling for the forward op's "two threads at least 1.6x faster than
one" (issue 17), which writes ~270 MB of fresh outputs per call.

``np.copyto`` of 270 MB (GIL released) into a new ``np.empty`` array (its pages zeroed by the
kernel on first touch) and into an array written before, on one thread and split over two
Python threads; medians of interleaved rounds.  NumPy only::

    python benchmarks/first_touch.py
"""

from __future__ import annotations

import statistics
import threading
import time

import numpy as np

BYTES = 270_000_000
ROUNDS = 9


def copy_split(dst: np.ndarray, src: np.ndarray, threads: int) -> None:
    """dst[:] = src, in ``threads`` equal parts, the first on the calling thread."""
    n = src.shape[0]
    parts = [(dst[i * n // threads:(i + 1) * n // threads],
              src[i * n // threads:(i + 1) * n // threads]) for i in range(threads)]
    workers = [threading.Thread(target=np.copyto, args=part) for part in parts[1:]]
    for worker in workers:
        worker.start()
    np.copyto(*parts[0])
    for worker in workers:
        worker.join()


def main() -> None:
    n = BYTES // 8
    src = np.ones(n)
    touched = np.zeros(n)
    cases = {"fresh": lambda k: copy_split(np.empty(n), src, k),
             "touched": lambda k: copy_split(touched, src, k)}
    times: dict = {}
    for _ in range(ROUNDS):
        for name, run in cases.items():
            for k in (1, 2):
                start = time.perf_counter()
                run(k)
                times.setdefault((name, k), []).append(time.perf_counter() - start)
    for name in cases:
        one = statistics.median(times[(name, 1)])
        two = statistics.median(times[(name, 2)])
        print(f"{name}: 1 thread {one * 1e3:.1f} ms, 2 threads {two * 1e3:.1f} ms, "
              f"2 threads {one / two:.2f}x faster")


if __name__ == "__main__":
    main()
