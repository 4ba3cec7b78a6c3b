"""The grad op's input rules (private): turns whatever the user passed into what the kernel
takes, or says why it cannot.

The common case (exact ndarrays the kernel can read as they are, of supported dtypes, a valid
``num_threads`` and ``out=``) is accepted whole in C by the op's entry point
(``sfer._grad.fast_grad``), which only accepts: everything else comes here, once, and is
converted AND checked in the order of the op's rules (map, grad_values, num_threads, dtypes,
out): lists and other sequences, other libraries' arrays (buffers, ``__array__``, DLPack: the
rule is ``sfer._convert``'s), strided, byte-swapped and unaligned arrays, bfloat16, and every
input that breaks a rule.  :func:`grad_inputs` returns what the kernel takes; nothing here
calls the op back.  ``sfer.reference`` checks its inputs with the same functions.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from sfer import _dtypes, _errors
from sfer._convert import as_array, check_out
from sfer._runtime import thread_request

__all__ = ["GradInputs", "as_vector", "check_dtypes", "for_kernel", "grad_inputs", "output_for"]


class GradInputs(NamedTuple):
    """What the grad's kernel takes: behaved (1-D, C-contiguous, aligned, native) arrays of
    supported dtypes, the thread request and the array ``d_values`` goes to."""

    reverse_index_map: np.ndarray
    grad_values: np.ndarray
    num_threads: int  # sfer._runtime.thread_request's answer (0: the default)
    d_values: np.ndarray


def grad_inputs(reverse_index_map: Any, grad_values: Any, num_threads: Any,
                out: Any) -> GradInputs:
    """The inputs of :func:`sfer.sparse_fill_empty_rows_grad` converted for the kernel; the
    first rule they break raises (ValueError, TypeError), in the op's documented order."""
    rim = as_vector(reverse_index_map, "reverse_index_map", empty_dtype=np.int64)
    g = as_vector(grad_values, "grad_values")
    nthreads = thread_request(num_threads)
    check_dtypes(rim.dtype, g.dtype)
    rim_k = for_kernel(rim)
    g_k = for_kernel(g)
    d_values = output_for(out, rim_k.shape[0], g_k.dtype, rim, g)
    return GradInputs(rim_k, g_k, nthreads, d_values)


def as_vector(obj: Any, name: str, *, empty_dtype: Any = None) -> np.ndarray:
    """``obj`` as a 1-D ndarray (not yet converted for the kernel; a view where
    :func:`sfer._convert.as_array` can make one); ValueError if it is not convertible or not
    1-D.  An empty sequence becomes ``empty_dtype`` when given."""
    arr = as_array(obj, name)  # the one conversion rule (sfer/_convert.py)
    if empty_dtype is not None and arr.size == 0 and not isinstance(obj, np.ndarray):
        arr = arr.astype(empty_dtype)  # [] and () mean an empty map, not a float one
    if arr.ndim != 1:
        raise ValueError(_errors.not_1d(name, arr.shape))
    return arr


def check_dtypes(map_dtype: np.dtype, grad_dtype: np.dtype) -> None:
    """TypeError unless the grad takes a map of ``map_dtype`` and grad_values of ``grad_dtype``
    (any byte order): grad_values' dtype in the table of sfer._dtypes, an integer map."""
    if not _dtypes.is_grad_value_dtype(grad_dtype):
        raise TypeError(_errors.grad_values_dtype(grad_dtype, _dtypes.grad_values_text()))
    if (map_dtype.kind not in "iu" or map_dtype.itemsize not in (1, 2, 4, 8)
            or map_dtype.num >= _dtypes.NPY_USERDEF):
        raise TypeError(_errors.not_integer("reverse_index_map", map_dtype.name))


def for_kernel(arr: np.ndarray) -> np.ndarray:
    """``arr`` aligned, C-contiguous and in native byte order (a copy only if needed)."""
    if not arr.dtype.isnative:
        arr = arr.astype(arr.dtype.newbyteorder("="))
    if not (arr.flags.c_contiguous and arr.flags.aligned):
        arr = np.ascontiguousarray(arr)
        if not arr.flags.aligned:  # an unaligned contiguous buffer: ascontiguousarray kept it
            arr = arr.copy()
    return arr


def _fits(d: np.ndarray, n: int, dtype: np.dtype, map_given: Any, grad_given: Any) -> bool:
    """The rules of out= at once, as the C fast path tests them (its overlap test looks at
    exact ndarrays only)."""
    return (d.ndim == 1 and d.shape[0] == n and d.dtype == dtype and d.flags.writeable
            and d.flags.c_contiguous and d.flags.aligned
            and not any(type(a) is np.ndarray and np.may_share_memory(d, a)
                        for a in (map_given, grad_given)))


def output_for(out: Any, n: int, dtype: np.dtype, map_given: Any,
               grad_given: Any) -> np.ndarray:
    """Where ``d_values`` goes: a new array of ``n`` items of ``dtype`` (native) when ``out`` is
    None, else ``out`` if it can receive them (TypeError/ValueError saying why not).
    ``map_given``/``grad_given``: the inputs as the user passed them, which out must not
    overlap."""
    if out is None:  # a built-in dtype as its type number gives it (the fast path's array)
        return np.empty(n, dtype=dtype if dtype.num >= _dtypes.NPY_USERDEF else dtype.char)
    if isinstance(out, np.ndarray) and _fits(out, n, dtype, map_given, grad_given):
        return out
    return check_out(out, (n,), dtype, lambda got: _errors.out_shape(n, got),
                     [("reverse_index_map", map_given), ("grad_values", grad_given)])
