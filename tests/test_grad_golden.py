"""The golden corpus: sfer's exact output bits for a few hundred seeded inputs.

``tests/golden/grad_v1.json`` was recorded from the build of commit d462c36 (see its
``recorded_with``) by ``python tests/make_golden.py --write``.  Every input is regenerated
here from ``tests/golden_cases.py`` (raw PCG64 bits only, so identically on any NumPy
version), run through ``sfer.sparse_fill_empty_rows_grad`` with the recorded thread counts,
with and without ``out=``, and both outputs must have the recorded bits: the sha256 of
``d_values`` and the bytes of ``d_default_value``.

Covered: every grad dtype (bfloat16 with ml_dtypes), map dtypes int8 .. uint64, every path
(block walk: sorted, block-sorted and, single-threaded up to 16 blocks, any map; marking with a
bitmap per thread; marking with the shared byte array past 8 threads), duplicates, few / no /
all positions referenced, N_full = 0, 1 and sizes around the 4096-position blocks and the
16-block window up to ~300k, thread counts 1, 2, 3, 8, 9 and 16, byte-swapped and strided
inputs (the Python validation path), streamed (>= 32 MiB) outputs, NaN payloads, infs, -0.0,
subnormals, values near overflow and values of wide dynamic range (the summation order shows
in the low bits of the sum).

A failure names the input and the run (``<input id>|t<threads>[|out]``).  If a change of the
results is intended, re-record with ``python tests/make_golden.py --write`` and say why in the
commit.
"""

from __future__ import annotations

import numpy as np
import pytest

import golden_cases as gc
import sfer

CORPUS = gc.load_corpus()
RECORDED = CORPUS["inputs"]
LAST_PATH, LAST_THREADS = gc.kernel_hooks(sfer)
# The path and thread count of each run are checked where the test hooks exist.  (A serial
# build takes the same paths: the thread count asked for still picks the path, and the
# corpus matched a serial build of the recorded commit in full.)
CHECK_PATHS = LAST_PATH is not None and LAST_THREADS is not None


def test_corpus_format():
    assert CORPUS["format"] == gc.FORMAT


def test_corpus_lists_exactly_the_defined_inputs():
    defined = {s.id: s for s in gc.INPUTS}
    only_defined = sorted(set(defined) - set(RECORDED))
    only_recorded = sorted(set(RECORDED) - set(defined))
    assert not only_defined and not only_recorded, (
        f"inputs defined but not recorded: {only_defined[:10]}; recorded but no longer "
        f"defined: {only_recorded[:10]} (re-record with tests/make_golden.py --write)")
    for key, spec in defined.items():
        rec = RECORDED[key]
        assert (rec["dtype"], rec["profile"], rec["map"], rec["map_dtype"], rec["n_full"],
                rec["layout"], rec["seed"]) == (spec.dtype, spec.profile, spec.map,
                                                spec.map_dtype, spec.n_full, spec.layout,
                                                spec.seed), key
        assert sorted(rec["runs"]) == sorted(r[len(key) + 1:] for r, _, _ in spec.runs()), key


def test_corpus_covers_what_it_claims():
    runs = [r for rec in RECORDED.values() for r in rec["runs"].values()]
    assert {r["path"] for r in runs} - {None} == set(gc.PATHS)
    assert {rec["dtype"] for rec in RECORDED.values()} == set(gc.GRAD_NAMES)
    assert {rec["map_dtype"] for rec in RECORDED.values()} == set(gc.MAP_NAMES)
    keys = {k for rec in RECORDED.values() for k in rec["runs"]}
    assert {int(k.split("|")[0][1:]) for k in keys} == set(gc.THREADS)
    assert any(k.endswith("|out") for k in keys) and any(not k.endswith("|out") for k in keys)
    sizes = {rec["n_full"] for rec in RECORDED.values()}
    assert {0, 1, 4095, 4096, 4097, 65_536, 65_537, 300_007} <= sizes
    # every path for every dtype
    for name in gc.GRAD_NAMES:
        paths = {r["path"] for rec in RECORDED.values() if rec["dtype"] == name
                 for r in rec["runs"].values()}
        assert set(gc.PATHS) <= paths, (name, paths)
    # inputs whose sum depends on the order of the lanes and of the blocks, for every float
    # dtype that can show it (a float16 sum is exact in float64 in any order)
    for name in gc.FLOAT_NAMES[1:]:
        profiles = {rec["profile"] for rec in RECORDED.values() if rec["dtype"] == name}
        assert {"tie_lanes", "tie_blocks", "ill"} <= profiles, name


def test_path_hooks_found():
    # Without them the runs' paths go unchecked; if the kernel module moved, teach
    # golden_cases.kernel_hooks where the hooks are now.
    assert CHECK_PATHS, ("sfer._grad._last_path / sfer._runtime._last_threads not found: update "
                         "golden_cases.kernel_hooks so that the paths stay checked")


def _spec_id(spec):
    return spec.id


@pytest.mark.parametrize("spec", gc.INPUTS, ids=_spec_id)
def test_golden(spec):
    if spec.dtype == "bfloat16" and gc.BFLOAT16 is None:
        pytest.skip("bfloat16 needs ml_dtypes")
    rec = RECORDED[spec.id]
    rim, g = gc.generate(spec)
    digest = gc.input_digest(spec, rim, g)
    assert digest == rec["in_sha256"], (
        f"{spec.id}: the regenerated INPUT differs from the recorded one (NumPy "
        f"{np.__version__}): a problem of the input generation in tests/golden_cases.py, "
        f"not of sfer")
    rim_l, g_l = gc.apply_layout(spec, rim, g)
    bad = []
    for run_id, t, out in spec.runs():
        want = rec["runs"][run_id[len(spec.id) + 1:]]
        dv, dd, res = gc.run_one(sfer, rim_l, g_l, t, out)
        if dd != want["d_default_value"]:
            bad.append(f"{run_id}: d_default_value {gc.describe(dd, spec.dtype)} (bits {dd}) "
                       f"!= recorded {gc.describe(want['d_default_value'], spec.dtype)} "
                       f"(bits {want['d_default_value']})")
        if dv != want["d_values_sha256"]:
            # A hint: where d_values stops being the exact gather g[rim].
            got = np.frombuffer(gc.canonical_bytes(res.d_values), dtype=np.uint8)
            ref = np.frombuffer(gc.canonical_bytes(g[rim.astype(np.int64)]), dtype=np.uint8)
            size = res.d_values.dtype.itemsize
            wrong = np.flatnonzero((got != ref).reshape(-1, size).any(axis=1)) \
                if got.shape == ref.shape else np.array([-1])
            bad.append(f"{run_id}: d_values differ from the recorded ones (sha256 {dv[:16]}.. "
                       f"!= {want['d_values_sha256'][:16]}..); d_values[j] != g[rim[j]] at "
                       f"{wrong.size} j, the first {wrong[:5].tolist()}")
        if CHECK_PATHS:
            got = (LAST_PATH() if spec.n_full else None, LAST_THREADS())
            if got != (want["path"], want["threads_used"]):
                bad.append(f"{run_id}: ran on path {got[0]} with {got[1]} threads, recorded "
                           f"{want['path']} with {want['threads_used']} (same bits or not, "
                           f"the corpus no longer covers what it claims)")
    assert not bad, (f"{len(bad)} mismatches for input {spec.id} ({rec['note']}):\n"
                     + "\n".join(bad))
