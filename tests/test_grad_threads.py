"""Threading: OpenMP present, bitwise determinism across num_threads and map
order, the same first bad j whatever the thread count, thread safety."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import sfer
from checks import assert_bits_equal, check_sum
from helpers import INEXACT_NAMES, dtype_of
from oracle import index_error_message, scalar_bits, unreferenced

grad = sfer.sparse_fill_empty_rows_grad

THREADS = (1, 2, 3, 4, 7)
N_FULL = 2_000_000
N_MAP = 1_500_000
BIG_DTYPES = ["float32", "float64", "float16", "complex64", "complex128", "int64", "bfloat16"]


def test_openmp_enabled():
    if os.environ.get("SFER_ALLOW_SERIAL_BUILD") == "1":
        pytest.skip("SFER_ALLOW_SERIAL_BUILD=1: a serial (non-OpenMP) build is allowed")
    assert sfer.openmp_enabled() is True, "sfer was built without OpenMP"


def test_openmp_enabled_returns_bool():
    assert isinstance(sfer.openmp_enabled(), bool)


@pytest.fixture(scope="module")
def big_maps():
    rng = np.random.default_rng(1234)
    rim_sorted = np.sort(rng.integers(0, N_FULL, size=N_MAP))
    rim_shuffled = rng.permutation(rim_sorted)
    return {"sorted": rim_sorted, "shuffled": rim_shuffled}


def big_values(name):
    rng = np.random.default_rng(99)
    dtype = dtype_of(name)
    if dtype.kind in "iu":
        return rng.integers(np.iinfo(dtype).min, np.iinfo(dtype).max, size=N_FULL, dtype=dtype)
    vals = rng.standard_normal(N_FULL) * 10.0 ** rng.uniform(-4, 4, size=N_FULL)
    if dtype == np.float16 or name == "bfloat16":
        vals = rng.uniform(-1.0, 1.0, size=N_FULL)
    if dtype.kind == "c":
        vals = vals + 1j * vals[::-1]
    return vals.astype(dtype)


@pytest.mark.parametrize("name", BIG_DTYPES)
def test_bitwise_determinism_across_threads_and_map_order(name, big_maps):
    g = big_values(name)
    results = {}
    for kind, rim in big_maps.items():
        for nt in THREADS + (None,):
            results[kind, nt] = grad(rim, g, num_threads=nt)
    ref_sorted = results["sorted", 1]
    ref_shuffled = results["shuffled", 1]
    for (kind, nt), res in results.items():
        base = ref_sorted if kind == "sorted" else ref_shuffled
        assert_bits_equal(res.d_values, base.d_values)
        assert scalar_bits(res.d_default_value) == scalar_bits(base.d_default_value), (kind, nt)
        assert type(res.d_default_value) is type(base.d_default_value)
    # sorted vs shuffled map with the same referenced set: same sum bits
    assert scalar_bits(ref_sorted.d_default_value) == scalar_bits(ref_shuffled.d_default_value)
    # and both are right
    assert_bits_equal(ref_sorted.d_values, g[big_maps["sorted"]])
    assert_bits_equal(ref_shuffled.d_values, g[big_maps["shuffled"]])
    mask = unreferenced(big_maps["sorted"], N_FULL)
    check_sum(ref_sorted.d_default_value, g[mask], g.dtype)


def test_determinism_with_few_referenced(big_maps):
    """Almost nothing referenced: the sum dominates the work."""
    g = big_values("float64")
    rim = np.array([5, N_FULL - 1, 5, 1_000_000], dtype=np.uint32)
    bits = {scalar_bits(grad(rim, g, num_threads=nt).d_default_value) for nt in THREADS}
    assert len(bits) == 1
    bits_perm = {
        scalar_bits(grad(rim[::-1], g, num_threads=nt).d_default_value) for nt in THREADS
    }
    assert bits_perm == bits


def test_determinism_duplicated_shuffled_map():
    rng = np.random.default_rng(3)
    g = big_values("float32")
    rim = rng.integers(0, N_FULL, size=3_000_000)
    rim_sorted = np.sort(rim)
    ref = grad(rim_sorted, g, num_threads=1)
    for nt in (2, 4):
        res = grad(rim, g, num_threads=nt)
        assert scalar_bits(res.d_default_value) == scalar_bits(ref.d_default_value)
        assert_bits_equal(res.d_values, g[rim])


def test_omp_num_threads_env_is_honoured_deterministically(tmp_path, big_maps):
    """num_threads=None follows OMP_NUM_THREADS; results must not change."""
    g = big_values("float64")
    rim = big_maps["shuffled"]
    np.save(tmp_path / "g.npy", g)
    np.save(tmp_path / "rim.npy", rim)
    expected = grad(rim, g, num_threads=1)
    code = textwrap.dedent(
        f"""
        import sys
        sys.path = [p for p in sys.path if p not in ("", {os.getcwd()!r})]
        import numpy as np, sfer
        g = np.load({str(tmp_path / 'g.npy')!r}); rim = np.load({str(tmp_path / 'rim.npy')!r})
        r = sfer.sparse_fill_empty_rows_grad(rim, g)
        np.save({str(tmp_path / 'out.npy')!r}, r.d_values)
        print(np.array(r.d_default_value).view(np.uint64).item())
        """
    )
    for omp in ("1", "3"):
        env = dict(os.environ, OMP_NUM_THREADS=omp)
        proc = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, env=env,
            cwd=tmp_path, timeout=120,
        )
        assert proc.returncode == 0, proc.stderr
        assert int(proc.stdout.strip()) == scalar_bits(expected.d_default_value)
        assert_bits_equal(np.load(tmp_path / "out.npy"), expected.d_values)


# --------------------------------------------------------------------------
# first offending j does not depend on the thread count
# --------------------------------------------------------------------------

N_BAD = 200_000
BAD_PATTERNS = {
    # position -> value; the lowest position must be reported
    "spread": {150_000: -1, 199_999: 10**9, 60_000: N_BAD, 60_001: -5, 120_000: N_BAD + 7},
    "late_half_only": {180_000: N_BAD, 100_001: -3},
    "first_and_last": {199_999: -2, 0: N_BAD + 1},
    "last_only": {199_999: N_BAD},
    "every_chunk": {k * 25_000 + 17: -(k + 1) for k in range(7, 0, -1)},
    "tail_many": {j: N_BAD + j for j in range(199_000, 200_000, 3)},
}


@pytest.mark.parametrize("pattern", list(BAD_PATTERNS))
@pytest.mark.parametrize("map_dtype", ["int64", "int32"])
def test_first_bad_j_independent_of_threads(pattern, map_dtype):
    rng = np.random.default_rng(11)
    rim = rng.integers(0, N_BAD, size=N_BAD).astype(map_dtype)
    for j, v in BAD_PATTERNS[pattern].items():
        rim[j] = v
    j0 = min(BAD_PATTERNS[pattern])
    v0 = BAD_PATTERNS[pattern][j0]
    g = np.ones(N_BAD, dtype=np.float32)
    msg = "^" + re.escape(index_error_message(j0, v0, N_BAD)) + "$"
    for nt in THREADS + (None,):
        with pytest.raises(IndexError, match=msg):
            grad(rim, g, num_threads=nt)


def test_first_bad_j_uint64_huge_independent_of_threads():
    rng = np.random.default_rng(12)
    rim = rng.integers(0, N_BAD, size=N_BAD).astype(np.uint64)
    rim[170_000] = np.uint64(2**64 - 1)
    rim[90_000] = np.uint64(2**63)
    rim[130_000] = np.uint64(N_BAD)
    g = np.zeros(N_BAD, dtype=np.complex64)
    msg = "^" + re.escape(index_error_message(90_000, 2**63, N_BAD)) + "$"
    for nt in THREADS + (None,):
        with pytest.raises(IndexError, match=msg):
            grad(rim, g, num_threads=nt)


def test_first_bad_j_with_big_n_full_and_threads():
    """Bad entries in a map that would be processed in parallel."""
    rng = np.random.default_rng(13)
    g = np.arange(N_FULL, dtype=np.int32)
    rim = rng.integers(0, N_FULL, size=N_MAP)
    bads = {1_400_000: -1, 800_000: N_FULL, 1_200_000: N_FULL * 3}
    for j, v in bads.items():
        rim[j] = v
    msg = "^" + re.escape(index_error_message(800_000, N_FULL, N_FULL)) + "$"
    for nt in THREADS:
        with pytest.raises(IndexError, match=msg):
            grad(rim, g, num_threads=nt)


# --------------------------------------------------------------------------
# calling from several Python threads at once
# --------------------------------------------------------------------------

def test_concurrent_calls_from_python_threads():
    rng = np.random.default_rng(21)
    inputs = []
    for k in range(8):
        n = 300_000 + k * 1000
        g = rng.standard_normal(n).astype(np.float64 if k % 2 else np.float32)
        rim = rng.integers(0, n, size=n // 2)
        inputs.append((rim, g, grad(rim, g, num_threads=1)))

    def work(item):
        rim, g, _ = item
        return grad(rim, g, num_threads=2)

    with ThreadPoolExecutor(max_workers=4) as ex:
        outs = list(ex.map(work, inputs * 2))
    for (rim, g, expected), res in zip(inputs * 2, outs):
        assert_bits_equal(res.d_values, expected.d_values)
        assert scalar_bits(res.d_default_value) == scalar_bits(expected.d_default_value)


def test_threadpoolctl_openmp_limit_keeps_results():
    """Limiting OpenMP through threadpoolctl (num_threads=None) changes nothing."""
    threadpoolctl = pytest.importorskip("threadpoolctl")
    g = big_values("float32")
    rng = np.random.default_rng(31)
    rim = rng.integers(0, N_FULL, size=N_MAP)
    expected = grad(rim, g, num_threads=1)
    with threadpoolctl.threadpool_limits(limits=1, user_api="openmp"):
        res = grad(rim, g)
    assert scalar_bits(res.d_default_value) == scalar_bits(expected.d_default_value)
    assert_bits_equal(res.d_values, expected.d_values)


@pytest.mark.parametrize("name", INEXACT_NAMES)
def test_nan_bits_independent_of_map_order_and_threads(name):
    """NaNs of both signs (and NaNs made by inf - inf) in the sum: the result's bits,
    NaN sign and payload included, must not depend on the map order or thread count."""
    dtype = dtype_of(name)
    rng = np.random.default_rng(2024)
    specials = np.array([np.nan, -np.nan, np.inf, -np.inf])
    for n in (50, 73, 200, 5000, 300_000):
        for _ in range(3 if n > 10_000 else 25):
            v = rng.standard_normal(n)
            if dtype.kind == "c":
                v = v + 1j * rng.standard_normal(n)
            idx = rng.integers(0, n, size=rng.integers(1, 6))
            v[idx] = rng.choice(specials, size=idx.size)
            if dtype.kind == "c":
                idx = rng.integers(0, n, size=rng.integers(1, 6))
                v.imag[idx] = rng.choice(specials, size=idx.size)
            g = v.astype(dtype)
            rim = np.sort(rng.choice(n, size=n // 3, replace=False))
            shuffled = rng.permutation(rim)
            expected = scalar_bits(grad(rim, g, num_threads=1).d_default_value)
            for r in (rim, shuffled):
                for nt in (1, 2, 4):
                    got = scalar_bits(grad(r, g, num_threads=nt).d_default_value)
                    assert got == expected, (
                        f"n={n} sorted={r is rim} num_threads={nt}: "
                        f"{got:#x} != {expected:#x}"
                    )
