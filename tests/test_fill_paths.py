"""The compiled forward op's three paths ("fast", "sorted", "counting"), each aimed at on
purpose and checked against sfer.reference bit for bit, serial and threaded (up to 16 threads
on any machine): the places where a path's bookkeeping could slip (gaps at the start, at the
end, across a thread's slice boundary, one row spanning every slice, no entries at all, the
counting path with fewer counting threads), and the C entry's own conversion of
``default_value``, which must agree with sfer._fill_inputs' rules."""

from __future__ import annotations

import numpy as np
import pytest

import sfer
import sfer._runtime
from helpers import SERIAL_BELOW, same
from sfer import _fill, reference

THREADS = (1, 2, 3, 16, 64)
BIG = 2 * SERIAL_BELOW  # entries: threaded


def rows_matrix(rows, rank=2, seed=0):
    rows = np.asarray(rows, dtype=np.int64)
    rng = np.random.default_rng(seed)
    return np.concatenate([rows[:, None], rng.integers(-3, 9, (rows.size, rank - 1))], axis=1)


def case(name, n):
    """(indices, dense_rows, the path it must take) for ``n`` entries."""
    rng = np.random.default_rng(n)
    if name == "gaps_everywhere":  # empty rows at the start, inside, at the end
        rows = np.sort(rng.integers(10, 3 * n, n))
        return rows_matrix(rows), 3 * n + 10, "sorted"
    if name == "one_long_gap":  # one gap longer than any thread's slice of entries
        rows = np.r_[np.zeros(n // 2, np.int64), np.full(n - n // 2, 5 * n)]
        return rows_matrix(rows), 5 * n + 1, "sorted"
    if name == "gap_at_each_boundary":  # rows jump at every slice boundary of 2, 3, 16 threads
        rows = np.zeros(n, np.int64)
        for t in (2, 3, 16):
            for k in range(1, t):
                rows[k * n // t:] += 2
        return rows_matrix(rows), int(rows[-1]) + 3, "sorted"
    if name == "gap_only_at_end":  # rows 0.. all full, then empty rows: no gap among entries
        return rows_matrix(np.repeat(np.arange(n // 2), 2)), n // 2 + 3, "sorted"
    if name == "one_row":  # every entry in one row, the other rows empty
        return rows_matrix(np.full(n, 7)), 11, "sorted"
    if name == "no_entries":  # only defaults (threaded through dense_rows alone)
        return rows_matrix(np.zeros(0, np.int64), rank=3), n, "sorted"
    if name == "every_row_once":
        return rows_matrix(np.arange(n), rank=1), n, "fast"
    if name == "every_row_twice":
        return rows_matrix(np.repeat(np.arange(n // 2), 2)), n // 2, "fast"
    if name == "shuffled":
        return rows_matrix(rng.integers(0, n // 2, n)), n // 2, "counting"
    if name == "one_step_down":  # sorted but for one entry: the counting path
        rows = np.sort(rng.integers(0, n // 2, n))
        rows[n // 2], rows[n // 2 + 1] = rows[n // 2 + 1] + 1, rows[n // 2]
        return rows_matrix(rows), n // 2 + 2, "counting"
    if name == "down_by_one_late":  # sorted but for one step down by 1, after 20 entries
        rows = np.r_[np.arange(20) // 2, 8, np.sort(rng.integers(8, 12, n - 21))]
        return rows_matrix(rows), 12, "counting"
    if name == "few_entries_many_rows":  # counters would outweigh the outputs: fewer counters
        return rows_matrix(rng.integers(0, 40 * n, 64)), 40 * n, "counting"
    raise ValueError(name)


CASES = ["gaps_everywhere", "one_long_gap", "gap_at_each_boundary", "gap_only_at_end",
         "one_row", "no_entries",
         "every_row_once", "every_row_twice", "shuffled", "one_step_down", "down_by_one_late",
         "few_entries_many_rows"]


COUNTING = ["shuffled", "one_step_down", "down_by_one_late", "few_entries_many_rows"]


@pytest.fixture
def wide_counters(request):
    """The counting path's counters: int32 (whenever N + dense_rows < 2**31), or, for the
    "wide" cases, int64 (which otherwise needs inputs too big for a test)."""
    _fill._use_wide_counters(request.param)
    yield
    _fill._use_wide_counters(False)


@pytest.mark.parametrize("n", [40, BIG], ids=["serial", "threaded"])
@pytest.mark.parametrize("name,wide_counters",
                         [(c, False) for c in CASES] + [(c, True) for c in COUNTING],
                         ids=CASES + [c + "-int64_counters" for c in COUNTING],
                         indirect=["wide_counters"])
def test_each_path_against_the_reference(name, n, wide_counters):
    idx, dense_rows, path = case(name, n)
    shape = [dense_rows] + [9] * (idx.shape[1] - 1)
    vals = np.arange(idx.shape[0], dtype=np.float64) * 0.5 - 3.0
    want = reference.sparse_fill_empty_rows(idx, vals, shape, -0.0)
    for nt in THREADS:
        got = sfer.sparse_fill_empty_rows(idx, vals, shape, -0.0, num_threads=nt)
        assert _fill._last_path() == path, (name, nt)
        same(got, want)


@pytest.mark.parametrize("cpus", [1, 2, 3, 64])
@pytest.mark.parametrize("name", ["gaps_everywhere", "gap_at_each_boundary", "every_row_twice",
                                  "shuffled"])
def test_threads_capped_at_the_cpus(name, cpus):
    # A large call runs on no more threads than the CPUs this process may use (every path
    # cuts the entries into a slice per thread, each with state of its own); the bits are
    # those of every other count.
    idx, dense_rows, path = case(name, BIG)
    shape = [dense_rows] + [9] * (idx.shape[1] - 1)
    vals = np.arange(idx.shape[0], dtype=np.float32) * 0.5 - 3.0
    want = reference.sparse_fill_empty_rows(idx, vals, shape, np.float32(1.5))
    sfer._runtime._set_cpus(cpus)
    for nt in (1, 2, 3, 16, 64):
        got = sfer.sparse_fill_empty_rows(idx, vals, shape, np.float32(1.5), num_threads=nt)
        assert _fill._last_path() == path, (name, nt)
        assert sfer._runtime._last_threads() == min(nt, cpus), (name, nt)
        same(got, want)


@pytest.mark.parametrize("name", ["gaps_everywhere", "shuffled", "every_row_twice"])
def test_each_path_with_object_and_wide_values(name):
    idx, dense_rows, path = case(name, BIG)
    shape = [dense_rows, 9]
    n = idx.shape[0]
    for vals, default in ((np.array([str(i) for i in range(n)], dtype=object), "default"),
                          (np.arange(n).astype("S12"), b"a-longer-default"),
                          (np.arange(2 * n, dtype=np.float64).view(np.complex128), 1j)):
        want = reference.sparse_fill_empty_rows(idx, vals, shape, default)
        got = sfer.sparse_fill_empty_rows(idx, vals, shape, default, num_threads=16)
        assert _fill._last_path() == path
        same(got, want)


# default_value as the C entry converts it (Python float, int, bool, or a NumPy scalar of the
# values' own type) must give what sfer._fill_inputs gives: the same bits or the same error.
DEFAULTS = [0.0, -0.0, 1.5, 1e300, -1e300, float("inf"), float("nan"), 3.4028235e38,
            3.4028236e38, 0, -1, 255, 256, -129, 2**31, 2**53 + 1, 2**63 - 1, 2**63, 2**64,
            -2**63, -2**63 - 1, True, False]
VALUE_DTYPES = ["float32", "float64", "int8", "uint8", "int16", "uint16", "int32", "uint32",
                "int64", "uint64", "bool", "float16", "complex64"]




def typed_defaults():
    """0-d arrays and NumPy numbers of many dtypes and values, exact or not in each values
    dtype: the C entry converts some of them itself (see test_c_entry_takes_exact_defaults)."""
    out = [np.asarray(d) for d in DEFAULTS]   # float64, int64, uint64, object, bool
    with np.errstate(all="ignore"):
        for dtype in ["float16", "float32", "float64", "int8", "uint8", "int16", "uint32",
                      "int64", "uint64", "bool", "complex64", "longdouble"]:
            for v in [0.0, -0.0, 1.5, -1.0, 300.0, 70000.0, 1e20, 1e300, np.inf, np.nan]:
                a = np.array(v).astype(dtype)
                out += [a, a[()]]
    return out


@pytest.mark.parametrize("dtype", VALUE_DTYPES)
def test_default_conversion_as_the_rules(dtype):
    idx = rows_matrix([0, 2])
    vals = np.ones(2, dtype=dtype)
    defaults = DEFAULTS + [np.dtype(dtype).type(0), np.float64(1.5), np.int64(7)]
    for default in defaults + typed_defaults():
        try:
            want = reference.sparse_fill_empty_rows(idx, vals, [4, 9], default)
        except (TypeError, ValueError) as exc:
            with pytest.raises(type(exc)) as got_exc:
                sfer.sparse_fill_empty_rows(idx, vals, [4, 9], default)
            assert str(got_exc.value) == str(exc), default
        else:
            same(sfer.sparse_fill_empty_rows(idx, vals, [4, 9], default), want)


@pytest.mark.parametrize("shape", [(4, 9), [4, 9], np.array([4, 9]), np.array([4, 9], np.int32),
                                   [4, -9], (np.int64(4), 9), [4, 2**63 - 1]])
def test_dense_shape_forms(shape):
    idx = rows_matrix([0, 2])
    vals = np.ones(2, np.float32)
    same(sfer.sparse_fill_empty_rows(idx, vals, shape, 0.0),
         reference.sparse_fill_empty_rows(idx, vals, shape, 0.0))


def test_negative_dense_rows_through_the_c_entry():
    with pytest.raises(ValueError, match=r"dense_shape\[0\] must be >= 0, got -4"):
        sfer.sparse_fill_empty_rows(rows_matrix([0]), np.ones(1), np.array([-4, 9]), 0.0)


@pytest.fixture
def rules_calls(monkeypatch):
    """The default_value of each call that went through the Python input rules
    (sfer._fill_inputs.fill_inputs, as sfer._fill calls it); the C entry (fast_fill) calls
    nothing there."""
    calls = []
    rules = _fill._fill_inputs

    def spy(*args):
        calls.append(args[3])
        return rules(*args)

    monkeypatch.setattr(_fill, "_fill_inputs", spy)
    return calls


class F32(np.float32):
    """A subclass of a NumPy scalar type: not the C entry's to convert."""


class Sub(np.ndarray):
    """An ndarray subclass: likewise."""


def _unaligned_zero_d():
    a = np.frombuffer(bytes(9), dtype=np.float64, offset=1, count=1).reshape(())
    assert not a.flags.aligned
    return a


# (values dtype, default_value) that the C entry converts itself: Python numbers, NumPy numbers
# and 0-d arrays of values' dtype, float32/float64 numbers into float32/float64 values, and
# integers within int64 into float32/float64 or integer values they fit.
EXACT = [("float32", -1.5), ("float32", 7), ("float32", np.float32(-1.5)),
         ("float32", np.array(np.float32(-1.5))), ("float32", np.array(np.float32("nan"))),
         ("float32", np.float64(0.1)), ("float32", np.array(0.1)), ("float32", np.array(-np.inf)),
         ("float32", np.array(3.4028235e38)), ("float32", np.int64(2**53 + 1)),
         ("float32", np.array(7)), ("float32", np.int8(-3)), ("float32", np.array(200, np.uint8)),
         ("float64", np.array(np.float32(0.1))), ("float64", np.array(1e300)),
         ("float64", np.uint64(2**63 - 1)), ("float16", np.float16(1.5)),
         ("float16", np.array(np.float16(-0.0))), ("int32", 7), ("int32", np.int32(-7)),
         ("int32", np.array(7, np.int32)), ("int32", np.array(-5, np.int8)),
         ("int32", np.uint16(65535)), ("int32", np.array(2**31 - 1)), ("uint8", np.array(255)),
         ("uint64", np.array(2**64 - 1, np.uint64)), ("int64", np.array(-2**63)),
         ("bool", True), ("bool", np.True_), ("bool", np.array(False)),
         ("complex64", np.array(1j, np.complex64)), ("longdouble", np.array(1.5, np.longdouble))]

# ... and those it leaves to the Python rules (sfer._fill_inputs), which convert them or say
# why not: values that do not fit, kinds that do not cast (NaN into int, a float into bool),
# kinds it does not convert (bool into numbers, float16 or complex into other types, an
# unsigned beyond int64), and anything that is not a plain number or a behaved 0-d array.
NOT_EXACT = [("float32", np.array(1e300)), ("float32", np.float64(-1e300)),
             ("float32", np.array(np.float16(1.5))), ("float32", np.array(True)),
             ("float32", np.array(2**63, np.uint64)), ("float32", np.array(1 + 0j)),
             ("float32", np.array(1.5, ">f4")), ("float32", np.array([1.5])),
             ("float32", np.array("1.5")), ("float32", np.array(2.0, dtype=object)),
             ("float32", F32(1.5)), ("float32", np.array(1.5, np.float32).view(Sub)),
             ("float32", _unaligned_zero_d()), ("float32", np.array(1.5, np.longdouble)),
             ("float64", np.array(1.5, np.float16)), ("int32", np.array(np.nan)),
             ("int32", np.float32(np.nan)), ("int32", np.array(2**40)), ("int32", np.array(True)),
             ("uint8", np.array(-1)), ("uint8", np.int16(256)), ("int64", np.uint64(2**63)),
             ("bool", np.array(1)), ("bool", np.float32(0.0)), ("complex64", np.float64(1.5)),
             ("float32", 2**64), ("float32", 1e300), ("int32", 1.5), ("int32", True)]


def _rules_result(idx, vals, default):
    try:
        return reference.sparse_fill_empty_rows(idx, vals, [4, 9], default), None
    except (TypeError, ValueError) as exc:
        return None, exc


@pytest.mark.parametrize("dtype,default", EXACT, ids=[f"{d}-{v!r}" for d, v in EXACT])
def test_c_entry_takes_exact_defaults(dtype, default, rules_calls):
    idx = rows_matrix([0, 2])
    vals = np.arange(2).astype(dtype)
    want, exc = _rules_result(idx, vals, default)
    assert exc is None
    same(sfer.sparse_fill_empty_rows(idx, vals, [4, 9], default), want)
    same(sfer.sparse_fill_empty_rows(idx, vals, np.array([4, 9]), default, num_threads=1), want)
    assert rules_calls == []


@pytest.mark.parametrize("dtype,default", NOT_EXACT, ids=[f"{d}-{v!r}" for d, v in NOT_EXACT])
def test_other_defaults_take_the_python_rules(dtype, default, rules_calls):
    idx = rows_matrix([0, 2])
    vals = np.arange(2).astype(dtype)
    want, exc = _rules_result(idx, vals, default)
    if exc is None:
        same(sfer.sparse_fill_empty_rows(idx, vals, [4, 9], default), want)
    else:
        with pytest.raises(type(exc)) as got:
            sfer.sparse_fill_empty_rows(idx, vals, [4, 9], default)
        assert str(got.value) == str(exc)
    assert len(rules_calls) == 1 and rules_calls[0] is default


def test_bench_fill_small_takes_the_c_entry(rules_calls):
    """bench_fill.py's default_value (a 0-d array of values' dtype) on its small case."""
    rows = np.sort(np.random.default_rng(1).integers(0, 500, 900))
    idx, vals = rows_matrix(rows), np.ones(900, np.float32)
    default = np.array(np.float32(-1.0))
    got = sfer.sparse_fill_empty_rows(idx, vals, np.array([500, 9]), default)
    assert rules_calls == [] and _fill._last_path() == "sorted"
    same(got, reference.sparse_fill_empty_rows(idx, vals, [500, 9], default))


@pytest.mark.parametrize("where", ["first", "middle", "last_one_above", "after_a_decrease"])
def test_single_pass_bad_rows(where):
    # One thread on sorted rows takes the single checked pass (no scan first): a row out of
    # range gives the scan's IndexError, naming the first bad entry, whatever the thread count.
    n = BIG
    rows = np.repeat(np.arange(n // 2), 2)
    bad = {"first": 0, "middle": n // 2, "last_one_above": n - 1, "after_a_decrease": n - 5}[where]
    rows[bad] = -1 if where == "first" else n // 2 if where == "last_one_above" else 10 * n
    if where == "after_a_decrease":
        rows[n // 3] = 0   # unsorted before the bad row: still the bad row's error
    idx = rows_matrix(rows)
    for nt in THREADS:
        with pytest.raises(IndexError, match=rf"indices\[{bad}, 0\]"):
            sfer.sparse_fill_empty_rows(idx, np.zeros(n, np.float32), [n // 2, 9], 0.0,
                                        num_threads=nt)


@pytest.mark.parametrize("first_gap", [0, 1, 777, BIG - 1, BIG])
def test_single_pass_first_gap(first_gap):
    # The single pass leaves the entries before the first empty row in place and copies them
    # at the end (none copied when no row is empty: the fast path's views).  The first gap at
    # each place, with more empty rows after it, on one thread and on several.
    n = BIG
    rows = np.arange(n) + (np.arange(n) >= first_gap) * 3   # 3 empty rows before entry first_gap
    rows[first_gap + 5:] += 1                               # and one more further on
    idx = rows_matrix(rows, rank=3)
    vals = np.arange(n, dtype=np.float64) * 0.5
    dense_rows = int(rows[-1]) + 2
    want = reference.sparse_fill_empty_rows(idx, vals, [dense_rows, 9, 9], -1.0)
    for nt in THREADS:
        same(sfer.sparse_fill_empty_rows(idx, vals, [dense_rows, 9, 9], -1.0,
                                         num_threads=nt), want)
        assert _fill._last_path() == "sorted"
