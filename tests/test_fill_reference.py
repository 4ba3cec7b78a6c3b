"""sfer.reference.sparse_fill_empty_rows, the forward op in plain NumPy: hand-worked examples,
TensorFlow's checks in TensorFlow's order, every dtype family, default_value conversion, and
the round trip with the grad op."""

from __future__ import annotations

import itertools
from typing import Any, List, Tuple

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import sfer
from helpers import BFLOAT16, FILL_RULES, STRING_DTYPE, broken_fill_inputs
from sfer import reference

fill = reference.sparse_fill_empty_rows
FillResult = reference.FillResult



def _loop(indices: Any, values: Any, dense_rows: int, default: Any) -> Tuple[list, list, list,
                                                                                list]:
    """TensorFlow's CPU kernel written out as loops (count the rows, prefix sums, fill the
    entries in input order, then the empty rows): an oracle independent of the reference's
    argsort.  Lists of Python values."""
    idx = np.asarray(indices).tolist()
    rank = np.asarray(indices).shape[1]
    vals = list(values)
    n = len(idx)
    counts = [0] * dense_rows
    ordered = True
    last = 0
    for i in range(n):
        counts[idx[i][0]] += 1
        ordered = ordered and idx[i][0] >= last
        last = idx[i][0]
    empty = [c == 0 for c in counts]
    if not any(empty) and ordered:
        return idx, vals, empty, list(range(n))
    ends, total = [], 0
    for c in counts:
        total += max(c, 1)
        ends.append(total)
    out_idx: List[Any] = [None] * total
    out_vals: List[Any] = [None] * total
    filled = [0] * dense_rows
    rim = [0] * n
    for i in range(n):
        row = idx[i][0]
        pos = (ends[row - 1] if row else 0) + filled[row]
        filled[row] += 1
        out_idx[pos], out_vals[pos], rim[i] = idx[i], vals[i], pos
    for row in range(dense_rows):
        if empty[row]:
            pos = ends[row - 1] if row else 0
            out_idx[pos] = [row] + [0] * (rank - 1)
            out_vals[pos] = default
    return out_idx, out_vals, empty, rim


def _check(res: FillResult, indices: Any, values: Any, dense_rows: int, default: Any) -> None:
    """``res`` has the documented types and equals the loop oracle."""
    assert isinstance(res, FillResult)
    oi, ov, ei, rim = res
    n = np.asarray(indices).shape[0]
    assert oi.dtype == np.int64 and oi.ndim == 2
    assert ei.dtype == np.bool_ and ei.shape == (dense_rows,)
    assert rim.dtype == np.int64 and rim.shape == (n,)
    assert ov.shape == (oi.shape[0],)
    want_idx, want_vals, want_empty, want_rim = _loop(indices, list(values), dense_rows,
                                                      default)
    if oi.shape[0]:
        assert oi.tolist() == want_idx
    assert ov.tolist() == want_vals
    assert ei.tolist() == want_empty
    assert rim.tolist() == want_rim


# ---------------------------------------------------------------------------------------------
# the API


def test_public_api():
    assert {"FillResult", "sparse_fill_empty_rows"} <= set(reference.__all__)
    assert FillResult._fields == ("output_indices", "output_values", "empty_row_indicator",
                                  "reverse_index_map")
    assert issubclass(FillResult, tuple)
    assert "The forward op" in reference.__doc__


# ---------------------------------------------------------------------------------------------
# hand-worked examples


def test_tf_docstring_example():
    """tf.sparse.fill_empty_rows' docstring: shape [5, 6], rows 1 and 4 empty."""
    res = fill([[0, 1], [0, 3], [2, 0], [3, 1]], np.array([b"a", b"b", b"c", b"d"]), [5, 6],
               b"default")
    assert res.output_indices.tolist() == [[0, 1], [0, 3], [1, 0], [2, 0], [3, 1], [4, 0]]
    assert res.output_values.tolist() == [b"a", b"b", b"default", b"c", b"d", b"default"]
    assert res.output_values.dtype == np.dtype("S7")  # widened to the longer default
    assert res.empty_row_indicator.tolist() == [False, True, False, False, True]
    assert res.reverse_index_map.tolist() == [0, 1, 3, 4]


def test_tf_kernel_test_example():
    """TensorFlow's sparse_ops_test (5x6, default -1)."""
    res = fill([[0, 0], [1, 0], [1, 3], [1, 4], [3, 2], [3, 3]],
               np.array([0, 10, 13, 14, 32, 33], np.int32), np.array([5, 6], np.int64), -1)
    assert res.output_indices.tolist() == [[0, 0], [1, 0], [1, 3], [1, 4], [2, 0], [3, 2],
                                           [3, 3], [4, 0]]
    assert res.output_values.tolist() == [0, 10, 13, 14, -1, 32, 33, -1]
    assert res.output_values.dtype == np.int32
    assert res.empty_row_indicator.tolist() == [False, False, True, False, True]
    assert res.reverse_index_map.tolist() == [0, 1, 2, 3, 5, 6]


