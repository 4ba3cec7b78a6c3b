"""Other libraries' arrays in, NumPy arrays out: everything NumPy can view (buffer protocol,
``__array_interface__``, ``__array__``) and DLPack producers (``__dlpack__``), converted by the
one rule of ``sfer._convert`` for both ops and for ``sfer.reference``.

"Without a copy" is checked where it can be seen: the conversion helpers return views of the
producer's memory, and the forward op's fast path hands those views back as its outputs.
Results equal the reference's bit for bit (the grad's data have exact sums).

array-api-strict and pyarrow are test requirements (ci/requirements-test.txt); PyTorch is
tried only where it is installed.
"""

from __future__ import annotations

import array
import ctypes
import sys

import numpy as np
import pytest

import sfer
from sfer import _convert, _fill, _fill_inputs, _grad_inputs, reference

xp = pytest.importorskip("array_api_strict")
pa = pytest.importorskip("pyarrow")

NUMPY_2_1 = np.lib.NumpyVersion(np.__version__) >= "2.1.0"


# ------------------------------------------------------------------------------- producers
# Each maker takes a C-contiguous ndarray ``a`` and returns ``(obj, view)``: the producer's
# object holding a's values, and an ndarray over the producer's own memory (what a conversion
# without a copy must share memory with).


class ArrayInterfaceOnly:
    """Only ``__array_interface__`` (NumPy's version 3 protocol), over an ndarray."""

    def __init__(self, a):
        self._a = a  # keeps the memory alive
        self.__array_interface__ = a.__array_interface__


class ArrayMethodOnly:
    """Only ``__array__``, returning the ndarray it wraps (no copy)."""

    def __init__(self, a):
        self._a = a

    def __array__(self, dtype=None, copy=None):
        if dtype is not None and dtype != self._a.dtype or copy:
            return np.array(self._a, dtype=dtype, copy=True)
        return self._a


class DLPackOnly:
    """Only ``__dlpack__`` and ``__dlpack_device__``: NumPy's own export of the ndarray it
    wraps, so the capsule is real; ``device`` is what ``__dlpack_device__`` claims."""

    def __init__(self, a, device=None):
        self._a = a
        self._device = device
        self.exports = 0

    def __dlpack__(self, **kwargs):
        self.exports += 1
        return self._a.__dlpack__(**kwargs)

    def __dlpack_device__(self):
        return self._device if self._device is not None else self._a.__dlpack_device__()


def _read_only_buffer(a):
    b = a.tobytes()  # immutable: a read-only buffer
    mv = memoryview(b).cast("B").cast(a.dtype.char, list(a.shape))
    return mv, np.frombuffer(b, a.dtype).reshape(a.shape)


def _array_array(a):
    arr = array.array(a.dtype.char)
    arr.frombytes(a.tobytes())
    return arr, np.frombuffer(arr, a.dtype)


def _bytearray(a):
    ba = bytearray(a.tobytes())
    return ba, np.frombuffer(ba, np.uint8)


def _array_api_strict(a):
    x = xp.asarray(a)
    return x, np.from_dlpack(x)


def _pyarrow(a):
    p = pa.array(a)
    return p, np.frombuffer(p.buffers()[1], a.dtype)


MAKERS = {
    "memoryview": lambda a: (memoryview(a), a),
    "read-only buffer": _read_only_buffer,
    "array.array": _array_array,
    "bytearray": _bytearray,
    "__array_interface__": lambda a: (ArrayInterfaceOnly(a), a),
    "__array__": lambda a: (ArrayMethodOnly(a), a),
    "__dlpack__": lambda a: (DLPackOnly(a), a),
    "array-api-strict": _array_api_strict,
    "pyarrow": _pyarrow,
}
ONE_D_ONLY = {"array.array", "bytearray", "pyarrow"}  # no 2-D form (indices stay ndarrays)
MATRIX_MAKERS = [m for m in MAKERS if m not in ONE_D_ONLY]
ANY_DTYPE = [m for m in MAKERS if m != "bytearray"]  # bytearray: uint8 only


