"""Reliability: fork safety, many Python threads, threadpoolctl, GIL release, hostile input,
64-bit sizes, leaks, and inputs that are never written.

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
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import sfer
import sfer._runtime
from checks import check_result
from helpers import BFLOAT16, unaligned
from reference import index_error_message

grad = sfer.sparse_fill_empty_rows_grad

TESTS_DIR = Path(__file__).resolve().parent
SANITIZE = os.environ.get("SFER_SANITIZE") == "1"
ALLOW_SERIAL = os.environ.get("SFER_ALLOW_SERIAL_BUILD") == "1"
SLOW = 4 if SANITIZE else 1  # time limits are multiplied by this under the sanitizers

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


def check_fork_report(report, children):
    assert ALLOW_SERIAL or report["openmp"], "sfer was built without OpenMP"
    parent = report["parent"]
    for seed, p in parent.items():
        assert p["forked"] is False, "in_forked_child() is True in the parent"
        for label, (values_ok, sum_ok, _) in p["results"].items():
            assert values_ok and sum_ok, f"parent seed {seed} {label}: wrong result"
    assert report["parent_after"]["forked"] is False
    assert report["parent_after"]["results"] == parent["1"]["results"]
    assert children and all(c != "timeout" for c in children), f"children: {children}"
    for c in children:
        seed = str(c["seed"])
        assert c["pid"] != report["parent_pid"]
        for label, (values_ok, sum_ok, bits) in c["results"].items():
            assert values_ok, f"child seed {seed} {label}: d_values != g[rim]"
            assert sum_ok, f"child seed {seed} {label}: d_default_value off"
            # serial in the child, parallel in the parent: the same bits
            assert bits == parent[seed]["results"][label][2], (seed, label)


def test_fork_pool_after_parallel_region(tmp_path):
    """multiprocessing's fork Pool after the parent ran parallel regions: no hang (libgomp
    would hang the children), right results, in_forked_child() True only in the children."""
    report = run_probe(tmp_path, "fork_pool", "fork", timeout=90, args=["pool", 60])
    assert report["children"] != "timeout", "fork Pool workers hung (OpenMP after fork?)"
    check_fork_report(report, report["children"])
    for c in report["children"]:
        assert c["forked"] is True, "in_forked_child() is False in a fork Pool worker"


@pytest.mark.parametrize("mode", ["raw", "raw_busy"])
def test_raw_os_fork(tmp_path, mode):
    """A bare os.fork() child calls sfer with num_threads=2, either after the parent ran
    parallel regions ("raw") or while another parent thread is inside them ("raw_busy", a
    DataLoader-style fork from a busy process): it finishes (exit status 0 = correct and
    in_forked_child() True)."""
    report = run_probe(tmp_path, f"fork_{mode}", "fork", timeout=90,
                       args=[mode, 60, tmp_path / "child.json"])
    assert report["child_exit"] != "timeout", "the forked child hung (OpenMP after fork?)"
    assert report["child_exit"] == 0, f"the forked child failed: exit {report['child_exit']}"
    check_fork_report(report, report["children"])
    assert report["children"][0]["forked"] is True


def test_spawn_and_forkserver_children_keep_parallelism(tmp_path):
    """spawn and forkserver children are not "forked children": OpenMP stays on."""
    report = run_probe(tmp_path, "spawn", "fork", timeout=120, args=["spawn", 90])
    children = [c for _, c in report["children"]]
    check_fork_report(report, children)
    for method, c in report["children"]:
        assert c["forked"] is False, f"{method} child runs as a forked child (serial)"
        assert c["max_threads"] == report["parent"]["1"]["max_threads"], method


def test_in_forked_child_false_in_test_process():
    assert sfer._runtime.in_forked_child() is False
    assert sfer._runtime.max_threads() >= 1


# =============================================================================================
# 2. many Python threads at once; threadpoolctl
# =============================================================================================


def test_many_python_threads_share_inputs(tmp_path):
    """8 Python threads x 6 calls (+ failing calls) at once on shared sorted, shuffled and
    duplicated maps, N_full = 300,000 (parallel): every result is bitwise the single-threaded
    one, the IndexError the same, and no input changes."""
    report = run_probe(tmp_path, "threads", "threads", timeout=180)
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


def test_gil_released_during_kernel():
    """The main thread keeps running Python while a worker thread is inside sfer: the longest
    stretch of a call without a main-thread time stamp is far shorter than the call (if the
    GIL were held, it would be the whole call)."""
    n = 5_000_000 if SANITIZE else 20_000_000
    rng = np.random.default_rng(8)
    g = rng.standard_normal(n).astype(np.float32)
    rim = rng.permutation(np.flatnonzero(rng.random(n) < 0.9))  # random gathers: slow calls
    grad(rim[:1000], g, num_threads=1)
    report = stalls_during_calls(lambda: grad(rim, g, num_threads=1), 3)
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


def test_no_memory_or_reference_leaks(tmp_path):
    """20,000 successful calls (fast path, Python path, bfloat16, out=, block walk and marking)
    and 20,000 failing ones (IndexError, TypeError, ValueError), plus 200 + 200 parallel calls
    on N_full = 400,000, after a warm-up: RSS grows by less than 8 MiB and no tracked object's
    reference count changes."""
    env = dict(os.environ)
    if SANITIZE or "asan" in env.get("LD_PRELOAD", ""):
        # ASan's quarantine holds freed memory (256 MiB by default): it would read as growth
        env["ASAN_OPTIONS"] = env.get("ASAN_OPTIONS", "") + ":quarantine_size_mb=0"
    report = run_probe(tmp_path, "leaks", "leaks", timeout=240, args=[20_000, 200],
                       env=env)
    growth = report["rss1"] - report["rss0"]
    assert growth < 8 * 2**20, f"RSS grew by {growth / 2**20:.1f} MiB over 40,400 calls"
    assert report["refs1"] == report["refs0"], "reference counts changed (a reference leak)"
    # self-check: the same probe, keeping every result alive, sees both kinds of leak
    leaky = run_probe(tmp_path, "leaks_injected", "leaks", timeout=120,
                      args=[2_000, 40, "inject-leak"], env=env)
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


def test_read_only_memory_maps_are_never_written(tmp_path):
    """Inputs in PROT_READ memory maps (a write would be a SIGSEGV): both kernel paths, 1 and
    2 threads, byte-swapped, strided, and an IndexError."""
    report = run_probe(tmp_path, "readonly_mmap", "readonly_mmap", timeout=120,
                       args=[tmp_path])
    assert len(report["done"]) == 18
    assert report["done"][-2:] == [index_error_message(150_000, 300_000, 300_000)] * 2
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
