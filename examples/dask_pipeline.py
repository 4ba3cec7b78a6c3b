"""sfer on Dask: one task per sparse batch, checked bit for bit against a serial run.

    python examples/dask_pipeline.py                       # LocalCluster, 1 then 2 workers
    python examples/dask_pipeline.py --workers 1,2,4 --batches 64 --batch-size 200000
    python examples/dask_pipeline.py --data DIR            # the batches in DIR (written if none)
    python examples/dask_pipeline.py --scheduler tcp://HOST:8786   # an existing cluster

Each task loads one batch from its ``.npy`` files, runs ``sfer.sparse_fill_empty_rows`` on it,
then ``sfer.sparse_fill_empty_rows_grad`` with the forward op's ``reverse_index_map`` and a
grad vector of length ``N_full`` (seeded by the batch number, so that every process makes the
same one), and returns ``(FillResult, GradResult, timings)``.  The driver gathers every result,
checks it bit for bit against the same batch computed serially in the driver
(``num_threads=1``), and prints batches/s for each worker count.

A batch is a directory ``DIR/batch-NNNNN`` with ``indices.npy`` ([N, R], any integer dtype),
``values.npy`` ([N]), ``dense_shape.npy`` ([R]) and ``default_value.npy`` (0-d): the inputs of
``sfer fill``.  Without ``--data`` the batches are generated in a temporary directory (removed
at exit); with ``--data DIR`` the batches already in DIR are read, and if it has none they are
generated there first.  Workers read the files by path: on a cluster of several machines, DIR
must be on a filesystem that every worker sees.  Generated batches cycle through three kinds of
rows: sorted with empty rows, shuffled with empty rows, and sorted with no empty row (sfer's
fast path, whose outputs are read-only views: they travel through Dask's pickling like any
array).

Threads: a LocalCluster of W workers with T threads each runs W x T tasks at once, each calling
sfer with S threads, so ``W x T x S <= cores`` keeps the machine from being oversubscribed.  T
defaults to 1 and S to ``max(1, cores // (W x T))``, where cores is ``sfer.get_num_threads()``
in the driver (the CPUs this process may use).  With ``--scheduler``, S defaults to the
smallest ``cores // (threads of the workers on that host)`` over the cluster's hosts (cores
there: the CPUs in the workers' affinity mask).  S is always passed as ``num_threads=``:
Dask's nanny starts workers with ``OMP_NUM_THREADS=1``, with which sfer's default would be 1
thread (the report shows what the workers see).

Exit status: 0 when every result equals the serial one, 1 when any differs, 2 for bad usage.
The timed part of each run is client.map + client.gather: it includes the transfer of the
results to the driver (the report gives their size), which for small batches costs more than
sfer does; with ``--digests`` the tasks return a SHA-256 fingerprint of each output instead
(dtype, shape and bytes), compared with the serial run's, so that only the work is timed.  The
driver holds the serial results and one run's results in memory at once.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import shutil
import socket
import sys
import tempfile
import time
from pathlib import Path

import dask
import distributed
import numpy as np
from dask.distributed import Client, LocalCluster

import sfer

KINDS = ("sorted", "shuffled", "no-empty-row")
FILES = ("indices", "values", "dense_shape", "default_value")


# ----------------------------------------------------------------------------- the batches


def write_batches(data_dir: Path, batches: int, batch_size: int, seed: int) -> None:
    """Generate ``batches`` batches of ``batch_size`` entries (float32 values, 2-D indices)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    for b in range(batches):
        rng = np.random.default_rng([seed, b])
        n = batch_size
        kind = KINDS[b % len(KINDS)]
        if kind == "no-empty-row":  # every row has an entry: sfer's fast path
            dense_rows = max(1, n // 4)
            rows = np.sort(np.concatenate([np.arange(min(n, dense_rows)),
                                           rng.integers(0, dense_rows, max(0, n - dense_rows))]))
        else:  # about 13% of the rows are empty
            dense_rows = max(1, n // 2)
            rows = rng.integers(0, dense_rows, n)
            if kind == "sorted":
                rows.sort()
        cols = 64
        indices = np.stack([rows, rng.integers(0, cols, n)], axis=1).astype(np.int64)
        d = data_dir / f"batch-{b:05d}"
        d.mkdir(exist_ok=True)
        np.save(d / "indices.npy", indices)
        np.save(d / "values.npy", rng.standard_normal(n, dtype=np.float32))
        np.save(d / "dense_shape.npy", np.array([dense_rows, cols], np.int64))
        np.save(d / "default_value.npy", np.float32(-1.0))


def batch_dirs(data_dir: Path) -> list[Path]:
    return sorted(p for p in data_dir.glob("batch-*") if (p / "indices.npy").is_file())


def load_batch(path: str):
    d = Path(path)
    return tuple(np.load(d / f"{name}.npy", allow_pickle=False) for name in FILES)


# ----------------------------------------------------------------------------- the task


def process_batch(path: str, number: int, seed: int, num_threads: int):
    """One task: the forward op, then its grad.  Returns (FillResult, GradResult, timings)."""
    t0 = time.perf_counter()
    indices, values, dense_shape, default_value = load_batch(path)
    t1 = time.perf_counter()
    fill = sfer.sparse_fill_empty_rows(indices, values, dense_shape, default_value[()],
                                       num_threads=num_threads)
    t2 = time.perf_counter()
    # The upstream gradient, length N_full, in the values' float dtype (float32 for others);
    # seeded by the batch number, so that the driver and every worker make the same one
    # (making it is not counted as sfer's time).
    dtype = fill.output_values.dtype
    dtype = dtype if dtype in (np.float16, np.float32, np.float64) else np.dtype(np.float32)
    grad_values = np.random.default_rng([seed, number, 1]).standard_normal(
        len(fill.output_values)).astype(dtype)
    t3 = time.perf_counter()
    grad = sfer.sparse_fill_empty_rows_grad(fill.reverse_index_map, grad_values,
                                            num_threads=num_threads)
    t4 = time.perf_counter()
    return fill, grad, {"load_s": t1 - t0, "sfer_s": (t2 - t1) + (t4 - t3)}


def fingerprint(result) -> dict:
    """A small stand-in for (FillResult, GradResult): each part's type and, for each field, its
    type, dtype, shape and the SHA-256 of its bytes (equal fingerprints: equal bits)."""
    out: dict[str, object] = {}
    for label, part in zip(("fill", "grad"), result[:2]):
        out[label] = type(part).__name__
        for field in part._fields:
            value = getattr(part, field)
            a = np.ascontiguousarray(value)
            out[f"{label}.{field}"] = (type(value).__name__, a.dtype.str, a.shape,
                                       hashlib.sha256(a.view(np.uint8).data).hexdigest())
    return out


def process_batch_digest(path: str, number: int, seed: int, num_threads: int):
    """process_batch, returning the results' fingerprint instead of the results (--digests)."""
    fill, grad, timings = process_batch(path, number, seed, num_threads)
    return fingerprint((fill, grad)), None, timings


def worker_info() -> dict:
    """What a worker sees (runs on each worker with client.run; also imports sfer there)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cores = os.cpu_count() or 1
    return {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
        "sfer_default_threads": sfer.get_num_threads(),
        "sfer": sfer.__version__,
        "openmp": sfer.openmp_enabled(),
        "cores": cores,
    }


# ----------------------------------------------------------------------------- checking


def same_bits(a, b) -> bool:
    """Same type, dtype, shape and bytes (NaN payloads and -0.0 included)."""
    if type(a) is not type(b):
        return False
    a, b = np.asarray(a), np.asarray(b)
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def differences(got, want) -> list[str]:
    """The fields of (FillResult, GradResult) in which ``got`` differs from ``want``."""
    out = []
    for label, g, w in (("fill", got[0], want[0]), ("grad", got[1], want[1])):
        if type(g) is not type(w):
            out.append(f"{label}: {type(g).__name__} instead of {type(w).__name__}")
            continue
        out += [f"{label}.{f}" for f in w._fields if not same_bits(getattr(g, f), getattr(w, f))]
    return out


def check(results, serial, digests=False) -> tuple[int, list[str]]:
    """(batches equal, a description of each batch that differs).  With ``digests``, each
    result is a fingerprint (process_batch_digest) compared with the serial result's."""
    bad = []
    for b, (got, want) in enumerate(zip(results, serial)):
        if digests:
            want_fp = fingerprint(want)
            diff = [k for k in want_fp if got[0].get(k) != want_fp[k]]
        else:
            diff = differences(got, want)
        if diff:
            bad.append(f"batch {b}: {', '.join(diff)}")
    return len(serial) - len(bad), bad


def result_bytes(result) -> int:
    return sum(np.asarray(a).nbytes for part in result[:2] for a in part)


# ----------------------------------------------------------------------------- running


def timed_run(client, paths, seed, num_threads, slots, task=process_batch):
    """Warm up (one batch per task slot), then map every batch and gather: (results, wall s)."""
    warm = paths[:slots]
    client.gather(client.map(task, warm, range(len(warm)), [seed] * len(warm),
                             [num_threads] * len(warm), pure=False))
    t0 = time.perf_counter()
    futures = client.map(task, paths, range(len(paths)), [seed] * len(paths),
                         [num_threads] * len(paths), pure=False)
    results = client.gather(futures)
    wall = time.perf_counter() - t0
    del futures
    return results, wall


def default_sfer_threads(infos: dict, nthreads: dict) -> int:
    """min over hosts of cores // (task threads of the workers on that host), at least 1."""
    per_host: dict[str, list[int]] = {}
    for addr, info in infos.items():
        cores, threads = per_host.setdefault(info["host"], [info["cores"], 0])
        per_host[info["host"]] = [min(cores, info["cores"]), threads + nthreads[addr]]
    return max(1, min(c // max(1, t) for c, t in per_host.values()))


def parse_int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}")
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected integers >= 1, got {text!r}")
    return values


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}")
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {value}")
    return value


def parse_args(argv):
    p = argparse.ArgumentParser(
        description="sfer's forward op and grad on many sparse batches with dask.distributed, "
                    "checked bit for bit against a serial run; prints batches/s per worker count.")
    p.add_argument("--data", metavar="DIR", type=Path,
                   help="read the batches in DIR (batch-NNNNN/{indices,values,dense_shape,"
                        "default_value}.npy); if it has none, write them there first "
                        "(default: a temporary directory)")
    p.add_argument("--batches", type=positive_int, default=40,
                   help="batches to generate (default 40)")
    p.add_argument("--batch-size", type=positive_int, default=100_000, metavar="N",
                   help="entries per generated batch (default 100000)")
    p.add_argument("--seed", type=int, default=0, help="seed of the data and grads (default 0)")
    p.add_argument("--workers", type=parse_int_list, default=[1, 2], metavar="W[,W...]",
                   help="LocalCluster worker counts to time, in turn (default 1,2)")
    p.add_argument("--threads-per-worker", type=positive_int, default=1, metavar="T",
                   help="Dask threads (tasks at once) per worker (default 1)")
    p.add_argument("--sfer-threads", type=positive_int, default=None, metavar="S",
                   help="num_threads of each sfer call (default: cores // (workers x T), "
                        "at least 1)")
    p.add_argument("--scheduler", metavar="ADDRESS",
                   help="use the existing cluster at ADDRESS instead of a LocalCluster "
                        "(--workers and --threads-per-worker then do not apply)")
    p.add_argument("--digests", action="store_true",
                   help="tasks return a SHA-256 fingerprint of each output instead of the "
                        "outputs, compared with the serial run's: times the work without "
                        "moving the results to the driver")
    p.add_argument("--start-method", choices=("spawn", "forkserver", "fork"), default=None,
                   help="how LocalCluster's nannies start workers (default: Dask's, spawn); "
                        "sfer runs serially in a forked worker")
    args = p.parse_args(argv)
    if args.data is not None and args.data.exists() and not args.data.is_dir():
        p.error(f"--data {args.data}: not a directory")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.start_method is not None:
        dask.config.set({"distributed.worker.multiprocessing-method": args.start_method})
    cores = sfer.get_num_threads()  # before any cluster: the nanny sets OMP_NUM_THREADS here
    print(f"sfer {sfer.__version__} (OpenMP {'on' if sfer.openmp_enabled() else 'off'}), "
          f"dask {dask.__version__}, distributed {distributed.__version__}, "
          f"Python {sys.version.split()[0]}")
    print(f"machine: {cores} cores (sfer.get_num_threads() in the driver), load average "
          f"{load_average()} before the run (other work there slows every row below)")

    tmp = None
    if args.data is None:
        tmp = tempfile.mkdtemp(prefix="sfer-dask-")
        data_dir = Path(tmp)
    else:
        data_dir = args.data
    try:
        dirs = batch_dirs(data_dir) if data_dir.is_dir() else []
        if dirs:
            how = f"read {len(dirs)} batches"
        else:
            write_batches(data_dir, args.batches, args.batch_size, args.seed)
            dirs = batch_dirs(data_dir)
            how = (f"wrote {len(dirs)} batches of {args.batch_size:,} entries "
                   f"(rows {', '.join(KINDS)}, in turn)")
        print(f"data:    {data_dir}{' (temporary)' if tmp else ''}: {how}")
        return run(args, [str(d) for d in dirs], cores)
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


def load_average() -> str:
    """The 1-minute load average, as text ("n/a" where there is none)."""
    try:
        return f"{os.getloadavg()[0]:.1f}"
    except (AttributeError, OSError):  # pragma: no cover - no load average on this platform
        return "n/a"


def scale_to(cluster, client, n_workers: int, timeout: float = 120.0) -> None:
    """Scale the LocalCluster to exactly ``n_workers`` running workers."""
    cluster.scale(n_workers)
    deadline = time.monotonic() + timeout
    while len(client.nthreads()) != n_workers:
        if time.monotonic() > deadline:
            raise TimeoutError(f"the cluster did not reach {n_workers} workers in {timeout} s")
        time.sleep(0.05)


def report_row(results, serial, workers, per_worker, s, wall, digests) -> tuple[bool, list[str]]:
    """One run's row (and the batches that differ, if any): (all equal, lines)."""
    equal, bad = check(results, serial, digests)
    how = "by SHA-256" if digests else "bit for bit"
    verdict = (f"equal to serial ({equal}/{len(serial)} batches, {how})" if not bad
               else f"DIFFERS from serial in {len(bad)} of {len(serial)} batches")
    sfer_ms = 1e3 * np.mean([r[2]["sfer_s"] for r in results])
    load_ms = 1e3 * np.mean([r[2]["load_s"] for r in results])
    tpw = "/".join(map(str, per_worker))
    lines = [f"{workers:>7}  {tpw:>7}  {s:>7}  {len(serial) / wall:>9.1f}  {wall:>7.3f}  "
             f"{sfer_ms:>7.2f}  {load_ms:>7.2f}  {verdict}"]
    lines += [f"         {line}" for line in bad[:5]]
    if len(bad) > 5:
        lines.append(f"         ... and {len(bad) - 5} more")
    return not bad, lines


def run(args, paths, cores) -> int:
    # The serial run in the driver: the reference every gathered result must equal.
    t0 = time.perf_counter()
    serial = [process_batch(p, b, args.seed, 1) for b, p in enumerate(paths)]
    serial_wall = time.perf_counter() - t0
    entries = sum(len(r[0].reverse_index_map) for r in serial)
    fast = sum(not r[0].output_values.flags.writeable for r in serial)
    mbytes = sum(result_bytes(r) for r in serial) / 1e6
    where = ("not sent to the driver (--digests: tasks return SHA-256 fingerprints)" if args.digests
             else "moved to the driver in every run")
    print(f"batches: {len(paths)}, {entries:,} entries in all; {fast} took sfer's fast path "
          f"(read-only views); results {mbytes:.1f} MB, {where}")
    print(f"serial:  in the driver, num_threads=1: {serial_wall:.3f} s, "
          f"{len(paths) / serial_wall:.1f} batches/s, "
          f"sfer {1e3 * np.mean([r[2]['sfer_s'] for r in serial]):.2f} ms/batch")

    if args.scheduler:
        print(f"cluster: the existing one at {args.scheduler}")
        cluster, counts = None, [None]
        client = Client(args.scheduler)
    else:
        # One cluster for all the worker counts: it starts with the most workers (they start
        # in parallel) and is scaled down from one count to the next (retiring a worker is
        # quick, starting one is not); the table lists the counts in increasing order.
        counts = sorted(set(args.workers), reverse=True)
        method = dask.config.get("distributed.worker.multiprocessing-method")
        print(f"cluster: a LocalCluster of worker processes (nanny, start method {method}), "
              f"scaled from {' to '.join(map(str, counts))} worker(s)")
        cluster = LocalCluster(n_workers=counts[0], threads_per_worker=args.threads_per_worker,
                               processes=True, dashboard_address=None,
                               silence_logs=logging.ERROR)
        client = Client(cluster)

    all_ok = True
    rows = {}
    seen_infos = []
    try:
        for n_workers in counts:
            if n_workers is not None:
                scale_to(cluster, client, n_workers)
            infos = client.run(worker_info)  # also imports sfer in every worker
            nthreads = client.nthreads()
            workers = len(infos)
            slots = sum(nthreads.values())
            if args.sfer_threads is not None:
                s = args.sfer_threads
            elif args.scheduler:
                s = default_sfer_threads(infos, nthreads)
            else:
                s = max(1, cores // slots)
            task = process_batch_digest if args.digests else process_batch
            results, wall = timed_run(client, paths, args.seed, s, slots, task)
            seen_infos.append(infos)
            ok, lines = report_row(results, serial, workers, sorted(set(nthreads.values())),
                                   s, wall, args.digests)
            all_ok &= ok
            if not args.scheduler and slots * s > cores:
                lines.append(f"         note: {slots} task threads x {s} sfer threads > "
                             f"{cores} cores (oversubscribed)")
            rows[workers] = lines
            del results
    finally:
        client.close()
        if cluster is not None:
            cluster.close()

    print()
    print(f"{'workers':>7}  {'threads':>7}  {'sfer':>7}  {'batches/s':>9}  {'wall s':>7}  "
          f"{'sfer ms':>7}  {'load ms':>7}  result")
    print(f"{'':>7}  {'/worker':>7}  {'threads':>7}  {'':>9}  {'':>7}  "
          f"{'/batch':>7}  {'/batch':>7}")
    for workers in sorted(rows):
        print("\n".join(rows[workers]))
    print()
    infos = [i for run_infos in seen_infos for i in run_infos.values()]
    omp = sorted({str(i["OMP_NUM_THREADS"]) for i in infos})
    dflt = sorted({i["sfer_default_threads"] for i in infos})
    print(f"workers: OMP_NUM_THREADS={','.join(omp)} and sfer.get_num_threads()="
          f"{','.join(map(str, dflt))} in the workers; every task passed num_threads= "
          f"(the sfer threads column)")
    if all_ok:
        print(f"verdict: OK: every gathered result equals the serial run "
              f"{'by SHA-256' if args.digests else 'bit for bit'}")
        return 0
    print("verdict: FAILED: some results differ from the serial run (listed above)")
    return 1


if __name__ == "__main__":
    # Under spawn, multiprocessing re-imports this file in each worker as __mp_main__: the
    # guard keeps the workers from running the pipeline themselves.
    sys.exit(main())
