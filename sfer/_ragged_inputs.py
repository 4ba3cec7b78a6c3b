"""The ragged conversions' input rules (private), shared by the compiled module
(``sfer._ragged``, its slow path) and the NumPy specification (``sfer.reference``), so that
both accept and reject the same inputs with the same words.

``ragged_inputs`` converts and rejects by dtype and shape; the splits' values (a start at 0,
never decreasing, an end at the next level's length) are checked by the kernel in parallel and
by :func:`check_splits` here, which ``sfer.reference`` uses, with the same messages and the
same order: the innermost level first (as TensorFlow's ``from_nested_row_splits`` builds its
levels), and in each level: empty, the start, the first decrease, the end.

``sparse_inputs`` does the same for ``sparse_to_ragged``; its rows and columns are checked
entry by entry, in order (the kernel's scan, :func:`check_sparse_entries` here).
"""

from __future__ import annotations

from typing import Any, List, Optional, Tuple

import numpy as np

from sfer import _errors
from sfer._convert import as_array, check_out

__all__ = ["check_sparse_entries", "check_splits", "indices_out", "ragged_inputs",
           "sparse_inputs", "splits_names"]

_INT64_MAX = np.iinfo(np.int64).max


def _is_scalar(x: Any) -> bool:
    return isinstance(x, (int, np.integer)) or (isinstance(x, np.ndarray) and x.ndim == 0)


def _split_levels(row_splits: Any) -> List[Any]:
    """``row_splits`` as a list of levels: one splits vector (an array or a sequence of ints)
    is one level, a sequence of vectors several (outermost first); ``[]`` is one (empty)
    vector."""
    if isinstance(row_splits, (list, tuple)) and row_splits and not _is_scalar(row_splits[0]):
        return list(row_splits)
    return [row_splits]


def splits_names(k: int, nested: bool) -> List[str]:
    """How messages name the levels: ``row_splits``, or ``row_splits[d]`` for a sequence."""
    return [f"row_splits[{d}]" for d in range(k)] if nested else ["row_splits"]


def _as_splits(obj: Any, name: str) -> np.ndarray:
    """One splits vector as int64 (C-contiguous, aligned); a uint64 beyond int64 is an error."""
    arr = _as_index_array(obj, name)
    if arr.ndim != 1:
        raise ValueError(_errors.not_1d(name, arr.shape))
    if arr.dtype.kind == "u" and arr.dtype.itemsize == 8 and arr.size:
        big = np.flatnonzero(arr > _INT64_MAX)
        if big.size:
            raise ValueError(_errors.splits_too_large(name, int(big[0]), int(arr[big[0]])))
    out = np.ascontiguousarray(arr, dtype=np.int64)
    return out if out.flags.aligned else out.copy()


def ragged_inputs(values: Any, row_splits: Any) -> Tuple[np.ndarray, List[np.ndarray],
                                                         List[str]]:
    """``values`` as an array of at least one dimension (unchanged, a view where
    :func:`sfer._convert.as_array` makes one) and the splits as int64 vectors, outermost
    first, with their names."""
    vals = values if isinstance(values, np.ndarray) else as_array(values, "values")
    levels = _split_levels(row_splits)
    nested = len(levels) > 1 or levels[0] is not row_splits
    names = splits_names(len(levels), nested)
    splits = [_as_splits(s, n) for s, n in zip(levels, names)]
    if vals.ndim == 0:
        raise ValueError(_errors.values_scalar(vals.shape))
    return vals, splits, names


def indices_out(out: Any, shape: Tuple[int, int], values: List[Any],
                splits: List[Any]) -> np.ndarray:
    """``out``, where ``ragged_to_sparse`` writes ``indices``, if it can receive them (the rules
    of :func:`sfer._convert.check_out`): int64 of ``shape``, sharing no memory with the values
    or a splits vector (``values``, ``splits``: the arrays to look at, as given and as
    converted)."""
    return check_out(out, shape, np.dtype(np.int64),
                     lambda got: _errors.out_indices_shape(shape, got),
                     [("values", v) for v in values] + [("row_splits", a) for a in splits])


def check_splits(splits: List[np.ndarray], names: List[str], n_values: int) -> None:
    """The splits' values, innermost level first: ValueError naming the level."""
    k = len(splits)
    for d in range(k - 1, -1, -1):
        s, name = splits[d], names[d]
        if s.shape[0] == 0:
            raise ValueError(_errors.splits_empty(name))
        if s[0] != 0:
            raise ValueError(_errors.splits_not_at_zero(name, int(s[0])))
        down = np.flatnonzero(s[1:] < s[:-1])
        if down.size:
            i = int(down[0]) + 1
            raise ValueError(_errors.splits_decrease(name, i, int(s[i - 1]), int(s[i])))
        length, of = _next_level(splits, names, d, n_values)
        if s[-1] != length:
            raise ValueError(_errors.splits_wrong_end(name, int(s[-1]), length, of))


