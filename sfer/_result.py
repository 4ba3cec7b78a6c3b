"""The result type of sfer's functions (its own module: the compiled core imports it)."""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

__all__ = ["GradResult"]


class GradResult(NamedTuple):
    """The two outputs of :func:`sfer.sparse_fill_empty_rows_grad`."""

    d_values: np.ndarray
    """``grad_values[reverse_index_map]``: shape ``(N,)``, ``grad_values``' dtype."""
    d_default_value: Any
    """The sum of the unreferenced ``grad_values``: a NumPy scalar of ``grad_values``' dtype."""
