"""SparseFillEmptyRowsGrad in plain NumPy and Python: the readable specification of
:func:`sfer.sparse_fill_empty_rows_grad`, and the oracle that sfer's tests, its command-line
demo and its benchmarks check the compiled op against.

>>> import numpy as np
>>> from sfer import reference
>>> reference.sparse_fill_empty_rows_grad([0, 1, 3, 4], np.array([0.5, 1, 2, 4, 8, 16], np.float32))
GradResult(d_values=array([0.5, 1. , 4. , 8. ], dtype=float32), d_default_value=np.float32(18.0))

The op, with ``N = len(reverse_index_map)`` and ``N_full = len(grad_values)``::

    d_values[j]     = grad_values[reverse_index_map[j]]                    for 0 <= j < N
    d_default_value = sum of grad_values[k] over the k in [0, N_full) that do not occur in
                      reverse_index_map (each such position once)

This module computes it slowly and simply (it is no substitute for the compiled op):

* ``d_values``: the same bits as sfer's (a gather copies bits, NaN payloads included).
* ``d_default_value`` of an integer dtype: the exact sum, wrapped modulo 2**bits: the same
  value as sfer's.
* ``d_default_value`` of a float dtype: the **exact** sum of the unreferenced values, rounded
  once (to nearest, ties to even) to the output dtype; a complex sum is two real sums, one per
  part.  IEEE 754 decides the non-finite cases: a NaN, or +inf and -inf together, give NaN
  (always the canonical quiet NaN: positive, no payload, as sfer's); otherwise an infinity
  gives that infinity, and a finite exact sum beyond the dtype's range rounds to +-inf.  A
  sum that is exactly zero is +0, and so is the empty sum.

It accepts and rejects ordinary inputs as the compiled op does, with the same messages:
``TypeError`` for an unsupported ``grad_values`` dtype or a non-integer map, ``ValueError``
for an input that is not 1-D, and ``IndexError`` naming the first out-of-range entry
(``reverse_index_map[j] = v is out of range [0, N_full)``, the lowest ``j``).  bfloat16 works
when ml_dtypes is installed.  It has no ``num_threads`` or ``out``.

Error bound
-----------
sfer does not compute the exact sum: it accumulates in float64, so its float sums may differ
from this module's in the last place.  :func:`error_bound` gives the largest difference
allowed, and :func:`sum_mismatch` / :func:`mismatches` apply it.  With ``x_1 .. x_n`` the
unreferenced values (of one part, for complex), ``S = |x_1| + ... + |x_n|`` (in float64),
``r`` this module's sum and ``ulp(r)`` the unit in the last place of ``r`` in the output
format (the spacing of the format in ``r``'s binade; the smallest subnormal for 0), sfer's
sum ``a`` satisfies ``|a - r| <= error_bound``:

=============================================  ==========================================
dtype (how sfer accumulates)                   ``error_bound``
=============================================  ==========================================
float16 with n <= 8192 (float64, exact)        0: sfer's sum *is* the reference's
float16, bfloat16, float32, complex64          ``ulp(r) + 2 (n + 2) 2**-53 S``
(float64, rounded once at the end)
float64, complex128                            ``ulp(r) + 4 (n + 4)**2 2**-106 S``
(compensated (Neumaier) float64)
integers (exact, wrapping)                     0
=============================================  ==========================================

Where the terms come from:

* ``ulp(r)``: sfer rounds its float64 accumulator to the output dtype once, an error of at most
  half an ulp, and the reference's own rounding of the exact sum is another half.
* float64 accumulation: any order of summing n float64 terms is within
  ``(n - 1) u / (1 - (n - 1) u) * S`` of the exact sum, ``u = 2**-53`` (Higham, *Accuracy and
  Stability of Numerical Algorithms*, 2nd ed., section 4.2); ``2 (n + 2) u S`` covers that
  with room for the lanes and blocks sfer adds in.
* float16: every float16 value is a multiple of 2**-24 below 2**16, so up to 8192 of them add
  up exactly in float64's 53 bits; the one rounding at the end then gives the correctly
  rounded sum.
* Neumaier's compensated sum is within ``u |s| + O(n u**2) S`` of the exact sum ``s``
  (Higham, section 4.3); the final rounding is covered by ``ulp(r)``, and
  ``4 (n + 4)**2 u**2 S`` is generous in ``n`` because sfer combines the compensated sums of
  its lanes and blocks.
* Non-finite: when ``r`` is NaN or an infinity, sfer's sum is the same (NaN, or the same
  infinity), and ``error_bound`` is 0.  When ``S`` overflows float64 (float64 and complex128
  data near the top of the range), sfer's accumulator may overflow where the exact sum does
  not: ``error_bound`` is inf, and no bound is claimed.

For ordinary data the second term is far below an ulp: the bound is about one ulp of the sum.

The forward op
--------------
:func:`sparse_fill_empty_rows` is ``tf.raw_ops.SparseFillEmptyRows`` (TensorFlow's CPU
kernel) in plain NumPy: the specification of the forward op, which returns a
:class:`FillResult` ``(output_indices, output_values, empty_row_indicator,
reverse_index_map)``:

>>> r = reference.sparse_fill_empty_rows([[0, 1], [0, 3], [2, 0], [3, 1]], [1, 2, 3, 4],
...                                      [5, 6], -1)
>>> r.output_indices.tolist(), r.output_values.tolist()
([[0, 1], [0, 3], [1, 0], [2, 0], [3, 1], [4, 0]], [1, 2, -1, 3, 4, -1])
>>> r.empty_row_indicator.tolist(), r.reverse_index_map.tolist()
([False, True, False, False, True], [0, 1, 3, 4])

With ``dense_rows = dense_shape[0]``, the output holds one block per row ``0 .. dense_rows - 1``
in increasing order.  The block of row ``r`` holds the input entries whose ``indices[i, 0]``
is ``r`` in their input order (a stable grouping by row: columns 1.. are not sorted, and
duplicate coordinates stay), or, if there are none, the one entry ``[r, 0, ..., 0]`` with
``default_value``.  ``reverse_index_map[i]`` is the output position of input entry ``i``;
``empty_row_indicator[r]`` is True where row ``r`` had no entry.  When no row is empty and the
rows are non-decreasing (TensorFlow's fast path) the outputs equal the inputs and
``reverse_index_map`` is ``0 .. N-1``; this module returns copies there (always new, writeable
arrays; the compiled op hands back read-only views where it can).

The inputs are checked in four stages, each in the order of the arguments:

1. conversion: each input through ``np.asarray``, or ``np.from_dlpack`` for a DLPack
   producer that ``np.asarray`` cannot convert (``sfer._convert``'s rule; ``ValueError``
   naming the argument if it fails or the producer is not on the CPU);
2. dtypes (``TypeError``): ``indices`` and ``dense_shape`` need an integer dtype;
   ``default_value`` must be of a kind NumPy casts to ``values``' dtype with
   ``casting="same_kind"`` (bytes for ``S`` values, str for ``U`` and StringDType values,
   datetime64 or str for datetime64, a same-layout record or a tuple for structured values,
   the same layout for raw ``V`` bytes, anything for object values);
3. shapes, in TensorFlow's order (``ValueError``): ``dense_shape`` is a vector, ``indices`` a
   matrix, ``values`` a vector, ``len(values) == indices.shape[0]``, ``len(dense_shape) ==
   indices.shape[1]``, ``default_value`` a scalar, ``dense_shape`` not empty;
4. values: ``default_value`` fits ``values``' dtype (``ValueError``: an integer out of range,
   a finite number that overflows to inf, a datetime that loses precision; never a silent
   wrap), ``dense_shape[0] >= 0`` (``ValueError``), and every row ``indices[i, 0]`` in
   ``[0, dense_rows)`` (``IndexError`` naming the first bad ``i``: ``indices[i, 0] = v is out
   of range [0, dense_rows)``; so ``dense_rows == 0`` with ``N > 0`` is an ``IndexError`` for
   ``i = 0``).  Columns 1.. are never checked: they pass through as they are (converted to
   int64; a uint64 entry above int64's maximum keeps its bits, i.e. wraps).

Dtypes: ``output_indices`` and ``reverse_index_map`` are int64, ``empty_row_indicator`` bool.
``output_values`` has ``values``' dtype in native byte order, whatever the path, except for
``S`` and ``U`` values, whose output dtype is ``np.result_type(values, default_value)``: a
longer default widens it instead of being truncated.  Values of every dtype are copied bit
for bit (NaN payloads, -0.0; object arrays copy the references, and a non-array
``default_value`` of object values is stored as that very object).  ``default_value`` is
converted to the output dtype by NumPy (floats round to nearest).
"""

