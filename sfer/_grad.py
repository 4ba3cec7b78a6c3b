"""The validation layer: turns whatever the user passed into what the kernel may assume.

The common case (ndarrays the kernel can read as they are) is handled whole in C by
``sfer._core.sparse_fill_empty_rows_grad``; everything else comes here to be converted, or to
get a precise error.
"""

from __future__ import annotations

import operator
from typing import Any

import numpy as np

from sfer import _core
from sfer._result import GradResult

__all__ = ["slow_path"]

# bfloat16 is optional: it exists when ml_dtypes is installed.
_BFLOAT16: np.dtype | None
try:
    import ml_dtypes
except ImportError:  # pragma: no cover - depends on the environment
    _BFLOAT16 = None
else:
    _BFLOAT16 = np.dtype(ml_dtypes.bfloat16)

_SUPPORTED_VALUES = (
    "float16, float32, float64, complex64, complex128, int8, int16, int32, int64, "
    "uint8, uint16, uint32, uint64" + (", bfloat16" if _BFLOAT16 is not None else
                                       " (bfloat16 with ml_dtypes installed)")
)


def _value_kind(dtype: np.dtype) -> int:
    """The kernel's value kind for ``dtype`` (any byte order), or -1."""
    if _BFLOAT16 is not None and dtype.newbyteorder("=") == _BFLOAT16:
        return int(_core.V_BF16)
    if dtype.kind not in "iufc":  # bool, datetime, str, object, void, user types
        return -1
    return _core.value_kind(dtype.newbyteorder("="))


def _index_kind(dtype: np.dtype) -> int:
    """The kernel's index kind for ``dtype`` (any byte order), or -1."""
    if dtype.kind not in "iu":
        return -1
    return _core.index_kind(dtype.newbyteorder("="))


def _as_vector(obj: Any, name: str, *, empty_dtype: Any = None) -> np.ndarray:
    """``obj`` as a 1-D ndarray (not yet converted for the kernel)."""
    if isinstance(obj, np.ndarray):
        arr = obj
    else:
        try:
            arr = np.asarray(obj)
        except (ValueError, TypeError, OverflowError) as exc:
            raise ValueError(f"{name} could not be converted to an array: {exc}") from None
        if empty_dtype is not None and arr.size == 0:
            arr = arr.astype(empty_dtype)  # [] and () mean an empty map, not a float one
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    return arr


def _for_kernel(arr: np.ndarray) -> np.ndarray:
    """``arr`` aligned, C-contiguous and in native byte order (a copy only if needed)."""
    if not arr.dtype.isnative:
        arr = arr.astype(arr.dtype.newbyteorder("="))
    if not (arr.flags.c_contiguous and arr.flags.aligned):
        arr = np.ascontiguousarray(arr)
        if not arr.flags.aligned:  # an unaligned contiguous buffer: ascontiguousarray kept it
            arr = arr.copy()
    return arr


def _thread_count(num_threads: Any) -> int:
    """``num_threads`` as the kernel takes it: 0 for OpenMP's default."""
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


def _check_out(out: Any, n: int, dtype: np.dtype, inputs: tuple[np.ndarray, ...]) -> np.ndarray:
    """``out`` if it can receive ``d_values``, else a TypeError/ValueError saying why."""
    if not isinstance(out, np.ndarray):
        raise TypeError(f"out must be a numpy.ndarray, got {type(out).__name__}")
    if out.shape != (n,):
        raise ValueError(f"out must have shape ({n},), got {out.shape}")
    if out.dtype != dtype:
        raise TypeError(f"out must have dtype {dtype.name} (native byte order), got "
                        f"{out.dtype.name} ({out.dtype.str})")
    if not out.flags.writeable:
        raise ValueError("out must be writeable")
    if not (out.flags.c_contiguous and out.flags.aligned):
        raise ValueError("out must be C-contiguous and aligned")
    for arr, name in zip(inputs, ("reverse_index_map", "grad_values")):
        if np.may_share_memory(out, arr):
            raise ValueError(f"out must not overlap {name}")
    return out


def slow_path(reverse_index_map: Any, grad_values: Any, num_threads: Any,
              out: Any) -> GradResult:
    """Everything ``sfer._core``'s C fast path does not take: converts the inputs for the
    kernel (lists, strided, byte-swapped, unaligned, bfloat16, ...) or raises the precise
    error.  Called by :func:`sfer.sparse_fill_empty_rows_grad`."""
    rim = _as_vector(reverse_index_map, "reverse_index_map", empty_dtype=np.int64)
    g = _as_vector(grad_values, "grad_values")
    nthreads = _thread_count(num_threads)
    vkind = _value_kind(g.dtype)
    if vkind < 0:
        raise TypeError(
            f"grad_values has dtype {g.dtype.name} ({g.dtype.str}), which sfer does not "
            f"support; supported: {_SUPPORTED_VALUES}"
        )
    ikind = _index_kind(rim.dtype)
    if ikind < 0:
        raise TypeError(f"reverse_index_map must have an integer dtype, got {rim.dtype.name}")

    rim_k = _for_kernel(rim)
    g_k = _for_kernel(g)
    if out is None:
        d_values = np.empty(rim_k.shape[0], dtype=g_k.dtype)
    else:
        d_values = _check_out(out, rim_k.shape[0], g_k.dtype, (rim, g))
    total = _core.grad(rim_k, g_k, d_values, vkind, ikind, nthreads)
    return GradResult(d_values, total)
