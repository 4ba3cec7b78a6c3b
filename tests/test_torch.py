"""sfer.torch: the two ops as torch custom operators.

Skipped when torch is not installed (the default suite), except under SFER_FRAMEWORKS=1 (CI's
framework run, ci/test.sh), where a missing torch fails.
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

if os.environ.get("SFER_FRAMEWORKS") == "1":
    import torch   # SFER_FRAMEWORKS=1: torch must be installed
else:
    torch = pytest.importorskip(
        "torch", reason="torch is not installed (pip install 'sfer[torch]'; CI runs these "
        "tests with SFER_FRAMEWORKS=1 bash ci/test.sh)")

import sfer  # noqa: E402
import sfer.torch as st  # noqa: E402

INDICES = [[0, 1], [0, 3], [2, 0], [3, 1]]
DENSE_SHAPE = [5, 6]


def random_case(rng, n=40, rows=30, cols=4):
    """Unsorted rows, duplicates and empty rows."""
    indices = np.stack([rng.integers(0, rows, n), rng.integers(0, cols, n)], axis=1)
    return indices, [rows, cols]


def bits(t):
    """A tensor's bytes (bit-for-bit comparison, NaN payloads and -0.0 included)."""
    t = t.detach().reshape(-1).contiguous()
    return t.view(torch.uint8).numpy().tobytes() if t.numel() else b""


def assert_same_bits(tensor, array):
    assert tuple(tensor.shape) == array.shape
    assert bits(tensor) == np.ascontiguousarray(array).tobytes()


DTYPES = [torch.float32, torch.float64, torch.float16, torch.complex64, torch.complex128,
          torch.int8, torch.int32, torch.int64, torch.uint8, torch.bool, torch.bfloat16]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("sorted_rows", [False, True])
def test_forward_bits_equal_numpy(dtype, sorted_rows):
    rng = np.random.default_rng(0)
    indices, shape = random_case(rng)
    if sorted_rows:
        indices = indices[np.lexsort(indices.T[::-1])]
    if dtype == torch.bfloat16:
        pytest.importorskip("ml_dtypes")   # sfer reads torch's bfloat16 as ml_dtypes.bfloat16
    values = torch.from_numpy(rng.normal(size=len(indices)) * 50).to(dtype)
    default = torch.tensor(1, dtype=dtype)
    got = st.sparse_fill_empty_rows(torch.from_numpy(indices), values, shape, default)
    want = sfer.sparse_fill_empty_rows(indices, st._as_numpy(values, "values"), shape,
                                       st._as_numpy(default, "default_value"))
    for g, w in zip(got, want):
        assert_same_bits(g, w)
    assert got.output_values.dtype == dtype and got.output_indices.dtype == torch.int64


def test_no_empty_row_outputs_do_not_alias_inputs():
    # the NumPy API hands back views of its inputs here; a custom op must not
    indices = torch.tensor([[0, 0], [1, 2]])
    values = torch.tensor([1.0, 2.0])
    r = st.sparse_fill_empty_rows(indices, values, [2, 3], 0.0)
    assert r.output_values.data_ptr() != values.data_ptr()
    assert r.output_indices.data_ptr() != indices.data_ptr()
    r.output_values[0] = 5.0   # writable, and the input is untouched
    assert values[0] == 1.0


def test_cpu_inputs_are_read_in_place():
    values = torch.arange(6.0)[::2]   # strided: still a view
    assert np.shares_memory(st._as_numpy(values, "values"), values.numpy())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.complex64])
def test_backward_bits_equal_numpy_grad(dtype):
    rng = np.random.default_rng(1)
    indices, shape = random_case(rng)
    values = torch.from_numpy(rng.normal(size=len(indices))).to(dtype).requires_grad_()
    default = torch.tensor(0.5, dtype=dtype, requires_grad=True)
    r = st.sparse_fill_empty_rows(torch.from_numpy(indices), values, shape, default)
    g = torch.from_numpy(rng.normal(size=r.output_values.shape[0])).to(dtype)
    r.output_values.backward(g)
    want = sfer.sparse_fill_empty_rows_grad(r.reverse_index_map.numpy(), g.numpy())
    assert_same_bits(values.grad, want.d_values)
    assert_same_bits(default.grad, np.asarray(want.d_default_value))


