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

Every cell is verified against ``sfer.reference`` (the op in plain NumPy, exact sum): d_values
must be bit-identical to its, d_default_value must be within the error bound it documents (for
sfer) or within the rounding-error bound of pairwise (NumPy) or sequential (TensorFlow)
summation in the input dtype, and sfer's sum must have the same bits for every thread
count.  A two-thread and a one-thread ``np.copyto`` bandwidth are measured as a baseline, and
the 1e8 cells also time a copy of their own least bytes.  The implementations of a cell are
timed in interleaved rounds, so that load from elsewhere does not skew their ratios.

Output: a Markdown report on stdout (``--markdown FILE`` too), ``--json FILE``, and a PNG plot
(``--plot FILE``).  Progress goes to stderr.  The exit status is 1 if any check failed.

``--scaling`` measures thread scaling instead: sfer (with ``out=``) at every ``--threads`` count
on N_full = 1e7 shuffled and 1e8 increasing float32 maps, each thread count beside a copy of the
case's least bytes on as many threads; neither NumPy nor TensorFlow is timed (nor imported).

Run ``python benchmarks/bench.py --help`` for the options; see benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import functools
import gc
import inspect
import json
import math
import os
import platform
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

import sfer
from sfer import reference
from sfer._timing import MAX_REPEATS, MIN_SAMPLE_SECONDS, ROUNDS, time_call, time_interleaved

SEED = 20240611
KEEP_PROBABILITY = 0.9  # a position of [0, N_full) is referenced by the map with this probability
MAP_KINDS = ("increasing", "shuffled")
DTYPES = ("float32", "float64")
FULL_EXPONENTS = (3, 4, 5, 6, 7, 8)
QUICK_EXPONENTS = (3, 4, 5, 6)

REPEAT_SECONDS = 0.3  # timing budget per cell
QUICK_REPEAT_SECONDS = 0.05
# The timing loop and its constants are sfer._timing's (shared with the demo and ab.py):
# ROUNDS interleaved rounds per cell (so at least ROUNDS samples of each implementation),
# at most MAX_REPEATS samples, calls under MIN_SAMPLE_SECONDS timed in batches.

COPY_BYTES = 1_600_000_000  # size of the source buffer for the copy-bandwidth baseline
QUICK_COPY_BYTES = 200_000_000

DEFAULT_PLOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                            "throughput.png")
IMPL_ORDER = ("sfer", "sfer (out=)", "NumPy", "TensorFlow", "copy")
#: cells moving at least this many (least) bytes also time a parallel copy of as many bytes,
#: interleaved with the implementations, as their own bandwidth baseline
CELL_COPY_MIN_BYTES = 500_000_000

#: --scaling: the default (N_full exponent, map, dtype) cases; --sizes, --maps and --dtypes
#: each replace that part of every case
SCALING_CASES = ((7, "shuffled", "float32"), (8, "increasing", "float32"))
SCALING_REPEAT_SECONDS = 1.0  # timing budget per row (sfer or copy at one thread count)
SCALING_REFERENCE_THREADS = 8  # the report gives time(largest thread count) / time(this)
DEFAULT_SCALING_PLOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                                    "scaling.png")


# --------------------------------------------------------------------------------------------
# The copy baseline (the timing loop is sfer._timing's)
# --------------------------------------------------------------------------------------------

def copy_buffers(nbytes: int) -> Tuple[np.ndarray, np.ndarray]:
    """(source, destination): two touched float32 buffers of ``nbytes`` for ``make_copy``."""
    n = nbytes // 4
    src = np.ones(n, dtype=np.float32)
    dst = np.empty(n, dtype=np.float32)
    dst.fill(0.0)
    return src, dst


