"""The documented summation order of ``d_default_value``, pinned bit for bit.

The order (sfer/_grad.pyx's module docstring, README "Dtypes"):

* positions ``[0, N_full)`` are cut into blocks of 4096;
* inside a block, position ``k`` is added to lane ``k % 8`` (complex: lane ``k % 4``, real
  and imaginary parts apart), in increasing ``k``; a referenced position adds nothing;
* a lane accumulates in plain float64 for float16, bfloat16, float32 and complex64, and as a
  compensated (Neumaier) pair for float64 and complex128;
* the lanes of a block are combined in a fixed order, then the blocks in increasing order;
* the result is rounded once at the end; a NaN sum is the canonical quiet NaN.

``model_component`` / ``model_bits`` below are a small pure-Python rendering of that text,
and every expected value here comes from them (never from sfer).  Three points the
documentation leaves open are filled in as follows, and the tests pin them:

* the fixed lane order is increasing (lane 0 first); a lane's pair ``(s, c)`` joins the
  block's pair by a Neumaier step on ``s`` and a plain add of ``c``, and a block's pair joins
  the total the same way;
* those two combining steps are Neumaier steps for EVERY float dtype, also those whose lanes
  accumulate in plain float64 (float16, bfloat16, float32, complex64).  The README's dtype
  table ("float64, rounded once") reads as if a float32 sum were plain float64 throughout; it
  is not: ``[2**60, 1, -2**60]`` in three lanes (or three blocks) gives 1, where plain float64
  gives 0 (``test_lanes_and_blocks_are_combined_compensated``);
* "rounded once at the end" means: the final pair becomes the float64 ``s + c`` (``s`` alone
  when it is not finite; NaN canonical), which is rounded once to the output dtype.  For the
  low precision dtypes that can be a second rounding of a value the pair held exactly: float32
  lanes holding 1, 2**-24, 2**-60 give 1, where the exact sum rounds to 1 + 2**-23
  (``test_final_pair_is_collapsed_to_float64_first``).

The inputs are built so that the expected bits depend on the order: overflow that happens or
not (float64/complex128), ties decided by a bit that one order keeps in the compensation and
the other loses, compensated against plain sums; and ``test_patterns_depend_on_the_order``
checks, with the model itself, that each of them would come out different under the order it
targets being reversed (or compensation dropped).  float16 cannot show any order: a float64
sum of up to millions of float16 values is exact (they are multiples of 2**-24 below 2**16),
so its tests pin the single rounding only.

Besides the crafted inputs, random ones are checked against the model too: values of wide
dynamic range in every block (every float dtype), and ill-conditioned sums of cancelling pairs
(float64, complex128; chosen so that the model says reversing the lanes or the blocks changes
the bits).

Each input runs on thread counts 1, 2 and 9 with a sorted map (the block walk) and with a
shuffled map referencing the same positions (the marking path: bitmaps, or shared bytes past 8
threads), on N_full = 18 blocks (parallel) and 8 blocks (serial, one window).  Referenced
positions hold decoys (NaN, +-inf, the largest finite value) that must not reach the sum.
"""

from __future__ import annotations

import math
import struct
from fractions import Fraction

import numpy as np
import pytest

import sfer
from helpers import (
    BFLOAT16,
    BLOCK,
    INEXACT_NAMES,
    LANES,
    MAX_BITMAPS,
    MAX_WINDOW,
    SERIAL_BELOW,
    dtype_of,
    expect_path,
)

grad = sfer.sparse_fill_empty_rows_grad

FLOAT_NAMES = INEXACT_NAMES  # every float and complex dtype (bfloat16 tests skip without it)
COMPENSATED_LANES = ("float64", "complex128")
THREADS = (1, 2, MAX_BITMAPS + 1)
CANONICAL_NAN = {"float16": 0x7E00, "bfloat16": 0x7FC0, "float32": 0x7FC00000,
                 "float64": 0x7FF8000000000000}
PART = {"float16": "float16", "bfloat16": "bfloat16", "float32": "float32",
        "float64": "float64", "complex64": "float32", "complex128": "float64"}

