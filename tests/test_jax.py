"""sfer.jax: the two ops for JAX (custom_vjp + pure_callback), eager, under jit and vmap.

Skipped when JAX is not installed (the default suite), except under SFER_FRAMEWORKS=1 (CI's
framework run, ci/test.sh), where a missing JAX fails.  The module turns on jax_enable_x64
(float64 for check_grads, int64 indices as in the NumPy API).
"""

from __future__ import annotations

import os

import numpy as np
import pytest

if os.environ.get("SFER_FRAMEWORKS") == "1":
    import jax   # SFER_FRAMEWORKS=1: JAX must be installed
else:
    jax = pytest.importorskip(
        "jax", reason="JAX is not installed (pip install 'sfer[jax]'; CI runs these tests "
        "with SFER_FRAMEWORKS=1 bash ci/test.sh)")

import jax.numpy as jnp  # noqa: E402
from jax.test_util import check_grads  # noqa: E402

import sfer  # noqa: E402
import sfer.jax as sj  # noqa: E402

jax.config.update("jax_enable_x64", True)

INDICES = np.array([[0, 1], [0, 3], [2, 0], [3, 1]])
SHAPE = (5, 6)


def random_case(rng, n=40, rows=30, cols=4):
    indices = np.stack([rng.integers(0, rows, n), rng.integers(0, cols, n)], axis=1)
    return indices, (rows, cols)


def assert_same_bits(got, want):
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape and got.dtype == want.dtype
    assert got.tobytes() == np.ascontiguousarray(want).tobytes()


@pytest.mark.parametrize("dtype", ["float32", "float64", "complex64", "int32", "bool",
                                   "float16", "bfloat16"])
def test_eager_exact_size_bits_equal_numpy(dtype):
    rng = np.random.default_rng(0)
    indices, shape = random_case(rng)
    values = jnp.asarray((rng.normal(size=len(indices)) * 50).astype(dtype))
    default = True if dtype == "bool" else 1
    got = sj.sparse_fill_empty_rows(indices, values, shape, default)
    want = sfer.sparse_fill_empty_rows(indices, np.asarray(values), shape, default)
    for g, w in zip(got[:4], want):
        assert_same_bits(g, w)
    assert int(got.n_out) == len(want.output_values)


def test_jit_pads_to_size():
    values = jnp.array([1.0, 2, 3, 4])
    fill = jax.jit(lambda i, v, d: sj.sparse_fill_empty_rows(i, v, SHAPE, d, size=9))
    r = fill(INDICES, values, -1.0)
    want = sfer.sparse_fill_empty_rows(INDICES, np.asarray(values), SHAPE, -1.0)
    n = int(r.n_out)
    assert n == 6 and r.output_values.shape == (9,) and r.output_indices.shape == (9, 2)
    assert_same_bits(r.output_indices[:n], want.output_indices)
    assert_same_bits(r.output_values[:n], want.output_values)
    assert np.asarray(r.output_indices[n:]).tolist() == [[5, 0]] * 3   # one row past the last
    assert np.asarray(r.output_values[n:]).tolist() == [0.0] * 3
    assert_same_bits(r.empty_row_indicator, want.empty_row_indicator)
    assert_same_bits(r.reverse_index_map, want.reverse_index_map)
    # the padding is dropped by a segment sum over dense_shape[0] rows
    sums = jax.ops.segment_sum(r.output_values, r.output_indices[:, 0], num_segments=SHAPE[0])
    assert np.asarray(sums).tolist() == [3.0, -1.0, 3.0, 4.0, -1.0]


def test_jit_without_size_says_size_is_needed():
    with pytest.raises(jax.errors.ConcretizationTypeError, match="size argument"):
        jax.jit(lambda i: sj.sparse_fill_empty_rows(i, jnp.ones(4), SHAPE, 0.0))(INDICES)
    with pytest.raises(jax.errors.ConcretizationTypeError, match="dense_shape"):
        jax.jit(lambda s: sj.sparse_fill_empty_rows(INDICES, jnp.ones(4), s, 0.0, size=9))(
            np.array(SHAPE))


def test_size_too_small_is_an_error():
    with pytest.raises(ValueError, match="size=5 is too small"):
        sj.sparse_fill_empty_rows(INDICES, jnp.ones(4), SHAPE, 0.0, size=5)
    with pytest.raises(Exception, match="size=5 is too small"):
        jax.jit(lambda i: sj.sparse_fill_empty_rows(i, jnp.ones(4), SHAPE, 0.0, size=5))(INDICES)


def test_vmap():
    rng = np.random.default_rng(1)
    batch = [random_case(rng, n=12, rows=10) for _ in range(3)]
    indices = np.stack([b[0] for b in batch])
    values = jnp.asarray(rng.normal(size=(3, 12)))
    fill = jax.vmap(lambda i, v: sj.sparse_fill_empty_rows(i, v, (10, 4), 0.5, size=22))
    for r in (fill(indices, values), jax.jit(fill)(indices, values)):
        for k in range(3):
            want = sfer.sparse_fill_empty_rows(indices[k], np.asarray(values[k]), (10, 4), 0.5)
            n = int(r.n_out[k])
            assert n == len(want.output_values)
            assert_same_bits(r.output_values[k, :n], want.output_values)
            assert_same_bits(r.output_indices[k, :n], want.output_indices)
            assert_same_bits(r.reverse_index_map[k], want.reverse_index_map)


