"""sfer.sparse_fill_empty_rows, the compiled forward op, against sfer.reference's definition:
every output bit for bit, on every path (fast path, general path, serial and threaded, past 8
threads), every dtype family, the errors and their order, and the fast path's read-only views."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

import sfer
from helpers import (BFLOAT16, FILL_RULES, SERIAL_BELOW, STRING_DTYPE, broken_fill_inputs,
                     same)
from sfer import reference

THREADS = (None, 1, 2, 3, 9, 16)


def inputs(rng, n, dense_rows, rank, *, order="shuffled", empty=0.1):
    """n entries over dense_rows rows (about ``empty`` of them empty), columns 1.. anything."""
    live = np.flatnonzero(rng.random(dense_rows) >= empty)
    if live.size == 0:
        live = np.array([0])
    rows = rng.choice(live, size=n) if n else np.zeros(0, np.int64)
    if order == "sorted":
        rows = np.sort(rows)
    idx = np.concatenate([rows[:, None], rng.integers(-5, 50, (n, rank - 1))], axis=1)
    return idx, [dense_rows] + [50] * (rank - 1)


def values_of(rng, dtype, n):
    raw = rng.integers(0, 256, n * dtype.itemsize, dtype=np.uint8)
    return raw.view(dtype) if dtype.kind not in "OMmT" else None


@pytest.mark.parametrize("order", ["shuffled", "sorted", "full_sorted", "full_shuffled"])
@pytest.mark.parametrize("size", ["small", "large"])
def test_against_the_reference(order, size):
    rng = np.random.default_rng([len(order), len(size)])
    n, dense_rows = (300, 200) if size == "small" else (3 * SERIAL_BELOW, SERIAL_BELOW)
    empty = 0.0 if order.startswith("full") else 0.1
    idx, shape = inputs(rng, n, dense_rows, 3, order="sorted" if "sorted" in order else "x",
                        empty=empty)
    if empty == 0.0:  # every row used at least once
        idx[:dense_rows, 0] = np.arange(dense_rows)
        if "sorted" in order:
            idx = idx[np.argsort(idx[:, 0], kind="stable")]
    vals = rng.standard_normal(n).astype(np.float32)
    want = reference.sparse_fill_empty_rows(idx, vals, shape, np.float32(-7.5))
    for nt in THREADS:
        got = sfer.sparse_fill_empty_rows(idx, vals, shape, np.float32(-7.5), num_threads=nt)
        same(got, want)
        if size == "large" and nt not in (None, 1):
            assert sfer._runtime._last_threads() == nt


@pytest.mark.parametrize("name", ["bool", "int8", "uint16", "int32", "float16", "float64",
                                  "complex128", "bfloat16", "S3", "U2", "V6", "<M8[s]",
                                  "m8[ms]", ">f4", ">i8"])
def test_fixed_size_dtypes_bit_for_bit(name):
    dtype = BFLOAT16 if name == "bfloat16" else np.dtype(name)
    if dtype is None:
        pytest.skip("bfloat16 needs ml_dtypes")
    rng = np.random.default_rng(len(name))
    for n, dense_rows in ((50, 40), (2 * SERIAL_BELOW, SERIAL_BELOW // 2)):
        idx, shape = inputs(rng, n, dense_rows, 2)
        vals = values_of(rng, dtype, n)
        if dtype.kind in "Mm":
            vals = rng.integers(-10**9, 10**9, n).astype(dtype)
        if dtype.kind in "SU":
            vals = vals.view(np.uint8)[: n * dtype.itemsize] if False else (
                np.array([str(i % 97)[: dtype.itemsize // (4 if dtype.kind == "U" else 1)]
                          for i in range(n)], dtype=dtype))
        default = vals[0] if dtype.kind not in "SUV" else (
            np.array("xyzzy" if dtype.kind == "U" else b"xyzzy")[()] if dtype.kind != "V"
            else vals[0])
        want = reference.sparse_fill_empty_rows(idx, vals, shape, default)
        for nt in (1, 2, 9):
            same(sfer.sparse_fill_empty_rows(idx, vals, shape, default, num_threads=nt), want)


def test_object_and_string_values():
    rng = np.random.default_rng(5)
    idx, shape = inputs(rng, 500, 300, 2)
    objs = np.empty(500, dtype=object)
    objs[:] = [("t", i) if i % 3 else None for i in range(500)]
    default = ["the default"]
    want = reference.sparse_fill_empty_rows(idx, objs, shape, default)
    got = sfer.sparse_fill_empty_rows(idx, objs, shape, default, num_threads=3)
    same(got, want)
    filled = got.output_values[got.empty_row_indicator[got.output_indices[:, 0]]]
    assert all(x is default for x in filled)
    string_dtype = STRING_DTYPE
    if string_dtype is not None:
        strs = np.array([f"s{i}" * (i % 5) for i in range(500)], dtype=string_dtype())
        same(sfer.sparse_fill_empty_rows(idx, strs, shape, "dflt"),
             reference.sparse_fill_empty_rows(idx, strs, shape, "dflt"))


def test_fast_path_hands_back_read_only_views_of_the_inputs():
    idx = np.array([[0, 1], [0, 0], [1, 5], [2, 2]], np.int64)
    vals = np.array([1.0, 2.0, 3.0, 4.0])
    res = sfer.sparse_fill_empty_rows(idx, vals, [3, 6], 0.0)
    same(res, reference.sparse_fill_empty_rows(idx, vals, [3, 6], 0.0))
    for out, given in ((res.output_indices, idx), (res.output_values, vals)):
        assert np.shares_memory(out, given)
        assert not out.flags.writeable
        with pytest.raises(ValueError):
            out[0] = 0
    assert idx.flags.writeable and vals.flags.writeable
    # converted inputs are the outputs: int32 indices come back as a new int64 array
    res32 = sfer.sparse_fill_empty_rows(idx.astype(np.int32), vals, [3, 6], 0.0)
    assert res32.output_indices.dtype == np.int64 and not res32.output_indices.flags.writeable
    assert not np.shares_memory(res32.output_indices, idx)


def test_general_path_outputs_are_new_and_writeable():
    idx = np.array([[2, 0], [0, 0]], np.int64)
    vals = np.array([1.0, 2.0])
    res = sfer.sparse_fill_empty_rows(idx, vals, [4, 1], 9.0)
    same(res, reference.sparse_fill_empty_rows(idx, vals, [4, 1], 9.0))
    for out in res:
        assert out.flags.writeable
        assert not np.shares_memory(out, idx) and not np.shares_memory(out, vals)


@pytest.mark.parametrize("k", range(len(FILL_RULES)), ids=[m.__name__ for m, _, _ in FILL_RULES])
def test_each_error_as_the_reference(k):
    c = broken_fill_inputs(k)
    _, exc, msg = FILL_RULES[k]
    with pytest.raises(exc, match=msg):
        sfer.sparse_fill_empty_rows(c["I"], c["V"], c["S"], c["D"])


@pytest.mark.parametrize("a,b", list(itertools.combinations(range(len(FILL_RULES)), 2)))
def test_errors_in_tensorflows_order(a, b):
    """Two rules broken: the same error, word for word, as the reference's (the earlier rule)."""
    c = broken_fill_inputs(a, b)
    with pytest.raises(FILL_RULES[a][1]) as want:
        reference.sparse_fill_empty_rows(c["I"], c["V"], c["S"], c["D"])
    with pytest.raises(want.type) as got:
        sfer.sparse_fill_empty_rows(c["I"], c["V"], c["S"], c["D"])
    assert str(got.value) == str(want.value)