def test_rank_1():
    res = fill([[3], [1], [1]], np.array([1.0, 2.0, 3.0]), [5], 9.0)
    assert res.output_indices.tolist() == [[0], [1], [1], [2], [3], [4]]
    assert res.output_values.tolist() == [9.0, 2.0, 3.0, 9.0, 1.0, 9.0]
    assert res.empty_row_indicator.tolist() == [True, False, True, False, True]
    assert res.reverse_index_map.tolist() == [4, 1, 2]


def test_rank_3():
    res = fill([[2, 1, 1], [0, 0, 2], [2, 0, 0]], [7, 8, 9], [4, 2, 3], 0)
    assert res.output_indices.tolist() == [[0, 0, 2], [1, 0, 0], [2, 1, 1], [2, 0, 0],
                                           [3, 0, 0]]
    assert res.output_values.tolist() == [8, 0, 7, 9, 0]
    assert res.empty_row_indicator.tolist() == [False, True, False, True]
    assert res.reverse_index_map.tolist() == [2, 0, 3]


def test_unsorted_within_a_row_and_duplicates_stay_as_given():
    """A stable grouping by row, not a sort by the full index."""
    idx = [[1, 5], [0, 2], [1, 0], [1, 5], [0, 2], [1, 3]]
    res = fill(idx, [10, 20, 30, 40, 50, 60], [2, 6], -1)
    assert res.output_indices.tolist() == [[0, 2], [0, 2], [1, 5], [1, 0], [1, 5], [1, 3]]
    assert res.output_values.tolist() == [20, 50, 10, 30, 40, 60]
    assert res.empty_row_indicator.tolist() == [False, False]
    assert res.reverse_index_map.tolist() == [2, 0, 3, 4, 1, 5]


def test_shuffled_rows_with_empty_rows_at_both_ends():
    idx = [[3, 0], [1, 1], [2, 0], [1, 0]]
    res = fill(idx, [1.5, 2.5, 3.5, 4.5], [6, 2], -0.5)
    assert res.output_indices.tolist() == [[0, 0], [1, 1], [1, 0], [2, 0], [3, 0], [4, 0],
                                           [5, 0]]
    assert res.output_values.tolist() == [-0.5, 2.5, 4.5, 3.5, 1.5, -0.5, -0.5]
    assert res.empty_row_indicator.tolist() == [True, False, False, False, True, True]
    assert res.reverse_index_map.tolist() == [4, 1, 3, 2]


def test_sorted_rows_but_one_empty_is_not_the_fast_path():
    res = fill([[0, 1], [2, 0]], [1, 2], [3, 4], 7)
    assert res.output_indices.tolist() == [[0, 1], [1, 0], [2, 0]]
    assert res.reverse_index_map.tolist() == [0, 2]


def test_full_but_unsorted_rows_is_not_the_fast_path():
    res = fill([[1, 0], [0, 0]], [1, 2], [2, 1], 7)
    assert res.output_indices.tolist() == [[0, 0], [1, 0]]
    assert res.output_values.tolist() == [2, 1]
    assert res.reverse_index_map.tolist() == [1, 0]


def test_fast_path_returns_copies_of_the_inputs():
    idx = np.array([[0, 3], [0, 1], [1, 2], [2, 0], [2, 0]], np.int64)  # columns unsorted
    vals = np.array([5.0, 4.0, 3.0, 2.0, 1.0])
    res = fill(idx, vals, [3, 4], 0.0)
    assert res.output_indices.tolist() == idx.tolist()
    assert res.output_values.tobytes() == vals.tobytes()
    assert res.reverse_index_map.tolist() == [0, 1, 2, 3, 4]
    assert not res.empty_row_indicator.any()
    for out, inp in ((res.output_indices, idx), (res.output_values, vals)):
        assert not np.shares_memory(out, inp) and out.flags.writeable  # documented: copies


def test_n_zero_gives_one_default_per_row():
    res = fill(np.zeros((0, 3), np.int64), np.zeros(0, np.float32), [3, 5, 5], 2.5)
    assert res.output_indices.tolist() == [[0, 0, 0], [1, 0, 0], [2, 0, 0]]
    assert res.output_values.tolist() == [2.5] * 3 and res.output_values.dtype == np.float32
    assert res.empty_row_indicator.tolist() == [True] * 3
    assert res.reverse_index_map.shape == (0,) and res.reverse_index_map.dtype == np.int64


