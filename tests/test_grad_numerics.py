"""Numerics: bit-exact gathers, NaN/inf propagation, integer wrap-around,
single rounding, and accuracy against math.fsum."""

from __future__ import annotations

import math

import numpy as np
import pytest

import sfer
from checks import assert_bits_equal, check_result, check_sum
from helpers import COMPLEX_NAMES, FLOAT_NAMES, INT_NAMES, dtype_of
from oracle import exact_sum, round_float, scalar_bits, ulp, unreferenced

grad = sfer.sparse_fill_empty_rows_grad

#: the real float dtypes, bfloat16 included (its tests skip without ml_dtypes)
REAL_FLOATS = FLOAT_NAMES + ("bfloat16",)


# --------------------------------------------------------------------------
# bit-exact gathers
# --------------------------------------------------------------------------

NAN_PATTERNS = {
    "float16": [0x7E00, 0x7C01, 0xFE01, 0x7D55, 0x8000, 0x7C00, 0xFC00],
    "bfloat16": [0x7FC0, 0x7F81, 0xFFC1, 0x7FAA, 0x8000, 0x7F80, 0xFF80],
    "float32": [0x7FC00000, 0x7F800001, 0xFFC00001, 0x7FA5A5A5, 0x80000000, 0x7F800000],
    "float64": [
        0x7FF8000000000000,
        0x7FF0000000000001,  # signalling NaN
        0xFFF8DEADBEEF0001,
        0x7FF4000000000000,  # signalling NaN with payload
        0x8000000000000000,  # -0.0
        0x0000000000000001,  # smallest subnormal
    ],
}


@pytest.mark.parametrize("name", list(NAN_PATTERNS))
def test_gather_preserves_nan_payloads_and_signed_zero(name):
    dtype = dtype_of(name)
    size = dtype.itemsize
    bits = np.array(NAN_PATTERNS[name], dtype=f"u{size}")
    g = bits.view(dtype)
    rim = np.array(list(range(len(bits)))[::-1] + [1, 1, 0])
    res = grad(rim, g)
    assert_bits_equal(res.d_values, g[rim])


@pytest.mark.parametrize("name", COMPLEX_NAMES)
def test_gather_preserves_complex_nan_payloads(name):
    dtype = np.dtype(name)
    part = dtype.itemsize // 2
    raw = np.array(NAN_PATTERNS[f"float{part * 8}"], dtype=f"u{part}")
    g = np.stack([raw, raw[::-1]], axis=1).reshape(-1).view(dtype)
    rim = np.arange(len(g))[::-1]
    res = grad(rim, g)
    assert_bits_equal(res.d_values, g[rim])


@pytest.mark.parametrize("name", ["int8", "uint8", "int64", "uint64"])
def test_gather_integer_extremes(name):
    info = np.iinfo(name)
    g = np.array([info.min, info.max, 0, info.min + 1, info.max - 1], dtype=name)
    rim = np.array([4, 3, 2, 1, 0, 0])
    res = grad(rim, g)
    assert_bits_equal(res.d_values, g[rim])


# --------------------------------------------------------------------------
# NaN / inf propagation
# --------------------------------------------------------------------------

@pytest.mark.parametrize("name", REAL_FLOATS)
def test_nan_in_unreferenced_position_gives_nan(name):
    dtype = dtype_of(name)
    g = np.array([1.0, np.nan, 2.0, 3.0]).astype(dtype)
    res = grad(np.array([0]), g)
    assert np.isnan(np.float64(res.d_default_value))
    assert type(res.d_default_value) is dtype.type


@pytest.mark.parametrize("name", REAL_FLOATS)
def test_nan_in_referenced_position_does_not_affect_sum(name):
    dtype = dtype_of(name)
    g = np.array([1.0, np.nan, 2.0, np.nan, 4.0]).astype(dtype)
    res = grad(np.array([3, 1, 1]), g)
    assert np.float64(res.d_default_value) == 7.0
    assert np.isnan(np.asarray(res.d_values, dtype=np.float64)).all()


@pytest.mark.parametrize("name", REAL_FLOATS)
@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_inf_only_in_unreferenced_gives_inf(name, sign):
    dtype = dtype_of(name)
    g = np.array([1.0, sign * np.inf, 2.0, -5.0, sign * np.inf]).astype(dtype)
    res = grad(np.array([0]), g)
    assert np.float64(res.d_default_value) == sign * np.inf


