"""Input layouts: strided, negative strides, read-only, byte-swapped, unaligned,
memmap, Python sequences. Inputs are never modified."""

from __future__ import annotations

import numpy as np
import pytest

import sfer
from checks import check_result, make_values
from helpers import LAYOUTS, GRAD_NAMES, MAP_NAMES, apply_layout, dtype_of, unaligned
from oracle import native

SWAPPABLE = [n for n in GRAD_NAMES if n != "bfloat16" and np.dtype(n).itemsize > 1]


def snapshot(*arrays):
    return [np.array(a, copy=True) for a in arrays]


def assert_unchanged(arrays, snaps):
    for a, s in zip(arrays, snaps):
        assert a.dtype == s.dtype
        np.testing.assert_array_equal(
            np.ascontiguousarray(a).view(np.uint8), np.ascontiguousarray(s).view(np.uint8)
        )


def run_and_check(rim, g, exact=True):
    snaps = snapshot(rim, g)
    res = sfer.sparse_fill_empty_rows_grad(rim, g)
    check_result(res, rim, g, exact=exact)
    assert_unchanged([rim, g], snaps)
    return res


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("name", ["float64", "uint8", "bfloat16"])
def test_helpers_layouts_are_what_they_say(layout, name):
    # helpers.apply_layout (the fuzz and property tests' layouts): the same values, in the
    # memory layout its name says.
    dtype = dtype_of(name)
    arr = np.arange(1, 12).astype(dtype)
    obj, owner = apply_layout(arr, layout, np.random.default_rng(0))
    if layout == "list":
        assert obj is owner and obj == arr.tolist()
        return
    assert isinstance(obj, np.ndarray) and obj.shape == arr.shape
    assert np.shares_memory(obj, owner)
    assert obj.astype(dtype).tobytes() == arr.tobytes()
    swapped = "byteswapped" in layout and dtype.itemsize > 1
    assert obj.dtype.isnative != swapped, obj.dtype
    assert obj.flags.writeable == ("readonly" not in layout)
    assert obj.flags.aligned == ("unaligned" not in layout or dtype.itemsize == 1)
    assert obj.flags.c_contiguous == (layout not in ("strided", "byteswapped_strided",
                                                     "reversed"))
    if layout == "reversed":
        assert obj.strides[0] < 0
    assert not np.shares_memory(obj, arr)  # a copy: the caller's array is left alone


