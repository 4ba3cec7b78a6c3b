"""sfer.reference, the op in plain NumPy: its own correctness (exactly rounded sums, the op's
errors) and that its checks can fail."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest

import sfer
from helpers import BFLOAT16, INEXACT_NAMES, dtype_of
from oracle import scalar_bits
from sfer import reference

grad = sfer.sparse_fill_empty_rows_grad


def test_public_api():
    assert sfer.reference is reference
    assert "reference" in sfer.__all__
    assert set(reference.__all__) == {"FillResult", "error_bound", "exact_sum", "mismatches",
                                      "sparse_fill_empty_rows", "sparse_fill_empty_rows_grad",
                                      "sum_mismatch", "unreferenced", "ragged_to_sparse",
                                      "sparse_to_ragged"}
    for name in reference.__all__:
        assert hasattr(reference, name), name


def test_readme_example():
    res = reference.sparse_fill_empty_rows_grad([0, 1, 3, 4],
                                                np.array([0.5, 1, 2, 4, 8, 16], np.float32))
    assert isinstance(res, sfer.GradResult)
    assert res.d_values.tolist() == [0.5, 1.0, 4.0, 8.0] and res.d_values.dtype == np.float32
    assert type(res.d_default_value) is np.float32 and res.d_default_value == 18.0


# ---------------------------------------------------------------------------------------------
# the sum: exact, rounded once


def _correctly_rounded(values: np.ndarray, dtype: np.dtype) -> float:
    """The exact sum of ``values`` rounded to nearest-even in ``dtype``, by brute force:
    the nearest of all finite values of the format (16-bit formats only)."""
    exact = sum((Fraction(float(x)) for x in values.astype(np.float64)), Fraction(0))
    with np.errstate(invalid="ignore"):  # NaN bit patterns
        table = np.arange(1 << 16, dtype=np.uint16).view(dtype).astype(np.float64)
    table = np.unique(table[np.isfinite(table)])
    i = int(np.searchsorted(table, float(exact)))
    best = None
    for cand in table[max(i - 1, 0):i + 1]:
        bits = scalar_bits(np.float64(cand).astype(dtype))
        key = (abs(Fraction(float(cand)) - exact), bits & 1)  # ties: even significand
        if best is None or key < best[0]:
            best = (key, float(cand))
    return best[1]


@pytest.mark.parametrize("name", ["float16"] + (["bfloat16"] if BFLOAT16 is not None else []))
def test_exact_sum_is_correctly_rounded(name, rng):
    """Random sums, many built to land near a tie of the format, against brute force."""
    dtype = dtype_of(name)
    for _ in range(300):
        n = int(rng.integers(1, 6))
        v = (rng.standard_normal(n) * 2.0 ** rng.integers(-8, 8, n)).astype(dtype)
        if rng.random() < 0.5:  # a tie plus or minus a tiny term (bfloat16: tiny enough for
            # the exact sum to need more than 53 bits, so that rounding it to float64 first
            # would land on the tie and round the wrong way)
            half = reference._ulp(float(v[0]), dtype) / 2
            tiny = float(np.asarray(half * rng.choice([2.0**-10, 2.0**-60])).astype(dtype))
            extra = np.array([half, rng.choice([-1.0, 1.0]) * tiny]).astype(dtype)
            v = np.concatenate([v[:1], extra])
        got = reference.exact_sum(v)
        assert type(got) is dtype.type
        assert float(got) == _correctly_rounded(v, dtype), (v, got)


def test_double_rounding_is_avoided():
    """1 + 2**-24 + 2**-70 rounds up in float32; rounding to float64 first lands on the tie
    1 + 2**-24, which rounds to even (down)."""
    assert reference.exact_sum(np.array([1.0, 2.0**-24, 2.0**-70]), np.float32) == np.float32(
        1 + 2.0**-23)
    assert reference.exact_sum(np.array([1.0, 2.0**-24, -(2.0**-70)]), np.float32) == 1.0
    assert reference.exact_sum(np.array([1.0, 2.0**-24]), np.float32) == 1.0  # a true tie
    if BFLOAT16 is not None:
        assert float(reference._round_float(257.0 + 2.0**-30, BFLOAT16)) == 258.0
        assert float(reference._round_float(257.0, BFLOAT16)) == 256.0


def test_float64_sum_beyond_fsum():
    """Partial sums that overflow float64 (math.fsum raises) are summed exactly."""
    big = np.finfo(np.float64).max
    assert reference.exact_sum(np.array([big, big, -big])) == big
    assert reference.exact_sum(np.array([big, big])) == np.inf
    assert reference.exact_sum(np.array([-big, -big])) == -np.inf
    assert reference.error_bound(np.array([big, big, -big])) == math.inf  # no bound claimed


@pytest.mark.parametrize("name", INEXACT_NAMES)
def test_non_finite_sums_are_canonical(name):
    dtype = dtype_of(name)
    size = np.dtype(dtype).itemsize
    for values, want in (([1.0, np.nan, 2.0], "nan"), ([np.inf, -np.inf], "nan"),
                         ([np.inf, 1.0], np.inf), ([-np.inf, 1.0], -np.inf)):
        got = reference.exact_sum(np.array(values).astype(dtype))
        if want == "nan":
            canonical = np.array(np.nan).astype(dtype)
            assert scalar_bits(got) == scalar_bits(canonical), (values, got)
            assert size == 16 or not np.signbit(np.real(got))
        else:
            assert np.real(got) == want
        assert np.real(reference.error_bound(np.array(values).astype(dtype))) == 0


def test_zero_and_empty_sums_are_positive_zero():
    for dtype in ("float32", "float64", "complex64", "int16"):
        assert scalar_bits(reference.exact_sum(np.zeros(0, dtype))) == 0
        assert scalar_bits(reference.exact_sum(np.array([-0.0, -0.0]).astype(dtype))) == 0
    assert scalar_bits(reference.exact_sum(np.array([1.5, -1.5]))) == 0


def test_integer_sums_wrap():
    assert reference.exact_sum(np.full(1000, 127, np.int8)) == (1000 * 127) % 256  # 24
    assert reference.exact_sum(np.full(2, 127, np.int8)) == 254 - 256
    assert reference.exact_sum(np.array([2**64 - 1, 2], np.uint64)) == 1
    assert reference.exact_sum(np.array([2**63 - 1, 1], np.int64)) == -(2**63)
    assert reference.error_bound(np.arange(5, dtype=np.int32)) == 0.0


# ---------------------------------------------------------------------------------------------
# the error bound


def test_error_bound_terms():
    """The documented bound, term by term."""
    v = np.array([1.0, 2.0, 3.0], np.float32)  # S = 6, n = 3, r = 6 (ulp 2**-21)
    assert reference.error_bound(v) == 2.0**-21 + 2 * 5 * 2.0**-53 * 6
    v64 = v.astype(np.float64)
    assert reference.error_bound(v64) == 2.0**-50 + 4 * 7**2 * 2.0**-106 * 6
    assert reference.error_bound(np.ones(8192, np.float16)) == 0.0  # float64 sums them exactly
    assert reference.error_bound(np.ones(8193, np.float16)) > 0
    c = reference.error_bound(np.array([1 + 0j, 2 + 0j, 3 + 0j], np.complex64))
    assert isinstance(c, complex)
    assert c.real == 2.0**-21 + 2 * 5 * 2.0**-53 * 6
    assert c.imag == 2.0**-149 + 2 * 5 * 2.0**-53 * 0  # r = 0: ulp(0) = smallest subnormal


@pytest.mark.parametrize("name", INEXACT_NAMES)
def test_sfer_is_within_the_bound_and_the_checks_bite(name, rng):
    """sfer's sum passes the reference's checks; one a little further off than the bound does
    not, nor do wrong d_values."""
    dtype = dtype_of(name)
    n_full = 50_000
    g = (rng.standard_normal(n_full) * 10.0 ** rng.uniform(-3, 3, n_full)).astype(dtype)
    if np.dtype(dtype).kind == "c":
        g = (g + 1j * g[::-1]).astype(dtype)
    rim = rng.permutation(n_full)[: n_full // 2]
    res = grad(rim, g)
    assert reference.mismatches(res, rim, g) == []
    values = g[reference.unreferenced(rim, n_full)]
    bound = complex(reference.error_bound(values))
    r = complex(reference.exact_sum(values))
    assert abs(complex(res.d_default_value) - r) <= abs(bound)
    # a sum just past the bound, in the real part
    off = np.array(r.real + 2 * bound.real).astype(np.float64)
    wrong = np.zeros((), np.dtype(dtype))
    wrong[()] = off + 1j * r.imag if np.dtype(dtype).kind == "c" else off
    problems = reference.mismatches((res.d_values, wrong[()]), rim, g)
    assert len(problems) == 1 and problems[0].startswith("d_default_value"), problems
    bad_values = res.d_values.copy()
    bad_values[7] = bad_values[8] + 1
    problems = reference.mismatches((bad_values, res.d_default_value), rim, g)
    assert len(problems) == 1 and problems[0].startswith("d_values"), problems


def test_sum_mismatch_rules():
    v = np.array([1.0, 2.0], np.float32)
    assert reference.sum_mismatch(np.float32(3.0), v) is None
    assert "NumPy scalar of dtype float32" in reference.sum_mismatch(np.float64(3.0), v)
    assert reference.sum_mismatch(np.float32(-0.0), v[:0]) is not None  # the empty sum is +0
    assert reference.sum_mismatch(np.float32(np.nan), v) is not None
    assert reference.sum_mismatch(np.float32(np.nan), np.array([np.nan], np.float32)) is None
    near = np.nextafter(np.float32(3.0), np.float32(4.0))
    assert reference.sum_mismatch(near, v) is None  # one ulp: within the bound
    assert reference.sum_mismatch(near, v, exact=True) is not None
    assert reference.sum_mismatch(np.int8(3), np.array([1, 2], np.int8)) is None
    assert reference.sum_mismatch(np.int8(4), np.array([1, 2], np.int8)) is not None


# ---------------------------------------------------------------------------------------------
# accepts and rejects inputs as the op does


def test_errors_match_the_op():
    """Every hostile input of test_reliability without num_threads / out: the reference raises
    what sfer raises, with the same message."""
    import test_reliability as T

    checked = 0
    for name, (rim, g, kwargs, _, _, _) in T.hostile_cases().items():
        if kwargs:
            continue
        rim2, g2, _, _, _, _ = T.hostile_cases()[name]  # generators are used up: fresh inputs
        try:
            grad(rim, g)
        except (TypeError, ValueError, IndexError) as exc:
            with pytest.raises(type(exc)) as info:
                reference.sparse_fill_empty_rows_grad(rim2, g2)
            assert str(info.value) == str(exc), name
            checked += 1
        else:
            reference.sparse_fill_empty_rows_grad(rim2, g2)
    assert checked > 40


@pytest.mark.parametrize("rim", [[], (), np.zeros(0, np.uint8), np.array([3, 3, 0], ">u2")])
def test_valid_maps_like_the_op(rim):
    g = np.arange(5, dtype=np.float32)
    res, ref = grad(rim, g), reference.sparse_fill_empty_rows_grad(rim, g)
    assert res.d_values.tobytes() == ref.d_values.tobytes()
    assert scalar_bits(res.d_default_value) == scalar_bits(ref.d_default_value)
