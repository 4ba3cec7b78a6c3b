#!/usr/bin/env python3
"""Benchmark ``sfer.sparse_fill_empty_rows`` against ``tf.raw_ops.SparseFillEmptyRows``.

Four cases (float32 values, rank R = 2, about 2 entries per non-empty row), each with the
issue's target for the ratio TF time / sfer time:

* ``small``     -- 500 rows, 10% empty (N ~ 900), rows sorted:          sfer >= 8x faster
* ``sorted``    -- 5e6 rows, 10% empty (N ~ 9e6), rows sorted:          >= 6x, and one thread
                   within 1.0x the NumPy floor
* ``shuffled``  -- the same entries randomly permuted:                  >= 8x
* ``no-empty``  -- 5e6 rows, none empty (N ~ 1e7), rows sorted:          >= 2x (both ops take
                   their fast path: the outputs are the inputs)

TensorFlow runs in a process of its own (``--tf-python PATH``, an interpreter with TensorFlow
installed; without it TF is skipped with a note).  Importing TensorFlow, or running one op,
starts thread pools that spin and slow other threads of the same process by 2x or more, so
this process never imports it: it starts ``PATH bench_fill.py --tf-worker``, which loads each
case's inputs from .npy files written here, saves its outputs as .npy files (sfer's must equal
them bit for bit), and takes timing samples when asked, over a pipe.  The two processes take
turns, in interleaved rounds (TF's samples, then sfer's, then TF's, ...), so that drift in the
machine's speed falls on both.

Beside sfer, in the same rounds, two floors (one thread, NumPy only; see ``make_floors``):

* the **NumPy floor**: ``np.empty`` of the four outputs, slice assignments of ``indices`` and
  ``values`` into the first N slots, ``empty_row_indicator`` and ``reverse_index_map`` filled
  (each output byte written once, each input byte read once);
* the **call floor**: the four ``np.empty`` calls and the FillResult tuple, nothing written.

sfer is timed with ``num_threads=None`` (the default; the targets are judged on it) and with
each ``--threads`` count, beside a parallel ``np.copyto`` of the case's least bytes (the copy
baseline of ``bench.py``, imported from it).

Output: a Markdown report on stdout and, for a full run of every case, in
``benchmarks/results/fill.md``, with ``fill.json`` and ``fill.png`` beside it.  Progress goes
to stderr.  The exit status is 1 if any output differs from TensorFlow's (or, without TF,
from ``sfer.reference``'s).  See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import functools
import gc
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from time import perf_counter
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results")
#: The timing loop (stdlib only) is sfer._timing's; the TF worker, where sfer's extension is
#: not importable, loads the file by path.
TIMING_PY = os.path.join(HERE, os.pardir, "sfer", "_timing.py")

SEED = 20240612
COLUMNS = 1000  # dense_shape[1]; column indices are uniform in [0, COLUMNS)
DEFAULT_VALUE = np.float32(-1.0)
#: the op's inputs as saved for the TF worker, and its outputs in FillResult's order
INPUTS = ("indices", "values", "dense_shape", "default_value")
OUTPUTS = ("output_indices", "output_values", "empty_row_indicator", "reverse_index_map")

#: interleaved rounds per case: at least ROUNDS (so at least this many samples of everything),
#: more (up to MAX_ROUNDS) when even the slowest contender's sample fits that many times in the
#: budget; shorter rounds interleave the contenders more finely
ROUNDS = 7
MAX_ROUNDS = 25
SAMPLE_SECONDS = 0.01  # calls shorter than this are timed in batches (one sample = a batch)
REPEAT_SECONDS = 3.0  # timing budget per contender and case
QUICK_REPEAT_SECONDS = 0.5
QUICK_ROWS = 500_000  # --quick: the large cases' dense rows (5e6 otherwise)
COPY_MIN_BYTES = 10_000_000  # cases moving fewer least bytes time no copy baseline
TF_IMPLS = ("op", "op+numpy")  # see tf_worker


@dataclass(frozen=True)
class Case:
    name: str
    dense_rows: int
    empty_fraction: float  # each row is empty with this probability
    order: str  # "sorted": rows non-decreasing; "shuffled": the sorted entries permuted
    target_vs_tf: float  # TF time / sfer time, at least
    target_copy: Optional[float] = None  # copy time / sfer time (fraction of copy BW), at least
    target_floor: Optional[float] = None  # sfer 1 thread / NumPy floor, at most


CASES = (
    Case("small", 500, 0.1, "sorted", 8.0),
    Case("sorted", 5_000_000, 0.1, "sorted", 6.0, None, 1.0),
    Case("shuffled", 5_000_000, 0.1, "shuffled", 8.0),
    Case("no-empty", 5_000_000, 0.0, "sorted", 2.0),
)
CASE_NAMES = tuple(case.name for case in CASES)


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def git_version(path: str) -> Optional[str]:
    """``git describe --always --dirty`` of the checkout holding ``path`` (None if not one)."""
    try:
        out = subprocess.run(["git", "-C", os.path.dirname(os.path.realpath(path)), "describe",
                              "--always", "--dirty"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def load_timing() -> Any:
    """sfer/_timing.py as a module of its own (no need for sfer's extension)."""
    spec = importlib.util.spec_from_file_location("_sfer_timing", TIMING_PY)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses looks the module up
    spec.loader.exec_module(module)
    return module


# --------------------------------------------------------------------------------------------
# The TensorFlow worker (runs under --tf-python; imports neither sfer nor bench.py)
# --------------------------------------------------------------------------------------------

def tf_worker() -> int:
    """Serve the main process over stdin/stdout, one JSON request and reply per line.

    * ``{"cmd": "load", "dir": D}``: load D's inputs into CPU tensors (outside any timed
      region), call the op once and save its outputs as ``D/tf_<output>.npy``, then calibrate
      both timed functions (each calibration is one more call).
    * ``{"cmd": "time", "impl": "op" | "op+numpy", "repeats": K}``: K samples.

    The timed functions: ``op`` is the eager call of ``tf.raw_ops.SparseFillEmptyRows`` alone.
    Eager execution is synchronous here (the hello reply reports
    ``tf.config.experimental.get_synchronous_execution()``): the CPU kernel has run and its
    outputs exist when the call returns, so nothing is left to force.  ``op+numpy`` also
    converts all four outputs with ``.numpy()``, which copies them (measured: the arrays own
    their data); it is reported beside ``op`` for information, while the ratios use ``op``,
    since a TensorFlow program keeps the tensors.
    """
    protocol = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # anything TensorFlow prints goes to stderr, not into the protocol
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    timing = load_timing()
    import tensorflow as tf

    def reply(payload: Dict[str, Any]) -> None:
        protocol.write(json.dumps(payload) + "\n")

    reply({"tensorflow": tf.__version__, "numpy": np.__version__,
           "synchronous": bool(tf.config.experimental.get_synchronous_execution())})
    fns: Dict[str, Callable[[], Any]] = {}
    plans: Dict[str, Tuple[float, int]] = {}
    with tf.device("/CPU:0"):
        for line in sys.stdin:
            request = json.loads(line)
            try:
                if request["cmd"] == "load":
                    fns.clear()
                    gc.collect()
                    folder = request["dir"]
                    tensors = {name: tf.constant(np.load(os.path.join(folder, name + ".npy")))
                               for name in INPUTS}

                    def op(t: Dict[str, Any] = tensors) -> Any:
                        return tf.raw_ops.SparseFillEmptyRows(
                            indices=t["indices"], values=t["values"],
                            dense_shape=t["dense_shape"], default_value=t["default_value"])

                    def op_numpy() -> Any:
                        return [output.numpy() for output in op()]

                    result = op()
                    for name in OUTPUTS:
                        np.save(os.path.join(folder, f"tf_{name}.npy"),
                                getattr(result, name).numpy())
                    del result
                    fns.update({"op": op, "op+numpy": op_numpy})
                    plans.update({impl: timing.calibrate(fns[impl], request["sample_seconds"])
                                  for impl in TF_IMPLS})
                    reply({"plans": plans})
                elif request["cmd"] == "time":
                    impl = request["impl"]
                    reply({"samples": timing.take_samples(fns[impl], plans[impl][1],
                                                          request["repeats"])})
                else:
                    reply({"error": f"unknown command {request['cmd']!r}"})
            except Exception as exc:  # reported to the main process, which stops
                reply({"error": f"{type(exc).__name__}: {exc}"})
    return 0


class TFWorker:
    """The main process's handle on the TF worker subprocess."""

    def __init__(self, python: str) -> None:
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
        env.pop("PYTHONPATH", None)  # the worker needs neither sfer nor this checkout
        self.proc = subprocess.Popen([python, os.path.abspath(__file__), "--tf-worker"],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                     env=env, cwd=HERE)
        self.hello = self._read()

    def _read(self) -> Dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the TF worker exited (status {self.proc.wait()}); its "
                               "messages are above")
        payload = json.loads(line)
        if "error" in payload:
            raise RuntimeError(f"TF worker: {payload['error']}")
        return payload

    def request(self, **request: Any) -> Dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        return self._read()

    def cpu_seconds(self) -> Optional[float]:
        """The worker's user + system CPU time so far (Linux; None elsewhere)."""
        try:
            with open(f"/proc/{self.proc.pid}/stat", encoding="ascii") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, ValueError, IndexError):
            return None

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


