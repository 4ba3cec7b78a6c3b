"""The one table of the dtypes sfer supports (kernel dispatch, error messages, CLI choices,
docs, tests).

``GRAD_VALUES`` lists the dtypes of the grad's ``grad_values`` (and so of ``d_values``), one
tuple each; setup.py reads it (as a literal, without importing sfer) and generates the grad's
dtype dispatch from it (sfer/_grad_dispatch.pxi.tp).  Adding a value dtype to the grad whose
kernel item type exists is one row here, plus tests.

bfloat16 is optional: it exists when ``ml_dtypes`` is installed.
"""

from __future__ import annotations

from typing import Any, Optional, Tuple

import numpy as np

from sfer import _errors

__all__ = ["BFLOAT16", "GRAD_INDEXES", "GRAD_VALUES", "GRAD_VALUE_NAMES", "grad_value_name",
           "grad_values_text", "resolve"]

BFLOAT16: Optional[np.dtype]
try:
    import ml_dtypes
except ImportError:  # pragma: no cover - depends on the environment
    BFLOAT16 = None
else:
    BFLOAT16 = np.dtype(ml_dtypes.bfloat16)

#: NumPy's first type number of a dtype it does not build in (NPY_USERDEF)
NPY_USERDEF = 256

#: The dtypes of ``grad_values`` that the grad op takes, in the order the documentation lists
#: them: (name, NumPy kind, item size, the kernel's item type).  The kind is NumPy's ("V" for
#: a dtype NumPy does not build in, recognised by its name); the item type is a member of the
#: fused ``val_t`` (sfer/_common.pxd): the bits the kernel moves and sums (signed and unsigned
#: integers of one size share one).  "bfloat16" needs ml_dtypes.
GRAD_VALUES: Tuple[Tuple[str, str, int, str], ...] = (
    ("float16", "f", 2, "sfer_f16"),
    ("float32", "f", 4, "float"),
    ("float64", "f", 8, "double"),
    ("complex64", "c", 8, "sfer_c64"),
    ("complex128", "c", 16, "sfer_c128"),
    ("int8", "i", 1, "uint8_t"),
    ("int16", "i", 2, "uint16_t"),
    ("int32", "i", 4, "uint32_t"),
    ("int64", "i", 8, "uint64_t"),
    ("uint8", "u", 1, "uint8_t"),
    ("uint16", "u", 2, "uint16_t"),
    ("uint32", "u", 4, "uint32_t"),
    ("uint64", "u", 8, "uint64_t"),
    ("bfloat16", "V", 2, "sfer_bf16"),
)

#: The dtypes of ``reverse_index_map``: (name, NumPy kind, item size, the kernel's entry type,
#: a member of the fused ``idx_t``).
GRAD_INDEXES: Tuple[Tuple[str, str, int, str], ...] = (
    ("int8", "i", 1, "int8_t"),
    ("int16", "i", 2, "int16_t"),
    ("int32", "i", 4, "int32_t"),
    ("int64", "i", 8, "int64_t"),
    ("uint8", "u", 1, "uint8_t"),
    ("uint16", "u", 2, "uint16_t"),
    ("uint32", "u", 4, "uint32_t"),
    ("uint64", "u", 8, "uint64_t"),
)

#: The names of ``GRAD_VALUES``, in its order.
GRAD_VALUE_NAMES: Tuple[str, ...] = tuple(row[0] for row in GRAD_VALUES)

#: The built-in value dtypes (native byte order)
_BUILTIN_VALUES = tuple((np.dtype(name), name) for name, kind, _, _ in GRAD_VALUES
                        if kind != "V")


def grad_values_text() -> str:
    """The supported ``grad_values`` dtypes, as error messages list them."""
    names = ", ".join(n for n in GRAD_VALUE_NAMES if n != "bfloat16")
    if BFLOAT16 is not None:
        return names + ", bfloat16"
    return names + " (bfloat16 with ml_dtypes installed)"


def grad_value_name(dtype: Any) -> Optional[str]:
    """The name in ``GRAD_VALUES`` of ``dtype`` (any byte order), or None when the grad does
    not take it."""
    native = dtype if dtype.isnative else dtype.newbyteorder("=")
    if BFLOAT16 is not None and native == BFLOAT16:
        return "bfloat16"
    for known, name in _BUILTIN_VALUES:
        if native == known:
            return name
    return None


def resolve(name: str) -> np.dtype:
    """The NumPy dtype of a name of ``GRAD_VALUE_NAMES`` (bfloat16 through ml_dtypes).

    Raises ValueError for bfloat16 without ml_dtypes, KeyError for another name.
    """
    if name not in GRAD_VALUE_NAMES:
        raise KeyError(name)
    if name == "bfloat16":
        if BFLOAT16 is None:
            raise ValueError(_errors.bfloat16_needs_ml_dtypes())
        return BFLOAT16
    return np.dtype(name)