def make(maker, a):
    obj, view = MAKERS[maker](a if a.flags.c_contiguous else np.ascontiguousarray(a))
    assert not isinstance(obj, np.ndarray)
    return obj, view


def same_fill(actual, expected):
    """Every output of a FillResult equal to the reference's: dtype, shape and bits (objects:
    equal values)."""
    assert isinstance(actual, sfer.FillResult)
    for name in sfer.FillResult._fields:
        a, e = getattr(actual, name), getattr(expected, name)
        assert type(a) is np.ndarray, name
        assert a.dtype == e.dtype and a.shape == e.shape, (name, a.dtype, e.dtype)
        if e.dtype.hasobject:
            assert a.tolist() == e.tolist(), name
        else:
            assert a.tobytes() == e.tobytes(), name


def same_grad(actual, expected):
    """d_values bit for bit, d_default_value the same NumPy scalar bits."""
    assert isinstance(actual, sfer.GradResult)
    assert type(actual.d_values) is np.ndarray
    assert actual.d_values.dtype == expected.d_values.dtype
    assert actual.d_values.tobytes() == expected.d_values.tobytes()
    assert type(actual.d_default_value) is type(expected.d_default_value)
    assert (np.asarray(actual.d_default_value).tobytes()
            == np.asarray(expected.d_default_value).tobytes())


RIM = np.array([0, 1, 3, 4, 4, 7], np.int32)
G = np.array([0.5, 1, 2, 4, 8, 16, -3, 64, 128, 1], np.float32)  # exact sums
IDX = np.array([[0, 1], [0, 0], [1, 5], [2, 2], [2, 0]], np.int64)  # sorted, no empty row
VALS = np.array([1.5, -0.0, np.nan, 4.0, 1e300])
SHAPE = np.array([3, 6], np.int64)


# ------------------------------------------------------------------- the helper's views


@pytest.mark.parametrize("maker", MAKERS)
def test_conversion_returns_a_view_of_the_producers_memory(maker):
    a = np.arange(12, dtype=np.uint8 if maker == "bytearray" else np.int64)
    obj, view = make(maker, a)
    for arr in (_convert.as_array(obj, "x"), _grad_inputs.as_vector(obj, "x"),
                _fill_inputs._as_array(obj, "x")):
        assert type(arr) is np.ndarray
        assert arr.dtype == a.dtype and arr.shape == a.shape
        assert np.shares_memory(arr, view), "converted with a copy"
        assert arr.tobytes() == a.tobytes()
    if maker == "read-only buffer":
        assert not _convert.as_array(obj, "x").flags.writeable


@pytest.mark.parametrize("maker", MATRIX_MAKERS)
def test_matrices_are_views_too(maker):
    obj, view = make(maker, IDX)
    arr = _convert.as_array(obj, "indices")
    assert arr.shape == IDX.shape and np.shares_memory(arr, view)


def test_a_dlpack_only_object_goes_through_dlpack():
    base = np.arange(5.0)
    producer = DLPackOnly(base)
    arr = _convert.as_array(producer, "values")
    assert producer.exports == 1 and np.shares_memory(arr, base)
    if NUMPY_2_1:  # the writeable flag travels (before 2.1 every DLPack import is read-only)
        assert arr.flags.writeable


@pytest.mark.skipif(not NUMPY_2_1, reason="read-only DLPack export needs NumPy >= 2.1")
def test_a_read_only_dlpack_export_stays_read_only():
    base = np.arange(5.0)
    base.flags.writeable = False
    arr = _convert.as_array(DLPackOnly(base), "values")
    assert np.shares_memory(arr, base) and not arr.flags.writeable


def test_numpys_own_protocols_come_before_dlpack():
    # Both routes present: np.asarray's wins, as before DLPack support (here __array__ copies)
    class Both(DLPackOnly):
        def __array__(self, dtype=None, copy=None):
            return np.array(self._a, dtype=dtype, copy=True)

    base = np.arange(5.0)
    producer = Both(base)
    arr = _convert.as_array(producer, "values")
    assert producer.exports == 0 and not np.shares_memory(arr, base)
    assert arr.tolist() == base.tolist()


