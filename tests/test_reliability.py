"""Reliability of both ops (sfer.sparse_fill_empty_rows_grad, "grad", and the forward op
sfer.sparse_fill_empty_rows, "fill"): fork safety, many Python threads, threadpoolctl, GIL
release, hostile input, 64-bit sizes, leaks, and inputs that are never written.

A probe that could hang or crash (fork + OpenMP, concurrent calls, malformed input, N_full above
2**31, read-only memory maps, thousands of calls) runs in a child interpreter with a time limit
(tests/_reliability_child.py, one mode per probe); the test then asserts on what the child
printed (one JSON line) and on its exit status, so a hang or a segfault is a test failure, not
a stuck or dead test run.

Environment: SFER_SANITIZE=1 (ci/sanitize.sh: ASan/UBSan) shrinks the largest inputs and
lengthens the time limits; SFER_ALLOW_SERIAL_BUILD=1 accepts a build without OpenMP.
"""

from __future__ import annotations

import array
import functools
import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import sfer
import sfer._runtime
from checks import assert_same_fill, check_result, fill_digest
from helpers import BFLOAT16, unaligned
from oracle import index_error_message
from sfer import reference

grad = sfer.sparse_fill_empty_rows_grad

TESTS_DIR = Path(__file__).resolve().parent
SANITIZE = os.environ.get("SFER_SANITIZE") == "1"
ALLOW_SERIAL = os.environ.get("SFER_ALLOW_SERIAL_BUILD") == "1"
SLOW = 4 if SANITIZE else 1  # time limits are multiplied by this under the sanitizers
#: the ASan runtime is preloaded (ci/sanitize.sh): no address-space limits, its own log files
UNDER_ASAN = SANITIZE or "asan" in os.environ.get("LD_PRELOAD", "")

#: the ops the parametrised probes call (tests/_reliability_child.py's OP)
OPS = ["grad", "fill"]

#: the probes run in a child interpreter: tests/_reliability_child.py MODE ARGS...
CHILD = TESTS_DIR / "_reliability_child.py"


def run_probe(tmp_path: Path, name: str, mode: str, *, timeout: float, args=(), env=None):
    """Run the child's probe ``mode`` in a new session, killing the whole session (pool workers
    and forked children included) after ``timeout`` seconds.  Returns the JSON object the probe
    printed on its last line of stdout; fails the test on a hang, a crash or a non-zero exit."""
    proc = subprocess.Popen(
        [sys.executable, str(CHILD), mode, *map(str, args)], cwd=tmp_path, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout * SLOW)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"probe {name} did not finish within {timeout * SLOW} s (a hang?)\n"
                    f"--- stdout\n{out[-3000:]}\n--- stderr\n{err[-3000:]}")
    if proc.returncode != 0:
        how = (f"killed by {signal.Signals(-proc.returncode).name}" if proc.returncode < 0
               else f"exit status {proc.returncode}")
        pytest.fail(f"probe {name} failed ({how})\n--- stdout\n{out[-3000:]}\n"
                    f"--- stderr\n{err[-5000:]}")
    lines = out.strip().splitlines()
    assert lines, f"probe {name} printed nothing; stderr:\n{err[-3000:]}"
    return json.loads(lines[-1])


# =============================================================================================
# 1. fork: a forked child runs serially (GNU libgomp would hang it), spawn keeps its threads
# =============================================================================================


def check_fork_report(report, children, *, child_threads):
    """The parent's and the children's results: right (the two checks of each label) and
    the same bits everywhere; the parent's calls ran on 2 threads, the children's on
    ``child_threads``."""
    assert ALLOW_SERIAL or report["openmp"], "sfer was built without OpenMP"
    parent = report["parent"]
    for seed, p in parent.items():
        assert p["forked"] is False, "in_forked_child() is True in the parent"
        for label, (check_a, check_b, _) in p["results"].items():
            assert check_a and check_b, f"parent seed {seed} {label}: wrong result"
        if report["openmp"]:
            assert p["threads"] == [2] * len(p["results"]), "the parent ran serially"
    assert report["parent_after"]["forked"] is False
    assert report["parent_after"]["results"] == parent["1"]["results"]
    assert children and all(c != "timeout" for c in children), f"children: {children}"
    for c in children:
        seed = str(c["seed"])
        assert c["pid"] != report["parent_pid"]
        for label, (check_a, check_b, bits) in c["results"].items():
            # grad: d_values == g[rim], d_default_value within the bound; fill: the reference's
            # outputs bit for bit, the IndexError naming the first bad entry
            assert check_a, f"child seed {seed} {label}: wrong result"
            assert check_b, f"child seed {seed} {label}: wrong result (second check)"
            # serial in the child, parallel in the parent: the same bits
            assert bits == parent[seed]["results"][label][2], (seed, label)
        if report["openmp"]:
            assert c["threads"] == [child_threads] * len(c["results"]), c["threads"]


@pytest.mark.parametrize("op", OPS)
def test_fork_pool_after_parallel_region(tmp_path, op):
    """multiprocessing's fork Pool after the parent ran parallel regions: no hang (libgomp
    would hang the children), right results on one thread, in_forked_child() True only in the
    children."""
    report = run_probe(tmp_path, f"fork_pool_{op}", "fork", timeout=90,
                       args=[op, "pool", 60])
    assert report["children"] != "timeout", "fork Pool workers hung (OpenMP after fork?)"
    check_fork_report(report, report["children"], child_threads=1)
    for c in report["children"]:
        assert c["forked"] is True, "in_forked_child() is False in a fork Pool worker"


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("mode", ["raw", "raw_busy"])
def test_raw_os_fork(tmp_path, mode, op):
    """A bare os.fork() child calls sfer with num_threads=2, either after the parent ran
    parallel regions ("raw") or while another parent thread is inside them ("raw_busy", a
    DataLoader-style fork from a busy process): it finishes (exit status 0 = correct and
    in_forked_child() True), on one thread."""
    report = run_probe(tmp_path, f"fork_{mode}_{op}", "fork", timeout=90,
                       args=[op, mode, 60, tmp_path / "child.json"])
    assert report["child_exit"] != "timeout", "the forked child hung (OpenMP after fork?)"
    assert report["child_exit"] == 0, f"the forked child failed: exit {report['child_exit']}"
    check_fork_report(report, report["children"], child_threads=1)
    assert report["children"][0]["forked"] is True


@pytest.mark.parametrize("op", OPS)
def test_spawn_and_forkserver_children_keep_parallelism(tmp_path, op):
    """spawn and forkserver children are not "forked children": OpenMP stays on (their calls
    run on the 2 threads asked for)."""
    report = run_probe(tmp_path, f"spawn_{op}", "fork", timeout=120, args=[op, "spawn", 90])
    children = [c for _, c in report["children"]]
    check_fork_report(report, children, child_threads=2)
    for method, c in report["children"]:
        assert c["forked"] is False, f"{method} child runs as a forked child (serial)"
        assert c["max_threads"] == report["parent"]["1"]["max_threads"], method


def test_in_forked_child_false_in_test_process():
    assert sfer._runtime.in_forked_child() is False
    assert sfer._runtime.max_threads() >= 1


# =============================================================================================
# 2. many Python threads at once; threadpoolctl
# =============================================================================================


@pytest.mark.parametrize("op", OPS)
def test_many_python_threads_share_inputs(tmp_path, op):
    """8 Python threads x 6 calls (+ failing calls) at once on shared inputs, above the serial
    threshold, with num_threads None, 1, 2, 3 and 4 (grad) or 16 (fill): every result is
    bitwise the single-threaded one, the IndexError the same, and no input changes.  grad:
    sorted, shuffled and duplicated maps, N_full = 300,000; fill: N = 200,000 entries over
    100,000 rows (half under the sanitizers; general path on shuffled and sorted rows, fast
    path, rank 1) with float64, int8, bytes and object values (objects: the very same
    objects)."""
    report = run_probe(tmp_path, f"threads_{op}", "threads", timeout=180, args=[op])
    assert report["alive"] == 0, "threads still running after 120 s (deadlock?)"
    assert report["errors"] == []
    assert report["done"] == [6] * 8
    assert report["changed"] == [], f"inputs modified: {report['changed']}"
    assert report["again_ok"]


def test_threadpoolctl_sees_and_limits_sfers_openmp(tmp_path):
    report = run_probe(tmp_path, "threadpoolctl", "threadpoolctl", timeout=120)
    assert report["default_ok"] and report["explicit_ok"]
    assert report["limited_ok"], "threadpool_limits(1) changed the results"
    if ALLOW_SERIAL and not report["openmp"]:
        return
    assert report["omp"], "threadpoolctl lists no OpenMP library after importing sfer"
    # the libgomp sfer loaded is one threadpoolctl found (so its limits reach sfer)
    assert set(report["omp"]) & set(report["mapped"]), report
    if report["wheel_libs"]:  # installed from the repaired wheel: its bundled libgomp
        assert any(p.startswith(report["wheel_libs"] + os.sep) for p in report["omp"]), report
    assert report["inside"] == 1, "threadpool_limits(1, 'openmp') did not reach sfer"
    assert report["after"] == report["before"] >= 1


# =============================================================================================
# 3. the GIL is released while the kernel runs
# =============================================================================================


