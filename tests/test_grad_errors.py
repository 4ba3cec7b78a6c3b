"""Every error path of the spec, with its message."""

from __future__ import annotations

import re

import numpy as np
import pytest

import sfer
from helpers import MAP_NAMES
from oracle import first_bad, index_error_message

grad = sfer.sparse_fill_empty_rows_grad

G = np.arange(10, dtype=np.float64)
RIM = np.array([0, 3, 3], dtype=np.int64)


def index_match(j, v, n_full):
    return "^" + re.escape(index_error_message(j, v, n_full)) + "$"


def assert_names_dtype(excinfo, argname, dtype):
    msg = str(excinfo.value)
    assert argname in msg, msg
    dtype = np.dtype(dtype)
    assert dtype.name in msg or str(dtype) in msg, msg


# --------------------------------------------------------------------------
# shapes
# --------------------------------------------------------------------------

@pytest.mark.parametrize(
    "bad,shape",
    [
        (np.float64(1.0), ()),
        (np.array(2.5), ()),
        (3.0, ()),
        (np.zeros((2, 3)), (2, 3)),
        (np.zeros((0, 4)), (0, 4)),
        (np.zeros((5, 1)), (5, 1)),
        (np.zeros((1, 1, 1)), (1, 1, 1)),
        ([[1.0, 2.0], [3.0, 4.0]], (2, 2)),
    ],
)
def test_grad_values_not_1d(bad, shape):
    with pytest.raises(ValueError, match=re.escape(f"grad_values must be 1-D, got shape {shape}")):
        grad(RIM, bad)


@pytest.mark.parametrize(
    "bad,shape",
    [
        (np.int64(1), ()),
        (np.array(2), ()),
        (3, ()),
        (np.zeros((2, 3), dtype=np.int64), (2, 3)),
        (np.zeros((3, 1), dtype=np.int32), (3, 1)),
        (np.zeros((0, 0), dtype=np.int64), (0, 0)),
        ([[0, 1], [2, 3]], (2, 2)),
    ],
)
def test_reverse_index_map_not_1d(bad, shape):
    with pytest.raises(
        ValueError, match=re.escape(f"reverse_index_map must be 1-D, got shape {shape}")
    ):
        grad(bad, G)


def test_ragged_grad_values():
    with pytest.raises(ValueError, match="grad_values"):
        grad(RIM, [[1.0, 2.0], [3.0]])


def test_ragged_reverse_index_map():
    with pytest.raises(ValueError, match="reverse_index_map"):
        grad([[0, 1], [2]], G)


# --------------------------------------------------------------------------
# dtypes
# --------------------------------------------------------------------------

BAD_GRAD = [
    np.array([True, False, True]),
    np.array(["a", "bc", "d"]),
    np.array([b"a", b"b", b"c"]),
    np.array([1.0, "x", None], dtype=object),
    np.array([1, 2, 3], dtype=object),
    np.array(["2020-01-01", "2021-01-01", "2022-01-01"], dtype="datetime64[ns]"),
    np.array([1, 2, 3], dtype="datetime64[D]"),
    np.array([1, 2, 3], dtype="timedelta64[s]"),
    np.array([1, 2, 3], dtype=np.longdouble),
    np.array([1, 2, 3], dtype=np.clongdouble),
    np.zeros(3, dtype=[("a", "i4"), ("b", "f8")]),
    np.zeros(3, dtype="V4"),
]


@pytest.mark.parametrize("g", BAD_GRAD, ids=lambda a: str(a.dtype))
def test_bad_grad_dtype(g):
    with pytest.raises(TypeError) as excinfo:
        grad(np.array([0, 1]), g)
    assert_names_dtype(excinfo, "grad_values", g.dtype)


def test_bad_grad_dtype_bool_message():
    with pytest.raises(TypeError, match=r"grad_values.*bool|bool.*grad_values"):
        grad([0], [True, False])


def test_bad_grad_dtype_from_python_strings():
    with pytest.raises(TypeError, match="grad_values"):
        grad([0], ["a", "b"])


BAD_MAP = [
    np.array([0.0, 1.0]),
    np.array([0.0, 1.0], dtype=np.float32),
    np.array([0, 1], dtype=np.float16),
    np.array([True, False]),
    np.array([0, 1], dtype=np.complex128),
    np.array([0, 1], dtype=object),
    np.array(["0", "1"]),
    np.array([0, 1], dtype="timedelta64[s]"),
    np.array([0, 1], dtype="datetime64[D]"),
    np.array([0, 1], dtype=np.longdouble),
]


@pytest.mark.parametrize("rim", BAD_MAP, ids=lambda a: str(a.dtype))
def test_bad_map_dtype(rim):
    with pytest.raises(TypeError) as excinfo:
        grad(rim, G)
    assert_names_dtype(excinfo, "reverse_index_map", rim.dtype)


