"""Every message sfer shows a user, in one place (private).

Each function returns the text of one error: the grad op and the forward op (their compiled
entry points and their Python input modules), ``sfer.reference`` and the ``sfer`` command all
raise with these, so one rule reads the same wherever it is broken.  Tests match the texts:
change one only on purpose, with a CHANGELOG line.

This module imports nothing of sfer (it is the bottom of the package's layers).
"""

from __future__ import annotations

from typing import Any

# --------------------------------------------------------------------------- conversion


def not_an_array(name: str, why: Any) -> str:
    """``name`` could not be converted to an array (``why``: NumPy's or DLPack's words)."""
    return f"{name} could not be converted to an array: {why}"


def dlpack_device_failed(name: str, exc: BaseException) -> str:
    return not_an_array(name, f"its __dlpack_device__() failed: {exc}")


def on_a_device(name: str, where: str, device_type: int, device_id: int) -> str:
    return (f"{name} is on a {where} device (DLPack device type {device_type}, id {device_id}); "
            f"sfer reads CPU memory only: copy it to the CPU first")


def not_1d(name: str, shape: Any) -> str:
    return f"{name} must be 1-D, got shape {shape}"


# --------------------------------------------------------------------------- dtypes


def grad_values_dtype(dtype: Any, supported: str) -> str:
    """grad_values (or a dtype given to ``sfer.reference``) of a dtype the grad does not take;
    ``supported``: ``sfer._dtypes.grad_values_text()``."""
    return (f"grad_values has dtype {dtype.name} ({dtype.str}), which sfer does not support; "
            f"supported: {supported}")


def not_a_grad_values_dtype(dtype: Any, supported: str) -> str:
    return f"dtype {dtype.name} is not a grad_values dtype sfer supports; supported: {supported}"


def not_integer(name: str, dtype: Any) -> str:
    """An index argument (``reverse_index_map``, ``indices``, ``dense_shape``) that is not of
    an integer dtype; ``dtype`` is shown as ``str(dtype)``, or pass ``dtype.name``."""
    return f"{name} must have an integer dtype, got {dtype}"


def bfloat16_needs_ml_dtypes() -> str:
    return "bfloat16 needs the ml_dtypes package"


# --------------------------------------------------------------------------- entries out of range


def map_entry_out_of_range(j: Any, value: Any, n_full: Any) -> str:
    """The grad: ``reverse_index_map[j] = value`` outside ``[0, n_full)``."""
    return f"reverse_index_map[{j}] = {value} is out of range [0, {n_full})"


def row_out_of_range(i: Any, row: Any, dense_rows: Any) -> str:
    """The forward op: ``indices[i, 0] = row`` outside ``[0, dense_rows)``."""
    return f"indices[{i}, 0] = {row} is out of range [0, {dense_rows})"


# --------------------------------------------------------------------------- num_threads


def num_threads_bool(num_threads: Any) -> str:
    return f"num_threads must be None or an int, got {num_threads!r}"


def num_threads_type(num_threads: Any) -> str:
    return f"num_threads must be None or an int, got {type(num_threads).__name__} {num_threads!r}"


def num_threads_below_one(n: Any) -> str:
    return f"num_threads must be >= 1 (or None for OpenMP's default), got {n}"


# --------------------------------------------------------------------------- out=


def out_type(out: Any) -> str:
    return f"out must be a numpy.ndarray, got {type(out).__name__}"


def out_shape(n: Any, shape: Any) -> str:
    return f"out must have shape ({n},), got {shape}"


def out_dtype(want: Any, got: Any) -> str:
    return f"out must have dtype {want.name} (native byte order), got {got.name} ({got.str})"


def out_indices_shape(want: Any, shape: Any) -> str:
    return f"out must have shape {want} (the indices' shape), got {shape}"


def out_read_only() -> str:
    return "out must be writeable"


def out_layout() -> str:
    return "out must be C-contiguous and aligned"


def out_overlaps(name: str) -> str:
    return f"out must not overlap {name}"


# --------------------------------------------------------------------------- memory


def no_work_space() -> str:
    return "sfer: could not allocate the kernel's work space"


