"""The one table of the dtypes sfer supports (kernel dispatch, error messages, CLI choices,
docs, tests), and sfer's own view of the dtypes of ``ml_dtypes``.

``GRAD_VALUES`` lists the dtypes of the grad's ``grad_values`` (and so of ``d_values``), one
tuple each; setup.py reads it (as a literal, without importing sfer) and generates the grad's
dtype dispatch from it (sfer/_grad_dispatch.pxi.tp).  Adding a value dtype to the grad whose
kernel item type exists is one row here, plus tests.

``ml_dtypes`` (bfloat16, float8, int4, ...) is optional and never imported by ``import sfer``:
loading its extension costs more than all of sfer.  An array of one of its dtypes can only
exist once ``ml_dtypes`` was imported by someone, so its dtypes are recognised from the dtype
object alone (the scalar type's module and name, :func:`ml_kind`), and ``ml_dtypes`` itself is
imported only where sfer must *make* such a dtype from a name (:func:`resolve`, the CLI).

Which ``default_value`` a values dtype accepts is sfer's rule, not a dependency's: ml_dtypes'
integer types follow NumPy's integer table and its float types NumPy's float table, whatever
kind and casts a given ml_dtypes release declares (0.7 declares ``float8_e5m2`` as kind "f"
and the others as kind "V", and dropped int4's cast from float64).
"""

from __future__ import annotations

import importlib
import importlib.util
import re
from typing import Optional, Tuple

import numpy as np

from sfer import _errors

__all__ = ["GRAD_INDEXES", "GRAD_VALUES", "GRAD_VALUE_NAMES", "NPY_USERDEF", "bfloat16",
           "grad_values_text", "is_bfloat16", "is_grad_value_dtype", "logical_kind", "ml_kind",
           "resolve"]

#: NumPy's first type number of a dtype it does not build in (NPY_USERDEF)
NPY_USERDEF = 256

#: The dtypes of ``grad_values`` that the grad op takes, in the order the documentation lists
#: them: (name, NumPy kind, item size, the kernel's item type).  The kind is NumPy's ("V" for
#: a dtype NumPy does not build in, recognised by :func:`is_grad_value_dtype`); the item type
#: is a member of the fused ``val_t`` (sfer/_common.pxd): the bits the kernel moves and sums
#: (signed and unsigned integers of one size share one).  "bfloat16" needs ml_dtypes.
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

_BUILTIN_GRAD_VALUES = frozenset(np.dtype(name) for name, kind, _, _ in GRAD_VALUES
                                 if kind != "V")

# ml_dtypes' scalar type names -> the NumPy kind whose rules they follow: int1/2/4 and
# uint1/2/4 are integers, bfloat16 and the floatN_* formats are floats, complex32 and
# bcomplex32 are complex.  Matched by name, so future formats of the same families fit.
_ML_KINDS = ((re.compile(r"int[0-9]+"), "i"), (re.compile(r"uint[0-9]+"), "u"),
             (re.compile(r"(bfloat16|float[0-9]+(_[a-z0-9]+)?)"), "f"),
             (re.compile(r"b?complex[0-9]+"), "c"))


def ml_kind(dtype: np.dtype) -> Optional[str]:
    """"i", "u", "f" or "c" for a dtype of ml_dtypes (recognised without importing it), None
    for any other dtype."""
    t = dtype.type
    if (getattr(t, "__module__", None) or "").split(".")[0] != "ml_dtypes":
        return None
    for pattern, kind in _ML_KINDS:
        if pattern.fullmatch(t.__name__):
            return kind
    return None


def logical_kind(dtype: np.dtype) -> str:
    """The kind sfer's rules treat ``dtype`` as: NumPy's ``dtype.kind``, except for ml_dtypes'
    dtypes, which take the kind of their family (int4 "i", float8_e4m3fn "f", ...)."""
    return ml_kind(dtype) or dtype.kind


def is_bfloat16(dtype: np.dtype) -> bool:
    """True for ml_dtypes' bfloat16 (any byte order), without importing ml_dtypes."""
    return ml_kind(dtype) == "f" and dtype.type.__name__ == "bfloat16"


def is_grad_value_dtype(dtype: np.dtype) -> bool:
    """True if the grad op takes grad_values of ``dtype`` (any byte order)."""
    native = dtype if dtype.isnative else dtype.newbyteorder("=")
    return native in _BUILTIN_GRAD_VALUES or is_bfloat16(dtype)


def ml_dtypes_installed() -> bool:
    """Whether ml_dtypes can be imported (found on the path; not imported here)."""
    try:
        return importlib.util.find_spec("ml_dtypes") is not None
    except (ImportError, ValueError):  # pragma: no cover - a broken installation
        return False


def bfloat16() -> Optional[np.dtype]:
    """ml_dtypes' bfloat16 dtype (importing ml_dtypes), or None without ml_dtypes."""
    try:
        ml_dtypes = importlib.import_module("ml_dtypes")
    except ImportError:
        return None
    return np.dtype(ml_dtypes.bfloat16)


def grad_values_text() -> str:
    """The supported ``grad_values`` dtypes, as error messages list them."""
    names = ", ".join(n for n in GRAD_VALUE_NAMES if n != "bfloat16")
    return names + (", bfloat16" if ml_dtypes_installed()
                    else " (bfloat16 with ml_dtypes installed)")


def resolve(name: str) -> np.dtype:
    """The NumPy dtype of a name of ``GRAD_VALUE_NAMES`` (bfloat16 through ml_dtypes, which
    this imports).

    Raises ValueError for bfloat16 without ml_dtypes, KeyError for another name.
    """
    if name not in GRAD_VALUE_NAMES:
        raise KeyError(name)
    if name == "bfloat16":
        dtype = bfloat16()
        if dtype is None:
            raise ValueError(_errors.bfloat16_needs_ml_dtypes())
        return dtype
    return np.dtype(name)


def __getattr__(name: str) -> Optional[np.dtype]:
    # BFLOAT16, the dtype or None, as an attribute (older callers and the tests): importing
    # ml_dtypes only when it is asked for.
    if name == "BFLOAT16":
        return bfloat16()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
