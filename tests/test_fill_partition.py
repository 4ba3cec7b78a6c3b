"""The forward op's partition path (unsorted rows, large calls: entries radix-partitioned by
row into buckets, each bucket placed in cache), reached at test sizes through the hook
``_fill._set_partition_below`` and checked against sfer.reference bit for bit at 1, 2, 3, 16
and 64 threads: stable order within a row, rows at and across bucket boundaries, every entry in
one bucket, a few rows among many empty ones, rank 1 and 3, values of every width the kernel
streams (and one it does not), values NumPy places, and the counting path's answer; and its
slices and placing threads, which are no more than the CPUs this process may use
(``sfer._runtime._set_cpus`` pretends a count)."""

from __future__ import annotations

import numpy as np
import pytest

import sfer
import sfer._runtime
from helpers import same
from sfer import _fill, reference

THREADS = (1, 2, 3, 16, 64)


@pytest.fixture
def partition():
    """Every unsorted call that can take the partition path takes it."""
    _fill._set_partition_below(0)
    yield
    _fill._set_partition_below(None)


def rows_matrix(rows, rank=2, seed=0):
    rows = np.asarray(rows, dtype=np.int64)
    rng = np.random.default_rng(seed)
    return np.concatenate([rows[:, None], rng.integers(-3, 9, (rows.size, rank - 1))], axis=1)


def unsorted_case(name, rng):
    """(rows, dense_rows); the rows decrease somewhere."""
    if name == "uniform":  # many buckets, about 2 entries a row, some rows empty
        return rng.integers(0, 50_000, 100_000), 50_000
    if name == "sparse":  # far more rows than entries: buckets of mostly empty rows
        return rng.integers(0, 1 << 20, 30_000), 1 << 20
    if name == "bucket_edges":  # rows at and next to every power-of-two boundary
        edges = np.array([(1 << k) + d for k in range(6, 17) for d in (-1, 0, 1)])
        return rng.permutation(np.repeat(edges, 7)), (1 << 17) + 1
    if name == "one_bucket":  # every entry in the first rows of many
        return rng.integers(0, 3, 20_000), 200_000
    if name == "last_rows":  # every entry in the last rows, the others empty
        return 99_999 - rng.integers(0, 5, 20_000), 100_000
    if name == "two_rows_interleaved":  # every row empty but two, their entries interleaved
        return np.tile([70_000, 12], 15_000), 80_000
    if name == "duplicates":  # long runs of one row, split across the threads' slices
        return np.repeat(rng.permutation(2000), 50), 2001
    raise ValueError(name)


NAMES = ["uniform", "sparse", "bucket_edges", "one_bucket", "last_rows",
         "two_rows_interleaved", "duplicates"]


@pytest.mark.parametrize("name", NAMES)
def test_partition_against_the_reference(partition, name):
    rng = np.random.default_rng(len(name))
    rows, dense_rows = unsorted_case(name, rng)
    idx = rows_matrix(rows, seed=len(name))
    vals = np.arange(idx.shape[0], dtype=np.float32) * 0.5 - 3.0  # distinct: order shows
    want = reference.sparse_fill_empty_rows(idx, vals, [dense_rows, 9], np.float32(-0.0))
    for nt in THREADS:
        got = sfer.sparse_fill_empty_rows(idx, vals, [dense_rows, 9], np.float32(-0.0),
                                          num_threads=nt)
        assert _fill._last_path() == "partition", (name, nt)
        same(got, want)


VALUES = [
    (np.float64, 1.5), (np.int8, -1), (np.uint16, 7), (np.bool_, True),
    (np.complex128, 1j),  # 16 bytes: streamed
    ("S12", b"a-longer-def"),  # 12 bytes: placed without the write-combining lines
    ("U3", "dft"),
    (object, "default"),  # placed by NumPy after the kernels
]


