"""Core behaviour: every grad dtype x every map dtype x every map shape."""

from __future__ import annotations

import numpy as np
import pytest

import sfer
from checks import MAP_CAPACITY, check_result, make_values, map_cases
from helpers import GRAD_NAMES, MAP_NAMES, dtype_of
from oracle import reference_grad

MAP_CASE_NAMES = [
    "sorted",
    "shuffled",
    "duplicates",
    "sorted_duplicates",
    "n_gt_nfull",
    "all_referenced",
    "all_referenced_dups",
    "single",
    "none_referenced",
]


def test_spec_example():
    g = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    res = sfer.sparse_fill_empty_rows_grad(np.array([0, 2, 2]), g)
    np.testing.assert_array_equal(res.d_values, [1.0, 3.0, 3.0])
    assert res.d_default_value == 11.0
    assert type(res.d_default_value) is np.float64


def test_result_is_named_tuple():
    res = sfer.sparse_fill_empty_rows_grad(np.array([1]), np.array([1, 2, 3], np.int32))
    assert isinstance(res, sfer.GradResult)
    assert isinstance(res, tuple)
    assert sfer.GradResult._fields == ("d_values", "d_default_value")
    d_values, d_default = res
    np.testing.assert_array_equal(d_values, [2])
    assert d_default == 4 and type(d_default) is np.int32
    assert res[0] is res.d_values and res[1] is res.d_default_value


def test_the_tests_dtype_lists_are_sfers():
    # helpers' lists are sfer._dtypes' table, and each name resolves to its own dtype (a wrong
    # resolver would run another dtype's tests twice and this one's never).
    from sfer import _dtypes
    from helpers import COMPLEX_NAMES, FLOAT_NAMES, INEXACT_NAMES, INT_NAMES

    assert GRAD_NAMES == _dtypes.GRAD_VALUE_NAMES
    assert sorted(FLOAT_NAMES + COMPLEX_NAMES + INT_NAMES + ("bfloat16",)) == sorted(GRAD_NAMES)
    assert set(INEXACT_NAMES) == set(FLOAT_NAMES + COMPLEX_NAMES + ("bfloat16",))
    assert set(MAP_NAMES) == set(INT_NAMES)
    for name in GRAD_NAMES:
        assert dtype_of(name).name == name
    assert {np.dtype(n).kind for n in FLOAT_NAMES} == {"f"}
    assert {np.dtype(n).kind for n in COMPLEX_NAMES} == {"c"}
    assert {np.dtype(n).kind for n in INT_NAMES} == {"i", "u"}


def test_num_threads_is_keyword_only():
    with pytest.raises(TypeError):
        sfer.sparse_fill_empty_rows_grad(np.array([0]), np.array([1.0]), 1)


@pytest.mark.parametrize("case", MAP_CASE_NAMES)
@pytest.mark.parametrize("map_dtype", MAP_NAMES)
@pytest.mark.parametrize("grad_dtype", GRAD_NAMES)
def test_dtype_matrix_exact(grad_dtype, map_dtype, case, rng):
    """Exactly summable data: d_values bit-exact and the sum exactly right."""
    dtype = dtype_of(grad_dtype)
    n_full = 100
    g = make_values(dtype, n_full, rng, "exact")
    rim = map_cases(n_full, rng, map_dtype)[case]
    g0, rim0 = g.copy(), rim.copy()
    res = sfer.sparse_fill_empty_rows_grad(rim, g)
    check_result(res, rim, g, exact=True)
    # inputs untouched
    np.testing.assert_array_equal(g.view(np.uint8), g0.view(np.uint8))
    np.testing.assert_array_equal(rim, rim0)


@pytest.mark.parametrize("case", MAP_CASE_NAMES)
@pytest.mark.parametrize("grad_dtype", GRAD_NAMES)
def test_dtype_random_data(grad_dtype, case, rng):
    """Random data of widely varying magnitude: sum within 1 ulp."""
    dtype = dtype_of(grad_dtype)
    n_full = 1000
    g = make_values(dtype, n_full, rng, "random")
    rim = map_cases(n_full, rng, np.int64)[case]
    res = sfer.sparse_fill_empty_rows_grad(rim, g)
    check_result(res, rim, g)