@pytest.mark.parametrize("rank", [1, 2, 3])
def test_dense_rows_zero_with_no_entries(rank):
    res = fill(np.zeros((0, rank), np.int32), np.zeros(0, np.int16), [0] + [4] * (rank - 1),
               np.int16(1))
    assert res.output_indices.shape == (0, rank) and res.output_indices.dtype == np.int64
    assert res.output_values.shape == (0,) and res.output_values.dtype == np.int16
    assert res.empty_row_indicator.shape == (0,) and res.empty_row_indicator.dtype == np.bool_
    assert res.reverse_index_map.shape == (0,) and res.reverse_index_map.dtype == np.int64


def test_dense_rows_zero_with_entries_is_an_error():
    with pytest.raises(IndexError, match=r"^indices\[0, 0\] = 0 is out of range \[0, 0\)$"):
        fill([[0, 0]], [1.0], [0, 3], 0.0)


def test_columns_pass_through_unchecked():
    """Columns 1.. are never checked, as in TensorFlow: negative and too large stay."""
    idx = [[1, -5, 2**40], [0, 99, -1]]
    res = fill(idx, [1, 2], [3, 2, 2], 0)
    assert res.output_indices.tolist() == [[0, 99, -1], [1, -5, 2**40], [2, 0, 0]]
    # uint64 columns above int64's maximum keep their bits (documented: they wrap)
    big = np.array([[0, 2**64 - 1]], np.uint64)
    assert fill(big, [1], [1, 1], 0).output_indices.tolist() == [[0, -1]]


@pytest.mark.parametrize("dtype", ["int8", "int16", "int32", "int64", "uint8", "uint16",
                                   "uint32", "uint64", ">i4", ">u8", "<i2"])
def test_every_integer_index_dtype(dtype):
    idx = np.array([[2, 1], [0, 3], [2, 0]], dtype)
    shape = np.array([4, 5], dtype)
    res = fill(idx, [1.0, 2.0, 3.0], shape, 0.0)
    assert res.output_indices.dtype == np.int64
    assert res.output_indices.tolist() == [[0, 3], [1, 0], [2, 1], [2, 0], [3, 0]]
    assert res.reverse_index_map.tolist() == [2, 0, 3]


def test_strided_and_read_only_inputs():
    base = np.array([[2, 9, 1, 9], [0, 9, 3, 9], [2, 9, 0, 9]], np.int64)
    idx = base[:, ::2]
    vals = np.array([1.0, 0, 2.0, 0, 3.0])[::2]
    for a in (base, vals):
        a.flags.writeable = False
    res = fill(idx, vals, (4, 5), 0.0)
    assert res.output_indices.tolist() == [[0, 3], [1, 0], [2, 1], [2, 0], [3, 0]]
    assert res.output_values.tolist() == [2.0, 0.0, 1.0, 3.0, 0.0]


def test_inputs_are_never_modified(rng):
    idx = np.stack([rng.integers(0, 6, 40), rng.integers(-3, 9, 40)], axis=1)
    vals = rng.standard_normal(40).astype(np.float32)
    shape = np.array([8, 9])
    default = np.array(1.25, np.float32)
    objs = np.array([object() for _ in range(40)], dtype=object)
    before = [a.copy() for a in (idx, vals, shape, default)]
    refs = list(objs)
    for v in (vals, objs):
        fill(idx, v, shape, default)
    for a, b in zip((idx, vals, shape, default), before):
        assert a.tobytes() == b.tobytes() and a.dtype == b.dtype and a.shape == b.shape
    assert all(a is b for a, b in zip(objs, refs))


# ---------------------------------------------------------------------------------------------
# errors, one rule at a time and in TensorFlow's order

# The base inputs and the rules' mutations are shared with test_fill_basic.py (tests/helpers.py).
RULES = FILL_RULES
_broken = broken_fill_inputs


def test_base_inputs_are_valid():
    c = _broken()
    fill(c["I"], c["V"], c["S"], c["D"])


@pytest.mark.parametrize("k", range(len(RULES)), ids=[m.__name__ for m, _, _ in RULES])
def test_each_rule(k):
    c = _broken(k)
    _, exc, msg = RULES[k]
    with pytest.raises(exc, match=msg):
        fill(c["I"], c["V"], c["S"], c["D"])


@pytest.mark.parametrize("a,b", list(itertools.combinations(range(len(RULES)), 2)))
def test_rules_in_order(a, b):
    """Inputs that break two rules report the one TensorFlow checks first."""
    c = _broken(a, b)
    _, exc, msg = RULES[a]
    with pytest.raises(exc) as info:
        fill(c["I"], c["V"], c["S"], c["D"])
    assert info.type is exc
    # the message names the same rule (the shapes in it may differ from the single-rule case)
    head = msg.split(" ")[0].lstrip("^").replace("\\", "")
    assert str(info.value).startswith(head), (a, b, str(info.value))


