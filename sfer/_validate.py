"""The Python slow path: turns whatever the user passed into what the kernels may assume.

The common case (ndarrays a kernel can read as they are) is handled whole in C by the op's
entry point; everything else comes here to be converted: lists and other sequences, other
libraries' arrays (buffers, ``__array__``, DLPack: the rule is ``sfer._convert``'s), strided,
byte-swapped and unaligned arrays, bfloat16.  This module only converts; every accept/reject
rule (dtypes, ``num_threads``, ``out=``) is decided once, in the op's compiled module, for both
paths.  Conversion problems (not an array, not 1-D) are explained here.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from sfer import _grad
from sfer._convert import as_array
from sfer._result import GradResult

__all__ = ["as_vector", "for_kernel", "slow_path"]


def as_vector(obj: Any, name: str, *, empty_dtype: Any = None) -> np.ndarray:
    """``obj`` as a 1-D ndarray (not yet converted for the kernel; a view where
    :func:`sfer._convert.as_array` can make one); ValueError if it is not convertible or not
    1-D.  An empty sequence becomes ``empty_dtype`` when given."""
    arr = as_array(obj, name)  # the one conversion rule (sfer/_convert.py)
    if empty_dtype is not None and arr.size == 0 and not isinstance(obj, np.ndarray):
        arr = arr.astype(empty_dtype)  # [] and () mean an empty map, not a float one
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    return arr


def for_kernel(arr: np.ndarray) -> np.ndarray:
    """``arr`` aligned, C-contiguous and in native byte order (a copy only if needed)."""
    if not arr.dtype.isnative:
        arr = arr.astype(arr.dtype.newbyteorder("="))
    if not (arr.flags.c_contiguous and arr.flags.aligned):
        arr = np.ascontiguousarray(arr)
        if not arr.flags.aligned:  # an unaligned contiguous buffer: ascontiguousarray kept it
            arr = arr.copy()
    return arr


def slow_path(reverse_index_map: Any, grad_values: Any, num_threads: Any,
              out: Any) -> GradResult:
    """What the grad op's C fast path does not take: the inputs converted for the kernel, in
    the order of its rules (map, grad_values, num_threads, dtypes, out).  Called by
    :func:`sfer.sparse_fill_empty_rows_grad`."""
    rim = as_vector(reverse_index_map, "reverse_index_map", empty_dtype=np.int64)
    g = as_vector(grad_values, "grad_values")
    nthreads = _grad.thread_request(num_threads)
    _grad.check_dtypes(rim.dtype, g.dtype)
    rim_k = for_kernel(rim)
    g_k = for_kernel(g)
    d_values = _grad.output_for(out, rim_k.shape[0], g_k.dtype, rim, g)
    result: GradResult = _grad.grad_kernel(rim_k, g_k, d_values, nthreads)
    return result
