"""The one conversion rule for array arguments (private): what an argument that is not already
an ndarray becomes.  Shared by both ops' slow paths (``sfer._grad_inputs.as_vector`` for the
grad, ``sfer._fill_inputs`` for the forward op) and so by ``sfer.reference``, which uses the
same two functions.  Also the rules of an ``out=`` array (:func:`check_out`), shared by the
grad (``d_values``) and ``ragged_to_sparse`` (``indices``).

Order of attempts, chosen so that everything ``np.asarray`` accepted before DLPack support
still converts exactly as it did (same dtype, same shape, the same view or copy):

1. an ``np.ndarray`` (or subclass) is returned as it is;
2. ``np.asarray(obj)``: NumPy's own protocols, in NumPy's order: the buffer protocol
   (memoryview, bytearray, array.array, mmap; on Python >= 3.12 also classes with
   ``__buffer__``, e.g. array-api-strict arrays), ``__array_struct__``,
   ``__array_interface__``, ``__array__`` (pyarrow, PyTorch and JAX CPU tensors, older
   array-api-strict), then nested sequences.  Each of these is a view of the producer's memory
   when NumPy can make one (pyarrow only for primitive types without nulls);
3. ``np.from_dlpack(obj)``, only for an object with ``__dlpack__`` that step 2 could not turn
   into an array: ``np.asarray`` raised, or it wrapped the object whole as a 0-d ``object``
   array (what it does with an object it does not recognise: an array that no op accepts, as
   every array argument must be at least 1-D).  DLPack never copies; before it, the device the
   producer reports (``__dlpack_device__``) must be one NumPy can read (the CPU, or host /
   managed memory of CUDA or ROCm), else a ``ValueError`` naming the argument and the device.

DLPack is the fallback, not the first choice: where both routes work they give the same view
(array-api-strict arrays, pyarrow arrays of primitive types without nulls), while trying DLPack
first would change what works today: a pyarrow array with nulls, of booleans (bit-packed) or of
strings has a ``__dlpack__`` that raises, but ``np.asarray`` converts it (a copy); a JAX array
on a GPU is copied to the host by its ``__array__``, but DLPack cannot hand NumPy GPU memory.
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Sequence, Tuple

import numpy as np

from sfer import _errors

__all__ = ["as_array", "check_out"]

#: Today's conversion errors: ``np.asarray`` raising one of these is reported as a ValueError
#: naming the argument (anything else it raises propagates, unless DLPack succeeds).
_CONVERSION_ERRORS = (ValueError, TypeError, OverflowError)

#: DLPack device types whose memory ``np.from_dlpack`` reads in place (dlpack.h's DLDeviceType).
_HOST_DEVICES = frozenset({1, 3, 11, 13})  # CPU, CUDA host, ROCm host, CUDA managed
_DEVICE_NAMES = {2: "CUDA", 4: "OpenCL", 7: "Vulkan", 8: "Metal", 9: "VPI", 10: "ROCm",
                 12: "ExtDev", 14: "oneAPI", 15: "WebGPU", 16: "Hexagon", 17: "MAIA"}


def as_array(obj: Any, name: str) -> np.ndarray:
    """``obj`` as an ndarray, without a copy where NumPy or DLPack can view its memory (see the
    module's documentation for the order); ``ValueError`` naming ``name`` if it cannot be
    converted or is a DLPack producer on a device NumPy cannot read."""
    if isinstance(obj, np.ndarray):
        return obj
    numpy_error: Optional[BaseException] = None
    try:
        arr = np.asarray(obj)
    except Exception as exc:
        if not hasattr(obj, "__dlpack__"):
            if isinstance(exc, _CONVERSION_ERRORS):
                raise ValueError(_errors.not_an_array(name, exc)) from None
            raise
        numpy_error = exc
    else:
        if not (arr.dtype == object and arr.ndim == 0 and hasattr(obj, "__dlpack__")
                and arr[()] is obj):
            return arr
    return _from_dlpack(obj, name, numpy_error)


def _from_dlpack(obj: Any, name: str, numpy_error: Optional[BaseException]) -> np.ndarray:
    """``np.from_dlpack(obj)`` (a view), after checking the device the producer reports."""
    device_of = getattr(obj, "__dlpack_device__", None)
    if device_of is not None:
        try:
            device_type, device_id = (int(x) for x in device_of())
        except Exception as exc:
            raise ValueError(_errors.dlpack_device_failed(name, exc)) from None
        if device_type not in _HOST_DEVICES:
            where = _DEVICE_NAMES.get(device_type, "non-CPU")
            raise ValueError(_errors.on_a_device(name, where, device_type, device_id))
    try:
        return np.from_dlpack(obj)
    except Exception as exc:
        also = "" if numpy_error is None else f"{numpy_error}; "
        raise ValueError(_errors.not_an_array(name, f"{also}np.from_dlpack: {exc}")) from None


def check_out(out: Any, shape: Tuple[int, ...], dtype: np.dtype,
              shape_error: Callable[[Tuple[int, ...]], str],
              inputs: Sequence[Tuple[str, Any]]) -> np.ndarray:
    """``out`` if it can receive an output of ``shape`` and ``dtype`` (native byte order),
    else the error saying why not, in this order: not an ndarray (TypeError), its shape
    (ValueError, ``shape_error(out.shape)``), its dtype (TypeError), read-only, not
    C-contiguous and aligned, sharing memory with one of ``inputs`` (``(name, array)``, as
    given; only ndarrays are looked at) (ValueError)."""
    if not isinstance(out, np.ndarray):
        raise TypeError(_errors.out_type(out))
    if out.shape != shape:
        raise ValueError(shape_error(out.shape))
    if out.dtype != dtype:
        raise TypeError(_errors.out_dtype(dtype, out.dtype))
    if not out.flags.writeable:
        raise ValueError(_errors.out_read_only())
    if not (out.flags.c_contiguous and out.flags.aligned):
        raise ValueError(_errors.out_layout())
    for name, arr in inputs:
        if isinstance(arr, np.ndarray) and np.may_share_memory(out, arr):
            raise ValueError(_errors.out_overlaps(name))
    return out