def test_first_bad_row_is_reported():
    idx = [[0, 0], [1, 0], [-2, 0], [7, 0], [-1, 0]]
    with pytest.raises(IndexError, match=r"^indices\[2, 0\] = -2 is out of range \[0, 5\)$"):
        fill(idx, [1, 2, 3, 4, 5], [5, 1], 0)


def test_unsigned_rows_beyond_int64():
    idx = np.array([[0, 0], [2**64 - 1, 0]], np.uint64)
    with pytest.raises(IndexError, match=r"indices\[1, 0\] = 18446744073709551615 is out of"):
        fill(idx, [1, 2], np.array([3, 3], np.uint64), 0)


def test_dtype_errors_come_before_shape_errors():
    with pytest.raises(TypeError, match=r"^indices must have an integer dtype, got float64$"):
        fill(np.zeros(3), [1.0], [2, 2], 0.0)  # also not a matrix, nor the right length
    with pytest.raises(TypeError, match=r"^dense_shape must have an integer dtype, got bool$"):
        fill([[0, 0]], [1.0], np.array([[True]]), 0.0)
    with pytest.raises(TypeError, match=r"^default_value has dtype <U1"):
        fill([[0, 0]], [[1.0]], [2, 2], np.array(["x", "y"]))
    with pytest.raises(TypeError, match="indices"):  # bool is not an integer dtype
        fill(np.array([[True]]), [1.0], [1, 1], 0.0)


def test_value_stage_order():
    """Shapes before values; then default_value's value, dense_shape[0], the rows."""
    int8 = np.zeros(2, np.int8)
    with pytest.raises(ValueError, match=r"^values has length 2"):  # a shape rule wins
        fill([[0]], int8, [-1], 300)
    with pytest.raises(ValueError, match=r"^default_value = 300 does not fit"):
        fill([[0], [9]], int8, [-1], 300)
    with pytest.raises(ValueError, match=r"^dense_shape\[0\] must be >= 0"):
        fill([[0], [9]], int8, [-1], 3)
    with pytest.raises(IndexError, match=r"^indices\[1, 0\] = 9"):
        fill([[0], [9]], int8, [2], 3)


def test_conversion_errors_name_the_argument():
    with pytest.raises(ValueError, match=r"^indices could not be converted to an array"):
        fill([[0, 0], [1]], [1.0, 2.0], [2, 2], 0.0)
    with pytest.raises(ValueError, match=r"^values could not be converted to an array"):
        fill([[0, 0]], [[1.0], 2.0], [2, 2], 0.0)
    with pytest.raises(ValueError, match=r"^dense_shape could not be converted to an array"):
        fill([[0, 0]], [1.0], [[2], 2], 0.0)


def test_empty_python_lists():
    with pytest.raises(ValueError, match=r"indices must be a matrix .* got shape \(0,\)"):
        fill([], [], [3], 0.0)
    with pytest.raises(ValueError, match=r"dense_shape must not be empty"):
        fill(np.zeros((0, 0), np.int64), [], [], 0.0)


# ---------------------------------------------------------------------------------------------
# dtypes: bits copied

_NUMERIC = ["bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
            "float16", "float32", "float64", "complex64", "complex128", "longdouble",
            "clongdouble"]


def _random_bits(rng: np.random.Generator, n: int, dtype: np.dtype) -> np.ndarray:
    return np.frombuffer(rng.bytes(n * dtype.itemsize), dtype=dtype).copy()


# rows 0, 2, 4 empty: row 0 -> [0], row 1 -> entries 1, 3, 4 at [1, 2, 3], row 2 -> [4],
# row 3 -> entries 0, 2 at [5, 6], row 4 -> [7]
_IDX = np.array([[3, 1], [1, 0], [3, 0], [1, 2], [1, 1]], np.int64)
_RIM = [5, 1, 6, 2, 3]
_DEFAULT_POS = [0, 4, 7]


def test_hand_worked_layout_of_the_dtype_tests():
    res = fill(_IDX, np.arange(5), [5, 3], -1)
    assert res.reverse_index_map.tolist() == _RIM
    assert np.flatnonzero(res.output_values == -1).tolist() == _DEFAULT_POS