def make_copy(nbytes: int, threads: int,
              buffers: Optional[Tuple[np.ndarray, np.ndarray]] = None,
              pool: Optional[ThreadPoolExecutor] = None) -> Callable[[], None]:
    """A function that copies an ``nbytes`` float32 buffer with ``np.copyto`` (so moves
    ``2 * nbytes``: read + write).

    With ``threads > 1`` the buffer is split into equal parts, each copied by its own Python
    thread (``np.copyto`` releases the GIL).  Both buffers are touched here, unless
    ``buffers`` (from ``copy_buffers(nbytes)``) is given, which lets several copy functions
    share their memory.  With ``pool`` (at least ``threads - 1`` workers) the calling thread
    copies the first part and the pool's threads the others, so that starting threads is
    not part of each call.
    """
    src, dst = buffers if buffers is not None else copy_buffers(nbytes)
    n = src.shape[0]
    bounds = [n * i // threads for i in range(threads + 1)]
    parts = [(dst[a:b], src[a:b]) for a, b in zip(bounds[:-1], bounds[1:])]

    def copy() -> None:
        if threads == 1:
            np.copyto(dst, src)
            return
        if pool is not None:
            futures = [pool.submit(np.copyto, *part) for part in parts[1:]]
            np.copyto(*parts[0])
            for future in futures:
                future.result()
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
    """The NumPy composite: gather, then sum the unreferenced positions.

    A timed competitor (the plain-NumPy way a user would write the op), not the oracle: every
    implementation's result, this one's included, is checked against sfer.reference."""
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
    """sfer.reference's result for one (size, map, dtype) cell, with tolerances for the sum."""

    d_values: np.ndarray
    total: float  # the exact sum rounded once to the cell's dtype (sfer.reference)
    tol_sfer: float  # |sfer - reference|: the bound sfer.reference documents (error_bound)
    tol_pairwise: float  # |NumPy - reference| (NumPy sums pairwise, in the dtype)
    tol_sequential: float  # |TF - reference| (TF sums one by one, in the dtype)


def make_reference(rim: np.ndarray, g: np.ndarray) -> Reference:
    """The oracle's result for a cell (sfer.reference; never timed) and the tolerances of the
    sum: sfer's is the bound sfer.reference documents; NumPy and TensorFlow, which sum in the
    input dtype, get the a-priori error bounds of their summation orders, from
    sum(|unreferenced values|), plus their final rounding."""
    d_values, total = reference.sparse_fill_empty_rows_grad(rim, g)
    masked = g[reference.unreferenced(rim, g.shape[0])]
    m = masked.shape[0]
    eps = float(np.finfo(g.dtype).eps)
    sum_abs = float(np.abs(masked).sum(dtype=np.float64))
    pairwise = eps * (math.ceil(math.log2(max(m, 2))) + 2) * sum_abs
    rounding = eps * abs(float(total))  # the competitor's final rounding (and the reference's)
    return Reference(d_values, float(total), float(reference.error_bound(masked, g.dtype)),
                     pairwise + rounding, eps * (m + 2) * sum_abs + rounding)


def same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether two arrays have the same dtype, shape and bytes."""
    return (a.dtype == b.dtype and a.shape == b.shape
            and bool(np.array_equal(a.view(np.uint8), b.view(np.uint8))))


def check(impl: str, d_values: np.ndarray, total: Any, ref: Reference,
          dtype: np.dtype) -> List[str]:
    """Problems with one implementation's result (an empty list if it is right)."""
    problems = []
    if not same_bits(np.ascontiguousarray(d_values), ref.d_values):
        problems.append("d_values differ from sfer.reference's")
    total_arr = np.asarray(total)
    if total_arr.dtype != dtype:
        problems.append(f"d_default_value has dtype {total_arr.dtype}, expected {dtype}")
    tol = {"TensorFlow": ref.tol_sequential, "NumPy": ref.tol_pairwise}.get(impl, ref.tol_sfer)
    diff = abs(float(total_arr) - ref.total)
    if not diff <= tol:
        problems.append(f"d_default_value {float(total_arr)!r} vs sfer.reference "
                        f"{ref.total!r}: difference {diff:.3g} > tolerance {tol:.3g}")
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


def fmt_bytes(nbytes: float) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if nbytes >= scale:
            return f"{nbytes / scale:.3g} {unit}"
    return f"{nbytes:.0f} B"


def fmt_ratio(ratio: Optional[float]) -> str:
    return "–" if ratio is None else f"{ratio:.2f}×"


def machine_lines(info: Dict[str, Any]) -> List[str]:
    """The report header's lines about the machine and the software."""
    memory = f", {info['memory_gib']:.1f} GiB RAM" if info["memory_gib"] else ""
    return [
        f"- Date: {info['date']}",
        f"- CPU: {info['cpu_model']} ({info['logical_cpus']} logical CPUs, "
        f"{info['usable_cpus']} usable{memory})",
        f"- Python {info['python']}, NumPy {info['numpy']}, TensorFlow {info['tensorflow']}",
        f"- sfer {info['sfer']}, `sfer.openmp_enabled()` = {info['sfer_openmp_enabled']}, "
        f"`out=` supported: {'yes' if info['sfer_accepts_out'] else 'no'}"
        + (f", OMP_NUM_THREADS={info['OMP_NUM_THREADS']}" if info["OMP_NUM_THREADS"] else ""),
    ]


def markdown_report(info: Dict[str, Any], copy_gbs: Dict[str, float], copy_bytes: int,
                    rows: List[Row], warnings: List[str], budget: float) -> str:
    """The whole report: header, table, verification summary."""
    copy_text = ", ".join(f"{k} thread{'s' if k != '1' else ''}: **{v:.1f} GB/s**"
                          for k, v in copy_gbs.items())
    lines = [
        "# sfer benchmark: SparseFillEmptyRowsGrad",
        "",
        *machine_lines(info),
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
        lines.append(f"Verified: in all {checked} rows d_values is bit-identical to "
                     "sfer.reference's, d_default_value agrees with its exact sum within "
                     "rounding-error bounds, and sfer's sum has the same bits for every thread "
                     "count.")
    return "\n".join(lines) + "\n"


def write_json(path: str, info: Dict[str, Any], copy_gbs: Dict[str, float], copy_bytes: int,
               config: Dict[str, Any], rows: List[Row], warnings: List[str]) -> None:
    dump_json(path, {"machine": info,
                     "copy_bandwidth_gbs": {"buffer_bytes": copy_bytes, **copy_gbs},
                     "config": config, "results": [asdict(row) for row in rows],
                     "warnings": warnings})


def dump_json(path: str, payload: Dict[str, Any]) -> None:
    ensure_parent(path)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(payload, f, indent=1)
        f.write("\n")


def ensure_parent(path: str) -> None:
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)


def save_figure(fig: Any, plt: Any, path: str, title: str) -> None:
    """Title, lay out and write a figure of either plot, then close it."""
    fig.suptitle(title, fontsize="medium")
    fig.tight_layout()
    ensure_parent(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    progress(f"plot written to {path}")


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
    save_figure(fig, plt, path, f"sfer {info['sfer']} SparseFillEmptyRowsGrad — "
                f"{info['cpu_model']}, {info['usable_cpus']} CPUs")


# --------------------------------------------------------------------------------------------
# Thread scaling (--scaling)
# --------------------------------------------------------------------------------------------

def scaling_cases(sizes: Optional[Sequence[int]], maps: Optional[Sequence[str]],
                  dtypes: Optional[Sequence[str]]) -> List[Tuple[int, str, str]]:
    """The (exponent, map, dtype) cases: ``SCALING_CASES``, with each option that is given
    replacing that part of every case (duplicates dropped, order kept)."""
    cases: Dict[Tuple[int, str, str], None] = {}
    for exponent, map_kind, dtype_name in SCALING_CASES:
        for e in sizes or [exponent]:
            for m in maps or [map_kind]:
                for d in dtypes or [dtype_name]:
                    cases[(e, m, d)] = None
    return list(cases)


def default_scaling_threads() -> List[int]:
    """1, 2, 4, ... up to the usable CPUs, and the usable CPUs themselves."""
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        usable = os.cpu_count() or 1
    return sorted({1 << k for k in range(usable.bit_length()) if 1 << k <= usable} | {usable})


def peak_rss_gb() -> Optional[float]:
    """This process's peak resident memory so far, in GB (None where unknown)."""
    try:
        import resource
    except ImportError:  # not Unix
        return None
    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return kib * (1 if sys.platform == "darwin" else 1024) / 1e9


def time_ratio(seconds: Dict[int, float]) -> Optional[float]:
    """time at the largest thread count / time at SCALING_REFERENCE_THREADS, if both exist."""
    largest = max(seconds)
    if SCALING_REFERENCE_THREADS not in seconds or largest <= SCALING_REFERENCE_THREADS:
        return None
    return seconds[largest] / seconds[SCALING_REFERENCE_THREADS]


def bench_scaling_case(exponent: int, map_kind: str, dtype_name: str, threads: Sequence[int],
                       use_out: bool, pool: ThreadPoolExecutor,
                       budget: float) -> Tuple[List[Row], Dict[str, Any], List[str]]:
    """sfer at every thread count beside a copy of the case's least bytes on as many threads.

    sfer is verified once per thread count (against sfer.reference, and the sum's bits
    across thread counts), then sfer(t) and copy(t) for all t are timed interleaved.
    Returns the rows (sfer's, then the copies'), a summary for the report, and problems.
    """
    dtype = np.dtype(dtype_name)
    progress(f"N_full = 10^{exponent} {map_kind} {dtype_name}: generating data")
    rim = make_maps(exponent, [map_kind])[map_kind]
    g = make_grad(exponent, dtype)
    n, n_full = rim.shape[0], g.shape[0]
    nbytes = least_bytes(rim, g)
    impl = "sfer (out=)" if use_out else "sfer"
    label = f"N_full={n_full} {map_kind} {dtype_name}"
    out = np.empty(n, dtype=dtype) if use_out else None
    kwargs = {"out": out} if use_out else {}
    last_threads = getattr(getattr(sfer, "_runtime", getattr(sfer, "_core", None)),
                           "_last_threads", None)

    def run_sfer(t: int) -> Any:
        return sfer.sparse_fill_empty_rows_grad(rim, g, num_threads=t, **kwargs)

    # Verify every thread count (each call also warms it up), then drop the reference.
    progress(f"  verifying sfer at {', '.join(map(str, threads))} thread(s)")
    ref = make_reference(rim, g)
    problems: Dict[int, List[str]] = {}
    sums: Dict[int, np.ndarray] = {}
    ran: Dict[int, Optional[int]] = {}
    for t in threads:
        if out is not None:
            out.fill(np.nan)  # so that the check sees what this call wrote
        d_values, total = run_sfer(t)
        ran[t] = int(last_threads()) if last_threads is not None else None
        problems[t] = check(impl, d_values, total, ref, dtype)
        sums[t] = np.asarray(total)
        del d_values, total
    del ref
    gc.collect()
    warnings = [f"{label} {impl} threads={t}: {p}" for t in threads for p in problems[t]]
    if len({value.tobytes() for value in sums.values()}) > 1:
        listing = ", ".join(f"{t}: {sums[t]!r}" for t in threads)
        warnings.append(f"{label}: sfer's d_default_value differs between thread counts "
                        f"({listing})")
        for t in threads:
            problems[t].append("sum bits depend on thread count")

    # np.copyto of nbytes / 2 bytes moves nbytes, the least traffic of this case; one pair
    # of buffers serves every thread count.
    buffers = copy_buffers(nbytes // 2)
    copies = {t: make_copy(nbytes // 2, t, buffers, pool) for t in threads}
    for copy in copies.values():
        copy()  # warm-up (and the pool starts its threads)
    fns: List[Callable[[], Any]] = []
    for t in threads:  # sfer(t) next to copy(t), so that each pair is timed close together
        fns += [functools.partial(run_sfer, t), copies[t]]
    progress(f"  timing {impl} and copy at {', '.join(map(str, threads))} thread(s), "
             f"interleaved")
    timings = time_interleaved(fns, budget)
    del buffers, copies, fns
    gc.collect()

    sfer_rows, copy_rows = [], []
    for i, t in enumerate(threads):
        ts, tc = timings[2 * i], timings[2 * i + 1]
        sfer_rows.append(Row(n_full, n, map_kind, dtype_name, impl, t, ts.seconds, ts.repeats,
                             ts.number, n_full / ts.seconds, nbytes / ts.seconds / 1e9,
                             vs_copy=tc.seconds / ts.seconds, ok=not problems[t],
                             problems="; ".join(problems[t])))
        copy_rows.append(Row(n_full, n, map_kind, dtype_name, "copy", t, tc.seconds,
                             tc.repeats, tc.number, n_full / tc.seconds,
                             nbytes / tc.seconds / 1e9))
    base = sfer_rows[0]  # the fewest threads
    summary = {
        "n_full": n_full, "n": n, "map": map_kind, "dtype": dtype_name, "impl": impl,
        "least_bytes": nbytes, "threads": list(threads),
        "ran_threads": {str(t): ran[t] for t in threads},
        "speedup_vs_threads": base.threads,
        "speedup": {str(r.threads): base.seconds / r.seconds for r in sfer_rows},
        "time_ratio_largest_vs_8": time_ratio({r.threads: r.seconds for r in sfer_rows}),
        "copy_time_ratio_largest_vs_8": time_ratio({r.threads: r.seconds for r in copy_rows}),
        "peak_rss_gb": peak_rss_gb(),
    }
    return sfer_rows + copy_rows, summary, warnings


def scaling_report(info: Dict[str, Any], cases: List[Dict[str, Any]], rows: List[Row],
                   warnings: List[str], budget: float) -> str:
    """The --scaling report: header, one table per case, verification summary."""
    lines = [
        "# sfer thread scaling: SparseFillEmptyRowsGrad",
        "",
        *machine_lines(info),
        f"- Data: int64 map keeping each position with p = {KEEP_PROBABILITY} "
        f"(\"shuffled\" = the same map permuted); standard-normal gradients; seed {SEED}",
        "- least bytes = 8·N + itemsize·N_full + itemsize·N (read the map and grad_values, "
        "write d_values); eff. GB/s = least bytes / sfer's time",
        "- copy: `np.copyto` of a float32 buffer of half the case's least bytes (so it moves "
        "as many bytes, read + write), split into T equal parts on T threads (the calling "
        "thread and a pool of Python threads started once); copy GB/s = least bytes / its "
        "time; % of copy = copy's time / sfer's time",
        f"- Timing: median per call, GC off; a case's sfer and copy at every thread count are "
        f"timed in {ROUNDS} interleaved rounds (sfer(T) next to copy(T)), samples filling "
        f"~{budget:g} s per row (at least {ROUNDS}; calls under "
        f"{MIN_SAMPLE_SECONDS * 1e3:g} ms timed in batches)",
    ]
    for case in cases:
        case_rows = [r for r in rows if (r.n_full, r.map, r.dtype) ==
                     (case["n_full"], case["map"], case["dtype"])]
        sfer_rows = [r for r in case_rows if r.impl != "copy"]
        copy_by_threads = {r.threads: r for r in case_rows if r.impl == "copy"}
        base = case["speedup_vs_threads"]
        out_text = ", out=" if case["impl"] == "sfer (out=)" else ", no out= (not supported)"
        lines += [
            "",
            f"## N_full = {fmt_size(case['n_full'])}, {case['map']} map, {case['dtype']}"
            f"{out_text}",
            "",
            f"N = {case['n']:,}; least bytes {fmt_bytes(case['least_bytes'])}.",
            "",
            f"| threads | sfer ms (median) | speed-up vs {base} thread{'s' if base > 1 else ''} "
            "| eff. GB/s | copy GB/s | % of copy |",
            "|---:|---:|---:|---:|---:|---:|",
        ]
        for row in sfer_rows:
            ran = case["ran_threads"][str(row.threads)]
            threads_text = f"{row.threads}" + (f" (ran {ran})" if ran not in (None, row.threads)
                                               else "")
            copy_row = copy_by_threads[row.threads]
            lines.append(
                f"| {threads_text} | {row.seconds * 1e3:.4g} "
                f"| {case['speedup'][str(row.threads)]:.2f}× | {row.bandwidth_gbs:.2f} "
                f"| {copy_row.bandwidth_gbs:.2f} | {100 * (row.vs_copy or 0):.0f}% |")
            if not row.ok:
                problems = row.problems.replace("|", "\\|")
                lines.append(f"| ⚠ **MISMATCH** | {problems} | | | | |")
        lines.append("")
        largest = max(case["threads"])
        ratio = case["time_ratio_largest_vs_8"]
        if ratio is None:
            lines.append(f"Time at the largest thread count / time at "
                         f"{SCALING_REFERENCE_THREADS}: – (needs {SCALING_REFERENCE_THREADS} "
                         f"and a larger count in --threads).")
        else:
            lines.append(
                f"Time at {largest} threads / time at {SCALING_REFERENCE_THREADS}: "
                f"**{ratio:.3f}** (target ≤ 1, time does not grow from "
                f"{SCALING_REFERENCE_THREADS} to {largest}: "
                f"{'met' if ratio <= 1 else 'NOT met'}); the copy's: "
                f"{case['copy_time_ratio_largest_vs_8']:.3f}.")
    lines.append("")
    if warnings:
        lines.append(f"**{len(warnings)} problem(s):**")
        lines.append("")
        lines += [f"- {w}" for w in warnings]
    else:
        lines.append("Verified: at every thread count d_values is bit-identical to "
                     "sfer.reference's, d_default_value is within its documented error bound "
                     "and has the same bits for every thread count.")
    peak = peak_rss_gb()
    if peak is not None:
        lines += ["", f"Peak resident memory of the run: {peak:.2f} GB."]
    return "\n".join(lines) + "\n"


def plot_scaling(path: str, cases: List[Dict[str, Any]], rows: List[Row],
                 info: Dict[str, Any]) -> None:
    """Time per call vs threads, one panel per case: sfer, the copy of its least bytes, and
    ideal scaling from sfer's time at the fewest threads."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        progress("matplotlib is not installed: skipping the plot")
        return
    fig, axes = plt.subplots(1, len(cases), figsize=(6 * len(cases), 4.5), squeeze=False)
    for ax, case in zip(axes[0], cases):
        case_rows = [r for r in rows if (r.n_full, r.map, r.dtype) ==
                     (case["n_full"], case["map"], case["dtype"])]
        for impl, style in ((case["impl"], "-"), ("copy", "--")):
            points = sorted((r.threads, r.seconds * 1e3) for r in case_rows if r.impl == impl)
            label = impl if impl != "copy" else "copy of the least bytes"
            ax.plot(*zip(*points), marker="o", linestyle=style, label=label)
            if impl != "copy":
                t0, ms0 = points[0]
                ax.plot([t for t, _ in points], [ms0 * t0 / t for t, _ in points],
                        color="grey", linestyle=":", label="ideal scaling")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xticks(case["threads"])
        ax.set_xticklabels([str(t) for t in case["threads"]])
        ax.minorticks_off()
        ax.set_title(f"N_full = {fmt_size(case['n_full'])}, {case['map']}, {case['dtype']}")
        ax.set_xlabel("threads")
        ax.set_ylabel("time per call (ms)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize="small")
    save_figure(fig, plt, path, f"sfer {info['sfer']} thread scaling — {info['cpu_model']}, "
                f"{info['usable_cpus']} CPUs")


def replot_scaling(json_path: str, plot_path: str) -> int:
    """--replot: the scaling plot from a --scaling --json file (for a run on a machine
    without matplotlib)."""
    with open(json_path, encoding="utf-8") as f:
        payload = json.load(f)
    rows = [Row(**r) for r in payload["results"]]
    plot_scaling(plot_path, payload["cases"], rows, payload["machine"])
    return 0


def main_scaling(args: argparse.Namespace) -> int:
    """--scaling: thread scaling of sfer with out=, beside a copy on as many threads."""
    budget = args.repeat_seconds if args.repeat_seconds is not None else (
        QUICK_REPEAT_SECONDS if args.quick else SCALING_REPEAT_SECONDS)
    threads = sorted(set(args.threads or default_scaling_threads()))
    case_list = scaling_cases(args.sizes, args.maps, args.dtypes)
    use_out = sfer_accepts_out()
    info = machine_info("not imported (--scaling)", use_out)
    if not use_out:
        progress("sfer has no out= parameter: timing it without out=")

    rows: List[Row] = []
    cases: List[Dict[str, Any]] = []
    warnings: List[str] = []
    with ThreadPoolExecutor(max_workers=max(1, max(threads) - 1)) as pool:
        for exponent, map_kind, dtype_name in case_list:
            case_rows, summary, case_warnings = bench_scaling_case(
                exponent, map_kind, dtype_name, threads, use_out, pool, budget)
            rows += case_rows
            cases.append(summary)
            warnings += case_warnings

    report = scaling_report(info, cases, rows, warnings, budget)
    sys.stdout.write(report)
    sys.stdout.flush()
    if args.markdown:
        ensure_parent(args.markdown)
        with open(args.markdown, "w", encoding="utf-8") as f:
            f.write(report)
    if args.json:
        config = {"mode": "scaling",
                  "cases": [{"exponent": e, "map": m, "dtype": d} for e, m, d in case_list],
                  "threads": threads, "repeat_seconds": budget, "seed": SEED,
                  "keep_probability": KEEP_PROBABILITY, "rounds": ROUNDS,
                  "max_repeats": MAX_REPEATS, "min_sample_seconds": MIN_SAMPLE_SECONDS,
                  "reference_threads": SCALING_REFERENCE_THREADS}
        dump_json(args.json, {"machine": info, "config": config, "cases": cases,
                              "results": [asdict(row) for row in rows],
                              "warnings": warnings, "peak_rss_gb": peak_rss_gb()})
    plot_path = DEFAULT_SCALING_PLOT if args.plot is None else args.plot
    if plot_path:
        plot_scaling(plot_path, cases, rows, info)
    for warning in warnings:
        progress(f"WARNING: {warning}")
    return 1 if warnings else 0


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
    parser.add_argument("--scaling", action="store_true",
                        help="thread scaling instead of the matrix: sfer with out= at every "
                             "--threads count beside a copy on as many threads, on 1e7 "
                             "shuffled and 1e8 increasing float32 (no NumPy or TF timed)")
    parser.add_argument("--sizes", type=csv_list(range(0, 10), int), metavar="EXPS",
                        help="N_full exponents, e.g. 3,4,5 for 10^3, 10^4, 10^5 "
                             "(default 3..8; 3..6 with --quick; --scaling: replaces the "
                             "cases' sizes)")
    parser.add_argument("--quick", action="store_true",
                        help=f"sizes 10^3..10^6, ~{QUICK_REPEAT_SECONDS:g} s per row, "
                             f"{QUICK_COPY_BYTES / 1e9:g} GB copy baseline (--scaling: "
                             f"only the ~{QUICK_REPEAT_SECONDS:g} s per row)")
    parser.add_argument("--dtypes", type=csv_list(DTYPES),
                        help="comma-separated, default float32,float64 (--scaling: replaces "
                             "the cases' dtype)")
    parser.add_argument("--maps", type=csv_list(MAP_KINDS),
                        help="comma-separated, default increasing,shuffled (--scaling: "
                             "replaces the cases' maps)")
    parser.add_argument("--threads", type=csv_list(None, positive_int),
                        help="sfer thread counts, default 1,2 (--scaling: 1,2,4,... up to "
                             "the usable CPUs, and those)")
    parser.add_argument("--repeat-seconds", type=float, metavar="S",
                        help=f"timing budget per row (default {REPEAT_SECONDS:g}; "
                             f"--scaling {SCALING_REPEAT_SECONDS:g}; "
                             f"{QUICK_REPEAT_SECONDS:g} with --quick)")
    parser.add_argument("--markdown", metavar="FILE", help="also write the report here")
    parser.add_argument("--json", metavar="FILE", help="write machine-readable results here")
    parser.add_argument("--plot", metavar="FILE",
                        help="PNG plot path (default benchmarks/results/throughput.png; "
                             "--scaling: benchmarks/results/scaling.png; '' for none)")
    parser.add_argument("--replot", metavar="JSON",
                        help="draw the --scaling plot (--plot FILE) from a --scaling --json "
                             "file and exit")
    parser.add_argument("--no-tf", action="store_true", help="do not time TensorFlow")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    if args.replot:
        return replot_scaling(args.replot, args.plot or DEFAULT_SCALING_PLOT)
    if args.scaling:
        return main_scaling(args)
    args.maps = args.maps or list(MAP_KINDS)
    args.dtypes = args.dtypes or list(DTYPES)
    args.threads = args.threads or [1, 2]
    args.plot = DEFAULT_PLOT if args.plot is None else args.plot
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