@pytest.mark.parametrize("map_dtype", MAP_NAMES)
@pytest.mark.parametrize("grad_dtype", GRAD_NAMES)
def test_map_dtype_full_capacity(grad_dtype, map_dtype, rng):
    """N_full as large as the map dtype can address: the top index works."""
    dtype = dtype_of(grad_dtype)
    n_full = MAP_CAPACITY.get(map_dtype, 70_000)
    g = make_values(dtype, n_full, rng, "exact")
    rim = np.concatenate([[n_full - 1, 0], rng.integers(0, n_full, size=500)]).astype(map_dtype)
    res = sfer.sparse_fill_empty_rows_grad(rim, g)
    check_result(res, rim, g, exact=True)


@pytest.mark.parametrize("grad_dtype", GRAD_NAMES)
def test_empty_everything(grad_dtype):
    dtype = dtype_of(grad_dtype)
    res = sfer.sparse_fill_empty_rows_grad(np.array([], np.int64), np.array([], dtype))
    assert res.d_values.shape == (0,)
    assert res.d_values.dtype == dtype
    assert type(res.d_default_value) is dtype.type
    check_result(res, np.array([], np.int64), np.array([], dtype))


@pytest.mark.parametrize("grad_dtype", GRAD_NAMES)
def test_empty_map_sums_everything(grad_dtype, rng):
    dtype = dtype_of(grad_dtype)
    g = make_values(dtype, 37, rng, "exact")
    res = sfer.sparse_fill_empty_rows_grad(np.array([], np.uint8), g)
    assert res.d_values.shape == (0,) and res.d_values.dtype == dtype
    _, expected = reference_grad(np.array([], np.uint8), g)
    assert res.d_default_value == expected


@pytest.mark.parametrize("grad_dtype", GRAD_NAMES)
def test_all_referenced_sum_is_positive_zero(grad_dtype, rng):
    dtype = dtype_of(grad_dtype)
    g = make_values(dtype, 50, rng, "exact")
    g[:5] = -g[:5]
    rim = np.arange(50)[::-1]
    res = sfer.sparse_fill_empty_rows_grad(rim, g)
    zero = np.zeros(1, dtype)
    assert res.d_default_value.tobytes() == zero.tobytes(), res.d_default_value


@pytest.mark.parametrize("n", [1, 2, 3, 7, 64, 1000, 4097])
def test_various_sizes(n, rng):
    g = rng.standard_normal(n)
    rim = rng.integers(0, n, size=n // 2 + 1)
    check_result(sfer.sparse_fill_empty_rows_grad(rim, g), rim, g)


def test_duplicates_excluded_once():
    g = np.array([10, 20, 30, 40], dtype=np.int64)
    rim = np.array([1, 1, 1, 3, 3])
    res = sfer.sparse_fill_empty_rows_grad(rim, g)
    np.testing.assert_array_equal(res.d_values, [20, 20, 20, 40, 40])
    assert res.d_default_value == 40


def test_n_larger_than_n_full():
    g = np.array([1.5, -2.0], dtype=np.float32)
    rim = np.array([0, 0, 0, 0, 0, 0, 1, 0], dtype=np.uint16)
    res = sfer.sparse_fill_empty_rows_grad(rim, g)
    assert res.d_values.shape == (8,)
    np.testing.assert_array_equal(res.d_values, g[rim])
    assert res.d_default_value == 0 and not np.signbit(res.d_default_value)


def test_each_call_returns_fresh_arrays(rng):
    g = rng.standard_normal(20)
    rim = np.arange(20)
    r1 = sfer.sparse_fill_empty_rows_grad(rim, g)
    r2 = sfer.sparse_fill_empty_rows_grad(rim, g)
    assert not np.shares_memory(r1.d_values, r2.d_values)
    assert not np.shares_memory(r1.d_values, g)
    np.testing.assert_array_equal(r1.d_values, g)
    r1.d_values[:] = 0  # writing the result must not touch the input
    np.testing.assert_array_equal(r2.d_values, g)
