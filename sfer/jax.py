"""sfer's two ops for JAX: differentiable (reverse mode), under ``jit`` and ``vmap`` too.

* :func:`sparse_fill_empty_rows` has a data-dependent output length, ``N_full = N`` plus the
  number of empty rows.  With concrete ``indices`` (no ``jit``/``vmap`` tracing them) and
  ``size=None`` the outputs have exactly ``N_full`` entries.  Under ``jit`` or ``vmap`` a static
  ``size`` is required (as for ``jnp.nonzero(size=...)``): the outputs then have ``size`` entries,
  the first ``n_out`` of them real, the rest padding (see :class:`PaddedFillResult`).
  ``dense_shape`` must always be static: ``empty_row_indicator`` has ``dense_shape[0]``
  entries.
* Gradients flow to ``values`` and ``default_value`` (floating and complex dtypes) through
  :func:`jax.custom_vjp`; the backward runs sfer's grad through :func:`jax.pure_callback`.
  Forward mode (``jax.jvp``) is not defined.
* The kernels run on the host through :func:`jax.pure_callback` (``vmap`` calls them once per
  batch element).  Under ``jit`` a bad input is reported when the callback runs, as JAX
  reports errors raised in callbacks (the NumPy API's message inside a ``JaxRuntimeError``);
  the checks that need only shapes and dtypes raise the NumPy API's own errors while tracing.

Integer outputs have JAX's default integer dtype: int64 with ``jax_enable_x64``, else int32.
Importing this module imports JAX; ``import sfer`` never does (``pip install 'sfer[jax]'``).
"""

from __future__ import annotations

import functools
import operator
from typing import Any, NamedTuple, Optional, Tuple

import jax  # type: ignore[import-not-found, unused-ignore]
import jax.numpy as jnp  # type: ignore[import-not-found, unused-ignore]
import numpy as np

import sfer

__all__ = ["PaddedFillResult", "sparse_fill_empty_rows", "sparse_fill_empty_rows_grad"]


class PaddedFillResult(NamedTuple):
    """The outputs of :func:`sparse_fill_empty_rows`: :class:`sfer.FillResult`'s four, padded
    to ``size`` entries when ``size`` is given, and their count ``n_out``.

    Padding entries (positions ``n_out`` to ``size - 1``) have the index
    ``[dense_shape[0], 0, ..., 0]``, one row past the last, so that ``output_indices`` stays
    sorted by row and ``jax.ops.segment_sum(..., num_segments=dense_shape[0])`` drops them,
    and the value zero.  ``empty_row_indicator`` and ``reverse_index_map`` are never padded.
    """

    output_indices: jax.Array
    """Integer, shape ``(size, R)`` (``(N_full, R)`` without ``size``)."""
    output_values: jax.Array
    """``values``' dtype, shape ``(size,)``; differentiable."""
    empty_row_indicator: jax.Array
    """bool, shape ``(dense_shape[0],)``."""
    reverse_index_map: jax.Array
    """Integer, shape ``(N,)``: positions below ``n_out``."""
    n_out: jax.Array
    """Integer scalar: ``N_full``, the number of real entries."""


# --------------------------------------------------------------------------
# host callbacks (NumPy in, NumPy out)
# --------------------------------------------------------------------------

def _int_dtype() -> np.dtype:
    return np.dtype(jax.dtypes.canonicalize_dtype(np.int64))


def _host(x: Any) -> Any:
    """A JAX array as a NumPy array (a view of host memory), anything else as it is."""
    return np.asarray(x) if isinstance(x, jax.Array) else x


