#!/usr/bin/env python3
"""Benchmark ``sfer.sparse_fill_empty_rows_grad`` against NumPy and TensorFlow.

The matrix is N_full in 10^3 .. 10^8, two map kinds ("increasing": strictly increasing, each
position kept with probability 0.9, as SparseFillEmptyRows produces; "shuffled": the same map
randomly permuted), float32 and float64 gradients, and these implementations:

* ``sfer``          -- ``sfer.sparse_fill_empty_rows_grad(rim, g, num_threads=T)``
* ``sfer (out=)``   -- the same with a preallocated ``out=`` buffer, when sfer accepts ``out``
* ``NumPy``         -- ``d = g[rim]; mask = np.ones(N_full, bool); mask[rim] = False;
                       s = g[mask].sum()``
* ``TensorFlow``    -- ``tf.raw_ops.SparseFillEmptyRowsGrad`` on CPU tensors made once, outside
                       the timed region, when ``import tensorflow`` works

Every cell is verified: d_values must be bit-identical to NumPy's, d_default_value must agree
within NumPy's rounding-error bound, and sfer's sum must have the same bits for every thread
count.  A two-thread and a one-thread ``np.copyto`` bandwidth are measured as a baseline, and
the 1e8 cells also time a copy of their own least bytes.  The implementations of a cell are
timed in interleaved rounds, so that load from elsewhere does not skew their ratios.

Output: a Markdown report on stdout (``--markdown FILE`` too), ``--json FILE``, and a PNG plot
(``--plot FILE``).  Progress goes to stderr.  The exit status is 1 if any check failed.

Run ``python benchmarks/bench.py --help`` for the options; see benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import gc
import inspect
import json
import math
import os
import platform
import statistics
import sys
import threading
from dataclasses import asdict, dataclass
from time import perf_counter
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

import sfer

SEED = 20240611
KEEP_PROBABILITY = 0.9  # a position of [0, N_full) is referenced by the map with this probability
MAP_KINDS = ("increasing", "shuffled")
DTYPES = ("float32", "float64")
FULL_EXPONENTS = (3, 4, 5, 6, 7, 8)
QUICK_EXPONENTS = (3, 4, 5, 6)

REPEAT_SECONDS = 0.3  # timing budget per cell
QUICK_REPEAT_SECONDS = 0.05
MIN_REPEATS = 3  # the copy baseline
MAX_REPEATS = 200
ROUNDS = 5  # interleaved rounds per cell (so at least 5 samples of each implementation)
MIN_SAMPLE_SECONDS = 2e-3  # calls faster than this are timed in batches of `number` calls

COPY_BYTES = 1_600_000_000  # size of the source buffer for the copy-bandwidth baseline
QUICK_COPY_BYTES = 200_000_000

DEFAULT_PLOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                            "throughput.png")
IMPL_ORDER = ("sfer", "sfer (out=)", "NumPy", "TensorFlow", "copy")
#: cells moving at least this many (least) bytes also time a parallel copy of as many bytes,
#: interleaved with the implementations, as their own bandwidth baseline
CELL_COPY_MIN_BYTES = 500_000_000


# --------------------------------------------------------------------------------------------
# Timing
# --------------------------------------------------------------------------------------------

@dataclass
class Timing:
    """The median seconds per call and how it was sampled."""

    seconds: float
    repeats: int  # number of samples (the median is taken over these)
    number: int  # calls per sample


def calibrate(fn: Callable[[], Any]) -> Tuple[float, int]:
    """(seconds of one call, calls per sample): calls shorter than ``MIN_SAMPLE_SECONDS`` are
    timed in batches, so that one sample lasts at least that long."""
    t0 = perf_counter()
    fn()
    single = max(perf_counter() - t0, 1e-9)
    return single, max(1, math.ceil(MIN_SAMPLE_SECONDS / single))


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


def time_call(fn: Callable[[], Any], budget: float) -> Timing:
    """Median seconds per call of ``fn`` (already warmed up by the caller), GC disabled.

    The number of samples fills about ``budget`` seconds, clamped to
    [MIN_REPEATS, MAX_REPEATS].
    """
    single, number = calibrate(fn)
    repeats = int(min(MAX_REPEATS, max(MIN_REPEATS, budget // (single * number))))
    return Timing(float(statistics.median(take_samples(fn, number, repeats))), repeats, number)


def time_interleaved(fns: Sequence[Callable[[], Any]], budget: float) -> List[Timing]:
    """Median seconds per call of each of ``fns`` (warmed up by the caller), timed in
    ``ROUNDS`` interleaved rounds.

    Each round takes about ``budget / ROUNDS`` seconds of samples of every function in turn
    (at least one), starting at a different function each round.  A burst of load from
    elsewhere on the machine then falls on all of them instead of on whichever function
    happened to be timed at that moment, and the ratios between them stay fair.
    """
    plans = [calibrate(fn) for fn in fns]
    per_round = [int(min(MAX_REPEATS // ROUNDS, max(1, budget / ROUNDS // (single * number))))
                 for single, number in plans]
    samples: List[List[float]] = [[] for _ in fns]
    for r in range(ROUNDS):
        for k in range(len(fns)):
            i = (k + r) % len(fns)
            samples[i] += take_samples(fns[i], plans[i][1], per_round[i])
    return [Timing(float(statistics.median(s)), len(s), plan[1])
            for s, plan in zip(samples, plans)]


def make_copy(nbytes: int, threads: int) -> Callable[[], None]:
    """A function that copies an ``nbytes`` float32 buffer with ``np.copyto`` (so moves
    ``2 * nbytes``: read + write).

    With ``threads > 1`` the buffer is split into equal parts, each copied by its own Python
    thread (``np.copyto`` releases the GIL).  Both buffers are touched here.
    """
    n = nbytes // 4
    src = np.ones(n, dtype=np.float32)
    dst = np.empty(n, dtype=np.float32)
    dst.fill(0.0)
    bounds = [n * i // threads for i in range(threads + 1)]
    parts = [(dst[a:b], src[a:b]) for a, b in zip(bounds[:-1], bounds[1:])]

    def copy() -> None:
        if threads == 1:
            np.copyto(dst, src)
            return
        workers = [threading.Thread(target=np.copyto, args=part) for part in parts]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()

    return copy


def copy_bandwidth(nbytes: int, threads: int, budget: float) -> float:
    """(bytes read + bytes written) / time, in GB/s, of ``np.copyto`` of an ``nbytes`` buffer
    on ``threads`` threads."""
    copy = make_copy(nbytes, threads)
    copy()  # warm-up
    timing = time_call(copy, budget)
    return 2 * (nbytes // 4) * 4 / timing.seconds / 1e9


# --------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------

def make_increasing_map(n_full: int, rng: np.random.Generator) -> np.ndarray:
    """A strictly increasing int64 map: each position of [0, n_full) kept with p = 0.9."""
    keep = np.empty(n_full, dtype=bool)
    chunk = 1 << 22  # bounded temporary memory, whatever n_full is
    for start in range(0, n_full, chunk):
        stop = min(start + chunk, n_full)
        keep[start:stop] = rng.random(stop - start, dtype=np.float32) < KEEP_PROBABILITY
    return np.flatnonzero(keep).astype(np.int64, copy=False)


def make_maps(exponent: int, kinds: Sequence[str]) -> Dict[str, np.ndarray]:
    """The maps of the requested kinds for N_full = 10**exponent (deterministic)."""
    rng = np.random.default_rng([SEED, exponent])
    increasing = make_increasing_map(10**exponent, rng)
    maps = {}
    if "increasing" in kinds:
        maps["increasing"] = increasing
    if "shuffled" in kinds:
        maps["shuffled"] = rng.permutation(increasing)
    return maps


def make_grad(exponent: int, dtype: np.dtype) -> np.ndarray:
    """Standard-normal gradients of length 10**exponent (deterministic per size and dtype)."""
    rng = np.random.default_rng([SEED, exponent, dtype.itemsize])
    return rng.standard_normal(10**exponent, dtype=dtype)


# --------------------------------------------------------------------------------------------
# Implementations
# --------------------------------------------------------------------------------------------

def sfer_accepts_out() -> bool:
    """Whether the installed sfer's function has an ``out`` parameter."""
    try:
        return "out" in inspect.signature(sfer.sparse_fill_empty_rows_grad).parameters
    except (TypeError, ValueError):  # pragma: no cover - a signature-less builtin
        return False


