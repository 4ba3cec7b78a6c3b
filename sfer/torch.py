"""sfer's two ops for PyTorch: differentiable custom operators on CPU tensors.

``import sfer.torch`` registers ``torch.ops.sfer.sparse_fill_empty_rows`` and
``torch.ops.sfer.sparse_fill_empty_rows_grad`` with :func:`torch.library.custom_op`, each with a
fake (meta) implementation for ``torch.compile`` and an autograd formula:

* the forward op's backward is sfer's grad on the forward's ``reverse_index_map``;
* the grad op's backward (for double backward) scatters the gradients back, in torch ops.

Gradients flow to ``values`` and ``default_value`` when they have a floating or complex dtype;
integer and bool values work without them, as everywhere in torch.

Tensors are read in place (``Tensor.numpy()``) when they are CPU tensors; a tensor on another
device (CUDA, MPS, meta) is a ``ValueError``: sfer reads CPU memory only.  The results are new
tensors that share memory with the NumPy arrays sfer made (``torch.from_numpy``), never with
an input (custom operators may not return views of their inputs).

Importing this module imports torch; ``import sfer`` never does.  Install with
``pip install 'sfer[torch]'``, torch from PyTorch's CPU index (the docs say how).
"""

from __future__ import annotations

import operator
from typing import Any, Optional, Sequence, Tuple

import numpy as np
import torch  # type: ignore[import-not-found, unused-ignore]
from torch import Tensor  # type: ignore[import-not-found, unused-ignore]

import sfer

__all__ = ["fill_empty_rows", "sparse_fill_empty_rows", "sparse_fill_empty_rows_grad"]

#: torch dtypes that NumPy has no dtype for, and ml_dtypes' name of the same format.
_ML_DTYPES = {
    torch.bfloat16: "bfloat16",
    torch.float8_e4m3fn: "float8_e4m3fn",
    torch.float8_e5m2: "float8_e5m2",
    torch.float8_e4m3fnuz: "float8_e4m3fnuz",
    torch.float8_e5m2fnuz: "float8_e5m2fnuz",
}
#: Signed integer dtypes of each width, to reinterpret the bits of the dtypes above.
_BITS_NP = {1: np.int8, 2: np.int16}
_BITS_TORCH = {1: torch.int8, 2: torch.int16}


# --------------------------------------------------------------------------
# tensors <-> arrays
# --------------------------------------------------------------------------

def _check_cpu(t: Tensor, name: str) -> None:
    if t.device.type != "cpu":
        raise ValueError(f"{name} is on a {t.device.type} device ({t.device}); sfer reads CPU "
                         f"memory only: move it to the CPU first (e.g. {name}.cpu())")


def _as_numpy(t: Tensor, name: str) -> np.ndarray:
    """A CPU tensor as an ndarray: a view of its memory where NumPy has its dtype (the
    conjugate and negative bits are resolved first: a copy only where they are set)."""
    _check_cpu(t, name)
    t = t.detach().resolve_conj().resolve_neg()
    ml_name = _ML_DTYPES.get(t.dtype)
    if ml_name is None:
        return t.numpy()
    try:
        import ml_dtypes  # type: ignore[import-not-found, unused-ignore]
    except ImportError:
        raise TypeError(f"{name} has dtype {t.dtype}: sfer reads it as ml_dtypes.{ml_name}, "
                        "which needs the ml_dtypes package (pip install 'sfer[bfloat16]')"
                        ) from None
    return t.view(_BITS_TORCH[t.element_size()]).numpy().view(getattr(ml_dtypes, ml_name))


def _as_tensor(a: np.ndarray) -> Tensor:
    """An ndarray that sfer returned as a tensor, without a copy where torch can share it (a
    copy of the read-only views of an input that the forward op returns, since a custom op's
    output must not alias its inputs)."""
    if not a.flags.writeable:
        a = a.copy()
    if a.dtype.kind == "V" or a.dtype.name in _ML_DTYPES.values():
        dtype = next(k for k, v in _ML_DTYPES.items() if v == a.dtype.name)
        return torch.from_numpy(a.view(_BITS_NP[a.dtype.itemsize])).view(dtype)
    return torch.from_numpy(a)


def _input(x: Any, name: str) -> Any:
    """An argument of the public functions: a tensor's array (see _as_numpy), else ``x``."""
    return _as_numpy(x, name) if isinstance(x, torch.Tensor) else x


# --------------------------------------------------------------------------
# the forward op
# --------------------------------------------------------------------------

