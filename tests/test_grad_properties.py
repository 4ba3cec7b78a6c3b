"""Hypothesis property tests against the NumPy reference."""

from __future__ import annotations

import re

import numpy as np
import pytest
from hypothesis import given, note
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import sfer
from checks import assert_bits_equal, check_result
from helpers import ARRAY_LAYOUTS, AVAILABLE_GRAD_NAMES, BFLOAT16, MAP_NAMES, apply_layout
from oracle import first_bad, index_error_message, scalar_bits

grad = sfer.sparse_fill_empty_rows_grad

MAX_N_FULL = 300
F32_BOUND = float(np.float32(1e30))


def float_elements(dtype: np.dtype, special: bool):
    """Element strategy with bounded magnitude (the sum cannot overflow),
    optionally with NaN / +-inf mixed in."""
    if dtype == np.float16:
        base = st.floats(width=16, allow_nan=False, allow_infinity=False)
    elif dtype == np.float32:
        base = st.floats(-F32_BOUND, F32_BOUND, width=32)
    elif dtype == np.float64:
        base = st.floats(-1e300, 1e300)
    elif dtype == np.complex64:
        part = st.floats(-F32_BOUND, F32_BOUND, width=32)
        base = st.builds(complex, part, part)
    else:
        part = st.floats(-1e300, 1e300)
        base = st.builds(complex, part, part)
    if not special:
        return base
    if dtype.kind == "c":
        specials = st.sampled_from([complex(np.nan, 0), complex(0, np.inf), complex(-np.inf, 1), complex(np.inf, np.nan)])
    else:
        specials = st.sampled_from([np.nan, np.inf, -np.inf])
    return st.one_of(base, base, base, specials)


@st.composite
def grad_arrays(draw, n_full: int):
    name = draw(st.sampled_from(AVAILABLE_GRAD_NAMES))
    if name == "bfloat16":
        special = draw(st.booleans())
        f32 = draw(hnp.arrays(np.float32, n_full, elements=float_elements(np.dtype(np.float32), special)))
        return f32.astype(BFLOAT16)
    dtype = np.dtype(name)
    if dtype.kind in "iu":
        return draw(hnp.arrays(dtype, n_full))
    special = draw(st.booleans())
    return draw(hnp.arrays(dtype, n_full, elements=float_elements(dtype, special)))


def map_dtypes_for(n_full: int):
    """Integer dtypes able to hold n_full - 1."""
    return [d for d in MAP_NAMES if n_full <= 1 or np.iinfo(d).max >= n_full - 1]


@st.composite
def valid_maps(draw, n_full: int):
    dtype = draw(st.sampled_from(map_dtypes_for(n_full)))
    if n_full == 0:
        return np.array([], dtype=dtype)
    mode = draw(st.sampled_from(["random", "unique", "sorted", "all", "empty"]))
    if mode == "empty":
        return np.array([], dtype=dtype)
    if mode == "all":
        perm = draw(st.permutations(range(n_full)))
        return np.array(perm, dtype=dtype)
    idx = st.integers(0, n_full - 1)
    if mode == "unique":
        n = draw(st.integers(0, n_full))
        return draw(hnp.arrays(dtype, n, elements=idx, unique=True))
    n = draw(st.integers(0, 3 * n_full))
    arr = draw(hnp.arrays(dtype, n, elements=idx))
    return np.sort(arr) if mode == "sorted" else arr


layouts = st.sampled_from(ARRAY_LAYOUTS)
thread_counts = st.one_of(st.none(), st.integers(1, 4))


@given(data=st.data())
def test_matches_reference(data):
    n_full = data.draw(st.integers(0, MAX_N_FULL), label="n_full")
    g = data.draw(grad_arrays(n_full), label="grad_values")
    rim = data.draw(valid_maps(n_full), label="reverse_index_map")
    g = apply_layout(g, data.draw(layouts, label="grad layout"))[0]
    rim = apply_layout(rim, data.draw(layouts, label="map layout"))[0]
    nt = data.draw(thread_counts, label="num_threads")
    note(f"g.dtype={g.dtype} rim.dtype={rim.dtype}")
    g_before, rim_before = g.copy(), rim.copy()
    res = grad(rim, g, num_threads=nt)
    check_result(res, rim, g)
    assert g.tobytes() == g_before.tobytes() and rim.tobytes() == rim_before.tobytes()


@given(data=st.data())
def test_thread_count_and_map_order_do_not_change_bits(data):
    n_full = data.draw(st.integers(1, MAX_N_FULL), label="n_full")
    g = data.draw(grad_arrays(n_full), label="grad_values")
    rim = data.draw(valid_maps(n_full), label="reverse_index_map")
    perm = data.draw(st.permutations(range(rim.shape[0])), label="perm")
    rim_perm = rim[np.array(perm, dtype=np.intp)] if len(perm) else rim
    nt = data.draw(st.integers(2, 4), label="num_threads")
    base = grad(rim, g, num_threads=1)
    other = grad(rim_perm, g, num_threads=nt)
    assert scalar_bits(base.d_default_value) == scalar_bits(other.d_default_value)
    assert_bits_equal(other.d_values, base.d_values[np.array(perm, dtype=np.intp)] if len(perm) else base.d_values)


@st.composite
def invalid_maps(draw, n_full: int):
    dtype = np.dtype(draw(st.sampled_from(map_dtypes_for(n_full + 1))))
    info = np.iinfo(dtype)
    bad_parts = [st.integers(n_full, int(info.max))]
    if dtype.kind == "i":
        bad_parts.append(st.integers(int(info.min), -1))
    bad = st.one_of(*bad_parts)
    good = st.integers(0, n_full - 1) if n_full > 0 else bad
    n = draw(st.integers(1, 2 * n_full + 5))
    values = draw(st.lists(st.one_of(good, good, good, bad), min_size=n, max_size=n))
    pos = draw(st.integers(0, n - 1))
    values[pos] = draw(bad)
    return np.array(values, dtype=dtype)


@given(data=st.data())
def test_invalid_maps_raise_first_bad_j(data):
    n_full = data.draw(st.integers(0, 200), label="n_full")
    rim = data.draw(invalid_maps(n_full), label="reverse_index_map")
    rim = apply_layout(rim, data.draw(layouts, label="map layout"))[0]
    g = data.draw(grad_arrays(n_full), label="grad_values")
    bad = first_bad(rim, n_full)
    assert bad is not None
    j, v = bad
    msg = "^" + re.escape(index_error_message(j, v, n_full)) + "$"
    nt = data.draw(thread_counts, label="num_threads")
    with pytest.raises(IndexError, match=msg):
        grad(rim, g, num_threads=nt)


@given(
    n_full=st.integers(0, 50),
    dtype=st.sampled_from(MAP_NAMES),
    data=st.data(),
)
def test_python_list_inputs_match_array_inputs(n_full, dtype, data):
    g = data.draw(hnp.arrays(np.float64, n_full, elements=st.floats(-1e6, 1e6)))
    if n_full:
        rim = data.draw(st.lists(st.integers(0, n_full - 1), max_size=60))
    else:
        rim = []
    res_list = grad(rim, g.tolist())
    res_arr = grad(np.array(rim, dtype=dtype), g)
    assert_bits_equal(res_list.d_values, res_arr.d_values)
    assert scalar_bits(res_list.d_default_value) == scalar_bits(res_arr.d_default_value)