def numpy_composite(rim: np.ndarray, g: np.ndarray) -> Tuple[np.ndarray, Any]:
    """The NumPy reference: gather, then sum the unreferenced positions."""
    d_values = g[rim]
    mask = np.ones(g.shape[0], dtype=bool)
    mask[rim] = False
    return d_values, g[mask].sum()


def import_tensorflow(disabled: bool) -> Tuple[Any, str]:
    """(the tensorflow module or None, a note saying which and why)."""
    if disabled:
        return None, "disabled (--no-tf)"
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    try:
        import tensorflow as tf
    except Exception as exc:  # ImportError, or a broken installation
        return None, f"not available ({type(exc).__name__}: {exc})".splitlines()[0]
    return tf, tf.__version__


# --------------------------------------------------------------------------------------------
# Verification
# --------------------------------------------------------------------------------------------

@dataclass
class Reference:
    """NumPy's results for one (size, map, dtype) cell, with tolerances for the sum."""

    d_values: np.ndarray
    total: float
    tol_pairwise: float  # |sfer - NumPy| may be this large (NumPy sums pairwise)
    tol_sequential: float  # |TF - NumPy| may be this large (TF sums one by one, in dtype)


def make_reference(rim: np.ndarray, g: np.ndarray) -> Reference:
    """NumPy's result and rounding-error bounds derived from sum(|unreferenced values|)."""
    d_values, total = numpy_composite(rim, g)
    mask = np.ones(g.shape[0], dtype=bool)
    mask[rim] = False
    masked = g[mask]
    m = masked.shape[0]
    eps = float(np.finfo(g.dtype).eps)
    sum_abs = float(np.abs(masked).sum(dtype=np.float64))
    pairwise = eps * (math.ceil(math.log2(max(m, 2))) + 2) * sum_abs
    slack = eps * abs(float(total))  # the other side's final rounding
    return Reference(d_values, float(total), pairwise + slack,
                     pairwise + eps * (m + 2) * sum_abs + slack)