def test_grad_op_bits_equal_numpy():
    rng = np.random.default_rng(2)
    rim = torch.from_numpy(rng.permutation(100)[:60])
    g = torch.from_numpy(rng.normal(size=100).astype(np.float32))
    got = st.sparse_fill_empty_rows_grad(rim, g)
    want = sfer.sparse_fill_empty_rows_grad(rim.numpy(), g.numpy())
    assert_same_bits(got.d_values, want.d_values)
    assert_same_bits(got.d_default_value, np.asarray(want.d_default_value))


@pytest.mark.parametrize("dtype", [torch.float64, torch.complex128])
def test_gradcheck_and_gradgradcheck(dtype):
    values = torch.tensor([1.0, 2, 3, 4], dtype=dtype, requires_grad=True)
    default = torch.tensor(-1.0, dtype=dtype, requires_grad=True)
    indices = torch.tensor([[3, 1], [0, 3], [2, 0], [0, 1]])

    def fill(v, d):
        return st.sparse_fill_empty_rows(indices, v, DENSE_SHAPE, d).output_values

    assert torch.autograd.gradcheck(fill, (values, default))
    assert torch.autograd.gradgradcheck(fill, (values, default))
    rim = torch.tensor([4, 0, 2, 2])   # a repeated position: the grad op alone allows it
    g = torch.randn(6, dtype=dtype, requires_grad=True)

    def grad(g):
        return tuple(st.sparse_fill_empty_rows_grad(rim, g))

    assert torch.autograd.gradcheck(grad, (g,))
    assert torch.autograd.gradgradcheck(grad, (g,))


@pytest.mark.parametrize("dtype", [torch.int32, torch.bool])
def test_integer_and_bool_values_have_no_gradient(dtype):
    r = st.sparse_fill_empty_rows(torch.tensor(INDICES), torch.tensor([1, 0, 1, 1], dtype=dtype),
                                  DENSE_SHAPE, True if dtype == torch.bool else 1)
    assert not r.output_values.requires_grad
    assert r.output_values.tolist() == [1, 0, 1, 1, 1, 1]
    with pytest.raises(RuntimeError, match="floating point"):
        torch.tensor([1, 2], dtype=dtype).requires_grad_()


def test_default_value_forms():
    values = torch.tensor([1.0, 2, 3, 4], dtype=torch.float32)
    for default in (-1, -1.0, np.float64(-1), torch.tensor(-1.0, dtype=torch.float64)):
        r = st.sparse_fill_empty_rows(torch.tensor(INDICES), values, DENSE_SHAPE, default)
        assert r.output_values.dtype == torch.float32
        assert r.output_values.tolist() == [1, 2, -1, 3, 4, -1]
    d = torch.tensor(-1.0, dtype=torch.float64, requires_grad=True)   # another dtype: .to()
    st.sparse_fill_empty_rows(torch.tensor(INDICES), values, DENSE_SHAPE, d).output_values.sum(
        ).backward()
    assert d.grad.dtype == torch.float64 and d.grad.item() == 2.0


def test_opcheck():
    indices = torch.tensor(INDICES)
    ints = (indices, torch.tensor([1, 2, 3, 4]), DENSE_SHAPE, torch.tensor(-1), None)
    torch.library.opcheck(torch.ops.sfer.sparse_fill_empty_rows.default, ints)
    # With floating values opcheck's test_aot_dispatch_dynamic fails in its own harness: it
    # sums the outputs in place into the first one's dtype (int64 output_indices: "result type
    # Double can't be cast to ... Long"); torch.compile is tested below instead.
    floats = (indices, torch.tensor([1.0, 2, 3, 4], dtype=torch.float64, requires_grad=True),
              DENSE_SHAPE, torch.tensor(-1.0, dtype=torch.float64, requires_grad=True), 2)
    torch.library.opcheck(torch.ops.sfer.sparse_fill_empty_rows.default, floats,
                          test_utils=("test_schema", "test_autograd_registration",
                                      "test_faketensor"))
    grad = (torch.tensor([0, 1, 3, 4]), torch.randn(6, dtype=torch.float64, requires_grad=True),
            None)
    torch.library.opcheck(torch.ops.sfer.sparse_fill_empty_rows_grad.default, grad)