def _fill_host(static: Tuple[Any, ...], indices: Any, values: Any, default: Any
               ) -> Tuple[np.ndarray, ...]:
    """The forward op on host arrays, padded to ``size`` entries (``size=None``: exact)."""
    size, shape, num_threads = static
    r = sfer.sparse_fill_empty_rows(_host(indices), _host(values), _host(shape),
                                    _host(default), num_threads=num_threads)
    n, ity = r.output_values.shape[0], _int_dtype()
    if size is None:
        size = n
    elif n > size:
        raise ValueError(f"size={size} is too small: the result has {n} entries (N plus the "
                         f"number of empty rows); size must be at least that")
    out_indices = np.zeros((size, r.output_indices.shape[1]), ity)
    out_indices[:n] = r.output_indices
    out_indices[n:, 0] = r.empty_row_indicator.shape[0]
    out_values = np.zeros(size, r.output_values.dtype)
    out_values[:n] = r.output_values
    return (out_indices, out_values, r.empty_row_indicator,
            r.reverse_index_map.astype(ity), np.asarray(n, ity))


def _grad_host(num_threads: Optional[int], reverse_index_map: Any, grad_values: Any,
               n_out: Any = None) -> Tuple[np.ndarray, np.ndarray]:
    """sfer's grad on host arrays; ``n_out``: only the first ``n_out`` gradients count (the
    rest belong to padding)."""
    g = grad_values
    if n_out is not None:
        g = np.asarray(g)[:int(n_out)]
    r = sfer.sparse_fill_empty_rows_grad(_host(reverse_index_map), _host(g),
                                         num_threads=num_threads)
    return r.d_values, np.asarray(r.d_default_value)


# --------------------------------------------------------------------------
# the forward op: custom_vjp around a pure_callback
# --------------------------------------------------------------------------

def _fill_shapes(static: Tuple[Any, ...], indices: jax.Array, values: jax.Array
                 ) -> Tuple[jax.ShapeDtypeStruct, ...]:
    size, shape, _ = static
    ity = _int_dtype()
    return (jax.ShapeDtypeStruct((size, indices.shape[1]), ity),
            jax.ShapeDtypeStruct((size,), values.dtype),
            jax.ShapeDtypeStruct((shape[0],), np.bool_),
            jax.ShapeDtypeStruct((indices.shape[0],), ity),
            jax.ShapeDtypeStruct((), ity))


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _fill(static: Tuple[Any, ...], indices: jax.Array, values: jax.Array,
          default: jax.Array) -> Tuple[jax.Array, ...]:
    return _fill_fwd(static, indices, values, default)[0]


def _fill_fwd(static: Tuple[Any, ...], indices: jax.Array, values: jax.Array,
              default: jax.Array) -> Tuple[Tuple[jax.Array, ...], Tuple[jax.Array, ...]]:
    out = jax.pure_callback(functools.partial(_fill_host, static),
                            _fill_shapes(static, indices, values), indices, values, default,
                            vmap_method="sequential")
    return tuple(out), (out[3], out[4])


def _fill_bwd(static: Tuple[Any, ...], residuals: Tuple[jax.Array, ...],
              cotangents: Tuple[Any, ...]) -> Tuple[None, jax.Array, jax.Array]:
    reverse_index_map, n_out = residuals
    ct = cotangents[1]
    shapes = (jax.ShapeDtypeStruct(reverse_index_map.shape, ct.dtype),
              jax.ShapeDtypeStruct((), ct.dtype))
    d_values, d_default = jax.pure_callback(functools.partial(_grad_host, static[2]), shapes,
                                            reverse_index_map, ct, n_out,
                                            vmap_method="sequential")
    return None, d_values, d_default


_fill.defvjp(_fill_fwd, _fill_bwd)


# --------------------------------------------------------------------------
# the grad op: a pure_callback, its backward in jnp (it is linear in grad_values)
# --------------------------------------------------------------------------

@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _grad(num_threads: Optional[int], reverse_index_map: jax.Array,
          grad_values: jax.Array) -> Tuple[jax.Array, jax.Array]:
    shapes = (jax.ShapeDtypeStruct(reverse_index_map.shape, grad_values.dtype),
              jax.ShapeDtypeStruct((), grad_values.dtype))
    return tuple(jax.pure_callback(functools.partial(_grad_host, num_threads), shapes,
                                   reverse_index_map, grad_values, vmap_method="sequential"))