def rows_too_many(dense_rows: Any, need: Any, per_row: Any) -> str:
    """The forward op: outputs of ``dense_rows`` rows cannot exist in this address space."""
    return (f"dense_shape[0] = {dense_rows} rows: the outputs would need at least {need} bytes "
            f"({per_row} per row), more than this machine can address")


# ------------------------------------------------------------- the forward op's inputs


def wrong_rank(name: str, what: str, shape: Any) -> str:
    """``name`` of the wrong number of dimensions; ``what``: "a vector (1-D)", ..."""
    return f"{name} must be {what}, got shape {shape}"


def length_mismatch(name: str, length: Any, indices_shape: Any, rule: str) -> str:
    return f"{name} has length {length} but indices has shape {indices_shape}: {rule}"


def empty_dense_shape() -> str:
    return "dense_shape must not be empty, got shape (0,)"


def negative_rows(rows: Any, dense_shape: Any) -> str:
    return f"dense_shape[0] must be >= 0, got {rows} (dense_shape = {dense_shape})"


def default_not_text(want: str, values_dtype: Any, got: Any) -> str:
    """A default_value that is not of the string kind of ``S``/``U`` values."""
    return f"default_value must be {want} for values of dtype {values_dtype}, got dtype {got}"


def default_does_not_cast(shown: Any, values_dtype: Any, casting: str) -> str:
    return (f"default_value has dtype {shown}, which does not convert to values' dtype "
            f"{values_dtype} (NumPy's casting={casting!r} rules)")


def default_does_not_fit(shown: Any, dtype: Any, why: str) -> str:
    """``shown``: the value as the message shows it (a number, or a repr)."""
    return f"default_value = {shown} does not fit in values' dtype {dtype} ({why})"


def default_overflows(shown: Any, dtype: Any) -> str:
    return f"default_value = {shown} overflows values' dtype {dtype}"


def default_not_datetime(shown: Any, exc: BaseException) -> str:
    return f"default_value = {shown} is not a datetime64: {exc}"


# ------------------------------------------------------------- ragged and Arrow conversions


def splits_empty(name: str) -> str:
    return f"{name} must not be empty: row splits start with 0 (the splits of no rows are [0])"


def splits_not_at_zero(name: str, first: Any) -> str:
    return f"{name} must start at 0, got {name}[0] = {first}"


def splits_decrease(name: str, i: Any, before: Any, after: Any) -> str:
    """``name[i] = after`` is below ``name[i - 1] = before``."""
    return (f"{name} must never decrease, got {name}[{i - 1}] = {before} followed by "
            f"{name}[{i}] = {after}")


def splits_wrong_end(name: str, last: Any, length: Any, of: str) -> str:
    """The last split is not the length of the next level (``of``: what that level is)."""
    return (f"{name} must end at the length of {of} ({length}), got {name}[-1] = {last}")


def splits_too_large(name: str, i: Any, value: Any) -> str:
    return f"{name}[{i}] = {value} is beyond int64's maximum (2**63 - 1)"


def values_scalar(shape: Any) -> str:
    return f"values must be at least 1-D (one item per entry), got shape {shape}"


def sparse_not_rank_2(shape: Any) -> str:
    return (f"sparse_to_ragged takes a rank-2 sparse tensor: dense_shape must have length 2, "
            f"got dense_shape of shape {shape}")


def sparse_row_out_of_order(i: Any, row: Any, before: Any) -> str:
    return (f"indices must be in row-major order: indices[{i}, 0] = {row} follows row "
            f"{before}")


def sparse_not_right_ragged(i: Any, col: Any, want: Any) -> str:
    return (f"the sparse tensor is not right-ragged (each row's columns must be 0, 1, 2, ...): "
            f"indices[{i}, 1] = {col}, expected {want}")


def arrow_type(got: Any) -> str:
    return (f"from_arrow takes a pyarrow ListArray, LargeListArray, FixedSizeListArray, a "
            f"ChunkedArray of these or a polars List Series, got {got}")


def arrow_null_item(row: Any, position: Any) -> str:
    return (f"the list column has a null item at row {row}, position {position}: sfer's values "
            f"have no nulls (fill or drop them first, e.g. pyarrow.compute.fill_null)")


def arrow_needs_pyarrow(what: str) -> str:
    return (f"{what} needs pyarrow: pip install 'sfer[arrow]' (or pip install pyarrow)")
