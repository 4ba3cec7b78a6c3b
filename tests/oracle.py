"""The tests' view of the reference (oracle) for sfer.sparse_fill_empty_rows_grad.

The reference itself is ``sfer.reference`` (the op in plain NumPy, the exact sum rounded once,
and the error bound between it and the compiled op); the op's rules live there and only there.
This module re-exports its helpers under the names the tests use and adds ``scalar_bits``.
The tests' dtype lists are in tests/helpers.py.
"""

from __future__ import annotations

import numpy as np

from sfer import _dtypes, _errors
from sfer import reference as _ref
from sfer.reference import exact_sum, unreferenced

#: numpy's bfloat16 dtype (ml_dtypes), or None without ml_dtypes
BFLOAT16 = _dtypes.bfloat16()

__all__ = [
    "BFLOAT16",
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

native = _ref._native
#: (precision, emin, emax) of a real float dtype (or a complex's part)
float_info = _ref._float_format
#: unit in the last place of x in a real float format (ulp of 0: the smallest subnormal)
ulp = _ref._ulp
#: a Python float rounded once (nearest-even) to a real float dtype, as a numpy scalar
round_float = _ref._round_float
#: (j, v) of the first out-of-range entry of a map, or None
first_bad = _ref._first_bad
index_error_message = _errors.map_entry_out_of_range


def reference_grad(rim, g):
    """The reference's ``(d_values, d_default_value)`` (a GradResult) for ``(rim, g)``.

    Raises like the op (IndexError with the op's message on out-of-range maps).  Like the
    tests' other helpers, an empty non-integer ``rim`` (e.g. ``np.asarray([])``) is taken as
    an empty int64 map.
    """
    rim = np.asarray(rim)
    if rim.size == 0 and rim.dtype.kind not in "iu":
        rim = rim.astype(np.int64)
    return _ref.sparse_fill_empty_rows_grad(rim, g)


def scalar_bits(x) -> int:
    """Raw bits of a numpy scalar / 0-d array (for bit-exact comparison)."""
    a = np.asarray(x)
    a = a.astype(native(a.dtype))
    size = a.dtype.itemsize
    if size in (1, 2, 4, 8):
        return int(a.reshape(1).view(f"u{size}")[0])
    return int.from_bytes(a.tobytes(), "little")