def stalls_during_calls(call, count):
    """Run ``call`` ``count`` times in a worker thread while this thread loops taking time
    stamps; returns (duration, longest stretch without a stamp) for each call.  If ``call``
    holds the GIL, this thread cannot take a stamp until it returns."""
    calls = []
    go = threading.Event()

    def worker():
        go.wait()
        for _ in range(count):
            t0 = time.perf_counter()
            call()
            calls.append((t0, time.perf_counter()))

    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-4)
    try:
        th = threading.Thread(target=worker, daemon=True)
        th.start()
        gaps = []  # (start, end) of every pause of this thread longer than 1 ms
        prev = time.perf_counter()
        go.set()  # the first call starts after the first stamp
        while th.is_alive():
            now = time.perf_counter()
            if now - prev > 1e-3:
                gaps.append((prev, now))
            prev = now
        th.join(60)
    finally:
        sys.setswitchinterval(old)
    assert len(calls) == count
    return [(t1 - t0, max([min(b, t1) - max(a, t0) for a, b in gaps] + [1e-3]))
            for t0, t1 in calls]


def _slow_single_threaded_call(case):
    """A call of several tenths of a second on one thread, with inputs built beforehand."""
    rng = np.random.default_rng(8)
    if case == "grad":
        n = 5_000_000 if SANITIZE else 20_000_000
        g = rng.standard_normal(n).astype(np.float32)
        rim = rng.permutation(np.flatnonzero(rng.random(n) < 0.9))  # random gathers: slow
        grad(rim[:1000], g, num_threads=1)
        return lambda: grad(rim, g, num_threads=1)
    # fill: shuffled rows (about a third of them empty): the general path, scattered writes
    n = 250_000 if SANITIZE else 700_000
    idx = np.stack([rng.integers(0, n, n), rng.integers(0, 9, n)], axis=1)
    vals = {"fill_float32": rng.standard_normal(n).astype(np.float32),
            "fill_bytes": rng.integers(0, 10**6, n).astype("S8")}[case]
    default = vals[:1].reshape(())
    sfer.sparse_fill_empty_rows(idx[:1000], vals[:1000], [n, 9], default, num_threads=1)
    return lambda: sfer.sparse_fill_empty_rows(idx, vals, [n, 9], default, num_threads=1)


@pytest.mark.parametrize("case", ["grad", "fill_float32", "fill_bytes"])
def test_gil_released_during_kernel(case):
    """The main thread keeps running Python while a worker thread is inside sfer: the longest
    stretch of a call without a main-thread time stamp is far shorter than the call (if the
    GIL were held, it would be the whole call).  The forward op with fixed-size values
    (float32, bytes) releases it while its kernel groups the rows and places the entries."""
    call = _slow_single_threaded_call(case)
    report = stalls_during_calls(call, 3)
    for duration, longest in report:
        assert longest < 0.5 * duration, (
            f"the main thread stalled {longest:.3f} s during a {duration:.3f} s call: "
            f"GIL held? (duration, longest stall) per call: {report}")


def test_gil_probe_detects_a_held_gil():
    """The probe above is not vacuous: a C call that holds the GIL (ctypes.PyDLL) shows up as
    a stall as long as the call."""
    import ctypes
    import ctypes.util

    libc = ctypes.PyDLL(ctypes.util.find_library("c"))  # PyDLL: the GIL stays held
    report = stalls_during_calls(lambda: libc.usleep(150_000), 3)
    # At least one call must show it (one is enough to prove the probe can see a held GIL;
    # requiring all of them would make this self-check depend on the scheduler).
    assert any(longest > 0.5 * duration for duration, longest in report), report


# =============================================================================================
# 4. hostile input: a clean TypeError / ValueError / IndexError naming the argument
# =============================================================================================

G = np.arange(10, dtype=np.float32)
R = np.array([0, 3])
I64 = np.iinfo(np.int64)


def _gen():
    yield 1
    yield 2


def hostile_cases() -> dict:
    """name -> (rim, g, kwargs, exception, argument named, text that says what is wrong).

    Built fresh on each call (generators are used up)."""
    idx = lambda j, v, n=10: index_error_message(j, v, n)  # noqa: E731
    one_d = "must be 1-D"
    conv = "could not be converted"
    gdt, rdt = "does not support", "integer dtype"
    c = {
        # CVE-2020-15195: out-of-range map entries
        "rim_equal_to_n_full": ([0, 10], G, {}, IndexError, "reverse_index_map", idx(1, 10)),
        "rim_negative": ([3, -1], G, {}, IndexError, "reverse_index_map", idx(1, -1)),
        "rim_huge": ([2**40], G, {}, IndexError, "reverse_index_map", idx(0, 2**40)),
        "rim_int64_max": (np.array([1, I64.max]), G, {}, IndexError, "reverse_index_map",
                          idx(1, I64.max)),
        "rim_int64_min": (np.array([I64.min, 1]), G, {}, IndexError, "reverse_index_map",
                          idx(0, I64.min)),
        "rim_int32_min": (np.array([2, np.iinfo(np.int32).min], np.int32), G, {}, IndexError,
                          "reverse_index_map", idx(1, -(2**31))),
        "rim_uint64_2**63": (np.array([1, 2**63], np.uint64), G, {}, IndexError,
                             "reverse_index_map", idx(1, 2**63)),
        "rim_uint64_max": (np.array([2**64 - 1], np.uint64), G, {}, IndexError,
                           "reverse_index_map", idx(0, 2**64 - 1)),
        "rim_list_2**63": ([2**63], G, {}, IndexError, "reverse_index_map", idx(0, 2**63)),
        "rim_list_2**64-1": ([2**64 - 1, 2**63], G, {}, IndexError, "reverse_index_map",
                             idx(0, 2**64 - 1)),
        "rim_swapped_strided_bad": (np.array([1, 0, 99, 0], ">i8")[::2], G, {}, IndexError,
                                    "reverse_index_map", idx(1, 99)),
        # CVE-2020-15194: grad_values not a vector
        "g_0d_scalar": (R, np.float32(1.0), {}, ValueError, "grad_values", one_d),
        "g_0d_array": (R, np.array(1.0), {}, ValueError, "grad_values", one_d),
        "g_2d": (R, np.zeros((10, 1), np.float32), {}, ValueError, "grad_values", one_d),
        "g_2d_empty": (R, np.zeros((0, 3)), {}, ValueError, "grad_values", one_d),
        "g_3d": (R, np.zeros((2, 2, 2)), {}, ValueError, "grad_values", one_d),
        "g_nested_list": (R, [[1.0, 2.0], [3.0, 4.0]], {}, ValueError, "grad_values", one_d),
        "rim_2d": (np.zeros((2, 1), np.int64), G, {}, ValueError, "reverse_index_map", one_d),
        "rim_0d": (np.int64(0), G, {}, ValueError, "reverse_index_map", one_d),
        # CVE-2022-41898: empty grad_values, non-empty map
        "g_empty_rim_nonempty": (R, np.zeros(0, np.float32), {}, IndexError,
                                 "reverse_index_map", idx(0, 0, 0)),
        "g_empty_list_rim_list": ([7], [], {}, IndexError, "reverse_index_map", idx(0, 7, 0)),
        # dtypes
        "g_object": (R, np.array([1.0, None] * 5, dtype=object), {}, TypeError, "grad_values",
                     gdt),
        "g_str": (R, np.array(list("abcdefghij")), {}, TypeError, "grad_values", gdt),
        "g_bool": (R, np.ones(10, bool), {}, TypeError, "grad_values", gdt),
        "g_bytes_array": (R, np.array([b"x"] * 10), {}, TypeError, "grad_values", gdt),
        "g_datetime64": (R, np.arange(10).astype("datetime64[ns]"), {}, TypeError,
                         "grad_values", gdt),
        "g_timedelta64": (R, np.arange(10).astype("timedelta64[s]"), {}, TypeError,
                          "grad_values", gdt),
        "g_longdouble": (R, np.zeros(10, np.longdouble), {}, TypeError, "grad_values", gdt),
        "g_structured": (R, np.zeros(10, [("a", "f4")]), {}, TypeError, "grad_values", gdt),
        "g_python_ints_beyond_uint64": (R, [2**64] * 10, {}, TypeError, "grad_values", gdt),
        "g_list_of_none": (R, [None] * 10, {}, TypeError, "grad_values", gdt),
        "rim_object": (np.array([0, 1], dtype=object), G, {}, TypeError, "reverse_index_map",
                       rdt),
        "rim_str": (np.array(["0", "1"]), G, {}, TypeError, "reverse_index_map", rdt),
        "rim_bool": (np.array([True, False]), G, {}, TypeError, "reverse_index_map", rdt),
        "rim_float": ([0.0, 1.0], G, {}, TypeError, "reverse_index_map", rdt),
        "rim_nan": ([float("nan")], G, {}, TypeError, "reverse_index_map", rdt),
        "rim_complex": ([1j], G, {}, TypeError, "reverse_index_map", rdt),
        "rim_datetime64": (np.arange(2).astype("datetime64[D]"), G, {}, TypeError,
                           "reverse_index_map", rdt),
        "rim_python_int_2**64": ([2**64], G, {}, TypeError, "reverse_index_map", rdt),
        "rim_python_int_below_int64": ([-(2**63) - 1], G, {}, TypeError, "reverse_index_map",
                                       rdt),
        # numpy makes this float64 (TypeError) or refuses it (ValueError), by version
        "rim_mixed_sign_uint64": ([0, 2**64 - 1, -1], G, {}, (TypeError, ValueError),
                                  "reverse_index_map", ""),
        "rim_list_of_none": ([None], G, {}, TypeError, "reverse_index_map", rdt),
        # None, scalars, containers that are not sequences of numbers
        "g_None": (R, None, {}, ValueError, "grad_values", one_d),
        "rim_None": (None, G, {}, ValueError, "reverse_index_map", one_d),
        "g_python_float": (R, 1.5, {}, ValueError, "grad_values", one_d),
        "rim_python_int": (3, G, {}, ValueError, "reverse_index_map", one_d),
        "g_ragged": (R, [[1.0, 2.0], [3.0]], {}, ValueError, "grad_values", conv),
        "rim_ragged": ([[0, 1], [2]], G, {}, ValueError, "reverse_index_map", conv),
        "g_ragged_deep": (R, [1.0, [2.0, [3.0]]], {}, ValueError, "grad_values", conv),
        "g_generator": (R, _gen(), {}, ValueError, "grad_values", one_d),
        "rim_generator": (_gen(), G, {}, ValueError, "reverse_index_map", one_d),
        "g_dict": (R, {0: 1.0, 1: 2.0}, {}, ValueError, "grad_values", one_d),
        "rim_dict": ({0: 0}, G, {}, ValueError, "reverse_index_map", one_d),
        "rim_set": ({0, 1}, G, {}, ValueError, "reverse_index_map", one_d),
        "g_bytes": (R, b"\x00" * 10, {}, ValueError, "grad_values", one_d),
        "rim_bytes": (b"\x00\x01", G, {}, ValueError, "reverse_index_map", one_d),
        "g_str_scalar": (R, "0123456789", {}, ValueError, "grad_values", one_d),
        "rim_object_instance": (object(), G, {}, ValueError, "reverse_index_map", one_d),
        "rim_memoryview_float64": (memoryview(np.arange(3.0)), G, {}, TypeError,
                                   "reverse_index_map", rdt),
        "rim_memoryview_char": (memoryview(b"ab").cast("c"), G, {}, TypeError,
                                "reverse_index_map", rdt),
        "rim_array_array_double": (array.array("d", [0.0]), G, {}, TypeError,
                                   "reverse_index_map", rdt),
        "g_memoryview_bool": (R, memoryview(np.ones(10, bool)), {}, TypeError, "grad_values",
                              gdt),
        "rim_memoryview_2d": (memoryview(np.zeros((2, 2), np.int64)), G, {}, ValueError,
                              "reverse_index_map", one_d),
        # num_threads and out
        "num_threads_zero": (R, G, {"num_threads": 0}, ValueError, "num_threads", ">= 1"),
        "num_threads_negative": (R, G, {"num_threads": -(2**70)}, ValueError, "num_threads",
                                 ">= 1"),
        "num_threads_float": (R, G, {"num_threads": 2.0}, TypeError, "num_threads", "int"),
        "num_threads_str": (R, G, {"num_threads": "2"}, TypeError, "num_threads", "int"),
        "num_threads_bool": (R, G, {"num_threads": True}, TypeError, "num_threads", "int"),
        "out_list": (R, G, {"out": [0.0, 0.0]}, TypeError, "out", "ndarray"),
        "out_wrong_dtype": (R, G, {"out": np.zeros(2)}, TypeError, "out", "dtype float32"),
        "out_swapped": (R, G, {"out": np.zeros(2, ">f4")}, TypeError, "out", "dtype float32"),
        "out_wrong_shape": (R, G, {"out": np.zeros(3, np.float32)}, ValueError, "out",
                            "shape"),
        "out_2d": (R, G, {"out": np.zeros((2, 1), np.float32)}, ValueError, "out", "shape"),
        "out_read_only": (R, G, {"out": np.zeros(2, np.float32)}, ValueError, "out",
                          "writeable"),
        "out_strided": (R, G, {"out": np.zeros(4, np.float32)[::2]}, ValueError, "out",
                        "contiguous"),
    }
    c["out_read_only"][2]["out"].setflags(write=False)
    return c