@torch.library.custom_op("sfer::sparse_fill_empty_rows", mutates_args=())
def _fill_op(indices: Tensor, values: Tensor, dense_shape: Sequence[int],
             default_value: Tensor, num_threads: Optional[int] = None
             ) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    result = sfer.sparse_fill_empty_rows(
        _as_numpy(indices, "indices"), _as_numpy(values, "values"),
        np.asarray(dense_shape, dtype=np.int64), _as_numpy(default_value, "default_value"),
        num_threads=num_threads)
    return tuple(_as_tensor(a) for a in result)  # type: ignore[return-value]


@_fill_op.register_fake
def _fill_fake(indices: Tensor, values: Tensor, dense_shape: Sequence[int],
               default_value: Tensor, num_threads: Optional[int] = None
               ) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    for t, name in ((indices, "indices"), (values, "values"), (default_value, "default_value")):
        _check_cpu(t, name)
    n_full = torch.library.get_ctx().new_dynamic_size()  # N + the number of empty rows
    return (indices.new_empty((n_full, indices.shape[1]), dtype=torch.int64),
            values.new_empty((n_full,)),
            values.new_empty((dense_shape[0],), dtype=torch.bool),
            values.new_empty((indices.shape[0],), dtype=torch.int64))


def _fill_setup_context(ctx: Any, inputs: Tuple[Any, ...], output: Tuple[Tensor, ...]) -> None:
    default_value, num_threads = inputs[3], inputs[4]
    ctx.save_for_backward(output[3])
    ctx.default_dtype = default_value.dtype
    ctx.num_threads = num_threads
    ctx.mark_non_differentiable(output[0], output[2], output[3])


def _fill_backward(ctx: Any, d_indices: Any, d_output_values: Tensor, d_indicator: Any,
                   d_map: Any) -> Tuple[Optional[Tensor], ...]:
    (reverse_index_map,) = ctx.saved_tensors
    d_values, d_default = _grad_op(reverse_index_map, d_output_values, ctx.num_threads)
    return None, d_values, None, d_default.to(ctx.default_dtype), None


_fill_op.register_autograd(_fill_backward, setup_context=_fill_setup_context)


# --------------------------------------------------------------------------
# the grad op
# --------------------------------------------------------------------------

@torch.library.custom_op("sfer::sparse_fill_empty_rows_grad", mutates_args=())
def _grad_op(reverse_index_map: Tensor, grad_values: Tensor,
             num_threads: Optional[int] = None) -> Tuple[Tensor, Tensor]:
    result = sfer.sparse_fill_empty_rows_grad(
        _as_numpy(reverse_index_map, "reverse_index_map"),
        _as_numpy(grad_values, "grad_values"), num_threads=num_threads)
    return _as_tensor(result.d_values), _as_tensor(np.asarray(result.d_default_value))


@_grad_op.register_fake
def _grad_fake(reverse_index_map: Tensor, grad_values: Tensor,
               num_threads: Optional[int] = None) -> Tuple[Tensor, Tensor]:
    _check_cpu(reverse_index_map, "reverse_index_map")
    _check_cpu(grad_values, "grad_values")
    return grad_values.new_empty(reverse_index_map.shape), grad_values.new_empty(())


def _grad_setup_context(ctx: Any, inputs: Tuple[Any, ...], output: Any) -> None:
    reverse_index_map, grad_values = inputs[0], inputs[1]
    ctx.save_for_backward(reverse_index_map)
    ctx.n_full = grad_values.shape[0]


def _grad_backward(ctx: Any, dd_values: Tensor, dd_default: Tensor
                   ) -> Tuple[None, Tensor, None]:
    """The grad is linear in ``grad_values`` (a gather and a sum with coefficients 0 and 1), so
    its backward is the transposed map: ``d_values`` back to the positions they came from,
    ``d_default_value`` to every unreferenced position."""
    (rim,) = ctx.saved_tensors
    rim = rim.long()
    referenced = torch.zeros(ctx.n_full, dtype=torch.bool).index_fill(0, rim, True)
    d_grad = torch.where(referenced, torch.zeros_like(dd_default), dd_default)
    return None, d_grad.index_add(0, rim, dd_values), None


_grad_op.register_autograd(_grad_backward, setup_context=_grad_setup_context)


# --------------------------------------------------------------------------
# the public functions
# --------------------------------------------------------------------------