# --------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------

def make_inputs(case: Case, dense_rows: int) -> Dict[str, np.ndarray]:
    """The case's inputs (deterministic): each row empty with probability empty_fraction,
    else 1, 2 or 3 entries (uniform, mean 2); uniform column indices in [0, COLUMNS) (in no
    order within a row: neither op looks at them); standard-normal float32 values.  The
    ``shuffled`` order permutes the entries of the ``sorted`` one (the same seed)."""
    rng = np.random.default_rng([SEED, dense_rows, round(case.empty_fraction * 1000)])
    empty = rng.random(dense_rows) < case.empty_fraction
    counts = np.where(empty, 0, rng.integers(1, 4, dense_rows))
    rows = np.repeat(np.arange(dense_rows, dtype=np.int64), counts)
    n = rows.shape[0]
    indices = np.empty((n, 2), dtype=np.int64)
    indices[:, 0] = rows
    indices[:, 1] = rng.integers(0, COLUMNS, n)
    del rows
    values = rng.standard_normal(n, dtype=np.float32)
    if case.order == "shuffled":
        perm = rng.permutation(n)
        indices, values = indices[perm], values[perm]
    return {"indices": indices, "values": values,
            "dense_shape": np.array([dense_rows, COLUMNS], dtype=np.int64),
            "default_value": np.array(DEFAULT_VALUE)}