# Two sizes: 18 blocks (the last one partial) run in parallel, and on one thread take more
# blocks than one window holds (so a shuffled map takes the marking path); 8 blocks
# (N + N_full < SERIAL_BELOW) run serially in one window of the block walk, whatever the map's
# order.  The asserts keep that true of the kernel's constants (N is about N_full / 3 here).
LAYOUTS = {
    "parallel": dict(n_full=17 * BLOCK + 100, lane_block=9, blocks=(0, 5, 9, 14, 17)),
    "serial": dict(n_full=7 * BLOCK + 5, lane_block=2, blocks=(0, 2, 4, 6, 7)),
}
assert 2 * LAYOUTS["serial"]["n_full"] < SERIAL_BELOW <= LAYOUTS["parallel"]["n_full"]
assert 8 <= MAX_WINDOW < 18


def n_lanes(name):
    return LANES // 2 if name.startswith("complex") else LANES


# ---------------------------------------------------------------------------------------------
# The model


def neumaier(s, c, x):
    """One Neumaier step: the pair (s, c) plus x."""
    t = s + x
    if abs(s) >= abs(x):
        c += (s - t) + x
    else:
        c += (x - t) + s
    return t, c


def model_component(values, n_full, lanes, compensated_lanes, *, lane_order=None,
                    block_order=None, in_lane_descending=False, combine_compensated=True):
    """The pair (s, c) of one real component: ``values`` maps unreferenced positions to
    floats (every other position adds nothing).  The keyword arguments describe OTHER orders,
    for checking that an input depends on the order; the defaults are the documented one."""
    nb = -(-n_full // BLOCK)
    lane_order = list(range(lanes)) if lane_order is None else lane_order
    block_order = list(range(nb)) if block_order is None else block_order
    by_block = [[] for _ in range(nb)]
    for k in sorted(values, reverse=in_lane_descending):
        by_block[k // BLOCK].append(k)
    parts = []
    for b in range(nb):
        acc = [[0.0, 0.0] for _ in range(lanes)]
        for k in by_block[b]:  # increasing k (unless asked otherwise)
            lane = acc[k % lanes]
            if compensated_lanes:
                lane[0], lane[1] = neumaier(lane[0], lane[1], values[k])
            else:
                lane[0] += values[k]
        s = c = 0.0
        for i in lane_order:
            if combine_compensated:
                s, c = neumaier(s, c, acc[i][0])
            else:
                s += acc[i][0]
            c += acc[i][1]
        parts.append((s, c))
    s = c = 0.0
    for b in block_order:
        if combine_compensated:
            s, c = neumaier(s, c, parts[b][0])
        else:
            s += parts[b][0]
        c += parts[b][1]
    return s, c


# Rounding a float64 once to the output format, by searching the format's bit patterns (no
# cast involved, so nothing here depends on how NumPy or ml_dtypes round):
# (view of a bit pattern as a float, largest finite pattern, 2**(emax + 1), sign bit)
_FORMATS = {
    "float16": (lambda b: float(np.array([b], np.uint16).view(np.float16)[0]), 0x7BFF, 2 ** 16,
                0x8000),
    "bfloat16": (lambda b: float(np.array([b << 16], np.uint32).view(np.float32)[0]), 0x7F7F,
                 2 ** 128, 0x8000),
    "float32": (lambda b: float(np.array([b], np.uint32).view(np.float32)[0]), 0x7F7FFFFF,
                2 ** 128, 0x80000000),
}


def round_once(x, part):
    """The bits of the float64 ``x`` rounded to nearest (ties to even) in format ``part``;
    NaN is left to the caller."""
    if part == "float64":
        return struct.unpack("<Q", struct.pack("<d", x))[0]
    value, top, beyond, sign_bit = _FORMATS[part]
    sign = sign_bit if math.copysign(1.0, x) < 0 else 0
    ax = abs(x)
    if math.isinf(ax):
        return sign | (top + 1)
    lo, hi = 0, top  # the largest pattern whose value is <= ax
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if value(mid) <= ax:
            lo = mid
        else:
            hi = mid - 1
    below = Fraction(value(lo))
    above = Fraction(value(lo + 1)) if lo < top else Fraction(beyond)
    d_below, d_above = Fraction(ax) - below, above - Fraction(ax)
    b = lo if d_below < d_above or (d_below == d_above and lo % 2 == 0) else lo + 1
    return sign | b  # top + 1 is inf


def scalar_bits(x):
    a = np.asarray(x)
    return int(a.reshape(1).view(f"u{a.dtype.itemsize}")[0])


def finish(s, c):
    """The float64 value of the final pair."""
    if math.isnan(s):
        return math.nan
    return s + c if math.isfinite(s) else s


def model_bits(name, values, n_full, *, compensated_lanes=None, **variant):
    """The expected bits of d_default_value: a tuple with one int per real component."""
    part = PART[name]
    if compensated_lanes is None:
        compensated_lanes = name in COMPENSATED_LANES
    comps = ((lambda v: complex(v).real), (lambda v: complex(v).imag)) \
        if name.startswith("complex") else ((lambda v: float(v)),)
    out = []
    for get in comps:
        vals = {k: get(v) for k, v in values.items()}
        x = finish(*model_component(vals, n_full, n_lanes(name), compensated_lanes, **variant))
        out.append(CANONICAL_NAN[part] if math.isnan(x) else round_once(x, part))
    return tuple(out)


def result_bits(name, scalar):
    if name.startswith("complex"):
        return (scalar_bits(scalar.real), scalar_bits(scalar.imag))
    return (scalar_bits(scalar),)


# ---------------------------------------------------------------------------------------------
# Inputs: a pattern is a list of groups of values; a placement puts group i into lane i of one
# block ("lanes"), into the i-th of several blocks ("blocks", a group's values in successive
# lanes), or all values one after another into lane 0 of one block ("one_lane").

M = 1e308  # two of them overflow float64
T = {"bfloat16": 8, "float32": 24, "complex64": 24, "float64": 24, "complex128": 24}

PATTERNS = {
    # float64 overflow: inf in the documented order, finite (1e308) in the reverse one ...
    "overflow": (("float64", "complex128"), lambda name: [[M], [M], [-M]]),
    # ... and the other way round.
    "overflow_mirrored": (("float64", "complex128"), lambda name: [[-M], [M], [M]]),
    # A tie.  Documented order: the compensation takes 2**-t (lost by s at 2**50), s comes
    # back to 1, then 2**-53 + 2**-83 rounds s up to 1 + 2**-52 and the error, -2**-53 +
    # 2**-83, joins the compensation, whose precision (near 2**-t) drops the 2**-83: s + c is
    # the float64 tie 1 + 2**-t + 2**-53, rounded to even 1 + 2**-t (for float32/bfloat16,
    # t = 24/8, a tie again: 1).  Reverse order: the compensation keeps 2**-53 + 2**-83, s ends
    # at 1 + 2**-t, and s + c rounds up (float64 1 + 2**-24 + 2**-52, float32 1 + 2**-23).
    "tie": (("bfloat16", "float32", "float64", "complex64", "complex128"),
            lambda name: [[2.0 ** -T[name]], [2.0 ** 50], [-(2.0 ** 50), 1.0],
                          [2.0 ** -53, 2.0 ** -83]]),
    # Compensated: 1 across lanes or blocks; one lane holds it in plain float64 for the low
    # precision dtypes (0), compensated for float64/complex128 (1).
    "compensated": (("bfloat16", "float32", "float64", "complex64", "complex128"),
                    lambda name: [[2.0 ** 60], [1.0], [-(2.0 ** 60)]]),
    # The same values, the small one first: in one lane, increasing k gives 0 in plain
    # float64 and decreasing k gives 1.
    "small_first": (("bfloat16", "float32", "complex64"),
                    lambda name: [[1.0], [2.0 ** 60], [-(2.0 ** 60)]]),
    # Neumaier's classic: 2 (Kahan gives 0, plain float64 0).
    "classic": (("float64", "complex128"), lambda name: [[1.0], [1e100], [1.0], [-1e100]]),
    # Rounded once: exactly 2049 + 2**-20, which is 2050 in float16 (2048 via float32).
    "single_rounding": (("float16",), lambda name: [[2048.0], [1.0], [2.0 ** -20]]),
    # float16 extremes: exact in float64 in any order.
    "float16_range": (("float16",),
                      lambda name: [[65504.0], [2.0 ** -24], [-65504.0], [1.0, 2.0 ** -24],
                                    [-(2.0 ** -14)]]),
    # inf - inf: the canonical NaN; -0.0 alone: +0.
    "inf_minus_inf": (FLOAT_NAMES, lambda name: [[math.inf], [1.0], [-math.inf]]),
    "negative_zeros": (FLOAT_NAMES, lambda name: [[-0.0], [-0.0, -0.0], [-0.0]]),
}
PLACEMENTS = ("lanes", "blocks", "one_lane")

# What each (pattern, placement) must be sensitive to, per the model: the variant of the
# order whose reversal (or, for "plain", dropping compensation) changes the expected bits.
TARGETS = {
    ("overflow", "lanes"): "lanes", ("overflow", "blocks"): "blocks",
    ("overflow", "one_lane"): "in_lane",
    ("overflow_mirrored", "lanes"): "lanes", ("overflow_mirrored", "blocks"): "blocks",
    ("overflow_mirrored", "one_lane"): "in_lane",
    ("tie", "lanes"): "lanes", ("tie", "blocks"): "blocks",
    ("compensated", "lanes"): "plain", ("compensated", "blocks"): "plain",
    ("small_first", "one_lane"): "in_lane",
    ("classic", "one_lane"): "plain",
}


def place(name, groups, placement, layout):
    """{position: value} for a pattern (complex: the pattern in both parts)."""
    lay = LAYOUTS[layout]
    lanes = n_lanes(name)
    if name.startswith("complex"):
        groups = [[complex(v, v) for v in grp] for grp in groups]
    pos = {}
    if placement == "lanes":
        base = lay["lane_block"] * BLOCK + 16
        assert len(groups) <= lanes
        for i, grp in enumerate(groups):
            for j, v in enumerate(grp):
                pos[base + i + j * lanes] = v
    elif placement == "blocks":
        assert len(groups) <= len(lay["blocks"])
        for b, grp in zip(lay["blocks"], groups):
            for j, v in enumerate(grp):
                pos[b * BLOCK + 1 + j] = v
    else:
        base = lay["lane_block"] * BLOCK + 24
        flat = [v for grp in groups for v in grp]
        for j, v in enumerate(flat):
            pos[base + j * lanes] = v
    assert max(pos) < lay["n_full"]
    return pos


def make_inputs(name, values, layout, seed=0):
    """grad_values with ``values`` at their positions, decoys at referenced ones; the sorted
    map and a shuffled one (not block-ordered) of the same referenced positions."""
    dtype = dtype_of(name)
    n_full = LAYOUTS[layout]["n_full"]
    g = np.zeros(n_full, dtype=dtype)
    for k, v in values.items():
        g[k] = v
        back = complex(g[k]) if name.startswith("complex") else float(g[k])
        for a, b in ((np.real(back), np.real(v)), (np.imag(back), np.imag(v))):
            # representable, with the sign of a zero
            same = a == b and math.copysign(1, a) == math.copysign(1, b)
            assert same or (a != a and b != b), (name, k, v, back)
    referenced = np.setdiff1d(np.arange(1, n_full, 3), np.fromiter(values, np.int64))
    # Decoys: values that would wreck the sum, in the blocks the pattern uses.
    big = {"float16": 65504.0, "bfloat16": 3.0e38, "float32": 3.4e38}.get(PART[name], 1.7e308)
    decoys = [math.nan, math.inf, -math.inf, big, -big]
    for b in sorted({k // BLOCK for k in values}):
        in_block = referenced[(referenced // BLOCK) == b][: len(decoys)]
        for k, v in zip(in_block, decoys):
            g[k] = complex(v, -v) if name.startswith("complex") else v
    rng = np.random.default_rng(seed)
    shuffled = rng.permutation(referenced)
    big_first = int(np.argmax(shuffled))
    shuffled[[0, big_first]] = shuffled[[big_first, 0]]  # the screen rejects it at once
    return g, referenced.astype(np.int64), shuffled.astype(np.int64)


def check_runs(name, g, maps, expected, what, layout):
    """Run every map on every thread count; all must give ``expected`` bits."""
    bad = []
    for label, rim in maps.items():
        for nt in THREADS:
            # The paths these inputs are meant to cover (a serial build too: the thread count
            # asked for picks the path).
            want = ("block_walk" if label == "sorted" or layout == "serial"
                    else "bytes" if nt > MAX_BITMAPS else "bitmaps")
            res = expect_path(want, lambda: grad(rim, g, num_threads=nt))
            got = result_bits(name, res.d_default_value)
            if got != expected:
                bad.append(f"{label} map, {nt} threads: got {[hex(b) for b in got]} "
                           f"({res.d_default_value!r}), expected {[hex(b) for b in expected]}")
    assert not bad, f"{what}:\n" + "\n".join(bad)


def _pattern_cases():
    for pname, (names, _) in PATTERNS.items():
        for name in names:
            for placement in PLACEMENTS:
                yield pname, name, placement


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
@pytest.mark.parametrize("pname,name,placement", list(_pattern_cases()))
def test_pattern(pname, name, placement, layout):
    groups = PATTERNS[pname][1](name)
    if placement == "lanes" and len(groups) > n_lanes(name):
        pytest.skip("more groups than lanes")
    values = place(name, groups, placement, layout)
    g, rim, shuffled = make_inputs(name, values, layout)
    expected = model_bits(name, values, LAYOUTS[layout]["n_full"])
    check_runs(name, g, {"sorted": rim, "shuffled": shuffled}, expected,
               f"{pname}/{placement}/{name}/{layout}", layout)


# ---------------------------------------------------------------------------------------------
# The inputs are order-sensitive (a check of the test data, by the model alone)


def _variant(target, name, n_full):
    nb = -(-n_full // BLOCK)
    return {
        "lanes": dict(lane_order=list(range(n_lanes(name)))[::-1]),
        "blocks": dict(block_order=list(range(nb))[::-1]),
        "in_lane": dict(in_lane_descending=True),
        "plain": dict(combine_compensated=False, compensated_lanes=False),
    }[target]


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
@pytest.mark.parametrize("pname,placement", sorted(TARGETS))
def test_patterns_depend_on_the_order(pname, placement, layout):
    n_full = LAYOUTS[layout]["n_full"]
    for name in PATTERNS[pname][0]:
        if name == "bfloat16" and BFLOAT16 is None:
            continue
        values = place(name, PATTERNS[pname][1](name), placement, layout)
        target = TARGETS[pname, placement]
        documented = model_bits(name, values, n_full)
        other = model_bits(name, values, n_full, **_variant(target, name, n_full))
        assert documented != other, (pname, placement, name, target, documented)


def test_the_briefs_example_float64():
    """float64 [1e308, 1e308, -1e308, 0, ...], empty map: inf; reversed lanes: 1e308."""
    g = np.zeros(16)
    g[:3] = [1e308, 1e308, -1e308]
    assert grad(np.array([], np.int64), g).d_default_value == np.inf
    values = {0: 1e308, 1: 1e308, 2: -1e308}
    assert model_bits("float64", values, 16) == (scalar_bits(np.float64(np.inf)),)
    reversed_lanes = model_bits("float64", values, 16, lane_order=list(range(8))[::-1])
    assert reversed_lanes == (scalar_bits(np.float64(1e308)),)


# ---------------------------------------------------------------------------------------------
# Two consequences of the kernel's actual order, pinned explicitly (see the module docstring)


@pytest.mark.parametrize("name", ["float32", "bfloat16", "complex64"])
@pytest.mark.parametrize("placement", ["lanes", "blocks"])
def test_lanes_and_blocks_are_combined_compensated(name, placement):
    values = place(name, [[2.0 ** 60], [1.0], [-(2.0 ** 60)]], placement, "parallel")
    g, rim, shuffled = make_inputs(name, values, "parallel")
    one = (scalar_bits(np.float32(1.0)),) if name == "float32" else None
    expected = model_bits(name, values, LAYOUTS["parallel"]["n_full"])
    plain = model_bits(name, values, LAYOUTS["parallel"]["n_full"], combine_compensated=False)
    assert expected != plain
    if one is not None:
        assert expected == one
    check_runs(name, g, {"sorted": rim, "shuffled": shuffled}, expected,
               f"compensated combine/{placement}/{name}", "parallel")


@pytest.mark.parametrize("name", ["float32", "complex64"])
def test_final_pair_is_collapsed_to_float64_first(name):
    # Lanes 0, 1, 2 hold 1, 2**-24, 2**-60: the pair is (1 + 2**-24, 2**-60), exactly the
    # sum, whose float32 rounding is 1 + 2**-23; but s + c in float64 is the tie 1 + 2**-24,
    # which rounds to even: 1.
    values = place(name, [[1.0], [2.0 ** -24], [2.0 ** -60]], "lanes", "parallel")
    g, rim, shuffled = make_inputs(name, values, "parallel")
    expected = model_bits(name, values, LAYOUTS["parallel"]["n_full"])
    assert expected[0] == scalar_bits(np.float32(1.0))
    check_runs(name, g, {"sorted": rim, "shuffled": shuffled}, expected,
               f"pair collapse/{name}", "parallel")


# ---------------------------------------------------------------------------------------------
# NaN: canonical whatever the payloads and signs that met


NAN_PAYLOADS = {"float16": (0x7C01, 0xFE01), "bfloat16": (0x7F81, 0xFFC1),
                "float32": (0x7F800001, 0xFFC00001),
                "float64": (0x7FF0000000000001, 0xFFF8DEADBEEF0001)}


@pytest.mark.parametrize("name", FLOAT_NAMES)
def test_nan_sum_is_canonical(name):
    dtype = dtype_of(name)
    part = PART[name]
    n_full = LAYOUTS["parallel"]["n_full"]
    g, rim, shuffled = make_inputs(name, {}, "parallel")
    width = {"float16": 2, "bfloat16": 2, "float32": 4, "float64": 8}[part]
    ubits = g.view(f"u{width}")  # complex: parts interleaved
    step = 2 if name.startswith("complex") else 1
    for i, k in enumerate((0, 3 * BLOCK + 5, n_full - 1)):  # unreferenced (k % 3 != 1)
        assert k % 3 != 1
        ubits[k * step] = NAN_PAYLOADS[part][i % 2]
        if step == 2:
            ubits[k * step + 1] = NAN_PAYLOADS[part][(i + 1) % 2]
    values = {k: complex(v) if step == 2 else float(v) for k, v in
              ((k, g[k]) for k in (0, 3 * BLOCK + 5, n_full - 1))}
    expected = model_bits(name, values, n_full)
    assert expected == (CANONICAL_NAN[part],) * (2 if step == 2 else 1)
    assert dtype == g.dtype
    check_runs(name, g, {"sorted": rim, "shuffled": shuffled}, expected, f"nan/{name}",
               "parallel")


# ---------------------------------------------------------------------------------------------
# Random values of wide dynamic range in every block: the order shows in the low bits


WIDE = {"float16": (-24, 6), "bfloat16": (-40, 40), "float32": (-40, 40), "float64": (-60, 60)}


def wide_values(name, n_full, rng, density=0.5):
    part = PART[name]
    lo, hi = WIDE[part]
    ks = np.flatnonzero((rng.random(n_full) < density) & (np.arange(n_full) % 3 != 1))

    def real():
        m = rng.random(ks.size) + 1.0
        x = np.ldexp(m, rng.integers(lo, hi + 1, size=ks.size)) * rng.choice([-1.0, 1.0], ks.size)
        dt = dtype_of(part)
        return x.astype(dt).astype(np.float64)  # representable in the dtype

    vals = real() + 1j * real() if name.startswith("complex") else real()
    return {int(k): (complex(v) if name.startswith("complex") else float(v))
            for k, v in zip(ks, vals)}


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
@pytest.mark.parametrize("name", FLOAT_NAMES)
def test_random_wide_values(name, layout):
    dtype_of(name)
    n_full = LAYOUTS[layout]["n_full"]
    rng = np.random.default_rng(sum(map(ord, name + layout)))
    values = wide_values(name, n_full, rng)
    g, rim, shuffled = make_inputs(name, values, layout, seed=1)
    expected = model_bits(name, values, n_full)
    check_runs(name, g, {"sorted": rim, "shuffled": shuffled}, expected,
               f"random wide/{name}/{layout}", layout)


def test_round_once_helper():
    """The model's rounding (a check of the test itself)."""
    assert round_once(2049 + 2.0 ** -20, "float16") == 0x6801  # 2050
    assert round_once(2049.0, "float16") == 0x6800  # a tie: to even, 2048
    assert round_once(257.0, "bfloat16") == 0x4380  # tie: 256
    assert round_once(259.0, "bfloat16") == 0x4382  # tie: 260
    assert round_once(-(257 + 2.0 ** -30), "bfloat16") == 0xC381  # -258
    assert round_once(65520.0, "float16") == 0x7C00  # halfway to 2**16: inf
    assert round_once(65519.99, "float16") == 0x7BFF
    assert round_once(2.0 ** -25, "float16") == 0x0000  # half the smallest subnormal: even
    assert round_once(-(2.0 ** -25) * 1.5, "float16") == 0x8001
    assert round_once(1e39, "bfloat16") == 0x7F80
    assert round_once(-0.0, "float32") == 0x80000000
    rng = np.random.default_rng(0)
    x = rng.standard_normal(300) * 2.0 ** rng.integers(-150, 130, 300)
    with np.errstate(over="ignore"):
        for v in x.tolist():  # NumPy's float64 -> float32 cast rounds once, to nearest even
            assert round_once(v, "float32") == scalar_bits(np.float32(v)), v


def ill_values(name, n_full, rng):
    """Every unreferenced position (k % 3 != 1) holds x or -x, in pairs placed at random
    (|x| up to 2**81), and one holds 0.75: the exact sum is 0.75, and what the order of the
    additions leaves over shows in the low bits."""
    ks = rng.permutation(np.flatnonzero(np.arange(n_full) % 3 != 1))
    half = ks.size // 2

    def real():
        return np.ldexp(rng.random(half) + 1.0, rng.integers(0, 81, half)) \
            * rng.choice([-1.0, 1.0], half)

    x = real() + 1j * real() if name.startswith("complex") else real()
    values = {}
    for a, b, v in zip(ks[:half].tolist(), ks[half:2 * half].tolist(), x.tolist()):
        values[a], values[b] = v, -v
    small = 0.75 + 0.75j if name.startswith("complex") else 0.75
    if ks.size % 2:
        values[int(ks[-1])] = small
    else:  # the last pair becomes (0.75, 0)
        values[int(ks[half - 1])], values[int(ks[2 * half - 1])] = small, 0.0 * small
    return values


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
@pytest.mark.parametrize("name", ["float64", "complex128"])
def test_random_ill_conditioned(name, layout):
    n_full = LAYOUTS[layout]["n_full"]
    rng = np.random.default_rng(sum(map(ord, name + layout)) + 1)
    nb = -(-n_full // BLOCK)
    for _ in range(20):  # the first data that depends on both orders (by the model alone)
        values = ill_values(name, n_full, rng)
        expected = model_bits(name, values, n_full)
        if expected != model_bits(name, values, n_full, block_order=list(range(nb))[::-1]) \
                and expected != model_bits(name, values, n_full,
                                           lane_order=list(range(n_lanes(name)))[::-1]):
            break
    else:
        pytest.fail("no order-sensitive data in 20 tries")
    g, rim, shuffled = make_inputs(name, values, layout, seed=2)
    check_runs(name, g, {"sorted": rim, "shuffled": shuffled}, expected,
               f"random ill-conditioned/{name}/{layout}", layout)