from __future__ import annotations

import itertools
import math
from fractions import Fraction
from typing import Any, Dict, Iterator, List, Optional, Tuple, Union

import numpy as np

from sfer import _dtypes, _errors
from sfer._fill_inputs import fill_inputs  # the forward op's input rules, shared with sfer._fill
from sfer._grad_inputs import as_vector as _as_vector  # the grad's input rules, shared with
from sfer._grad_inputs import check_dtypes as _check_dtypes  # sfer._grad
from sfer._ragged_inputs import check_sparse_entries, check_splits, ragged_inputs, sparse_inputs
from sfer._result import FillResult, GradResult, SparseCOO

__all__ = [
    "FillResult",
    "error_bound",
    "exact_sum",
    "mismatches",
    "ragged_to_sparse",
    "sparse_fill_empty_rows",
    "sparse_fill_empty_rows_grad",
    "sparse_to_ragged",
    "sum_mismatch",
    "unreferenced",
]

# The supported dtypes come from the one table (sfer/_dtypes.py); bfloat16 is optional and
# recognised without importing ml_dtypes.

#: A real binary floating-point format: (precision in bits with the implicit one, the smallest
#: normal exponent, the largest exponent).
_Format = Tuple[int, int, int]
_FORMATS: Dict[str, _Format] = {"float16": (11, -14, 15), "bfloat16": (8, -126, 127),
                                "float32": (24, -126, 127), "float64": (53, -1022, 1023)}