def test_array_api_strict_through_dlpack_when_numpy_cannot_view_it(monkeypatch):
    # array-api-strict has dropped __array__ (Python >= 3.12: only __buffer__) and may drop
    # more; without both, DLPack must still give a view.
    def refuse(self, *args, **kwargs):
        raise TypeError("no __array__ / __buffer__ here")

    cls = type(xp.asarray([1]))
    monkeypatch.setattr(cls, "__array__", refuse)
    if sys.version_info >= (3, 12) and "__buffer__" in vars(cls):
        monkeypatch.setattr(cls, "__buffer__", refuse)
    x = xp.asarray(np.arange(8, dtype=np.float32))
    with pytest.raises(TypeError):
        np.asarray(x)
    arr = _convert.as_array(x, "grad_values")
    assert np.shares_memory(arr, np.from_dlpack(x))
    res = sfer.sparse_fill_empty_rows_grad(xp.asarray(RIM), xp.asarray(G))
    same_grad(res, reference.sparse_fill_empty_rows_grad(RIM, G))
    idx, vals = xp.asarray(IDX), xp.asarray(VALS)
    fill = sfer.sparse_fill_empty_rows(idx, vals, xp.asarray(SHAPE), 0.0)
    assert _fill._last_path() == "fast"
    same_fill(fill, reference.sparse_fill_empty_rows(IDX, VALS, SHAPE, 0.0))
    assert np.shares_memory(fill.output_indices, np.from_dlpack(idx))
    assert np.shares_memory(fill.output_values, np.from_dlpack(vals))


# ------------------------------------------------------------------------------ the grad


@pytest.mark.parametrize("maker", MAKERS)
@pytest.mark.parametrize("num_threads", [1, 2])
def test_grad_bit_for_bit(maker, num_threads):
    rim, g = (RIM, G) if maker != "bytearray" else (RIM.astype(np.uint8), G.astype(np.uint8))
    rim_obj, _ = make(maker, rim)
    g_obj, g_view = make(maker, g)
    expected = reference.sparse_fill_empty_rows_grad(rim, g)
    same_grad(sfer.sparse_fill_empty_rows_grad(rim_obj, g_obj, num_threads=num_threads),
              expected)
    same_grad(reference.sparse_fill_empty_rows_grad(rim_obj, g_obj), expected)
    # out=: written in place, never overlapping what the kernel reads
    out = np.full(rim.shape[0], 99, g.dtype)
    res = sfer.sparse_fill_empty_rows_grad(rim_obj, g_obj, out=out, num_threads=num_threads)
    assert res.d_values is out
    same_grad(res, expected)
    assert g_view.tobytes() == g.tobytes()  # the input is not modified


@pytest.mark.parametrize("maker", ["memoryview", "__array_interface__", "__array__",
                                   "__dlpack__"])
def test_grad_out_overlapping_a_viewed_input_is_refused(maker):
    # The conversion is a view, so out= inside the producer's memory would be read while
    # written: the overlap rule must see through it.
    g = G.copy()
    g_obj, _ = make(maker, g)
    with pytest.raises(ValueError, match=r"^out must not overlap grad_values$"):
        sfer.sparse_fill_empty_rows_grad(RIM, g_obj, out=g[: RIM.shape[0]])
    assert g.tobytes() == G.tobytes()


# ------------------------------------------------------------------------ the forward op