def _numpy_error(indices: Any, values: Any, dense_shape: Any, default_value: Any,
                 num_threads: Any) -> None:
    """Raise what sfer's NumPy API raises for these arguments (called when one cannot be put in
    the op's form, so that both APIs reject the same inputs with the same errors)."""
    sfer.sparse_fill_empty_rows(_input(indices, "indices"), _input(values, "values"),
                                _input(dense_shape, "dense_shape"),
                                _input(default_value, "default_value"), num_threads=num_threads)


def _dense_shape(dense_shape: Any) -> Optional[list]:
    """``dense_shape`` as a list of Python ints (torch.Size, a sequence, an array or a tensor of
    integers), or None if it is not one (then the NumPy API names the problem)."""
    try:
        shape = np.asarray(_input(dense_shape, "dense_shape"))
    except Exception:
        return None
    if shape.ndim != 1 or shape.dtype.kind not in "iu" or shape.size == 0:
        return None
    if shape.dtype == np.uint64 and int(shape.max()) > np.iinfo(np.int64).max:
        return None
    return [operator.index(x) for x in shape.tolist()]


def _default_tensor(default_value: Any, values: Tensor) -> Optional[Tensor]:
    """``default_value`` as a 0-d tensor of ``values``' dtype, converted by sfer's own rule (a
    differentiable ``.to()`` for a tensor that needs a gradient), or None if sfer rejects it."""
    vals = _as_numpy(values, "values")
    try:  # sfer's rule, on an empty sparse tensor with one (empty) row: the default comes back
        probe = sfer.sparse_fill_empty_rows(np.empty((0, 1), np.int64), vals[:0], [1],
                                            _input(default_value, "default_value"))
    except (TypeError, ValueError, OverflowError):
        return None
    if isinstance(default_value, torch.Tensor):
        _check_cpu(default_value, "default_value")
        if default_value.dtype == values.dtype:
            return default_value
        if default_value.requires_grad:
            return default_value.to(values.dtype)
    return _as_tensor(probe.output_values[0:1].copy()).reshape(())


def _traced_args(values: Tensor, dense_shape: Any, default_value: Any, indices: Tensor
                 ) -> Tuple[Tensor, Tensor, list, Tensor]:
    """The op's arguments while torch.compile traces the call: tensors are taken as they are,
    ``dense_shape`` as a sequence of ints, and a Python ``default_value`` becomes a 0-d tensor
    of ``values``' dtype by torch's conversion (the compiled op itself checks the rest when it
    runs, with the NumPy API's errors)."""
    if isinstance(dense_shape, torch.Tensor):
        dense_shape = dense_shape.tolist()
    if isinstance(default_value, torch.Tensor):
        default = default_value.to(values.dtype)
    else:
        default = torch.full((), default_value, dtype=values.dtype)
    return indices, values, list(dense_shape), default


def _tensor_arg(x: Any, name: str) -> Optional[Tensor]:
    """An array argument as a CPU tensor: a tensor as it is (after the device check), anything
    else through sfer's conversion of NumPy's rules, or None if it does not convert."""
    if isinstance(x, torch.Tensor):
        _check_cpu(x, name)
        return x
    try:
        arr = np.asarray(x)
        if arr.dtype.kind not in "biufc" or arr.ndim == 0:
            return None
        return _as_tensor(arr)
    except Exception:
        return None


def sparse_fill_empty_rows(indices: Any, values: Any, dense_shape: Any, default_value: Any,
                           *, num_threads: Optional[int] = None) -> sfer.FillResult:
    """:func:`sfer.sparse_fill_empty_rows` on tensors, differentiable.

    Parameters
    ----------
    indices : Tensor of integers, shape (N, R)
        TensorFlow's layout, one row per entry (a torch COO tensor's ``indices()`` transposed:
        :func:`fill_empty_rows` takes the sparse tensor itself).
    values : Tensor, shape (N,)
        Any dtype torch and sfer share; gradients flow to floating and complex values.
    dense_shape : sequence of int, or a 1-D integer tensor or array
    default_value : scalar or 0-d Tensor
        Converted to ``values``' dtype by sfer's rule; a 0-d tensor receives a gradient.
    num_threads : int, optional
        As for :func:`sfer.sparse_fill_empty_rows`.

    Returns
    -------
    sfer.FillResult
        Of tensors: ``output_indices`` (int64, ``[N_full, R]``), ``output_values``
        (``[N_full]``, differentiable), ``empty_row_indicator`` (bool) and
        ``reverse_index_map`` (int64, ``[N]``), the same bits as the NumPy API's.

    Raises
    ------
    TypeError, ValueError, IndexError, MemoryError
        What :func:`sfer.sparse_fill_empty_rows` raises for the same arguments; also a
        ``ValueError`` for a tensor that is not on the CPU.
    """
    if torch.compiler.is_compiling():  # traced by dynamo: no NumPy here (see _traced_args)
        return sfer.FillResult(*_fill_op(*_traced_args(values, dense_shape, default_value,
                                                       indices), num_threads))
    idx, vals = _tensor_arg(indices, "indices"), _tensor_arg(values, "values")
    shape = _dense_shape(dense_shape)
    default = None if vals is None else _default_tensor(default_value, vals)
    if idx is None or vals is None or shape is None or default is None:
        _numpy_error(indices, values, dense_shape, default_value, num_threads)
        raise TypeError("sfer.torch.sparse_fill_empty_rows: unsupported arguments")
    return sfer.FillResult(*_fill_op(idx, vals, shape, default, num_threads))


