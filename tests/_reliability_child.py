"""Child process for tests/test_reliability.py: ``python _reliability_child.py MODE [ARGS...]``.

Each mode is a probe that could hang or crash the process that runs it; the test runs it in a
new session with a time limit and asserts on the JSON object it prints on its last line of
stdout (and on its exit status).

MODE:
  fork WHICH WAIT [PATH]  the parent runs parallel regions, then children compute: WHICH is
                          "pool" (a fork Pool), "raw" or "raw_busy" (a bare os.fork() child,
                          which writes its report to PATH; "raw_busy": while another parent
                          thread is inside sfer), or "spawn" (spawn and forkserver Pools);
                          WAIT is the time limit for the children in seconds
  threads                 8 Python threads call sfer at once on shared inputs
  threadpoolctl           threadpoolctl finds and limits sfer's OpenMP
  hostile                 the hostile-input batch of test_reliability.hostile_cases(), 3 times
  big PATH                an int8 np.memmap of 2**31 + 16 elements (a sparse file at PATH)
  leaks ROUNDS PARALLEL_ROUNDS [inject-leak]
                          RSS and reference counts around many calls ("inject-leak": keep every
                          result alive, the test's self-check)
  readonly_mmap DIR       inputs in read-only (PROT_READ) memory maps in DIR
"""

import os
import sys

# The installed sfer, never the checkout's source tree; tests/ last (for reference.py,
# checks.py and test_reliability.py).
_TESTS_DIR = os.path.dirname(os.path.realpath(__file__))
_REPO_ROOT = os.path.dirname(_TESTS_DIR)
sys.path[:] = [p for p in sys.path
               if p and os.path.realpath(p) not in (_REPO_ROOT, _TESTS_DIR)]
sys.path.append(_TESTS_DIR)

import gc  # noqa: E402
import json  # noqa: E402
import multiprocessing as mp  # noqa: E402
import signal  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

import sfer  # noqa: E402
import sfer._runtime as core  # noqa: E402
from sfer import reference  # noqa: E402

# =============================================================================================
# fork: a forked child runs serially (GNU libgomp would hang it), spawn keeps its threads
# =============================================================================================

N_FULL_FORK = 2_000_000  # N + N_full far above the serial threshold: parallel regions run