_CHUNK = 1 << 16  # values converted to Python numbers at a time (bounded memory)
_SCALE = 1 << 1074  # every finite float64 times this is an integer


# --------------------------------------------------------------------------------- the op


def sparse_fill_empty_rows_grad(reverse_index_map: Any, grad_values: Any) -> GradResult:
    """``tf.raw_ops.SparseFillEmptyRowsGrad`` in plain NumPy: ``GradResult(d_values,
    d_default_value)``, the sum exact and rounded once (see the module's documentation for
    the rules and for the error bound between sfer's sum and this one).

    Raises ``TypeError``, ``ValueError`` and ``IndexError`` as
    :func:`sfer.sparse_fill_empty_rows_grad` does for the same inputs, with the same messages.
    """
    rim, g = _validated(reverse_index_map, grad_values)
    d_values = g[rim.astype(np.int64)]  # a new array: fancy indexing copies
    d_default_value = exact_sum(g[unreferenced(rim, g.shape[0])], g.dtype)
    return GradResult(d_values, d_default_value)


def unreferenced(reverse_index_map: Any, n_full: int) -> np.ndarray:
    """A boolean mask over ``[0, n_full)``: True at the positions ``reverse_index_map`` does not
    reference, whose values ``d_default_value`` sums.  The map's entries must be in range."""
    rim = np.asarray(reverse_index_map)
    mask = np.ones(n_full, dtype=bool)
    if rim.size:
        mask[rim.astype(np.int64)] = False
    return mask


def exact_sum(values: Any, dtype: Any = None) -> Any:
    """The sum of ``values`` (converted to ``dtype``, by default their own dtype) as this module
    defines ``d_default_value``: exact and wrapped for integers, exact and rounded once for
    floats, IEEE 754 for NaN and inf, +0 for an empty or exactly-zero sum.  Returns a NumPy
    scalar of ``dtype`` in native byte order."""
    values = np.asarray(values)
    dtype = _value_dtype(values.dtype if dtype is None else dtype)
    values = values.astype(dtype, copy=False)
    if dtype.kind in "iu":
        bits = dtype.itemsize * 8
        total = sum(sum(chunk.tolist()) for chunk in _chunks(values)) % (1 << bits)
        if dtype.kind == "i" and total >= 1 << (bits - 1):
            total -= 1 << bits
        return dtype.type(total)
    fmt = _float_format(dtype)
    if dtype.kind == "c":
        out = np.zeros((), dtype=dtype)
        out.real = _rounded_sum(values.real.astype(np.float64), fmt)
        out.imag = _rounded_sum(values.imag.astype(np.float64), fmt)
        return out[()]
    return _to_dtype(_rounded_sum(values.astype(np.float64), fmt), dtype)


