"""The kernel's code paths: ``out=``, the block-ordered walk and its fallback to the marking
path, and non-temporal stores for large outputs.

Facts about the kernel these tests are built around (sfer/_grad.pyx; the constants come from
``sfer._grad._constants()`` through tests/helpers.py, their values today in parentheses):

* positions ``[0, N_full)`` are cut into blocks of ``BLOCK`` (4096); a map whose entries'
  blocks (``entry // BLOCK``) never decrease is "block-ordered" and takes the block walk; any
  other map (or one with an out-of-range entry) falls back to the marking path, except that
  with one thread and at most ``MAX_WINDOW`` (16) blocks any in-range map takes the block
  walk (one window holds every block);
* a cheap screen looks at the first ``SCREEN`` (256) entries and ``SCREEN`` entries spread
  over the map before the walk; a map that passes the screen but is not block-ordered is
  caught by the walk, possibly only after a full pass (e.g. the last two entries swapped);
* ``N + N_full < SERIAL_BELOW`` (65536) runs serially; from there up, ``num_threads`` threads
  (at most one per block) each walk a contiguous range of blocks;
* the marking path gives each of up to ``MAX_BITMAPS`` (8) threads a bitmap of its own; past
  that, its threads are capped at the CPUs this process may use (``sfer._runtime._set_cpus``
  pretends a count; conftest.py pretends ``MAX_THREADS``), and if they still number more than
  ``MAX_BITMAPS`` they share one byte array (a byte per position) into which they mark with
  plain stores (no atomic read-modify-write);
* outputs of ``N * itemsize >= STREAM_BYTES`` (32 MiB) are written with non-temporal stores
  (4- and 8-byte items; larger items are copied plainly);
* the marking path prefetches ``grad_values`` lines ``NEAR_AHEAD`` (24) entries ahead into L1,
  or, for a ``grad_values`` of ``N_full * itemsize >= FAR_BYTES`` (6 MiB), ``FAR_AHEAD`` (128)
  entries ahead into L2 (a prefetch is a hint, but the address it is given must come from an
  in-range entry).

``sfer._grad._last_path()`` names the path the latest call took; every call here that runs a
map through ``run_paths``, ``expect_index_error`` or ``helpers.assert_path`` asserts that it
took the path these rules give (``helpers.expected_path``).

Whatever the path, the results must be the same bits: ``d_values`` is an exact gather and
``d_default_value`` does not depend on the path, the thread count or the order of the map.
"""

from __future__ import annotations

import re
import zlib

import numpy as np
import pytest
from hypothesis import given, note
from hypothesis import strategies as st

import sfer
import sfer._runtime
from checks import assert_bits_equal, bits_view, check_result
from helpers import (
    BFLOAT16,
    BLOCK,
    FAR_AHEAD,
    FAR_BYTES,
    MAX_BITMAPS,
    MAX_WINDOW,
    SCREEN,
    SERIAL_BELOW,
    STREAM_BYTES,
    assert_path,
    block_ids,
    dtype_of,
    expect_path,
    expected_path,
    is_block_ordered,
    ran_path,
    sentinel_like,
    threads_used,
    unaligned,
)
from oracle import (
    first_bad,
    index_error_message,
    reference_grad,
    scalar_bits,
    unreferenced,
)

grad = sfer.sparse_fill_empty_rows_grad

#: MAX_BITMAPS + 1: more threads than the marking path has private bitmaps (shared bytes)
THREADS = (1, 2, 3, 5, MAX_BITMAPS + 1)
ERR_THREADS = (1, 2, 3, 4, MAX_BITMAPS + 1)
#: float32/float64 have SIMD sum kernels; the others take the generic loop
PATH_DTYPES = ("float32", "float64", "float16", "complex128", "int64", "uint8")
#: dtypes that always take the Python (slow) validation path
SLOW_ONLY = ("bfloat16",)  # ml_dtypes is a test requirement


# ---------------------------------------------------------------------------------------------
# Helpers


def make_grad(name: str, n: int, rng: np.random.Generator) -> np.ndarray:
    """Random grad_values of dtype ``name`` (inexact sums for floats: rounding matters)."""
    dtype = dtype_of(name)
    if name in ("float16", "bfloat16"):
        return rng.uniform(-4.0, 4.0, size=n).astype(dtype)
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return rng.integers(info.min, info.max, size=n, endpoint=True, dtype=dtype)
    x = rng.standard_normal(n) * 10.0 ** rng.uniform(-3, 3, size=n)
    if dtype.kind == "c":
        x = x + 1j * (rng.standard_normal(n) * 10.0 ** rng.uniform(-3, 3, size=n))
    return x.astype(dtype)


def exact_grad(name: str, n: int, rng: np.random.Generator) -> np.ndarray:
    """Multiples of 1/8 in [-125, 125]: every partial sum of millions of them is exact in
    float64, so a plain float64 ``np.sum`` gives the exact (reference) sum cheaply."""
    dtype = np.dtype(name)
    x = rng.integers(-1000, 1001, size=n) / 8.0
    if dtype.kind == "c":
        x = x + 1j * (rng.integers(-1000, 1001, size=n) / 8.0)
    return x.astype(dtype)


def unordered(rim, rng: np.random.Generator) -> np.ndarray:
    """A permutation of ``rim`` that is not block-ordered whenever its entries span two or
    more blocks (so it takes the marking path, unless one thread walks at most MAX_WINDOW
    blocks: one window takes any map): shuffled, with an entry of the highest block moved to
    the front."""
    perm = rng.permutation(np.asarray(rim))
    b = block_ids(perm)
    if b.size and b.min() != b.max():
        i = int(np.argmax(b))
        perm[[0, i]] = perm[[i, 0]]
        assert not is_block_ordered(perm)
    return perm


def run_paths(rim, g, rng: np.random.Generator, threads=THREADS):
    """Run ``rim`` and an unordered permutation of it on every thread count.

    Every call must take the path ``helpers.expected_path`` gives; the first result of each
    map is checked against the reference; the others must match it bitwise; and every
    ``d_default_value`` (both maps, all thread counts) must have the same bits.  Returns the
    first result for ``rim``.
    """
    rim = np.asarray(rim)
    n_full = np.asarray(g).shape[0]
    maps = {"given": rim, "unordered": unordered(rim, rng)}
    sums = {}
    first_given = None
    for label, m in maps.items():
        first = None
        for nt in threads:
            res = assert_path(lambda: grad(m, g, num_threads=nt), m, n_full, nt)
            if first is None:
                check_result(res, m, g)
                first = res
            else:
                assert_bits_equal(res.d_values, first.d_values)
                assert type(res.d_default_value) is type(first.d_default_value)
            sums[label, nt] = scalar_bits(res.d_default_value)
        if first_given is None:
            first_given = first
    assert len(set(sums.values())) == 1, f"d_default_value bits differ: {sums}"
    return first_given


