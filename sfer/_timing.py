"""The timing loop of sfer's command-line demo and of benchmarks/bench.py and ab.py (private).

A function is timed in *samples*: each sample runs it ``number`` times in a row and records the
mean seconds per call, where ``number`` is calibrated so that one sample lasts at least
``min_sample_seconds`` (a single call of a fast function is too short for the clock).  The
result is the median of the samples.  Garbage collection is off while samples are taken.

:func:`time_interleaved` times several functions in rounds: each round takes samples of every
function in turn, starting at a different function each round (with two functions: A B, B A,
A B, ...).  A burst of load from elsewhere on the machine then falls on all of them rather than
on whichever was being timed, so that the ratios between them stay fair.

The caller warms each function up (calls it once) before timing it.
"""

from __future__ import annotations

import gc
import math
import statistics
from dataclasses import dataclass, field
from time import perf_counter
from typing import Any, Callable, List, Optional, Sequence, Tuple

__all__ = [
    "MAX_REPEATS",
    "MIN_REPEATS",
    "MIN_SAMPLE_SECONDS",
    "ROUNDS",
    "Timing",
    "calibrate",
    "take_samples",
    "time_call",
    "time_interleaved",
]

MIN_SAMPLE_SECONDS = 2e-3  # calls faster than this are timed in batches of `number` calls
MIN_REPEATS = 3  # time_call: the fewest samples
MAX_REPEATS = 200  # the most samples of one function
ROUNDS = 5  # time_interleaved: rounds (so at least this many samples of each function)


@dataclass
class Timing:
    """The median seconds per call and how it was sampled."""

    seconds: float
    repeats: int  # number of samples (the median is taken over these)
    number: int  # calls per sample
    samples: List[float] = field(default_factory=list, repr=False)  # in the order taken


def calibrate(fn: Callable[[], Any],
              min_sample_seconds: float = MIN_SAMPLE_SECONDS) -> Tuple[float, int]:
    """(seconds of one call, calls per sample): one call of ``fn`` is timed, and calls shorter
    than ``min_sample_seconds`` are batched so that one sample lasts at least that long."""
    t0 = perf_counter()
    fn()
    single = max(perf_counter() - t0, 1e-9)
    return single, max(1, math.ceil(min_sample_seconds / single))


def take_samples(fn: Callable[[], Any], number: int, repeats: int) -> List[float]:
    """``repeats`` samples of seconds per call (each the mean of ``number`` calls), GC off."""
    samples = []
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for _ in range(repeats):
            t0 = perf_counter()
            for _ in range(number):
                fn()
            samples.append((perf_counter() - t0) / number)
    finally:
        if gc_was_enabled:
            gc.enable()
    return samples


def time_call(fn: Callable[[], Any], budget: float = 0.0, *, repeats: Optional[int] = None,
              min_sample_seconds: float = MIN_SAMPLE_SECONDS, min_repeats: int = MIN_REPEATS,
              max_repeats: int = MAX_REPEATS) -> Timing:
    """Median seconds per call of ``fn``.

    ``repeats`` samples if given, else as many as fill about ``budget`` seconds, clamped to
    [``min_repeats``, ``max_repeats``].
    """
    single, number = calibrate(fn, min_sample_seconds)
    if repeats is None:
        repeats = int(min(max_repeats, max(min_repeats, budget // (single * number))))
    samples = take_samples(fn, number, repeats)
    return Timing(float(statistics.median(samples)), repeats, number, samples)


def time_interleaved(fns: Sequence[Callable[[], Any]], budget: float = 0.0, *,
                     rounds: int = ROUNDS, per_round: Optional[int] = None,
                     min_sample_seconds: float = MIN_SAMPLE_SECONDS,
                     max_repeats: int = MAX_REPEATS) -> List[Timing]:
    """Median seconds per call of each of ``fns``, timed in ``rounds`` interleaved rounds.

    Each round takes ``per_round`` samples of every function in turn, starting at a different
    function each round.  Without ``per_round``, a function takes as many samples per round as
    fill about ``budget / rounds`` seconds (at least one, at most ``max_repeats // rounds``).
    Each Timing's ``samples`` are in the order taken, so ``samples[k]`` of two functions come
    from the same round when both take one sample per round.
    """
    plans = [calibrate(fn, min_sample_seconds) for fn in fns]
    if per_round is None:
        counts = [int(min(max_repeats // rounds, max(1, budget / rounds // (single * number))))
                  for single, number in plans]
    else:
        counts = [per_round] * len(fns)
    samples: List[List[float]] = [[] for _ in fns]
    for r in range(rounds):
        for k in range(len(fns)):
            i = (k + r) % len(fns)
            samples[i] += take_samples(fns[i], plans[i][1], counts[i])
    return [Timing(float(statistics.median(s)), len(s), plan[1], s)
            for s, plan in zip(samples, plans)]
