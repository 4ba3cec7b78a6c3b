"""Assertion helpers shared by the sfer tests (compare sfer against sfer.reference).

The rule a result must meet (the bits of ``d_values``, the error bound of ``d_default_value``)
is ``sfer.reference``'s: these helpers only turn its verdicts into assertions.
"""

from __future__ import annotations

import hashlib

import numpy as np

from oracle import BFLOAT16, native, reference_grad, unreferenced
from sfer.reference import sum_mismatch

#: map dtype name -> largest N_full it can address in these tests
MAP_CAPACITY = {
    "int8": 128,
    "uint8": 256,
    "int16": 1 << 15,
    "uint16": 1 << 16,
}


def bits_view(a: np.ndarray) -> np.ndarray:
    """Unsigned-integer view of the raw bits (so NaN payloads / -0.0 count)."""
    a = np.ascontiguousarray(a)
    size = a.dtype.itemsize
    if size in (1, 2, 4, 8):
        return a.view(f"u{size}")
    # complex128: view as pairs of uint64
    return a.view("u8").reshape(a.shape + (size // 8,))


def assert_bits_equal(actual: np.ndarray, expected: np.ndarray) -> None:
    assert actual.dtype == expected.dtype, (actual.dtype, expected.dtype)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    np.testing.assert_array_equal(bits_view(actual), bits_view(expected))


def check_sum(actual, values, dtype, *, exact: bool = False) -> None:
    """Assert ``actual`` (sfer's d_default_value) is the spec's sum of ``values``: a scalar of
    ``dtype``, within ``sfer.reference``'s documented error bound of the exactly rounded sum
    (``exact=True``: equal to it, for data whose float64 sums are exact)."""
    problem = sum_mismatch(actual, np.asarray(values).astype(native(dtype)), dtype, exact=exact)
    assert problem is None, f"{problem} ({native(dtype)}, n={np.size(values)})"


def check_result(res, rim, g, *, exact: bool = False) -> None:
    """Full check of sfer's result for inputs (rim, g) against the reference."""
    import sfer

    g_arr = np.asarray(g)
    rim_arr = np.asarray(rim)
    if rim_arr.size == 0 and rim_arr.dtype.kind not in "iu":
        rim_arr = rim_arr.astype(np.int64)
    out_dtype = native(g_arr.dtype)

    assert isinstance(res, sfer.GradResult)
    assert isinstance(res, tuple) and len(res) == 2
    d_values, d_default = res
    assert d_values is res.d_values and d_default is res.d_default_value

    assert isinstance(d_values, np.ndarray)
    assert d_values.dtype == out_dtype, (d_values.dtype, out_dtype)
    assert d_values.dtype.isnative
    assert d_values.shape == (rim_arr.shape[0],)
    if isinstance(g, np.ndarray):
        assert not np.shares_memory(d_values, g), "d_values must be a new array"

    exp_values, _ = reference_grad(rim_arr, g_arr)
    assert_bits_equal(d_values, exp_values)

    g_native = g_arr.astype(out_dtype)
    mask = unreferenced(rim_arr, g_native.shape[0])
    check_sum(d_default, g_native[mask], out_dtype, exact=exact)


def make_values(dtype, n: int, rng: np.random.Generator, kind: str = "exact") -> np.ndarray:
    """Test data of ``dtype``.

    kind="exact": floats are small multiples of 1/4 or 1/8, so every partial
    sum is exact in float64 and the spec's result is the correctly rounded sum.
    kind="random": floats are normal(0, 1) * 10**U(-3, 3); ints full range.
    """
    dtype = np.dtype(dtype)
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return rng.integers(info.min, info.max, size=n, endpoint=True, dtype=dtype)

    def real(size):
        if kind == "exact":
            if BFLOAT16 is not None and dtype == BFLOAT16:
                return rng.integers(-100, 101, size=size) / 4.0
            return rng.integers(-1000, 1001, size=size) / 8.0
        return rng.standard_normal(size) * 10.0 ** rng.uniform(-3, 3, size=size)

    if dtype.kind == "c":
        return (real(n) + 1j * real(n)).astype(dtype)
    return real(n).astype(dtype)


def map_cases(n_full: int, rng: np.random.Generator, dtype) -> dict:
    """The map shapes every dtype is tested with (values fit ``dtype``)."""
    dtype = np.dtype(dtype)
    cases = {}
    if n_full > 0:
        sub = np.sort(rng.choice(n_full, size=n_full // 2, replace=False))
        cases["sorted"] = sub
        cases["shuffled"] = rng.permutation(sub)
        dup = rng.integers(0, n_full, size=n_full)  # duplicates, random order
        dup[:4] = dup[0]
        cases["duplicates"] = dup
        cases["sorted_duplicates"] = np.sort(dup)
        cases["n_gt_nfull"] = rng.integers(0, n_full, size=3 * n_full)
        cases["all_referenced"] = rng.permutation(n_full)
        cases["all_referenced_dups"] = np.concatenate([np.arange(n_full), np.arange(n_full)[::-1]])
        cases["single"] = np.array([n_full - 1])
    cases["none_referenced"] = np.array([], dtype=np.int64)
    return {k: v.astype(dtype) for k, v in cases.items()}


def fill_digest(res) -> str:
    """A digest of the four outputs of a FillResult (sfer's or the reference's): each one's
    dtype, shape and bits; object and StringDType values by their repr.  Equal digests: the
    same result, also when the two were computed in different processes."""
    h = hashlib.sha256()
    for a in res:
        a = np.asarray(a)
        h.update(f"{a.dtype!r}|{a.dtype.str}|{a.shape}|".encode())
        if a.dtype.hasobject or a.dtype.kind == "T":
            h.update(repr(a.tolist()).encode())
        else:
            h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def assert_same_fill(res, want) -> None:
    """sfer's FillResult ``res`` equals ``want`` (the reference's): every output's dtype, shape
    and bits; object values: the very same objects (StringDType: equal strings)."""
    import sfer

    assert isinstance(res, sfer.FillResult), type(res)
    for name, a, b in zip(res._fields, res, want):
        assert isinstance(a, np.ndarray), (name, type(a))
        assert a.dtype == b.dtype and a.shape == b.shape, (name, a.dtype, b.dtype, a.shape,
                                                           b.shape)
        if a.dtype.hasobject:
            assert all(x is y for x, y in zip(a.tolist(), b.tolist())), name
        elif a.dtype.kind == "T":
            assert a.tolist() == b.tolist(), name
        else:
            assert a.tobytes() == b.tobytes(), name
