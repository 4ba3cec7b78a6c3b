"""The forward op's input rules (private), shared by the compiled op's slow path
(``sfer._fill``) and its NumPy specification (``sfer.reference.sparse_fill_empty_rows``), so
both accept and reject the same inputs with the same words: conversion, dtypes, the shapes in
TensorFlow's order and ``default_value``.  The rows (column 0 against ``dense_shape[0]``) are
each implementation's own check.  The stages are documented in ``sfer.reference``.
"""

from __future__ import annotations

from typing import Any, Tuple

import numpy as np

from sfer import _errors
from sfer._convert import as_array
from sfer._dtypes import logical_kind, ml_kind

__all__ = ["fill_inputs"]



def fill_inputs(indices: Any, values: Any, dense_shape: Any, default_value: Any
                 ) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.dtype]:
    """The inputs as arrays, checked in the documented stages, and the output values' dtype;
    ``default_value`` comes back as a 0-d array of that dtype."""
    # 1. conversion
    idx = _as_array(indices, "indices", empty_dtype=np.int64)
    vals = _as_array(values, "values")
    shape = _as_array(dense_shape, "dense_shape", empty_dtype=np.int64)
    default = _default_as_array(default_value, vals.dtype)

    # 2. dtypes
    for arr, name in ((idx, "indices"), (shape, "dense_shape")):
        if arr.dtype.kind not in "iu":
            raise TypeError(_errors.not_integer(name, arr.dtype))
    out_dtype = _check_default_kind(default, vals.dtype)

    # 3. shapes, in TensorFlow's order
    if shape.ndim != 1:
        raise ValueError(_errors.wrong_rank("dense_shape", "a vector (1-D)", shape.shape))
    if idx.ndim != 2:
        raise ValueError(_errors.wrong_rank("indices", "a matrix (2-D, [N, R])", idx.shape))
    if vals.ndim != 1:
        raise ValueError(_errors.wrong_rank("values", "a vector (1-D)", vals.shape))
    if vals.shape[0] != idx.shape[0]:
        raise ValueError(_errors.length_mismatch("values", vals.shape[0], idx.shape,
                                                 "len(values) must equal indices.shape[0]"))
    if shape.shape[0] != idx.shape[1]:
        raise ValueError(_errors.length_mismatch("dense_shape", shape.shape[0], idx.shape,
                                                 "len(dense_shape) must equal indices.shape[1]"))
    if default.ndim != 0:
        raise ValueError(_errors.wrong_rank("default_value", "a scalar", default.shape))
    if shape.shape[0] == 0:
        raise ValueError(_errors.empty_dense_shape())

    # 4. values (the rows are checked by _checked_rows)
    default = _check_default_fits(default, out_dtype)
    if int(shape[0]) < 0:
        raise ValueError(_errors.negative_rows(int(shape[0]), shape.tolist()))
    return idx, vals, shape, default, out_dtype


def _as_array(obj: Any, name: str, *, empty_dtype: Any = None) -> np.ndarray:
    """``obj`` as an ndarray, a view where :func:`sfer._convert.as_array` can make one
    (ValueError naming ``name`` if it cannot convert it).  An empty sequence becomes
    ``empty_dtype`` when given ([] is an empty index list, not a float one)."""
    if isinstance(obj, np.ndarray):
        return obj
    arr = as_array(obj, name)  # the one conversion rule (sfer/_convert.py)
    if empty_dtype is not None and arr.size == 0 and arr.dtype.kind not in "iu":
        arr = arr.astype(empty_dtype)
    return arr


def _default_as_array(default_value: Any, values_dtype: np.dtype) -> np.ndarray:
    """``default_value`` as an array, not yet converted to ``values_dtype``.  For object values
    a non-array default is one object (stored by reference); for structured values a tuple is
    a record of ``values_dtype``."""
    if isinstance(default_value, np.ndarray):
        return default_value
    if values_dtype.kind == "O":
        holder = np.empty((), dtype=object)
        holder[()] = default_value
        return holder
    try:
        if values_dtype.names is not None and isinstance(default_value, tuple):
            return np.array(default_value, dtype=values_dtype)
    except (ValueError, TypeError, OverflowError) as exc:
        raise ValueError(_errors.not_an_array("default_value", exc)) from None
    return as_array(default_value, "default_value")  # e.g. a 0-d array of another library


def _is_python_int(default: np.ndarray) -> bool:
    """True for the object array np.asarray makes of a Python int beyond 64 bits."""
    return (default.dtype.kind == "O" and default.ndim == 0
            and isinstance(default[()], int) and not isinstance(default[()], bool))