@pytest.mark.parametrize("name", REAL_FLOATS)
def test_inf_minus_inf_gives_nan(name):
    dtype = dtype_of(name)
    g = np.array([np.inf, 1.0, -np.inf, 2.0]).astype(dtype)
    res = grad(np.array([1]), g)
    assert np.isnan(np.float64(res.d_default_value))


@pytest.mark.parametrize("name", REAL_FLOATS)
def test_inf_in_referenced_position_does_not_affect_sum(name):
    dtype = dtype_of(name)
    g = np.array([np.inf, 1.0, -np.inf, 2.0]).astype(dtype)
    res = grad(np.array([0, 2]), g)
    assert np.float64(res.d_default_value) == 3.0


@pytest.mark.parametrize("name", COMPLEX_NAMES)
def test_complex_nan_inf_per_component(name):
    dtype = np.dtype(name)
    g = np.array([complex(np.inf, 1.0), complex(2.0, np.nan), complex(3.0, -np.inf), 5j], dtype=dtype)
    res = grad(np.array([], np.int64), g)
    # real: inf + 2 + 3 + 0 = inf; imag: 1 + nan - inf + 5 = nan
    assert res.d_default_value.real == np.inf
    assert np.isnan(res.d_default_value.imag)
    res = grad(np.array([1]), g)  # drop the NaN: imag = 1 - inf + 5 = -inf
    assert res.d_default_value.real == np.inf
    assert res.d_default_value.imag == -np.inf
    g2 = np.array([complex(np.inf, 0), complex(-np.inf, 1.0)], dtype=dtype)
    res = grad(np.array([], np.int64), g2)
    assert np.isnan(res.d_default_value.real) and res.d_default_value.imag == 1.0