def least_bytes(n: int, n_full: int, rank: int, dense_rows: int, itemsize: int = 4) -> int:
    """Read indices and values once, write the four outputs once."""
    return (n * rank * 8 + n * itemsize  # indices, values
            + n_full * rank * 8 + n_full * itemsize  # output_indices, output_values
            + n * 8 + dense_rows)  # reverse_index_map, empty_row_indicator


# --------------------------------------------------------------------------------------------
# One case
# --------------------------------------------------------------------------------------------

def compare(result: Any, expected: Dict[str, np.ndarray]) -> List[str]:
    """Problems of sfer's outputs against the expected ones: dtype, shape and bytes."""
    problems = []
    for name in OUTPUTS:
        got, want = np.ascontiguousarray(getattr(result, name)), expected[name]
        if got.dtype != want.dtype or got.shape != want.shape:
            problems.append(f"{name}: {got.dtype}{list(got.shape)} vs "
                            f"{want.dtype}{list(want.shape)}")
        elif got.size and not np.array_equal(got.view(np.uint8), want.view(np.uint8)):
            rows = got.shape[0]
            differ = (got.view(np.uint8).reshape(rows, -1)
                      != want.view(np.uint8).reshape(rows, -1)).any(axis=1)
            bad = np.flatnonzero(differ)
            problems.append(f"{name}: {bad.size} of {rows} rows differ in their bytes, the "
                            f"first at {bad[0]}: {got[bad[0]]!r} vs {want[bad[0]]!r}")
    return problems


def make_floors(inputs: Dict[str, np.ndarray],
                n_full: int) -> List[Tuple[str, Callable[[], Any]]]:
    """The NumPy floor and the call floor of a case (one thread each; see the header)."""
    from sfer._result import FillResult

    indices, values = inputs["indices"], inputs["values"]
    n, rank = indices.shape
    rows = int(inputs["dense_shape"][0])
    new = tuple.__new__

    def numpy_floor() -> Any:
        out_ind = np.empty((n_full, rank), np.int64)
        out_vals = np.empty(n_full, values.dtype)
        empty = np.empty(rows, np.bool_)
        rim = np.empty(n, np.int64)
        out_ind[:n] = indices
        out_vals[:n] = values
        empty[:] = False
        rim[:] = 0
        return new(FillResult, (out_ind, out_vals, empty, rim))

    def call_floor() -> Any:
        return new(FillResult, (np.empty((n_full, rank), np.int64),
                                np.empty(n_full, values.dtype), np.empty(rows, np.bool_),
                                np.empty(n, np.int64)))

    return [("numpy floor", numpy_floor), ("call floor", call_floor)]


def stats(samples: Sequence[float], number: int) -> Dict[str, Any]:
    """Median and quartiles of seconds per call, and the samples themselves (in the order
    taken: the spread on a shared machine is often bimodal, which quartiles hide)."""
    q25, median, q75 = np.percentile(samples, [25, 50, 75])
    return {"median": float(median), "q25": float(q25), "q75": float(q75),
            "samples": len(samples), "calls_per_sample": number,
            "sample_seconds": [float(x) for x in samples]}


def thread_label(nthreads: Optional[int]) -> str:
    return "default" if nthreads is None else str(nthreads)