def _next_level(splits: List[np.ndarray], names: List[str], d: int, n_values: int
                ) -> Tuple[int, str]:
    """The length the level ``d`` must end at, and what it is, for the message."""
    if d == len(splits) - 1:
        return n_values, "values (values.shape[0])"
    nxt = splits[d + 1]
    return max(nxt.shape[0] - 1, 0), f"{names[d + 1]}'s rows (its length minus 1)"


def sparse_inputs(indices: Any, values: Any, dense_shape: Any
                  ) -> Tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """The inputs of ``sparse_to_ragged``, converted and checked by dtype and shape, the
    indices as int64 (C-contiguous) and the original indices (for messages); the rows."""
    idx = _as_index_array(indices, "indices")
    vals = values if isinstance(values, np.ndarray) else as_array(values, "values")
    shape = _as_index_array(dense_shape, "dense_shape")
    if shape.ndim != 1 or shape.shape[0] != 2:
        raise ValueError(_errors.sparse_not_rank_2(shape.shape))
    if idx.ndim != 2 or idx.shape[1] != 2:
        raise ValueError(_errors.wrong_rank("indices", "a matrix [N, 2]", idx.shape))
    if vals.ndim != 1:
        raise ValueError(_errors.wrong_rank("values", "a vector (1-D)", vals.shape))
    if vals.shape[0] != idx.shape[0]:
        raise ValueError(_errors.length_mismatch("values", vals.shape[0], idx.shape,
                                                 "len(values) must equal indices.shape[0]"))
    rows = int(shape[0])
    if rows < 0:
        raise ValueError(_errors.negative_rows(rows, shape.tolist()))
    if rows > _INT64_MAX:
        raise MemoryError(_errors.rows_too_many(rows, rows * 8, 8))
    ind = np.ascontiguousarray(idx, dtype=np.int64)  # uint64 beyond int64: negative, bad
    if not ind.flags.aligned:
        ind = ind.copy()
    return ind, vals, idx, rows


def _as_index_array(obj: Any, name: str) -> np.ndarray:
    """An integer array (an empty non-integer sequence becomes int64); TypeError otherwise."""
    arr = obj if isinstance(obj, np.ndarray) else as_array(obj, name)
    if arr.size == 0 and arr.dtype.kind not in "iu":
        arr = arr.astype(np.int64)
    if arr.dtype.kind not in "iu":
        raise TypeError(_errors.not_integer(name, arr.dtype))
    return arr


def first_bad_entry(ind: np.ndarray, rows: int) -> Optional[int]:
    """The first entry of ``ind`` (int64 [N, 2]) that breaks a rule of
    :func:`check_sparse_entries`, or None."""
    r, c = ind[:, 0], ind[:, 1]
    prev_r = np.concatenate(([-1], r[:-1]))
    prev_c = np.concatenate(([-1], c[:-1]))
    want = np.where(r == prev_r, prev_c + 1, 0)
    bad = (r < 0) | (r >= rows) | (r < prev_r) | (c != want)
    where = np.flatnonzero(bad)
    return int(where[0]) if where.size else None


def entry_error(ind: np.ndarray, given: np.ndarray, i: int, rows: int) -> Exception:
    """The error of entry ``i``, the first bad one: its row out of range, out of order, or
    its column not the next one (``given``: the indices as the caller gave them)."""
    r = int(ind[i, 0])
    prev_r = int(ind[i - 1, 0]) if i > 0 else -1
    if not 0 <= r < rows:
        return IndexError(_errors.row_out_of_range(i, int(given[i, 0]), rows))
    if r < prev_r:
        return ValueError(_errors.sparse_row_out_of_order(i, int(given[i, 0]), prev_r))
    want = int(ind[i - 1, 1]) + 1 if r == prev_r else 0
    return ValueError(_errors.sparse_not_right_ragged(i, int(given[i, 1]), want))


def check_sparse_entries(ind: np.ndarray, given: np.ndarray, rows: int) -> None:
    """Each entry in order: its row in ``[0, rows)`` (IndexError), rows never decreasing, and
    columns ``0, 1, 2, ...`` within each row (right-ragged, TensorFlow's rule)."""
    i = first_bad_entry(ind, rows)
    if i is not None:
        raise entry_error(ind, given, i, rows)
