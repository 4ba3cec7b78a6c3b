"""examples/dask_pipeline.py: sfer on dask.distributed, and the pickling it relies on.

The example runs small in a subprocess, with a LocalCluster of nanny worker processes (1 then 2
workers): its exit status, its verdict, one "equal to serial" row per worker count and the
report's other lines are checked.  The subprocess gets this environment without
OMP_NUM_THREADS, so the report's "workers:" line also pins what the README says of the nanny
(workers start with OMP_NUM_THREADS=1, where sfer's default thread count is 1).

dask[distributed] is a test requirement (ci/requirements-test.txt), not a runtime one: these
tests fail, rather than skip, without it.  They also run under ci/sanitize.sh (ASan preloaded
into the subprocess and its workers).
"""

from __future__ import annotations

import importlib.util
import os
import pickle
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import sfer

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "dask_pipeline.py"
BATCHES = 6  # two of each kind of rows (sorted, shuffled, no empty row)
BATCH_SIZE = 3000


@pytest.fixture(scope="module")
def example():
    """The example as a module (for its helpers; importing it runs nothing)."""
    assert EXAMPLE.is_file(), f"{EXAMPLE} not found (the tests run from the repository checkout)"
    spec = importlib.util.spec_from_file_location("sfer_dask_pipeline_example", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _fast_path_result():
    idx = np.array([[0, 1], [1, 0], [1, 2], [2, 0]])
    res = sfer.sparse_fill_empty_rows(idx, np.array([1.0, -0.0, np.nan, 4.0]), [3, 3], 7.0)
    assert not res.output_indices.flags.writeable  # the fast path's read-only views
    assert not res.output_values.flags.writeable
    return res


def _assert_same(got, want):
    assert type(got) is type(want)
    for field in want._fields:
        g, w = getattr(got, field), getattr(want, field)
        assert type(g) is type(w), field
        g, w = np.asarray(g), np.asarray(w)
        assert (g.dtype, g.shape, g.tobytes()) == (w.dtype, w.shape, w.tobytes()), field


@pytest.mark.parametrize("protocol", range(2, pickle.HIGHEST_PROTOCOL + 1))
def test_results_pickle(protocol):
    """FillResult (read-only views on the fast path, new arrays otherwise) and GradResult
    (an array and a NumPy scalar) survive pickling bit for bit, as sfer.FillResult/GradResult."""
    fast = _fast_path_result()
    counted = sfer.sparse_fill_empty_rows([[2, 0], [0, 1]], np.float32([1, 2]), [4, 2], 0.0)
    grad = sfer.sparse_fill_empty_rows_grad(fast.reverse_index_map, np.arange(4.0))
    for res in (fast, counted, grad):
        back = pickle.loads(pickle.dumps(res, protocol=protocol))
        _assert_same(back, res)
        assert type(back) in (sfer.FillResult, sfer.GradResult)
    back = pickle.loads(pickle.dumps(fast, protocol=protocol))
    assert not np.shares_memory(back.output_values, fast.output_values)
    np.array(back.output_values)[0] = 1.0  # np.array gives a writable copy, as documented


def test_results_through_dask_serialization():
    """The way Dask moves a task's result between processes."""
    from distributed.protocol import deserialize, serialize

    for res in (_fast_path_result(),
                sfer.sparse_fill_empty_rows_grad([0, 2], np.float32([1, 2, 4]))):
        _assert_same(deserialize(*serialize(res)), res)


def test_differences_sees_every_bit(example):
    """The example's check (full results or --digests fingerprints) tells -0.0 from 0.0, NaN
    payloads apart, and a dtype change."""
    fill = sfer.sparse_fill_empty_rows([[0, 0], [2, 1]], np.float64([-0.0, np.nan]), [3, 2], 0.0)
    grad = sfer.sparse_fill_empty_rows_grad(fill.reverse_index_map, np.float64([1, 2, 4]))
    want = (fill, grad)
    assert example.differences((fill, grad), want) == []

    values = np.array(fill.output_values)
    values[0] = 0.0  # was -0.0
    assert example.differences((fill._replace(output_values=values), grad), want) == [
        "fill.output_values"
    ]
    values = np.array(fill.output_values)
    values.view(np.uint64)[2] ^= np.uint64(1)  # another NaN payload (NumPy 1.x: not a Python int)
    assert example.differences((fill._replace(output_values=values), grad), want) == [
        "fill.output_values"
    ]
    changed = (fill._replace(output_values=values), grad)
    fp = example.fingerprint
    assert example.check([(fp(want), None, {})], [want], digests=True) == (1, [])
    assert example.check([(fp(changed), None, {})], [want], digests=True) == (
        0, ["batch 0: fill.output_values"])
    other = grad._replace(d_default_value=np.float32(grad.d_default_value))
    assert example.differences((fill, other), want) == ["grad.d_default_value"]
    assert example.check([(fp((fill, other)), None, {})], [want], digests=True) == (
        0, ["batch 0: grad.d_default_value"])
    assert example.differences((grad, fill), want) == [
        "fill: GradResult instead of FillResult",
        "grad: FillResult instead of GradResult",
    ]


def test_dask_pipeline_example(example, tmp_path):
    data = tmp_path / "data"
    example.write_batches(data, BATCHES, BATCH_SIZE, seed=3)  # then the example reads them
    assert len(example.batch_dirs(data)) == BATCHES

    env = dict(os.environ)
    env.pop("OMP_NUM_THREADS", None)  # what the nanny sets is then what the workers see
    proc = subprocess.run(
        [sys.executable, str(EXAMPLE), "--data", str(data), "--seed", "3", "--workers", "1,2"],
        cwd=tmp_path,  # not the repository root: sfer comes from the installed package
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    out = proc.stdout
    report = f"exit status {proc.returncode}\n--- stdout\n{out}\n--- stderr\n{proc.stderr[-4000:]}"
    assert proc.returncode == 0, report
    assert "verdict: OK: every gathered result equals the serial run bit for bit" in out, report
    assert re.search(r"^machine: \d+ cores \(sfer.get_num_threads\(\) in the driver\)", out,
                     re.M), report
    assert f"data:    {data}: read {BATCHES} batches" in out, report
    assert f"batches: {BATCHES}, {BATCHES * BATCH_SIZE:,} entries in all; 2 took sfer's fast" in out
    assert re.search(r"^serial:  in the driver, num_threads=1: .* batches/s", out, re.M), report
    assert "cluster: a LocalCluster of worker processes (nanny, start method spawn), " \
           "scaled from 2 to 1 worker(s)" in out, report
    for workers in (1, 2):
        row = rf"^ +{workers} +1 +\d+ +[\d.]+ +[\d.]+ +[\d.]+ +[\d.]+  " \
              rf"equal to serial \({BATCHES}/{BATCHES} batches, bit for bit\)$"
        assert re.search(row, out, re.M), f"no row for {workers} worker(s)\n{report}"
    # The README's "Scaling out" claim, on the installed dask: nanny workers start with
    # OMP_NUM_THREADS=1, so sfer's default there is 1 thread (hence num_threads= per task).
    assert "workers: OMP_NUM_THREADS=1 and sfer.get_num_threads()=1 in the workers" in out, report
    assert "DIFFERS" not in out and "Traceback" not in proc.stderr, report