def bench_case(case: Case, dense_rows: int, configs: Sequence[Optional[int]],
               worker: Optional[TFWorker], budget: float, copy_threads: int,
               pool: ThreadPoolExecutor, tmp: str) -> Tuple[Dict[str, Any], List[str]]:
    """Verify and time one case; returns its record and its problems."""
    import sfer
    from bench import copy_buffers, make_copy  # the grad benchmark's copy baseline
    from sfer._timing import calibrate, take_samples

    progress(f"{case.name}: generating {dense_rows:,} rows")
    inputs = make_inputs(case, dense_rows)
    n = inputs["indices"].shape[0]
    for name, array in inputs.items():
        np.save(os.path.join(tmp, name + ".npy"), array)

    def run(nthreads: Optional[int]) -> Any:
        return sfer.sparse_fill_empty_rows(**inputs, num_threads=nthreads)

    tf_plans: Dict[str, Tuple[float, int]] = {}
    if worker is not None:
        progress(f"{case.name}: N = {n:,}; TensorFlow loads the inputs and runs the op")
        tf_plans = {k: tuple(v) for k, v in worker.request(
            cmd="load", dir=tmp, sample_seconds=SAMPLE_SECONDS)["plans"].items()}
        expected = {name: np.load(os.path.join(tmp, f"tf_{name}.npy")) for name in OUTPUTS}
        oracle = "TensorFlow"
    else:
        progress(f"{case.name}: N = {n:,}; computing sfer.reference's outputs")
        expected = dict(zip(OUTPUTS, sfer.reference.sparse_fill_empty_rows(**inputs)))
        oracle = "sfer.reference"
    n_full = int(expected["output_values"].shape[0])

    # Verify every thread count (each first call is also its warm-up).
    problems: List[str] = []
    ran: Dict[str, Optional[int]] = {}
    fast_path = None
    last_threads = getattr(sfer._runtime, "_last_threads", None)  # a test hook
    for nthreads in configs:
        result = run(nthreads)
        ran[thread_label(nthreads)] = int(last_threads()) if last_threads else None
        fast_path = not result.output_indices.flags.writeable  # the fast path returns views
        problems += [f"{case.name}: sfer num_threads={thread_label(nthreads)} vs {oracle}: {p}"
                     for p in compare(result, expected)]
        del result
    del expected
    for name in os.listdir(tmp):
        os.remove(os.path.join(tmp, name))
    gc.collect()

    nbytes = least_bytes(n, n_full, 2, dense_rows)
    local: List[Tuple[str, Callable[[], Any]]] = [
        (f"sfer {thread_label(t)}", functools.partial(run, t)) for t in configs]
    local += make_floors(inputs, n_full)
    buffers = None
    if nbytes >= COPY_MIN_BYTES:
        # np.copyto of nbytes / 2 bytes moves nbytes (read + write), the case's least traffic
        buffers = copy_buffers(nbytes // 2)
        copy = make_copy(nbytes // 2, copy_threads, buffers, pool)
        copy()  # warm-up
        local.append(("copy", copy))
    plans = {label: calibrate(fn, SAMPLE_SECONDS) for label, fn in local}
    plans.update(tf_plans)

    slowest = max(single * number for single, number in plans.values())
    rounds = int(min(MAX_ROUNDS, max(ROUNDS, budget // slowest)))

    def per_round(label: str) -> int:
        single, number = plans[label]
        return max(1, int(budget / rounds // (single * number)))

    progress(f"{case.name}: timing {', '.join(plans)} in {rounds} interleaved rounds")
    samples: Dict[str, List[float]] = {label: [] for label in plans}
    worker_cpu, local_wall = 0.0, 0.0
    for r in range(rounds):
        for part in (("tf", "local") if r % 2 == 0 else ("local", "tf")):
            if part == "tf" and worker is not None:
                for k in range(len(TF_IMPLS)):
                    impl = TF_IMPLS[(k + r) % len(TF_IMPLS)]
                    samples[impl] += worker.request(cmd="time", impl=impl,
                                                    repeats=per_round(impl))["samples"]
            elif part == "local":
                cpu0 = worker.cpu_seconds() if worker is not None else None
                t0 = perf_counter()
                for k in range(len(local)):
                    label, fn = local[(k + r) % len(local)]
                    samples[label] += take_samples(fn, plans[label][1], per_round(label))
                local_wall += perf_counter() - t0
                cpu1 = worker.cpu_seconds() if worker is not None else None
                if cpu0 is not None and cpu1 is not None:
                    worker_cpu += cpu1 - cpu0
    del local, buffers, inputs
    gc.collect()

    timings = {label: stats(s, plans[label][1]) for label, s in samples.items()}
    tf_seconds = timings["op"]["median"] if "op" in timings else None
    sfer_rows = {}
    for nthreads in configs:
        label = thread_label(nthreads)
        seconds = timings[f"sfer {label}"]["median"]
        sfer_rows[label] = {
            "seconds": seconds, "ran_threads": ran[label],
            "ratio_vs_tf": tf_seconds / seconds if tf_seconds else None,
            "gbs": nbytes / seconds / 1e9,
            "fraction_of_copy": (timings["copy"]["median"] / seconds
                                 if "copy" in timings else None),
            "vs_numpy_floor": seconds / timings["numpy floor"]["median"],
            "vs_call_floor": seconds / timings["call floor"]["median"]}
    default = sfer_rows["default"]
    record = {
        "case": case.name, "order": case.order, "empty_fraction": case.empty_fraction,
        "dense_rows": dense_rows, "n": n, "n_full": n_full, "rank": 2, "values": "float32",
        "empty_rows": n_full - n, "least_bytes": nbytes, "sfer_fast_path": fast_path,
        "oracle": oracle, "verified": not problems,
        "tf_seconds": tf_seconds,
        "numpy_floor_seconds": timings["numpy floor"]["median"],
        "call_floor_seconds": timings["call floor"]["median"],
        "target_floor": case.target_floor,
        "met_floor": (sfer_rows["1"]["vs_numpy_floor"] <= case.target_floor
                      if case.target_floor is not None and "1" in sfer_rows else None),
        "tf_numpy_seconds": timings["op+numpy"]["median"] if "op+numpy" in timings else None,
        "sfer": sfer_rows,
        "copy_threads": copy_threads if "copy" in timings else None,
        "copy_gbs": nbytes / timings["copy"]["median"] / 1e9 if "copy" in timings else None,
        "target_vs_tf": case.target_vs_tf,
        "met_vs_tf": (default["ratio_vs_tf"] >= case.target_vs_tf
                      if default["ratio_vs_tf"] is not None else None),
        "target_copy": case.target_copy,
        "met_copy": (default["fraction_of_copy"] >= case.target_copy
                     if case.target_copy is not None and default["fraction_of_copy"] is not None
                     else None),
        "rounds": rounds,
        "tf_worker_cpu_share_while_sfer_timed": (worker_cpu / local_wall
                                                  if worker is not None and local_wall else None),
        "timings": timings,
        "problems": problems,
    }
    return record, problems


# --------------------------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------------------------

def fmt_ms(seconds: Optional[float]) -> str:
    if seconds is None:
        return "–"
    if seconds >= 1:
        return f"{seconds:.3g} s"
    ms = seconds * 1e3
    return f"{ms:.3g} ms" if ms >= 1 else f"{ms * 1e3:.3g} µs"


def fmt_met(met: Optional[bool]) -> str:
    return "–" if met is None else ("yes" if met else "**no**")


def header_lines(info: Dict[str, Any], budget: float, quick: bool) -> List[str]:
    memory = f", {info['memory_gib']:.1f} GiB RAM" if info["memory_gib"] else ""
    lines = [
        "# sfer benchmark: SparseFillEmptyRows (forward op) vs TensorFlow",
        "",
        f"- Date: {info['date']}",
        f"- CPU: {info['cpu_model']} ({info['logical_cpus']} logical CPUs, "
        f"{info['usable_cpus']} usable{memory})",
        f"- Python {info['python']}, NumPy {info['numpy']}; TensorFlow {info['tensorflow']}",
        f"- sfer {info['sfer']}"
        + (f" (git {info['sfer_git']})" if info["sfer_git"] else "")
        + f", `sfer.openmp_enabled()` = {info['sfer_openmp_enabled']}, "
        f"default thread count `sfer.get_num_threads()` = {info['sfer_default_threads']}"
        + (f", OMP_NUM_THREADS={info['OMP_NUM_THREADS']}" if info["OMP_NUM_THREADS"] else ""),
        "- Data: float32 values (standard normal), int64 indices of rank 2, each row empty with "
        "the case's probability, else 1-3 entries (mean 2); `shuffled` permutes the entries of "
        f"`sorted`; default_value {float(DEFAULT_VALUE)}; seed {SEED}",
        "- TF: `tf.raw_ops.SparseFillEmptyRows` on CPU tensors made beforehand, eager and "
        "synchronous, in a process of its own; **TF op** times the call alone (the kernel has "
        "finished when it returns), **TF + .numpy()** also converts the four outputs (a copy); "
        "ratios use TF op",
        "- sfer: `sfer.sparse_fill_empty_rows(..., num_threads=T)`, NumPy arrays in and out; "
        "`default` is `num_threads=None`, on which the targets are judged",
        f"- Timing: median per call; {ROUNDS} to {MAX_ROUNDS} rounds per case (as many as the "
        "slowest contender's samples allow), each taking samples of TF (in its process) and "
        "of sfer and the copy (in this one) in turn, alternating which goes first; "
        f"~{budget:g} s of samples per contender; calls under "
        f"{SAMPLE_SECONDS * 1e3:g} ms timed in batches; GC off while timing",
        "- least bytes = indices N·R·8 + values N·4 (read) + output_indices N_full·R·8 + "
        "output_values N_full·4 + reverse_index_map N·8 + empty_row_indicator rows (written); "
        "GB/s = least bytes / time",
        "- copy: `np.copyto` of half the least bytes (so it moves them all, read + write), "
        "split over the copy's threads (bench.py's `make_copy`), timed in the same rounds; "
        "% of copy = copy time / sfer time",
    ]
    if quick:
        lines.append(f"- **--quick**: the large cases have {QUICK_ROWS:,} rows instead of "
                     "5e6, so their targets (set for 5e6) are only indicative")
    return lines


def floor_lines(records: List[Dict[str, Any]], labels: Sequence[str]) -> List[str]:
    """The floors' table: sfer's time over the NumPy floor's and the call floor's."""
    lines = [
        "",
        "## sfer against the floors (one run: the same rounds)",
        "",
        "| case | NumPy floor | call floor | "
        + " | ".join(f"sfer {lbl} / NumPy floor" for lbl in labels) + " | "
        + " | ".join(f"sfer {lbl} / call floor" for lbl in labels)
        + " | target (1 thr / NumPy floor) | met |",
        "|---|---:|---:|" + "---:|" * (2 * len(labels)) + "---|---|",
    ]
    for rec in records:
        cells = [f"{rec['sfer'][lbl]['vs_numpy_floor']:.2f}×" for lbl in labels]
        cells += [f"{rec['sfer'][lbl]['vs_call_floor']:.2f}×" for lbl in labels]
        target = "–" if rec["target_floor"] is None else f"≤ {rec['target_floor']:g}×"
        lines.append(f"| {rec['case']} | {fmt_ms(rec['numpy_floor_seconds'])} "
                     f"| {fmt_ms(rec['call_floor_seconds'])} | " + " | ".join(cells)
                     + f" | {target} | {fmt_met(rec['met_floor'])} |")
    lines += ["", "NumPy floor: np.empty of the four outputs, indices and values copied into "
              "them by slice assignment, the two flags filled (one thread). Call floor: the "
              "four np.empty calls and the FillResult tuple."]
    return lines


def markdown_report(info: Dict[str, Any], records: List[Dict[str, Any]],
                    configs: Sequence[Optional[int]], problems: List[str], budget: float,
                    quick: bool) -> str:
    labels = [thread_label(t) for t in configs]
    lines = header_lines(info, budget, quick) + [
        "",
        "## Time per call, and TF / sfer",
        "",
        "| case | rows | N | N_full | TF op | TF + .numpy() | "
        + " | ".join(f"sfer {lbl}" for lbl in labels)
        + " | TF / sfer (" + ", ".join(labels) + ") | target | met | outputs |",
        "|---|---:|---:|---:|---:|---:|" + "---:|" * len(labels) + "---|---:|---|---|",
    ]
    for rec in records:
        cells = []
        for lbl in labels:
            row = rec["sfer"][lbl]
            ran = f" ({row['ran_threads']} thr)" if row["ran_threads"] is not None and (
                lbl == "default" or row["ran_threads"] != int(lbl)) else ""
            cells.append(fmt_ms(row["seconds"]) + ran)
        ratios = ", ".join("–" if rec["sfer"][lbl]["ratio_vs_tf"] is None
                           else f"{rec['sfer'][lbl]['ratio_vs_tf']:.2f}×" for lbl in labels)
        lines.append(
            f"| {rec['case']} | {rec['dense_rows']:,} | {rec['n']:,} | {rec['n_full']:,} "
            f"| {fmt_ms(rec['tf_seconds'])} | {fmt_ms(rec['tf_numpy_seconds'])} | "
            + " | ".join(cells)
            + f" | {ratios} | ≥ {rec['target_vs_tf']:g}× | {fmt_met(rec['met_vs_tf'])} "
            + ("| = " + rec["oracle"] if rec["verified"] else "| ⚠ **MISMATCH**") + " |")
    lines += ["", "(k thr): the thread count sfer's call ran with, shown for `default` and where "
              "it differs from the request (small inputs run on one thread). TensorFlow's CPU "
              "kernel is a serial loop. `met` compares TF / sfer default with the target."]
    lines += floor_lines(records, labels)
    copy_records = [rec for rec in records if rec["copy_gbs"] is not None]
    if copy_records:
        lines += [
            "",
            "## Bandwidth by least bytes moved",
            "",
            "| case | least bytes | copy threads | copy GB/s | "
            + " | ".join(f"sfer {lbl} GB/s (% of copy)" for lbl in labels)
            + " | target | met |",
            "|---|---:|---:|---:|" + "---:|" * len(labels) + "---|---|",
        ]
        for rec in copy_records:
            cells = [f"{rec['sfer'][lbl]['gbs']:.2f} "
                     f"({100 * rec['sfer'][lbl]['fraction_of_copy']:.0f}%)" for lbl in labels]
            target = "–" if rec["target_copy"] is None else f"≥ {100 * rec['target_copy']:.0f}%"
            lines.append(f"| {rec['case']} | {rec['least_bytes'] / 1e6:.0f} MB "
                         f"| {rec['copy_threads']} | {rec['copy_gbs']:.2f} | "
                         + " | ".join(cells) + f" | {target} | {fmt_met(rec['met_copy'])} |")
    lines += [
        "",
        "## Spread of the samples",
        "",
        "Interquartile range / median, and samples × calls per sample.",
        "",
        "| case | " + " | ".join(["TF op", "TF + .numpy()"] + [f"sfer {lbl}" for lbl in labels]
                                 + ["copy", "numpy floor", "call floor"])
        + " | TF worker CPU while sfer ran |",
        "|---|" + "---:|" * (len(labels) + 6),
    ]
    for rec in records:
        cells = []
        for key in (["op", "op+numpy"] + [f"sfer {lbl}" for lbl in labels]
                    + ["copy", "numpy floor", "call floor"]):
            t = rec["timings"].get(key)
            cells.append("–" if t is None else
                         f"{100 * (t['q75'] - t['q25']) / t['median']:.0f}% "
                         f"({t['samples']}×{t['calls_per_sample']})")
        share = rec["tf_worker_cpu_share_while_sfer_timed"]
        lines.append(f"| {rec['case']} | " + " | ".join(cells)
                     + f" | {'–' if share is None else f'{100 * share:.1f}%'} |")
    lines.append("")
    if problems:
        lines += [f"**⚠ {len(problems)} MISMATCH(ES):**", ""] + [f"- {p}" for p in problems]
    else:
        oracles = sorted({rec["oracle"] for rec in records})
        lines.append(f"Verified: in every case, at every thread count, sfer's four outputs are "
                     f"bit-identical to {' and '.join(oracles)}'s (dtype, shape and bytes).")
    return "\n".join(lines) + "\n"


def plot(path: str, records: List[Dict[str, Any]], configs: Sequence[Optional[int]],
         info: Dict[str, Any]) -> None:
    """TF / sfer per case and thread count, with each case's target."""
    from bench import save_figure
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        progress("matplotlib is not installed: skipping the plot")
        return
    records = [rec for rec in records if rec["tf_seconds"] is not None]
    if not records:
        progress("no TensorFlow timings: skipping the plot")
        return
    labels = [thread_label(t) for t in configs]
    width = 0.8 / len(labels)
    fig, ax = plt.subplots(figsize=(1.8 * len(records) + 3, 4.5))
    for j, lbl in enumerate(labels):
        xs = [i - 0.4 + width * (j + 0.5) for i in range(len(records))]
        ax.bar(xs, [rec["sfer"][lbl]["ratio_vs_tf"] for rec in records], width,
               label=f"sfer, num_threads={'None' if lbl == 'default' else lbl}")
    for i, rec in enumerate(records):
        ax.hlines(rec["target_vs_tf"], i - 0.45, i + 0.45, colors="black",
                  label="target (TF / sfer at least)" if i == 0 else "_nolegend_")
    ax.axhline(1.0, color="grey", linewidth=0.8, linestyle=":")
    ax.set_xticks(range(len(records)))
    ax.set_xticklabels([f"{rec['case']}\nN={rec['n']:,}" for rec in records])
    ax.set_ylabel("TF time / sfer time (higher is better)")
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize="small")
    save_figure(fig, plt, path, f"sfer {info['sfer']} SparseFillEmptyRows vs TF "
                f"{info['tensorflow']} — {info['cpu_model']}, {info['usable_cpus']} CPUs")


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    from bench import csv_list, positive_int
    parser = argparse.ArgumentParser(
        description="Benchmark sfer.sparse_fill_empty_rows against "
                    "tf.raw_ops.SparseFillEmptyRows; see benchmarks/README.md.")
    parser.add_argument("--tf-python", metavar="PATH",
                        help="a Python interpreter with TensorFlow, which times TF in a "
                             "process of its own (default: TF is skipped, and sfer is checked "
                             "against sfer.reference)")
    parser.add_argument("--cases", type=csv_list(CASE_NAMES),
                        help=f"comma-separated subset of {','.join(CASE_NAMES)} (default all)")
    parser.add_argument("--threads", type=csv_list(None, positive_int), default=[1, 2],
                        help="explicit num_threads values for sfer, besides None (default 1,2)")
    parser.add_argument("--quick", action="store_true",
                        help=f"{QUICK_ROWS:,} rows instead of 5e6 in the large cases, "
                             f"~{QUICK_REPEAT_SECONDS:g} s of samples per contender")
    parser.add_argument("--repeat-seconds", type=float, metavar="S",
                        help=f"timing budget per contender and case (default "
                             f"{REPEAT_SECONDS:g}; {QUICK_REPEAT_SECONDS:g} with --quick)")
    parser.add_argument("--markdown", metavar="FILE",
                        help="write the report here (default results/fill.md for a full run "
                             "of all cases, else none; '' for none)")
    parser.add_argument("--json", metavar="FILE",
                        help="machine-readable results (default results/fill.json likewise)")
    parser.add_argument("--plot", metavar="FILE",
                        help="PNG plot (default results/fill.png likewise)")
    parser.add_argument("--tf-worker", action="store_true", help=argparse.SUPPRESS)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    if argv is None and sys.argv[1:] == ["--tf-worker"]:
        return tf_worker()  # before importing bench.py, which imports sfer
    sys.path.insert(0, HERE)
    try:
        import bench  # imports sfer
        import sfer
    except ImportError as exc:
        sys.exit(f"bench_fill.py: {exc}. Build sfer and make it importable "
                 "(see benchmarks/README.md).")

    args = build_parser().parse_args(argv)
    cases = [case for case in CASES if args.cases is None or case.name in args.cases]
    budget = args.repeat_seconds if args.repeat_seconds is not None else (
        QUICK_REPEAT_SECONDS if args.quick else REPEAT_SECONDS)
    configs: List[Optional[int]] = [None] + sorted(set(args.threads))
    full_run = not args.quick and args.cases is None
    outputs = {}
    for key, ext in (("markdown", "md"), ("json", "json"), ("plot", "png")):
        given = getattr(args, key)
        outputs[key] = given if given is not None else (
            os.path.join(RESULTS, f"fill.{ext}") if full_run else "")

    worker = None
    if args.tf_python:
        progress(f"starting the TF worker: {args.tf_python}")
        worker = TFWorker(args.tf_python)
        tf_note = (f"{worker.hello['tensorflow']} (NumPy {worker.hello['numpy']}, eager "
                   f"{'synchronous' if worker.hello['synchronous'] else 'ASYNC'})")
        if not worker.hello["synchronous"]:
            progress("WARNING: TF's eager execution is asynchronous: 'TF op' times dispatch "
                     "only; trust 'TF + .numpy()'")
    else:
        tf_note = "skipped (no --tf-python)"
        progress("TensorFlow skipped (no --tf-python): only sfer is timed, and checked "
                 "against sfer.reference")
    info = bench.machine_info(tf_note, False)
    info.pop("sfer_accepts_out")
    info["sfer_default_threads"] = sfer.get_num_threads()
    info["sfer_git"] = git_version(sfer.__file__)  # the build being timed
    copy_threads = max([sfer.get_num_threads()] + [t for t in configs if t is not None])

    records: List[Dict[str, Any]] = []
    problems: List[str] = []
    try:
        with tempfile.TemporaryDirectory(prefix="sfer-bench-fill-") as tmp, \
                ThreadPoolExecutor(max_workers=max(1, copy_threads - 1)) as pool:
            for case in cases:
                rows = QUICK_ROWS if args.quick and case.dense_rows > QUICK_ROWS \
                    else case.dense_rows
                record, case_problems = bench_case(case, rows, configs, worker, budget,
                                                   copy_threads, pool, tmp)
                records.append(record)
                problems += case_problems
    finally:
        if worker is not None:
            worker.close()

    report = markdown_report(info, records, configs, problems, budget, args.quick)
    sys.stdout.write(report)
    sys.stdout.flush()
    if outputs["markdown"]:
        bench.ensure_parent(outputs["markdown"])
        with open(outputs["markdown"], "w", encoding="utf-8") as f:
            f.write(report)
    if outputs["json"]:
        config = {"cases": [case.name for case in cases], "threads": configs,
                  "quick": args.quick, "repeat_seconds": budget, "min_rounds": ROUNDS,
                  "max_rounds": MAX_ROUNDS,
                  "sample_seconds": SAMPLE_SECONDS, "seed": SEED, "columns": COLUMNS,
                  "default_value": float(DEFAULT_VALUE), "copy_threads": copy_threads}
        bench.dump_json(outputs["json"], {"machine": info, "config": config,
                                          "results": records, "problems": problems,
                                          "peak_rss_gb": bench.peak_rss_gb()})
    if outputs["plot"]:
        plot(outputs["plot"], records, configs, info)
    for problem in problems:
        progress(f"MISMATCH: {problem}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