@pytest.mark.parametrize("size", [None, 50])
def test_gradients_bits_equal_numpy_grad(size):
    rng = np.random.default_rng(2)
    indices, shape = random_case(rng)
    values = jnp.asarray(rng.normal(size=len(indices)))
    r = sj.sparse_fill_empty_rows(indices, values, shape, 0.5, size=size)
    weights = jnp.asarray(rng.normal(size=r.output_values.shape[0]))

    def loss(v, d):
        return jnp.sum(sj.sparse_fill_empty_rows(indices, v, shape, d, size=size).output_values
                       * weights)

    grad = jax.grad(loss, argnums=(0, 1))
    for g in (grad, jax.jit(grad)) if size else (grad,):
        d_values, d_default = g(values, jnp.float64(0.5))
        n = int(r.n_out)
        want = sfer.sparse_fill_empty_rows_grad(np.asarray(r.reverse_index_map),
                                                np.asarray(weights)[:n])
        assert_same_bits(d_values, want.d_values)
        assert_same_bits(d_default, np.asarray(want.d_default_value))


def test_check_grads():
    values = jnp.array([1.0, 2, 3, 4])
    check_grads(lambda v, d: sj.sparse_fill_empty_rows(INDICES, v, SHAPE, d).output_values,
                (values, 0.25), order=1, modes=("rev",))
    check_grads(lambda v, d: sj.sparse_fill_empty_rows(INDICES, v, SHAPE, d, size=8
                                                       ).output_values,
                (values * 1j, 0.25 + 0.5j), order=1, modes=("rev",))
    rim = jnp.array([4, 0, 2, 2])
    check_grads(lambda g: sj.sparse_fill_empty_rows_grad(rim, g), (jnp.arange(6.0),), order=2,
                modes=("rev",))


def test_grad_op_jit_vmap_bits_equal_numpy():
    rng = np.random.default_rng(3)
    rim = rng.permutation(100)[:60]
    g = rng.normal(size=(2, 100)).astype(np.float32)
    want = [sfer.sparse_fill_empty_rows_grad(rim, g[k]) for k in range(2)]
    eager = sj.sparse_fill_empty_rows_grad(rim, g[0])
    jitted = jax.jit(sj.sparse_fill_empty_rows_grad)(rim, g[0])
    for r in (eager, jitted):
        assert_same_bits(r.d_values, want[0].d_values)
        assert_same_bits(r.d_default_value, np.asarray(want[0].d_default_value))
    batched = jax.vmap(sj.sparse_fill_empty_rows_grad, in_axes=(None, 0))(rim, jnp.asarray(g))
    for k in range(2):
        assert_same_bits(batched.d_values[k], want[k].d_values)
        assert_same_bits(batched.d_default_value[k], np.asarray(want[k].d_default_value))


HOSTILE_FILL = [
    ([[0.5, 1.0]], [1.0], [2, 2], 0.0),          # float indices
    ([[0, 1]], [1.0], [2.5, 2], 0.0),            # float dense_shape
    ([0, 1], [1.0], [2, 2], 0.0),                # 1-D indices
    ([[0, 1]], [1.0, 2.0], [2, 2], 0.0),         # lengths differ
    ([[0, 1]], [1.0], [2, 2, 2], 0.0),           # dense_shape's length
    ([[0, 1]], [1], [2, 2], 1.5),                # float default for int values
    ([[0, 1]], [1], [2, 2], 2**70),              # does not fit
    ([[5, 1]], [1.0], [2, 2], 0.0),              # row out of range
    ([[0, 1]], [1.0], [-2, 2], 0.0),             # negative dense_shape[0]
]


def _error(fn, *args, **kw):
    with pytest.raises(Exception) as info:
        fn(*args, **kw)
    return type(info.value), str(info.value)


@pytest.mark.parametrize("case", HOSTILE_FILL, ids=[str(i) for i in range(len(HOSTILE_FILL))])
def test_hostile_inputs_raise_numpy_errors(case):
    indices, values, shape, default = (np.asarray(x) if isinstance(x, list) else x
                                       for x in case)
    want = _error(sfer.sparse_fill_empty_rows, indices, values, shape, default)
    assert _error(sj.sparse_fill_empty_rows, indices, jnp.asarray(values), shape,
                  default) == want
    if want[0] is not IndexError:   # the checks that need no data: also while tracing
        traced = _error(jax.jit(lambda v: sj.sparse_fill_empty_rows(indices, v, shape, default,
                                                                    size=4)),
                        jnp.asarray(values))
        assert traced == want


def test_hostile_row_under_jit_reports_numpy_message():
    fill = jax.jit(lambda i: sj.sparse_fill_empty_rows(i, jnp.ones(1), (2, 2), 0.0, size=4))
    want = _error(sfer.sparse_fill_empty_rows, np.array([[5, 1]]), np.ones(1), (2, 2), 0.0)
    with pytest.raises(Exception, match=want[1].replace("[", r"\[").replace(")", r"\)")):
        fill(np.array([[5, 1]]))


@pytest.mark.parametrize("case", [([0, 1.5], [1.0, 2.0]), ([0, 3], [1.0, 2.0]),
                                  ([[0]], [1.0]), ([0], [True, False])])
def test_hostile_grad_inputs_raise_numpy_errors(case):
    rim, grad = (np.asarray(x) for x in case)
    want = _error(sfer.sparse_fill_empty_rows_grad, rim, grad)
    assert _error(sj.sparse_fill_empty_rows_grad, rim, grad) == want