@pytest.mark.parametrize("name", _NUMERIC + ["bfloat16"])
def test_numeric_values_copied_bit_for_bit(name, rng):
    if name == "bfloat16":
        if BFLOAT16 is None:
            pytest.skip("bfloat16 needs ml_dtypes")
        dtype = BFLOAT16
    else:
        dtype = np.dtype(name)
    if dtype.kind == "b":
        vals = np.array([True, False, True, True, False])
        default: Any = np.True_
    else:
        vals = _random_bits(rng, 5, dtype)  # any bits: NaNs, infs, subnormals, padding
        default = vals[4:5].reshape(())  # a 0-d array: a long double scalar drops padding
        if dtype.kind not in "iu" and not name.endswith("longdouble"):
            # IEEE formats: a quiet NaN with a full payload, a signalling NaN, -0.0
            mant = 7 if dtype == BFLOAT16 else np.finfo(dtype).nmant  # of a (real) part
            part = dtype.itemsize // 2 if dtype.kind == "c" else dtype.itemsize
            bits = vals.view(f"u{part}")[:: 2 if dtype.kind == "c" else 1]  # real parts
            top = 8 * part - 1
            bits[0] = (1 << top) - 1  # all ones but the sign
            bits[1] = (((1 << (top - mant)) - 1) << mant) | 1  # exponent all ones, quiet bit 0
            bits[2] = 1 << top  # -0.0
            default = vals[2:3].reshape(())
    res = fill(_IDX, vals, [5, 3], default)
    ov = res.output_values
    assert ov.dtype == dtype
    assert ov[_RIM].tobytes() == vals.tobytes()
    for p in _DEFAULT_POS:
        assert ov[p:p + 1].tobytes() == np.asarray(default, dtype).reshape(1).tobytes()


@pytest.mark.parametrize("name", ["float32", "float64", "complex64", "int32", "uint16"])
def test_byte_swapped_values_come_back_native(name, rng):
    native = np.dtype(name)
    swapped = native.newbyteorder("S")
    vals = _random_bits(rng, 5, native).astype(swapped)  # values are kept; bits swapped
    res = fill(_IDX, vals, [5, 3], np.zeros((), swapped))
    assert res.output_values.dtype == native and res.output_values.dtype.isnative
    assert res.output_values[_RIM].tobytes() == vals.byteswap().tobytes()


def test_bytes_and_str_widen_to_the_default():
    vals = np.array([b"ab", b"c", b"", b"abc", b"x"], "S3")
    res = fill(_IDX, vals, [5, 3], b"longer!")
    assert res.output_values.dtype == np.dtype("S7")
    assert res.output_values[_RIM].tolist() == vals.tolist()
    assert res.output_values[_DEFAULT_POS].tolist() == [b"longer!"] * 3
    res = fill(_IDX, vals, [5, 3], b"z")  # a shorter default: values' dtype
    assert res.output_values.dtype == np.dtype("S3")
    uvals = np.array(["ä", "bb", "ccc", "d", "€"], ">U3")  # a byte-swapped str dtype
    res = fill(_IDX, uvals, [5, 3], "défaut")
    assert res.output_values.dtype == np.dtype("U6")  # native
    assert res.output_values[_RIM].tolist() == uvals.tolist()
    assert res.output_values[_DEFAULT_POS].tolist() == ["défaut"] * 3


def test_object_values_keep_identity():
    vals = np.empty(5, dtype=object)
    items = [object(), [1, 2], "s", None, {"k": 1}]
    for i, x in enumerate(items):
        vals[i] = x
    default = [0, 0]  # a list is one object here, stored by reference
    res = fill(_IDX, vals, [5, 3], default)
    assert res.output_values.dtype == object
    assert all(res.output_values[p] is x for p, x in zip(_RIM, items))
    assert all(res.output_values[p] is default for p in _DEFAULT_POS)
    none = fill(_IDX, vals, [5, 3], None)
    assert all(none.output_values[p] is None for p in _DEFAULT_POS)


@pytest.mark.skipif(STRING_DTYPE is None, reason="NumPy without StringDType")
def test_string_dtype():
    dt = STRING_DTYPE()
    vals = np.array(["a", "a much longer string than sixteen bytes", "", "ü", "x"], dtype=dt)
    res = fill(_IDX, vals, [5, 3], "default")
    assert res.output_values.dtype == dt
    assert res.output_values[_RIM].tolist() == vals.tolist()
    assert res.output_values[_DEFAULT_POS].tolist() == ["default"] * 3
    with pytest.raises(TypeError, match="default_value"):
        fill(_IDX, vals, [5, 3], 5)