def expect_index_error(rim, g, n_full: int, nt, *, out=None):
    """The call raises the IndexError of the first bad j (returned), from the marking path."""
    bad = first_bad(rim, n_full)
    assert bad is not None

    def call():
        msg = "^" + re.escape(index_error_message(bad[0], bad[1], n_full)) + "$"
        with pytest.raises(IndexError, match=msg):
            grad(rim, g, num_threads=nt, out=out)

    assert_path(call, rim, n_full, nt)
    return bad[0]


# ---------------------------------------------------------------------------------------------
# Maps for the block-ordered / marking paths.  Each builder takes an rng and returns
# (int64 map, N_full, whether the map is block-ordered).


def _subset(rng, n_full, n):
    return np.sort(rng.choice(n_full, size=n, replace=False)).astype(np.int64)


def _sorted_dups(rng, n_full, n, lo=0):
    return np.sort(rng.integers(lo, n_full, size=n)).astype(np.int64)


def _blocky(rng, n_full, n, blocks):
    """A sorted map of n entries using only the given blocks."""
    ids = np.sort(rng.choice(np.asarray(blocks), size=n))
    blen = np.minimum(BLOCK, n_full - ids * BLOCK)
    return np.sort(ids * BLOCK + rng.integers(0, blen)).astype(np.int64)


def case_sorted(rng):
    return _subset(rng, 40_000, 26_000), 40_000, True


def case_sorted_dups(rng):
    rim = _sorted_dups(rng, 40_000, 30_000)
    rim[100:140] = rim[100]  # a long run of one position, still sorted
    return rim, 40_000, True


def case_block_shuffled(rng):
    rim = _subset(rng, 40_000, 26_000)
    edges = np.searchsorted(rim, np.arange(0, 40_000 + BLOCK, BLOCK))
    for a, b in zip(edges[:-1], edges[1:]):
        rim[a:b] = rng.permutation(rim[a:b])
    assert np.any(np.diff(rim) < 0)  # not sorted, yet block-ordered
    return rim, 40_000, True


def case_last_two_swapped(rng):
    # The last entry is alone in the last block (9); swapping it with the one before makes
    # the map not block-ordered only at its very end: the screen passes, the walk fails
    # after a full pass.
    rim = np.append(_subset(rng, 9 * BLOCK, 25_999), 39_999)
    assert rim[-2] // BLOCK != rim[-1] // BLOCK
    rim[[-2, -1]] = rim[[-1, -2]]
    return rim, 40_000, False