# ----------------------------------------------------------------------------- error bound


def error_bound(values: Any, dtype: Any = None) -> Union[float, complex]:
    """The largest ``|a - r|`` between sfer's sum ``a`` of ``values`` (the unreferenced
    ``grad_values``, converted to ``dtype``, by default their own dtype) and this module's sum
    ``r = exact_sum(values, dtype)``, as the module's documentation derives it.

    A float for real and integer dtypes (0 for integers: sfer's sum is exact); for complex
    dtypes a complex number whose real part bounds the error of the real part and whose
    imaginary part that of the imaginary part.  0 when ``r`` is NaN or infinite (sfer's sum is
    then the same), inf when ``sum(|values|)`` overflows float64 (no bound)."""
    values = np.asarray(values)
    dtype = _value_dtype(values.dtype if dtype is None else dtype)
    values = values.astype(dtype, copy=False)
    if dtype.kind in "iu":
        return 0.0
    fmt = _float_format(dtype)
    if dtype.kind == "c":
        return complex(_part_error_bound(values.real.astype(np.float64), fmt, dtype),
                       _part_error_bound(values.imag.astype(np.float64), fmt, dtype))
    return _part_error_bound(values.astype(np.float64), fmt, dtype)


def sum_mismatch(actual: Any, values: Any, dtype: Any = None, *,
                 exact: bool = False) -> Optional[str]:
    """None if ``actual`` is a sum of ``values`` that sfer may return, else what is wrong with it.

    ``actual`` must be a NumPy scalar of ``dtype`` (by default ``values``' dtype, in native byte
    order); the empty sum must be +0 (bit for bit); an integer sum must equal
    :func:`exact_sum`; a float sum must be NaN or the same infinity where :func:`exact_sum`
    is, and otherwise within :func:`error_bound` of it (with ``exact=True``, equal to it: for
    data whose float64 sums are exact).  A complex sum is checked part by part."""
    values = np.asarray(values)
    dtype = _value_dtype(values.dtype if dtype is None else dtype)
    values = values.astype(dtype, copy=False)
    if type(actual) is not dtype.type:
        return (f"the sum is a {type(actual).__module__}.{type(actual).__name__}, "
                f"expected a NumPy scalar of dtype {dtype.name}")
    if values.size == 0:
        if np.asarray(actual).tobytes() != bytes(dtype.itemsize):
            return f"the empty sum must be +0, got {actual!r}"
        return None
    if dtype.kind in "iu":
        expected = exact_sum(values, dtype)
        return None if actual == expected else f"sum {actual!r}, expected {expected!r}"
    fmt = _float_format(dtype)
    if dtype.kind == "c":
        for part, a, v in (("real", actual.real, values.real), ("imag", actual.imag,
                                                                values.imag)):
            problem = _part_mismatch(float(a), v.astype(np.float64), fmt, dtype, exact)
            if problem is not None:
                return f"{part} part: {problem}"
        return None
    return _part_mismatch(float(actual), values.astype(np.float64), fmt, dtype, exact)


def mismatches(result: Any, reverse_index_map: Any, grad_values: Any, *,
               exact: bool = False) -> List[str]:
    """What is wrong with ``result`` (a ``(d_values, d_default_value)`` pair, e.g. sfer's
    :class:`~sfer.GradResult`) as the result for these inputs; an empty list if nothing is.

    ``d_values`` must be an ndarray with the reference's dtype, shape and bits;
    ``d_default_value`` must pass :func:`sum_mismatch` (``exact`` is passed on).  Each problem
    starts with the name of the output it concerns (``d_values`` or ``d_default_value``).
    Invalid inputs raise as :func:`sparse_fill_empty_rows_grad` does."""
    rim, g = _validated(reverse_index_map, grad_values)
    d_values, d_default_value = result
    problems = []
    expected = g[rim.astype(np.int64)]
    if not isinstance(d_values, np.ndarray):
        problems.append(f"d_values is a {type(d_values).__name__}, not an ndarray")
    elif d_values.dtype != expected.dtype or d_values.shape != expected.shape:
        problems.append(f"d_values has dtype {d_values.dtype} and shape {d_values.shape}, "
                        f"expected {expected.dtype} and {expected.shape}")
    elif np.ascontiguousarray(d_values).tobytes() != expected.tobytes():
        problems.append("d_values differ from the reference's (grad_values[reverse_index_map])")
    problem = sum_mismatch(d_default_value, g[unreferenced(rim, g.shape[0])], g.dtype,
                           exact=exact)
    if problem is not None:
        problems.append(f"d_default_value: {problem}")
    return problems