def test_datetime_and_timedelta():
    vals = np.array(["2020-01-01T00:00:01", "NaT", "1970-01-01", "2038-01-19T03:14:08",
                     "1900-12-31"], "M8[s]")
    res = fill(_IDX, vals, [5, 3], "2000-02-29")  # a str parsed by NumPy
    assert res.output_values.dtype == np.dtype("M8[s]")
    assert res.output_values[_RIM].tobytes() == vals.tobytes()
    assert res.output_values[0] == np.datetime64("2000-02-29T00:00:00")
    nat = fill(_IDX, vals, [5, 3], np.datetime64("NaT", "s"))
    assert np.isnat(nat.output_values[_DEFAULT_POS]).all()
    with pytest.raises(ValueError, match=r"^default_value = .* does not fit in values' dtype "
                                         r"datetime64\[s\]"):
        fill(_IDX, vals, [5, 3], np.datetime64("2020-01-01T00:00:00.5"))
    with pytest.raises(ValueError, match="default_value"):  # overflows the ns range
        fill(_IDX, vals.astype("M8[ns]"), [5, 3], np.datetime64("3000-01-01"))
    td = np.array([1, -2, 3, 4, 5], "m8[ms]")
    res = fill(_IDX, td, [5, 3], 7)  # an integer counts in values' unit (NumPy's rule)
    assert res.output_values.dtype == np.dtype("m8[ms]")
    assert res.output_values[_DEFAULT_POS].tolist() == [np.timedelta64(7, "ms").tolist()] * 3
    with pytest.raises(ValueError, match="default_value"):
        fill(_IDX, td, [5, 3], np.timedelta64(1, "us"))
    with pytest.raises(TypeError, match="default_value"):
        fill(_IDX, td, [5, 3], 1.5)


def test_structured_values():
    dt = np.dtype([("a", "<i4"), ("b", "<f8"), ("c", "S2")])
    vals = np.zeros(5, dt)
    vals["a"] = [1, 2, 3, 4, 5]
    vals["b"] = [np.nan, -0.0, 1.5, np.inf, 2.0]
    vals["c"] = [b"x", b"yy", b"", b"z", b"w"]
    res = fill(_IDX, vals, [5, 3], (9, -1.0, b"d"))
    assert res.output_values.dtype == dt
    assert res.output_values[_RIM].tobytes() == vals.tobytes()
    assert res.output_values[_DEFAULT_POS].tolist() == [(9, -1.0, b"d")] * 3
    assert fill(_IDX, vals, [5, 3], vals[1]).output_values[0].tobytes() == vals[1:2].tobytes()
    with pytest.raises(TypeError, match="default_value"):
        fill(_IDX, vals, [5, 3], 5)


def test_raw_void_values():
    vals = np.array([b"abcdefgh", b"12345678", b"", b"\xff" * 8, b"x"], "V8")
    res = fill(_IDX, vals, [5, 3], np.void(b"zzzzzzzz"))
    assert res.output_values.dtype == np.dtype("V8")
    assert res.output_values[_RIM].tobytes() == vals.tobytes()
    assert res.output_values[_DEFAULT_POS].tobytes() == b"z" * 24
    with pytest.raises(TypeError, match=r"casting='equiv'"):
        fill(_IDX, vals, [5, 3], 5)


def test_other_ml_dtypes():
    ml_dtypes = pytest.importorskip("ml_dtypes")
    int4 = np.dtype(ml_dtypes.int4)
    res = fill([[1]], np.array([3], int4), [2], -8)
    assert res.output_values.dtype == int4 and res.output_values.astype(int).tolist() == [-8, 3]
    for bad in (300, 8, -9):
        with pytest.raises(ValueError, match=r"does not fit in values' dtype int4"):
            fill([[1]], np.array([3], int4), [2], bad)
    with pytest.raises(TypeError, match=r"default_value has dtype float64, which does not "
                                        r"convert to values' dtype int4"):
        fill([[1]], np.array([3], int4), [2], 1.5)  # as for int32, whatever ml_dtypes casts
    f8 = np.dtype(ml_dtypes.float8_e4m3fn)
    assert fill([[1]], np.array([3], f8), [2], 1.5).output_values.astype(float)[0] == 1.5
    with pytest.raises(ValueError, match="overflows values' dtype float8_e4m3fn"):
        fill([[1]], np.array([3], f8), [2], 1e6)


# ml_dtypes' integer types follow NumPy's integer table and its float types NumPy's float
# table (sfer's rule, whatever kinds and casts the installed ml_dtypes declares).  Each is
# checked against NumPy's own dtype of its family, on defaults that fit both.
_ML_INT_NAMES = ("int2", "int4", "uint2", "uint4")
_ML_FLOAT_NAMES = ("bfloat16", "float8_e4m3fn", "float8_e5m2", "float8_e4m3b11fnuz",
                   "float8_e4m3fnuz", "float8_e5m2fnuz")
_KIND_DEFAULTS = [1, True, 1.5, 1.0, 1 + 2j, np.float32(1.0), np.int8(1), np.uint8(1),
                  np.bool_(True), np.complex64(1), "1", np.array(1.0)]