def fork_inputs(seed):
    rng = np.random.default_rng(seed)
    g = rng.standard_normal(N_FULL_FORK).astype(np.float32)
    rim = rng.integers(0, N_FULL_FORK, size=N_FULL_FORK // 2)  # shuffled, duplicates: marking
    return rim, g


def run(seed, num_threads=2):
    """Both kernel paths on one input, checked against sfer.reference."""
    rim, g = fork_inputs(seed)
    results = {}
    for label, m in (("shuffled", rim), ("sorted", np.sort(rim))):
        r = sfer.sparse_fill_empty_rows_grad(m, g, num_threads=num_threads)
        problems = reference.mismatches(r, m, g)
        values_ok = not any(p.startswith("d_values") for p in problems)
        sum_ok = not any(p.startswith("d_default_value") for p in problems)
        bits = int(np.array(r.d_default_value, np.float32).view(np.uint32))
        results[label] = [bool(values_ok), bool(sum_ok), bits]
    return {"seed": seed, "pid": os.getpid(), "forked": core.in_forked_child(),
            "results": results, "max_threads": core.max_threads()}


def fork_mode(which, wait, path=None):
    wait = float(wait)
    report = {"openmp": sfer.openmp_enabled(), "parent_pid": os.getpid()}
    seeds = [1, 2, 3, 4]
    # the parent runs parallel regions first: libgomp's thread pool exists at fork time
    report["parent"] = {s: run(s) for s in seeds}
    if which == "pool":
        with mp.get_context("fork").Pool(2) as pool:
            try:
                report["children"] = pool.map_async(run, seeds).get(timeout=wait)
            except mp.TimeoutError:
                report["children"] = "timeout"
    elif which in ("raw", "raw_busy"):
        stop = threading.Event()
        if which == "raw_busy":  # a thread keeps the parent in parallel regions across the fork
            busy_in = fork_inputs(99)

            def busy():
                while not stop.is_set():
                    sfer.sparse_fill_empty_rows_grad(*busy_in, num_threads=2)

            threading.Thread(target=busy, daemon=True).start()
            time.sleep(0.2)
        pid = os.fork()
        if pid == 0:
            code = 3
            try:
                r = run(seeds[0])
                with open(path, "w") as f:
                    json.dump(r, f)
                same = r["results"] == report["parent"][seeds[0]]["results"]
                code = 0 if r["forked"] and same else 1
            finally:
                os._exit(code)
        deadline = time.monotonic() + wait
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                report["child_exit"] = os.waitstatus_to_exitcode(status)
                break
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                report["child_exit"] = "timeout"
                break
            time.sleep(0.02)
        stop.set()
        if report["child_exit"] == 0:
            with open(path) as f:
                report["children"] = [json.load(f)]
    elif which == "spawn":  # spawn and forkserver start a fresh interpreter
        report["children"] = []
        for method in ("spawn", "forkserver"):
            with mp.get_context(method).Pool(1) as pool:
                try:
                    c = pool.map_async(run, seeds[:1]).get(timeout=wait)[0]
                except mp.TimeoutError:
                    c = "timeout"
            report["children"].append([method, c])
    else:
        raise SystemExit(f"unknown fork probe {which!r}")
    # the parent goes on working in parallel after its children
    report["parent_after"] = run(seeds[0])
    return report


# =============================================================================================
# many Python threads at once; threadpoolctl
# =============================================================================================


def threads_mode():
    n_full, n = 300_000, 200_000
    rng = np.random.default_rng(5)
    gs = {
        "f64": rng.standard_normal(n_full) * 10.0 ** rng.uniform(-3, 3, n_full),
        "i64": rng.integers(-(2**62), 2**62, n_full),
    }
    gs["f32"] = gs["f64"].astype(np.float32)
    sorted_map = np.sort(rng.choice(n_full, n, replace=False))
    maps = {"sorted": sorted_map, "shuffled": rng.permutation(sorted_map),
            "duplicates": rng.integers(0, n_full, n)}
    bad = maps["shuffled"].copy()
    bad[150_000] = -1
    bad[123_456] = n_full
    bad_msg = f"reverse_index_map[123456] = {n_full} is out of range [0, {n_full})"
    combos = [(m, v) for m in maps for v in gs]
    expected = {(m, v): sfer.sparse_fill_empty_rows_grad(maps[m], gs[v], num_threads=1)
                for m, v in combos}
    arrays = dict(maps, bad=bad, **gs)
    before = {k: a.tobytes() for k, a in arrays.items()}

    nthreads, calls = 8, 6
    barrier = threading.Barrier(nthreads)
    errors, done = [], [0] * nthreads

    def worker(t):
        try:
            barrier.wait()
            for i in range(calls):
                m, v = combos[(t + i) % len(combos)]
                nt = [None, 1, 2, 3, 4][(7 * t + i) % 5]
                out = np.empty(n, gs[v].dtype) if (t + i) % 2 else None
                r = sfer.sparse_fill_empty_rows_grad(maps[m], gs[v], num_threads=nt, out=out)
                e = expected[m, v]
                if (r.d_values.tobytes() != e.d_values.tobytes()
                        or r.d_default_value.tobytes() != e.d_default_value.tobytes()):
                    errors.append(f"thread {t} call {i}: {m}/{v} num_threads={nt}: "
                                  f"result differs")
                if out is not None and r.d_values is not out:
                    errors.append(f"thread {t} call {i}: out= not returned")
                if i % 3 == 2:  # a failing call among the others
                    try:
                        sfer.sparse_fill_empty_rows_grad(bad, gs[v], num_threads=nt)
                    except IndexError as exc:
                        if str(exc) != bad_msg:
                            errors.append(f"thread {t}: wrong IndexError {exc}")
                    else:
                        errors.append(f"thread {t}: no IndexError")
                done[t] += 1
        except BaseException as exc:
            errors.append(f"thread {t}: {exc!r}")

    threads = [threading.Thread(target=worker, args=(t,), daemon=True)
               for t in range(nthreads)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(120)
    alive = sum(th.is_alive() for th in threads)
    changed = [k for k, a in arrays.items() if a.tobytes() != before[k]]
    # afterwards a single call on its own is still right
    again = sfer.sparse_fill_empty_rows_grad(maps["shuffled"], gs["f64"])
    again_ok = (again.d_values.tobytes() == expected["shuffled", "f64"].d_values.tobytes()
                and again.d_default_value == expected["shuffled", "f64"].d_default_value)
    return {"errors": errors, "done": done, "alive": alive, "changed": changed,
            "again_ok": bool(again_ok)}


def threadpoolctl_mode():
    import threadpoolctl

    n_full = 2_000_000
    rng = np.random.default_rng(9)
    g = rng.standard_normal(n_full).astype(np.float32)
    maps = {"sorted": np.sort(rng.integers(0, n_full, n_full // 2))}
    maps["shuffled"] = rng.permutation(maps["sorted"])
    grad = sfer.sparse_fill_empty_rows_grad
    expected = {k: grad(m, g, num_threads=1) for k, m in maps.items()}

    def same(r, e):
        return r.d_values.tobytes() == e.d_values.tobytes() and (
            r.d_default_value.tobytes() == e.d_default_value.tobytes())

    info = threadpoolctl.threadpool_info()
    omp = [os.path.realpath(i["filepath"]) for i in info if i["user_api"] == "openmp"]
    with open("/proc/self/maps") as f:
        mapped = sorted({os.path.realpath(line.split()[-1]) for line in f
                         if "libgomp" in line and "/" in line})
    before = core.max_threads()
    default_ok = all(same(grad(m, g), expected[k]) for k, m in maps.items())
    with threadpoolctl.threadpool_limits(limits=1, user_api="openmp"):
        inside = core.max_threads()
        limited_ok = all(same(grad(m, g), expected[k]) for k, m in maps.items())
        explicit_ok = all(same(grad(m, g, num_threads=2), expected[k]) for k, m in maps.items())
    after = core.max_threads()
    libs = os.path.join(os.path.dirname(os.path.dirname(sfer.__file__)), "sfer.libs")
    return {"omp": omp, "mapped": mapped, "before": before, "inside": inside,
            "after": after, "default_ok": default_ok, "limited_ok": limited_ok,
            "explicit_ok": explicit_ok, "openmp": sfer.openmp_enabled(),
            "wheel_libs": os.path.realpath(libs) if os.path.isdir(libs) else None}


# =============================================================================================
# hostile input; 64-bit sizes
# =============================================================================================


def hostile_mode():
    import test_reliability as T

    names = sorted(T.hostile_cases())
    outcomes = {}
    for _ in range(3):  # repeated: a corruption may crash a later call
        for name in names:
            print(name, file=sys.stderr, flush=True)  # the last name shows where a crash hit
            outcomes[name] = T._call_hostile(name)
    return outcomes


def big_mode(path):
    import test_reliability as T

    # A sparse temporary file: its holes read as 0 and take no disk space.
    g = np.memmap(path, dtype=np.int8, mode="w+", shape=(T.BIG_N,))
    for k, v in T.BIG_VALUES.items():
        g[k] = v
    out = {"backing": "sparse file"}
    for name, (m, dt, nt) in T.BIG_CASES.items():
        rim = np.array(m, dtype=dt)
        t0 = time.perf_counter()
        try:
            r = sfer.sparse_fill_empty_rows_grad(rim, g, num_threads=nt)
            out[name] = ["ok", r.d_values.tolist(), str(r.d_values.dtype),
                         int(r.d_default_value), type(r.d_default_value).__name__]
        except (TypeError, ValueError, IndexError, MemoryError) as exc:
            out[name] = [type(exc).__name__, str(exc)]
        out[name].append(round(time.perf_counter() - t0, 2))
    with open("/proc/self/status") as f:
        out["VmHWM"] = [line.split()[1] for line in f if line.startswith("VmHWM")][0]
    return out


# =============================================================================================
# no leaks
# =============================================================================================


def leaks_mode(rounds, parallel_rounds, *flags):
    from reference import BFLOAT16

    rounds, parallel_rounds = int(rounds), int(parallel_rounds)
    grad = sfer.sparse_fill_empty_rows_grad
    page = os.sysconf("SC_PAGE_SIZE")
    if list(flags) == ["inject-leak"]:  # the test's self-check: keep every result alive
        kept = []
        _grad = sfer.sparse_fill_empty_rows_grad

        def grad(*args, **kwargs):
            kept.append(_grad(*args, **kwargs))
            return kept[-1]

    def rss():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * page

    rng = np.random.default_rng(3)
    small_g = rng.standard_normal(100)
    small_rim = rng.integers(0, 100, 50)
    small_out = np.empty(50)
    med_g = rng.standard_normal(30_000).astype(np.float32)  # N + N_full < 65536: serial
    med_sorted = np.sort(rng.integers(0, 30_000, 20_000))
    med_shuffled = rng.permutation(med_sorted)
    med_out = np.empty(20_000, np.float32)
    big_g = rng.standard_normal(400_000).astype(np.float32)  # parallel
    big_sorted = np.sort(rng.integers(0, 400_000, 200_000))
    big_shuffled = rng.permutation(big_sorted)
    big_out = np.empty(200_000, np.float32)
    bf_g = small_g.astype(BFLOAT16 if BFLOAT16 is not None else np.float16)
    list_rim = small_rim.tolist()
    swapped_g = small_g.astype(">f8")
    strided_g = np.repeat(small_g, 2)[::2]
    bad_small = small_rim.copy()
    bad_small[-1] = 100
    bad_med = med_shuffled.copy()
    bad_med[15_000] = -5
    bad_big = big_shuffled.copy()
    bad_big[150_000] = 400_000
    float_rim = small_rim.astype(np.float64)
    wrong_out = np.empty(50, np.float32)
    g2d = small_g.reshape(10, 10)

    ok_calls = [
        lambda: grad(small_rim, small_g),  # C fast path
        lambda: grad(small_rim, small_g, out=small_out),
        lambda: grad(list_rim, swapped_g, num_threads=2),  # Python path
        lambda: grad(small_rim, strided_g, out=small_out),
        lambda: grad(small_rim, bf_g),
        lambda: grad(med_sorted, med_g),  # block walk
        lambda: grad(med_shuffled, med_g, out=med_out),  # marking
    ]
    bad_calls = [
        (IndexError, lambda: grad(bad_small, small_g)),
        (IndexError, lambda: grad(bad_med, med_g, out=med_out)),
        (IndexError, lambda: grad(list_rim + [-1], swapped_g)),
        (TypeError, lambda: grad(float_rim, small_g)),
        (TypeError, lambda: grad(small_rim, small_g, out=wrong_out)),
        (TypeError, lambda: grad(small_rim, small_g, num_threads=1.5)),
        (ValueError, lambda: grad(small_rim, g2d)),
        (ValueError, lambda: grad([[0], [1, 2]], small_g)),
        (ValueError, lambda: grad(small_rim, small_g, num_threads=0)),
        (ValueError, lambda: grad(small_rim, small_g, out=small_g[:50])),
    ]
    # parallel calls are far slower (and suffer most on a busy machine): fewer of them, on
    # inputs large enough that a leaked output (800 KB) or bitmap (50 KB a thread) per call
    # would show
    parallel_ok = [
        lambda: grad(big_sorted, big_g, num_threads=2),
        lambda: grad(big_shuffled, big_g, num_threads=2, out=big_out),
    ]
    parallel_bad = [
        (IndexError, lambda: grad(bad_big, big_g, num_threads=2)),
        (IndexError, lambda: grad(bad_big, big_g, num_threads=2, out=big_out)),
    ]
    tracked = [small_g, small_rim, small_out, med_g, med_sorted, med_shuffled, med_out, big_g,
               big_sorted, big_shuffled, big_out, bf_g, list_rim, swapped_g, strided_g,
               bad_small, bad_med, bad_big, float_rim, wrong_out, g2d, np.dtype(np.float64),
               np.dtype(np.float32), bf_g.dtype, sfer.GradResult]

    def run_calls(k, ok, bad):
        for i in range(k):
            ok[i % len(ok)]()
        for i in range(k):
            exc, call = bad[i % len(bad)]
            try:
                call()
            except exc:
                pass
            else:
                raise AssertionError(f"bad call {i % len(bad)} did not raise")

    def both(k, kp):
        run_calls(k, ok_calls, bad_calls)
        run_calls(kp, parallel_ok, parallel_bad)

    both(rounds // 10, parallel_rounds // 10)  # warm-up: caches, thread pools, allocator arenas
    gc.collect()
    refs0 = [sys.getrefcount(x) for x in tracked]
    rss0 = rss()
    both(rounds, parallel_rounds)
    gc.collect()
    rss1 = rss()
    refs1 = [sys.getrefcount(x) for x in tracked]
    return {"rss0": rss0, "rss1": rss1, "refs0": refs0, "refs1": refs1}


# =============================================================================================
# inputs are never written
# =============================================================================================


def readonly_mmap_mode(d):
    from checks import check_result

    rng = np.random.default_rng(4)
    specs = {
        "g": rng.standard_normal(300_000),
        "g_be": rng.standard_normal(300_000).astype(">f4"),
        "rim": rng.integers(0, 300_000, 200_000),
    }
    specs["rim_sorted"] = np.sort(specs["rim"])
    specs["rim_bad"] = specs["rim"].copy()
    specs["rim_bad"][150_000] = 300_000
    mm = {}
    for k, a in specs.items():
        w = np.memmap(f"{d}/{k}.bin", dtype=a.dtype, mode="w+", shape=a.shape)
        w[:] = a
        w.flush()
        del w
        mm[k] = np.memmap(f"{d}/{k}.bin", dtype=a.dtype, mode="r", shape=a.shape)  # PROT_READ
    done = []
    for rk in ("rim", "rim_sorted"):
        for gk in ("g", "g_be"):
            for nt in (1, 2):
                for view in (slice(None), slice(None, None, 2)):
                    rim, g = mm[rk][view], mm[gk]
                    check_result(sfer.sparse_fill_empty_rows_grad(rim, g, num_threads=nt),
                                 rim, g)
                    done.append(f"{rk}/{gk}/{nt}/{view.step}")
    for nt in (1, 2):
        try:
            sfer.sparse_fill_empty_rows_grad(mm["rim_bad"], mm["g"], num_threads=nt)
        except IndexError as exc:
            done.append(str(exc))
    same = all(np.array_equal(np.asarray(mm[k]), a) for k, a in specs.items())
    return {"done": done, "same": same}


MODES = {
    "fork": fork_mode,
    "threads": threads_mode,
    "threadpoolctl": threadpoolctl_mode,
    "hostile": hostile_mode,
    "big": big_mode,
    "leaks": leaks_mode,
    "readonly_mmap": readonly_mmap_mode,
}

if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in MODES:
        raise SystemExit(f"usage: {sys.argv[0]} {{{','.join(MODES)}}} [ARGS...]")
    print(json.dumps(MODES[sys.argv[1]](*sys.argv[2:])))
