"""Building blocks the sfer tests share: dtype names and dtypes, input layouts, output
buffers, the kernel's constants, and which path a call took.

Imported as ``helpers`` (tests/ is on sys.path, see conftest.py), like ``checks`` and
``reference``.  Everything here comes from sfer itself where sfer has it: the dtype names
from ``sfer._dtypes`` (the one table of supported dtypes), the constants from
``sfer._grad._constants()`` and the path from ``sfer._grad._last_path()``; none is a copy.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Optional, Tuple

import numpy as np
import pytest

import sfer
import sfer._grad
import sfer._runtime
from oracle import first_bad
from sfer import _dtypes

__all__ = [
    "BFLOAT16", "GRAD_NAMES", "AVAILABLE_GRAD_NAMES", "FLOAT_NAMES", "COMPLEX_NAMES",
    "INT_NAMES", "INEXACT_NAMES", "MAP_NAMES", "dtype_of",
    "LAYOUTS", "ARRAY_LAYOUTS", "apply_layout", "unaligned", "sentinel_like",
    "CONSTANTS", "BLOCK", "SERIAL_BELOW", "MAX_WINDOW", "MAX_BITMAPS", "NEAR_AHEAD",
    "FAR_AHEAD", "FAR_BYTES", "STREAM_BYTES", "LANES", "MAP_AHEAD", "SCREEN", "MAX_THREADS",
    "STRING_DTYPE", "same", "FILL_RULES", "broken_fill_inputs",
    "PATHS", "ran_path", "expect_path", "threads_used", "block_ids", "is_block_ordered",
    "expected_path", "assert_path",
]

# ---------------------------------------------------------------------------------------------
# dtypes

#: numpy's bfloat16 dtype (ml_dtypes), or None without ml_dtypes
BFLOAT16 = _dtypes.bfloat16()
#: every grad_values dtype name sfer supports, in the documented order ("bfloat16" needs
#: ml_dtypes: ``dtype_of`` skips the test without it)
GRAD_NAMES: Tuple[str, ...] = _dtypes.GRAD_VALUE_NAMES
#: the grad_values dtype names this environment has (bfloat16 only with ml_dtypes): for
#: hypothesis strategies, which cannot skip one example
AVAILABLE_GRAD_NAMES = tuple(n for n in GRAD_NAMES if n != "bfloat16" or BFLOAT16 is not None)


def _kind(name: str) -> str:
    return "f" if name == "bfloat16" else np.dtype(name).kind


#: NumPy's own real floats (bfloat16 apart: it is optional)
FLOAT_NAMES = tuple(n for n in GRAD_NAMES if _kind(n) == "f" and n != "bfloat16")
COMPLEX_NAMES = tuple(n for n in GRAD_NAMES if _kind(n) == "c")
INT_NAMES = tuple(n for n in GRAD_NAMES if _kind(n) in "iu")
#: every float and complex name, bfloat16 included (``dtype_of`` skips it without ml_dtypes)
INEXACT_NAMES = tuple(n for n in GRAD_NAMES if _kind(n) in "fc")
assert set(GRAD_NAMES) == set(FLOAT_NAMES + COMPLEX_NAMES + INT_NAMES + ("bfloat16",)), (
    "a grad_values dtype of sfer._dtypes that none of the tests' lists holds")

#: every reverse_index_map dtype (the op takes these integer dtypes; sfer._dtypes lists only
#: grad_values dtypes)
MAP_NAMES = ("int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64")


def dtype_of(name: str) -> np.dtype:
    """The dtype of a name of ``GRAD_NAMES`` (``sfer._dtypes.resolve``: bfloat16 through
    ml_dtypes).  Without ml_dtypes, "bfloat16" skips the calling test."""
    try:
        return _dtypes.resolve(name)
    except ValueError:
        pytest.skip("bfloat16 needs ml_dtypes")


# ---------------------------------------------------------------------------------------------
# Input layouts

#: every layout ``apply_layout`` presents a 1-D array in
LAYOUTS = (
    "contiguous",
    "strided",
    "reversed",
    "byteswapped",
    "byteswapped_strided",
    "readonly",
    "unaligned",
    "readonly_unaligned_byteswapped",
    "list",
)
#: the layouts that are ndarrays (all but "list")
ARRAY_LAYOUTS = tuple(lay for lay in LAYOUTS if lay != "list")


def unaligned(a, *, dtype=None, writeable: bool = True) -> np.ndarray:
    """A copy of the 1-D array ``a`` (converted to ``dtype``, e.g. a byte-swapped one) at an
    odd byte offset of a uint8 buffer (the result's ``.base``): unaligned for items wider than
    one byte (NumPy calls an empty array aligned).  ``writeable=False``: read-only."""
    a = np.asarray(a)
    dt = a.dtype if dtype is None else np.dtype(dtype)
    raw = np.zeros(a.shape[0] * dt.itemsize + 1, dtype=np.uint8)
    view = raw[1:].view(dt)
    view[...] = a
    assert dt.itemsize == 1 or a.shape[0] == 0 or not view.flags.aligned
    view.setflags(write=writeable)
    return view


def apply_layout(arr: np.ndarray, layout: str, rng: Optional[np.random.Generator] = None):
    """``arr`` (1-D, native byte order) presented in ``layout`` (one of ``LAYOUTS``); returns
    (object to pass, owner), where owner is the ndarray (or list) whose contents must survive
    the call unchanged.  The strided layouts take a step of 2 or 3 from ``rng`` (2 without);
    byte-swapping a 1-byte dtype leaves it as it is."""
    if layout == "list":
        obj = arr.tolist()
        return obj, obj
    swapped = arr.dtype.newbyteorder("S") if arr.dtype.itemsize > 1 else arr.dtype
    if layout == "contiguous":
        a = arr.copy()
        return a, a
    if layout in ("strided", "byteswapped_strided", "reversed"):
        if layout == "reversed":
            step = 1
        else:
            step = 2 if rng is None else int(rng.integers(2, 4))
        dt = swapped if layout == "byteswapped_strided" else arr.dtype
        buf = np.zeros(arr.shape[0] * step + 1, dtype=dt)
        view = buf[1::step][: arr.shape[0]] if layout != "reversed" else buf[1:][::-1]
        view[...] = arr
        return view, buf
    if layout == "byteswapped":
        a = arr.astype(swapped)
        return a, a
    if layout == "readonly":
        a = arr.copy()
        a.setflags(write=False)
        return a, a
    if layout in ("unaligned", "readonly_unaligned_byteswapped"):
        swap = layout == "readonly_unaligned_byteswapped"
        view = unaligned(arr, dtype=swapped if swap else None, writeable=not swap)
        return view, view.base
    raise ValueError(f"unknown layout {layout!r}")


def sentinel_like(n: int, dtype) -> np.ndarray:
    """An output buffer whose every byte is 0xA5 (non-zero bits, whatever the dtype)."""
    out = np.empty(n, dtype=dtype)
    out.view(np.uint8)[...] = 0xA5
    return out


# ---------------------------------------------------------------------------------------------
# The kernel's constants (sfer/_grad.pyx), for tests that aim at a threshold

CONSTANTS = sfer._grad._constants()
BLOCK = CONSTANTS["BLOCK"]  # positions per summation block
SERIAL_BELOW = CONSTANTS["SERIAL_BELOW"]  # N + N_full below this runs on one thread
MAX_WINDOW = CONSTANTS["MAX_WINDOW"]  # blocks per window of a single-threaded block walk
MAX_BITMAPS = CONSTANTS["MAX_BITMAPS"]  # marking path: up to this many threads, own bitmaps
NEAR_AHEAD = CONSTANTS["NEAR_AHEAD"]  # marking path: prefetch distance into L1 (entries)
FAR_AHEAD = CONSTANTS["FAR_AHEAD"]  # ... into L2, for grad_values from FAR_BYTES up
FAR_BYTES = CONSTANTS["FAR_BYTES"]
STREAM_BYTES = CONSTANTS["STREAM_BYTES"]  # outputs from this size up: non-temporal stores
LANES = CONSTANTS["LANES"]  # lanes of a block sum (complex: LANES // 2 per part)
MAP_AHEAD = CONSTANTS["MAP_AHEAD"]  # block walk: map prefetch distance (entries)
SCREEN = CONSTANTS["SCREEN"]  # entries the block-order screen checks at the start (and spread)
MAX_THREADS = CONSTANTS["MAX_THREADS"]  # num_threads above this is taken as this


# ---------------------------------------------------------------------------------------------
# Which path a call took

#: the kernel's paths, as sfer._grad._last_path() names them
PATHS = ("block_walk", "bitmaps", "bytes")

# Small calls (run on one thread) that set the hook to a known path: a one-entry map (the block
# walk), and a map whose second entry lies in an earlier block than its first, over more
# blocks than one window holds (the marking path).
_PRIMERS = {
    "block_walk": (np.zeros(1, np.int64), np.zeros(1, np.float32)),
    "bitmaps": (np.array([MAX_WINDOW * BLOCK, 0], np.int64),
                np.zeros(MAX_WINDOW * BLOCK + 1, np.float32)),
}


def ran_path(fn: Callable[[], Any], *, unlike: str = "block_walk") -> Tuple[Any, str]:
    """Call ``fn()`` (which makes one op call) and return (its result, the path its kernel call
    took: "block_walk", "bitmaps" or "bytes").

    ``sfer._grad._last_path()`` keeps the previous call's path when a call never reaches the
    kernel, so a stale value could pass for fn's.  A small call on the path ``unlike``
    ("block_walk" or "bitmaps") sets the hook first: pass a path fn must not take, and a call
    that did not reach the kernel reads as ``unlike``, never as the path expected of it.
    """
    rim, g = _PRIMERS[unlike]
    sfer.sparse_fill_empty_rows_grad(rim, g, num_threads=1)
    assert sfer._grad._last_path() == unlike, "the path hook did not take the primer's path"
    res = fn()
    return res, sfer._grad._last_path()


def expect_path(path: str, fn: Callable[[], Any]) -> Any:
    """``fn()``'s result, asserting that its kernel call took ``path`` (one of ``PATHS``)."""
    assert path in PATHS, path
    res, got = ran_path(fn, unlike="bitmaps" if path == "block_walk" else "block_walk")
    assert got == path, f"expected the {path} path, the call took {got}"
    return res


def threads_used() -> int:
    """The thread count the latest kernel call ran with (``sfer._runtime._last_threads()``:
    after the small-input rule, before the cap of one thread per block)."""
    return sfer._runtime._last_threads()


def block_ids(rim) -> np.ndarray:
    """The block (``entry // BLOCK``) of every entry of a map."""
    return np.asarray(rim).astype(np.int64) // BLOCK


def is_block_ordered(rim) -> bool:
    """Whether the entries' blocks never decrease (what the block walk needs)."""
    b = block_ids(rim)
    return bool(np.all(b[1:] >= b[:-1]))


def _path_rule(rim, n_full: int) -> Callable[[int], str]:
    """The kernel's choice of path for ``rim`` over ``n_full`` positions (N_full > 0), as a
    function of the threads the call runs with (sfer/_grad.pyx, ``run_grad``):

    * threads are capped at one per block;
    * an in-range, block-ordered map takes the block walk; so does any in-range map with one
      thread and at most ``MAX_WINDOW`` blocks (a single window, no screen);
    * any other map (one with an out-of-range entry included) takes the marking path: a bitmap
      per thread up to ``MAX_BITMAPS`` threads ("bitmaps"), one shared byte array past that
      ("bytes"); past ``MAX_BITMAPS`` threads the marking threads are first capped at the CPUs
      (``sfer._runtime._runnable_cpus()``, which tests set with ``_set_cpus``).
    """
    rim = np.asarray(rim)
    if rim.size == 0 and rim.dtype.kind not in "iu":
        rim = rim.astype(np.int64)
    nb = -(-n_full // BLOCK)
    in_range = first_bad(rim, n_full) is None
    ordered = in_range and is_block_ordered(rim)

    cpus = sfer._runtime._runnable_cpus()

    def rule(threads: int) -> str:
        nt = max(1, min(threads, nb))
        if in_range and (ordered or (nt == 1 and nb <= MAX_WINDOW)):
            return "block_walk"
        if nt > MAX_BITMAPS:
            nt = max(1, min(nt, cpus))
        return "bytes" if nt > MAX_BITMAPS else "bitmaps"

    return rule


def expected_path(rim, n_full: int, threads: int) -> str:
    """The path the kernel takes for ``rim`` over ``n_full`` (> 0) positions on ``threads``
    threads (see ``_path_rule``)."""
    return _path_rule(rim, n_full)(threads)


def assert_path(fn: Callable[[], Any], rim, n_full: int, num_threads=None) -> Any:
    """Call ``fn()`` (one op call with map ``rim``, ``n_full`` positions and ``num_threads``)
    and return its result, asserting that its kernel call took the path ``expected_path``
    gives for the threads it ran with.  N_full = 0 reaches no kernel: nothing is asserted."""
    if n_full == 0:
        return fn()
    rule = _path_rule(rim, n_full)
    work = len(rim) + n_full
    if work < SERIAL_BELOW:
        planned = 1
    else:
        planned = sfer.get_num_threads() if num_threads is None else int(num_threads)
    unlike = "bitmaps" if rule(planned) == "block_walk" else "block_walk"
    res, got = ran_path(fn, unlike=unlike)
    used = threads_used()  # the primer's 1 if fn never reached the kernel
    want = rule(used)
    assert want != unlike, (f"the call ran with {used} threads, not {planned}: its path cannot "
                            "be told from the primer's")
    assert got == want, (f"the call took the {got} path, expected {want} "
                         f"(N={len(rim)}, N_full={n_full}, {used} threads)")
    return res


# ---------------------------------------------------------------------------------------------
# The forward op: comparing results, and its input rules one by one

#: NumPy 2's StringDType, or None
STRING_DTYPE = getattr(getattr(np, "dtypes", None), "StringDType", None)


def same(actual, expected):
    """Every output of a FillResult equal to the reference's: dtype, shape and bits (objects:
    the very same objects)."""
    assert isinstance(actual, sfer.FillResult)
    for name in sfer.FillResult._fields:
        a, e = getattr(actual, name), getattr(expected, name)
        assert a.dtype == e.dtype and a.shape == e.shape, (name, a.dtype, e.dtype, a.shape)
        if e.dtype.hasobject or e.dtype.kind == "T":
            assert all(x is y or x == y for x, y in zip(a.tolist(), e.tolist())), name
        else:
            assert a.tobytes() == e.tobytes(), name


# The base inputs of the rules below (valid: rows 0 and 2 of 3, row 1 empty)
_I = np.array([[0, 0], [2, 1]], np.int64)
_V = np.array([1.0, 2.0], np.float32)
_S = np.array([3, 3], np.int64)
_D = np.float32(0.0)


def _m1(c):  # dense_shape is not a vector
    c["S"] = c["S"].reshape(1, -1)


def _m2(c):  # indices is not a matrix
    c["I"] = c["I"].reshape(-1)


def _m3(c):  # values is not a vector
    c["V"] = c["V"].reshape(-1, 1)


def _m4(c):  # len(values) != indices.shape[0]
    c["V"] = c["V"][:1]


def _m5(c):  # len(dense_shape) != indices.shape[1]
    c["S"] = np.append(c["S"], 3)


def _m6(c):  # default_value is not a scalar
    c["D"] = np.array([c["D"]])


def _m7(c):  # dense_shape is empty (indices [N, 0] so that rule 5 holds)
    c["I"], c["S"] = c["I"][:, :0], c["S"][:0]


def _m8(c):  # dense_shape[0] < 0
    c["S"] = c["S"].copy()
    c["S"][0] = -1


def _m9(c):  # a row out of range
    c["I"] = c["I"].copy()
    c["I"][1, 0] = 99


#: (mutation, exception, message) of each input rule of the forward op, in TensorFlow's
#: order (tests/test_fill_reference.py, tests/test_fill_basic.py)
FILL_RULES = [
    (_m1, ValueError, r"^dense_shape must be a vector \(1-D\), got shape \(1, 2\)$"),
    (_m2, ValueError, r"^indices must be a matrix \(2-D, \[N, R\]\), got shape \(4,\)$"),
    (_m3, ValueError, r"^values must be a vector \(1-D\), got shape \(2, 1\)$"),
    (_m4, ValueError, r"^values has length 1 but indices has shape \(2, 2\): len\(values\) "
                      r"must equal indices.shape\[0\]$"),
    (_m5, ValueError, r"^dense_shape has length 3 but indices has shape \(2, 2\): "
                      r"len\(dense_shape\) must equal indices.shape\[1\]$"),
    (_m6, ValueError, r"^default_value must be a scalar, got shape \(1,\)$"),
    (_m7, ValueError, r"^dense_shape must not be empty, got shape \(0,\)$"),
    (_m8, ValueError, r"^dense_shape\[0\] must be >= 0, got -1 \(dense_shape = \[-1, 3\]\)$"),
    (_m9, IndexError, r"^indices\[1, 0\] = 99 is out of range \[0, 3\)$"),
]


def broken_fill_inputs(*rules: int) -> Dict[str, Any]:
    """The base inputs with the given rules broken (the later rules' mutations first)."""
    c: Dict[str, Any] = dict(I=_I.copy(), V=_V.copy(), S=_S.copy(), D=_D)
    for k in sorted(rules, reverse=True):
        FILL_RULES[k][0](c)
    return c