def _grad_fwd(num_threads: Optional[int], reverse_index_map: jax.Array,
              grad_values: jax.Array) -> Tuple[Tuple[jax.Array, jax.Array], Tuple[Any, ...]]:
    out = _grad(num_threads, reverse_index_map, grad_values)
    return out, (reverse_index_map, jnp.zeros(grad_values.shape, grad_values.dtype))


def _grad_bwd(num_threads: Optional[int], residuals: Tuple[Any, ...],
              cotangents: Tuple[jax.Array, jax.Array]) -> Tuple[None, jax.Array]:
    """The transposed map: ``d_values`` back to the positions they came from,
    ``d_default_value`` to every unreferenced position."""
    reverse_index_map, zeros = residuals
    dd_values, dd_default = cotangents
    referenced = jnp.zeros(zeros.shape, bool).at[reverse_index_map].set(True)
    d_grad = jnp.where(referenced, zeros, dd_default).at[reverse_index_map].add(dd_values)
    return None, d_grad


_grad.defvjp(_grad_fwd, _grad_bwd)


# --------------------------------------------------------------------------
# the public functions
# --------------------------------------------------------------------------

def _traced(x: Any) -> bool:
    return isinstance(x, jax.core.Tracer)


def _dummy(x: Any) -> np.ndarray:
    """Zeros of a (traced) array's shape and dtype, without memory: the NumPy API checks
    shapes and dtypes on these while JAX traces."""
    return np.broadcast_to(np.zeros((), np.dtype(x.dtype)), np.shape(x))


def _static_shape(dense_shape: Any) -> Any:
    if _traced(dense_shape):
        raise jax.errors.ConcretizationTypeError(
            dense_shape, "The dense_shape argument of sfer.jax.sparse_fill_empty_rows must be "
            "static (concrete): empty_row_indicator has dense_shape[0] entries. Pass a tuple of "
            "ints or a NumPy array (under jit: a static argument or a closure).")
    return dense_shape


def _probe(x: Any) -> Any:
    """What the NumPy API checks while JAX traces: zeros for a traced array, else the
    argument itself."""
    return _dummy(x) if _traced(x) else _host(x)


def _check_shapes(indices: Any, values: Any, dense_shape: Any, default_value: Any,
                  num_threads: Optional[int]) -> None:
    """The NumPy API's checks that need no data, on zeros of the arguments' shapes and dtypes
    (rows of zeros are valid, unless ``dense_shape[0]`` is 0: then one row is checked)."""
    probe_shape = _host(dense_shape)
    try:
        arr = np.asarray(probe_shape)
        if (_traced(indices) and arr.ndim == 1 and arr.dtype.kind in "iu" and arr.size
                and arr[0] == 0 and indices.ndim and indices.shape[0] > 0):
            probe_shape = np.concatenate([[1], arr[1:]]).astype(arr.dtype)
    except (TypeError, ValueError):
        pass   # sfer names the problem below
    sfer.sparse_fill_empty_rows(_probe(indices), _probe(values), probe_shape,
                                _probe(default_value), num_threads=num_threads)


def _default_array(default_value: Any, values: jax.Array) -> Any:
    """``default_value`` (checked) in ``values``' dtype: a traced default by ``astype``
    (differentiable), a concrete one by sfer's own rule."""
    if _traced(default_value):
        return default_value.astype(values.dtype)
    probe = sfer.sparse_fill_empty_rows(np.empty((0, 1), np.int64), _dummy(values)[:0], [1],
                                        _host(default_value))
    return jnp.asarray(probe.output_values[0], dtype=values.dtype)