def _check_hostile(name, outcome):
    """outcome: (exception type name, message), or ("ok", repr)."""
    _, _, _, exc, arg, text = hostile_cases()[name]
    kind, msg = outcome
    names = [e.__name__ for e in (exc if isinstance(exc, tuple) else (exc,))]
    assert kind in names, f"{name}: expected {' or '.join(names)}, got {kind}: {msg}"
    assert arg in msg, f"{name}: the message does not name {arg}: {msg!r}"
    if exc is IndexError:
        assert msg == text, name
    else:
        assert text in msg, f"{name}: the message does not say {text!r}: {msg!r}"


def _call_hostile(name):
    rim, g, kwargs, _, _, _ = hostile_cases()[name]
    try:
        res = grad(rim, g, **kwargs)
    except (TypeError, ValueError, IndexError) as exc:
        return type(exc).__name__, str(exc)
    return "ok", repr(res)


@pytest.mark.parametrize("name", sorted(hostile_cases()))
def test_hostile_input_raises_clean_error(name):
    _check_hostile(name, _call_hostile(name))


def test_hostile_input_batch_in_subprocess(tmp_path):
    """The whole hostile batch, three times, in a child: a segfault fails the test."""
    outcomes = run_probe(tmp_path, "hostile", "hostile", timeout=120)
    assert sorted(outcomes) == sorted(hostile_cases())
    for name, outcome in outcomes.items():
        _check_hostile(name, outcome)


@pytest.mark.parametrize(
    "rim,g,dtype",
    [
        (np.zeros(0, np.int64), np.zeros(0, np.float32), np.float32),
        ([], [], np.float64),
        ((), np.zeros(0, np.complex64), np.complex64),
        (np.zeros(0, np.uint8), np.zeros(0, np.int8), np.int8),
        (np.zeros(0, np.int64), np.arange(5, dtype=np.int16), np.int16),
    ],
)
def test_empty_inputs_are_valid(rim, g, dtype):
    """CVE-2022-41898's other half: an empty map (with empty or non-empty grad_values) works."""
    res = grad(rim, g)
    assert res.d_values.shape == (0,) and res.d_values.dtype == dtype
    assert type(res.d_default_value) is np.dtype(dtype).type
    assert res.d_default_value == np.asarray(g).sum()


# ---------------------------------------------------------------------------------------------
# 4b. hostile input to the forward op (sfer.sparse_fill_empty_rows)
# ---------------------------------------------------------------------------------------------

fill = sfer.sparse_fill_empty_rows
I32 = np.iinfo(np.int32)

@dataclass(frozen=True)
class FillHostile:
    """A hostile call of the forward op, ``fill(*args, **kwargs)``, and what it must do.

    ``exc`` None: it succeeds, with the reference's result bit for bit.  Otherwise it raises
    ``exc`` whose message names ``arg`` and contains ``text`` (an IndexError: is ``text``).
    Every case but the ``huge`` ones also raises exactly what sfer.reference raises (type
    and message), unless ``ref`` is False (num_threads, which the reference does not take).

    ``huge``: dense_shape[0] is beyond any memory (2**41 and up), so the outputs cannot be
    allocated: a MemoryError (or a ValueError) whose message names dense_shape or the size
    (dense_shape[0]'s value), or, where a row is out of range (``text`` set), that row's
    IndexError.  These run only in a child process under an address-space limit
    (_reliability_child.limit_address_space), where an absurd allocation fails at once even
    on a machine that overcommits memory, and an allocation size that wraps around cannot
    corrupt the test run."""

    args: tuple  # (indices, values, dense_shape, default_value)
    kwargs: dict = field(default_factory=dict)
    exc: Any = None
    arg: str = ""
    text: str = ""
    huge: bool = False
    ref: bool = True


def _rows_message(i, v, dense_rows):
    return f"indices[{i}, 0] = {v} is out of range [0, {dense_rows})"


def _first_bad_case(n, dense_rows, bad, num_threads):
    """N entries (valid rows, shuffled) with the out-of-range rows ``bad`` {i: row}; the
    expected IndexError names the lowest i."""
    rng = np.random.default_rng([n, len(bad), num_threads])
    idx = np.stack([rng.integers(0, dense_rows, n), rng.integers(-5, 5, n)], axis=1)
    for i, v in bad.items():
        idx[i % n, 0] = v
    first = min(i % n for i in bad)
    return FillHostile((idx, np.arange(n, dtype=np.float32), [dense_rows, 5], np.float32(-1)),
                       {"num_threads": num_threads}, IndexError, "indices",
                       _rows_message(first, idx[first, 0], dense_rows))