def sparse_fill_empty_rows_grad(reverse_index_map: Any, grad_values: Any, *,
                                num_threads: Optional[int] = None) -> sfer.GradResult:
    """:func:`sfer.sparse_fill_empty_rows_grad` on tensors, differentiable in ``grad_values``.

    Returns
    -------
    sfer.GradResult
        Of tensors: ``d_values`` (``[N]``) and ``d_default_value`` (0-d), of
        ``grad_values``' dtype, the same bits as the NumPy API's.

    Raises
    ------
    TypeError, ValueError, IndexError
        What :func:`sfer.sparse_fill_empty_rows_grad` raises for the same arguments; also a
        ``ValueError`` for a tensor that is not on the CPU.
    """
    rim = _tensor_arg(reverse_index_map, "reverse_index_map")
    grad = _tensor_arg(grad_values, "grad_values")
    if rim is None or grad is None:
        sfer.sparse_fill_empty_rows_grad(_input(reverse_index_map, "reverse_index_map"),
                                         _input(grad_values, "grad_values"),
                                         num_threads=num_threads)
        raise TypeError("sfer.torch.sparse_fill_empty_rows_grad: unsupported arguments")
    return sfer.GradResult(*_grad_op(rim, grad, num_threads))


def fill_empty_rows(sparse: Tensor, default_value: Any, *,
                    num_threads: Optional[int] = None) -> Tuple[Tensor, Tensor]:
    """``tf.sparse.fill_empty_rows`` for a torch sparse COO tensor.

    Parameters
    ----------
    sparse : Tensor
        A sparse COO tensor (``layout=torch.sparse_coo``) with no dense dimensions.  Its
        entries are taken in their stored order: a coalesced tensor's are sorted row-major
        and unique, and the result is then coalesced too; an uncoalesced tensor's entries
        (duplicates included) keep their order within each row, as in TensorFlow, and the
        result is uncoalesced.  ``.coalesce()`` first sorts them and sums duplicates.
    default_value : scalar or 0-d Tensor
        The value of the entry ``[r, 0, ..., 0]`` added to each empty row ``r``.

    Returns
    -------
    (Tensor, Tensor)
        The filled sparse COO tensor (same shape; differentiable in the values and in
        ``default_value``) and ``empty_row_indicator`` (bool, one per row).

    Raises
    ------
    TypeError
        ``sparse`` is not a sparse COO tensor.
    ValueError
        It has dense dimensions, or needs a gradient but is not coalesced (torch gives no
        gradient to the values of an uncoalesced tensor: call ``.coalesce()`` first).
    """
    if not isinstance(sparse, torch.Tensor) or sparse.layout != torch.sparse_coo:
        raise TypeError("fill_empty_rows: sparse must be a sparse COO tensor (torch.sparse_coo)")
    _check_cpu(sparse, "sparse")
    if sparse.dense_dim() != 0:
        raise ValueError("fill_empty_rows: sparse must have no dense dimensions, got "
                         f"dense_dim() = {sparse.dense_dim()}")
    coalesced = sparse.is_coalesced()
    if coalesced:
        indices, values = sparse.indices(), sparse.values()   # values() is differentiable
    elif sparse.requires_grad:
        raise ValueError("fill_empty_rows: torch gives no gradient to the values of an "
                         "uncoalesced sparse tensor: call .coalesce() first")
    else:
        indices, values = sparse._indices(), sparse._values()
    out: Any = sparse_fill_empty_rows(indices.t(), values, list(sparse.shape), default_value,
                                 num_threads=num_threads)
    filled = torch.sparse_coo_tensor(out.output_indices.t(), out.output_values, sparse.shape,
                                     is_coalesced=coalesced)
    return filled, out.empty_row_indicator