def sparse_fill_empty_rows(indices: Any, values: Any, dense_shape: Any, default_value: Any,
                           *, size: Optional[int] = None,
                           num_threads: Optional[int] = None) -> PaddedFillResult:
    """:func:`sfer.sparse_fill_empty_rows` for JAX arrays, differentiable in ``values`` and
    ``default_value``.

    Parameters
    ----------
    indices : array of integers, shape (N, R)
    values : array, shape (N,)
    dense_shape : tuple of int or a NumPy array, shape (R,)
        Static, also under ``jit`` (``empty_row_indicator`` has ``dense_shape[0]`` entries).
    default_value : scalar or 0-d array
        Converted to ``values``' dtype (a concrete one by sfer's rule).
    size : int, optional
        The number of output entries, at least ``N_full = N`` + the number of empty rows (a
        ``ValueError`` when the op runs otherwise; at most ``N + dense_shape[0]``).  Required
        when ``indices`` is traced (``jit``, ``vmap``); without it the outputs have exactly
        ``N_full`` entries.
    num_threads : int, optional
        As for :func:`sfer.sparse_fill_empty_rows`.

    Returns
    -------
    PaddedFillResult
        ``(output_indices, output_values, empty_row_indicator, reverse_index_map, n_out)``;
        the first ``n_out`` entries are the NumPy API's results, bit for bit.

    Raises
    ------
    jax.errors.ConcretizationTypeError
        ``size`` is None but ``indices`` is traced, or ``dense_shape`` is traced.
    TypeError, ValueError, IndexError, MemoryError
        What the NumPy API raises: at once for concrete arguments and for the shape and dtype
        checks, else when the callback runs (wrapped by JAX).
    """
    _static_shape(dense_shape)
    if size is not None:
        size = operator.index(size)
    if not any(map(_traced, (indices, values, default_value))):    # all concrete: run now
        host = _fill_host((size, dense_shape, num_threads), indices, values, default_value)
        return PaddedFillResult(*map(jnp.asarray, host))
    if size is None and _traced(indices):
        raise jax.errors.ConcretizationTypeError(
            indices, "The size argument of sfer.jax.sparse_fill_empty_rows must be "
            "statically specified to use it within JAX transformations (jit, vmap): the "
            "number of output entries depends on the values of indices.")
    _check_shapes(indices, values, dense_shape, default_value, num_threads)
    indices, values = jnp.asarray(indices), jnp.asarray(values)
    if size is None:   # concrete indices: N_full now (values and default_value are traced)
        size = sfer.sparse_fill_empty_rows(np.asarray(indices), _probe(values),
                                           _host(dense_shape), _probe(default_value)
                                           ).output_values.shape[0]
    shape = tuple(int(x) for x in np.asarray(_host(dense_shape)))
    default = _default_array(default_value, values)
    return PaddedFillResult(*_fill((size, shape, num_threads), indices, values, default))


def sparse_fill_empty_rows_grad(reverse_index_map: Any, grad_values: Any, *,
                                num_threads: Optional[int] = None) -> sfer.GradResult:
    """:func:`sfer.sparse_fill_empty_rows_grad` for JAX arrays, also under ``jit`` and
    ``vmap``; differentiable in ``grad_values``.

    Returns
    -------
    sfer.GradResult
        Of JAX arrays, the NumPy API's results bit for bit.

    Raises
    ------
    TypeError, ValueError, IndexError
        What the NumPy API raises (for traced arguments, the range check when the callback
        runs).
    """
    if not (_traced(reverse_index_map) or _traced(grad_values)):
        d_values, d_default = _grad_host(num_threads, reverse_index_map, grad_values)
        return sfer.GradResult(*_any((jnp.asarray(d_values), jnp.asarray(d_default))))
    rim_probe = _probe(reverse_index_map)
    if _traced(reverse_index_map):   # zeros are in range unless grad_values is empty
        rim_probe = rim_probe[:0] if np.ndim(rim_probe) == 1 else rim_probe
    sfer.sparse_fill_empty_rows_grad(rim_probe, _probe(grad_values), num_threads=num_threads)
    rim, grad = jnp.asarray(reverse_index_map), jnp.asarray(grad_values)
    return sfer.GradResult(*_any(_grad(num_threads, rim, grad)))


def _any(arrays: Any) -> Any:
    """JAX arrays in :class:`sfer.GradResult` (typed for NumPy's)."""
    return arrays