@pytest.mark.parametrize("where", [0, 1, "mid", -1])
def test_first_bad_row_whatever_the_thread_count(where):
    rng = np.random.default_rng(11)
    n, dense_rows = 3 * SERIAL_BELOW, SERIAL_BELOW
    idx, shape = inputs(rng, n, dense_rows, 2)
    i = n // 2 if where == "mid" else where % n
    idx[i, 0] = -3
    idx[(i + n // 3) % n, 0] = dense_rows  # a later bad one in another thread's slice
    first = min(i, (i + n // 3) % n)
    msg = rf"^indices\[{first}, 0\] = {idx[first, 0]} is out of range \[0, {dense_rows}\)$"
    for nt in THREADS:
        with pytest.raises(IndexError, match=msg):
            sfer.sparse_fill_empty_rows(idx, np.zeros(n), shape, 0.0, num_threads=nt)


@pytest.mark.parametrize("args", [
    (np.zeros((0, 2), np.int64), np.zeros(0, np.float32), [4, 3], np.float32(1)),  # no entry
    (np.zeros((0, 3), np.int64), np.zeros(0), [0, 2, 2], 0.0),                     # no row
    (np.array([[3], [1], [3]]), np.array([1, 2, 3], np.int16), [5], 7),            # rank 1
], ids=["n0", "rows0", "rank1"])
def test_edges(args):
    same(sfer.sparse_fill_empty_rows(*args), reference.sparse_fill_empty_rows(*args))


def test_inputs_never_modified():
    rng = np.random.default_rng(3)
    idx, shape = inputs(rng, 2 * SERIAL_BELOW, SERIAL_BELOW, 3)
    vals = rng.standard_normal(idx.shape[0])
    before = (idx.copy(), vals.copy())
    idx.flags.writeable = False
    vals.flags.writeable = False
    sfer.sparse_fill_empty_rows(idx, vals, shape, 0.5, num_threads=4)
    assert np.array_equal(idx, before[0]) and vals.tobytes() == before[1].tobytes()


def test_round_trip_through_the_grad():
    rng = np.random.default_rng(8)
    idx, shape = inputs(rng, 5000, 3000, 2)
    res = sfer.sparse_fill_empty_rows(idx, rng.standard_normal(5000), shape, 0.0)
    g = rng.integers(-1000, 1000, res.output_values.shape[0])
    d_values, d_default = sfer.sparse_fill_empty_rows_grad(res.reverse_index_map, g)
    filled = res.empty_row_indicator[res.output_indices[:, 0]]
    assert d_values.tolist() == g[res.reverse_index_map].tolist()
    assert d_default == g[filled].sum()