def same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether two arrays have the same dtype, shape and bytes."""
    return (a.dtype == b.dtype and a.shape == b.shape
            and bool(np.array_equal(a.view(np.uint8), b.view(np.uint8))))


def check(impl: str, d_values: np.ndarray, total: Any, ref: Reference,
          dtype: np.dtype) -> List[str]:
    """Problems with one implementation's result (an empty list if it is right)."""
    problems = []
    if not same_bits(np.ascontiguousarray(d_values), ref.d_values):
        problems.append("d_values differ from NumPy's")
    total_arr = np.asarray(total)
    if total_arr.dtype != dtype:
        problems.append(f"d_default_value has dtype {total_arr.dtype}, expected {dtype}")
    tol = ref.tol_sequential if impl == "TensorFlow" else ref.tol_pairwise
    diff = abs(float(total_arr) - ref.total)
    if not diff <= tol:
        problems.append(f"d_default_value {float(total_arr)!r} vs NumPy {ref.total!r}: "
                        f"difference {diff:.3g} > tolerance {tol:.3g}")
    return problems


# --------------------------------------------------------------------------------------------
# The matrix
# --------------------------------------------------------------------------------------------

@dataclass
class Row:
    """One measured (size, map, dtype, implementation, threads) combination."""

    n_full: int
    n: int
    map: str
    dtype: str
    impl: str
    threads: int
    seconds: float
    repeats: int
    number: int
    throughput: float  # elements of N_full per second
    bandwidth_gbs: float  # least bytes moved / time
    ratio_vs_tf: Optional[float] = None  # t_TF / t_impl: > 1 means faster than TF
    ratio_vs_numpy: Optional[float] = None  # t_NumPy / t_impl
    vs_copy: Optional[float] = None  # bandwidth_gbs / the cell's own copy bandwidth
    ok: bool = True
    problems: str = ""


