"""Arrow list columns in and out (private: call ``sfer.from_arrow`` and ``sfer.to_arrow``).

pyarrow is imported inside the functions only (``import sfer`` never imports it, nor polars):
it is the optional extra ``sfer[arrow]``.  A polars ``List`` Series comes in through its
``to_arrow()``.

Reading a list array: each list level gives one splits vector, ``offsets - offsets[0]`` (a
sliced array's offsets need not start at 0); a null list is an empty row (its offsets may
still span items, which ``flatten()`` then leaves out).  ``flatten()`` takes the next level
without a copy where it can (no null list spanning items); the leaf is read with
``to_numpy(zero_copy_only=False)``: a view of Arrow's buffer for numbers without nulls.  A
null item is a ValueError naming its row and position.  A ChunkedArray's chunks are read one
by one and joined (the values are then copied, unless there is a single chunk).
"""

from __future__ import annotations

from typing import Any, List, Tuple

import numpy as np

from sfer import _errors
from sfer._ragged import ragged_to_sparse, sparse_to_ragged
from sfer._result import SparseCOO

__all__ = ["from_arrow", "ragged_from_arrow", "to_arrow"]

_INT32_MAX = 2**31 - 1


def _pyarrow(what: str) -> Any:
    try:
        import pyarrow  # type: ignore  # (no stubs; absent without sfer[arrow])
    except ImportError:
        raise ImportError(_errors.arrow_needs_pyarrow(what)) from None
    return pyarrow


def _is_list_type(pa: Any, t: Any) -> bool:
    return bool(pa.types.is_list(t) or pa.types.is_large_list(t)
                or pa.types.is_fixed_size_list(t))


def _chunks(column: Any, pa: Any) -> Tuple[List[Any], Any]:
    """The column's Arrow chunks and its type; TypeError for anything but a list column."""
    if type(column).__module__.split(".")[0] == "polars" and hasattr(column, "to_arrow"):
        column = column.to_arrow()
    if isinstance(column, pa.ChunkedArray):
        chunks = list(column.chunks) or [pa.array([], type=column.type)]
    elif isinstance(column, pa.Array):
        chunks = [column]
    else:
        raise TypeError(_errors.arrow_type(type(column).__name__))
    if not _is_list_type(pa, column.type):
        raise TypeError(_errors.arrow_type(f"an Arrow column of type {column.type}"))
    return chunks, column.type


def _splits_of(arr: Any, pa: Any) -> np.ndarray:
    """One list level's splits (int64, starting at 0); a null list is an empty row."""
    if pa.types.is_fixed_size_list(arr.type):
        lengths = np.full(len(arr), arr.type.list_size, dtype=np.int64)
    else:
        offsets = np.asarray(arr.offsets)
        if arr.null_count == 0:
            return offsets.astype(np.int64) - np.int64(offsets[0] if offsets.size else 0)
        lengths = np.diff(offsets).astype(np.int64)
    if arr.null_count:
        lengths[np.asarray(arr.is_null())] = 0
    splits = np.empty(len(arr) + 1, dtype=np.int64)
    splits[0] = 0
    np.cumsum(lengths, out=splits[1:])
    return splits


def _null_item(splits: List[np.ndarray], leaf: Any, first_row: int) -> ValueError:
    """The error of the leaf's first null item: its row and its position in the row (one
    number per ragged dimension)."""
    p = int(np.flatnonzero(np.asarray(leaf.is_null()))[0])
    where = []
    for s in reversed(splits):
        r = int(np.searchsorted(s, p, side="right")) - 1
        where.append(p - int(s[r]))
        p = r
    pos = where[0] if len(where) == 1 else tuple(reversed(where))
    return ValueError(_errors.arrow_null_item(first_row + p, pos))


def _read_chunk(arr: Any, pa: Any, first_row: int) -> Tuple[np.ndarray, List[np.ndarray]]:
    """One Arrow list array as (values, splits of every level, outermost first)."""
    splits: List[np.ndarray] = []
    while _is_list_type(pa, arr.type):
        splits.append(_splits_of(arr, pa))
        arr = arr.flatten()  # the slice and the null lists accounted for
    if arr.null_count:
        raise _null_item(splits, arr, first_row)
    return arr.to_numpy(zero_copy_only=False), splits


def ragged_from_arrow(column: Any) -> Tuple[np.ndarray, List[np.ndarray]]:
    """An Arrow (or polars) list column as ``(values, row_splits)``: the splits of every list
    level, outermost first (what :func:`sfer.ragged_to_sparse` takes)."""
    pa = _pyarrow("sfer.from_arrow")
    chunks, _ = _chunks(column, pa)
    parts = []
    first_row = 0
    for chunk in chunks:
        parts.append(_read_chunk(chunk, pa, first_row))
        first_row += len(chunk)
    if len(parts) == 1:
        return parts[0]
    values = np.concatenate([v for v, _ in parts])
    levels = []
    for d in range(len(parts[0][1])):
        pieces = [np.zeros(1, dtype=np.int64)]
        base = 0
        for _, splits in parts:
            pieces.append(splits[d][1:] + base)
            base += int(splits[d][-1])
        levels.append(np.concatenate(pieces))
    return values, levels


def from_arrow(column: Any, *, num_threads: Any = None) -> SparseCOO:
    """An Arrow list column as a COO sparse tensor: :func:`sfer.ragged_to_sparse` of its
    values and the row splits of each list level.

    Parameters
    ----------
    column : pyarrow.Array, pyarrow.ChunkedArray or polars.Series
        A ``ListArray``, ``LargeListArray`` or ``FixedSizeListArray`` (nested lists: one more
        ragged dimension per level), a ``ChunkedArray`` of these, or a polars ``List``
        Series.  Sliced arrays work; a null list is an empty row.
    num_threads : int, optional
        As for :func:`sfer.ragged_to_sparse`.

    Returns
    -------
    SparseCOO
        As :func:`sfer.ragged_to_sparse` returns it; the values are a view of Arrow's buffer
        where Arrow allows (numbers without nulls, a single chunk).

    Raises
    ------
    TypeError
        Anything but a list column.
    ValueError
        A null item (the message names its row and position).
    ImportError
        Without pyarrow (``pip install 'sfer[arrow]'``).
    """
    values, splits = ragged_from_arrow(column)
    return ragged_to_sparse(values, splits, num_threads=num_threads)


def to_arrow(indices: Any, values: Any, dense_shape: Any, *, num_threads: Any = None) -> Any:
    """A rank-2 COO sparse tensor as a ``pyarrow.ListArray``: one list per row, in order, an
    empty row an empty list.

    Parameters
    ----------
    indices, values, dense_shape
        As :func:`sfer.sparse_to_ragged` takes them (rows in order, right-ragged).
    num_threads : int, optional
        As for :func:`sfer.sparse_to_ragged`.

    Returns
    -------
    pyarrow.ListArray
        A ``pyarrow.LargeListArray`` when the entries do not fit Arrow's 32-bit offsets.

    Raises
    ------
    ValueError, IndexError
        As :func:`sfer.sparse_to_ragged` raises them.
    """
    pa = _pyarrow("sfer.to_arrow")
    vals, splits = sparse_to_ragged(indices, values, dense_shape, num_threads=num_threads)
    items = pa.array(vals)
    if splits[-1] <= _INT32_MAX:
        return pa.ListArray.from_arrays(pa.array(splits.astype(np.int32)), items)
    return pa.LargeListArray.from_arrays(pa.array(splits), items)
