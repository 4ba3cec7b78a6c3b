"""The validation layer: turns whatever the user passed into what the kernel may assume."""

from __future__ import annotations

import operator
from typing import Any, NamedTuple

import numpy as np

from sfer import _core

__all__ = ["GradResult", "sparse_fill_empty_rows_grad"]


class GradResult(NamedTuple):
    """The two outputs of :func:`sparse_fill_empty_rows_grad`."""

    d_values: np.ndarray
    """``grad_values[reverse_index_map]``: shape ``(N,)``, ``grad_values``' dtype."""
    d_default_value: Any
    """The sum of the unreferenced ``grad_values``: a NumPy scalar of ``grad_values``' dtype."""


# Native-byte-order dtypes the kernel takes, mapped to its kind codes.
_VALUE_KINDS = {
    np.dtype(np.int8): _core.V_U8,
    np.dtype(np.uint8): _core.V_U8,
    np.dtype(np.int16): _core.V_U16,
    np.dtype(np.uint16): _core.V_U16,
    np.dtype(np.int32): _core.V_U32,
    np.dtype(np.uint32): _core.V_U32,
    np.dtype(np.int64): _core.V_U64,
    np.dtype(np.uint64): _core.V_U64,
    np.dtype(np.float16): _core.V_F16,
    np.dtype(np.float32): _core.V_F32,
    np.dtype(np.float64): _core.V_F64,
    np.dtype(np.complex64): _core.V_C64,
    np.dtype(np.complex128): _core.V_C128,
}
_BFLOAT16: np.dtype | None
try:  # bfloat16 is optional: it exists when ml_dtypes is installed
    import ml_dtypes
except ImportError:  # pragma: no cover - depends on the environment
    _BFLOAT16 = None
else:
    _BFLOAT16 = np.dtype(ml_dtypes.bfloat16)
    _VALUE_KINDS[_BFLOAT16] = _core.V_BF16

_INDEX_KINDS = {
    np.dtype(np.int8): _core.I_I8,
    np.dtype(np.int16): _core.I_I16,
    np.dtype(np.int32): _core.I_I32,
    np.dtype(np.int64): _core.I_I64,
    np.dtype(np.uint8): _core.I_U8,
    np.dtype(np.uint16): _core.I_U16,
    np.dtype(np.uint32): _core.I_U32,
    np.dtype(np.uint64): _core.I_U64,
}

_SUPPORTED_VALUES = (
    "float16, float32, float64, complex64, complex128, int8, int16, int32, int64, "
    "uint8, uint16, uint32, uint64" + (", bfloat16" if _BFLOAT16 is not None else
                                       " (bfloat16 with ml_dtypes installed)")
)


def _as_vector(obj: Any, name: str, *, empty_dtype: Any = None) -> np.ndarray:
    """``obj`` as a 1-D array that the kernel can read: aligned, C-contiguous, native order."""
    if type(obj) is np.ndarray:
        arr = obj
    else:
        try:
            arr = np.asarray(obj)
        except (ValueError, TypeError, OverflowError) as exc:
            raise ValueError(f"{name} could not be converted to an array: {exc}") from None
        if empty_dtype is not None and arr.size == 0 and not isinstance(obj, np.ndarray):
            arr = arr.astype(empty_dtype)  # [] and () mean an empty map, not a float one
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    return arr


def _normalise(arr: np.ndarray) -> np.ndarray:
    if not arr.dtype.isnative:
        arr = arr.astype(arr.dtype.newbyteorder("="))
    if not (arr.flags.c_contiguous and arr.flags.aligned):
        arr = np.ascontiguousarray(arr)
        if not arr.flags.aligned:  # an unaligned contiguous buffer: ascontiguousarray kept it
            arr = arr.copy()
    return arr