@pytest.mark.parametrize("maker", ANY_DTYPE)
def test_fill_fast_path_hands_back_the_producers_memory(maker):
    idx_obj, idx_view = make(maker, IDX) if maker in MATRIX_MAKERS else (IDX, IDX)
    vals_obj, vals_view = make(maker, VALS)
    shape_obj, _ = make(maker, SHAPE)
    res = sfer.sparse_fill_empty_rows(idx_obj, vals_obj, shape_obj, -1.0)
    assert _fill._last_path() == "fast"
    same_fill(res, reference.sparse_fill_empty_rows(IDX, VALS, SHAPE, -1.0))
    same_fill(reference.sparse_fill_empty_rows(idx_obj, vals_obj, shape_obj, -1.0), res)
    assert np.shares_memory(res.output_values, vals_view), "values were copied"
    assert np.shares_memory(res.output_indices, idx_view), "indices were copied"
    assert not res.output_values.flags.writeable


@pytest.mark.parametrize("maker", ANY_DTYPE)
@pytest.mark.parametrize("num_threads", [1, 2])
def test_fill_general_paths_bit_for_bit(maker, num_threads):
    rng = np.random.default_rng(11)
    for rows in (np.sort(rng.integers(0, 40, 60)), rng.integers(0, 40, 60)):  # sorted, not
        idx = np.stack([rows, rng.integers(-3, 9, 60)], axis=1).astype(np.int64)
        vals = rng.standard_normal(60).astype(np.float32)
        shape = np.array([45, 9], np.int64)
        idx_obj = make(maker, idx)[0] if maker in MATRIX_MAKERS else idx
        vals_obj, shape_obj = make(maker, vals)[0], make(maker, shape)[0]
        expected = reference.sparse_fill_empty_rows(idx, vals, shape, 2.5)
        same_fill(sfer.sparse_fill_empty_rows(idx_obj, vals_obj, shape_obj, 2.5,
                                              num_threads=num_threads), expected)
        same_fill(reference.sparse_fill_empty_rows(idx_obj, vals_obj, shape_obj, 2.5), expected)


@pytest.mark.parametrize("maker", ["memoryview", "__array__", "__dlpack__", "array-api-strict"])
def test_fill_default_value_from_a_0d_array(maker):
    default = np.array(-7.0)
    obj, _ = make(maker, default)
    rng = np.random.default_rng(3)
    idx = np.stack([rng.integers(0, 9, 12), rng.integers(0, 5, 12)], axis=1)
    vals = rng.standard_normal(12)
    expected = reference.sparse_fill_empty_rows(idx, vals, [12, 5], -7.0)
    same_fill(sfer.sparse_fill_empty_rows(idx, vals, [12, 5], obj), expected)
    same_fill(reference.sparse_fill_empty_rows(idx, vals, [12, 5], obj), expected)


# ------------------------------------------------------------- copies that stay as before


def test_pyarrow_arrays_that_numpy_copies_convert_as_before():
    # nulls, bit-packed booleans, strings and several chunks have no zero-copy NumPy form:
    # np.asarray copies them (a __dlpack__, where they have one, refuses them), as before
    nulls = pa.array([1.0, None, 3.0])
    arr = _convert.as_array(nulls, "values")
    assert np.isnan(arr[1]) and not np.shares_memory(arr, np.frombuffer(nulls.buffers()[1]))
    idx = np.array([[0, 0], [2, 1], [2, 0]])
    for values in (nulls, pa.array([True, False, True]), pa.array(["a", "bc", "d"]),
                   pa.chunked_array([[1.5, 2.5], [4.0]])):
        default = {"string": "z", "bool": False}.get(str(values.type), 0.0)
        expected = reference.sparse_fill_empty_rows(idx, np.asarray(values), [4, 2], default)
        same_fill(sfer.sparse_fill_empty_rows(idx, values, [4, 2], default), expected)
    # integers with nulls become float64 (NaN for null): not indices, as before
    with pytest.raises(TypeError, match=r"^indices must have an integer dtype, got float64$"):
        sfer.sparse_fill_empty_rows(pa.array([0, None]), [1.0, 2.0], [3], 0.0)