# --------------------------------------------------------------------------------- helpers


def _validated(reverse_index_map: Any, grad_values: Any) -> Tuple[np.ndarray, np.ndarray]:
    """The inputs as 1-D arrays (grad_values in native byte order), checked as the op checks
    them; the map's entries are all in range."""
    rim = _as_vector(reverse_index_map, "reverse_index_map", empty_dtype=np.int64)
    g = _as_vector(grad_values, "grad_values")
    _check_dtypes(rim.dtype, g.dtype)
    g = g.astype(_native(g.dtype), copy=False)
    bad = _first_bad(rim, g.shape[0])
    if bad is not None:
        raise IndexError(_errors.map_entry_out_of_range(bad[0], bad[1], g.shape[0]))
    return rim, g


def _first_bad(reverse_index_map: Any, n_full: int) -> Optional[Tuple[int, int]]:
    """``(j, v)`` of the first entry ``v = reverse_index_map[j]`` outside ``[0, n_full)``, or
    None.  The map must have an integer dtype."""
    rim = np.asarray(reverse_index_map)
    if rim.size == 0:
        return None
    if rim.dtype.kind == "u":  # unsigned: compared as uint64 (entries may exceed int64's max)
        bad = rim.astype(np.uint64) >= np.uint64(n_full)
    else:
        r = rim.astype(np.int64)
        bad = (r < 0) | (r >= n_full)
    idx = np.flatnonzero(bad)
    if idx.size == 0:
        return None
    j = int(idx[0])
    return j, int(rim[j])


def _native(dtype: Any) -> np.dtype:
    dt: np.dtype = np.dtype(dtype)
    return dt if dt.isnative else dt.newbyteorder("=")


def _value_dtype(dtype: Any) -> np.dtype:
    """``dtype`` in native byte order; TypeError unless sfer supports it for grad_values."""
    native = _native(dtype)
    if not _dtypes.is_grad_value_dtype(native):
        raise TypeError(_errors.not_a_grad_values_dtype(native, _dtypes.grad_values_text()))
    return native


def _float_format(dtype: Any) -> _Format:
    """The binary format of a float dtype, or of each part of a complex one."""
    dtype = _native(dtype)
    if dtype.kind == "c":
        dtype = np.dtype(f"f{dtype.itemsize // 2}")
    return _FORMATS[dtype.name]


def _ulp(x: float, dtype: Any) -> float:
    """The unit in the last place of ``x`` in the real float format of ``dtype`` (or of a
    complex dtype's parts): the format's spacing in ``x``'s binade, the smallest subnormal for
    0, inf for inf and NaN."""
    return _format_ulp(float(x), _float_format(dtype))


def _format_ulp(x: float, fmt: _Format) -> float:
    """The spacing of the format ``fmt`` in the binade of ``x`` (see _ulp)."""
    if not math.isfinite(x):
        return math.inf
    p, emin, _ = fmt
    e = max(math.frexp(x)[1] - 1, emin) if x else emin
    return math.ldexp(1.0, e - p + 1)


def _round_to_format(x: float, fmt: _Format) -> float:
    """``x`` rounded once (to nearest, ties to even) to the format ``fmt``, as a Python float
    (exactly representable in it; +-inf beyond its range, the sign of ``x`` kept on zero)."""
    p, emin, emax = fmt
    if x == 0.0 or not math.isfinite(x) or p == 53:
        return x
    e = max(math.frexp(x)[1] - 1, emin)  # x's binade (subnormals: the lowest one)
    quantum = math.ldexp(1.0, e - p + 1)  # the format's spacing there
    r = round(x / quantum) * quantum  # x / quantum is exact; round() ties to even
    if abs(r) >= math.ldexp(1.0, emax + 1):
        return math.copysign(math.inf, x)
    return math.copysign(r, x)


