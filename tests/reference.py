"""Pure-NumPy reference (oracle) for sfer.sparse_fill_empty_rows_grad.

Semantics (SPEC-0.1):
    d_values[j]     = grad_values[reverse_index_map[j]]
    d_default_value = sum of grad_values[k] for k in [0, N_full) that do not
                      occur in reverse_index_map (each position at most once).

The reference sum is the *exact* sum rounded once (round-to-nearest-even) to
the output dtype:

* floats: ``math.fsum`` over the unreferenced values (complex: real and
  imaginary parts separately), then one rounding to the output dtype. When
  the data is non-finite (or fsum overflows internally) it falls back to a
  plain float64 ``np.sum``, which gives the IEEE 754 NaN / +-inf result.
* integers: Python-int sum, wrapped modulo 2**bits.
* the empty sum is +0.

This module imports neither sfer nor anything from the source tree.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np

try:  # optional: bfloat16 support
    import ml_dtypes

    BFLOAT16 = np.dtype(ml_dtypes.bfloat16)
except ImportError:  # pragma: no cover - ml_dtypes is installed in the test env
    ml_dtypes = None
    BFLOAT16 = None

__all__ = [
    "BFLOAT16",
    "FLOAT_DTYPES",
    "COMPLEX_DTYPES",
    "INT_DTYPES",
    "GRAD_DTYPES",
    "MAP_DTYPES",
    "exact_sum",
    "first_bad",
    "float_info",
    "index_error_message",
    "native",
    "reference_grad",
    "round_float",
    "scalar_bits",
    "ulp",
    "unreferenced",
]

FLOAT_DTYPES = [np.dtype(t) for t in ("float16", "float32", "float64")]
COMPLEX_DTYPES = [np.dtype(t) for t in ("complex64", "complex128")]
INT_DTYPES = [
    np.dtype(t)
    for t in ("int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64")
]
#: every grad_values dtype of the spec except bfloat16 (optional)
GRAD_DTYPES = FLOAT_DTYPES + COMPLEX_DTYPES + INT_DTYPES
#: every reverse_index_map dtype of the spec
MAP_DTYPES = list(INT_DTYPES)

# (mantissa bits incl. the implicit one, minimum normal exponent, max exponent)
_FLOAT_INFO = {
    "float16": (11, -14, 15),
    "float32": (24, -126, 127),
    "float64": (53, -1022, 1023),
    "bfloat16": (8, -126, 127),
}


def native(dtype) -> np.dtype:
    """The native-byte-order version of ``dtype``."""
    dtype = np.dtype(dtype)
    return dtype if dtype.isnative else dtype.newbyteorder("=")


def _is_bfloat16(dtype) -> bool:
    return BFLOAT16 is not None and np.dtype(dtype) == BFLOAT16


def float_info(dtype):
    """(precision, emin, emax) of a real float dtype (or a complex's part)."""
    dtype = native(dtype)
    if dtype.kind == "c":
        dtype = np.dtype(f"f{dtype.itemsize // 2}")
    return _FLOAT_INFO[dtype.name]


def ulp(x: float, dtype) -> float:
    """Unit in the last place of ``x`` in the real float format ``dtype``
    (ulp of 0 is the smallest subnormal; inf/nan -> inf)."""
    p, emin, _ = float_info(dtype)
    x = abs(float(x))
    if not math.isfinite(x):
        return math.inf
    if x == 0.0:
        e = emin
    else:
        e = max(math.frexp(x)[1] - 1, emin)
    return math.ldexp(1.0, e - p + 1)


def _round_bfloat16(x: float):
    """Correctly round a Python float to bfloat16 (round to nearest even).

    ml_dtypes converts float64 -> float32 -> bfloat16 (double rounding), so
    the single rounding required by the spec is done here by hand."""
    bf = BFLOAT16.type
    if math.isnan(x):
        return bf(x)
    ax = abs(x)
    # overflow threshold: halfway between max finite ((2 - 2**-7) * 2**127)
    # and 2**128; the tie rounds to "even" = inf.
    threshold = (2.0 - 2.0**-8) * 2.0**127
    if ax >= threshold:
        return bf(math.copysign(math.inf, x))
    guess = int(np.array(np.float32(ax)).astype(BFLOAT16).view(np.uint16))
    guess = min(guess, 0x7F7F)
    best = None
    fx = Fraction(ax)
    for bits in (guess - 1, guess, guess + 1):
        if bits < 0 or bits > 0x7F7F:
            continue
        val = float(np.array(bits, dtype=np.uint16).view(BFLOAT16).astype(np.float64))
        dist = abs(Fraction(val) - fx)
        key = (dist, bits & 1)  # ties -> even mantissa
        if best is None or key < best[0]:
            best = (key, bits)
    bits = best[1]
    if x < 0 or (x == 0 and math.copysign(1.0, x) < 0):
        bits |= 0x8000
    return np.array(bits, dtype=np.uint16).view(BFLOAT16)[()]


def round_float(x: float, dtype):
    """Round a Python float once (nearest-even) to the real float ``dtype``;
    returns a numpy scalar of that dtype."""
    dtype = native(dtype)
    if _is_bfloat16(dtype):
        return _round_bfloat16(float(x))
    # numpy's float64 -> float16/float32 casts round directly (once).
    return np.array(float(x), dtype=np.float64).astype(dtype)[()]


def unreferenced(rim: np.ndarray, n_full: int) -> np.ndarray:
    """Boolean mask over [0, n_full): True where the position is not referenced."""
    mask = np.ones(n_full, dtype=bool)
    if rim.size:
        mask[rim.astype(np.int64)] = False
    return mask


def _exact_real_sum(values: np.ndarray) -> float:
    """Exact sum of real float values rounded to float64 (plus IEEE fallback)."""
    v = values.astype(np.float64)
    if v.size == 0:
        return 0.0
    if not np.all(np.isfinite(v)):
        with np.errstate(all="ignore"):
            return float(np.sum(v))
    try:
        return math.fsum(v.tolist())
    except OverflowError:  # intermediate overflow: exact value is >= ~2**1024
        with np.errstate(all="ignore"):
            return float(np.sum(v))


def exact_sum(values: np.ndarray, dtype=None):
    """Exact sum of ``values`` rounded once to ``dtype`` (default values' dtype).

    Returns a numpy scalar of the native version of ``dtype``."""
    values = np.asarray(values)
    dtype = native(values.dtype if dtype is None else dtype)
    if dtype.kind in "iu":
        bits = dtype.itemsize * 8
        total = sum(int(x) for x in values.tolist()) % (1 << bits)
        if dtype.kind == "i" and total >= 1 << (bits - 1):
            total -= 1 << bits
        return dtype.type(total)
    if dtype.kind == "c":
        part = np.dtype(f"f{dtype.itemsize // 2}")
        re = round_float(_exact_real_sum(values.real), part)
        im = round_float(_exact_real_sum(values.imag), part)
        out = np.zeros((), dtype=dtype)
        out.real = re
        out.imag = im
        return out[()]
    # real float (incl. bfloat16)
    if values.size == 0:
        return np.zeros((), dtype=dtype)[()]
    return round_float(_exact_real_sum(values), dtype)


def first_bad(rim, n_full: int):
    """(j, v) of the first out-of-range entry of rim, or None."""
    rim = np.asarray(rim)
    if rim.size == 0:
        return None
    if rim.dtype.kind == "u":
        bad = rim >= np.uint64(n_full) if rim.dtype.itemsize == 8 else rim.astype(np.int64) >= n_full
    else:
        r = rim.astype(np.int64)
        bad = (r < 0) | (r >= n_full)
    idx = np.flatnonzero(bad)
    if idx.size == 0:
        return None
    j = int(idx[0])
    return j, int(rim[j])


def index_error_message(j: int, v: int, n_full: int) -> str:
    return f"reverse_index_map[{j}] = {v} is out of range [0, {n_full})"


def reference_grad(rim, g):
    """Oracle: returns (d_values, d_default_value) like the spec says.

    Raises IndexError (same message format as the spec) on out-of-range maps.
    """
    g = np.asarray(g)
    rim = np.asarray(rim)
    if rim.size == 0 and rim.dtype.kind not in "iu":
        rim = rim.astype(np.int64)
    if g.ndim != 1 or rim.ndim != 1:
        raise ValueError("inputs must be 1-D")
    out_dtype = native(g.dtype)
    g = g.astype(out_dtype, copy=False)
    n_full = g.shape[0]
    bad = first_bad(rim, n_full)
    if bad is not None:
        raise IndexError(index_error_message(bad[0], bad[1], n_full))
    idx = rim.astype(np.int64)
    d_values = np.ascontiguousarray(g[idx]).astype(out_dtype, copy=True)
    mask = unreferenced(rim, n_full)
    d_default = exact_sum(g[mask], out_dtype)
    return d_values, d_default


def scalar_bits(x) -> int:
    """Raw bits of a numpy scalar / 0-d array (for bit-exact comparison)."""
    a = np.asarray(x)
    a = a.astype(native(a.dtype))
    size = a.dtype.itemsize
    if size in (1, 2, 4, 8):
        return int(a.reshape(1).view(f"u{size}")[0])
    return int.from_bytes(a.tobytes(), "little")