@pytest.mark.parametrize("rank", [1, 3])
@pytest.mark.parametrize("dtype,default", VALUES, ids=[str(v[0]) for v in VALUES])
def test_partition_ranks_and_values(partition, rank, dtype, default):
    rng = np.random.default_rng(rank)
    n = 40_000
    idx = rows_matrix(rng.integers(0, 30_000, n), rank=rank, seed=rank)
    if dtype is object:
        vals = np.array([str(i) for i in range(n)], dtype=object)
    else:
        vals = np.arange(n).astype(dtype)
    shape = [30_000] + [9] * (rank - 1)
    want = reference.sparse_fill_empty_rows(idx, vals, shape, default)
    for nt in THREADS:
        got = sfer.sparse_fill_empty_rows(idx, vals, shape, default, num_threads=nt)
        assert _fill._last_path() == "partition", nt
        same(got, want)


@pytest.mark.parametrize("cpus", [1, 2, 3, 64])
def test_partition_threads_follow_the_cpus(partition, cpus):
    # Each slice and each placing thread keeps state of its own: no more of them than the CPUs
    # (here none of the memory caps binds: as many slices as threads up to the CPUs); the
    # result is the same for every count.
    rng = np.random.default_rng(cpus)
    rows, dense_rows = unsorted_case("uniform", rng)
    idx = rows_matrix(rows, seed=cpus)
    vals = np.arange(idx.shape[0], dtype=np.float32) * 0.5 - 3.0
    want = reference.sparse_fill_empty_rows(idx, vals, [dense_rows, 9], np.float32(2.0))
    sfer._runtime._set_cpus(cpus)
    for nt in (1, 2, 3, 16, 64):
        got = sfer.sparse_fill_empty_rows(idx, vals, [dense_rows, 9], np.float32(2.0),
                                          num_threads=nt)
        assert _fill._last_path() == "partition", nt
        slices, placers = _fill._last_partition_threads()
        assert slices == min(nt, cpus), (nt, slices)
        assert 1 <= placers <= min(nt, cpus), (nt, placers)
        same(got, want)


def test_partition_equals_the_counting_path():
    rng = np.random.default_rng(3)
    idx = rows_matrix(rng.integers(0, 60_000, 150_000))
    vals = rng.standard_normal(150_000).astype(np.float32)
    got = {}
    for below, path in ((0, "partition"), (1 << 62, "counting")):
        _fill._set_partition_below(below)
        try:
            for nt in THREADS:
                got[path, nt] = sfer.sparse_fill_empty_rows(idx, vals, [60_000, 9], 2.5,
                                                            num_threads=nt)
                assert _fill._last_path() == path
        finally:
            _fill._set_partition_below(None)
    for key, res in got.items():
        same(res, got["counting", 1])


def test_partition_random_small(partition):
    # (tiny calls fall back to the counting path: one bucket's work space would outweigh
    # their outputs)
    rng = np.random.default_rng(11)
    for _ in range(40):
        n = int(rng.integers(2, 3000))
        dense_rows = int(rng.integers(1, 5000))
        idx = rows_matrix(rng.integers(0, dense_rows, n), rank=int(rng.integers(1, 4)))
        vals = rng.standard_normal(n)
        shape = [dense_rows] + [9] * (idx.shape[1] - 1)
        want = reference.sparse_fill_empty_rows(idx, vals, shape, 0.25)
        for nt in THREADS:
            same(sfer.sparse_fill_empty_rows(idx, vals, shape, 0.25, num_threads=nt), want)


def test_large_unsorted_calls_take_the_partition_path_by_default():
    rng = np.random.default_rng(5)
    n = 1 << 19
    idx = rows_matrix(rng.integers(0, n, n))
    vals = np.arange(n, dtype=np.float32)
    want = reference.sparse_fill_empty_rows(idx, vals, [n, 9], 0.0)
    for nt in (1, 2):
        same(sfer.sparse_fill_empty_rows(idx, vals, [n, 9], 0.0, num_threads=nt), want)
        assert _fill._last_path() == "partition"


def test_set_partition_below_returns_the_previous_value():
    old = _fill._set_partition_below(123)
    try:
        assert _fill._set_partition_below(None) == 123
    finally:
        _fill._set_partition_below(None)
    assert _fill._set_partition_below(None) == old