def _round_float(x: float, dtype: Any) -> Any:
    """``x`` rounded once (to nearest, ties to even) to the real float ``dtype``: a NumPy
    scalar (bfloat16 included: ml_dtypes' own conversion from float64 rounds twice)."""
    return _to_dtype(_round_to_format(float(x), _float_format(dtype)), _native(dtype))


def _to_dtype(x: float, dtype: np.dtype) -> Any:
    """A value representable in ``dtype`` (or inf, or NaN: the canonical quiet NaN) as a
    NumPy scalar of ``dtype``."""
    return np.array(x, dtype=np.float64).astype(dtype)[()]


def _chunks(values: np.ndarray) -> Iterator[np.ndarray]:
    for start in range(0, values.shape[0], _CHUNK):
        yield values[start:start + _CHUNK]


def _floats(values: np.ndarray) -> Iterator[float]:
    """The float64 ``values`` as Python floats, a chunk at a time."""
    return itertools.chain.from_iterable(chunk.tolist() for chunk in _chunks(values))


def _exact(values: np.ndarray) -> Fraction:
    """The exact sum of finite float64 ``values`` (slow: only where math.fsum overflows)."""
    total = 0
    for x in _floats(values):
        num, den = x.as_integer_ratio()
        total += num * (_SCALE // den)
    return Fraction(total, _SCALE)


def _rounded_sum(values: np.ndarray, fmt: _Format) -> float:
    """The exact sum of float64 ``values`` rounded once to ``fmt`` (IEEE 754 for NaN and inf;
    +0 for an empty or exactly-zero sum), as a Python float."""
    if values.size == 0:
        return 0.0
    finite = np.isfinite(values)
    if not finite.all():
        pos_inf = bool(np.any(values == math.inf))
        neg_inf = bool(np.any(values == -math.inf))
        if bool(np.isnan(values).any()) or (pos_inf and neg_inf):
            return math.nan
        return math.inf if pos_inf else -math.inf
    exact: Optional[Fraction] = None
    try:
        s = math.fsum(_floats(values))  # the exact sum, correctly rounded to float64
    except OverflowError:  # fsum's partials overflowed: the exact way
        exact = _exact(values)
        try:
            s = float(exact)  # int / int: correctly rounded
        except OverflowError:
            return math.inf if exact > 0 else -math.inf
    if s == 0.0:
        return 0.0  # an exactly-zero sum is +0 (as in IEEE 754 round to nearest)
    r = _round_to_format(s, fmt)
    if fmt[0] < 53 and math.fmod(s / _format_ulp(s, fmt), 1.0) in (0.5, -0.5):
        # s is halfway between two values of fmt.  Rounding the exact sum to float64 first
        # may have moved it onto that tie: the exact sum's side of s decides, not the tie.
        if exact is not None:
            side = (exact > Fraction(s)) - (exact < Fraction(s))
        else:
            try:
                d = math.fsum(itertools.chain(_floats(values), (-s,)))  # exact - s, rounded
            except OverflowError:  # pragma: no cover - needs partials near float64's max
                d = float(_exact(values) - Fraction(s))
            side = (d > 0) - (d < 0)
        if side:
            r = _round_to_format(math.nextafter(s, side * math.inf), fmt)
    return r


def _part_bound(values: np.ndarray, r: float, fmt: _Format,
                dtype: np.dtype) -> Optional[Fraction]:
    """The error bound of one real part (float64 ``values``) whose reference sum ``r`` is
    finite, exactly; None where ``S`` overflows float64 (no bound)."""
    n = values.size
    if dtype.name == "float16" and n <= 8192:
        return Fraction(0)  # float64 adds these up exactly: sfer's sum is the reference's
    try:
        abs_sum = math.fsum(_floats(np.abs(values)))
    except OverflowError:
        return None
    if dtype.name in ("float64", "complex128"):  # compensated (Neumaier) float64
        term = 4.0 * (n + 4) ** 2 * 2.0**-106 * abs_sum
    else:  # float64, rounded once
        term = 2.0 * (n + 2) * 2.0**-53 * abs_sum
    return Fraction(_format_ulp(r, fmt)) + Fraction(term)


def _part_error_bound(values: np.ndarray, fmt: _Format, dtype: np.dtype) -> float:
    """:func:`error_bound` of one real part, as a float no smaller than the exact bound."""
    r = _rounded_sum(values, fmt)
    if not math.isfinite(r):
        return 0.0
    bound = _part_bound(values, r, fmt, dtype)
    if bound is None:
        return math.inf
    f = float(bound)
    return math.nextafter(f, math.inf) if Fraction(f) < bound else f


def _part_mismatch(a: float, values: np.ndarray, fmt: _Format, dtype: np.dtype,
                   exact: bool) -> Optional[str]:
    """None if ``a`` may be sfer's sum of one real part (float64 ``values``), else why not."""
    r = _rounded_sum(values, fmt)
    if math.isnan(r):
        return None if math.isnan(a) else f"expected NaN, got {a!r}"
    if math.isinf(r):
        return None if a == r else f"expected {r!r}, got {a!r}"
    if not math.isfinite(a):
        return f"expected a finite sum near {r!r}, got {a!r}"
    if exact:
        return None if a == r else f"expected exactly {r!r}, got {a!r}"
    bound = _part_bound(values, r, fmt, dtype)
    err = abs(Fraction(a) - Fraction(r))
    if bound is None or err <= bound:
        return None
    return (f"sum {a!r} differs from the correctly rounded {r!r} by {float(err)!r} > error "
            f"bound {float(bound)!r} ({dtype.name}, n={values.size})")


# ========================================================================== the forward op
#
# tf.raw_ops.SparseFillEmptyRows, the specification of sfer.sparse_fill_empty_rows (see "The
# forward op" in the module's documentation).


def sparse_fill_empty_rows(indices: Any, values: Any, dense_shape: Any,
                           default_value: Any) -> FillResult:
    """``tf.raw_ops.SparseFillEmptyRows`` in plain NumPy: ``FillResult(output_indices,
    output_values, empty_row_indicator, reverse_index_map)``.

    ``indices`` ``[N, R]`` and ``dense_shape`` ``[R]`` of any integer dtype, ``values``
    ``[N]`` of any dtype, ``default_value`` a scalar that fits ``values``' dtype.  The inputs
    are never modified, and every output is a new array (also on the fast path).  See the
    module's documentation for the rules, the dtypes and the errors.
    """
    idx, vals, shape, default, out_dtype = fill_inputs(indices, values, dense_shape, default_value)
    n, rank = idx.shape
    dense_rows = int(shape[0])
    rows = _checked_rows(idx, dense_rows)  # int64, every one in [0, dense_rows)
    indices64 = idx.astype(np.int64)  # columns 1.. pass through unchecked
    vals = vals.astype(out_dtype)  # a copy, bit for bit (only S/U may widen)

    counts = np.bincount(rows, minlength=dense_rows)  # entries per row
    empty_row_indicator = counts == 0

    # TensorFlow's fast path: the output is the input.  (The general path below gives the
    # same result here; this only says so.)
    if not empty_row_indicator.any() and bool(np.all(rows[1:] >= rows[:-1])):
        return FillResult(indices64, vals, empty_row_indicator, np.arange(n, dtype=np.int64))

    # Every row gets a block of max(count, 1) output positions, the blocks in row order.
    block_sizes = np.maximum(counts, 1)
    block_starts = np.cumsum(block_sizes) - block_sizes  # first output position of each row
    n_full = int(block_sizes.sum())

    # Entry i goes to its row's block, after the entries of that row with a lower i.
    order = np.argsort(rows, kind="stable")  # the entries grouped by row, input order kept
    row_of = rows[order]
    first_in_sorted = np.cumsum(counts) - counts  # where each row's group starts in ``order``
    rank_in_row = np.arange(n, dtype=np.int64) - first_in_sorted[row_of]
    reverse_index_map = np.empty(n, dtype=np.int64)
    reverse_index_map[order] = block_starts[row_of] + rank_in_row

    empty_rows = np.flatnonzero(empty_row_indicator)
    default_positions = block_starts[empty_rows]

    output_indices = np.zeros((n_full, rank), dtype=np.int64)
    output_indices[reverse_index_map] = indices64
    output_indices[default_positions, 0] = empty_rows  # [r, 0, ..., 0]

    output_values = np.empty(n_full, dtype=out_dtype)
    output_values[reverse_index_map] = vals
    output_values[default_positions] = default  # a 0-d array: objects stay one reference
    return FillResult(output_indices, output_values, empty_row_indicator, reverse_index_map)


def _checked_rows(idx: np.ndarray, dense_rows: int) -> np.ndarray:
    """Column 0 of ``idx`` as int64; IndexError naming the first entry outside
    ``[0, dense_rows)``."""
    rows = idx[:, 0]
    if rows.dtype.kind == "u":  # compared as uint64: entries may exceed int64's maximum
        bad = rows.astype(np.uint64) >= np.uint64(dense_rows)
    else:
        r = rows.astype(np.int64)
        bad = (r < 0) | (r >= min(dense_rows, np.iinfo(np.int64).max))
    first = np.flatnonzero(bad)
    if first.size:
        i = int(first[0])
        raise IndexError(_errors.row_out_of_range(i, int(rows[i]), dense_rows))
    return rows.astype(np.int64)


# ------------------------------------------------------------------ the ragged conversions


def ragged_to_sparse(values: Any, row_splits: Any) -> SparseCOO:
    """``tf.RaggedTensor.from_nested_row_splits(values, row_splits).to_sparse()`` in NumPy:
    the specification of :func:`sfer.ragged_to_sparse` (same inputs, same errors).

    Each item of the last level gets ``[row, position in its row at each ragged level...]``,
    found level by level from the innermost (``np.repeat`` of the row numbers by the row
    lengths); values with inner dimensions repeat that prefix once per inner item, followed
    by the item's position in ``values.shape[1:]`` in row-major order.

    >>> import numpy as np
    >>> from sfer import reference
    >>> reference.ragged_to_sparse(np.array([1.0, 2.0, 3.0]), [0, 1, 1, 3]).indices.tolist()
    [[0, 0], [2, 0], [2, 1]]
    """
    vals, splits, names = ragged_inputs(values, row_splits)
    check_splits(splits, names, vals.shape[0])
    n = vals.shape[0]
    child = np.arange(n, dtype=np.int64)
    columns: List[np.ndarray] = []
    for s in reversed(splits):
        row = np.repeat(np.arange(s.shape[0] - 1, dtype=np.int64), np.diff(s))[child]
        columns.insert(0, child - s[row])
        child = row
    columns.insert(0, child)
    prefix = np.stack(columns, axis=1)
    inner = vals.shape[1:]
    m = math.prod(inner)
    suffix = np.indices(inner, dtype=np.int64).reshape(len(inner), m).T
    indices = np.concatenate([np.repeat(prefix, m, axis=0), np.tile(suffix, (n, 1))], axis=1)
    widths = [int(np.diff(s).max()) if s.shape[0] > 1 else 0 for s in splits]
    dense_shape = np.array([splits[0].shape[0] - 1, *widths, *inner], dtype=np.int64)
    return SparseCOO(indices.astype(np.int64), vals.reshape(-1), dense_shape)


def sparse_to_ragged(indices: Any, values: Any, dense_shape: Any) -> Tuple[np.ndarray, np.ndarray]:
    """``tf.RaggedTensor.from_sparse`` in NumPy: the specification of
    :func:`sfer.sparse_to_ragged`: ``(values, row_splits)``, the splits the cumulative count
    of each row's entries, after the entries are checked in order (rows in range and never
    decreasing, columns ``0, 1, 2, ...`` within each row).

    >>> from sfer import reference
    >>> reference.sparse_to_ragged([[0, 0], [2, 0], [2, 1]], [1, 2, 3], [4, 5])[1].tolist()
    [0, 1, 1, 3, 3]
    """
    ind, vals, given, rows = sparse_inputs(indices, values, dense_shape)
    check_sparse_entries(ind, given, rows)
    counts = np.bincount(ind[:, 0], minlength=rows)
    splits = np.zeros(rows + 1, dtype=np.int64)
    np.cumsum(counts, out=splits[1:])
    return vals, splits
