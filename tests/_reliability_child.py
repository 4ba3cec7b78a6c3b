"""Child process for tests/test_reliability.py: ``python _reliability_child.py MODE [ARGS...]``.

Each mode is a probe that could hang or crash the process that runs it; the test runs it in a
new session with a time limit and asserts on the JSON object it prints on its last line of
stdout (and on its exit status).  OP picks the op a probe calls: "grad"
(sfer.sparse_fill_empty_rows_grad) or "fill" (sfer.sparse_fill_empty_rows).

MODE:
  fork OP WHICH WAIT [PATH]
                          the parent runs parallel regions, then children compute: WHICH is
                          "pool" (a fork Pool), "raw" or "raw_busy" (a bare os.fork() child,
                          which writes its report to PATH; "raw_busy": while another parent
                          thread is inside sfer), or "spawn" (spawn and forkserver Pools);
                          WAIT is the time limit for the children in seconds
  threads OP              8 Python threads call the op at once on shared inputs
  threadpoolctl           threadpoolctl finds and limits sfer's OpenMP
  hostile                 the grad's hostile-input batch (test_reliability.hostile_cases()),
                          3 times
  fill_hostile FILE       the forward op's hostile cases (test_reliability.fill_hostile_cases())
                          named in the JSON list in FILE, one line of output each, under an
                          address-space limit (see limit_address_space)
  big PATH                an int8 np.memmap of 2**31 + 16 elements (a sparse file at PATH)
  leaks OP ROUNDS PARALLEL_ROUNDS [inject-leak]
                          RSS and reference counts around many calls ("inject-leak": keep every
                          result alive, the test's self-check)
  readonly_mmap OP DIR    inputs in read-only (PROT_READ) memory maps in DIR
  many_threads OP CASE    a call asking for sfer's largest num_threads (MAX_THREADS) on an input
                          above the serial threshold, under an address-space limit
  fill_unaligned          the forward op on C-contiguous int64 indices at an odd address
"""

import os
import sys

# The installed sfer, never the checkout's source tree; tests/ last (for oracle.py,
# checks.py and test_reliability.py).
_TESTS_DIR = os.path.dirname(os.path.realpath(__file__))
_REPO_ROOT = os.path.dirname(_TESTS_DIR)
sys.path[:] = [p for p in sys.path
               if p and os.path.realpath(p) not in (_REPO_ROOT, _TESTS_DIR)]
sys.path.append(_TESTS_DIR)

import functools  # noqa: E402
import gc  # noqa: E402
import json  # noqa: E402
import multiprocessing as mp  # noqa: E402
import signal  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
import zlib  # noqa: E402

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


N_FILL_FORK = 60_000  # N + dense_rows (90,000) above the serial threshold: parallel regions