def bag(table, indices, weights, default, rows):
    """A small model: fill, gather, weighted sum per row."""
    r = st.sparse_fill_empty_rows(indices, weights, [rows, table.shape[0]], default)
    emb = table[r.output_indices[:, 1]] * r.output_values[:, None]
    return torch.zeros(rows, table.shape[1], dtype=table.dtype).index_add(
        0, r.output_indices[:, 0], emb)


@pytest.mark.parametrize("backend", ["aot_eager", "inductor"])
def test_torch_compile_matches_eager(backend):
    torch._dynamo.reset()
    compiled = torch.compile(bag, backend=backend, fullgraph=True, dynamic=True)
    rng = np.random.default_rng(3)
    for n in (6, 11):   # two sizes: one dynamic graph
        indices = torch.from_numpy(np.stack([rng.integers(0, 8, n), rng.integers(0, 7, n)], 1))
        results = []
        for fn in (bag, compiled):
            table = torch.linspace(-1, 1, 21, dtype=torch.float64).reshape(7, 3).requires_grad_()
            w = torch.linspace(0.5, 2, n, dtype=torch.float64).requires_grad_()
            d = torch.tensor(0.25, dtype=torch.float64, requires_grad=True)
            out = fn(table, indices, w, d, 8)
            results.append((out, *torch.autograd.grad(out.square().sum(), (table, w, d))))
        for e, c in zip(*results):
            if backend == "aot_eager":   # the same kernels: the same bits
                assert torch.equal(e, c)
            else:   # inductor fuses the model's own sums (not sfer's) in another order
                torch.testing.assert_close(c, e, rtol=1e-13, atol=1e-13)


def test_fill_empty_rows_coalesced():
    values = torch.tensor([1.0, 2, 3, 4], requires_grad=True)
    sp = torch.sparse_coo_tensor(torch.tensor(INDICES).t(), values, DENSE_SHAPE).coalesce()
    filled, empty = st.fill_empty_rows(sp, -1.0)
    assert filled.is_coalesced() and filled.shape == sp.shape
    assert filled.indices().t().tolist() == [[0, 1], [0, 3], [1, 0], [2, 0], [3, 1], [4, 0]]
    assert filled.values().tolist() == [1, 2, -1, 3, 4, -1]
    assert empty.tolist() == [False, True, False, False, True]
    filled.to_dense().sum().backward()
    assert values.grad.tolist() == [1, 1, 1, 1]


def test_fill_empty_rows_uncoalesced_keeps_stored_order():
    idx = torch.tensor([[3, 1], [0, 3], [3, 1], [0, 1]]).t()   # unsorted, a duplicate
    sp = torch.sparse_coo_tensor(idx, torch.tensor([1.0, 2, 3, 4]), DENSE_SHAPE)
    filled, _ = st.fill_empty_rows(sp, 0.0)
    assert not filled.is_coalesced()
    assert filled._indices().t().tolist() == [[0, 3], [0, 1], [1, 0], [2, 0], [3, 1], [3, 1],
                                              [4, 0]]
    assert filled._values().tolist() == [2, 4, 0, 0, 1, 3, 0]
    with pytest.raises(ValueError, match="coalesce"):
        st.fill_empty_rows(sp.detach().requires_grad_(), 0.0)
    with pytest.raises(TypeError, match="sparse COO"):
        st.fill_empty_rows(sp.to_dense(), 0.0)


def test_non_cpu_tensor_is_a_clear_error():
    meta = torch.tensor(INDICES, device="meta")
    with pytest.raises(ValueError, match="sfer reads CPU memory only"):
        st.sparse_fill_empty_rows(meta, torch.ones(4), DENSE_SHAPE, 0.0)
    with pytest.raises(ValueError, match="grad_values is on a meta device"):
        st.sparse_fill_empty_rows_grad(torch.tensor([0]), torch.ones(2, device="meta"))


_DATALOADER_CHILD = """
import multiprocessing, torch, sfer.torch as st

class Rows(torch.utils.data.Dataset):
    def __len__(self):
        return 4

    def __getitem__(self, i):
        r = st.sparse_fill_empty_rows(torch.tensor([[i, 0]]), torch.tensor([float(i)]), [5, 1],
                                      -1.0)
        return r.output_values

# the parent runs sfer (threads started) before forking: sfer's fork rule applies
st.sparse_fill_empty_rows_grad(torch.arange(100_000), torch.ones(200_000), num_threads=2)
loader = torch.utils.data.DataLoader(
    Rows(), batch_size=2, num_workers=2,
    multiprocessing_context=multiprocessing.get_context("fork"))
print([b.tolist() for b in loader])
"""


