"""Differential fuzzing of sfer.sparse_fill_empty_rows_grad against tests/oracle.py.

Each example draws a whole call at random:

* ``grad_values``: every supported dtype (bfloat16 through ml_dtypes included), N_full mostly
  0..5000 and sometimes 65,536..100,000 (the parallel path); values exact, random, with
  NaN/inf, or extreme;
* ``reverse_index_map``: every integer dtype; sorted, shuffled, block-shuffled, almost sorted,
  with duplicates, empty, longer than N_full; valid, or with out-of-range entries (too large,
  negative, the dtype's extremes) at random positions;
* the layout of each input: contiguous, strided, reversed, byte-swapped, read-only,
  unaligned, combinations of these, or a Python list;
* ``num_threads`` None, 1..4, 9 or 16 (more threads than the marking path's per-thread
  bitmaps: a shared byte array), and ``out=`` or not.

The outcome must match the reference: the same ``d_values`` bits and a ``d_default_value``
within the tolerance of tests/checks.py (bit-identical to a single-threaded call on a
contiguous copy and to the call with the map sorted), or the same exception type with the
same message (so the same first bad ``j``).  The inputs must come back unchanged, and an
``out=`` buffer zero-filled after an IndexError.

The default ("ci") hypothesis profile keeps this file fast.  For a soak run::

    HYPOTHESIS_PROFILE=long pytest tests/test_fuzz.py
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
from hypothesis import event, given, note, settings
from hypothesis.control import currently_in_test_context
from hypothesis import strategies as st

import sfer
from checks import assert_bits_equal, assert_same_fill, check_result, make_values
from helpers import (
    AVAILABLE_GRAD_NAMES,
    BFLOAT16,
    BLOCK,
    LAYOUTS,
    MAP_NAMES,
    MAX_BITMAPS,
    SERIAL_BELOW,
    apply_layout,
    dtype_of,
    sentinel_like,
)
from sfer import reference
from oracle import (
    first_bad,
    index_error_message,
    native,
    scalar_bits,
)

grad = sfer.sparse_fill_empty_rows_grad

MAP_KINDS = [
    "empty",
    "sorted_subset",
    "shuffled_subset",
    "block_shuffled",
    "almost_sorted",
    "duplicates",
    "sorted_duplicates",
    "all_permuted",
    "reversed",
    "longer_than_n_full",
    "single_last",
]

#: max_examples of the loaded profile (conftest.py loads "ci", or $HYPOTHESIS_PROFILE, before
#: this module is imported); each test runs a multiple of it, so "long" scales them all
EXAMPLES = settings.default.max_examples

# reference.round_float warns when an extreme sum rounds to inf: expected here
pytestmark = pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")


# ---------------------------------------------------------------------------------------------
# Building a case


def values_for(dtype: np.dtype, n: int, rng: np.random.Generator, flavor: str) -> np.ndarray:
    """grad_values of ``dtype`` whose sum cannot overflow float64 (so the tolerance of
    checks.check_sum applies), with NaN/inf for flavor "special"."""
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        if flavor == "special":  # the extremes, 0 and -1 (wrapping sums)
            pool = np.array([info.min, info.max, 0, info.max - 1, info.min + 1], dtype=dtype)
            return rng.choice(pool, size=n)
        return make_values(dtype, n, rng)
    if flavor == "exact":
        return make_values(dtype, n, rng, "exact")
    if flavor == "extreme":
        # large and tiny magnitudes, signed zeros; bounded so that float64 sums stay finite
        if dtype == np.float16:
            top = 6.0e4
        elif BFLOAT16 is not None and dtype == BFLOAT16 or dtype in (np.float32, np.complex64):
            top = 3.0e38
        else:
            top = 1.0e300
        mags = np.array([top, top / 3, 1.0, 1e-7, 6e-8, 1e-40, 1e-310, 0.0])
        x = rng.choice(mags, size=n) * rng.choice([-1.0, 1.0], size=n)
        if dtype.kind == "c":
            x = x + 1j * rng.choice(mags, size=n) * rng.choice([-1.0, 1.0], size=n)
        with np.errstate(all="ignore"):
            return x.astype(dtype)
    x = make_values(dtype, n, rng, "random")
    if flavor == "special" and n:
        k = int(rng.integers(1, 4))
        idx = rng.integers(0, n, size=k)
        specials = rng.choice(np.array([np.nan, np.inf, -np.inf]), size=k)
        if dtype.kind == "c":
            x = x.copy()
            part = x.real if rng.random() < 0.5 else x.imag
            part[idx] = specials
        else:
            x[idx] = specials.astype(dtype)
    return x


def valid_map(kind: str, cap: int, n_full: int, rng: np.random.Generator, size_hint: float):
    """An int64 map with entries in [0, cap) (cap: positions the map dtype can address)."""
    if cap == 0 or kind == "empty":
        return np.zeros(0, dtype=np.int64)
    m = int(size_hint * cap)
    if kind in ("sorted_subset", "shuffled_subset", "block_shuffled", "almost_sorted"):
        rim = np.sort(rng.choice(cap, size=min(m, cap), replace=False))
        if kind == "shuffled_subset":
            rim = rng.permutation(rim)
        elif kind == "block_shuffled":  # block-ordered, not sorted
            blocks = rim // BLOCK
            rim = rim[np.lexsort((rng.random(rim.size), blocks))]
        elif kind == "almost_sorted" and rim.size >= 2:  # one far swap: not block-ordered late
            i, j = sorted(rng.choice(rim.size, size=2, replace=False))
            rim[[i, j]] = rim[[j, i]]
        return rim
    if kind in ("duplicates", "sorted_duplicates"):
        rim = rng.integers(0, cap, size=m + 1)
        rim[: min(4, rim.size)] = rim[0]
        return np.sort(rim) if kind == "sorted_duplicates" else rim
    if kind == "all_permuted":
        return rng.permutation(cap)
    if kind == "reversed":
        return np.arange(cap)[::-1].copy()
    if kind == "longer_than_n_full":
        return rng.integers(0, cap, size=min(2 * n_full + 3, 200_000))
    assert kind == "single_last"
    return np.array([cap - 1])


def bad_values(idtype: np.dtype, n_full: int) -> list[int]:
    """Out-of-range entries the map dtype can hold."""
    info = np.iinfo(idtype)
    cands = [n_full, n_full + 1, n_full + BLOCK, 2 * n_full + 7, int(info.max)]
    if idtype.kind == "i":
        cands += [-1, -2, -n_full - 1, int(info.min)]
    if idtype == np.uint64:
        cands += [2**63, 2**64 - 1, 2**32 + n_full]
    if idtype == np.int64:
        cands += [2**32, -(2**32)]
    return sorted({v for v in cands if info.min <= v <= info.max and not 0 <= v < n_full})


def snapshot(owner):
    if isinstance(owner, list):
        return list(owner)
    return owner.tobytes()


def assert_unchanged(owner, snap, name: str) -> None:
    if isinstance(owner, list):
        assert len(owner) == len(snap) and all(a is b for a, b in zip(owner, snap)), (
            f"{name} (a list) was modified"
        )
    else:
        assert owner.tobytes() == snap, f"{name}'s buffer was modified"


@dataclass
class Case:
    value_name: str
    map_name: str
    n_full: int
    flavor: str
    map_kind: str
    bad: dict = field(default_factory=dict)  # position -> injected value
    g_layout: str = "contiguous"
    rim_layout: str = "contiguous"
    num_threads: Any = None
    use_out: bool = False
    seed: int = 0
    size_hint: float = 0.5  # map length relative to the addressable positions


@st.composite
def cases(draw, sizes, invalid: bool | None = None):
    """A Case; ``invalid`` True forces out-of-range entries, False forbids them, None: maybe."""
    value_name = draw(st.sampled_from(AVAILABLE_GRAD_NAMES))
    map_name = draw(st.sampled_from(MAP_NAMES))
    n_full = draw(sizes)
    flavor = draw(st.sampled_from(["exact", "random", "special", "extreme"]))
    map_kind = draw(st.sampled_from(MAP_KINDS))
    seed = draw(st.integers(0, 2**32 - 1))
    size_hint = draw(st.sampled_from([0.1, 0.5, 0.9, 1.0]))
    case = Case(value_name, map_name, n_full, flavor, map_kind, seed=seed, size_hint=size_hint)
    case.g_layout = draw(st.sampled_from(LAYOUTS))
    case.rim_layout = draw(st.sampled_from(LAYOUTS))
    # past MAX_BITMAPS threads the marking path's threads share a byte array
    case.num_threads = draw(st.sampled_from([None, 1, 2, 3, 4, MAX_BITMAPS + 1, 16]))
    case.use_out = draw(st.booleans())
    if invalid is None:
        invalid = draw(st.integers(0, 3)) == 0
    if invalid:
        cands = bad_values(np.dtype(map_name), n_full)
        if cands:
            k = draw(st.integers(1, 3))
            for _ in range(k):
                pos = draw(st.floats(0.0, 1.0))  # relative position in the map
                case.bad[pos] = draw(st.sampled_from(cands))
    return case


def build(case: Case):
    """(rim object, g object, rim owner, g owner, out or None) for a Case."""
    rng = np.random.default_rng(case.seed)
    vdtype = dtype_of(case.value_name)
    idtype = np.dtype(case.map_name)
    g = values_for(vdtype, case.n_full, rng, case.flavor)
    cap = min(case.n_full, int(np.iinfo(idtype).max) + 1)
    rim = valid_map(case.map_kind, cap, case.n_full, rng, case.size_hint)
    if case.bad:
        if rim.size == 0:
            rim = np.zeros(int(rng.integers(1, 6)), dtype=np.int64)
        rim = rim.astype(object)  # Python ints: 2**64 - 1 fits
        for pos, v in case.bad.items():
            rim[min(int(pos * rim.size), rim.size - 1)] = v
    rim = np.array(rim.tolist(), dtype=idtype) if rim.size else np.zeros(0, idtype)
    rim_obj, rim_owner = apply_layout(rim, case.rim_layout, rng)
    g_obj, g_owner = apply_layout(g, case.g_layout, rng)
    return rim_obj, g_obj, rim_owner, g_owner


def as_seen(rim_obj, g_obj):
    """The arrays sfer sees (README: np.asarray; an empty sequence map is int64)."""
    g_arr = np.asarray(g_obj)
    rim_arr = np.asarray(rim_obj)
    if not isinstance(rim_obj, np.ndarray) and rim_arr.size == 0:
        rim_arr = rim_arr.astype(np.int64)
    return rim_arr, g_arr


# ---------------------------------------------------------------------------------------------
# The differential check


def _note(text: str) -> None:
    """hypothesis.note inside a hypothesis test; nothing elsewhere."""
    if currently_in_test_context():
        note(text)


def _event(text: str) -> None:
    """hypothesis.event (shown by --hypothesis-show-statistics) inside a hypothesis test."""
    if currently_in_test_context():
        event(text)


def run_case(case: Case) -> str:
    """Run one case against the reference; returns the outcome ("ok" or the exception name)."""
    _note(repr(case))
    rim_obj, g_obj, rim_owner, g_owner = build(case)
    rim_arr, g_arr = as_seen(rim_obj, g_obj)
    out_dtype = native(g_arr.dtype)
    n = rim_arr.shape[0]
    out = None
    if case.use_out:
        out = sentinel_like(n, out_dtype)
    snaps = snapshot(rim_owner), snapshot(g_owner)

    # what the reference says
    if rim_arr.dtype.kind not in "iu":
        expected_exc, expected_msg = TypeError, None  # a list that numpy made non-integer
    else:
        bad = first_bad(rim_arr, g_arr.shape[0])
        if bad is None:
            expected_exc = expected_msg = None
        else:
            expected_exc = IndexError
            expected_msg = index_error_message(bad[0], bad[1], g_arr.shape[0])
    _note(f"N={n} N_full={g_arr.shape[0]} rim {rim_arr.dtype} g {g_arr.dtype}: "
         f"expect {expected_exc.__name__ if expected_exc else 'success'}")

    try:
        res = grad(rim_obj, g_obj, num_threads=case.num_threads, out=out)
    except (TypeError, ValueError, IndexError) as exc:
        assert expected_exc is not None, f"unexpected {type(exc).__name__}: {exc}"
        assert type(exc) is expected_exc, f"expected {expected_exc.__name__}, got {exc!r}"
        if expected_msg is not None:
            assert str(exc) == expected_msg
        else:
            assert "reverse_index_map" in str(exc)
        if out is not None and expected_exc is IndexError:
            assert not out.view(np.uint8).any(), "out= must be zero-filled after IndexError"
        assert_unchanged(rim_owner, snaps[0], "reverse_index_map")
        assert_unchanged(g_owner, snaps[1], "grad_values")
        _event(f"outcome: {expected_exc.__name__}")
        return expected_exc.__name__
    assert expected_exc is None, f"expected {expected_exc.__name__} ({expected_msg}), got {res}"
    assert_unchanged(rim_owner, snaps[0], "reverse_index_map")
    assert_unchanged(g_owner, snaps[1], "grad_values")

    check_result(res, rim_arr, g_arr)  # d_values bits + sum within checks.py's tolerance
    if out is not None:
        assert res.d_values is out
    # bit-identical for every thread count, layout and map order
    g_c = np.ascontiguousarray(g_arr.astype(out_dtype))
    rim_c = np.ascontiguousarray(rim_arr.astype(native(rim_arr.dtype)))
    serial = grad(rim_c, g_c, num_threads=1)
    assert_bits_equal(serial.d_values, res.d_values)
    assert scalar_bits(serial.d_default_value) == scalar_bits(res.d_default_value)
    sorted_sum = grad(np.sort(rim_c), g_c, num_threads=case.num_threads).d_default_value
    assert scalar_bits(sorted_sum) == scalar_bits(res.d_default_value)
    _event("outcome: ok")
    _event("parallel-sized" if n + g_arr.shape[0] >= SERIAL_BELOW else "serial-sized")
    return "ok"


SMALL = st.one_of(st.integers(0, 70), st.integers(0, 5000))
MIXED = st.one_of(st.integers(0, 70), st.integers(0, 5000), st.integers(0, 5000),
                  st.integers(SERIAL_BELOW, 100_000))
PARALLEL = st.integers(SERIAL_BELOW - 2000, 100_000)


@settings(max_examples=4 * EXAMPLES)
@given(cases(MIXED))
def test_fuzz_differential(case):
    run_case(case)


@settings(max_examples=2 * EXAMPLES)
@given(cases(SMALL, invalid=True))
def test_fuzz_invalid_maps(case):
    outcome = run_case(case)
    if case.bad:
        # every injected value is out of range, so the call must fail (a list map that numpy
        # turned into a non-integer array: TypeError)
        assert outcome in ("IndexError", "TypeError")


@settings(max_examples=max(10, EXAMPLES // 2))
@given(cases(PARALLEL))
def test_fuzz_parallel_sizes(case):
    run_case(case)


@given(cases(st.integers(0, 3), invalid=None))
def test_fuzz_tiny_and_empty(case):
    run_case(case)


def test_fuzz_harness_detects_a_wrong_result(monkeypatch):
    """The differential check is not vacuous: a wrong sum, a wrong d_values bit or a wrong
    first bad j makes run_case fail."""
    import sys

    good = Case("float64", "int64", 100, "exact", "shuffled_subset", seed=1)
    bad = Case("float32", "int32", 50, "exact", "sorted_subset", bad={0.5: -1}, seed=2)
    assert run_case(good) == "ok"
    assert run_case(bad) == "IndexError"
    real = sfer.sparse_fill_empty_rows_grad

    def sum_plus_one(rim, g, *, num_threads=None, out=None):
        r = real(rim, g, num_threads=num_threads, out=out)
        return sfer.GradResult(r.d_values, r.d_default_value + 1)

    def flip_a_bit(rim, g, *, num_threads=None, out=None):
        r = real(rim, g, num_threads=num_threads, out=out)
        d = r.d_values.copy()
        d.view(np.uint8)[0] ^= 1
        return sfer.GradResult(d, r.d_default_value)

    def wrong_j(rim, g, *, num_threads=None, out=None):
        try:
            return real(rim, g, num_threads=num_threads, out=out)
        except IndexError as exc:
            j, rest = re.fullmatch(r"reverse_index_map\[(\d+)\](.*)", str(exc)).groups()
            raise IndexError(f"reverse_index_map[{int(j) + 1}]{rest}") from None

    module = sys.modules[__name__]
    for fake, case in ((sum_plus_one, good), (flip_a_bit, good), (wrong_j, bad)):
        monkeypatch.setattr(module, "grad", fake)
        try:
            run_case(case)
        except AssertionError:
            pass
        else:
            raise AssertionError(f"the fuzz harness accepted {fake.__name__}")


# =============================================================================================
# The forward op: sfer.sparse_fill_empty_rows against sfer.reference.sparse_fill_empty_rows
#
# Each example draws a whole call: indices [N, R] (N mostly 0..300, R 1..3) of an integer
# dtype in a layout, rows shuffled, sorted, sorted with every row used (the fast path),
# reversed, duplicated or in one row, sometimes out of range (negative, >= dense_rows, the
# dtype's extremes), the other columns anything the dtype holds; values of a dtype family in
# a layout; dense_shape [dense_rows (mostly 0..50, sometimes negative), ...]; a
# default_value that fits or not; num_threads 1, 2, 3, 16 or None.  About one example in
# five is above the serial threshold (N + dense_rows >= 65536: many empty rows, or many
# entries in few rows), so that the threaded paths run.  The outcome must be the
# reference's bit for bit (object values: the same objects), or the same exception with the
# same message; the inputs come back unchanged, and an output that shares memory with an
# input (the fast path's views) is read-only.

fill = sfer.sparse_fill_empty_rows

FILL_VALUE_NAMES = ("float32", "float64", "int8", "bool", "S", "U", "object") + (
    ("bfloat16",) if BFLOAT16 is not None else ())
FILL_INDEX_NAMES = ("int64", "int32", "uint16", "uint64", ">i8")
FILL_ORDERS = ("shuffled", "sorted", "sorted_full", "reversed", "duplicates", "one_row")
FILL_INDEX_LAYOUTS = ("contiguous", "fortran", "strided_columns", "strided_rows",
                      "negative_stride", "readonly", "list")
#: value layouts (helpers.LAYOUTS) that every dtype family can take; the byte-swapped and
#: unaligned ones only for NumPy's own fixed-size dtypes
FILL_VALUE_LAYOUTS = ("contiguous", "strided", "reversed", "readonly", "list")


@dataclass
class FillCase:
    n: int
    rank: int
    dense_rows: int
    order: str
    index_name: str
    index_layout: str
    value_name: str
    value_layout: str
    default_fits: bool = True
    bad: dict = field(default_factory=dict)  # relative position -> pick among the bad rows
    num_threads: Any = None
    shape_as: str = "list"  # "list", "int64" or "uint64" array
    seed: int = 0


@st.composite
def fill_cases(draw):
    size = draw(st.sampled_from(["small"] * 6 + ["many_rows", "many_entries"]))
    if size == "small":
        n, dense_rows = draw(st.integers(0, 300)), draw(st.integers(0, 50))
    elif size == "many_rows":  # above the serial threshold by its (mostly empty) rows
        n = draw(st.integers(0, 300))
        dense_rows = SERIAL_BELOW - n + draw(st.integers(0, 50))
    else:  # above the serial threshold by its entries, in few rows
        n, dense_rows = SERIAL_BELOW + draw(st.integers(0, 300)), draw(st.integers(1, 50))
    value_name = draw(st.sampled_from(FILL_VALUE_NAMES))
    layouts = FILL_VALUE_LAYOUTS + (  # (bytes and 1-byte items are never unaligned)
        ("byteswapped", "unaligned", "readonly_unaligned_byteswapped")
        if value_name in ("float32", "float64", "U") else ())
    index_layouts = FILL_INDEX_LAYOUTS
    if size == "many_entries":  # 65,536 entries as Python lists: slow, and nothing new
        layouts = tuple(x for x in layouts if x != "list")
        index_layouts = tuple(x for x in index_layouts if x != "list")
    case = FillCase(
        n, draw(st.integers(1, 3)), dense_rows, draw(st.sampled_from(FILL_ORDERS)),
        draw(st.sampled_from(FILL_INDEX_NAMES)), draw(st.sampled_from(index_layouts)),
        value_name, draw(st.sampled_from(layouts)),
        default_fits=draw(st.integers(0, 9)) > 0,
        num_threads=draw(st.sampled_from([1, 2, 3, 16, None])),
        shape_as=draw(st.sampled_from(["list", "int64", "uint64"])),
        seed=draw(st.integers(0, 2**32 - 1)))
    if draw(st.integers(0, 3)) == 0:  # rows out of range
        for _ in range(draw(st.integers(1, 3))):
            case.bad[draw(st.floats(0.0, 1.0))] = draw(st.integers(0, 2**16))
    if draw(st.integers(0, 19)) == 0:  # dense_shape[0] negative
        case.dense_rows = -draw(st.integers(1, 2**62))
    if case.dense_rows < 0 or (case.shape_as == "uint64" and case.index_name != "uint64"):
        case.shape_as = "list" if case.dense_rows < 0 else case.shape_as
    return case


def fill_bad_rows(dtype: np.dtype, dense_rows: int) -> list[int]:
    """Out-of-range rows ``dtype`` can hold."""
    info = np.iinfo(dtype)
    cands = [dense_rows, dense_rows + 1, dense_rows + 7, -1, -dense_rows - 1, int(info.min),
             int(info.max), 2**63, 2**64 - 1, I64_MIN]
    return sorted({v for v in cands
                   if info.min <= v <= info.max and not 0 <= v < max(dense_rows, 0)})


I64_MIN = int(np.iinfo(np.int64).min)


def fill_values_of(name: str, n: int, rng: np.random.Generator) -> np.ndarray:
    """n values of a dtype family: random bits (NaN payloads, -0.0, subnormals) for numbers,
    random strings, distinct objects."""
    if name in ("float32", "float64", "int8"):
        dt = np.dtype(name)
        return np.frombuffer(rng.bytes(n * dt.itemsize), dt).copy()
    if name == "bfloat16":
        return rng.integers(0, 2**16, n, dtype=np.uint16).view(BFLOAT16)
    if name == "bool":
        return rng.random(n) < 0.5
    if name in ("S", "U"):  # random lengths 0..width: the rest of each item is NUL
        width = int(rng.integers(1, 6))
        codes = (np.frombuffer(b"aZ0 x~", np.uint8) if name == "S"
                 else np.array([ord(ch) for ch in "aZ0 \u00e4\u20ac\U0001F600"], np.uint32))
        chars = rng.choice(codes, size=(n, width))
        chars[np.arange(width) >= rng.integers(0, width + 1, (n, 1))] = 0
        return np.ascontiguousarray(chars).view(f"{name}{width}")[:, 0]
    assert name == "object"
    vals = np.empty(n, dtype=object)
    pool = [None, 0, 1.5, "s", (1, 2)]
    vals[:] = [pool[i % 5] if i % 3 else [i] for i in range(n)]
    return vals


def fill_default_of(name: str, fits: bool, vals: np.ndarray, rng: np.random.Generator):
    """A default_value for values of family ``name``: one that converts (an element, a Python
    number, a longer string: widening), or one that does not (TypeError or ValueError)."""
    pick = int(rng.integers(0, 3))
    if name == "object":
        return [["the default"], None, 7][pick]  # anything goes for object values
    if not fits:
        return {"float32": ["x", 1e300, 1j][pick], "float64": ["x", b"1", 2j][pick],
                "int8": [300, float("nan"), -129][pick], "bool": [1, 0.5, "True"][pick],
                "bfloat16": [1e300, "x", 1j][pick], "S": ["str", 5, 1.5][pick],
                "U": [b"bytes", 5, 1.5][pick]}[name]
    if name in ("S", "U"):
        s = "dflt"[: int(rng.integers(0, 5))] + "x" * int(rng.integers(0, 4))
        return s.encode() if name == "S" else s
    if name == "bool":
        return [True, np.False_, np.bool_(True)][pick]
    if pick == 0 and vals.size:
        return vals[int(rng.integers(0, vals.size))]  # a NumPy scalar of the dtype
    if name == "int8":
        return int(rng.integers(-128, 128))
    return [float(rng.standard_normal()), float("nan"), -0.0][int(rng.integers(0, 3))]


def fill_rows_of(case: FillCase, rng: np.random.Generator) -> np.ndarray:
    n, dr = case.n, case.dense_rows
    if dr <= 0 or n == 0:
        return np.zeros(n, np.int64)  # every row out of range (IndexError) unless N = 0
    if case.order == "sorted_full" and n >= dr:
        return np.sort(np.concatenate([np.arange(dr), rng.integers(0, dr, n - dr)]))
    if case.order == "one_row":
        return np.full(n, rng.integers(0, dr))
    rows = rng.integers(0, dr, n)
    if case.order in ("sorted", "sorted_full"):
        return np.sort(rows)
    if case.order == "reversed":
        return np.sort(rows)[::-1].copy()
    if case.order == "duplicates":
        return np.repeat(rows[: -(-n // 4)], 4)[:n]  # each row 4 times in a run
    return rows


def build_fill_case(case: FillCase):
    """((indices, values, dense_shape, default_value), owners): the objects to pass, and the
    objects whose contents the call must leave unchanged."""
    rng = np.random.default_rng(case.seed)
    idtype = np.dtype(case.index_name)
    info = np.iinfo(idtype)
    rows = fill_rows_of(case, rng)
    if (rows.size and case.dense_rows > 0 and case.dense_rows - 1 > info.max):
        rows = rows % (int(info.max) + 1)  # rows the dtype holds (still in range)
    idx = np.zeros((case.n, case.rank), dtype=idtype)
    idx[:, 0] = rows
    if case.rank > 1:  # the other columns: anything the dtype holds, extremes included
        extremes = np.array([int(info.min), int(info.max), 0], dtype=idtype)
        cols = rng.integers(int(info.min), int(info.max), (case.n, case.rank - 1),
                            dtype=idtype.newbyteorder("="), endpoint=True)
        cols[rng.random(cols.shape) < 0.1] = rng.choice(extremes)
        idx[:, 1:] = cols
    cands = fill_bad_rows(idtype, case.dense_rows)  # none: uint16 rows below 65,536
    if case.bad and case.n and cands:
        for pos, k in case.bad.items():
            idx[min(int(pos * case.n), case.n - 1), 0] = cands[k % len(cands)]
    if case.order == "duplicates" and case.n >= 2:
        idx[1::2] = idx[::2][: case.n // 2]  # whole coordinates repeated
    vals = fill_values_of(case.value_name, case.n, rng)
    default = fill_default_of(case.value_name, case.default_fits, vals, rng)
    other_dims = [int(x) for x in rng.integers(-3, 10**6, case.rank - 1)]
    shape = [case.dense_rows] + other_dims
    if case.shape_as != "list":
        shape = np.array([max(d, 0) if case.shape_as == "uint64" else d for d in shape],
                         dtype=case.shape_as)

    # layouts
    if case.index_layout == "list":
        idx_obj = idx_owner = idx.tolist()
    elif case.index_layout == "fortran":
        idx_obj = idx_owner = np.asfortranarray(idx)
    elif case.index_layout == "strided_columns":
        idx_owner = np.zeros((case.n, 2 * case.rank), dtype=idtype)
        idx_owner[:, ::2] = idx
        idx_obj = idx_owner[:, ::2]
    elif case.index_layout == "strided_rows":
        idx_owner = np.repeat(idx, 2, axis=0)
        idx_obj = idx_owner[::2]
    elif case.index_layout == "negative_stride":
        idx_owner = idx[::-1].copy()
        idx_obj = idx_owner[::-1]
    else:
        idx_obj = idx_owner = idx.copy()
        if case.index_layout == "readonly":
            idx_obj.setflags(write=False)
    vals_obj, vals_owner = apply_layout(vals, case.value_layout, rng)
    return (idx_obj, vals_obj, shape, default), (idx_owner, vals_owner, shape)


def fill_snapshot(owner):
    if isinstance(owner, np.ndarray):  # object arrays: their references (the objects' identity)
        return owner.tobytes()
    return repr(owner) + repr([id(x) for x in owner])


def run_fill_case(case: FillCase) -> str:
    """One case against the reference; returns the outcome ("ok" or the exception name)."""
    _note(repr(case))
    args, owners = build_fill_case(case)
    snaps = [fill_snapshot(o) for o in owners]
    try:
        want, want_exc = reference.sparse_fill_empty_rows(*args), None
    except (TypeError, ValueError, IndexError) as exc:
        want, want_exc = None, exc
    _note(f"reference: {want_exc!r}" if want_exc else "reference: ok")
    try:
        got = fill(*args, num_threads=case.num_threads)
    except (TypeError, ValueError, IndexError) as exc:
        assert want_exc is not None, f"unexpected {exc!r}"
        assert (type(exc), str(exc)) == (type(want_exc), str(want_exc)), (
            f"sfer raised {exc!r}, the reference {want_exc!r}")
        outcome = type(exc).__name__
    else:
        assert want_exc is None, f"expected {want_exc!r}, got a result"
        assert_same_fill(got, want)
        for name, out in zip(got._fields, got):  # the fast path's views of the inputs
            if any(isinstance(a, np.ndarray) and np.shares_memory(out, a) for a in args):
                assert not out.flags.writeable, f"{name} is a writeable view of an input"
        outcome = "ok"
        if not got.output_indices.flags.writeable:
            _event("fill: the fast path (views)")
    assert [fill_snapshot(o) for o in owners] == snaps, "an input was modified"
    _event(f"fill outcome: {outcome}")
    _event("parallel-sized" if case.n + case.dense_rows >= SERIAL_BELOW else "serial-sized")
    return outcome


@settings(max_examples=2 * EXAMPLES)
@given(fill_cases())
def test_fuzz_fill_differential(case):
    run_fill_case(case)


def test_fuzz_fill_harness_detects_a_wrong_result(monkeypatch):
    """The fill check is not vacuous: a flipped output bit, a wrong first bad i, another
    object, or a writeable view of an input makes run_fill_case fail."""
    import sys

    good = FillCase(200, 2, 40, "shuffled", "int64", "contiguous", "float64", "contiguous",
                    num_threads=2, seed=1)
    bad = FillCase(70_000, 2, 30, "shuffled", "int64", "contiguous", "float32", "contiguous",
                   bad={0.95: 0, 0.99: 1}, num_threads=16, seed=2)
    objects = FillCase(50, 1, 60, "shuffled", "int32", "contiguous", "object", "contiguous",
                       seed=3)
    fast = FillCase(100, 2, 30, "sorted_full", "int64", "contiguous", "float32",
                    "contiguous", seed=4)
    assert [run_fill_case(c) for c in (good, bad, objects, fast)] == [
        "ok", "IndexError", "ok", "ok"]
    real = sfer.sparse_fill_empty_rows

    def flip_a_bit(*args, **kwargs):
        r = real(*args, **kwargs)
        v = r.output_values.copy()
        v.view(np.uint8)[-1] ^= 1
        return r._replace(output_values=v)

    def wrong_i(*args, **kwargs):
        try:
            return real(*args, **kwargs)
        except IndexError as exc:
            i, rest = re.fullmatch(r"indices\[(\d+)(.*)", str(exc)).groups()
            raise IndexError(f"indices[{int(i) + 1}{rest}") from None

    def copied_objects(*args, **kwargs):
        r = real(*args, **kwargs)
        v = np.array([x if x is None else list(x) if isinstance(x, list) else x
                      for x in r.output_values.tolist()] + [None], dtype=object)[:-1]
        v[0] = [v[0]] if v[0] is not None else 0
        return r._replace(output_values=v)

    def writeable_views(*args, **kwargs):
        r = real(*args, **kwargs)
        r.output_indices.flags.writeable = True  # the input behind it is writeable
        return r

    module = sys.modules[__name__]
    for fake, case in ((flip_a_bit, good), (wrong_i, bad), (copied_objects, objects),
                       (writeable_views, fast)):
        monkeypatch.setattr(module, "fill", fake)
        try:
            run_fill_case(case)
        except AssertionError:
            pass
        else:
            raise AssertionError(f"the fill harness accepted {fake.__name__}")