def test_a_sliced_pyarrow_array_is_a_view_at_its_offset():
    p = pa.array(np.arange(10, dtype=np.float64)).slice(3, 5)
    arr = _convert.as_array(p, "grad_values")
    assert arr.tolist() == [3.0, 4.0, 5.0, 6.0, 7.0]
    assert np.shares_memory(arr, np.frombuffer(p.buffers()[1], np.float64))
    same_grad(sfer.sparse_fill_empty_rows_grad([4, 0], p),
              reference.sparse_fill_empty_rows_grad([4, 0], np.arange(3.0, 8.0)))


def test_a_conversion_of_dtype_or_byte_order_copies():
    # the producer's memory is read as it is when it can be; anything else is converted
    be = np.arange(5, dtype=">f8")
    res = sfer.sparse_fill_empty_rows_grad([1, 2], memoryview(be))
    assert res.d_values.dtype == np.float64 and res.d_values.tolist() == [1.0, 2.0]
    idx32 = np.array([[0, 0], [1, 0]], np.int32)
    obj = DLPackOnly(idx32)
    res = sfer.sparse_fill_empty_rows(obj, [1.0, 2.0], [2, 1], 0.0)
    assert res.output_indices.dtype == np.int64 and not np.shares_memory(res.output_indices,
                                                                         idx32)


# ----------------------------------------------------------------------------- errors


def grad_cases(bad):
    return {"reverse_index_map": (bad, G), "grad_values": (RIM, bad)}


def fill_cases(bad):
    return {"indices": (bad, VALS, SHAPE, 0.0), "values": (IDX, bad, SHAPE, 0.0),
            "dense_shape": (IDX, VALS, bad, 0.0), "default_value": (IDX, VALS, SHAPE, bad)}


def raises_as_the_reference(sfer_op, ref_op, args, pattern):
    with pytest.raises(ValueError, match=pattern) as got:
        sfer_op(*args)
    with pytest.raises(ValueError) as want:
        ref_op(*args)
    assert str(got.value) == str(want.value)
    return str(got.value)


@pytest.mark.parametrize("name", ["reverse_index_map", "grad_values"])
def test_grad_dlpack_on_a_gpu_names_the_argument(name):
    bad = DLPackOnly(np.arange(4, dtype=np.int64 if name == "reverse_index_map" else np.float32),
                     device=(2, 1))
    msg = raises_as_the_reference(sfer.sparse_fill_empty_rows_grad,
                                  reference.sparse_fill_empty_rows_grad, grad_cases(bad)[name],
                                  rf"^{name} is on a CUDA device \(DLPack device type 2, id 1\)")
    assert "copy it to the CPU" in msg
    assert bad.exports == 0  # refused before asking for the memory


@pytest.mark.parametrize("name", ["indices", "values", "dense_shape", "default_value"])
def test_fill_dlpack_on_a_gpu_names_the_argument(name):
    real = {"indices": IDX, "values": VALS, "dense_shape": SHAPE,
            "default_value": np.array(0.0)}[name]
    bad = DLPackOnly(real, device=(10, 0))
    raises_as_the_reference(sfer.sparse_fill_empty_rows, reference.sparse_fill_empty_rows,
                            fill_cases(bad)[name], rf"^{name} is on a ROCm device")


class _DLDevice(ctypes.Structure):
    _fields_ = [("device_type", ctypes.c_int32), ("device_id", ctypes.c_int32)]


class _DLDataType(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint8), ("bits", ctypes.c_uint8), ("lanes", ctypes.c_uint16)]


class _DLTensor(ctypes.Structure):
    _fields_ = [("data", ctypes.c_void_p), ("device", _DLDevice), ("ndim", ctypes.c_int32),
                ("dtype", _DLDataType), ("shape", ctypes.POINTER(ctypes.c_int64)),
                ("strides", ctypes.POINTER(ctypes.c_int64)), ("byte_offset", ctypes.c_uint64)]


class _DLManagedTensor(ctypes.Structure):
    _fields_ = [("dl_tensor", _DLTensor), ("manager_ctx", ctypes.c_void_p),
                ("deleter", ctypes.c_void_p)]


