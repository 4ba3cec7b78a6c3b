"""The one table of the dtypes sfer supports (error messages, CLI choices, docs, tests).

bfloat16 is optional: it exists when ``ml_dtypes`` is installed.
"""

from __future__ import annotations

from typing import Optional, Tuple

import numpy as np

__all__ = ["BFLOAT16", "GRAD_VALUE_NAMES", "grad_values_text", "resolve"]

BFLOAT16: Optional[np.dtype]
try:
    import ml_dtypes
except ImportError:  # pragma: no cover - depends on the environment
    BFLOAT16 = None
else:
    BFLOAT16 = np.dtype(ml_dtypes.bfloat16)

#: The dtypes of ``grad_values`` (and so of ``d_values``) that the grad op takes, in the order
#: the documentation lists them; "bfloat16" needs ml_dtypes.
GRAD_VALUE_NAMES: Tuple[str, ...] = (
    "float16", "float32", "float64", "complex64", "complex128",
    "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64", "bfloat16",
)


def grad_values_text() -> str:
    """The supported ``grad_values`` dtypes, as error messages list them."""
    names = ", ".join(n for n in GRAD_VALUE_NAMES if n != "bfloat16")
    return names + (", bfloat16" if BFLOAT16 is not None else " (bfloat16 with ml_dtypes installed)")


def resolve(name: str) -> np.dtype:
    """The NumPy dtype of a name of ``GRAD_VALUE_NAMES`` (bfloat16 through ml_dtypes).

    Raises ValueError for bfloat16 without ml_dtypes, KeyError for another name.
    """
    if name not in GRAD_VALUE_NAMES:
        raise KeyError(name)
    if name == "bfloat16":
        if BFLOAT16 is None:
            raise ValueError("bfloat16 needs the ml_dtypes package")
        return BFLOAT16
    return np.dtype(name)