def least_bytes(rim: np.ndarray, g: np.ndarray) -> int:
    """Read the map once, read grad_values once, write d_values once."""
    n = rim.shape[0]
    return rim.itemsize * n + g.itemsize * g.shape[0] + g.itemsize * n


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


#: (implementation, threads, function to time, its result -> (d_values, d_default_value));
#: the copy baseline has no result to check
Contender = Tuple[str, int, Callable[[], Any], Optional[Callable[[Any], Tuple[Any, Any]]]]


def bench_cell(rim: np.ndarray, g: np.ndarray, map_kind: str, threads: Sequence[int],
               use_out: bool, tf: Any, budget: float) -> Tuple[List[Row], List[str]]:
    """Time and verify every implementation on one (size, map, dtype) cell."""
    ref = make_reference(rim, g)
    n, n_full, dtype = rim.shape[0], g.shape[0], g.dtype
    nbytes = least_bytes(rim, g)
    label = f"N_full={n_full} {map_kind} {dtype.name}"
    rows: List[Row] = []
    warnings: List[str] = []
    sfer_sums: Dict[str, Any] = {}

    contenders: List[Contender] = []
    for t in threads:
        contenders.append(
            ("sfer", t, lambda t=t: sfer.sparse_fill_empty_rows_grad(rim, g, num_threads=t),
             tuple))
    out = np.empty(n, dtype=dtype) if use_out else None
    if out is not None:
        for t in threads:
            def with_out(t: int = t) -> Any:
                return sfer.sparse_fill_empty_rows_grad(rim, g, num_threads=t, out=out)

            contenders.append(("sfer (out=)", t, with_out, lambda r: (out, r[1])))
    contenders.append(("NumPy", 1, lambda: numpy_composite(rim, g), tuple))
    def device() -> Any:
        return tf.device("/CPU:0") if tf is not None else contextlib.nullcontext()

    if tf is not None:
        with device():
            t_rim = tf.constant(rim)  # converted once, outside the timed region
            t_g = tf.constant(g)
        op = tf.raw_ops.SparseFillEmptyRowsGrad
        contenders.append(("TensorFlow", 1,
                           lambda: op(reverse_index_map=t_rim, grad_values=t_g),
                           lambda r: (r.d_values.numpy(), r.d_default_value.numpy())))

    if nbytes >= CELL_COPY_MIN_BYTES:
        # np.copyto of nbytes / 2 bytes moves nbytes, the least traffic of this cell
        contenders.append(("copy", max(threads), make_copy(nbytes // 2, max(threads)), None))

    # TensorFlow's calls must run inside its device context; the context does nothing to the
    # others, and it is entered once, outside every timed call.
    with device():
        # Verify each implementation; its first call is also its warm-up.
        checked: List[Tuple[str, int, Callable[[], Any], List[str]]] = []
        skip_out = False
        for impl, nthreads, fn, result in contenders:
            if result is None:  # the copy baseline
                checked.append((impl, nthreads, fn, []))
                continue
            if impl == "sfer (out=)":
                if skip_out:
                    continue
                assert out is not None
                out.fill(np.nan)  # so that the check sees what this call wrote
                try:
                    d_values, total = result(fn())
                except (TypeError, ValueError) as exc:
                    warnings.append(f"sfer rejected out= ({type(exc).__name__}: {exc}); "
                                    f"the out= rows are skipped")
                    skip_out = True
                    continue
            else:
                d_values, total = result(fn())
            problems = check(impl, d_values, total, ref, dtype)
            if impl.startswith("sfer"):
                sfer_sums[f"{impl}, {nthreads} thread(s)"] = np.asarray(total)
            del d_values, total
            warnings += [f"{label} {impl} threads={nthreads}: {p}" for p in problems]
            checked.append((impl, nthreads, fn, problems))

        progress(f"  {n_full:>11,} {map_kind:<10} {dtype.name:<7} timing "
                 + ", ".join(f"{impl} x{nthreads}" for impl, nthreads, _, _ in checked))
        timings = time_interleaved([fn for _, _, fn, _ in checked], budget * len(checked))

    for (impl, nthreads, _, problems), timing in zip(checked, timings):
        rows.append(Row(n_full, n, map_kind, dtype.name, impl, nthreads, timing.seconds,
                        timing.repeats, timing.number, n_full / timing.seconds,
                        nbytes / timing.seconds / 1e9, ok=not problems,
                        problems="; ".join(problems)))

    bits = {key: value.tobytes() for key, value in sfer_sums.items()}
    if len(set(bits.values())) > 1:
        listing = ", ".join(f"{key}: {sfer_sums[key]!r}" for key in sfer_sums)
        warnings.append(f"{label}: sfer's d_default_value differs between thread counts "
                        f"({listing})")
        for row in rows:
            if row.impl.startswith("sfer"):
                row.ok = False
                row.problems = "; ".join(filter(None, [row.problems,
                                                       "sum bits depend on thread count"]))

    by_impl = {row.impl: row for row in rows if row.impl in ("NumPy", "TensorFlow", "copy")}
    for row in rows:
        if "copy" in by_impl:
            row.vs_copy = row.bandwidth_gbs / by_impl["copy"].bandwidth_gbs
        if row.impl == "copy":
            continue
        if "TensorFlow" in by_impl:
            row.ratio_vs_tf = by_impl["TensorFlow"].seconds / row.seconds
        row.ratio_vs_numpy = by_impl["NumPy"].seconds / row.seconds
    return rows, warnings


def run_matrix(exponents: Sequence[int], maps: Sequence[str], dtypes: Sequence[str],
               threads: Sequence[int], use_out: bool, tf: Any,
               budget: float) -> Tuple[List[Row], List[str]]:
    """Every cell of the matrix; arrays are freed between sizes."""
    rows: List[Row] = []
    warnings: List[str] = []
    for exponent in exponents:
        progress(f"N_full = 10^{exponent}: generating data")
        rim_by_kind = make_maps(exponent, maps)
        for map_kind in maps:
            rim = rim_by_kind[map_kind]
            for dtype_name in dtypes:
                g = make_grad(exponent, np.dtype(dtype_name))
                cell_rows, cell_warnings = bench_cell(rim, g, map_kind, threads, use_out, tf,
                                                      budget)
                rows += cell_rows
                warnings += cell_warnings
                del g
                gc.collect()
            del rim
        del rim_by_kind
        gc.collect()
    return rows, warnings


# --------------------------------------------------------------------------------------------
# Machine information
# --------------------------------------------------------------------------------------------

def cpu_model() -> str:
    """The CPU model from /proc/cpuinfo, else what platform knows."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def memory_gib() -> Optional[float]:
    """Total memory from /proc/meminfo, in GiB (None where unknown)."""
    try:
        with open("/proc/meminfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) / 2**20
    except (OSError, ValueError, IndexError):
        pass
    return None


def machine_info(tf_note: str, use_out: bool) -> Dict[str, Any]:
    """Everything the report's header says about the machine and the software."""
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        usable = os.cpu_count()
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "cpu_model": cpu_model(),
        "logical_cpus": os.cpu_count(),
        "usable_cpus": usable,
        "memory_gib": memory_gib(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "tensorflow": tf_note,
        "sfer": sfer.__version__,
        "sfer_openmp_enabled": bool(sfer.openmp_enabled()),
        "sfer_accepts_out": use_out,
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
    }


# --------------------------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------------------------

def fmt_size(n: int) -> str:
    """10**k as "1e<k>", anything else with thousands separators."""
    k = round(math.log10(n)) if n > 0 else 0
    return f"1e{k}" if 10**k == n else f"{n:,}"


def fmt_seconds(seconds: float) -> str:
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6)):
        if seconds >= scale:
            return f"{seconds / scale:.3g} {unit}"
    return f"{seconds / 1e-9:.3g} ns"


def fmt_rate(per_second: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if per_second >= scale:
            return f"{per_second / scale:.3g} {unit}/s"
    return f"{per_second:.3g} /s"


def fmt_ratio(ratio: Optional[float]) -> str:
    return "–" if ratio is None else f"{ratio:.2f}×"


def markdown_report(info: Dict[str, Any], copy_gbs: Dict[str, float], copy_bytes: int,
                    rows: List[Row], warnings: List[str], budget: float) -> str:
    """The whole report: header, table, verification summary."""
    memory = f", {info['memory_gib']:.1f} GiB RAM" if info["memory_gib"] else ""
    copy_text = ", ".join(f"{k} thread{'s' if k != '1' else ''}: **{v:.1f} GB/s**"
                          for k, v in copy_gbs.items())
    lines = [
        "# sfer benchmark: SparseFillEmptyRowsGrad",
        "",
        f"- Date: {info['date']}",
        f"- CPU: {info['cpu_model']} ({info['logical_cpus']} logical CPUs, "
        f"{info['usable_cpus']} usable{memory})",
        f"- Python {info['python']}, NumPy {info['numpy']}, TensorFlow {info['tensorflow']}",
        f"- sfer {info['sfer']}, `sfer.openmp_enabled()` = {info['sfer_openmp_enabled']}, "
        f"`out=` supported: {'yes' if info['sfer_accepts_out'] else 'no'}"
        + (f", OMP_NUM_THREADS={info['OMP_NUM_THREADS']}" if info["OMP_NUM_THREADS"] else ""),
        f"- Copy bandwidth, (bytes read + bytes written) / time, `np.copyto` of a "
        f"{copy_bytes / 1e9:.2g} GB float32 buffer: {copy_text}",
        f"- Data: int64 map keeping each position with p = {KEEP_PROBABILITY} "
        f"(\"shuffled\" = the same map permuted); standard-normal gradients; seed {SEED}",
        f"- Timing: median per call, warm-up first, GC off; the implementations of a cell are "
        f"timed in {ROUNDS} interleaved rounds, samples filling ~{budget:g} s per row "
        f"(at least {ROUNDS} samples; calls under {MIN_SAMPLE_SECONDS * 1e3:g} ms timed in "
        f"batches)",
        "- eff. BW = (8·N + itemsize·N_full + itemsize·N) bytes / time; "
        "vs X = time of X / time of this row (> 1: faster than X)",
        f"- copy: cells of at least {CELL_COPY_MIN_BYTES / 1e6:g} MB of least traffic also "
        "time an `np.copyto` that moves as many bytes (read + write), on the most threads, "
        "interleaved with the others; % of copy = eff. BW / that copy's",
        "",
        "| N_full | map | dtype | impl | threads | time/call | throughput (elem/s) "
        "| eff. BW (GB/s) | % of copy | vs TF | vs NumPy |",
        "|---:|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {fmt_size(row.n_full)} | {row.map} | {row.dtype} | {row.impl} | {row.threads} "
            f"| {fmt_seconds(row.seconds)} | {fmt_rate(row.throughput)} "
            f"| {row.bandwidth_gbs:.2f} "
            f"| {'–' if row.vs_copy is None else f'{100 * row.vs_copy:.0f}%'} "
            f"| {fmt_ratio(row.ratio_vs_tf)} | {fmt_ratio(row.ratio_vs_numpy)} |")
        if not row.ok:
            problems = row.problems.replace("|", "\\|")
            lines.append(f"| ⚠ | | | **MISMATCH** | | {problems} | | | | | |")
    lines.append("")
    if warnings:
        lines.append(f"**{len(warnings)} problem(s):**")
        lines.append("")
        lines += [f"- {w}" for w in warnings]
    else:
        checked = sum(row.impl != "copy" for row in rows)
        lines.append(f"Verified: in all {checked} rows d_values is bit-identical to NumPy's, "
                     "d_default_value agrees within rounding-error bounds, and sfer's sum has "
                     "the same bits for every thread count.")
    return "\n".join(lines) + "\n"


def write_json(path: str, info: Dict[str, Any], copy_gbs: Dict[str, float], copy_bytes: int,
               config: Dict[str, Any], rows: List[Row], warnings: List[str]) -> None:
    payload = {"machine": info,
               "copy_bandwidth_gbs": {"buffer_bytes": copy_bytes, **copy_gbs},
               "config": config, "results": [asdict(row) for row in rows],
               "warnings": warnings}
    ensure_parent(path)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(payload, f, indent=1)
        f.write("\n")


def ensure_parent(path: str) -> None:
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)


def plot(path: str, rows: List[Row], maps: Sequence[str], dtypes: Sequence[str],
         copy_gbs: Dict[str, float], info: Dict[str, Any]) -> None:
    """Throughput vs N_full, one subplot per (map, dtype), one line per impl/thread count."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        progress("matplotlib is not installed: skipping the plot")
        return
    fig, axes = plt.subplots(len(maps), len(dtypes), figsize=(6 * len(dtypes), 4.5 * len(maps)),
                             squeeze=False, sharex=True)
    best_copy = max(copy_gbs.items(), key=lambda kv: kv[1]) if copy_gbs else None
    for i, map_kind in enumerate(maps):
        for j, dtype_name in enumerate(dtypes):
            ax = axes[i][j]
            cell = [r for r in rows
                    if r.map == map_kind and r.dtype == dtype_name and r.impl != "copy"]
            series = sorted({(r.impl, r.threads) for r in cell},
                            key=lambda s: (IMPL_ORDER.index(s[0]), s[1]))
            for impl, threads in series:
                points = sorted((r.n_full, r.throughput) for r in cell
                                if r.impl == impl and r.threads == threads)
                label = f"{impl}, {threads} thread{'s' if threads > 1 else ''}" \
                    if impl.startswith("sfer") else impl
                ax.plot(*zip(*points), marker="o", label=label,
                        linestyle="--" if "out=" in impl else "-")
            if best_copy and cell:
                itemsize = np.dtype(dtype_name).itemsize
                per_element = KEEP_PROBABILITY * 8 + itemsize + KEEP_PROBABILITY * itemsize
                ax.axhline(best_copy[1] * 1e9 / per_element, color="grey", linestyle=":",
                           label=f"copy bound ({best_copy[0]}-thread copy BW / least bytes)")
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_title(f"{map_kind} map, {dtype_name}")
            ax.set_xlabel("N_full")
            ax.set_ylabel("throughput (elements of N_full / s)")
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize="small")
    fig.suptitle(f"sfer {info['sfer']} SparseFillEmptyRowsGrad — {info['cpu_model']}, "
                 f"{info['usable_cpus']} CPUs", fontsize="medium")
    fig.tight_layout()
    ensure_parent(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    progress(f"plot written to {path}")


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------

def csv_list(choices: Optional[Sequence[str]] = None,
             convert: Callable[[str], Any] = str) -> Callable[[str], List[Any]]:
    """An argparse type for comma-separated values, each converted and checked."""
    def parse(text: str) -> List[Any]:
        values = []
        for item in filter(None, (s.strip() for s in text.split(","))):
            try:
                value = convert(item)
            except ValueError:
                raise argparse.ArgumentTypeError(f"bad value {item!r}") from None
            if choices is not None and value not in choices:
                raise argparse.ArgumentTypeError(
                    f"{item!r} is not one of {', '.join(map(str, choices))}")
            values.append(value)
        if not values:
            raise argparse.ArgumentTypeError("empty list")
        return values
    return parse


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError(text)
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Benchmark sfer.sparse_fill_empty_rows_grad against NumPy and "
                    "TensorFlow; see benchmarks/README.md.")
    parser.add_argument("--sizes", type=csv_list(range(0, 10), int), metavar="EXPS",
                        help="N_full exponents, e.g. 3,4,5 for 10^3, 10^4, 10^5 "
                             "(default 3..8; 3..6 with --quick)")
    parser.add_argument("--quick", action="store_true",
                        help=f"sizes 10^3..10^6, ~{QUICK_REPEAT_SECONDS:g} s per row, "
                             f"{QUICK_COPY_BYTES / 1e9:g} GB copy baseline")
    parser.add_argument("--dtypes", type=csv_list(DTYPES), default=list(DTYPES),
                        help="comma-separated, default float32,float64")
    parser.add_argument("--maps", type=csv_list(MAP_KINDS), default=list(MAP_KINDS),
                        help="comma-separated, default increasing,shuffled")
    parser.add_argument("--threads", type=csv_list(None, positive_int), default=[1, 2],
                        help="sfer thread counts, default 1,2")
    parser.add_argument("--repeat-seconds", type=float, metavar="S",
                        help=f"timing budget per row (default {REPEAT_SECONDS:g}; "
                             f"{QUICK_REPEAT_SECONDS:g} with --quick)")
    parser.add_argument("--markdown", metavar="FILE", help="also write the report here")
    parser.add_argument("--json", metavar="FILE", help="write machine-readable results here")
    parser.add_argument("--plot", metavar="FILE", default=DEFAULT_PLOT,
                        help="PNG plot path (default benchmarks/results/throughput.png)")
    parser.add_argument("--no-tf", action="store_true", help="do not time TensorFlow")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    exponents = args.sizes or list(QUICK_EXPONENTS if args.quick else FULL_EXPONENTS)
    budget = args.repeat_seconds if args.repeat_seconds is not None else (
        QUICK_REPEAT_SECONDS if args.quick else REPEAT_SECONDS)
    copy_bytes = QUICK_COPY_BYTES if args.quick else COPY_BYTES
    threads = sorted(set(args.threads))

    tf, tf_note = import_tensorflow(args.no_tf)
    use_out = sfer_accepts_out()
    info = machine_info(tf_note, use_out)
    if tf is None:
        progress(f"TensorFlow {tf_note}: its rows and the 'vs TF' column are left out")

    progress(f"copy bandwidth baseline ({copy_bytes / 1e9:g} GB buffer)")
    copy_gbs = {str(t): copy_bandwidth(copy_bytes, t, max(budget, 0.3))
                for t in sorted({1, 2} | set(threads))}

    rows, warnings = run_matrix(exponents, args.maps, args.dtypes, threads, use_out, tf, budget)

    report = markdown_report(info, copy_gbs, copy_bytes, rows, warnings, budget)
    sys.stdout.write(report)
    sys.stdout.flush()
    if args.markdown:
        ensure_parent(args.markdown)
        with open(args.markdown, "w", encoding="utf-8") as f:
            f.write(report)
    if args.json:
        config = {"exponents": exponents, "maps": args.maps, "dtypes": args.dtypes,
                  "threads": threads, "repeat_seconds": budget, "seed": SEED,
                  "keep_probability": KEEP_PROBABILITY, "rounds": ROUNDS,
                  "max_repeats": MAX_REPEATS, "min_sample_seconds": MIN_SAMPLE_SECONDS}
        write_json(args.json, info, copy_gbs, copy_bytes, config, rows, warnings)
    if args.plot:
        plot(args.plot, rows, args.maps, args.dtypes, copy_gbs, info)
    for warning in warnings:
        progress(f"WARNING: {warning}")
    return 1 if warnings else 0


if __name__ == "__main__":
    sys.exit(main())