def case_middle_swapped(rng):
    rim = _subset(rng, 40_000, 26_000)
    a, b = 13_001, 16_003  # not on the screen's sample grid (multiples of 26_000 // SCREEN)
    assert a % (26_000 // SCREEN) and b % (26_000 // SCREEN)
    assert rim[a] // BLOCK != rim[b] // BLOCK
    rim[[a, b]] = rim[[b, a]]
    return rim, 40_000, False


def case_middle_lowered(rng):
    rim = _subset(rng, 40_000, 26_000)
    rim[13_001] = rim[1_003]  # one entry from an earlier block (and a duplicate)
    return rim, 40_000, False


def case_first_entry_raised(rng):
    rim = _subset(rng, 40_000, 26_000)
    rim[0] = 39_000  # the screen rejects it at once
    return rim, 40_000, False


def case_shuffled(rng):
    return rng.permutation(_subset(rng, 40_000, 26_000)), 40_000, False


def case_reversed(rng):
    return _subset(rng, 40_000, 26_000)[::-1].copy(), 40_000, False


def case_head_sorted_then_shuffled(rng):
    s = _subset(rng, 40_000, 26_000)
    return np.concatenate([s[:SCREEN], rng.permutation(s[SCREEN:])]), 40_000, False


def case_skip_blocks(rng):
    n_full = 12 * BLOCK + 100  # 13 blocks, the last one 100 long
    return _blocky(rng, n_full, 20_000, [0, 3, 4, 9, 12]), n_full, True


def case_skip_blocks_shuffled_within(rng):
    rim, n_full, _ = case_skip_blocks(rng)
    edges = np.searchsorted(rim, np.arange(0, n_full + BLOCK, BLOCK))
    for a, b in zip(edges[:-1], edges[1:]):
        rim[a:b] = rng.permutation(rim[a:b])
    return rim, n_full, True


def case_only_last_block_partial(rng):
    n_full = MAX_WINDOW * BLOCK + 5  # the last block opens a second window
    return _sorted_dups(rng, n_full, 3_000, lo=MAX_WINDOW * BLOCK), n_full, True


def case_only_last_block_full(rng):
    n_full = (MAX_WINDOW + 1) * BLOCK
    return _sorted_dups(rng, n_full, 5_000, lo=MAX_WINDOW * BLOCK), n_full, True


def case_only_first_block(rng):
    return _sorted_dups(rng, BLOCK, 5_000), 70_000, True


def case_only_last_position(rng):
    return np.full(100, 69_999, dtype=np.int64), 70_000, True


def case_empty_map(rng):
    return np.array([], dtype=np.int64), 70_000, True


def case_all_referenced(rng):
    return np.arange(70_000, dtype=np.int64), 70_000, True


def case_all_referenced_twice(rng):
    return np.repeat(np.arange(40_000, dtype=np.int64), 2), 40_000, True


def case_n_gt_n_full(rng):
    return _sorted_dups(rng, 20_000, 60_000), 20_000, True


CASES = {
    name[len("case_"):]: fn for name, fn in sorted(globals().items()) if name.startswith("case_")
}


@pytest.mark.parametrize("name", PATH_DTYPES)
@pytest.mark.parametrize("case", sorted(CASES))
def test_paths_agree(case, name):
    rng = np.random.default_rng(zlib.crc32(f"{case}/{name}".encode()))
    rim, n_full, ordered = CASES[case](rng)
    assert is_block_ordered(rim) == ordered  # the data is what the case claims
    g = make_grad(name, n_full, rng)
    run_paths(rim, g, rng)


@pytest.mark.parametrize("name", PATH_DTYPES)
@pytest.mark.parametrize(
    "n_full",
    [BLOCK - 1, BLOCK, BLOCK + 1, 5 * BLOCK, 5 * BLOCK + 7, MAX_WINDOW * BLOCK,
     MAX_WINDOW * BLOCK + 7],
)
@pytest.mark.parametrize("shape", ["half_unique", "big_dups"])
def test_block_boundaries(n_full, shape, name):
    # big_dups: N > N_full and N + N_full >= SERIAL_BELOW (parallel; at most one thread per
    # block, so one thread for N_full <= BLOCK and two for BLOCK + 1).
    rng = np.random.default_rng(n_full * 7 + len(shape))
    if shape == "half_unique":
        rim = _subset(rng, n_full, n_full // 2)
        rim[-1] = n_full - 1  # the very last position is referenced
    else:
        rim = _sorted_dups(rng, n_full, 70_000)
    g = make_grad(name, n_full, rng)
    run_paths(rim, g, rng)


@pytest.mark.parametrize("name", PATH_DTYPES)
@pytest.mark.parametrize(
    "n", [25_000, SERIAL_BELOW - 40_000 - 1, SERIAL_BELOW - 40_000, 26_000]
)
def test_serial_threshold(n, name):
    # N_full = 40_000: N + N_full straddles SERIAL_BELOW, the smallest size run in parallel.
    rng = np.random.default_rng(n)
    rim = _subset(rng, 40_000, n)
    g = make_grad(name, 40_000, rng)
    run_paths(rim, g, rng)


@pytest.mark.parametrize("name", PATH_DTYPES)
@pytest.mark.parametrize("style", ["sorted", "shuffled", "dups_shuffled"])
def test_many_threads(style, name):
    # 18 blocks: up to 18 threads; past MAX_BITMAPS the marking path's threads share a byte
    # array.
    n_full = 70_000
    nb = -(-n_full // BLOCK)
    rng = np.random.default_rng(len(style))
    if style == "dups_shuffled":
        rim = rng.integers(0, n_full, size=90_000)
    else:
        rim = _subset(rng, n_full, 35_000)
        if style == "shuffled":
            rim = rng.permutation(rim)
    g = make_grad(name, n_full, rng)
    run_paths(rim, g, rng, threads=(1, MAX_BITMAPS - 1, MAX_BITMAPS, MAX_BITMAPS + 1, nb - 2,
                                    nb - 1, nb, 64))


@pytest.mark.parametrize("cpus", [1, 2, MAX_BITMAPS, MAX_BITMAPS + 1, 64])
@pytest.mark.parametrize("style", ["shuffled", "dups_shuffled"])
def test_marking_threads_follow_the_cpus(style, cpus):
    # Past MAX_BITMAPS threads the marking path runs on no more threads than the CPUs: a bitmap
    # each where they are MAX_BITMAPS or fewer, the shared bytes beyond (run_paths asserts the
    # path helpers.expected_path gives for the CPUs set here, and the same bits throughout).
    n_full = 70_000
    rng = np.random.default_rng(cpus)
    if style == "dups_shuffled":
        rim = rng.integers(0, n_full, size=90_000)
    else:
        rim = rng.permutation(_subset(rng, n_full, 35_000))
    g = make_grad("float32", n_full, rng)
    sfer._runtime._set_cpus(cpus)
    run_paths(rim, g, rng, threads=(1, 2, MAX_BITMAPS, MAX_BITMAPS + 1, 16, 64))
    assert expected_path(rim, n_full, 64) == ("bytes" if cpus > MAX_BITMAPS else "bitmaps")


@pytest.mark.parametrize(
    "map_dtype", ["int16", "uint16", "int32", "uint32", "uint64", "int8", "uint8"]
)
@pytest.mark.parametrize("style", ["sorted", "block_shuffled", "shuffled"])
def test_map_dtypes_on_both_paths(map_dtype, style):
    info = np.iinfo(map_dtype)
    n_full = min(40_000, int(info.max) + 1)
    n = 40_000 if n_full < 40_000 else 30_000
    rng = np.random.default_rng(n_full + len(style))
    rim = _sorted_dups(rng, n_full, n)
    if style == "block_shuffled":
        edges = np.searchsorted(rim, np.arange(0, n_full + BLOCK, BLOCK))
        for a, b in zip(edges[:-1], edges[1:]):
            rim[a:b] = rng.permutation(rim[a:b])
    elif style == "shuffled":
        rim = rng.permutation(rim)
    g = make_grad("float32", n_full, rng)
    run_paths(rim.astype(map_dtype), g, rng)


@pytest.mark.parametrize("name", ["float32", "float64"])
def test_nan_and_inf_on_both_paths(name):
    # Gathered NaN payloads are bit copies; the sum is the canonical NaN on every path.
    rng = np.random.default_rng(5)
    dtype = np.dtype(name)
    n_full = 50_000
    g = make_grad(name, n_full, rng)
    ubits = bits_view(g)
    nan_payload = {4: np.uint32(0xFFC01234), 8: np.uint64(0x7FF0000000ABCDEF)}[dtype.itemsize]
    ubits[[10, 5000, 33_333, 49_999]] = nan_payload
    rim = _subset(rng, n_full, 20_000)
    rim = np.union1d(rim, [10, 33_333])  # two NaNs referenced, two not
    rim = rim[~np.isin(rim, [5000, 49_999])]
    res = run_paths(rim, g, rng)
    assert_bits_equal(res.d_values, g[rim])
    canonical = {4: 0x7FC00000, 8: 0x7FF8000000000000}[dtype.itemsize]
    assert scalar_bits(res.d_default_value) == canonical

    # +inf and -inf unreferenced: NaN; only +inf: +inf.
    g2 = make_grad(name, n_full, rng)
    g2[[7, 40_000]] = [np.inf, -np.inf]
    rim2 = _subset(rng, n_full, 20_000)
    rim2 = rim2[~np.isin(rim2, [7, 40_000])]
    assert scalar_bits(run_paths(rim2, g2, rng).d_default_value) == canonical
    rim3 = np.union1d(rim2, [40_000])
    assert run_paths(rim3, g2, rng).d_default_value == np.inf


# ---------------------------------------------------------------------------------------------
# Out-of-range entries: the first offending j, whatever the path and thread count


def _bad_maps(rng, n_full, n):
    s = _sorted_dups(rng, n_full, n)
    cases = {}

    def put(name, fn):
        rim = s.copy()
        fn(rim)
        cases[name] = rim

    put("start_too_big", lambda r: r.__setitem__(0, n_full))
    put("start_negative_sorted", lambda r: r.__setitem__(slice(0, 3), [-7, -1, -1]))
    put("middle_too_big", lambda r: r.__setitem__(n // 2, n_full + 12_345))
    put("middle_negative", lambda r: r.__setitem__(n // 2 + 7, -1))
    put("end_n_full", lambda r: r.__setitem__(-1, n_full))  # still sorted
    put("end_huge", lambda r: r.__setitem__(-1, np.iinfo(np.int64).max))
    put("end_min", lambda r: r.__setitem__(-1, np.iinfo(np.int64).min))
    put("sorted_tail_run", lambda r: r.__setitem__(slice(-100, None), n_full + np.arange(100)))
    put("two_bad", lambda r: (r.__setitem__(n // 3, -5), r.__setitem__(-1, n_full)))
    put("last_block_edge", lambda r: r.__setitem__(slice(n - 10, None), n_full))
    return cases


EXPECTED_J = {
    "start_too_big": lambda n: 0,
    "start_negative_sorted": lambda n: 0,
    "middle_too_big": lambda n: n // 2,
    "middle_negative": lambda n: n // 2 + 7,
    "end_n_full": lambda n: n - 1,
    "end_huge": lambda n: n - 1,
    "end_min": lambda n: n - 1,
    "sorted_tail_run": lambda n: n - 100,
    "two_bad": lambda n: n // 3,
    "last_block_edge": lambda n: n - 10,
}


@pytest.mark.parametrize("n_full,n", [(40_000, 30_000), (40_000, 20_000), (5 * BLOCK, 50_000)])
@pytest.mark.parametrize("case", sorted(EXPECTED_J))
def test_out_of_range_names_first_j(case, n_full, n):
    rng = np.random.default_rng(n + len(case))
    rim = _bad_maps(rng, n_full, n)[case]
    g = make_grad("float32", n_full, rng)
    shuffled = rng.permutation(rim)
    for nt in ERR_THREADS:
        assert expect_index_error(rim, g, n_full, nt) == EXPECTED_J[case](n)
        expect_index_error(shuffled, g, n_full, nt)


@pytest.mark.parametrize(
    "map_dtype,bad",
    [("uint64", 2**64 - 1), ("uint64", 2**63), ("uint32", 2**32 - 1), ("uint16", 65_535),
     ("int32", -(2**31)), ("int16", -1), ("int64", 40_000)],
)
@pytest.mark.parametrize("where", ["start", "middle", "end"])
def test_out_of_range_map_dtypes(map_dtype, bad, where):
    n_full, n = min(40_000, int(np.iinfo(map_dtype).max) + 1), 35_000  # parallel
    rng = np.random.default_rng(7)
    rim = _sorted_dups(rng, n_full, n).astype(map_dtype)
    j = {"start": 0, "middle": n // 2 + 1, "end": n - 1}[where]
    rim[j] = bad
    g = make_grad("uint8", n_full, rng)
    for nt in ERR_THREADS:
        assert expect_index_error(rim, g, n_full, nt) == j


# ---------------------------------------------------------------------------------------------
# out=


def _out_inputs(name, n_full=40_000, n=30_000, style="sorted", seed=3):
    rng = np.random.default_rng(seed)
    rim = _sorted_dups(rng, n_full, n)
    if style == "shuffled":
        rim = rng.permutation(rim)
    return rim, make_grad(name, n_full, rng)


@pytest.mark.parametrize("name", PATH_DTYPES + ("complex64", "int8") + SLOW_ONLY)
@pytest.mark.parametrize("style", ["sorted", "shuffled"])
@pytest.mark.parametrize("nt", [None, 1, 2, 3])
def test_out_is_returned_and_filled(name, style, nt):
    rim, g = _out_inputs(name, style=style)
    rim_before, g_before = rim.copy(), g.copy()
    out = sentinel_like(rim.shape[0], g.dtype)
    res = grad(rim, g, num_threads=nt, out=out)
    assert res.d_values is out
    check_result(res, rim, g)
    fresh = grad(rim, g, num_threads=nt)
    assert fresh.d_values is not out
    assert_bits_equal(out, fresh.d_values)
    assert scalar_bits(res.d_default_value) == scalar_bits(fresh.d_default_value)
    assert type(res.d_default_value) is type(fresh.d_default_value)
    assert rim.tobytes() == rim_before.tobytes() and g.tobytes() == g_before.tobytes()


def _slow_variants(rim, g):
    """Inputs sfer must convert before the kernel (the Python validation path)."""
    return {
        "grad_list": (rim, g.tolist()),
        "map_list": (rim.tolist(), g),
        "grad_swapped": (rim, g.astype(g.dtype.newbyteorder())),
        "map_swapped": (rim.astype(rim.dtype.newbyteorder()), g),
        "grad_strided": (rim, np.repeat(g, 2)[::2]),
        "map_strided": (np.repeat(rim, 2)[::2], g),
        "map_readonly_unaligned": (unaligned(rim, writeable=False), g),
        "num_threads_numpy_int": (rim, g),
    }


SLOW_VARIANTS = sorted(_slow_variants(np.zeros(1, np.int64), np.zeros(1, np.float64)))


@pytest.mark.parametrize("name", ["float64", "float32", "int16", "complex128"])
@pytest.mark.parametrize("variant", SLOW_VARIANTS)
@pytest.mark.parametrize("style", ["sorted", "shuffled"])
def test_out_on_slow_path(variant, name, style):
    rim, g = _out_inputs(name, style=style)
    rim_in, g_in = _slow_variants(rim, g)[variant]
    dtype = np.asarray(g_in).dtype.newbyteorder("=")
    nt = np.int32(2) if variant == "num_threads_numpy_int" else 2
    out = sentinel_like(rim.shape[0], dtype)
    res = grad(rim_in, g_in, num_threads=nt, out=out)
    assert res.d_values is out
    check_result(res, rim_in, g_in)
    fresh = grad(rim, np.asarray(g_in).astype(dtype), num_threads=1)
    assert_bits_equal(out, fresh.d_values)
    assert scalar_bits(res.d_default_value) == scalar_bits(fresh.d_default_value)


@pytest.mark.parametrize("style", ["sorted", "shuffled"])
def test_out_bfloat16(style):
    assert BFLOAT16 is not None, "ml_dtypes (a test requirement) is not installed"
    rim, g = _out_inputs("bfloat16", style=style)
    for nt in (1, 2, 3):
        out = sentinel_like(rim.shape[0], BFLOAT16)
        res = grad(rim, g, num_threads=nt, out=out)
        assert res.d_values is out
        check_result(res, rim, g)
    with pytest.raises(TypeError, match="out must have dtype"):
        grad(rim, g, out=np.empty(rim.shape[0], np.float32))


@pytest.mark.parametrize("name", ["float32", "float64", "int32", "complex64", "float16"])
def test_out_with_byteswapped_grad_must_be_native(name):
    rim, g = _out_inputs(name, n_full=1000, n=700)
    g_sw = g.astype(g.dtype.newbyteorder())
    out = sentinel_like(rim.shape[0], g.dtype)
    res = grad(rim, g_sw, out=out)
    assert res.d_values is out and out.dtype.isnative
    check_result(res, rim, g_sw)
    with pytest.raises(TypeError, match=r"out must have dtype .*native byte order"):
        grad(rim, g_sw, out=np.empty(rim.shape[0], g_sw.dtype))
    with pytest.raises(TypeError, match=r"out must have dtype .*native byte order"):
        grad(rim, g, out=np.empty(rim.shape[0], g_sw.dtype))


def test_out_equal_dtype_of_another_type_number_is_accepted():
    # np.longlong and np.int64 (np.long on Linux) compare equal but are distinct type numbers.
    rim, g = _out_inputs("int64", n_full=1000, n=700)
    other = np.dtype(np.longlong) if g.dtype.char != "q" else np.dtype(np.int_)
    out = sentinel_like(rim.shape[0], other)
    assert out.dtype == g.dtype
    res = grad(rim, g, out=out)
    assert res.d_values is out
    assert_bits_equal(out.view(g.dtype), g[rim])
    assert res.d_default_value == reference_grad(rim, g)[1]


def test_sentinel_like_has_no_zero_byte():
    # The out= tests below tell "left zero-filled" and "written" from the sentinel's bytes.
    for dtype in (np.uint8, np.float32, np.complex128):
        out = sentinel_like(7, dtype)
        assert out.dtype == dtype and out.shape == (7,)
        assert out.view(np.uint8).tolist() == [0xA5] * out.nbytes


N_OUT = 700


def _bad_outs():
    f4 = np.dtype(np.float32)
    ro = np.zeros(N_OUT, f4)
    ro.setflags(write=False)
    return {
        "too_long": (np.zeros(N_OUT + 1, f4), ValueError,
                     re.escape(f"out must have shape ({N_OUT},), got ({N_OUT + 1},)")),
        "too_short": (np.zeros(N_OUT - 1, f4), ValueError, "out must have shape"),
        "two_d": (np.zeros((N_OUT, 1), f4), ValueError, "out must have shape"),
        "zero_d": (np.zeros((), f4), ValueError, "out must have shape"),
        "float64": (np.zeros(N_OUT, np.float64), TypeError,
                    r"out must have dtype float32 \(native byte order\), got float64"),
        "int32": (np.zeros(N_OUT, np.int32), TypeError, "out must have dtype float32"),
        "swapped": (np.zeros(N_OUT, f4.newbyteorder()), TypeError, "out must have dtype float32"),
        "list": ([0.0] * N_OUT, TypeError, "out must be a numpy.ndarray, got list"),
        "memoryview": (memoryview(np.zeros(N_OUT, f4)), TypeError,
                       "out must be a numpy.ndarray, got memoryview"),
        "readonly": (ro, ValueError, "out must be writeable"),
        "strided": (np.zeros(2 * N_OUT, f4)[::2], ValueError, "out must be C-contiguous"),
        "reversed": (np.zeros(N_OUT, f4)[::-1], ValueError, "out must be C-contiguous"),
        "unaligned": (unaligned(np.zeros(N_OUT, f4)), ValueError,
                      "out must be C-contiguous and aligned"),
    }


@pytest.mark.parametrize("path", ["fast", "map_list", "grad_swapped"])
@pytest.mark.parametrize("bad", sorted(_bad_outs()))
def test_invalid_out(bad, path):
    out, exc, match = _bad_outs()[bad]
    rng = np.random.default_rng(1)
    rim = rng.integers(0, 1000, size=N_OUT)
    g = make_grad("float32", 1000, rng)
    if path == "map_list":
        rim = rim.tolist()
    elif path == "grad_swapped":
        g = g.astype(g.dtype.newbyteorder())
    with pytest.raises(exc, match=match):
        grad(rim, g, out=out)


@pytest.mark.parametrize("path", ["fast", "slow"])
def test_out_overlapping_an_input(path):
    rng = np.random.default_rng(2)
    n = n_full = 1000
    g = make_grad("float64", n_full, rng)
    rim = rng.integers(0, n_full, size=n)
    slow = (lambda a: a.astype(a.dtype.newbyteorder())) if path == "slow" else (lambda a: a)

    # out is grad_values itself
    with pytest.raises(ValueError, match="out must not overlap grad_values"):
        grad(rim, g, out=g) if path == "fast" else grad(rim.tolist(), g, out=g)
    # out is a view of the map's buffer
    with pytest.raises(ValueError, match="out must not overlap reverse_index_map"):
        grad(rim, g, out=rim.view(np.float64)) if path == "fast" else \
            grad(rim, g.tolist(), out=rim.view(np.float64))
    # one shared element at the end of grad_values
    buf = np.zeros(n_full + n - 1)
    g2 = buf[:n_full]
    g2[:] = g
    with pytest.raises(ValueError, match="out must not overlap grad_values"):
        grad(rim, g2, out=buf[n_full - 1:])
    # out overlaps the second half of the map's buffer (int64 values, int64 map)
    ibuf = np.zeros(2 * n, np.int64)
    # slow: the map is a byte-swapped view of the same buffer
    rim2 = (ibuf.view(ibuf.dtype.newbyteorder()) if path == "slow" else ibuf)[:n]
    rim2[:] = rim
    gi = make_grad("int64", n_full, rng)
    with pytest.raises(ValueError, match="out must not overlap reverse_index_map"):
        grad(rim2, gi, out=ibuf[n // 2: n // 2 + n])
    # out overlaps a byte-swapped input (which the kernel would only read through a copy)
    g_sw = g.astype(g.dtype.newbyteorder())
    with pytest.raises(ValueError, match="out must not overlap grad_values"):
        grad(rim, g_sw, out=g_sw.view(np.float64))
    # adjacent but disjoint is fine
    buf = np.zeros(n_full + n)
    g3 = buf[:n_full]
    g3[:] = g
    out = buf[n_full:]
    res = grad(slow(rim), g3, out=out)
    assert res.d_values is out
    assert_bits_equal(out, g[rim])
    assert_bits_equal(g3, g)
    buf = np.zeros(n + n_full)
    out, g4 = buf[:n], buf[n:]
    g4[:] = g
    res = grad(rim, slow(g4) if path == "slow" else g4, out=out)
    assert res.d_values is out
    assert_bits_equal(out, g[rim])


@pytest.mark.parametrize(
    "name", ["float32", "float64", "complex128", "uint8", "int64"] + list(SLOW_ONLY)
)
@pytest.mark.parametrize("variant", ["fast", "map_list", "grad_swapped", "map_swapped"])
@pytest.mark.parametrize("bad", ["end_n_full", "middle_negative", "start_too_big"])
def test_out_zeroed_on_index_error(name, variant, bad):
    n_full, n = 40_000, 30_000
    rng = np.random.default_rng(11)
    rim = _bad_maps(rng, n_full, n)[bad]
    g = make_grad(name, n_full, rng)
    if variant == "map_list":
        rim = rim.tolist()
    elif variant == "grad_swapped" and g.dtype.itemsize > 1 and name != "bfloat16":
        g = g.astype(g.dtype.newbyteorder())
    elif variant == "map_swapped":
        rim = rim.astype(rim.dtype.newbyteorder())
    dtype = np.asarray(g).dtype.newbyteorder("=")
    g_before = np.asarray(g).copy()
    for m in (rim, rng.permutation(np.asarray(rim))):
        for nt in (1, 2, 4):
            out = sentinel_like(n, dtype)
            expect_index_error(m, g, n_full, nt, out=out)
            assert not np.any(out.view(np.uint8)), "out must be left zero-filled"
    assert np.asarray(g).tobytes() == g_before.tobytes()


def test_out_zeroed_on_index_error_empty_grad():
    # N_full = 0 with N > 0.
    for rim in (np.array([0, 1, 2]), [0, 1, 2]):
        out = sentinel_like(3, np.float32)
        with pytest.raises(IndexError, match=re.escape(index_error_message(0, 0, 0))):
            grad(rim, np.zeros(0, np.float32), out=out)
        assert not np.any(out.view(np.uint8))


def test_out_empty():
    out = np.empty(0, np.float64)
    res = grad(np.array([], np.int64), np.arange(10.0), out=out)
    assert res.d_values is out
    assert res.d_default_value == 45.0
    res = grad([], np.arange(10.0), out=out)
    assert res.d_values is out and res.d_default_value == 45.0


@pytest.mark.parametrize("name", ["float32", "float64", "int64"])
def test_out_reused_across_calls(name):
    n_full, n = 40_000, 30_000
    rng = np.random.default_rng(21)
    g = make_grad(name, n_full, rng)
    s = _sorted_dups(rng, n_full, n)
    bad = s.copy()
    bad[-1] = n_full
    maps = [s, rng.permutation(s), _sorted_dups(rng, n_full, n), bad, rng.integers(0, n_full, n),
            s[::-1].copy(), s]
    out = sentinel_like(n, g.dtype)
    for i, m in enumerate(maps):
        nt = (1, 2, 3)[i % 3]
        if m is bad:
            expect_index_error(m, g, n_full, nt, out=out)
            assert not np.any(out.view(np.uint8))
            continue
        res = grad(m, g, num_threads=nt, out=out)
        fresh = grad(m, g, num_threads=nt)
        assert res.d_values is out
        assert_bits_equal(out, fresh.d_values)
        assert_bits_equal(out, g[m])
        assert scalar_bits(res.d_default_value) == scalar_bits(fresh.d_default_value)


# ---------------------------------------------------------------------------------------------
# The marking path's two prefetch modes (near below FAR_BYTES of grad_values, far from there)


@pytest.mark.parametrize("name", ["float64", "float32", "complex128"])
@pytest.mark.parametrize("side", ["below", "at"])
def test_prefetch_modes(name, side):
    itemsize = np.dtype(name).itemsize
    n_full = FAR_BYTES // itemsize - (1 if side == "below" else 0)
    rng = np.random.default_rng(n_full)
    g = exact_grad(name, n_full, rng)
    # duplicates, gaps, both ends of grad_values, and a map shorter than the distance
    rim = rng.integers(0, n_full, size=n_full - n_full // 7)
    rim[:3] = [0, n_full - 1, 0]
    shuffled = unordered(rim, rng)
    mask = unreferenced(rim, n_full)
    if np.dtype(name).kind == "c":
        rest = g[mask]
        exact = np.complex128(rest.real.sum() + 1j * rest.imag.sum())
    else:
        exact = g[mask].astype(np.float64).sum()
    expected = scalar_bits(np.asarray(exact).astype(name))
    for m in (shuffled, shuffled[: FAR_AHEAD // 2], shuffled[: FAR_AHEAD + 1]):
        assert not is_block_ordered(m)  # the marking path, whatever the thread count
        want_sum = expected if m is shuffled else None
        for nt in (1, 2, MAX_BITMAPS + 1):
            res = assert_path(lambda: grad(m, g, num_threads=nt), m, n_full, nt)
            assert_bits_equal(res.d_values, g[m])
            if want_sum is not None:
                assert scalar_bits(res.d_default_value) == want_sum, nt
            else:
                check_result(res, m, g)


@pytest.mark.parametrize("where", [-1, -FAR_AHEAD, -FAR_AHEAD - 1, 5])
def test_prefetch_far_out_of_range(where):
    # An out-of-range entry the far prefetch reaches before the loop does: it is not
    # prefetched, and the IndexError still names the first bad j.
    n_full = FAR_BYTES // 4
    rng = np.random.default_rng(abs(where))
    g = exact_grad("float32", n_full, rng)
    rim = unordered(rng.integers(0, n_full, size=n_full // 2), rng)
    rim[where] = n_full + 10**9
    out = sentinel_like(rim.size, g.dtype)
    for nt in (1, 2, MAX_BITMAPS + 1):
        expect_index_error(rim, g, n_full, nt)
        expect_index_error(rim, g, n_full, nt, out=out)
        assert not np.any(out.view(np.uint8))
        out.view(np.uint8)[...] = 0xA5


# ---------------------------------------------------------------------------------------------
# Large outputs: non-temporal stores (N * itemsize >= 32 MiB)


@pytest.mark.parametrize(
    "name,n",
    [("float32", 8_500_001), ("float64", 4_300_003), ("complex128", 2_100_001)],
)
def test_large_outputs(name, n):
    itemsize = np.dtype(name).itemsize
    assert n * itemsize >= STREAM_BYTES
    n_full = n + n // 9
    rng = np.random.default_rng(n)
    g = exact_grad(name, n_full, rng)
    rim = np.sort(rng.integers(0, n_full, size=n))
    mask = unreferenced(rim, n_full)
    rest = g[mask]
    if np.dtype(name).kind == "c":
        exact = rest.real.astype(np.float64).sum() + 1j * rest.imag.astype(np.float64).sum()
    else:
        exact = rest.astype(np.float64).sum()
    expected_bits = scalar_bits(np.asarray(exact).astype(name))
    out = None
    for label, m in (("sorted", rim), ("shuffled", rng.permutation(rim))):
        want = g[m]
        for nt in (1, 2):
            res = assert_path(lambda: grad(m, g, num_threads=nt), m, n_full, nt)
            assert_bits_equal(res.d_values, want)
            assert scalar_bits(res.d_default_value) == expected_bits, (label, nt)
        if out is None:
            out = sentinel_like(n, g.dtype)
        res = grad(m, g, num_threads=2, out=out)
        assert res.d_values is out
        assert_bits_equal(out, want)
        assert scalar_bits(res.d_default_value) == expected_bits


def test_large_output_index_error_zeroes_out():
    # The streamed path's IndexError: out (written with non-temporal stores) is zeroed.
    n = 8_400_000
    rng = np.random.default_rng(99)
    g = exact_grad("float32", n, rng)
    rim = np.sort(rng.integers(0, n, size=n))
    rim[-1] = n
    out = sentinel_like(n, np.float32)
    for nt in (1, 2):
        expect_index_error(rim, g, n, nt, out=out)
        assert not np.any(out.view(np.uint8))
        out.view(np.uint8)[...] = 0xA5


@pytest.mark.parametrize("n", [STREAM_BYTES // 4 - 1, STREAM_BYTES // 4])
def test_stream_threshold_float32(n):
    rng = np.random.default_rng(n)
    n_full = n // 2
    g = exact_grad("float32", n_full, rng)
    rim = rng.integers(0, n_full, size=n)
    for m in (np.sort(rim), rim):
        res = assert_path(lambda: grad(m, g, num_threads=2), m, n_full, 2)
        assert_bits_equal(res.d_values, g[m])
        exact = g[unreferenced(m, n_full)].astype(np.float64).sum()
        assert scalar_bits(res.d_default_value) == scalar_bits(np.float32(exact))


# ---------------------------------------------------------------------------------------------
# Properties: random block-ordered maps, and perturbations of them

GRAD_NAMES = PATH_DTYPES + ("complex64", "int16") + SLOW_ONLY
MAP_NAMES = ("int64", "int32", "uint32", "uint64", "int16", "uint16")


@st.composite
def block_ordered_maps(draw):
    """(map, N_full, seed): entries' blocks non-decreasing, positions random within blocks,
    duplicates allowed."""
    size = draw(st.sampled_from(["small", "any", "parallel", "parallel", "edge"]), label="size")
    if size == "small":
        n_full = draw(st.integers(0, 300), label="n_full")
        n = draw(st.integers(0, 600), label="n")
    elif size == "any":
        n_full = draw(st.integers(0, 30_000), label="n_full")
        n = draw(st.integers(0, 60_000), label="n")
    elif size == "parallel":  # N + N_full >= SERIAL_BELOW, several blocks per thread or one
        n_full = draw(st.integers(2 * BLOCK + 1, 30_000), label="n_full")
        n = draw(st.integers(SERIAL_BELOW - n_full, 70_000), label="n")
    else:
        n_full = draw(st.sampled_from([1, BLOCK - 1, BLOCK, BLOCK + 1, 2 * BLOCK, 2 * BLOCK + 1,
                                       3 * BLOCK, 7 * BLOCK - 1, 30_000]), label="n_full")
        n = draw(st.integers(0, 70_000), label="n")
    if n_full == 0:
        n = 0
    style = draw(st.sampled_from(["uniform", "some_blocks", "dups", "sorted"]), label="style")
    map_dtype = draw(st.sampled_from(MAP_NAMES), label="map dtype")
    seed = draw(st.integers(0, 2**32 - 1), label="seed")
    rng = np.random.default_rng(seed)
    nb = -(-n_full // BLOCK)
    if n == 0:
        rim = np.array([], dtype=np.int64)
    else:
        if style == "some_blocks":
            used = rng.choice(nb, size=int(rng.integers(1, nb + 1)), replace=False)
            ids = np.sort(rng.choice(used, size=n))
        else:
            ids = np.sort(rng.integers(0, nb, size=n))
        blen = np.minimum(BLOCK, n_full - ids * BLOCK)
        pos = rng.integers(0, blen)
        if style == "dups":
            pos = pos % np.minimum(blen, int(rng.integers(1, 9)))
        rim = ids * BLOCK + pos
        if style == "sorted":
            rim = np.sort(rim)
    note(f"n_full={n_full} n={n} style={style} map_dtype={map_dtype} seed={seed}")
    return rim.astype(map_dtype), n_full, seed


@given(case=block_ordered_maps(), nt=st.integers(1, 4), name=st.sampled_from(GRAD_NAMES))
def test_property_block_ordered_maps(case, nt, name):
    rim, n_full, seed = case
    assert is_block_ordered(rim)
    rng = np.random.default_rng(seed + 1)
    g = make_grad(name, n_full, rng)
    res = assert_path(lambda: grad(rim, g, num_threads=nt), rim, n_full, nt)  # the block walk
    check_result(res, rim, g)
    shuffled = unordered(rim, rng)
    other = assert_path(lambda: grad(shuffled, g, num_threads=nt), shuffled, n_full, nt)
    assert_bits_equal(other.d_values, reference_grad(shuffled, g)[0])
    assert scalar_bits(other.d_default_value) == scalar_bits(res.d_default_value)
    serial = grad(rim, g, num_threads=1)
    assert_bits_equal(serial.d_values, res.d_values)
    assert scalar_bits(serial.d_default_value) == scalar_bits(res.d_default_value)


@given(
    case=block_ordered_maps(),
    op=st.sampled_from(["swap", "move", "reverse", "rotate", "too_big", "negative"]),
    where=st.tuples(st.floats(0, 1), st.floats(0, 1)),
    nt=st.integers(1, 4),
    name=st.sampled_from(("float32", "float64", "int64", "complex128")),
)
def test_property_perturbed_block_ordered_maps(case, op, where, nt, name):
    # A block-ordered map changed in one place: the walk must notice whatever it breaks,
    # and the result must still be the reference's (same sum bits as the unchanged map).
    rim, n_full, seed = case
    n = rim.shape[0]
    rng = np.random.default_rng(seed + 2)
    g = make_grad(name, n_full, rng)
    if n < 2:
        return
    a, b = sorted(min(int(w * n), n - 1) for w in where)
    m = rim.astype(np.int64)
    if op == "swap":
        m[[a, b]] = m[[b, a]]
    elif op == "move":
        m = np.insert(np.delete(m, b), a, m[b])
    elif op == "reverse":
        m[a:b + 1] = m[a:b + 1][::-1].copy()
    elif op == "rotate":
        m = np.roll(m, a + 1)
    elif op == "too_big":
        m[a] = n_full + b
    else:
        m[a] = -1 - b
    if op in ("too_big", "negative"):
        info = np.iinfo(rim.dtype)
        if info.min <= m[a] <= info.max:
            m = m.astype(rim.dtype)
        out = sentinel_like(n, g.dtype)
        expect_index_error(m, g, n_full, nt, out=out)
        assert not np.any(out.view(np.uint8))
        return
    m = m.astype(rim.dtype)
    note(f"perturbed block-ordered: {is_block_ordered(m)}")
    base = grad(rim, g, num_threads=1)
    res = assert_path(lambda: grad(m, g, num_threads=nt), m, n_full, nt)
    assert_bits_equal(res.d_values, reference_grad(m, g)[0])
    assert scalar_bits(res.d_default_value) == scalar_bits(base.d_default_value)
    check_result(base, rim, g)


# ---------------------------------------------------------------------------------------------
# Past MAX_BITMAPS threads: the marking path's shared byte array (no atomic read-modify-write)

MANY_THREADS = (MAX_BITMAPS, MAX_BITMAPS + 1, 16, 33, 64)


def test_path_hook_and_its_helpers():
    # The hook names each path, and the helpers that assert a path can fail: on the wrong
    # path, and on a call that never reaches the kernel (N_full = 0 leaves the hook as it was).
    n_full = (MAX_WINDOW + 1) * BLOCK
    g = np.zeros(n_full, np.float32)
    ordered = np.arange(0, n_full, 7)
    shuffled = unordered(ordered, np.random.default_rng(0))
    assert ran_path(lambda: grad(ordered, g, num_threads=1), unlike="bitmaps")[1] == "block_walk"
    assert ran_path(lambda: grad(shuffled, g, num_threads=1))[1] == "bitmaps"
    assert ran_path(lambda: grad(shuffled, g, num_threads=MAX_BITMAPS + 1))[1] == "bytes"
    assert threads_used() == MAX_BITMAPS + 1
    expect_path("block_walk", lambda: grad(ordered, g, num_threads=2))
    assert_path(lambda: grad(shuffled, g, num_threads=2), shuffled, n_full, 2)
    with pytest.raises(AssertionError, match="expected the bitmaps path"):
        expect_path("bitmaps", lambda: grad(ordered, g, num_threads=2))
    with pytest.raises(AssertionError, match="took the bitmaps path, expected block_walk"):
        assert_path(lambda: grad(shuffled, g, num_threads=2), ordered, n_full, 2)
    empty = np.zeros(0, np.float32)
    for path in ("block_walk", "bitmaps"):
        with pytest.raises(AssertionError, match="expected the"):
            expect_path(path, lambda: grad(np.zeros(0, np.int64), empty))
    for m in (ordered, shuffled):
        with pytest.raises(AssertionError, match="the call took the"):
            assert_path(lambda: grad(np.zeros(0, np.int64), empty), m, n_full, 2)


@pytest.mark.parametrize("name", PATH_DTYPES + ("complex64",))
@pytest.mark.parametrize("style", ["shuffled", "dups_shuffled", "few_referenced"])
def test_byte_marks_past_max_bitmaps(style, name):
    # 80 blocks, so that every thread count here really runs (threads are capped at blocks).
    n_full = 80 * BLOCK - 123
    rng = np.random.default_rng([len(style), len(name)])
    if style == "dups_shuffled":
        rim = rng.integers(0, n_full, size=n_full + n_full // 3)
    elif style == "few_referenced":
        rim = rng.integers(0, n_full, size=n_full // 50)
        rim = np.concatenate([rim, rim[::-1]])
    else:
        rim = rng.permutation(n_full)[: n_full * 9 // 10]
    rim = unordered(rim, rng)
    g = make_grad(name, n_full, rng)
    first = None
    for nt in MANY_THREADS:
        res, path = ran_path(lambda: grad(rim, g, num_threads=nt))
        assert threads_used() == nt
        assert path == ("bitmaps" if nt <= MAX_BITMAPS else "bytes"), (nt, path)
        if first is None:
            check_result(res, rim, g)
            first = res
        assert_bits_equal(res.d_values, first.d_values)
        assert scalar_bits(res.d_default_value) == scalar_bits(first.d_default_value), nt


@pytest.mark.parametrize("mode", ["near", "far"])
@pytest.mark.parametrize("where", [0, 1, "mid", -FAR_AHEAD - 1, -FAR_AHEAD, -2, -1])
def test_byte_marks_out_of_range(mode, where):
    # Out-of-range entries that another thread's slice, or the prefetch, reaches first: the
    # IndexError names the first bad j whatever the thread count, and out= is zero-filled.
    n_full = FAR_BYTES // 4 if mode == "far" else 64 * BLOCK
    rng = np.random.default_rng([n_full, hash(where) & 0xFFFF])
    g = exact_grad("float32", n_full, rng)
    rim = unordered(rng.integers(0, n_full, size=n_full // 2), rng)
    j = rim.size // 2 if where == "mid" else where
    rim[j] = -1
    rim[rim.size * 3 // 4] = n_full + 10**9  # a later one, in another thread's slice
    out = sentinel_like(rim.size, g.dtype)
    for nt in MANY_THREADS:
        want = "bitmaps" if nt <= MAX_BITMAPS else "bytes"
        assert expected_path(rim, n_full, nt) == want  # what expect_index_error asserts
        expect_index_error(rim, g, n_full, nt)
        expect_index_error(rim, g, n_full, nt, out=out)
        assert not np.any(out.view(np.uint8))
        out.view(np.uint8)[...] = 0xA5


def test_byte_marks_with_out_and_streamed_output():
    # A 33 MiB output (non-temporal stores) on the shared-byte path, with out=.
    n = STREAM_BYTES // 4 + 1000
    n_full = n + n // 9
    rng = np.random.default_rng(7)
    g = exact_grad("float32", n_full, rng)
    rim = rng.integers(0, n_full, size=n)
    want_d, want_sum = reference_grad(rim, g)  # exact: the values are multiples of 1/8
    out = sentinel_like(n, g.dtype)
    for nt in (16, 64):
        res, path = ran_path(lambda: grad(rim, g, num_threads=nt, out=out))
        assert path == "bytes"
        assert res.d_values is out
        assert_bits_equal(out, want_d)
        assert scalar_bits(res.d_default_value) == scalar_bits(want_sum)
        out.view(np.uint8)[...] = 0xA5