@pytest.mark.parametrize("grad_dtype", GRAD_NAMES)
@pytest.mark.parametrize("step", [2, -1, -3, 5])
def test_strided_grad_values(grad_dtype, step, rng):
    dtype = dtype_of(grad_dtype)
    base = make_values(dtype, 600, rng)
    g = base[::step]
    assert not g.flags.c_contiguous
    n_full = g.shape[0]
    rim = rng.integers(0, n_full, size=n_full // 3)
    run_and_check(rim, g)
    # the base array is also untouched
    assert np.shares_memory(g, base)


@pytest.mark.parametrize("map_dtype", MAP_NAMES)
@pytest.mark.parametrize("step", [2, -1, -3])
def test_strided_map(map_dtype, step, rng):
    g = make_values(np.float64, 100, rng)
    rim = rng.integers(0, 100, size=300).astype(map_dtype)[::step]
    assert not rim.flags.c_contiguous
    run_and_check(rim, g)


@pytest.mark.parametrize("grad_dtype", GRAD_NAMES)
def test_read_only_inputs(grad_dtype, rng):
    dtype = dtype_of(grad_dtype)
    g = make_values(dtype, 200, rng)
    rim = rng.integers(0, 200, size=150).astype(np.int32)
    g.setflags(write=False)
    rim.setflags(write=False)
    run_and_check(rim, g)
    g3 = g[::3]
    rim3 = (rim % g3.shape[0]).astype(np.uint16)
    rim3.setflags(write=False)
    run_and_check(rim3[::-2], g3)


@pytest.mark.parametrize("grad_dtype", SWAPPABLE)
def test_byteswapped_grad_values(grad_dtype, rng):
    dtype = np.dtype(grad_dtype)
    g = make_values(dtype, 300, rng).astype(dtype.newbyteorder())
    assert not g.dtype.isnative
    rim = rng.integers(0, 300, size=100)
    res = run_and_check(rim, g)
    assert res.d_values.dtype == dtype
    assert res.d_values.dtype.isnative
    assert type(res.d_default_value) is dtype.type
    # values are the same numbers, not swapped bytes
    np.testing.assert_array_equal(res.d_values, g[rim].astype(dtype))


@pytest.mark.parametrize("map_dtype", [n for n in MAP_NAMES if np.dtype(n).itemsize > 1])
def test_byteswapped_map(map_dtype, rng):
    g = make_values(np.int32, 300, rng)
    rim = rng.integers(0, 300, size=400).astype(map_dtype)
    rim_sw = rim.astype(rim.dtype.newbyteorder())
    assert not rim_sw.dtype.isnative
    res = run_and_check(rim_sw, g)
    np.testing.assert_array_equal(res.d_values, g[rim])


def test_byteswapped_strided_readonly_both(rng):
    g = make_values(np.complex128, 500, rng).astype(">c16")[::-2]
    rim = rng.integers(0, 250, size=200).astype(">u4")[::3]
    g.setflags(write=False)
    rim.setflags(write=False)
    run_and_check(rim, g)


@pytest.mark.parametrize("grad_dtype", GRAD_NAMES)
def test_unaligned_grad_values(grad_dtype, rng):
    dtype = dtype_of(grad_dtype)
    g = unaligned(make_values(dtype, 257, rng))
    rim = rng.integers(0, 257, size=300)
    run_and_check(rim, g)
    run_and_check(rim % 129, g[::-2])


@pytest.mark.parametrize("map_dtype", MAP_NAMES)
def test_unaligned_map(map_dtype, rng):
    g = make_values(np.float32, 100, rng)
    rim = unaligned(rng.integers(0, 100, size=333).astype(map_dtype))
    run_and_check(rim, g)


def test_unaligned_byteswapped(rng):
    g = unaligned(make_values(np.float64, 100, rng).astype(">f8"))
    rim = unaligned(rng.integers(0, 100, size=50).astype(">i8"))
    run_and_check(rim, g)


@pytest.mark.parametrize("mode", ["r", "r+", "c"])
def test_memmap_inputs(tmp_path, rng, mode):
    g = make_values(np.float32, 1000, rng)
    rim = rng.integers(0, 1000, size=700).astype(np.uint16)
    gp, rp = tmp_path / "g.dat", tmp_path / "rim.dat"
    g.tofile(gp)
    rim.tofile(rp)
    gm = np.memmap(gp, dtype=np.float32, mode=mode, shape=(1000,))
    rm = np.memmap(rp, dtype=np.uint16, mode=mode, shape=(700,))
    res = run_and_check(rm, gm)
    assert not np.shares_memory(res.d_values, gm)
    del gm, rm
    # the files are unchanged
    np.testing.assert_array_equal(np.fromfile(gp, np.float32), g)
    np.testing.assert_array_equal(np.fromfile(rp, np.uint16), rim)


def test_memmap_npy_files(tmp_path, rng):
    g = make_values(np.int16, 500, rng)
    rim = rng.integers(0, 500, size=100)
    np.save(tmp_path / "g.npy", g)
    np.save(tmp_path / "rim.npy", rim)
    gm = np.load(tmp_path / "g.npy", mmap_mode="r")
    rm = np.load(tmp_path / "rim.npy", mmap_mode="r")
    run_and_check(rm, gm)


def test_python_lists():
    g = [1.5, 2.5, -3.0, 4.0]
    rim = [3, 3, 0]
    res = sfer.sparse_fill_empty_rows_grad(rim, g)
    check_result(res, rim, g, exact=True)
    assert res.d_values.dtype == np.float64
    np.testing.assert_array_equal(res.d_values, [4.0, 4.0, 1.5])
    assert res.d_default_value == -0.5
    assert g == [1.5, 2.5, -3.0, 4.0] and rim == [3, 3, 0]


def test_python_int_list_and_tuple():
    g = (7, 8, 9)
    res = sfer.sparse_fill_empty_rows_grad((2,), g)
    assert res.d_values.dtype == np.asarray(g).dtype
    np.testing.assert_array_equal(res.d_values, [9])
    assert res.d_default_value == 15
    assert type(res.d_default_value) is np.asarray(g).dtype.type


def test_python_complex_list():
    g = [1 + 2j, 3 - 1j, 0.5j]
    res = sfer.sparse_fill_empty_rows_grad([1], g)
    assert res.d_values.dtype == np.complex128
    assert res.d_default_value == 1 + 2.5j
    assert type(res.d_default_value) is np.complex128


@pytest.mark.parametrize("empty", [[], (), range(0)])
def test_empty_sequence_map_is_int64(empty, rng):
    g = make_values(np.float64, 10, rng)
    res = sfer.sparse_fill_empty_rows_grad(empty, g)
    assert res.d_values.shape == (0,) and res.d_values.dtype == np.float64
    assert res.d_default_value == g.sum()


def test_empty_sequence_for_both():
    res = sfer.sparse_fill_empty_rows_grad([], [])
    assert res.d_values.shape == (0,)
    assert res.d_values.dtype == np.float64
    assert type(res.d_default_value) is np.float64
    assert res.d_default_value == 0 and not np.signbit(res.d_default_value)


def test_numpy_scalar_sequence_map(rng):
    g = make_values(np.float64, 10, rng)
    rim = [np.uint8(1), np.uint8(9)]
    res = sfer.sparse_fill_empty_rows_grad(rim, g)
    np.testing.assert_array_equal(res.d_values, g[[1, 9]])


def test_array_like_with_array_interface(rng):
    class Wrapper:
        def __init__(self, a):
            self._a = a

        def __array__(self, dtype=None, copy=None):
            return self._a if dtype is None else self._a.astype(dtype)

    g = make_values(np.float32, 40, rng)
    rim = rng.integers(0, 40, size=10)
    res = sfer.sparse_fill_empty_rows_grad(Wrapper(rim), Wrapper(g))
    check_result(res, rim, g, exact=True)


def test_non_native_dtype_result_type_is_native():
    g = np.array([1, 2, 3], dtype=">i8")
    res = sfer.sparse_fill_empty_rows_grad(np.array([0]), g)
    assert res.d_values.dtype == native(g.dtype) == np.dtype("=i8")
    assert type(res.d_default_value) is np.int64
    assert res.d_default_value == 5