def _outcome(values_dtype: Any, default: Any) -> Any:
    """The exception class a one-entry fill raises (None if it succeeds)."""
    try:
        fill([[1]], np.zeros(1, values_dtype), [2], default)
    except (TypeError, ValueError) as exc:
        return type(exc)
    return None


@pytest.mark.parametrize("name", _ML_INT_NAMES + _ML_FLOAT_NAMES)
@pytest.mark.parametrize("default", _KIND_DEFAULTS, ids=repr)
def test_ml_dtypes_follow_numpy_table(name, default):
    ml_dtypes = pytest.importorskip("ml_dtypes")
    if not hasattr(ml_dtypes, name):
        pytest.skip(f"ml_dtypes {ml_dtypes.__version__} has no {name}")
    dtype = np.dtype(getattr(ml_dtypes, name))
    twin = {"i": np.int8, "u": np.uint8}.get(name[0], np.float32)
    assert _outcome(dtype, default) is _outcome(twin, default)
    if _outcome(dtype, default) is None:  # and the value went in unchanged
        out = fill([[1]], np.zeros(1, dtype), [2], default).output_values
        assert out.dtype == dtype
        want = np.asarray(default).real.astype(np.float64)
        assert out.astype(np.float64)[0] == want


def test_ml_int_range_is_the_types_own():
    ml_dtypes = pytest.importorskip("ml_dtypes")
    for name in _ML_INT_NAMES:
        if not hasattr(ml_dtypes, name):
            continue
        dtype = np.dtype(getattr(ml_dtypes, name))
        info = ml_dtypes.iinfo(dtype)
        for v in (int(info.min), int(info.max)):
            assert fill([[1]], np.zeros(1, dtype), [2], v).output_values.astype(int)[0] == v
        for v in (int(info.min) - 1, int(info.max) + 1):
            with pytest.raises(ValueError, match=f"does not fit in values' dtype {name}"):
                fill([[1]], np.zeros(1, dtype), [2], v)


# ---------------------------------------------------------------------------------------------
# default_value conversion


@pytest.mark.parametrize("values_dtype,default,exc,msg", [
    ("int8", 300, ValueError, r"^default_value = 300 does not fit in values' dtype int8 "
                              r"\(range \[-128, 127\]\)$"),
    ("int8", -129, ValueError, r"default_value = -129 does not fit"),
    ("uint8", -1, ValueError, r"default_value = -1 does not fit in values' dtype uint8"),
    ("uint64", -1, ValueError, r"default_value = -1 does not fit"),
    ("int64", 2**63, ValueError, r"default_value = 9223372036854775808 does not fit"),
    ("int64", 2**70, ValueError, r"default_value = 1180591620717411303424 does not fit"),
    ("int32", 1.5, TypeError, r"^default_value has dtype float64, which does not convert to "
                              r"values' dtype int32"),
    ("int32", 2.0, TypeError, r"default_value has dtype float64"),
    ("int32", "7", TypeError, r"default_value has dtype <U1"),
    ("float32", "abc", TypeError, r"default_value has dtype <U3"),
    ("float64", b"1", TypeError, r"default_value has dtype \|S1"),
    ("float32", 1 + 2j, TypeError, r"default_value has dtype complex128"),
    ("bool", 1, TypeError, r"default_value has dtype int64"),
    ("float16", 1e5, ValueError, r"^default_value = 100000.0 overflows values' dtype float16$"),
    ("float32", 2**1100, ValueError, r"default_value = \d+ overflows values' dtype float32"),
    ("S3", "abc", TypeError, r"^default_value must be bytes for values of dtype \|S3"),
    ("U3", b"abc", TypeError, r"^default_value must be str for values of dtype <U3"),
    ("S3", 5, TypeError, r"default_value must be bytes"),
])
def test_default_value_that_does_not_fit(values_dtype, default, exc, msg):
    with pytest.raises(exc, match=msg):
        fill([[1]], np.zeros(1, values_dtype), [2], default)


@pytest.mark.parametrize("values_dtype,default,expected", [
    ("int8", 127, 127),
    ("int8", np.int64(-128), -128),
    ("uint64", 2**64 - 1, 2**64 - 1),
    ("int16", True, 1),
    ("float32", 0.1, float(np.float32(0.1))),  # floats round: not an error
    ("float16", 3, 3.0),
    ("float16", np.inf, np.inf),
    ("float64", 2**70, float(2**70)),
    ("complex64", 1.5, 1.5 + 0j),
    ("complex128", 1 - 2j, 1 - 2j),
    ("bool", np.False_, False),
])
def test_default_value_conversions(values_dtype, default, expected):
    res = fill([[1]], np.zeros(1, values_dtype), [2], default)
    assert res.output_values.dtype == np.dtype(values_dtype)
    assert res.output_values[0] == expected