def fill_fork_inputs(seed):
    """indices [N, 2] over N // 2 rows (about 13% of them empty), float32 values."""
    n = N_FILL_FORK
    rng = np.random.default_rng(seed)
    rows = rng.integers(0, n // 2, size=n)
    idx = np.stack([rows, rng.integers(-9, 9, size=n)], axis=1)
    return idx, rng.standard_normal(n).astype(np.float32), [n // 2, 9]


def fill_digest(res):
    """A CRC of the four outputs' bits (their dtypes are fixed here)."""
    crc = 0
    for a in res:
        crc = zlib.crc32(np.ascontiguousarray(a).tobytes(), crc)
    return crc


def _run_grad(seed, num_threads):
    """Both kernel paths on one input, checked against sfer.reference."""
    rim, g = fork_inputs(seed)
    results, threads = {}, []
    for label, m in (("shuffled", rim), ("sorted", np.sort(rim))):
        r = sfer.sparse_fill_empty_rows_grad(m, g, num_threads=num_threads)
        threads.append(core._last_threads())
        problems = reference.mismatches(r, m, g)
        values_ok = not any(p.startswith("d_values") for p in problems)
        sum_ok = not any(p.startswith("d_default_value") for p in problems)
        bits = int(np.array(r.d_default_value, np.float32).view(np.uint32))
        results[label] = [bool(values_ok), bool(sum_ok), bits]
    return results, threads


def _run_fill(seed, num_threads):
    """The general path on shuffled and on sorted rows and the fast path, each checked bit for
    bit against sfer.reference, and an IndexError (bad rows in two threads' slices)."""
    idx, vals, shape = fill_fork_inputs(seed)
    n, dense_rows = idx.shape[0], shape[0]
    by_row = idx[np.argsort(idx[:, 0], kind="stable")]
    full = by_row.copy()  # every row used, rows non-decreasing: the fast path
    full[:, 0] = np.sort(np.concatenate([np.arange(dense_rows),
                                         by_row[: n - dense_rows, 0]]))
    results, threads = {}, []
    for label, m in (("shuffled", idx), ("sorted", by_row), ("fast_path", full)):
        r = sfer.sparse_fill_empty_rows(m, vals, shape, np.float32(-1.5),
                                        num_threads=num_threads)
        threads.append(core._last_threads())
        want = reference.sparse_fill_empty_rows(m, vals, shape, np.float32(-1.5))
        same = all(a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()
                   for a, b in zip(r, want))
        bad = m.copy()
        bad[n - 3, 0] = dense_rows  # in the last thread's slice, after the first bad one
        bad[n // 2 + 1, 0] = -1
        try:
            sfer.sparse_fill_empty_rows(bad, vals, shape, np.float32(0), num_threads=num_threads)
            error_ok = False
        except IndexError as exc:
            error_ok = str(exc) == (f"indices[{n // 2 + 1}, 0] = -1 is out of range "
                                    f"[0, {dense_rows})")
        results[label] = [bool(same), bool(error_ok), fill_digest(r)]
    return results, threads


def run(seed, num_threads=2, op="grad"):
    """The op's probe calls on the input of ``seed``: results[label] = [check, check, bits]
    (the bits must be the same in every process and on every thread count); threads: the
    thread count each call ran with."""
    results, threads = (_run_grad if op == "grad" else _run_fill)(seed, num_threads)
    return {"seed": seed, "pid": os.getpid(), "forked": core.in_forked_child(),
            "results": results, "max_threads": core.max_threads(), "threads": threads}


def busy_call(op):
    """A call that keeps a thread in parallel regions (fork raw_busy)."""
    if op == "grad":
        args = fork_inputs(99)
        return lambda: sfer.sparse_fill_empty_rows_grad(*args, num_threads=2)
    idx, vals, shape = fill_fork_inputs(99)
    return lambda: sfer.sparse_fill_empty_rows(idx, vals, shape, np.float32(0), num_threads=2)


def fork_mode(op, which, wait, path=None):
    wait = float(wait)
    report = {"openmp": sfer.openmp_enabled(), "parent_pid": os.getpid(), "op": op}
    seeds = [1, 2, 3, 4]
    job = functools.partial(run, op=op)  # picklable: the Pools take it
    # the parent runs parallel regions first: libgomp's thread pool exists at fork time
    report["parent"] = {s: job(s) for s in seeds}
    if which == "pool":
        with mp.get_context("fork").Pool(2) as pool:
            try:
                report["children"] = pool.map_async(job, seeds).get(timeout=wait)
            except mp.TimeoutError:
                report["children"] = "timeout"
    elif which in ("raw", "raw_busy"):
        stop = threading.Event()
        if which == "raw_busy":  # a thread keeps the parent in parallel regions across the fork
            call = busy_call(op)

            def busy():
                while not stop.is_set():
                    call()

            threading.Thread(target=busy, daemon=True).start()
            time.sleep(0.2)
        pid = os.fork()
        if pid == 0:
            code = 3
            try:
                r = job(seeds[0])
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
                    c = pool.map_async(job, seeds[:1]).get(timeout=wait)[0]
                except mp.TimeoutError:
                    c = "timeout"
            report["children"].append([method, c])
    else:
        raise SystemExit(f"unknown fork probe {which!r}")
    # the parent goes on working in parallel after its children
    report["parent_after"] = job(seeds[0])
    return report


# =============================================================================================
# many Python threads at once; threadpoolctl
# =============================================================================================


def hammer(step, arrays, again, nthreads=8, calls=6):
    """``nthreads`` Python threads start together (a barrier) and each makes ``calls`` calls
    ``step(t, i)``, which returns a list of problems.  Returns the problems, the calls each
    thread finished, the threads still alive after 120 s, the names of the ``arrays`` (the
    shared inputs) whose bytes changed, and whether ``again()`` (a single call afterwards, on
    its own) is still right."""
    before = {k: a.tobytes() for k, a in arrays.items()}  # object arrays: their references
    barrier = threading.Barrier(nthreads)
    errors, done = [], [0] * nthreads

    def worker(t):
        try:
            barrier.wait()
            for i in range(calls):
                errors.extend(step(t, i))
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
    return {"errors": errors, "done": done, "alive": alive, "changed": changed,
            "again_ok": bool(again())}


def _grad_threads():
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

    def step(t, i):
        errors = []
        m, v = combos[(t + i) % len(combos)]
        nt = [None, 1, 2, 3, 4][(7 * t + i) % 5]
        out = np.empty(n, gs[v].dtype) if (t + i) % 2 else None
        r = sfer.sparse_fill_empty_rows_grad(maps[m], gs[v], num_threads=nt, out=out)
        e = expected[m, v]
        if (r.d_values.tobytes() != e.d_values.tobytes()
                or r.d_default_value.tobytes() != e.d_default_value.tobytes()):
            errors.append(f"thread {t} call {i}: {m}/{v} num_threads={nt}: result differs")
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
        return errors

    def again():
        r = sfer.sparse_fill_empty_rows_grad(maps["shuffled"], gs["f64"])
        e = expected["shuffled", "f64"]
        return (r.d_values.tobytes() == e.d_values.tobytes()
                and r.d_default_value == e.d_default_value)

    return step, dict(maps, bad=bad, **gs), again


def _fill_threads():
    n, dense_rows = (100_000, 50_000) if os.environ.get("SFER_SANITIZE") == "1" else (
        200_000, 100_000)
    rng = np.random.default_rng(6)
    rows = rng.integers(0, dense_rows, n)  # about 13% of the rows empty
    shuffled = np.stack([rows, rng.integers(-(2**62), 2**62, n)], axis=1)
    by_row = shuffled[np.argsort(rows, kind="stable")]
    full = by_row.copy()  # every row used, rows non-decreasing: the fast path
    full[:, 0] = np.sort(np.concatenate([np.arange(dense_rows),
                                         rng.integers(0, dense_rows, n - dense_rows)]))
    indices = {"shuffled": shuffled, "sorted": by_row, "fast_path": full,
               "rank_1": shuffled[:, :1].copy()}
    shapes = {k: [dense_rows] + [2**62] * (a.shape[1] - 1) for k, a in indices.items()}
    objs = np.empty(n, dtype=object)
    objs[:] = [f"o{i}" for i in range(n)]
    values = {  # name -> (values, default_value)
        "f64": (rng.standard_normal(n), np.float64(-0.0)),
        "i8": (rng.integers(-128, 128, n).astype(np.int8), -7),
        "S3": (rng.integers(0, 10**3, n).astype("S3"), b"dflt"),  # widened to S4
        "object": (objs, ("the default",)),
    }
    bad = shuffled.copy()
    first = n * 5 // 8 + 3  # the first bad entry; a later one after it
    bad[n * 3 // 4 - 1, 0] = -1
    bad[first, 0] = dense_rows
    bad_msg = f"indices[{first}, 0] = {dense_rows} is out of range [0, {dense_rows})"
    combos = [(k, v) for k in indices for v in values]

    def call(k, v, nt, idx=None):
        return sfer.sparse_fill_empty_rows(indices[k] if idx is None else idx, values[v][0],
                                           shapes[k], values[v][1], num_threads=nt)

    def bits(res):  # object values: their references, so the identity of every object
        return [a.tobytes() for a in res] + [str(a.dtype) for a in res]

    expected = {(k, v): bits(call(k, v, 1)) for k, v in combos}

    def step(t, i):
        errors = []
        k, v = combos[(3 * t + i) % len(combos)]
        nt = [None, 1, 2, 3, 16][(7 * t + i) % 5]
        if bits(call(k, v, nt)) != expected[k, v]:
            errors.append(f"thread {t} call {i}: {k}/{v} num_threads={nt}: result differs")
        if i % 3 == 2:  # a failing call among the others
            try:
                call("shuffled", v, nt, bad)
            except IndexError as exc:
                if str(exc) != bad_msg:
                    errors.append(f"thread {t}: wrong IndexError {exc}")
            else:
                errors.append(f"thread {t}: no IndexError")
        return errors

    def again():
        return bits(call("shuffled", "f64", None)) == expected["shuffled", "f64"]

    arrays = dict(indices, bad=bad, **{f"values_{v}": a for v, (a, _) in values.items()})
    return step, arrays, again


def threads_mode(op):
    step, arrays, again = (_grad_threads if op == "grad" else _fill_threads)()
    return hammer(step, arrays, again)


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


def under_asan():
    """Whether the AddressSanitizer runtime is loaded (ci/sanitize.sh preloads it)."""
    return "asan" in os.environ.get("LD_PRELOAD", "") or os.environ.get("SFER_SANITIZE") == "1"


#: the address space a probe that limits it may use beyond what it has mapped at that point
SPARE_ADDRESS_SPACE = 16 << 30


def limit_address_space():
    """Cap this process's address space (RLIMIT_AS) at what it maps now plus 16 GiB, so that
    an absurd allocation or an absurd number of thread stacks fails at once, even where the
    kernel overcommits memory (vm.overcommit_memory=1), instead of taking the machine's memory.
    Not under ASan: its shadow memory needs terabytes of address space (there, its allocator
    refuses any allocation above 1 TiB, and ci/sanitize.sh lets it return NULL).  Returns the
    limit in bytes, or None."""
    import resource

    if under_asan():
        return None
    with open("/proc/self/status") as f:
        vm = [int(line.split()[1]) << 10 for line in f if line.startswith("VmSize")][0]
    limit = vm + SPARE_ADDRESS_SPACE
    resource.setrlimit(resource.RLIMIT_AS, (limit, resource.getrlimit(resource.RLIMIT_AS)[1]))
    return limit


def hostile_mode():
    import test_reliability as T

    names = sorted(T.hostile_cases())
    outcomes = {}
    for _ in range(3):  # repeated: a corruption may crash a later call
        for name in names:
            print(name, file=sys.stderr, flush=True)  # the last name shows where a crash hit
            outcomes[name] = T._call_hostile(name)
    return outcomes


def fill_hostile_mode(sequence_file):
    """The fill hostile cases named in the JSON list in ``sequence_file``, in that order (a
    name may come several times), under an address-space limit.  Each outcome is printed as
    a line ``[name, outcome]`` as soon as it is known, so that after a crash the test knows
    which calls finished (and which one crashed: the next), and can go on with the rest."""
    import test_reliability as T

    limit_address_space()
    with open(sequence_file) as f:
        sequence = json.load(f)
    for name in sequence:
        print(name, file=sys.stderr, flush=True)
        print(json.dumps([name, T._call_fill_hostile(name)]), flush=True)
    return {"done": len(sequence)}


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


def _grad_leak_calls(grad):
    """(ok calls, failing calls, parallel ok calls, parallel failing calls, tracked objects)
    of the grad op, which the calls make through ``grad``."""
    from oracle import BFLOAT16

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
    return ok_calls, bad_calls, parallel_ok, parallel_bad, tracked


def _fill_leak_calls(fill):
    """The same lists for the forward op, which the calls make through ``fill``: general and
    fast path, lists, object values (each object tracked), strings, bfloat16, byte-swapped,
    Fortran-order, rank 1 and 3, N = 0, serial and parallel sizes, and every kind of error."""
    from oracle import BFLOAT16

    rng = np.random.default_rng(3)
    shape = [40, 9]
    idx = np.stack([rng.integers(0, 40, 50), rng.integers(-9, 9, 50)], axis=1)  # rows empty
    full = idx[np.argsort(idx[:, 0], kind="stable")]  # every row used, sorted: the fast path
    full[:, 0] = np.sort(np.concatenate([np.arange(40), rng.integers(0, 40, 10)]))
    vals = rng.standard_normal(50)
    items = [object() for _ in range(50)]
    obj_vals = np.empty(50, dtype=object)
    obj_vals[:] = items
    obj_default = object()
    strs = rng.integers(0, 1000, 50).astype("S3")
    ustrs = strs.astype("U3")
    bf = vals.astype(BFLOAT16 if BFLOAT16 is not None else np.float16)
    list_idx, list_vals = idx.tolist(), vals.tolist()
    swapped_idx, swapped_vals = idx.astype(">i4"), vals.astype(">f8")
    swapped_shape = np.array(shape, ">i8")
    fortran_idx = np.asfortranarray(idx)
    rank1, rank3 = idx[:, :1].copy(), np.concatenate([idx, idx[:, 1:]], axis=1)
    empty_idx, empty_vals = np.zeros((0, 2), np.int64), np.zeros(0)
    med_shape = [20_000, 5]  # N + dense_rows < 65536: serial
    med_idx = np.stack([rng.integers(0, 20_000, 20_000), rng.integers(0, 5, 20_000)], axis=1)
    med_vals = rng.standard_normal(20_000).astype(np.float32)
    big_shape = [50_000, 5]  # parallel
    big_idx = np.stack([rng.integers(0, 50_000, 100_000), rng.integers(0, 5, 100_000)], axis=1)
    big_full = big_idx[np.argsort(big_idx[:, 0], kind="stable")]
    big_full[:, 0] = np.sort(np.concatenate([np.arange(50_000),
                                             rng.integers(0, 50_000, 50_000)]))
    big_vals = rng.standard_normal(100_000).astype(np.float32)
    bad_small = idx.copy()
    bad_small[-1, 0] = 40
    bad_med = med_idx.copy()
    bad_med[15_000, 0] = -5
    bad_big = big_idx.copy()
    bad_big[70_000, 0] = 50_000
    bad_big[99_000, 0] = -1
    float_idx = idx.astype(np.float64)
    int_vals = np.zeros(50, np.int8)
    zero = np.float32(0)

    ok_calls = [
        lambda: fill(idx, vals, shape, 0.5),  # general path
        lambda: fill(full, vals, shape, 0.5),  # fast path: read-only views
        lambda: fill(list_idx, list_vals, shape, -1.0, num_threads=2),
        lambda: fill(idx, obj_vals, shape, obj_default),
        lambda: fill(full, obj_vals, shape, obj_default),
        lambda: fill(idx, strs, shape, b"wider"),  # widened: S5
        lambda: fill(idx, ustrs, shape, "u"),
        lambda: fill(idx, bf, shape, 1.5),
        lambda: fill(swapped_idx, swapped_vals, swapped_shape, 0.0),
        lambda: fill(fortran_idx, vals, shape, 0.0),
        lambda: fill(rank1, vals, shape[:1], 0.0),
        lambda: fill(rank3, vals, shape + [9], 0.0),
        lambda: fill(empty_idx, empty_vals, shape, 0.0),
        lambda: fill(med_idx, med_vals, med_shape, zero),
    ]
    bad_calls = [
        (IndexError, lambda: fill(bad_small, vals, shape, 0.0)),
        (IndexError, lambda: fill(bad_small, obj_vals, shape, obj_default)),
        (IndexError, lambda: fill(bad_med, med_vals, med_shape, zero)),
        (IndexError, lambda: fill(list_idx + [[-1, 0]], list_vals + [0.0], shape, 0.0)),
        (TypeError, lambda: fill(float_idx, vals, shape, 0.0)),
        (TypeError, lambda: fill(idx, int_vals, shape, float("nan"))),
        (TypeError, lambda: fill(idx, strs, shape, "str")),
        (TypeError, lambda: fill(idx, vals, shape, 0.0, num_threads=1.5)),
        (ValueError, lambda: fill(idx, vals[:-1], shape, 0.0)),
        (ValueError, lambda: fill(idx, vals, [-1, 9], 0.0)),
        (ValueError, lambda: fill(idx, vals, shape, [0.0])),
        (ValueError, lambda: fill(idx, int_vals, shape, 300)),
        (ValueError, lambda: fill(idx, vals, shape, 0.0, num_threads=0)),
        (ValueError, lambda: fill([[0, 0], [1]], [1.0, 2.0], shape, 0.0)),
    ]
    # parallel calls are slower: fewer of them, on inputs large enough that a leaked output
    # (1.7 MB) or counter array (400 KB a thread) per call would show
    parallel_ok = [
        lambda: fill(big_idx, big_vals, big_shape, zero, num_threads=2),
        lambda: fill(big_full, big_vals, big_shape, zero, num_threads=2),
        lambda: fill(big_idx, big_vals, big_shape, zero, num_threads=16),
    ]
    parallel_bad = [
        (IndexError, lambda: fill(bad_big, big_vals, big_shape, zero, num_threads=2)),
        (IndexError, lambda: fill(bad_big, big_vals, big_shape, zero, num_threads=16)),
    ]
    tracked = [idx, full, vals, obj_vals, obj_default, *items, strs, ustrs, bf, list_idx,
               list_vals, swapped_idx, swapped_vals, swapped_shape, fortran_idx, rank1, rank3,
               empty_idx, empty_vals, med_idx, med_vals, big_idx, big_full, big_vals,
               bad_small, bad_med, bad_big, float_idx, int_vals, zero, np.dtype(np.float64),
               np.dtype(np.float32), np.dtype(np.int64), np.dtype(object), bf.dtype,
               strs.dtype, sfer.FillResult]
    return ok_calls, bad_calls, parallel_ok, parallel_bad, tracked


def leaks_mode(op, rounds, parallel_rounds, *flags):
    rounds, parallel_rounds = int(rounds), int(parallel_rounds)
    op_fn = sfer.sparse_fill_empty_rows_grad if op == "grad" else sfer.sparse_fill_empty_rows
    call = op_fn
    page = os.sysconf("SC_PAGE_SIZE")
    if list(flags) == ["inject-leak"]:  # the test's self-check: keep every result alive
        kept = []

        def keep(*args, **kwargs):
            kept.append(op_fn(*args, **kwargs))
            return kept[-1]

        call = keep

    def rss():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * page

    ok_calls, bad_calls, parallel_ok, parallel_bad, tracked = (
        _grad_leak_calls if op == "grad" else _fill_leak_calls)(lambda *a, **k: call(*a, **k))

    def run_calls(k, ok, bad):
        for i in range(k):
            ok[i % len(ok)]()
        for i in range(k):
            exc, bad_call = bad[i % len(bad)]
            try:
                bad_call()
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


def read_only_maps(d, specs):
    """Each array of ``specs`` written to a file in ``d`` and mapped back read-only (PROT_READ:
    a write is a SIGSEGV)."""
    mm = {}
    for k, a in specs.items():
        w = np.memmap(f"{d}/{k}.bin", dtype=a.dtype, mode="w+", shape=a.shape)
        w[:] = a
        w.flush()
        del w
        mm[k] = np.memmap(f"{d}/{k}.bin", dtype=a.dtype, mode="r", shape=a.shape)
    return mm


def _grad_readonly_mmap(d):
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
    mm = read_only_maps(d, specs)
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
    return {"done": done, "same": same, "problems": []}


def _fill_readonly_mmap(d):
    """indices (shuffled rows, the fast path's sorted full rows, byte-swapped), values (native,
    byte-swapped) and dense_shape in read-only maps: all of them, and every other entry
    (strided), on 1 and 2 threads, against sfer.reference bit for bit; outputs that share
    memory with an input (the fast path's views) must be read-only; then IndexErrors."""
    from checks import fill_digest

    n, dense_rows = 90_000, 60_000
    rng = np.random.default_rng(4)
    idx = np.stack([rng.integers(0, dense_rows, n), rng.integers(-9, 9, n)], axis=1)
    fast = idx[np.argsort(idx[:, 0], kind="stable")]
    fast[:, 0] = np.sort(np.concatenate([np.arange(dense_rows),
                                         rng.integers(0, dense_rows, n - dense_rows)]))
    bad = idx.copy()
    bad[85_000, 0] = -1  # in the last thread's slice, after the first bad one
    bad[60_000, 0] = dense_rows
    specs = {"idx": idx, "idx_fast": fast, "idx_be": idx.astype(">i8"), "idx_bad": bad,
             "vals": rng.standard_normal(n), "vals_be": rng.standard_normal(n).astype(">f4"),
             "shape": np.array([dense_rows, 9])}
    mm = read_only_maps(d, specs)
    done, problems = [], []
    for ik in ("idx", "idx_fast", "idx_be"):
        for vk in ("vals", "vals_be"):
            for view in (slice(None), slice(None, None, 2)):
                ind, vals = mm[ik][view], mm[vk][view]
                want = fill_digest(reference.sparse_fill_empty_rows(ind, vals, mm["shape"],
                                                                    -2.5))
                for nt in (1, 2):
                    label = f"{ik}/{vk}/{view.step}/{nt}"
                    r = sfer.sparse_fill_empty_rows(ind, vals, mm["shape"], -2.5,
                                                    num_threads=nt)
                    if fill_digest(r) != want:
                        problems.append(f"{label}: differs from the reference")
                    for name, out in zip(r._fields, r):
                        shared = any(np.shares_memory(out, x) for x in (ind, vals, mm["shape"]))
                        if shared and out.flags.writeable:
                            problems.append(f"{label}: {name} is a writeable view of an input")
                    done.append(label)
    for nt in (1, 2, 16):
        try:
            sfer.sparse_fill_empty_rows(mm["idx_bad"], mm["vals"], mm["shape"], -2.5,
                                        num_threads=nt)
        except IndexError as exc:
            done.append(str(exc))
    same = all(np.array_equal(np.asarray(mm[k]), a) for k, a in specs.items())
    return {"done": done, "same": same, "problems": problems}


def readonly_mmap_mode(op, d):
    return (_grad_readonly_mmap if op == "grad" else _fill_readonly_mmap)(d)


def unaligned_2d(a):
    """A copy of the 2-D array ``a`` at an odd byte offset: C-contiguous, not aligned."""
    raw = np.zeros(a.size * a.itemsize + 1, dtype=np.uint8)
    view = raw[1:].view(a.dtype).reshape(a.shape)
    view[...] = a
    return view


def fill_unaligned_mode():
    """The forward op on C-contiguous int64 indices at an odd address (general path, fast
    path, above the serial threshold on 2 and 16 threads, an IndexError), against
    sfer.reference bit for bit."""
    from checks import fill_digest

    rng = np.random.default_rng(12)
    problems, done = [], []
    for n, rows, nt in ((600, 400, 1), (100_000, 50_000, 2), (100_000, 50_000, 16)):
        idx = np.stack([rng.integers(0, rows, n), rng.integers(-9, 9, n)], axis=1)
        fast = idx[np.argsort(idx[:, 0], kind="stable")]
        fast[:, 0] = np.sort(np.concatenate([np.arange(rows), rng.integers(0, rows, n - rows)]))
        vals = rng.standard_normal(n)
        for label, ind in (("general", idx), ("fast_path", fast)):
            u = unaligned_2d(ind)
            assert not u.flags.aligned and u.flags.c_contiguous
            want = fill_digest(reference.sparse_fill_empty_rows(ind, vals, [rows, 9], 0.5))
            got = fill_digest(sfer.sparse_fill_empty_rows(u, vals, [rows, 9], 0.5,
                                                          num_threads=nt))
            if got != want:
                problems.append(f"{label} N={n} num_threads={nt}: differs from the reference")
            done.append(f"{label}/{n}/{nt}")
        bad = unaligned_2d(idx)
        bad[n // 3, 0] = -1
        try:
            sfer.sparse_fill_empty_rows(bad, vals, [rows, 9], 0.5, num_threads=nt)
            problems.append(f"N={n}: no IndexError")
        except IndexError as exc:
            done.append(str(exc))
    return {"problems": problems, "done": done}


# =============================================================================================
# num_threads at sfer's cap
# =============================================================================================


def many_threads_mode(op, case):
    """One call asking for 65536 threads (far above MAX_THREADS, which sfer takes it as) on an
    input above the serial threshold, under an address-space limit (so that thousands of
    thread stacks, or counters for each thread, fail fast instead of taking the machine).
    Reports whether the result is right, the threads it ran with, and how long it took."""
    import sfer._grad

    limit = limit_address_space()
    c = sfer._grad._constants()
    cap = c["MAX_THREADS"]
    ask = 65536
    if op == "grad":  # "blocks": N_full of MAX_THREADS blocks, i.e. threads up to the cap
        g = np.zeros(cap * c["BLOCK"], np.int8)  # 256 MiB of untouched zero pages
        rim = np.array([0, g.size - 1])
        t0 = time.perf_counter()
        r = sfer.sparse_fill_empty_rows_grad(rim, g, num_threads=ask)
        seconds = time.perf_counter() - t0
        ok = r.d_values.tolist() == [0, 0] and int(r.d_default_value) == 0
    else:
        rng = np.random.default_rng(7)
        if case == "entries":  # 70,000 entries in 100 rows
            idx = np.stack([rng.integers(0, 100, 70_000), rng.integers(0, 3, 70_000)], axis=1)
            shape = [100, 3]
        else:  # "rows": 1 entry, 70,000 rows (counters: threads x dense_rows)
            idx, shape = np.array([[5, 1]]), [70_000, 3]
        vals = rng.standard_normal(idx.shape[0])
        want = sfer.sparse_fill_empty_rows(idx, vals, shape, -1.0, num_threads=1)
        t0 = time.perf_counter()
        r = sfer.sparse_fill_empty_rows(idx, vals, shape, -1.0, num_threads=ask)
        seconds = time.perf_counter() - t0
        ok = all(a.tobytes() == b.tobytes() for a, b in zip(r, want))
    with open("/proc/self/status") as f:
        threads = [int(line.split()[1]) for line in f if line.startswith("Threads")][0]
    return {"ok": bool(ok), "seconds": seconds, "threads": threads, "limit": limit,
            "last_threads": core._last_threads(), "cap": cap}


MODES = {
    "fork": fork_mode,
    "threads": threads_mode,
    "threadpoolctl": threadpoolctl_mode,
    "hostile": hostile_mode,
    "fill_hostile": fill_hostile_mode,
    "big": big_mode,
    "leaks": leaks_mode,
    "readonly_mmap": readonly_mmap_mode,
    "many_threads": many_threads_mode,
    "fill_unaligned": fill_unaligned_mode,
}

if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in MODES:
        raise SystemExit(f"usage: {sys.argv[0]} {{{','.join(MODES)}}} [ARGS...]")
    print(json.dumps(MODES[sys.argv[1]](*sys.argv[2:])))