def _thread_count(num_threads: Any) -> int:
    if num_threads is None:
        return 0
    if isinstance(num_threads, (bool, np.bool_)):
        raise TypeError(f"num_threads must be None or an int, got {num_threads!r}")
    try:
        n = operator.index(num_threads)
    except TypeError:
        raise TypeError(
            f"num_threads must be None or an int, got {type(num_threads).__name__} "
            f"{num_threads!r}"
        ) from None
    if n < 1:
        raise ValueError(f"num_threads must be >= 1 (or None for OpenMP's default), got {n}")
    return min(n, 1 << 16)


def sparse_fill_empty_rows_grad(
    reverse_index_map: Any, grad_values: Any, *, num_threads: int | None = None
) -> GradResult:
    """The gradient of SparseFillEmptyRows (TensorFlow's ``SparseFillEmptyRowsGrad``).

    Computes, for ``N = len(reverse_index_map)`` and ``N_full = len(grad_values)``::

        d_values[j]     = grad_values[reverse_index_map[j]]        for 0 <= j < N
        d_default_value = sum of grad_values[k] over every k in [0, N_full)
                          that does not occur in reverse_index_map

    Parameters
    ----------
    reverse_index_map : array_like of integers, shape (N,)
        Any integer dtype.  Every entry must lie in ``[0, N_full)``; repeats are allowed
        (a repeated position is excluded from the sum once).
    grad_values : array_like, shape (N_full,)
        float16, float32, float64, complex64, complex128, int8 .. int64, uint8 .. uint64, or
        bfloat16 (with ``ml_dtypes`` installed).
    num_threads : int, optional
        The most OpenMP threads to use; ``None`` means OpenMP's default (``OMP_NUM_THREADS``).
        Small inputs run on one thread.  The result is bit-identical for every value.

    Returns
    -------
    GradResult
        ``(d_values, d_default_value)``: a new array of shape ``(N,)`` and a NumPy scalar, both
        of ``grad_values``' dtype (in native byte order).

    Raises
    ------
    TypeError
        A dtype sfer does not handle, or a ``num_threads`` that is not an int.
    ValueError
        An input that is not 1-D or not convertible to an array; ``num_threads < 1``.
    IndexError
        An entry outside ``[0, N_full)``; the message names the first such position.

    Notes
    -----
    Integer sums wrap modulo ``2**bits``.  float16, bfloat16, float32 and complex64 sums are
    accumulated in float64, float64 and complex128 sums with compensated (Neumaier)
    summation; the result is rounded once.  The inputs are never modified and the GIL is
    released while the kernel runs.
    """
    rim = _as_vector(reverse_index_map, "reverse_index_map", empty_dtype=np.int64)
    g = _as_vector(grad_values, "grad_values")
    nthreads = _thread_count(num_threads)

    gdt = g.dtype
    vkind = _VALUE_KINDS.get(gdt)
    if vkind is None:
        vkind = _VALUE_KINDS.get(gdt.newbyteorder("=")) if gdt.byteorder in "<>" else None
        if vkind is None:
            raise TypeError(
                f"grad_values has dtype {gdt.name!s} ({gdt.str}), which sfer does not "
                f"support; supported: {_SUPPORTED_VALUES}"
            )
    ikind = _INDEX_KINDS.get(rim.dtype)
    if ikind is None:
        ikind = (_INDEX_KINDS.get(rim.dtype.newbyteorder("="))
                 if rim.dtype.byteorder in "<>" else None)
        if ikind is None:
            raise TypeError(
                f"reverse_index_map must have an integer dtype, got {rim.dtype.name!s}"
            )

    rim_k = _normalise(rim)
    g_k = _normalise(g)
    d_values = np.empty(rim_k.shape[0], dtype=g_k.dtype)
    bad, total = _core.grad(rim_k, g_k, d_values, vkind, ikind, nthreads)
    if bad >= 0:
        raise IndexError(
            f"reverse_index_map[{bad}] = {rim_k[bad]} is out of range [0, {g_k.shape[0]})"
        )
    return GradResult(d_values, total)