def _check_default_kind(default: np.ndarray, values_dtype: np.dtype) -> np.dtype:
    """The output values' dtype; TypeError naming default_value if its kind cannot become
    ``values_dtype`` (stage 2: by dtype, whatever its shape)."""
    vk, dk = logical_kind(values_dtype), logical_kind(default.dtype)
    out = values_dtype if values_dtype.isnative else values_dtype.newbyteorder("=")
    casting = "same_kind"
    if vk == "O":
        return out
    if vk in "SU":
        if dk != vk:
            want = "bytes" if vk == "S" else "str"
            raise TypeError(_errors.default_not_text(want, values_dtype, default.dtype))
        return np.result_type(values_dtype, default.dtype)  # the wider: nothing truncated
    if vk == "T":  # NumPy 2's StringDType
        ok = dk in "UT"
    elif vk == "M":
        ok = dk in "MU"  # a datetime64, or a str NumPy parses
    elif vk == "V" and issubclass(values_dtype.type, np.void):  # structured or raw bytes
        casting = "equiv"  # named in the error message below
        ok = np.can_cast(default.dtype, values_dtype, casting="equiv")
    elif vk in "iu" and (dk in "biu" or _is_python_int(default)):
        ok = True  # any integer: its value is checked (signed to unsigned is not same_kind)
    elif ml_kind(values_dtype) or ml_kind(default.dtype):
        # ml_dtypes' types follow NumPy's own table for their kind, whatever casts the
        # installed ml_dtypes registers: b < i, u < f < c, a default never of a higher kind.
        source = "i" if _is_python_int(default) else dk
        ok = vk in _SAME_KIND_FROM and source in _SAME_KIND_FROM[vk]
    elif _is_python_int(default):
        ok = np.can_cast(np.int64, values_dtype, casting="same_kind")
    else:
        ok = np.can_cast(default.dtype, values_dtype, casting="same_kind")
    if not ok:
        shown = "int" if _is_python_int(default) else str(default.dtype)
        raise TypeError(_errors.default_does_not_cast(shown, values_dtype, casting))
    return out


#: NumPy's casting="same_kind" table by kind, for the float and complex targets (integer
#: targets take any integer default and check its value): the kinds a default may have.
_SAME_KIND_FROM = {"f": "biuf", "c": "biufc"}


def _check_default_fits(default: np.ndarray, out_dtype: np.dtype) -> np.ndarray:
    """The scalar ``default`` converted to ``out_dtype`` (a 0-d array); ValueError naming
    default_value if its value does not fit (stage 4)."""
    x = default[()]
    if default.dtype.kind in "biufc":
        x = x.item()  # shown as a Python number in messages
    if out_dtype.kind == "O":
        return default if default.dtype.kind == "O" else default.astype(object)
    if out_dtype.kind in "iu" and ml_kind(out_dtype) is None:
        v = int(x)  # bool, integer or Python int: exact
        info = np.iinfo(out_dtype)
        if not info.min <= v <= info.max:
            raise ValueError(_errors.default_does_not_fit(
                v, out_dtype, f"range [{info.min}, {info.max}]"))
        return np.array(v, dtype=out_dtype)
    if _is_python_int(default):  # beyond 64 bits, to a float or complex dtype
        try:
            default = np.array(float(x))
        except OverflowError:
            raise ValueError(_errors.default_overflows(x, out_dtype)) from None
    if out_dtype.kind == "M" and default.dtype.kind == "U":
        try:
            default = default.astype("M8")  # parsed by NumPy, in its own unit
        except ValueError as exc:
            raise ValueError(_errors.default_not_datetime(repr(x), exc)) from None
    try:
        with np.errstate(all="ignore"):
            converted = default.astype(out_dtype)
    except OverflowError:  # NumPy >= 2.5: a datetime64/timedelta64 beyond the unit's range
        raise ValueError(_errors.default_does_not_fit(repr(x), out_dtype,
                                                      "out of its range")) from None
    if logical_kind(out_dtype) in "fc":
        if _finite(default) and not _finite(converted):
            raise ValueError(_errors.default_overflows(repr(x), out_dtype))
    elif out_dtype.kind in "Mm" or ml_kind(out_dtype) is not None:
        # datetimes (a unit may lose precision or overflow) and ml_dtypes' small integers
        # (int4, ...; NumPy has no iinfo for them): the value must come back unchanged
        try:
            with np.errstate(all="ignore"):
                back = converted.astype(default.dtype)
        except OverflowError:  # NumPy >= 2.5 (older ones wrap, and the comparison fails)
            same = False
        else:
            same = bool(back == default) or (out_dtype.kind in "Mm" and bool(
                np.isnat(back) and np.isnat(default)))
        if not same:
            raise ValueError(_errors.default_does_not_fit(
                repr(x), out_dtype, f"it would become {converted[()]!r}"))
    return converted


def _finite(a: np.ndarray) -> bool:
    """Whether a 0-d bool, integer or float/complex array (ml_dtypes' included) is finite."""
    if a.dtype.kind in "biu":
        return True
    if a.dtype.kind in "fc" and ml_kind(a.dtype) is None:
        return bool(np.isfinite(a))
    wide = np.complex128 if logical_kind(a.dtype) == "c" else np.float64
    return bool(np.isfinite(a.astype(wide)))  # bfloat16 and ml_dtypes' other formats