_CAPSULE_NAME = b"dltensor"  # PyCapsule keeps a pointer to its name: alive for the module
_capsule_new = ctypes.PYFUNCTYPE(ctypes.py_object, ctypes.c_void_p, ctypes.c_char_p,
                                 ctypes.c_void_p)(("PyCapsule_New", ctypes.pythonapi))


class HandMadeCapsule:
    """A DLPack producer whose capsule describes ``a``'s memory with another device or dtype
    than ``a`` has, while ``__dlpack_device__`` claims the CPU: what NumPy itself refuses
    (it then never reads the memory, so the capsule is never consumed)."""

    def __init__(self, a, device_type, code, bits):
        self._a = a
        self._shape = (ctypes.c_int64 * 1)(a.size)
        tensor = _DLTensor(a.ctypes.data, _DLDevice(device_type, 0), 1,
                           _DLDataType(code, bits, 1), self._shape, None, 0)
        self._managed = _DLManagedTensor(tensor, None, None)

    def __dlpack__(self, **kwargs):
        return _capsule_new(ctypes.addressof(self._managed), _CAPSULE_NAME, None)

    def __dlpack_device__(self):
        return (1, 0)


@pytest.mark.parametrize("what", ["a CUDA capsule", "a 24-bit float capsule"])
def test_dlpack_that_numpy_refuses_names_the_argument(what):
    a = np.arange(4, dtype=np.float32)
    # (a kDLBfloat capsule was the second case, but NumPy 2.5 with ml_dtypes imports it as
    # bfloat16; no NumPy has a 24-bit float)
    bad = (HandMadeCapsule(a, 2, 2, 32) if what == "a CUDA capsule"
           else HandMadeCapsule(a, 1, 2, 24))  # kDLFloat, 24 bits: no NumPy dtype
    for name, args in grad_cases(bad).items():
        raises_as_the_reference(sfer.sparse_fill_empty_rows_grad,
                                reference.sparse_fill_empty_rows_grad, args,
                                rf"^{name} could not be converted to an array: np.from_dlpack: ")
    raises_as_the_reference(sfer.sparse_fill_empty_rows, reference.sparse_fill_empty_rows,
                            fill_cases(bad)["values"],
                            r"^values could not be converted to an array: np.from_dlpack: ")


def test_a_dtype_dlpack_cannot_export_names_the_argument():
    bad = DLPackOnly(np.array(["2020-01-01", "2021-01-01"], "M8[D]"))
    raises_as_the_reference(sfer.sparse_fill_empty_rows, reference.sparse_fill_empty_rows,
                            fill_cases(bad)["values"],
                            r"^values could not be converted to an array: np.from_dlpack: ")


def test_objects_numpy_does_not_know_fail_as_before():
    # no array protocol: np.asarray wraps them whole (shape ()), and the words are as before;
    # bytes too are one bytes scalar to NumPy, not a buffer (memoryview(b) is one)
    for bad in (object(), b"\x00" * 16):
        with pytest.raises(ValueError, match=r"^grad_values must be 1-D, got shape \(\)$"):
            sfer.sparse_fill_empty_rows_grad(RIM, bad)
    with pytest.raises(ValueError, match=r"^values must be a vector \(1-D\), got shape \(\)$"):
        sfer.sparse_fill_empty_rows(IDX, object(), SHAPE, 0.0)


# ----------------------------------------------------------------------------- PyTorch


def test_torch_cpu_tensors_are_views():
    torch = pytest.importorskip("torch")  # optional: not a test requirement
    g = torch.arange(10, dtype=torch.float32)
    rim = torch.tensor([0, 1, 3, 4, 4, 7], dtype=torch.int32)
    same_grad(sfer.sparse_fill_empty_rows_grad(rim, g),
              reference.sparse_fill_empty_rows_grad(rim.numpy(), g.numpy()))
    vals = torch.tensor(VALS)
    res = sfer.sparse_fill_empty_rows(torch.tensor(IDX), vals, torch.tensor(SHAPE), 0.0)
    assert np.shares_memory(res.output_values, vals.numpy())
