"""sfer.ragged_to_sparse and sfer.sparse_to_ragged: TensorFlow's RaggedTensor.to_sparse and
RaggedTensor.from_sparse, against sfer.reference (the NumPy specification), the outputs
TensorFlow gives for the worked cases, hostile splits, every thread count and fork."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest

import sfer
import sfer._runtime
from sfer import reference

I64 = np.iinfo(np.int64)


def random_splits(rng, rows, max_len, empty_share=0.3):
    lengths = rng.integers(0, max_len + 1, size=rows)
    lengths[rng.random(rows) < empty_share] = 0
    splits = np.zeros(rows + 1, dtype=np.int64)
    np.cumsum(lengths, out=splits[1:])
    return splits


def random_nested(rng, rows, levels, max_len):
    splits = []
    n = rows
    for _ in range(levels):
        s = random_splits(rng, n, max_len)
        splits.append(s)
        n = int(s[-1])
    return splits, n


def assert_same(a, b):
    assert len(a) == len(b) == 3
    for x, y in zip(a, b):
        assert x.dtype == y.dtype and x.shape == y.shape
        np.testing.assert_array_equal(x, y)


# --------------------------------------------------------------------- TensorFlow's outputs


def test_issue_example_uniform_inner_dims():
    # values [3, 2], splits [0, 1, 3]: indices [6, 3], dense_shape [2, 2, 2] (TensorFlow)
    values = np.arange(6, dtype=np.float32).reshape(3, 2)
    coo = sfer.ragged_to_sparse(values, np.array([0, 1, 3]))
    assert coo.indices.tolist() == [[0, 0, 0], [0, 0, 1], [1, 0, 0], [1, 0, 1], [1, 1, 0],
                                    [1, 1, 1]]
    assert coo.dense_shape.tolist() == [2, 2, 2]
    assert coo.values.tolist() == [0, 1, 2, 3, 4, 5]
    assert coo.values.dtype == np.float32
    assert np.shares_memory(coo.values, values)
    assert_same(coo, reference.ragged_to_sparse(values, [0, 1, 3]))


def test_one_level():
    # tf.RaggedTensor.from_row_splits([1, 2, 3, 4], [0, 2, 2, 4, 4]).to_sparse()
    coo = sfer.ragged_to_sparse(np.array([1, 2, 3, 4]), [0, 2, 2, 4, 4])
    assert coo.indices.tolist() == [[0, 0], [0, 1], [2, 0], [2, 1]]
    assert coo.dense_shape.tolist() == [4, 2]
    assert coo.indices.dtype == np.int64 and coo.dense_shape.dtype == np.int64
    assert isinstance(coo, sfer.SparseCOO) and coo._fields == ("indices", "values",
                                                               "dense_shape")


def test_nested_splits():
    # tf.RaggedTensor.from_nested_row_splits(range(5), [[0, 2, 2, 3], [0, 1, 1, 5]])
    coo = sfer.ragged_to_sparse(np.arange(5), [[0, 2, 2, 3], [0, 1, 1, 5]])
    assert coo.indices.tolist() == [[0, 0, 0], [2, 0, 0], [2, 0, 1], [2, 0, 2], [2, 0, 3]]
    assert coo.dense_shape.tolist() == [3, 2, 4]


def test_nested_with_inner_dims():
    values = np.arange(12).reshape(3, 2, 2)
    splits = [np.array([0, 1, 2]), np.array([0, 2, 3])]
    assert_same(sfer.ragged_to_sparse(values, splits), reference.ragged_to_sparse(values, splits))
    coo = sfer.ragged_to_sparse(values, splits)
    assert coo.indices.shape == (12, 5) and coo.dense_shape.tolist() == [2, 1, 2, 2, 2]
    assert coo.indices[:4].tolist() == [[0, 0, 0, 0, 0], [0, 0, 0, 0, 1], [0, 0, 0, 1, 0],
                                        [0, 0, 0, 1, 1]]


@pytest.mark.parametrize("splits, n, shape", [
    ([0, 0, 0, 0], 0, [3, 0]),      # all rows empty
    ([0], 0, [0, 0]),               # no rows
    ([0, 3], 3, [1, 3]),            # one row
])
def test_empty_cases(splits, n, shape):
    values = np.arange(n, dtype=np.float64)
    coo = sfer.ragged_to_sparse(values, splits)
    assert coo.indices.shape == (n, 2)
    assert coo.dense_shape.tolist() == shape
    assert_same(coo, reference.ragged_to_sparse(values, splits))


def test_zero_sized_inner_dim():
    values = np.zeros((3, 0), dtype=np.int8)
    coo = sfer.ragged_to_sparse(values, [0, 1, 3])
    assert coo.indices.shape == (0, 3) and coo.dense_shape.tolist() == [2, 2, 0]
    assert_same(coo, reference.ragged_to_sparse(values, [0, 1, 3]))


def test_fills_after():
    coo = sfer.ragged_to_sparse(np.array([5.0, 6.0, 7.0]), [0, 2, 2, 3, 3])
    out = sfer.sparse_fill_empty_rows(*coo, -1.0)
    assert out.output_indices.tolist() == [[0, 0], [0, 1], [1, 0], [2, 0], [3, 0]]
    assert out.output_values.tolist() == [5, 6, -1, 7, -1]


# --------------------------------------------------------------------- agreement


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("levels", [1, 2, 3])
def test_agrees_with_reference(seed, levels):
    rng = np.random.default_rng(seed)
    splits, n = random_nested(rng, int(rng.integers(0, 50)), levels, 6)
    inner = [(), (2,), (3, 2)][seed % 3]
    values = rng.standard_normal((n, *inner)).astype(np.float32)
    got = sfer.ragged_to_sparse(values, splits)
    assert_same(got, reference.ragged_to_sparse(values, splits))
    vals, back = sfer.sparse_to_ragged(*reference.ragged_to_sparse(
        values.reshape(n, -1)[:, 0], splits[-1]))
    np.testing.assert_array_equal(back, splits[-1])


@pytest.mark.parametrize("num_threads", [1, 2, 3, 4, 7, 8, 16])
@pytest.mark.parametrize("levels, inner", [(1, ()), (2, ()), (1, (2,))])
def test_thread_counts(num_threads, levels, inner):
    rng = np.random.default_rng(num_threads)
    splits, n = random_nested(rng, 20_000 if levels == 1 else 3000, levels, 12)
    values = rng.integers(0, 100, size=(n, *inner)).astype(np.int32)
    want = reference.ragged_to_sparse(values, splits)
    got = sfer.ragged_to_sparse(values, splits, num_threads=num_threads)
    assert_same(got, want)
    if sfer.openmp_enabled() and not sfer._runtime.in_forked_child():
        assert sfer._runtime._last_threads() == num_threads
    flat = values.reshape(n, -1)[:, 0].copy()
    coo = reference.ragged_to_sparse(flat, splits[-1])
    vals, back = sfer.sparse_to_ragged(*coo, num_threads=num_threads)
    np.testing.assert_array_equal(back, splits[-1])
    assert sfer._runtime._last_threads() == (num_threads if sfer.openmp_enabled() else 1)


def test_row_skew_and_long_rows():
    # one row holds nearly everything: the threads split the entries, not the rows
    splits = np.array([0, 0, 200_000, 200_001, 200_001], dtype=np.int64)
    values = np.arange(200_001, dtype=np.int64)
    for t in (1, 3, 16):
        assert_same(sfer.ragged_to_sparse(values, splits, num_threads=t),
                    reference.ragged_to_sparse(values, splits))


@pytest.mark.parametrize("seed", range(3))
def test_row_lengths_around_the_wide_step(seed):
    # The one-level writer takes short rows in steps of 16 entries and writes past a row's
    # end (the next rows overwrite it), but never within 16 entries of its slice's end: rows
    # of every length near the step, with slices cut at every thread count.
    rng = np.random.default_rng(seed)
    lengths = rng.choice([0, 1, 2, 15, 16, 17, 31, 32, 33, 47, 48, 49], size=300)
    splits = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    values = np.arange(int(splits[-1]), dtype=np.float64)
    for size in (1, 2, 3, 17, 40, 300):
        part = splits[:size + 1]
        want = reference.ragged_to_sparse(values[:part[-1]], part)
        for t in range(1, 9):
            assert_same(sfer.ragged_to_sparse(values[:part[-1]], part, num_threads=t), want)


@pytest.mark.parametrize("levels, inner", [(1, ()), (2, ()), (1, (3,))])
@pytest.mark.parametrize("num_threads", [1, 3])
def test_out_receives_indices(levels, inner, num_threads):
    rng = np.random.default_rng(levels)
    splits, n = random_nested(rng, 500, levels, 40)
    values = rng.standard_normal((n, *inner))
    want = reference.ragged_to_sparse(values, splits)
    out = np.full(want.indices.shape, -1, dtype=np.int64)
    got = sfer.ragged_to_sparse(values, splits, num_threads=num_threads, out=out)
    assert got.indices is out
    assert_same(got, want)
    out[:] = -1                                    # the same buffer again: rewritten whole
    assert_same(sfer.ragged_to_sparse(values, splits, out=out), want)


def _out_cases():
    ok = np.zeros((5, 2), dtype=np.int64)
    read_only = ok.copy()
    read_only.flags.writeable = False
    return [
        ([[0, 0]] * 5, TypeError, "out must be a numpy.ndarray, got list"),
        (np.zeros((5, 2), dtype=np.int32), TypeError, "out must have dtype int64"),
        (np.zeros((5, 2), dtype=">i8"), TypeError, "out must have dtype int64"),
        (np.zeros((4, 2), dtype=np.int64), ValueError, r"shape \(5, 2\).*got \(4, 2\)"),
        (np.zeros(10, dtype=np.int64), ValueError, r"shape \(5, 2\)"),
        (read_only, ValueError, "out must be writeable"),
        (np.zeros((2, 5), dtype=np.int64).T, ValueError, "C-contiguous and aligned"),
    ]


@pytest.mark.parametrize("out, exc, match", _out_cases())
def test_out_rejected(out, exc, match):
    before = np.array(out, copy=True) if isinstance(out, np.ndarray) else None
    with pytest.raises(exc, match=match):
        sfer.ragged_to_sparse(np.arange(5.0), np.array([0, 2, 2, 5]), out=out)
    if before is not None:
        np.testing.assert_array_equal(out, before)     # left as it was


def test_out_must_not_overlap_the_inputs():
    buf = np.zeros(40, dtype=np.int64)
    buf[:4] = [0, 2, 2, 5]
    with pytest.raises(ValueError, match="out must not overlap row_splits"):
        sfer.ragged_to_sparse(np.arange(5.0), buf[:4], out=buf[2:12].reshape(5, 2))
    with pytest.raises(ValueError, match="out must not overlap row_splits"):   # a level of a list
        sfer.ragged_to_sparse(np.arange(5.0), [np.array([0, 3]), buf[:4]],
                              out=buf[:15].reshape(5, 3))
    with pytest.raises(ValueError, match="out must not overlap values"):
        sfer.ragged_to_sparse(buf[20:25], [0, 5], out=buf[16:26].reshape(5, 2))
    np.testing.assert_array_equal(buf[:4], [0, 2, 2, 5])


def test_out_checked_after_the_inputs():
    # bad splits and a bad out: the splits' error, as without out
    with pytest.raises(ValueError, match="row_splits must start at 0"):
        sfer.ragged_to_sparse(np.arange(5.0), [1, 5], out=np.zeros(3))


@pytest.mark.parametrize("seed", range(4))
def test_round_trip(seed):
    rng = np.random.default_rng(seed)
    splits = random_splits(rng, int(rng.integers(0, 3000)), 9)
    values = rng.standard_normal(int(splits[-1]))
    coo = sfer.ragged_to_sparse(values, splits)
    vals, back = sfer.sparse_to_ragged(*coo)
    np.testing.assert_array_equal(back, splits)
    np.testing.assert_array_equal(vals, values)
    assert np.shares_memory(vals, values)
    rv, rs = reference.sparse_to_ragged(*coo)
    np.testing.assert_array_equal(rs, splits)


def test_values_any_dtype_and_layout():
    values = np.array(["a", "bb", "ccc", "d"], dtype=object)[::-1]   # not contiguous either
    coo = sfer.ragged_to_sparse(values, [0, 3, 4])
    assert coo.values.tolist() == ["d", "ccc", "bb", "a"]
    assert np.shares_memory(coo.values, values)
    swapped = np.array([1, 2, 3], dtype=">i4")
    assert sfer.ragged_to_sparse(swapped, [0, 3]).values.dtype == np.dtype(">i4")


@pytest.mark.parametrize("dtype", [np.int32, np.uint8, np.uint64, ">i8", np.int16])
def test_splits_dtypes(dtype):
    splits = np.array([0, 2, 3], dtype=dtype)
    assert_same(sfer.ragged_to_sparse(np.arange(3), splits),
                reference.ragged_to_sparse(np.arange(3), [0, 2, 3]))


def test_splits_as_lists_and_tuples():
    a = sfer.ragged_to_sparse([1.0, 2.0], (0, 1, 2))
    assert a.indices.tolist() == [[0, 0], [1, 0]]
    b = sfer.ragged_to_sparse([1.0, 2.0], [np.array([0, 1]), (0, 2)])
    assert b.indices.tolist() == [[0, 0, 0], [0, 0, 1]]
    c = sfer.ragged_to_sparse([1.0, 2.0], [[0, 2]])   # a sequence of one vector
    assert c.indices.tolist() == [[0, 0], [0, 1]]


# --------------------------------------------------------------------- hostile splits


HOSTILE = [
    (np.arange(3), [0, 2, 1, 3], ValueError, r"row_splits must never decrease, got "
     r"row_splits\[1\] = 2 followed by row_splits\[2\] = 1"),
    (np.arange(3), [1, 2, 3], ValueError, r"row_splits must start at 0, got row_splits\[0\] = 1"),
    (np.arange(3), [0, 2, 4], ValueError, r"row_splits must end at the length of values "
     r"\(values.shape\[0\]\) \(3\), got row_splits\[-1\] = 4"),
    (np.arange(3), [0, 2], ValueError, r"got row_splits\[-1\] = 2"),
    (np.arange(3), [], ValueError, "row_splits must not be empty"),
    (np.arange(3), np.array([], dtype=np.int32), ValueError, "row_splits must not be empty"),
    (np.arange(3), [0, I64.max], ValueError, f"got row_splits\\[-1\\] = {I64.max}"),
    (np.arange(3), [0, I64.max, 3], ValueError, "must never decrease"),
    (np.arange(3), [0, I64.min, 3], ValueError, f"row_splits\\[1\\] = {I64.min}"),
    (np.arange(3), [I64.min, 3], ValueError, "must start at 0"),
    (np.arange(3), np.array([0, 2**63, 3], dtype=np.uint64), ValueError,
     r"row_splits\[1\] = 9223372036854775808 is beyond int64's maximum"),
    (np.arange(3), np.array([0, 1.5, 3]), TypeError, "row_splits must have an integer dtype"),
    (np.arange(3), np.array([[0, 3]]), ValueError, "row_splits must be 1-D"),
    (np.float64(1), [0, 1], ValueError, "values must be at least 1-D"),
    (np.arange(3), [[0, 1], [0, 2, 3]], ValueError, r"row_splits\[0\] must end at the length "
     r"of row_splits\[1\]'s rows \(its length minus 1\) \(2\), got row_splits\[0\]\[-1\] = 1"),
    (np.arange(3), [[0, 2], [0, 3, 2]], ValueError, r"row_splits\[1\] must never decrease"),
    (np.arange(3), [[1, 2], [0, 1, 3]], ValueError, r"row_splits\[0\] must start at 0"),
    (np.arange(3), [[], [0, 1, 3]], ValueError, r"row_splits\[0\] must not be empty"),
]


@pytest.mark.parametrize("values, splits, exc, match", HOSTILE)
@pytest.mark.parametrize("impl", ["sfer", "reference"])
def test_hostile_splits(values, splits, exc, match, impl):
    op = sfer.ragged_to_sparse if impl == "sfer" else reference.ragged_to_sparse
    with pytest.raises(exc, match=match):
        op(values, splits)


def test_hostile_splits_every_thread_count():
    splits = np.arange(0, 200_001, 2, dtype=np.int64)
    splits[70_000] = I64.min
    splits[90_000] = -5
    values = np.zeros(200_000)
    for t in (1, 2, 5, 16):
        with pytest.raises(ValueError, match=r"row_splits\[70000\] = -9223372036854775808"):
            sfer.ragged_to_sparse(values, splits, num_threads=t)


def test_innermost_level_checked_first():
    # both levels are wrong: the innermost one is reported (TensorFlow's order)
    with pytest.raises(ValueError, match=r"row_splits\[1\] must start at 0"):
        sfer.ragged_to_sparse(np.arange(3), [[1, 5], [1, 2, 3]])


def test_num_threads_checked():
    with pytest.raises(ValueError, match="num_threads must be >= 1"):
        sfer.ragged_to_sparse(np.arange(2), np.array([0, 2]), num_threads=0)


# --------------------------------------------------------------------- sparse_to_ragged


def test_sparse_to_ragged_example():
    vals, splits = sfer.sparse_to_ragged(np.array([[0, 0], [0, 1], [2, 0]]), [1.0, 2.0, 3.0],
                                         [4, 7])
    assert splits.tolist() == [0, 2, 2, 3, 3] and splits.dtype == np.int64
    assert vals.tolist() == [1.0, 2.0, 3.0]
    vals, splits = sfer.sparse_to_ragged(np.zeros((0, 2), np.int64), np.zeros(0), [3, 0])
    assert splits.tolist() == [0, 0, 0, 0]
    vals, splits = sfer.sparse_to_ragged(np.zeros((0, 2), np.int64), np.zeros(0), [0, 0])
    assert splits.tolist() == [0]


SPARSE_BAD = [
    ([[0, 0], [0, 2]], [4, 4], ValueError, r"not right-ragged .*indices\[1, 1\] = 2, "
     r"expected 1"),
    ([[0, 1]], [4, 4], ValueError, r"indices\[0, 1\] = 1, expected 0"),
    ([[1, 0], [0, 0]], [4, 4], ValueError, r"row-major order: indices\[1, 0\] = 0 follows "
     r"row 1"),
    ([[0, 0], [4, 0]], [4, 4], IndexError, r"indices\[1, 0\] = 4 is out of range \[0, 4\)"),
    ([[-1, 0]], [4, 4], IndexError, r"indices\[0, 0\] = -1 is out of range"),
    ([[0, 0, 0]], [4, 4, 4], ValueError, "rank-2 sparse tensor"),
    ([[0, 0], [0, 0]], [4, 4], ValueError, r"indices\[1, 1\] = 0, expected 1"),
]


@pytest.mark.parametrize("indices, shape, exc, match", SPARSE_BAD)
@pytest.mark.parametrize("impl", ["sfer", "reference"])
def test_sparse_to_ragged_errors(indices, shape, exc, match, impl):
    op = sfer.sparse_to_ragged if impl == "sfer" else reference.sparse_to_ragged
    with pytest.raises(exc, match=match):
        op(np.array(indices), np.arange(len(indices), dtype=np.float32), shape)


def test_sparse_to_ragged_uint64_column():
    ind = np.array([[0, 0], [0, 2**64 - 1]], dtype=np.uint64)
    for op in (sfer.sparse_to_ragged, reference.sparse_to_ragged):
        with pytest.raises(ValueError, match=r"indices\[1, 1\] = 18446744073709551615"):
            op(ind, [1, 2], [1, 2])


def test_sparse_to_ragged_first_error_every_thread_count():
    n = 100_000
    ind = np.zeros((n, 2), dtype=np.int64)
    ind[:, 0] = np.arange(n) // 2
    ind[:, 1] = np.arange(n) % 2
    ind[60_001, 1] = 5
    ind[80_000, 0] = 0
    for t in (1, 2, 3, 16):
        with pytest.raises(ValueError, match=r"indices\[60001, 1\] = 5, expected 1"):
            sfer.sparse_to_ragged(ind, np.zeros(n), [n, 2], num_threads=t)


# --------------------------------------------------------------------- fork


def test_fork_child_runs_serially(tmp_path):
    code = textwrap.dedent("""
        import os, numpy as np, sfer, sfer._runtime
        s = np.arange(0, 400_001, 4, dtype=np.int64)
        v = np.arange(400_000, dtype=np.float32)
        want = sfer.ragged_to_sparse(v, s, num_threads=4).indices.sum()
        pid = os.fork()
        if pid == 0:
            got = sfer.ragged_to_sparse(v, s, num_threads=4)
            back = sfer.sparse_to_ragged(got.indices, got.values, got.dense_shape)[1]
            ok = (got.indices.sum() == want and sfer._runtime._last_threads() == 1
                  and (back == s).all())
            os._exit(0 if ok else 3)
        _, status = os.waitpid(pid, 0)
        print(os.waitstatus_to_exitcode(status))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, cwd=tmp_path)  # not the checkout: the installed sfer
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "0"