def test_default_nan_and_negative_zero():
    res = fill([[1]], np.zeros(1, np.float32), [2], np.float32(-0.0))
    assert np.signbit(res.output_values[0])
    payload = np.array([0x7FC00ABC], np.uint32).view(np.float32)[0]
    res = fill([[1]], np.zeros(1, np.float32), [2], payload)
    assert res.output_values[:1].view(np.uint32)[0] == 0x7FC00ABC


@pytest.mark.skipif(BFLOAT16 is None, reason="bfloat16 needs ml_dtypes")
def test_bfloat16_default():
    res = fill([[1]], np.zeros(1, BFLOAT16), [2], 1.5)
    assert res.output_values.dtype == BFLOAT16 and float(res.output_values[0]) == 1.5
    with pytest.raises(ValueError, match="overflows"):
        fill([[1]], np.zeros(1, BFLOAT16), [2], 1e300)
    with pytest.raises(TypeError, match="default_value"):
        fill([[1]], np.zeros(1, BFLOAT16), [2], "x")


# ---------------------------------------------------------------------------------------------
# round trip with the grad op, and a property test against the loop oracle


def _random_inputs(rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray, List[int]]:
    rank = int(rng.integers(1, 4))
    dense_rows = int(rng.integers(1, 30))
    n = int(rng.integers(0, 60))
    idx = np.concatenate([rng.integers(0, dense_rows, (n, 1)),
                          rng.integers(-2, 9, (n, rank - 1))], axis=1)
    if rng.random() < 0.3:
        idx = idx[np.argsort(idx[:, 0], kind="stable")]
    vals = rng.standard_normal(n)
    return idx, vals, [dense_rows] + [9] * (rank - 1)


def test_round_trip_with_the_grad(rng):
    """sfer's grad of the map equals the direct definition: d_values = g[rim], d_default the
    sum over the empty rows' positions, which are exactly the positions not in rim."""
    for _ in range(200):
        idx, vals, shape = _random_inputs(rng)
        res = fill(idx, vals, shape, 0.0)
        n_full = res.output_values.shape[0]
        rim = res.reverse_index_map
        default_positions = np.flatnonzero(res.empty_row_indicator[res.output_indices[:, 0]]
                                           ) if n_full else np.zeros(0, np.int64)
        not_in_rim = np.setdiff1d(np.arange(n_full), rim)
        assert not_in_rim.tolist() == default_positions.tolist()
        assert len(set(rim.tolist())) == rim.size  # a permutation into [0, N_full)
        g = rng.integers(-1000, 1000, n_full)  # integers: the sum is exact
        d_values, d_default = sfer.sparse_fill_empty_rows_grad(rim, g)
        assert d_values.tolist() == g[rim].tolist()
        assert d_default == g[default_positions].sum()
        gf = rng.standard_normal(n_full)
        assert reference.mismatches(sfer.sparse_fill_empty_rows_grad(rim, gf), rim, gf) == []


def test_random_inputs_match_the_loop(rng):
    for _ in range(200):
        idx, vals, shape = _random_inputs(rng)
        res = fill(idx, vals, shape, -1.0)
        _check(res, idx, vals, shape[0], -1.0)


@given(data=st.data())
def test_property_against_the_loop(data):
    rank = data.draw(st.integers(1, 3), label="rank")
    dense_rows = data.draw(st.integers(0, 8), label="dense_rows")
    n = data.draw(st.integers(0, 12 if dense_rows else 0), label="n")
    rows = data.draw(st.lists(st.integers(0, max(dense_rows - 1, 0)), min_size=n, max_size=n),
                     label="rows")
    cols = data.draw(st.lists(st.lists(st.integers(-(2**63), 2**63 - 1), min_size=rank - 1,
                                       max_size=rank - 1), min_size=n, max_size=n),
                     label="cols")
    if data.draw(st.booleans(), label="sorted"):
        rows = sorted(rows)
    idx = np.array([[r] + c for r, c in zip(rows, cols)], np.int64).reshape(n, rank)
    vals = np.array(data.draw(st.lists(st.integers(-5, 5), min_size=n, max_size=n)), np.int8)
    default = data.draw(st.integers(-128, 127), label="default")
    res = fill(idx, vals, [dense_rows] + [3] * (rank - 1), default)
    _check(res, idx, vals.tolist(), dense_rows, default)
    assert res.output_values.dtype == np.int8
    counts = np.bincount(idx[:, 0], minlength=dense_rows)
    assert res.output_values.shape[0] == int(np.maximum(counts, 1).sum())