@pytest.mark.parametrize("name", ["float64", "complex128"])
def test_neumaier_inf_among_finite_values(name):
    """Naive Neumaier compensation turns inf into NaN ((inf - inf) in the
    correction term); IEEE semantics require +-inf."""
    dtype = np.dtype(name)
    rng = np.random.default_rng(5)
    for n in (3, 100, 10_000):
        g = rng.standard_normal(n).astype(dtype)
        g[n // 2] = np.inf
        res = grad(np.array([], np.int64), g)
        assert np.real(res.d_default_value) == np.inf, (n, res.d_default_value)
        g[n // 2] = -np.inf
        res = grad(np.array([0]), g)
        assert np.real(res.d_default_value) == -np.inf, (n, res.d_default_value)


@pytest.mark.parametrize("name", REAL_FLOATS)
def test_finite_overflow_rounds_to_inf(name):
    """The exact sum of finite values beyond the dtype's range rounds to inf."""
    dtype = dtype_of(name)
    big = 0.75 * _max_finite(dtype)
    g = np.array([big, big, 1.0]).astype(dtype)
    res = grad(np.array([2]), g)
    assert np.float64(res.d_default_value) == np.inf
    res = grad(np.array([2]), -g)
    assert np.float64(res.d_default_value) == -np.inf


def _max_finite(dtype):
    size = dtype.itemsize
    inf_bits = int(np.array(np.inf).astype(dtype).view(f"u{size}"))
    return float(np.array(inf_bits - 1, dtype=f"u{size}").view(dtype).astype(np.float64))


# --------------------------------------------------------------------------
# integer wrap-around
# --------------------------------------------------------------------------

def test_int8_wraps():
    g = np.full(1000, 127, dtype=np.int8)
    res = grad(np.array([0, 1]), g)
    expected = (998 * 127) % 256
    expected = expected - 256 if expected >= 128 else expected
    assert res.d_default_value == expected
    assert type(res.d_default_value) is np.int8
    assert res.d_default_value == exact_sum(g[2:])


def test_uint8_wraps():
    g = np.full(1001, 255, dtype=np.uint8)
    res = grad(np.array([], np.int8), g)
    assert res.d_default_value == (1001 * 255) % 256
    assert type(res.d_default_value) is np.uint8


def test_uint64_near_2_64():
    g = np.array([2**64 - 1, 2, 2**63, 2**63, 5], dtype=np.uint64)
    res = grad(np.array([4]), g)
    assert res.d_default_value == 1  # (2**64-1) + 2 + 2**64 = 1 (mod 2**64)
    assert type(res.d_default_value) is np.uint64
    res = grad(np.array([2]), g)
    assert res.d_default_value == (2**64 - 1 + 2 + 2**63 + 5) % 2**64


@pytest.mark.parametrize(
    "values,expected",
    [
        ([2**63 - 1, 1], -(2**63)),
        ([-(2**63), -1], 2**63 - 1),
        ([-(2**63), -(2**63)], 0),
        ([2**63 - 1, 2**63 - 1, 2], 0),
        ([-(2**63), 2**63 - 1], -1),
    ],
)
def test_int64_extremes(values, expected):
    g = np.array(values + [12345], dtype=np.int64)
    res = grad(np.array([len(values)]), g)
    assert res.d_default_value == expected
    assert type(res.d_default_value) is np.int64


@pytest.mark.parametrize("name", INT_NAMES)
def test_integer_wrap_large_random(name, rng):
    info = np.iinfo(name)
    g = rng.integers(info.min, info.max, size=300_000, endpoint=True, dtype=name)
    rim = rng.integers(0, g.size, size=1000)
    res = grad(rim, g)
    mask = unreferenced(rim, g.size)
    assert res.d_default_value == exact_sum(g[mask])
    # numpy's own sum wraps the same way for same-width accumulation
    assert res.d_default_value == g[mask].sum(dtype=name)


# --------------------------------------------------------------------------
# rounding: accumulate wide, round once
# --------------------------------------------------------------------------

def test_float16_rounded_once_not_via_float32():
    # exact sum 2049 + 2**-20: float16 -> 2050; via float32 (2049, a tie) -> 2048
    g = np.array([2048.0, 1.0, 2.0**-20, 7.0], dtype=np.float16)
    assert g[2] == 2.0**-20
    res = grad(np.array([3]), g)
    assert res.d_default_value == np.float16(2050.0)


def test_float16_accumulates_in_wide_precision():
    g = np.full(4096, 1.0, dtype=np.float16)
    g[0] = 2048.0
    res = grad(np.array([], np.int64), g)
    assert res.d_default_value == np.float16(2048 + 4095)


def test_bfloat16_rounded_once_not_via_float32():
    bf = dtype_of("bfloat16")
    # exact sum 257 + 2**-30: bfloat16 -> 258; via float32 (257, a tie) -> 256
    g = np.array([256.0, 1.0, 2.0**-30, 3.0]).astype(bf)
    assert float(g[2]) == 2.0**-30
    res = grad(np.array([3]), g)
    assert float(res.d_default_value) == 258.0
    assert type(res.d_default_value) is bf.type


def test_bfloat16_accumulates_in_wide_precision():
    bf = dtype_of("bfloat16")
    g = np.full(1000, 1.0).astype(bf)
    res = grad(np.array([], np.int64), g)
    # float64 accumulation gives 1000 exactly; bfloat16 rounds it to 1000
    assert float(res.d_default_value) == 1000.0


def test_float32_accumulates_in_float64():
    g = np.array([2.0**24, 1.0, 2.0**-20, 9.0], dtype=np.float32)
    res = grad(np.array([3]), g)
    # exact 2**24 + 1 + 2**-20 rounds to 2**24 + 2; float32 accumulation gives 2**24
    assert res.d_default_value == np.float32(2.0**24 + 2)


def test_complex64_rounded_once():
    g = np.array([2.0**24 + 2.0**24 * 1j, 1 + 1j, 2.0**-20 - 2.0**-20 * 1j], dtype=np.complex64)
    res = grad(np.array([], np.int64), g)
    assert res.d_default_value.real == np.float32(2.0**24 + 2)
    assert res.d_default_value.imag == np.float32(2.0**24)  # 2**24 + 1 - tiny -> 2**24


@pytest.mark.parametrize("name", ["float32", "complex64"])
def test_float32_moderate_data_is_exact(name, rng):
    """Values in +-[0.5, 2) with 20-bit mantissas: float64 accumulation of
    100k of them is exact, so the result must be the correctly rounded sum."""
    dtype = np.dtype(name)
    n = 100_000

    def part():
        m = rng.integers(2**19, 2**21, size=n) * 2.0**-20
        return m * rng.choice([-1.0, 1.0], size=n)

    g = (part() + 1j * part()).astype(dtype) if dtype.kind == "c" else part().astype(dtype)
    rim = rng.integers(0, n, size=n // 3)
    res = grad(rim, g)
    check_result(res, rim, g, exact=True)


# --------------------------------------------------------------------------
# accuracy against math.fsum
# --------------------------------------------------------------------------

def test_float16_sum_of_50k_values_near_one(rng):
    g = rng.uniform(0.9, 1.1, size=50_000).astype(np.float16)
    rim = rng.integers(0, g.size, size=2000)
    res = grad(rim, g)
    mask = unreferenced(rim, g.size)
    exact = math.fsum(g[mask].astype(np.float64).tolist())
    expected = np.float16(exact)
    got = res.d_default_value
    assert type(got) is np.float16
    assert np.isfinite(got)
    # naive float16 accumulation would stall at 2048
    assert abs(float(got) - float(expected)) <= ulp(float(expected), np.float16)


def test_float32_sum_of_600k_terms(rng):
    g = rng.random(600_000, dtype=np.float32)
    rim = rng.integers(0, g.size, size=50_000)
    res = grad(rim, g)
    mask = unreferenced(rim, g.size)
    expected = np.float32(math.fsum(g[mask].astype(np.float64).tolist()))
    got = res.d_default_value
    assert type(got) is np.float32
    assert abs(float(got) - float(expected)) <= ulp(float(expected), np.float32)


def test_float32_mixed_sign_sum_of_600k_terms(rng):
    g = rng.standard_normal(600_000).astype(np.float32) + np.float32(0.01)
    res = grad(np.arange(0, 600_000, 7), g)
    mask = unreferenced(np.arange(0, 600_000, 7), g.size)
    expected = np.float32(math.fsum(g[mask].astype(np.float64).tolist()))
    assert abs(float(res.d_default_value) - float(expected)) <= ulp(float(expected), np.float32)


@pytest.mark.parametrize("n_triples", [1, 10, 33_334, 400_000])
def test_float64_ill_conditioned_cancellation(n_triples):
    g = np.tile(np.array([1e16, 1.0, -1e16]), n_triples)
    exact = float(n_triples)
    res = grad(np.array([], np.int64), g)
    err_sfer = abs(float(res.d_default_value) - exact)
    err_numpy = abs(float(np.sum(g)) - exact)
    assert err_sfer <= err_numpy
    # compensated summation resolves this pattern exactly
    assert err_sfer <= ulp(exact, np.float64) * 4


def test_float64_classic_neumaier_example():
    # Kahan summation gives 0.0 here; Neumaier (spec) gives the exact 2.0
    g = np.array([1.0, 1e100, 1.0, -1e100])
    for num_threads in (None, 1, 2):
        res = grad(np.array([], np.int64), g, num_threads=num_threads)
        assert res.d_default_value == 2.0


@pytest.mark.parametrize("name", ["float64", "complex128"])
def test_float64_random_cancellation_more_accurate_than_numpy(name, rng):
    n = 200_000
    big = rng.standard_normal(n // 2) * 1e12
    small = rng.standard_normal(n // 2) * 1e-3
    vals = np.concatenate([big, -big[rng.permutation(n // 2)], small])
    vals = vals[rng.permutation(vals.size)]
    dtype = np.dtype(name)
    g = (vals + 1j * vals[::-1]).astype(dtype) if dtype.kind == "c" else vals
    rim = np.flatnonzero(np.abs(vals) < 1e-4)[:1000]
    res = grad(rim, g)
    mask = unreferenced(rim, g.size)
    for part in ("real", "imag") if dtype.kind == "c" else ("real",):
        sel = getattr(g[mask], part)
        exact = math.fsum(sel.tolist())
        got = float(getattr(res.d_default_value, part))
        err_sfer = abs(got - exact)
        err_numpy = abs(float(np.sum(sel)) - exact)
        assert err_sfer <= err_numpy
    check_sum(res.d_default_value, g[mask], dtype)


def test_float64_well_conditioned_within_one_ulp(rng):
    g = rng.random(1_000_000) * 10.0 ** rng.uniform(-5, 5, size=1_000_000)
    rim = rng.integers(0, g.size, size=10_000)
    res = grad(rim, g)
    mask = unreferenced(rim, g.size)
    exact = math.fsum(g[mask].tolist())
    assert abs(float(res.d_default_value) - exact) <= ulp(exact, np.float64)


def test_round_float_helper_sanity():
    """Guards the oracle itself (cheap): single rounding to each format."""
    assert float(round_float(2049 + 2.0**-20, np.float16)) == 2050.0
    assert float(round_float(2.0**24 + 1 + 2.0**-20, np.float32)) == 2.0**24 + 2
    bf = dtype_of("bfloat16")
    assert float(round_float(257 + 2.0**-30, bf)) == 258.0
    assert float(round_float(257.0, bf)) == 256.0  # tie -> even
    assert float(round_float(259.0, bf)) == 260.0  # tie -> even
    assert float(round_float(-257 - 2.0**-30, bf)) == -258.0
    assert float(round_float(1e39, bf)) == math.inf
    assert scalar_bits(round_float(-0.0, bf)) == 0x8000