@functools.lru_cache(maxsize=None)
def fill_hostile_cases() -> dict:
    """name -> FillHostile.  Built once (the calls never modify their inputs: the read-only
    tests below check that)."""
    idx_msg = _rows_message
    f32 = np.float32
    one = (np.array([[0, 1]]), np.array([1.0], f32))  # indices [1, 2] and values [1]
    two = (np.array([[0, 1], [2, 0]]), np.array([1.0, 2.0], f32))
    none2 = np.zeros((0, 2), np.int64), np.zeros(0, f32)
    dshape, dtype_msg, matrix = "dense_shape", "must have an integer dtype", "must be a matrix"
    big_n = 200_000  # N + dense_rows above the serial threshold
    n16 = 70_000  # 16 threads: slices of 4,375 entries, the last one from 65,625
    last = 15 * n16 // 16
    rows0 = np.zeros((big_n, 2), np.int64)
    rows0[:, 1] = np.arange(big_n) % 7
    rows1 = rows0.copy()
    rows1[:, 0] = 1
    last_bad = rows0.copy()
    last_bad[-1, 0] = 1
    objs = np.array([("a",), None], dtype=object)
    c = {
        # --- dense_shape[0] beyond any memory: TensorFlow's crashers for this op
        "dense_rows_2**62_n0": FillHostile((*none2, [2**62, 3], 0.0), huge=True),
        "dense_rows_2**62_n1": FillHostile((*one, [2**62, 3], 0.0), huge=True),
        "dense_rows_2**62_bad_row": FillHostile(
            (np.array([[7, 1], [-1, 0]]), two[1], [2**62, 3], 0.0),
            text=idx_msg(1, -1, 2**62), huge=True),
        "dense_rows_2**63-1_n0": FillHostile((*none2, [2**63 - 1, 3], 0.0), huge=True),
        "dense_rows_2**63-1_n1": FillHostile((np.array([[5, 1]]), one[1], [2**63 - 1, 3],
                                              0.0), huge=True),
        "dense_rows_2**63-1_row_int64_max": FillHostile(
            (np.array([[0, 0], [I64.max, 0]]), two[1], [2**63 - 1, 3], 0.0),
            text=idx_msg(1, I64.max, 2**63 - 1), huge=True),
        "dense_rows_2**41_n0": FillHostile((*none2, [2**41, 3], 0.0), huge=True),
        "dense_rows_2**41_n1_16_threads": FillHostile((*one, [2**41, 3], 0.0),
                                                      {"num_threads": 16}, huge=True),
        "dense_rows_2**41_bad_row": FillHostile(
            (np.array([[7, 1], [2**41, 0]]), two[1], [2**41, 3], 0.0),
            text=idx_msg(1, 2**41, 2**41), huge=True),
        "dense_shape_uint64_2**63": FillHostile(
            (*none2, np.array([2**63, 3], np.uint64), 0.0), huge=True),
        "dense_shape_uint64_max_n1": FillHostile(
            (np.array([[0, 0]], np.uint64), one[1], np.array([2**64 - 1, 1], np.uint64), 0.0),
            huge=True),
        # --- dense_shape[0] negative or zero
        "dense_rows_negative": FillHostile((*two, [-5, 3], 0.0), exc=ValueError, arg=dshape,
                                           text="dense_shape[0] must be >= 0, got -5"),
        "dense_rows_int64_min": FillHostile((*two, [I64.min, 3], 0.0), exc=ValueError,
                                            arg=dshape, text=f"must be >= 0, got {I64.min}"),
        "dense_rows_negative_n0": FillHostile((*none2, [-1, 3], 0.0), exc=ValueError,
                                              arg=dshape, text="must be >= 0"),
        "dense_rows_negative_int8_with_bad_row": FillHostile(
            (np.array([[-9, 0]]), one[1], np.array([-1, 3], np.int8), 0.0), exc=ValueError,
            arg=dshape, text="must be >= 0, got -1"),
        "dense_rows_zero_n1": FillHostile((*one, [0, 3], 0.0), exc=IndexError, arg="indices",
                                          text=idx_msg(0, 0, 0)),
        "dense_rows_zero_n0": FillHostile((*none2, [0, 3], 0.0)),
        "other_dense_dims_negative_and_extreme": FillHostile(  # never checked, as in TF
            (np.array([[0, 1, 2]]), one[1], [1, -5, I64.max], 0.0)),
        # --- rows out of range (column 0)
        "row_negative": FillHostile((np.array([[0, 0], [-1, 0]]), two[1], [3, 3], 0.0),
                                    exc=IndexError, arg="indices", text=idx_msg(1, -1, 3)),
        "row_equal_to_dense_rows": FillHostile((np.array([[3, 0]]), one[1], [3, 3], 0.0),
                                               exc=IndexError, arg="indices",
                                               text=idx_msg(0, 3, 3)),
        "row_int64_min": FillHostile((np.array([[0, 0], [I64.min, 0]]), two[1], [3, 3], 0.0),
                                     exc=IndexError, arg="indices",
                                     text=idx_msg(1, I64.min, 3)),
        "row_int64_max": FillHostile((np.array([[I64.max, 0], [0, 0]]), two[1], [3, 3], 0.0),
                                     exc=IndexError, arg="indices",
                                     text=idx_msg(0, I64.max, 3)),
        "row_int32_min": FillHostile((np.array([[1, 0], [I32.min, 0]], np.int32), two[1],
                                      np.array([3, 3], np.int32), 0.0), exc=IndexError,
                                     arg="indices", text=idx_msg(1, I32.min, 3)),
        "row_uint64_max": FillHostile((np.array([[2**64 - 1, 0]], np.uint64), one[1], [3, 3],
                                       0.0), exc=IndexError, arg="indices",
                                      text=idx_msg(0, 2**64 - 1, 3)),
        "row_uint64_2**63": FillHostile((np.array([[1, 0], [2**63, 0]], np.uint64), two[1],
                                         [3, 3], 0.0), exc=IndexError, arg="indices",
                                        text=idx_msg(1, 2**63, 3)),
        "row_list_2**63": FillHostile(([[2**63, 2**63 + 1]], [1.0], [3, 3], 0.0),
                                      exc=IndexError, arg="indices", text=idx_msg(0, 2**63, 3)),
        # NumPy makes 2**63 with a small int float64
        "row_list_2**63_with_small_ints": FillHostile(([[2**63, 0]], [1.0], [3, 3], 0.0),
                                                      exc=TypeError, arg="indices",
                                                      text=dtype_msg),
        "row_byteswapped_strided": FillHostile(
            (np.array([[0, 0], [9, 9], [5, 1], [9, 9]], ">i8")[::2], two[1], [3, 3], 0.0),
            exc=IndexError, arg="indices", text=idx_msg(1, 5, 3)),
        "rows_first_bad_wins": FillHostile(
            (np.array([[0, 0], [5, 0], [-2, 0], [9, 0]]), np.zeros(4, f32), [3, 3], 0.0),
            exc=IndexError, arg="indices", text=idx_msg(1, 5, 3)),
        # --- other columns pass through unchecked
        "int64_min_max_in_other_columns": FillHostile(
            (np.array([[2, I64.min, I64.max], [0, I64.max, I64.min]]), two[1], [3, 1, 1], 0.0)),
        "uint64_max_in_other_column": FillHostile(
            (np.array([[1, 2**64 - 1]], np.uint64), one[1], np.array([2, 1], np.uint64), 0.0)),
        "list_int64_extremes_in_other_column": FillHostile(
            ([[1, I64.min], [1, I64.max], [0, -1]], [1.0, 2.0, 3.0], [3, 1], 0.0)),
        # --- huge N against a tiny dense_shape
        "huge_n_one_row": FillHostile((rows0, np.zeros(big_n, f32), [1, 7], 0.0)),
        "huge_n_one_row_16_threads": FillHostile((rows0, np.zeros(big_n, f32), [1, 7], 0.0),
                                                 {"num_threads": 16}),
        "huge_n_all_rows_out_of_range_16_threads": FillHostile(
            (rows1, np.zeros(big_n, f32), [1, 7], 0.0), {"num_threads": 16}, IndexError,
            "indices", idx_msg(0, 1, 1)),
        "huge_n_last_row_out_of_range_16_threads": FillHostile(
            (last_bad, np.zeros(big_n, f32), [1, 7], 0.0), {"num_threads": 16}, IndexError,
            "indices", idx_msg(big_n - 1, 1, 1)),
        "huge_n_dense_rows_zero": FillHostile((rows0, np.zeros(big_n, f32), [0, 7], 0.0),
                                              {"num_threads": 3}, IndexError, "indices",
                                              idx_msg(0, 0, 0)),
        # --- the first bad entry, whatever the thread count (N = 70,000, 100 rows)
        "first_bad_two_in_last_slice_16_threads": _first_bad_case(
            n16, 100, {last + 5: -1, n16 - 2: 100}, 16),
        "first_bad_at_start_of_last_slice_16_threads": _first_bad_case(
            n16, 100, {last: 10**15, last + 1: -3, n16 - 1: -3}, 16),
        "first_bad_at_end_of_first_slice_16_threads": _first_bad_case(
            n16, 100, {n16 // 16 - 1: 100, last + 7: -1, n16 - 1: 101}, 16),
        "first_bad_only_the_last_entry_16_threads": _first_bad_case(n16, 100, {-1: 100}, 16),
        "first_bad_two_in_last_slice_3_threads": _first_bad_case(
            n16, 100, {2 * n16 // 3 + 1: 100, n16 - 5: -1}, 3),
        "first_bad_every_slice_16_threads": _first_bad_case(
            n16, 100, {t * n16 // 16 + 3: -1 - t for t in range(16)}, 16),
        # --- dtypes of indices and dense_shape
        "indices_float": FillHostile((np.zeros((1, 2)), one[1], [1, 1], 0.0), exc=TypeError,
                                     arg="indices", text=dtype_msg),
        "indices_float16": FillHostile((np.zeros((1, 2), np.float16), one[1], [1, 1], 0.0),
                                       exc=TypeError, arg="indices", text=dtype_msg),
        "indices_bool": FillHostile((np.zeros((1, 2), bool), one[1], [1, 1], 0.0),
                                    exc=TypeError, arg="indices", text=dtype_msg),
        "indices_object": FillHostile((np.zeros((1, 2), object), one[1], [1, 1], 0.0),
                                      exc=TypeError, arg="indices", text=dtype_msg),
        "indices_str": FillHostile((np.array([["0", "1"]]), one[1], [1, 2], 0.0),
                                   exc=TypeError, arg="indices", text=dtype_msg),
        "indices_complex": FillHostile(([[0j, 1j]], [1.0], [1, 2], 0.0), exc=TypeError,
                                       arg="indices", text=dtype_msg),
        "indices_datetime64": FillHostile((np.zeros((1, 2), "M8[D]"), one[1], [1, 2], 0.0),
                                          exc=TypeError, arg="indices", text=dtype_msg),
        "indices_list_of_floats": FillHostile(([[0.0, 1.0]], [1.0], [1, 2], 0.0),
                                              exc=TypeError, arg="indices", text=dtype_msg),
        "indices_list_beyond_uint64": FillHostile(([[2**64, 0]], [1.0], [1, 2], 0.0),
                                                  exc=TypeError, arg="indices", text=dtype_msg),
        "indices_None": FillHostile((None, one[1], [1, 2], 0.0), exc=TypeError, arg="indices",
                                    text=dtype_msg),
        "indices_generator": FillHostile(((i for i in range(2)), one[1], [1, 2], 0.0),
                                         exc=TypeError, arg="indices", text=dtype_msg),
        "indices_dict": FillHostile(({0: 1}, one[1], [1, 2], 0.0), exc=TypeError,
                                    arg="indices", text=dtype_msg),
        "dense_shape_float": FillHostile((*one, [1.0, 2.0], 0.0), exc=TypeError, arg=dshape,
                                         text=dtype_msg),
        "dense_shape_bool": FillHostile((*one, np.array([True, True]), 0.0), exc=TypeError,
                                        arg=dshape, text=dtype_msg),
        "dense_shape_None": FillHostile((*one, None, 0.0), exc=TypeError, arg=dshape,
                                        text=dtype_msg),
        "dense_shape_list_beyond_uint64": FillHostile((*one, [2**64, 2], 0.0), exc=TypeError,
                                                      arg=dshape, text=dtype_msg),
        # --- default_value
        "default_nan_for_int32": FillHostile((one[0], np.array([1], np.int32), [2, 2],
                                              float("nan")), exc=TypeError,
                                             arg="default_value", text="does not convert"),
        "default_numpy_nan_for_int8": FillHostile((one[0], np.array([1], np.int8), [2, 2],
                                                   np.float32("nan")), exc=TypeError,
                                                  arg="default_value", text="float32"),
        "default_nan_for_bool": FillHostile((one[0], np.array([True]), [2, 2], float("nan")),
                                            exc=TypeError, arg="default_value",
                                            text="does not convert"),
        "default_inf_for_int64": FillHostile((one[0], np.array([1]), [2, 2], float("inf")),
                                             exc=TypeError, arg="default_value",
                                             text="does not convert"),
        "default_None_for_float": FillHostile((*one, [2, 2], None), exc=TypeError,
                                              arg="default_value", text="object"),
        "default_None_for_object": FillHostile((one[0], objs[:1], [2, 2], None)),
        "default_2**64_for_int64": FillHostile((one[0], np.array([1]), [2, 2], 2**64),
                                               exc=ValueError, arg="default_value",
                                               text="does not fit"),
        "default_int8_out_of_range": FillHostile((one[0], np.array([1], np.int8), [2, 2],
                                                  -129), exc=ValueError,
                                                 arg="default_value", text="does not fit"),
        "default_float16_overflow": FillHostile((one[0], np.array([1], np.float16), [2, 2],
                                                 1e300), exc=ValueError,
                                                arg="default_value", text="overflows"),
        "default_not_a_scalar": FillHostile((*one, [2, 2], np.zeros(2, f32)),
                                            exc=ValueError, arg="default_value",
                                            text="must be a scalar"),
        "default_str_for_bytes": FillHostile((one[0], np.array([b"x"]), [2, 2], "y"),
                                             exc=TypeError, arg="default_value",
                                             text="must be bytes"),
        # --- shapes and ranks (CVE-2021-29565: everything empty; CVE-2021-41224: lengths)
        "tf_all_empty": FillHostile(([], [], [], 0), exc=ValueError, arg="indices",
                                    text=matrix),
        "dense_shape_empty": FillHostile((np.zeros((2, 0), np.int64), np.zeros(2), [], 0.0),
                                         exc=ValueError, arg=dshape, text="must not be empty"),
        "values_longer_than_indices": FillHostile((one[0], two[1], [2, 2], 0.0),
                                                  exc=ValueError, arg="values",
                                                  text="len(values) must equal"),
        "values_shorter_than_indices": FillHostile((two[0], one[1], [3, 3], 0.0),
                                                   exc=ValueError, arg="values",
                                                   text="len(values) must equal"),
        "huge_n_values_empty": FillHostile((rows0, np.zeros(0, f32), [1, 7], 0.0),
                                           exc=ValueError, arg="values",
                                           text="len(values) must equal"),
        "dense_shape_longer_than_rank": FillHostile((*one, [2, 2, 2], 0.0), exc=ValueError,
                                                    arg=dshape, text="len(dense_shape)"),
        "dense_shape_shorter_than_rank": FillHostile((*one, [2], 0.0), exc=ValueError,
                                                     arg=dshape, text="len(dense_shape)"),
        "indices_0d": FillHostile((np.int64(0), one[1], [2], 0.0), exc=ValueError,
                                  arg="indices", text=matrix),
        "indices_1d": FillHostile((np.array([0, 1]), two[1], [2], 0.0), exc=ValueError,
                                  arg="indices", text=matrix),
        "indices_3d": FillHostile((np.zeros((1, 1, 2), np.int64), one[1], [2, 2], 0.0),
                                  exc=ValueError, arg="indices", text=matrix),
        "values_0d": FillHostile((one[0], np.float32(1), [2, 2], 0.0), exc=ValueError,
                                 arg="values", text="must be a vector"),
        "values_2d": FillHostile((one[0], np.zeros((1, 1), f32), [2, 2], 0.0), exc=ValueError,
                                 arg="values", text="must be a vector"),
        "values_None": FillHostile((one[0], None, [2, 2], 0.0), exc=ValueError, arg="values",
                                   text="must be a vector"),
        "dense_shape_0d": FillHostile((*one, np.int64(2), 0.0), exc=ValueError, arg=dshape,
                                      text="must be a vector"),
        "dense_shape_2d": FillHostile((*one, [[2, 2]], 0.0), exc=ValueError, arg=dshape,
                                      text="must be a vector"),
        "indices_ragged": FillHostile(([[0, 1], [1]], two[1], [2, 2], 0.0), exc=ValueError,
                                      arg="indices", text="could not be converted"),
        "values_ragged": FillHostile((two[0], [[1.0], 2.0], [3, 3], 0.0), exc=ValueError,
                                     arg="values", text="could not be converted"),
        "dense_shape_ragged": FillHostile((*one, [[2], 2], 0.0), exc=ValueError, arg=dshape,
                                          text="could not be converted"),
        "rank_64": FillHostile((np.arange(3 * 64).reshape(3, 64) % 3, np.ones(3, f32),
                                [3] * 64, 0.0)),
        # --- num_threads
        "num_threads_zero": FillHostile((*two, [3, 3], 0.0), {"num_threads": 0}, ValueError,
                                        "num_threads", ">= 1", ref=False),
        "num_threads_negative": FillHostile((*two, [3, 3], 0.0), {"num_threads": -(2**70)},
                                            ValueError, "num_threads", ">= 1", ref=False),
        "num_threads_float": FillHostile((*two, [3, 3], 0.0), {"num_threads": 2.0}, TypeError,
                                         "num_threads", "int", ref=False),
        "num_threads_str": FillHostile((*two, [3, 3], 0.0), {"num_threads": "2"}, TypeError,
                                       "num_threads", "int", ref=False),
        "num_threads_bool": FillHostile((*two, [3, 3], 0.0), {"num_threads": True}, TypeError,
                                        "num_threads", "int", ref=False),
    }
    return c


def _call_fill_hostile(name):
    """(exception type name, message), or ("ok", fill_digest of the result).  Any exception
    is caught (the checks judge its type): only a crash or a hang ends the batch."""
    case = fill_hostile_cases()[name]
    try:
        res = fill(*case.args, **case.kwargs)
    except Exception as exc:  # noqa: BLE001
        return type(exc).__name__, str(exc)
    return "ok", fill_digest(res)


def _reference_fill_outcome(case):
    try:
        res = reference.sparse_fill_empty_rows(*case.args)
    except Exception as exc:  # noqa: BLE001
        return type(exc).__name__, str(exc)
    return "ok", fill_digest(res)


def _check_fill_hostile(name, outcome):
    case = fill_hostile_cases()[name]
    kind, msg = outcome
    if case.huge:
        dense_rows = int(np.asarray(case.args[2])[0])
        if case.text and kind == "IndexError":
            assert msg == case.text, name
            return
        assert kind in ("MemoryError", "ValueError"), f"{name}: {kind}: {msg}"
        assert "dense_shape" in msg or str(dense_rows) in msg, (
            f"{name}: the {kind} names neither dense_shape nor its size {dense_rows}: {msg!r}")
        return
    if case.exc is None:
        assert kind == "ok", f"{name}: expected success, got {kind}: {msg}"
    else:
        names = [e.__name__ for e in (case.exc if isinstance(case.exc, tuple) else (case.exc,))]
        assert kind in names, f"{name}: expected {' or '.join(names)}, got {kind}: {msg}"
        assert case.arg in msg, f"{name}: the message does not name {case.arg}: {msg!r}"
        if case.exc is IndexError:
            assert msg == case.text, name
        else:
            assert case.text in msg, f"{name}: the message does not say {case.text!r}: {msg!r}"
    if case.ref:  # sfer.reference: the same error word for word, or the same result
        assert outcome == _reference_fill_outcome(case), f"{name}: not as sfer.reference"


def _fill_hostile_params(huge):
    return [name for name, c in sorted(fill_hostile_cases().items()) if c.huge == huge]


@pytest.mark.parametrize("name", _fill_hostile_params(huge=False))
def test_fill_hostile_input_raises_clean_error(name):
    _check_fill_hostile(name, _call_fill_hostile(name))


def _sanitizer_reports(logs: Path) -> str:
    """The sanitizers' report files in ``logs``, less ASan's warnings that an allocation above
    its limit failed (with allocator_may_return_null=1, as ci/sanitize.sh sets it: a NULL,
    hence a MemoryError, which is what the huge cases expect)."""
    text = []
    for f in sorted(logs.glob("*")) if logs.is_dir() else []:
        lines = [line for line in f.read_text(errors="replace").splitlines()
                 if line.strip() and "WARNING: AddressSanitizer failed to allocate" not in line]
        if lines:
            text.append(f"----- {f.name}\n" + "\n".join(lines))
    return "\n".join(text)


def run_probe_own_sanitizer_logs(tmp_path, name, mode, *, timeout, args=()):
    """run_probe, but under the sanitizers (ci/sanitize.sh) the child writes its reports to a
    folder of its own, which this reads: ci/sanitize.sh takes any file in its log folder for
    a failure, and some probes make ASan log a harmless warning (a refused huge allocation)
    or exercise a known bug (an xfail).  A report there fails the test (with the report)."""
    logs = tmp_path / f"sanitizer-logs-{name}"
    env = _child_env(logs)
    try:
        return run_probe(tmp_path, name, mode, timeout=timeout, args=args, env=env)
    finally:
        reports = _sanitizer_reports(logs)
        if reports:
            pytest.fail(f"sanitizer reports from probe {name}:\n{reports}")


def _child_env(logs: Path) -> dict:
    """The environment of a probe whose sanitizer reports go to ``logs`` (see
    run_probe_own_sanitizer_logs)."""
    env = dict(os.environ)
    if UNDER_ASAN:
        logs.mkdir()
        env["ASAN_OPTIONS"] = env.get("ASAN_OPTIONS", "") + f":log_path={logs}/asan"
        env["UBSAN_OPTIONS"] = env.get("UBSAN_OPTIONS", "") + f":log_path={logs}/ubsan"
    return env


def run_fill_hostile_batch(tmp_path, names, repeat=1):
    """Each fill hostile case of ``names``, ``repeat`` times, in child processes (under an
    address-space limit): {name: outcome}.  A call that kills its child (or hangs) gets the
    outcome ("crash", what happened, with the sanitizer reports and stderr), and the batch
    goes on in a new child with the calls after it, so that one crash costs one case.  An
    outcome that changes between repetitions becomes ("inconsistent", both)."""
    sequence = [name for _ in range(repeat) for name in names]
    outcomes: dict = {}
    attempt = 0
    while sequence:
        attempt += 1
        seq_file = tmp_path / f"fill-hostile-{attempt}.json"
        seq_file.write_text(json.dumps(sequence))
        logs = tmp_path / f"sanitizer-logs-fill-hostile-{attempt}"
        proc = subprocess.Popen(
            [sys.executable, str(CHILD), "fill_hostile", str(seq_file)], cwd=tmp_path,
            env=_child_env(logs), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            start_new_session=True)
        try:
            out, err = proc.communicate(timeout=120 * SLOW)
            how = (f"killed by {signal.Signals(-proc.returncode).name}"
                   if proc.returncode < 0 else f"exit status {proc.returncode}")
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
            how = f"no answer within {120 * SLOW} s (a hang?)"
        done = 0
        for line in out.splitlines():
            if line.startswith("["):
                name, outcome = json.loads(line)
                outcome = tuple(outcome)
                if name in outcomes and outcomes[name] != outcome:
                    outcome = ("inconsistent", f"{outcomes[name]} then {outcome}")
                outcomes[name] = outcome
                done += 1
        reports = _sanitizer_reports(logs)
        if proc.returncode == 0 and done == len(sequence):
            if reports:
                pytest.fail(f"sanitizer reports from the fill hostile batch:\n{reports}")
            break
        crashed = sequence[done]
        outcomes[crashed] = ("crash", f"{how}\n{reports}\n--- stderr\n{err[-3000:]}")
        sequence = [name for name in sequence[done + 1:] if name != crashed]
    return outcomes


@pytest.fixture(scope="module")
def huge_fill_outcomes(tmp_path_factory):
    """The huge cases' outcomes, from one child (more after a crash)."""
    names = sorted(name for name, c in fill_hostile_cases().items() if c.huge)
    return run_fill_hostile_batch(tmp_path_factory.mktemp("huge"), names)


@pytest.mark.parametrize("name", _fill_hostile_params(huge=True))
def test_fill_huge_dense_shape_raises_clean_error(name, huge_fill_outcomes):
    """dense_shape[0] of 2**41 .. 2**64-1 (TensorFlow crashed on such shapes): a clear
    MemoryError (or ValueError) naming dense_shape or the size, or the bad row's IndexError;
    never a crash or an attempt to use the memory."""
    _check_fill_hostile(name, huge_fill_outcomes[name])


@pytest.mark.parametrize("name", ["dense_rows_2**63-1_n1", "dense_rows_2**63-1_row_int64_max"])
def test_fill_huge_dense_shape_without_undefined_behaviour(name, huge_fill_outcomes):
    """N + dense_shape[0] beyond int64 (a fixed bug: it overflowed in the thread plan): no
    signed overflow (under UBSan: no abort)."""
    kind, msg = huge_fill_outcomes[name]
    assert kind != "crash", msg


def test_fill_hostile_input_batch_in_subprocess(tmp_path):
    """The whole fill hostile batch, huge cases included, three times, in children: no call
    crashes (but the known undefined behaviour, under the sanitizers), and every outcome is
    as expected, the same each time."""
    cases = fill_hostile_cases()
    outcomes = run_fill_hostile_batch(tmp_path, sorted(cases), repeat=3)
    assert sorted(outcomes) == sorted(cases)
    for name, outcome in outcomes.items():
        assert outcome[0] not in ("crash", "inconsistent"), (name, outcome)
        _check_fill_hostile(name, outcome)


# =============================================================================================
# 5. 64-bit sizes: N_full above 2**31
# =============================================================================================

BIG_N = 2**31 + 16
BIG_VALUES = {  # position -> int8 value; everything else is 0
    1: 100, 5: 3, 2**31 - 1: 9, 2**31: 11, 2**31 + 3: 7, 2**31 + 10: -2,
    2**31 + 11: 127, 2**31 + 12: 127, 2**31 + 15: 1,
}
BIG_CASES = {  # name -> (map, map dtype, num_threads); np.int64 threads: the Python path
    "shuffled_int64_t2": ([2**31 + 15, 5, 2**31, 2**31 + 3], "int64", 2),
    "sorted_int64_t1": ([5, 2**31, 2**31 + 3, 2**31 + 15], "int64", 1),
    "unsorted_uint32_t2_python_path": ([5, 2**31 + 15, 2**31, 2**31 + 3], "uint32",
                                       np.int64(2)),
    "entry_equal_to_n_full": ([5, 2**31 + 16], "int64", 2),
    "shuffled_int64_t1": ([2**31 + 15, 5, 2**31, 2**31 + 3], "int64", 1),
    "entry_2**32+5_uint64": ([2**32 + 5], "uint64", 1),  # 32-bit truncation would make it 5
}
if SANITIZE:  # each pass over 2 GiB takes several seconds under ASan: the first four only
    BIG_CASES = dict(list(BIG_CASES.items())[:4])


def test_n_full_above_2_31(tmp_path):
    """grad_values of 2**31 + 16 int8 values: positions on both sides of 2**31 are gathered
    and summed right on both kernel paths (block walk and marking), through the C fast path
    and the Python path, with int64 and uint32 maps, on 1 and 2 threads; an entry == N_full,
    or one that a 32-bit truncation would make valid, is out of range.  The 2 GiB array is
    an int8 np.memmap of a sparse temporary file, so only the few pages written take disk."""
    path = tmp_path / "g.bin"
    try:
        out = run_probe(tmp_path, "big", "big", timeout=300, args=[path])
    finally:
        path.unlink(missing_ok=True)
    referenced = {5, 2**31, 2**31 + 3, 2**31 + 15}
    total = sum(v for k, v in BIG_VALUES.items() if k not in referenced)  # 361
    wrapped = (total + 128) % 256 - 128  # int8 wrap: 105
    for name, (m, _, _) in BIG_CASES.items():
        got = out[name]
        if name.startswith("entry"):
            assert got[0] == "IndexError", (name, got)
            bad_j = next(j for j, v in enumerate(m) if v >= BIG_N)
            assert got[1] == index_error_message(bad_j, m[bad_j], BIG_N), (name, got)
        else:
            assert got[0] == "ok", (name, got)
            assert got[1] == [BIG_VALUES.get(k, 0) for k in m], (name, got)
            assert got[2] == "int8" and got[4] == "int8", (name, got)
            assert got[3] == wrapped, (name, got, wrapped)


# =============================================================================================
# 6. no leaks
# =============================================================================================


#: leaks probe arguments per op: (rounds, parallel rounds), and for the self-check
LEAK_ROUNDS = {"grad": ([20_000, 200], [2_000, 40]),
               "fill": ([2_000, 20], [500, 10]) if SANITIZE else ([3_000, 30], [600, 15])}


@pytest.mark.parametrize("op", OPS)
def test_no_memory_or_reference_leaks(tmp_path, op):
    """Many successful calls and as many failing ones (IndexError, TypeError, ValueError),
    plus parallel calls on inputs above the serial threshold, after a warm-up: RSS grows by
    less than 8 MiB and no tracked object's reference count changes.  grad: 20,000 + 20,000
    calls (fast path, Python path, bfloat16, out=, block walk and marking) and 200 + 200
    parallel ones on N_full = 400,000; fill: 3,000 + 3,000 (general and fast path, lists,
    object values, whose every object is tracked, strings, bfloat16, byte-swapped, rank 1 and
    3, N = 0) and 30 + 30 parallel ones on N = 100,000 (2 and 16 threads); fewer under the
    sanitizers."""
    env = dict(os.environ)
    if UNDER_ASAN:
        # ASan's quarantine holds freed memory (256 MiB by default): it would read as growth
        env["ASAN_OPTIONS"] = env.get("ASAN_OPTIONS", "") + ":quarantine_size_mb=0"
    rounds, injected = LEAK_ROUNDS[op]
    report = run_probe(tmp_path, f"leaks_{op}", "leaks", timeout=240, args=[op, *rounds],
                       env=env)
    growth = report["rss1"] - report["rss0"]
    calls = 2 * (rounds[0] + rounds[1])
    assert growth < 8 * 2**20, f"RSS grew by {growth / 2**20:.1f} MiB over {calls:,} calls"
    assert report["refs1"] == report["refs0"], "reference counts changed (a reference leak)"
    # self-check: the same probe, keeping every result alive, sees both kinds of leak
    leaky = run_probe(tmp_path, f"leaks_injected_{op}", "leaks", timeout=120,
                      args=[op, *injected, "inject-leak"], env=env)
    assert leaky["rss1"] - leaky["rss0"] > 8 * 2**20
    assert leaky["refs1"] != leaky["refs0"]


def test_refcounts_in_process():
    """The same reference check in this process, on every kind of input object."""
    import gc

    g = np.arange(1000, dtype=np.float64)
    rim = np.arange(0, 1000, 3)
    rim_list = rim.tolist()
    out = np.empty(rim.size)
    bad = rim.copy()
    bad[5] = 5000
    objs = [g, rim, rim_list, out, bad, np.dtype(np.float64)]
    gc.collect()
    before = [sys.getrefcount(o) for o in objs]
    for _ in range(2000):
        grad(rim, g)
        grad(rim_list, g, out=out)
        grad(rim, g[::-1], num_threads=2)
        with pytest.raises(IndexError):
            grad(bad, g, out=out)
    gc.collect()
    assert [sys.getrefcount(o) for o in objs] == before


def test_fill_refcounts_in_process():
    """Object values: while a result lives it holds one reference to each value object and one
    to the default object per empty row; once results are dropped every count is back where
    it was (general path, fast path, threaded sizes, errors)."""
    import gc

    rng = np.random.default_rng(31)
    items = [object() for _ in range(300)]
    vals = np.empty(300, dtype=object)
    vals[:] = items
    default = object()
    idx = np.stack([rng.integers(0, 200, 300), rng.integers(0, 5, 300)], axis=1)
    full = idx[np.argsort(idx[:, 0], kind="stable")]  # every row used, sorted: the fast path
    full[:, 0] = np.sort(np.concatenate([np.arange(200), rng.integers(0, 200, 100)]))
    bad = idx.copy()
    bad[250, 0] = 200
    objs = [*items, default, vals, idx, full, bad, np.dtype(object)]

    def refs():
        return [sys.getrefcount(o) for o in objs]

    gc.collect()
    before = refs()
    res = fill(idx, vals, [200, 5], default)
    empty_rows = int(res.empty_row_indicator.sum())
    assert empty_rows > 0
    alive = refs()
    assert alive[300] == before[300] + empty_rows
    assert alive[:300] == [b + 1 for b in before[:300]]
    del res
    for _ in range(100):
        fill(idx, vals, [200, 5], default)
        fill(full, vals, [200, 5], default)
        fill(idx.tolist(), vals, [200, 5], default)
        with pytest.raises(IndexError):
            fill(bad, vals, [200, 5], default)
        with pytest.raises(ValueError):
            fill(idx, vals[:-1], [200, 5], default)
    for _ in range(5):  # above the serial threshold: 69,800 references to the default
        fill(idx, vals, [70_000, 5], default, num_threads=2)
    gc.collect()
    assert refs() == before


# =============================================================================================
# 7. inputs are never written
# =============================================================================================


def _readonly(a):
    a = np.array(a, copy=True)
    a.setflags(write=False)
    return a


def _readonly_view(base, sl):
    v = base[sl]
    v.setflags(write=False)
    return v


def _layouts():
    """name -> (rim, g, kwargs): read-only inputs on every path (valid maps)."""
    rng = np.random.default_rng(17)
    g = rng.standard_normal(1000)
    rim = rng.integers(0, 1000, 600)
    big_g = rng.standard_normal(200_000).astype(np.float32)
    big_rim = rng.integers(0, 200_000, 150_000)
    cases = {
        "fast_path": (_readonly(rim), _readonly(g), {}),
        "fast_path_sorted_parallel": (_readonly(np.sort(big_rim)), _readonly(big_g),
                                      {"num_threads": 2}),
        "fast_path_shuffled_parallel": (_readonly(big_rim), _readonly(big_g),
                                        {"num_threads": 3}),
        "fast_path_out": (_readonly(rim), _readonly(g), {"out": np.empty(600)}),
        "byteswapped": (_readonly(rim.astype(">i4")), _readonly(g.astype(">f8")), {}),
        "byteswapped_parallel": (_readonly(big_rim.astype(">u4")), _readonly(big_g.astype(">f4")),
                                 {"num_threads": 2}),
        "strided": (_readonly_view(np.repeat(rim, 2), slice(None, None, 2)),
                    _readonly_view(np.repeat(g, 3), slice(None, None, 3)), {}),
        "negative_stride": (_readonly(rim)[::-1], _readonly(g)[::-1], {}),
        "unaligned": (unaligned(rim, writeable=False), unaligned(g, writeable=False), {}),
        "frombuffer_bytes": (np.frombuffer(rim.tobytes(), rim.dtype),
                             np.frombuffer(g.tobytes(), g.dtype), {}),
        "lists": (rim.tolist(), g.tolist(), {}),
        "tuple_and_readonly": (tuple(rim.tolist()), _readonly(g.astype(np.complex64)), {}),
        "broadcast_stride_0": (np.broadcast_to(rim[:1], (600,)),
                               np.broadcast_to(g[:1], (1000,)), {}),
    }
    if BFLOAT16 is not None:
        cases["bfloat16"] = (_readonly(rim), _readonly(g.astype(BFLOAT16)), {})
    return cases


def _owner(a):
    """The object whose bytes must not change (a view's base, the bytes behind frombuffer)."""
    if isinstance(a, np.ndarray):
        while isinstance(a.base, np.ndarray):
            a = a.base
        base = a.base.obj if isinstance(a.base, memoryview) else a.base
        return base if isinstance(base, bytes) else a
    return a


def _state(a):
    o = _owner(a)
    if isinstance(o, np.ndarray):
        return o.tobytes()
    if isinstance(o, bytes):
        return bytes(o)
    return repr(o)


@pytest.mark.parametrize("name", sorted(_layouts()))
def test_read_only_inputs_work_and_stay_unchanged(name):
    rim, g, kwargs = _layouts()[name]
    before = _state(rim), _state(g)
    res = grad(rim, g, **kwargs)
    check_result(res, rim, g)
    assert (_state(rim), _state(g)) == before, "an input was modified"
    # and an out-of-range map on the same layout leaves them unchanged too
    bad = np.asarray(rim).copy()
    bad[len(bad) // 2] = len(np.asarray(g))
    with pytest.raises(IndexError):
        grad(bad, g, **kwargs)
    assert (_state(rim), _state(g)) == before


@pytest.mark.parametrize("op", OPS)
def test_read_only_memory_maps_are_never_written(tmp_path, op):
    """Inputs in PROT_READ memory maps (a write would be a SIGSEGV), byte-swapped and strided,
    on 1 and 2 threads, then IndexErrors.  grad: both kernel paths; fill: shuffled rows (the
    general path) and sorted full rows (the fast path, whose outputs are read-only views of
    the maps), against sfer.reference bit for bit, and the IndexError on 1, 2 and 16
    threads."""
    report = run_probe(tmp_path, f"readonly_mmap_{op}", "readonly_mmap", timeout=120,
                       args=[op, tmp_path])
    assert report["problems"] == []
    if op == "grad":
        assert len(report["done"]) == 18
        assert report["done"][-2:] == [index_error_message(150_000, 300_000, 300_000)] * 2
    else:
        assert len(report["done"]) == 24 + 3
        assert report["done"][-3:] == [_rows_message(60_000, 60_000, 60_000)] * 3
    assert report["same"]


def _overlap_cases():
    """name -> (rim, g, out, the input out overlaps)."""
    rng = np.random.default_rng(23)
    g10 = np.arange(10, dtype=np.float64)
    buf = np.arange(30, dtype=np.float64)
    ibuf = np.arange(40, dtype=np.int64) % 10
    big = rng.standard_normal(200_000)
    big_rim = rng.integers(0, 200_000, 200_000)
    bad = np.array([0, 1, 2, 3, 4, 5, 6, 7, 8, 99])
    swapped = np.arange(20, dtype=np.float64)
    return {
        "out_is_grad_values": (np.arange(10), g10, g10, "grad_values"),
        "out_is_map": (ibuf[:10], np.arange(10, dtype=np.int64), ibuf[:10], "reverse_index_map"),
        "out_is_view_of_grad_values": (np.arange(10), buf[:20], buf[:20][5:15], "grad_values"),
        "out_partially_overlaps_grad_values": (np.arange(10), buf[:20], buf[15:25],
                                               "grad_values"),
        "out_partially_overlaps_map": (ibuf[:10], np.arange(10, dtype=np.int64), ibuf[5:15],
                                       "reverse_index_map"),
        "out_overlaps_byteswapped_grad_values": (
            np.arange(10), swapped.view(swapped.dtype.newbyteorder()), swapped[:10],
            "grad_values"),
        "out_overlaps_strided_grad_values": (np.arange(10), buf[::2], buf[:10], "grad_values"),
        "out_overlaps_grad_values_with_bad_map": (bad, g10, g10, "grad_values"),
        "out_overlaps_big_grad_values": (big_rim, big, big, "grad_values"),
        "out_overlaps_big_map": (big_rim, big.view(np.int64), big_rim, "reverse_index_map"),
    }


@pytest.mark.parametrize("name", sorted(_overlap_cases()))
def test_out_overlapping_an_input_is_rejected(name):
    rim, g, out, which = _overlap_cases()[name]
    before = _state(rim), _state(g), _state(out)
    for nt in (None, 1, 2):
        with pytest.raises(ValueError, match=f"^out must not overlap {which}$"):
            grad(rim, g, num_threads=nt, out=out)
    assert (_state(rim), _state(g), _state(out)) == before, "an input was modified"


def _fill_layouts():
    """name -> (indices, values, dense_shape, default_value, kwargs) of the forward op:
    read-only inputs (where arrays) on the general and the fast path, in every layout."""
    rng = np.random.default_rng(17)
    n, rows = 600, 400
    idx = np.stack([rng.integers(0, rows, n), rng.integers(-9, 9, n)], axis=1)  # rows empty
    full = idx[np.argsort(idx[:, 0], kind="stable")]  # every row used, sorted: the fast path
    full[:, 0] = np.sort(np.concatenate([np.arange(rows), rng.integers(0, rows, n - rows)]))
    vals = rng.standard_normal(n)
    shape = [rows, 9]
    bn, brows = 100_000, 50_000  # above the serial threshold
    big = np.stack([rng.integers(0, brows, bn), rng.integers(-9, 9, bn)], axis=1)
    big_full = big[np.argsort(big[:, 0], kind="stable")]
    big_full[:, 0] = np.sort(np.concatenate([np.arange(brows), rng.integers(0, brows, brows)]))
    big_vals = rng.standard_normal(bn).astype(np.float32)
    objs = np.empty(n, dtype=object)
    objs[:] = [f"v{i}" for i in range(n)]
    wide = np.zeros((n, 4), np.int64)
    wide[:, ::2] = idx
    ro = _readonly
    cases = {
        "general_path": (ro(idx), ro(vals), ro(shape), ro(0.5), {}),
        "fast_path": (ro(full), ro(vals), ro(shape), ro(0.5), {}),
        "fast_path_writeable_inputs": (full.copy(), vals.copy(), shape, 0.5, {}),
        "general_path_parallel_16_threads": (ro(big), ro(big_vals), [brows, 9],
                                             np.float32(1), {"num_threads": 16}),
        "fast_path_parallel": (ro(big_full), ro(big_vals), [brows, 9], np.float32(1),
                               {"num_threads": 2}),
        "fortran_indices": (ro(np.asfortranarray(idx)), ro(vals), shape, 0.5, {}),
        "fortran_fast_path": (ro(np.asfortranarray(full)), ro(vals), shape, 0.5, {}),
        "strided_columns": (_readonly_view(wide, (slice(None), slice(None, None, 2))),
                            ro(vals), shape, 0.5, {}),
        "strided_rows_fast_path": (_readonly_view(np.repeat(full, 2, axis=0), slice(None, None, 2)),
                                   _readonly_view(np.repeat(vals, 3), slice(None, None, 3)),
                                   shape, 0.5, {}),
        "negative_strides": (ro(idx)[::-1], ro(vals)[::-1], shape, 0.5, {}),
        "byteswapped": (ro(idx.astype(">i8")), ro(vals.astype(">f8")),
                        ro(np.array(shape, ">i4")), 0.5, {}),
        "byteswapped_fast_path": (ro(full.astype(">i4")), ro(vals.astype(">f4")), shape, 0.5,
                                  {}),
        # (unaligned indices: test_fill_unaligned_indices, in a child)
        "unaligned_values": (ro(idx), unaligned(vals, writeable=False), shape, 0.5, {}),
        "unaligned_values_fast_path": (ro(full), unaligned(vals, writeable=False), shape, 0.5,
                                       {}),
        "frombuffer_bytes": (np.frombuffer(idx.tobytes(), np.int64).reshape(n, 2),
                             np.frombuffer(vals.tobytes()), shape, 0.5, {}),
        "frombuffer_bytes_fast_path": (np.frombuffer(full.tobytes(), np.int64).reshape(n, 2),
                                       np.frombuffer(vals.tobytes()), shape, 0.5, {}),
        "memoryview_fast_path": (memoryview(full.copy()), memoryview(vals.copy()), shape, 0.5,
                                 {}),
        "lists": (idx.tolist(), vals.tolist(), shape, 0.5, {}),
        "tuples_fast_path": (tuple(map(tuple, full.tolist())), tuple(vals.tolist()),
                             tuple(shape), 0.5, {}),
        "broadcast_stride_0_fast_path": (np.broadcast_to(np.array([[0, 3]]), (n, 2)),
                                         np.broadcast_to(vals[:1], (n,)), [1, 9], 0.5, {}),
        "broadcast_stride_0": (np.broadcast_to(np.array([[2, 3]]), (n, 2)),
                               np.broadcast_to(vals[:1], (n,)), [5, 9], 0.5, {}),
        "object_values": (ro(idx), ro(objs), shape, ("default",), {}),
        "object_values_fast_path": (ro(full), ro(objs), shape, None, {}),
        "bytes_widened": (ro(idx), ro(vals.astype("S3")), shape, b"longer", {}),
        "bytes_fast_path": (ro(full), ro(vals.astype("S3")), shape, b"x", {}),
        "str_values": (ro(idx), ro(vals.astype("U4")), shape, "dflt", {}),
        "int32_indices_fast_path": (ro(full.astype(np.int32)), ro(vals), shape, 0.5, {}),
        "datetime_values": (ro(idx), ro(rng.integers(0, 10**9, n).astype("M8[s]")), shape,
                            np.datetime64(7, "s"), {}),
    }
    if BFLOAT16 is not None:
        cases["bfloat16"] = (ro(idx), ro(vals.astype(BFLOAT16)), shape, 1.5, {})
        cases["bfloat16_fast_path"] = (ro(full), ro(vals.astype(BFLOAT16)), shape, 1.5, {})
    return cases


def _fill_state(a):
    return a.tobytes() if isinstance(a, memoryview) else _state(a)


@pytest.mark.parametrize("name", sorted(_fill_layouts()))
def test_fill_read_only_inputs_work_and_stay_unchanged(name):
    """The forward op on read-only inputs in every layout: the reference's result, the inputs
    unchanged, and any output that shares memory with an input (the fast path's views) read-
    only, also when the inputs are writeable; then a bad row on the same layout."""
    *args, kwargs = _fill_layouts()[name]
    before = [_fill_state(a) for a in args]
    res = fill(*args, **kwargs)
    assert_same_fill(res, reference.sparse_fill_empty_rows(*args))
    assert [_fill_state(a) for a in args] == before, "an input was modified"
    for field_name, out in zip(res._fields, res):
        for a in args:
            if isinstance(a, (np.ndarray, memoryview)) and np.shares_memory(out, a):
                assert not out.flags.writeable, f"{field_name} is a writeable view of an input"
                with pytest.raises(ValueError, match="read-only"):
                    out[...] = out
    bad = np.array(np.asarray(args[0]))  # a copy, with a row out of range
    bad[len(bad) // 2, 0] = np.asarray(args[2])[0]
    with pytest.raises(IndexError, match=rf"^indices\[{len(bad) // 2}, 0\]"):
        fill(bad, *args[1:], **kwargs)
    assert [_fill_state(a) for a in args] == before, "an input was modified"


def test_fill_unaligned_indices(tmp_path):
    """C-contiguous int64 indices at an odd address (general path, fast path, 1, 2 and 16
    threads, an IndexError): the reference's result, the kernel reading an aligned copy (a
    fixed bug: UBSan reported misaligned int64 loads).  In a child, so that under UBSan a
    misaligned load aborts the child, not the test run."""
    report = run_probe_own_sanitizer_logs(tmp_path, "fill_unaligned", "fill_unaligned",
                                          timeout=60)
    assert report["problems"] == []
    assert len(report["done"]) == 9


# =============================================================================================
# 8. num_threads at sfer's cap
# =============================================================================================

@pytest.mark.skipif(UNDER_ASAN, reason="the address-space limit that keeps a failure small "
                                       "is unusable under ASan")
@pytest.mark.parametrize("op,case", [("grad", "blocks"), ("fill", "entries"), ("fill", "rows")])
def test_num_threads_at_the_cap(tmp_path, op, case):
    """num_threads=65536 on an input just above the serial threshold: taken as MAX_THREADS
    (256); the right result, never a crash or an absurd allocation (a fixed bug: sfer asked
    GNU libgomp for 65536 threads, which crashed the process, and the forward op allocated
    counters for each).  grad: N_full = MAX_THREADS blocks of int8 zeros (untouched pages);
    fill: 70,000 entries in 100 rows ("entries"), or 1 entry in 70,000 rows ("rows").  The
    child runs under an address-space limit of 16 GiB beyond what it maps at start, and a
    time limit (a hang fails)."""
    report = run_probe(tmp_path, f"many_threads_{op}_{case}", "many_threads", timeout=60,
                       args=[op, case])
    assert report["ok"], report
    assert report["cap"] == 256
    assert report["last_threads"] <= report["cap"], report
