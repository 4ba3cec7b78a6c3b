"""The result types of sfer's functions (its own module: the compiled core imports it)."""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

__all__ = ["FillResult", "GradResult", "SparseCOO"]


class GradResult(NamedTuple):
    """The two outputs of :func:`sfer.sparse_fill_empty_rows_grad`."""

    d_values: np.ndarray
    """``grad_values[reverse_index_map]``: shape ``(N,)``, ``grad_values``' dtype."""
    d_default_value: Any
    """The sum of the unreferenced ``grad_values``: a NumPy scalar of ``grad_values``' dtype."""


class FillResult(NamedTuple):
    """The four outputs of :func:`sfer.sparse_fill_empty_rows` (``SparseFillEmptyRows``)."""

    output_indices: np.ndarray
    """int64, shape ``(N_full, R)``: the input's indices grouped by row, one ``[r, 0, ..., 0]``
    in each empty row ``r``."""
    output_values: np.ndarray
    """shape ``(N_full,)``: the input's values in the same places, ``default_value`` in the
    empty rows."""
    empty_row_indicator: np.ndarray
    """bool, shape ``(dense_shape[0],)``: True where the row had no entry."""
    reverse_index_map: np.ndarray
    """int64, shape ``(N,)``: the output position of each input entry."""


class SparseCOO(NamedTuple):
    """A COO sparse tensor, as :func:`sfer.ragged_to_sparse` and :func:`sfer.from_arrow` return
    it: ``sfer.sparse_fill_empty_rows(*coo, default_value)`` takes it as it is."""

    indices: np.ndarray
    """int64, shape ``(N, R)``: the entries' coordinates, in row-major order."""
    values: np.ndarray
    """shape ``(N,)``: the entries' values (a view of the ragged values where NumPy can make
    one)."""
    dense_shape: np.ndarray
    """int64, shape ``(R,)``: the bounding shape."""