def test_dataloader_fork_workers(tmp_path):
    # in a fresh interpreter: this process may hold JAX's threads (tests/test_jax.py), and
    # forking those is JAX's problem, not sfer's
    # (cwd: not the checkout, whose source tree would shadow the installed sfer)
    proc = subprocess.run([sys.executable, "-c", _DATALOADER_CHILD], capture_output=True,
                          text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str([[[0.0, -1.0, -1.0, -1.0, -1.0],
                                        [-1.0, 1.0, -1.0, -1.0, -1.0]],
                                       [[-1.0, -1.0, 2.0, -1.0, -1.0],
                                        [-1.0, -1.0, -1.0, 3.0, -1.0]]])


HOSTILE_FILL = [
    ([[0.5, 1.0]], [1.0], [2, 2], 0.0),          # float indices
    ([[0, 1]], [1.0], [2.5, 2], 0.0),            # float dense_shape
    ([0, 1], [1.0], [2, 2], 0.0),                # 1-D indices
    ([[0, 1]], [1.0, 2.0], [2, 2], 0.0),         # lengths differ
    ([[0, 1]], [1.0], [2, 2, 2], 0.0),           # dense_shape's length
    ([[0, 1]], [1.0], [[2, 2]], 0.0),            # 2-D dense_shape
    ([[0, 1]], [1.0], [2, 2], [0.0, 1.0]),       # default not a scalar
    ([[0, 1]], [1], [2, 2], 1.5),                # float default for int values
    ([[0, 1]], [1], [2, 2], 2**70),              # does not fit
    ([[5, 1]], [1.0], [2, 2], 0.0),              # row out of range
    ([[-1, 1]], [1.0], [2, 2], 0.0),             # negative row
    ([[0, 1]], [1.0], [-2, 2], 0.0),             # negative dense_shape[0]
    ([[0, 1]], [1.0], [], 0.0),                  # empty dense_shape
    ([[0, 1]], [1.0], [2, 2], "x"),              # str default
]


def _error(fn, *args, **kw):
    with pytest.raises(Exception) as info:
        fn(*args, **kw)
    return type(info.value), str(info.value)


def as_torch(x):
    a = np.asarray(x)
    return torch.from_numpy(a) if a.dtype.kind in "biufc" and a.ndim else x


@pytest.mark.parametrize("case", HOSTILE_FILL, ids=[str(i) for i in range(len(HOSTILE_FILL))])
def test_hostile_fill_inputs_raise_numpy_errors(case):
    indices, values, shape, default = case
    want = _error(sfer.sparse_fill_empty_rows, np.asarray(indices), np.asarray(values), shape,
                  default)
    got = _error(st.sparse_fill_empty_rows, as_torch(indices), as_torch(values), shape, default)
    assert got == want


@pytest.mark.parametrize("case", [
    ([0, 1.5], [1.0, 2.0]),     # float map
    ([0, 3], [1.0, 2.0]),       # out of range
    ([[0]], [1.0]),             # 2-D map
    ([0], [True, False]),       # bool gradients
    ([0], [1, 2]),              # fine: integer gradients are accepted by the NumPy API
])
def test_hostile_grad_inputs_raise_numpy_errors(case):
    rim, grad = (np.asarray(x) for x in case)
    try:
        want = sfer.sparse_fill_empty_rows_grad(rim, grad)
    except Exception as exc:
        assert _error(st.sparse_fill_empty_rows_grad, torch.from_numpy(rim),
                      torch.from_numpy(grad)) == (type(exc), str(exc))
    else:
        got = st.sparse_fill_empty_rows_grad(torch.from_numpy(rim), torch.from_numpy(grad))
        assert_same_bits(got.d_values, want.d_values)


def test_num_threads_errors_match():
    args = (torch.tensor(INDICES), torch.ones(4), DENSE_SHAPE, 0.0)
    for bad in (0, -1):
        want = _error(sfer.sparse_fill_empty_rows, *(np.asarray(INDICES), np.ones(4),
                                                     DENSE_SHAPE, 0.0), num_threads=bad)
        assert _error(st.sparse_fill_empty_rows, *args, num_threads=bad) == want