def test_bad_map_dtype_from_python_floats():
    with pytest.raises(TypeError, match=r"reverse_index_map.*float64|float64.*reverse_index_map"):
        grad([0.0, 1.0], G)


def test_bad_map_dtype_even_if_grad_empty():
    with pytest.raises(TypeError, match="reverse_index_map"):
        grad(np.array([1.5]), np.array([], np.float32))


# --------------------------------------------------------------------------
# range
# --------------------------------------------------------------------------

@pytest.mark.parametrize("map_dtype", [n for n in MAP_NAMES if np.dtype(n).kind == "i"])
def test_negative_entry(map_dtype):
    rim = np.array([0, 2, -1, 5, -7], dtype=map_dtype)
    with pytest.raises(IndexError, match=index_match(2, -1, 10)):
        grad(rim, G)


@pytest.mark.parametrize("map_dtype", MAP_NAMES)
def test_entry_equal_to_n_full(map_dtype):
    rim = np.array([9, 0, 10, 11], dtype=map_dtype)
    with pytest.raises(IndexError, match=index_match(2, 10, 10)):
        grad(rim, G)


@pytest.mark.parametrize("map_dtype", MAP_NAMES)
def test_max_value_of_map_dtype(map_dtype):
    top = int(np.iinfo(map_dtype).max)
    rim = np.array([1, top], dtype=map_dtype)
    with pytest.raises(IndexError, match=index_match(1, top, 10)):
        grad(rim, G)


def test_huge_uint64_above_int64_max():
    v = 2**63 + 5
    rim = np.array([1, 2, v, 2**64 - 1], dtype=np.uint64)
    with pytest.raises(IndexError, match=index_match(2, v, 10)):
        grad(rim, G)
    rim = np.array([2**64 - 1], dtype=np.uint64)
    with pytest.raises(IndexError, match=index_match(0, 2**64 - 1, 10)):
        grad(rim, G)


def test_int64_min():
    rim = np.array([4, np.iinfo(np.int64).min, -1], dtype=np.int64)
    with pytest.raises(IndexError, match=index_match(1, -(2**63), 10)):
        grad(rim, G)


def test_first_offending_position_reported():
    rim = np.array([0, 1, 2, 50, 3, -4, 100], dtype=np.int32)
    with pytest.raises(IndexError, match=index_match(3, 50, 10)):
        grad(rim, G)


@pytest.mark.parametrize("n", [1, 5])
def test_n_full_zero_with_nonempty_map(n):
    rim = np.zeros(n, dtype=np.int64)
    with pytest.raises(IndexError, match=index_match(0, 0, 0)):
        grad(rim, np.array([], dtype=np.float32))


def test_n_full_zero_from_python_lists():
    with pytest.raises(IndexError, match=index_match(0, 3, 0)):
        grad([3], np.array([], np.int8))


def test_out_of_range_in_strided_and_swapped_map():
    base = np.array([0, 99, 1, 2, 3, 42, 4], dtype=">i4")
    rim = base[::-2]  # [4, 3, 1, 0]
    res = grad(rim, G)
    np.testing.assert_array_equal(res.d_values, G[[4, 3, 1, 0]])
    rim = base[::-1]  # [4, 42, 3, 2, 1, 99, 0]
    with pytest.raises(IndexError, match=index_match(1, 42, 10)):
        grad(rim, G)


def test_index_error_matches_reference_helper():
    rim = np.array([3, 11, -2], dtype=np.int16)
    assert first_bad(rim, 10) == (1, 11)
    with pytest.raises(IndexError, match=index_match(1, 11, 10)):
        grad(rim, G)


def test_error_leaves_inputs_untouched():
    g = G.copy()
    rim = np.array([1, 2, 30])
    with pytest.raises(IndexError):
        grad(rim, g)
    np.testing.assert_array_equal(g, G)
    np.testing.assert_array_equal(rim, [1, 2, 30])


# --------------------------------------------------------------------------
# num_threads
# --------------------------------------------------------------------------

@pytest.mark.parametrize("num_threads", [0, -1, -100])
def test_num_threads_non_positive(num_threads):
    with pytest.raises(ValueError, match="num_threads"):
        grad(RIM, G, num_threads=num_threads)


@pytest.mark.parametrize("num_threads", [1.5, 2.0, "2", True, [2], 1 + 0j])
def test_num_threads_not_integer(num_threads):
    with pytest.raises(TypeError):
        grad(RIM, G, num_threads=num_threads)


@pytest.mark.parametrize("num_threads", [None, 1, 2, 3, 16, 64])
def test_num_threads_valid(num_threads):
    res = grad(RIM, G, num_threads=num_threads)
    np.testing.assert_array_equal(res.d_values, [0.0, 3.0, 3.0])
    assert res.d_default_value == G.sum() - 3.0


def test_unknown_keyword_rejected():
    with pytest.raises(TypeError):
        grad(RIM, G, threads=2)
