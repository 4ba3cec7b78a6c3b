# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""The grad op, SparseFillEmptyRowsGrad: its kernels and its C entry point (private: call
``sfer.sparse_fill_empty_rows_grad``).

Definitions used by every kernel below:

* ``index_key(r)`` (sfer/_common.pxd): a map entry as an unsigned 64-bit number, so that one
  range test ``index_key(r) < n_full`` rejects negative entries too.
* The unreferenced sum is defined block by block: positions ``[0, n_full)`` are cut into blocks
  of ``BLOCK`` positions; inside a block, position ``k`` is added to lane ``k % LANES`` (8;
  complex: lane ``k % 4``, real and imaginary parts apart) in increasing ``k``.  Within a lane
  the adds are plain float64 for float16/bfloat16/float32/complex64 and compensated (Neumaier:
  a sum ``s`` and a compensation ``c``) for float64/complex128.  Then, for every float dtype,
  the lanes are combined in increasing lane order (``lanes_close``: a Neumaier step of each
  lane's ``s`` into the block's pair, its ``c`` added to the block's ``c``), and the blocks in
  increasing block order the same way (``combine_block_sums``).  The value is ``s + c`` in
  float64 (``compensated_value``; a NaN is the canonical quiet NaN), then converted to the
  output dtype: so float64 is rounded once, and the narrower dtypes twice (to float64, then
  to the output dtype).  The result depends on nothing else: not on the thread count, not on
  the order of the map, not on which code path produced it.  Skipped (referenced) positions
  add nothing, which is the same as adding ``+0``.  tests/test_summation_order.py pins this
  order with a pure-Python model of it.
* Integers: uint64 lanes (wrapping), whose low bits are the exact sum modulo 2**bits whatever
  the signedness.

Every kernel is ``noexcept nogil``; inputs are ``const``; outputs are marked ``# out``.
"""

cimport numpy as cnp
from cython.parallel cimport prange
from libc.math cimport NAN, fabs, isfinite
from libc.stdint cimport (int8_t, int16_t, int32_t, int64_t, uint8_t, uint16_t, uint32_t,
                          uint64_t, uintptr_t)
from libc.stdlib cimport calloc, free, malloc
from libc.string cimport memcpy, memset

from sfer._common cimport (idx_t, index_key, sfer_atomic_load, sfer_atomic_store, sfer_bf16,
                           sfer_bit_set, sfer_bits_to_bytes, sfer_byte_mark, sfer_c64,
                           sfer_c128, sfer_double_to_bf16_bits, sfer_double_to_f16_bits,
                           sfer_f16, sfer_bf16_to_float, sfer_f16_to_float, sfer_keep,
                           sfer_keep_mask, sfer_masked_sum_f32, sfer_masked_sum_f64,
                           sfer_prefetch, sfer_prefetch_addr, sfer_prefetch_l2, sfer_prefetch_w,
                           sfer_stream_fence, store_item, val_t)
from sfer._runtime cimport SERIAL_BELOW, enter_call, leave_call, plan_threads

import operator

import numpy as np

from sfer import _dtypes
from sfer._result import GradResult

cnp.import_array()

cdef object _tuple_new = tuple.__new__
cdef int _last_path_code = -1   # the path the latest call took (a test hook: _last_path)

# Value kinds (by what the sum needs; signed and unsigned integers of one width share a kind)
# and index kinds: private to this module, which maps dtypes onto them (value_kind_of,
# index_kind_of) and dispatches on them (run_value, run_index).
cdef enum:
    V_U8 = 0
    V_U16 = 1
    V_U32 = 2
    V_U64 = 3
    V_F16 = 4
    V_BF16 = 5
    V_F32 = 6
    V_F64 = 7
    V_C64 = 8
    V_C128 = 9

cdef enum:
    I_I8 = 0
    I_I16 = 1
    I_I32 = 2
    I_I64 = 3
    I_U8 = 4
    I_U16 = 5
    I_U32 = 6
    I_U64 = 7

cdef enum:
    BLOCK = 4096            # positions per summation block (a multiple of 8)
    MAX_THREADS = 256       # num_threads above this is taken as this: asking GNU libgomp for
                            # tens of thousands of threads crashes the process
    LANES = 8               # lanes of a block sum (complex: LANES // 2 per part)
    MAP_AHEAD = 512         # block walk: prefetch the map this many entries ahead
    SCREEN = 256            # entries looks_block_ordered checks at the start, and spread out
    MAX_WINDOW = 16         # blocks per window of a single-threaded block walk
    MAX_BITMAPS = 8         # up to this many threads, each has a bitmap of its own on the
                            # marking path; more share one byte array (<= 1 byte/position)
    # Prefetch distances (entries) on the marking path.  A small grad_values array sits in
    # cache: prefetch into L1, a little ahead.  From FAR_BYTES up its lines come from DRAM, and
    # the number of misses in flight is what counts: prefetch into L2 (see sfer_prefetch_l2),
    # far ahead.  How FAR_BYTES was chosen: benchmarks/README.md, "Tuning constants".
    NEAR_AHEAD = 24
    FAR_AHEAD = 128
    FAR_BYTES = 6 << 20
    STREAM_BYTES = 1 << 25  # outputs from 32 MiB up are written with non-temporal stores
    ERR_NOMEM = -2
    # The paths, as _last_path() names them
    PATH_BLOCK_WALK = 0     # block-ordered map: the block walk
    PATH_BITMAPS = 1        # marking path, a bitmap per thread (<= MAX_BITMAPS threads)
    PATH_BYTES = 2          # marking path, one shared byte array (more threads)

ctypedef fused mark_t:      # the marking path's marks: a bitmap per thread, or shared bytes
    uint64_t
    uint8_t

cdef struct lanes_t:        # accumulators of one block
    double s[8]
    double c[8]             # Neumaier compensations (float64 and complex128 only)
    uint64_t u[8]

cdef struct part_t:         # the sum of one block, or of all of them
    double s0               # real part (or the only part)
    double c0
    double s1               # imaginary part
    double c1
    uint64_t u              # integer sum, modulo 2**64


# ---------------------------------------------------------------------------------------------
# Scalar helpers

cdef inline void neumaier(double *s, double *c, double x) noexcept nogil:
    # s, c: in/out.  Adds x to the compensated pair (s, c).
    cdef double t = s[0] + x
    if fabs(s[0]) >= fabs(x):
        c[0] += (s[0] - t) + x
    else:
        c[0] += (x - t) + s[0]
    s[0] = t


cdef inline void lanes_zero(lanes_t *L) noexcept nogil:
    cdef int i
    for i in range(LANES):
        L.s[i] = 0.0
        L.c[i] = 0.0
        L.u[i] = 0


cdef inline void lane_add_unless(lanes_t *L, uint64_t k, val_t x, uint8_t skip) noexcept nogil:
    # L: in/out.  Adds value x at position k to its lane, or +0 when skip is set: a bit mask,
    # not a multiply (NaN * 0 is NaN) nor a branch (unpredictable; blocks vectorisation).
    # Adding +0 leaves every accumulator bit-identical (they are never -0).
    cdef int l
    if val_t is uint8_t or val_t is uint16_t or val_t is uint32_t or val_t is uint64_t:
        L.u[k & (LANES - 1)] += <uint64_t>x & sfer_keep_mask(skip)
    elif val_t is sfer_f16:
        L.s[k & (LANES - 1)] += sfer_keep(<double>sfer_f16_to_float(x), skip)
    elif val_t is sfer_bf16:
        L.s[k & (LANES - 1)] += sfer_keep(<double>sfer_bf16_to_float(x), skip)
    elif val_t is float:
        L.s[k & (LANES - 1)] += sfer_keep(<double>x, skip)
    elif val_t is double:
        neumaier(&L.s[k & (LANES - 1)], &L.c[k & (LANES - 1)], sfer_keep(x, skip))
    elif val_t is sfer_c64:
        l = <int>(k & (LANES // 2 - 1)) * 2
        L.s[l] += sfer_keep(<double>x.re, skip)
        L.s[l + 1] += sfer_keep(<double>x.im, skip)
    elif val_t is sfer_c128:
        l = <int>(k & (LANES // 2 - 1)) * 2
        neumaier(&L.s[l], &L.c[l], sfer_keep(x.re, skip))
        neumaier(&L.s[l + 1], &L.c[l + 1], sfer_keep(x.im, skip))


cdef inline void lanes_close(const lanes_t *L, part_t *p, bint is_complex) noexcept nogil:
    # p: out.  The block's sum from its lanes, in a fixed order.
    cdef int i
    p.s0 = 0.0
    p.c0 = 0.0
    p.s1 = 0.0
    p.c1 = 0.0
    p.u = 0
    for i in range(LANES):
        p.u += L.u[i]
        if is_complex and (i & 1):
            neumaier(&p.s1, &p.c1, L.s[i])
            p.c1 += L.c[i]
        else:
            neumaier(&p.s0, &p.c0, L.s[i])
            p.c0 += L.c[i]


cdef inline bint is_complex_t(val_t *dummy) noexcept nogil:
    return val_t is sfer_c64 or val_t is sfer_c128


# ---------------------------------------------------------------------------------------------
# Range kernels: each does the work of one thread on one contiguous range.

cdef void block_sum_masked(const val_t *g, const uint8_t *mark, int64_t k0, int64_t k1,
                           part_t *out) noexcept nogil:
    # g, mark: in; out: out.  The sum of g[k] over k0 <= k < k1 with mark[k] == 0 (k0 % 8 == 0).
    cdef lanes_t L
    cdef int64_t k = k0
    cdef int l
    lanes_zero(&L)
    if val_t is float:      # SIMD versions of the loop below, with the same lanes and order
        k += sfer_masked_sum_f32(g + k0, mark + k0, k1 - k0, L.s)
    elif val_t is double:
        k += sfer_masked_sum_f64(g + k0, mark + k0, k1 - k0, L.s, L.c)
    while k + 8 <= k1:
        for l in range(LANES):
            lane_add_unless(&L, <uint64_t>l, g[k + l], mark[k + l])
        k += 8
    while k < k1:
        lane_add_unless(&L, <uint64_t>k, g[k], mark[k])
        k += 1
    lanes_close(&L, out, is_complex_t(<val_t *>NULL))


cdef int64_t gather_mark(const val_t *g, uint64_t n_full, const idx_t *rim, val_t *d,
                         mark_t *marks, int64_t j0, int64_t j1, bint stream) noexcept nogil:
    # g, rim: in; d, marks: out.  For j0 <= j < j1: d[j] = g[rim[j]], and position rim[j]
    # marked: a bit set in this thread's own bitmap (mark_t uint64_t) or a byte set to 1 in
    # the byte array that all threads share (mark_t uint8_t).
    # Returns the first j whose entry is out of range (stopping there), or -1.
    cdef int64_t j
    cdef uint64_t r, ahead
    cdef bint far = n_full * sizeof(val_t) >= FAR_BYTES
    cdef int64_t dist = FAR_AHEAD if far else NEAR_AHEAD
    for j in range(j0, j1):
        r = index_key(rim[j])
        if r >= n_full:
            sfer_stream_fence()
            return j
        if j + dist < j1:
            # Random access: ask for the lines `dist` entries on, so that many cache misses
            # are in flight at once (a hint: never out of bounds).
            ahead = index_key(rim[j + dist])
            if ahead < n_full:
                if far:
                    sfer_prefetch_l2(&g[ahead])
                else:
                    sfer_prefetch(&g[ahead])
                if mark_t is uint64_t:
                    sfer_prefetch_w(&marks[ahead >> 6])
                else:
                    sfer_prefetch_w(&marks[ahead])
        store_item(&d[j], &g[r], stream)
        if mark_t is uint64_t:
            sfer_bit_set(marks, r)
        else:
            sfer_byte_mark(marks, r)
    sfer_stream_fence()
    return -1


cdef inline int64_t lower_bound(const idx_t *rim, int64_t n, uint64_t x) noexcept nogil:
    # The first j with index_key(rim[j]) >= x, if the map is block-ordered and x is a block start
    # (any j in [0, n] otherwise).
    cdef int64_t lo = 0, hi = n, mid
    while lo < hi:
        mid = lo + (hi - lo) // 2
        if index_key(rim[mid]) < x:
            lo = mid + 1
        else:
            hi = mid
    return lo


cdef int block_walk(const val_t *g, uint64_t n_full, const idx_t *rim, int64_t n, val_t *d,
                     int64_t b0, int64_t b1, int64_t window, part_t *parts,
                     int64_t *j_range, int *abort, bint stream) noexcept nogil:
    # g, rim: in; d, parts, j_range: out; abort: in/out (shared by all threads).
    # The marking path done a window of `window` blocks (at most MAX_WINDOW) at a time, for a
    # window-ordered map (one whose entries' windows never decrease: every sorted map is
    # one, and with a single window every map is): the entries of a window are then
    # consecutive, so one forward pass over the map gathers them and marks their positions in
    # a window-sized (cache-resident) mark array, and the window's block sums are taken while
    # its grad_values are still in cache.  Returns 0 when every entry it met fitted a
    # window-ordered map, with the range of j it covered in j_range[0:2]; 1 otherwise (the
    # caller then falls back to the marking path, which also finds any out-of-range entry).
    cdef uint8_t mark[MAX_WINDOW * BLOCK]
    cdef int64_t k1 = min(b1 * BLOCK, <int64_t>n_full)
    cdef int64_t j = lower_bound(rim, n, <uint64_t>(b0 * BLOCK))
    cdef int64_t w, b
    cdef uint64_t u, wstart, wlen
    if j > 0 and index_key(rim[j - 1]) >= <uint64_t>(b0 * BLOCK):
        sfer_atomic_store(abort, 1)
        return 1
    j_range[0] = j
    w = b0
    while w < b1:
        wstart = <uint64_t>(w * BLOCK)
        wlen = <uint64_t>min(window * BLOCK, k1 - w * BLOCK)
        memset(mark, 0, wlen)
        while j < n:    # the hot loop: one subtraction and one compare per entry
            u = index_key(rim[j]) - wstart
            if u >= wlen:
                if index_key(rim[j]) < wstart:   # an entry of an earlier window: not ordered
                    sfer_atomic_store(abort, 1)
                    sfer_stream_fence()
                    return 1
                break
            store_item(&d[j], &g[wstart + u], stream)
            mark[u] = 1
            # The map, MAP_AHEAD entries on: possibly past its end, so as an integer address.
            sfer_prefetch_addr(<uintptr_t>rim + <uintptr_t>(j + MAP_AHEAD) * sizeof(idx_t))
            j += 1
        if sfer_atomic_load(abort):
            sfer_stream_fence()
            return 1
        for b in range(w, min(w + window, b1)):
            block_sum_masked(g + b * BLOCK, &mark[(b - w) * BLOCK], 0,
                             min(BLOCK, k1 - b * BLOCK), &parts[b])
        w += window
    sfer_stream_fence()
    j_range[1] = j
    return 0


# ---------------------------------------------------------------------------------------------
# Drivers

cdef void combine_block_sums(const part_t *parts, int64_t nb, part_t *total) noexcept nogil:
    # total: out.  The blocks' sums in increasing block order.
    cdef int64_t b
    total.s0 = 0.0
    total.c0 = 0.0
    total.s1 = 0.0
    total.c1 = 0.0
    total.u = 0
    for b in range(nb):
        neumaier(&total.s0, &total.c0, parts[b].s0)
        total.c0 += parts[b].c0
        neumaier(&total.s1, &total.c1, parts[b].s1)
        total.c1 += parts[b].c1
        total.u += parts[b].u


cdef bint looks_block_ordered(const idx_t *rim, int64_t n) noexcept nogil:
    # A cheap screen before the block walk, which on a shuffled map would gather and mark a
    # whole block before meeting the first out-of-order entry: the first SCREEN entries and SCREEN
    # entries spread over the map must be block-ordered.  Proves nothing; the walk checks
    # every entry.
    cdef int64_t i, m = min(n, SCREEN)
    for i in range(1, m):
        if index_key(rim[i]) // BLOCK < index_key(rim[i - 1]) // BLOCK:
            return False
    if n > 2 * SCREEN:
        for i in range(1, SCREEN):
            if (index_key(rim[i * (n // SCREEN)]) // BLOCK
                    < index_key(rim[(i - 1) * (n // SCREEN)]) // BLOCK):
                return False
    return True


cdef bint try_block_ordered(const val_t *g, int64_t n_full, const idx_t *rim, int64_t n,
                            val_t *d, int nthreads, int64_t nb, part_t *parts,
                            bint stream) noexcept nogil:
    # d, parts: out.  The block-ordered path; True when it applied (map block-ordered and in
    # range).  With one thread and one window every map qualifies: no screen, no allocation.
    cdef int64_t one_range[2]
    cdef int one_status
    cdef int64_t *j_ranges = one_range
    cdef int *status = &one_status
    cdef int abort = 0
    cdef int t
    cdef bint ok = (nb <= MAX_WINDOW and nthreads == 1) or looks_block_ordered(rim, n)
    if not ok:
        return False
    if nthreads == 1:
        # One thread over at most MAX_WINDOW blocks: one window, so any map qualifies.
        status[0] = block_walk(g, <uint64_t>n_full, rim, n, d, 0, nb,
                               nb if nb <= MAX_WINDOW else 1, parts, j_ranges, &abort, stream)
    else:
        j_ranges = <int64_t *>malloc(2 * nthreads * sizeof(int64_t))
        status = <int *>malloc(nthreads * sizeof(int))
        if j_ranges == NULL or status == NULL:
            free(j_ranges)
            free(status)
            return False
        for t in prange(nthreads, schedule='static', num_threads=nthreads):
            status[t] = block_walk(g, <uint64_t>n_full, rim, n, d, t * nb // nthreads,
                                    (t + 1) * nb // nthreads, 1, parts, &j_ranges[2 * t], &abort,
                                   stream)
    for t in range(nthreads):
        if status[t] != 0:
            ok = False
    if ok:
        # The threads' ranges of j must tile [0, n): then the whole map is block-ordered and
        # every entry lies below n_full (an entry >= n_full stops the last walk short of n).
        ok = j_ranges[0] == 0 and j_ranges[2 * nthreads - 1] == n
        for t in range(nthreads - 1):
            if j_ranges[2 * t + 1] != j_ranges[2 * t + 2]:
                ok = False
    if nthreads > 1:
        free(j_ranges)
        free(status)
    return ok


cdef void block_sum_bits(const val_t *g, const uint64_t *bits, int64_t words, int nmaps,
                         int64_t k0, int64_t k1, part_t *out) noexcept nogil:
    # g, bits: in; out: out.  The sum of g[k], k0 <= k < k1 (k0 % 4096 == 0), whose bit is set
    # in none of the nmaps bitmaps (each `words` long): their union becomes a block-sized byte
    # mark array, then the same masked sum as on the block-ordered path.
    cdef uint8_t mark[BLOCK]
    cdef int64_t w, w0 = k0 // 64, w1 = (k1 + 63) // 64
    cdef uint64_t m
    cdef int i
    for w in range(w0, w1):
        m = 0
        for i in range(nmaps):
            m |= bits[i * words + w]
        sfer_bits_to_bytes(m, &mark[(w - w0) * 64])
    block_sum_masked(g + k0, mark, 0, k1 - k0, out)


cdef int64_t marking_path(const val_t *g, int64_t n_full, const idx_t *rim, int64_t n, val_t *d,
                     int nthreads, int64_t nb, part_t *parts, bint stream) noexcept nogil:
    # d, parts: out.  The general path: gather and mark referenced positions, then sum the
    # unmarked ones block by block.  Up to MAX_BITMAPS threads, each thread sets bits in a
    # bitmap of its own (plain bit sets); the block sums take the union of the bitmaps.  More
    # threads share one byte array instead, each storing 1 into the byte of a referenced
    # position: a plain store, which, unlike an atomic bit set on a shared bitmap, does not
    # wait for its cache line and so keeps the gathers' misses in flight.  Extra memory: at
    # most one byte per position either way.  Returns -1, the first out-of-range j, or
    # ERR_NOMEM.
    cdef bint use_bytes = nthreads > MAX_BITMAPS
    cdef int nmaps = 0 if use_bytes else nthreads
    cdef int64_t words = (n_full + 63) // 64
    cdef uint64_t *bits = NULL
    cdef uint8_t *marks = NULL
    cdef int64_t *bad = <int64_t *>malloc(nthreads * sizeof(int64_t))
    cdef int64_t first_bad = -1
    cdef int64_t b
    cdef int t
    if use_bytes:
        marks = <uint8_t *>calloc(<size_t>n_full, 1)
    else:
        bits = <uint64_t *>calloc(<size_t>(nmaps * words), sizeof(uint64_t))
    if (bits == NULL and marks == NULL) or bad == NULL:
        free(bits)
        free(marks)
        free(bad)
        return ERR_NOMEM
    if nthreads == 1:
        bad[0] = gather_mark(g, <uint64_t>n_full, rim, d, bits, 0, n, stream)
    elif use_bytes:
        for t in prange(nthreads, schedule='static', num_threads=nthreads):
            bad[t] = gather_mark(g, <uint64_t>n_full, rim, d, marks, t * n // nthreads,
                                 (t + 1) * n // nthreads, stream)
    else:
        for t in prange(nthreads, schedule='static', num_threads=nthreads):
            bad[t] = gather_mark(g, <uint64_t>n_full, rim, d, &bits[t * words],
                                 t * n // nthreads, (t + 1) * n // nthreads, stream)
    for t in range(nthreads):
        if bad[t] >= 0 and (first_bad < 0 or bad[t] < first_bad):
            first_bad = bad[t]
    if first_bad < 0:
        if nthreads == 1:
            for b in range(nb):
                block_sum_bits(g, bits, words, nmaps, b * BLOCK, min((b + 1) * BLOCK, n_full),
                               &parts[b])
        elif use_bytes:
            for b in prange(nb, schedule='static', num_threads=nthreads):
                block_sum_masked(g, marks, b * BLOCK, min((b + 1) * BLOCK, n_full), &parts[b])
        else:
            for b in prange(nb, schedule='static', num_threads=nthreads):
                block_sum_bits(g, bits, words, nmaps, b * BLOCK, min((b + 1) * BLOCK, n_full),
                               &parts[b])
    free(bits)
    free(marks)
    free(bad)
    return first_bad


cdef int64_t run_grad(const val_t *g, int64_t n_full, const idx_t *rim, int64_t n, val_t *d,
                      int nthreads, part_t *total) noexcept nogil:
    # d, total: out.  Returns -1 on success, the first out-of-range j, or ERR_NOMEM.
    cdef int64_t nb = (n_full + BLOCK - 1) // BLOCK
    cdef part_t few_parts[4]
    cdef part_t *parts = few_parts
    cdef int64_t res = -1
    combine_block_sums(NULL, 0, total)
    if n_full == 0:
        return 0 if n > 0 else -1
    if nb > 4:
        parts = <part_t *>malloc(nb * sizeof(part_t))
        if parts == NULL:
            return ERR_NOMEM
    if nthreads > nb:
        nthreads = <int>nb
    # A large output is written with non-temporal stores: nobody reads it back soon enough
    # for it to still be in cache, and it would evict the inputs.
    cdef bint stream = n * <int64_t>sizeof(val_t) >= STREAM_BYTES
    if try_block_ordered(g, n_full, rim, n, d, nthreads, nb, parts, stream):
        sfer_atomic_store(&_last_path_code, PATH_BLOCK_WALK)
    else:
        sfer_atomic_store(&_last_path_code, PATH_BYTES if nthreads > MAX_BITMAPS else PATH_BITMAPS)
        res = marking_path(g, n_full, rim, n, d, nthreads, nb, parts, stream)
    if res == -1:
        combine_block_sums(parts, nb, total)
    if parts != few_parts:
        free(parts)
    return res


cdef int64_t run_index(const val_t *g, int64_t n_full, const void *rim, int ikind, int64_t n,
                       val_t *d, int nthreads, part_t *total) noexcept nogil:
    if ikind == I_I64:
        return run_grad(g, n_full, <const int64_t *>rim, n, d, nthreads, total)
    elif ikind == I_I32:
        return run_grad(g, n_full, <const int32_t *>rim, n, d, nthreads, total)
    elif ikind == I_U64:
        return run_grad(g, n_full, <const uint64_t *>rim, n, d, nthreads, total)
    elif ikind == I_U32:
        return run_grad(g, n_full, <const uint32_t *>rim, n, d, nthreads, total)
    elif ikind == I_I16:
        return run_grad(g, n_full, <const int16_t *>rim, n, d, nthreads, total)
    elif ikind == I_U16:
        return run_grad(g, n_full, <const uint16_t *>rim, n, d, nthreads, total)
    elif ikind == I_I8:
        return run_grad(g, n_full, <const int8_t *>rim, n, d, nthreads, total)
    else:
        return run_grad(g, n_full, <const uint8_t *>rim, n, d, nthreads, total)


cdef int64_t run_value(const void *g, int vkind, int64_t n_full, const void *rim, int ikind,
                       int64_t n, void *d, int nthreads, part_t *total) noexcept nogil:
    if vkind == V_F32:
        return run_index(<const float *>g, n_full, rim, ikind, n, <float *>d, nthreads, total)
    elif vkind == V_F64:
        return run_index(<const double *>g, n_full, rim, ikind, n, <double *>d, nthreads, total)
    elif vkind == V_F16:
        return run_index(<const sfer_f16 *>g, n_full, rim, ikind, n, <sfer_f16 *>d, nthreads,
                         total)
    elif vkind == V_BF16:
        return run_index(<const sfer_bf16 *>g, n_full, rim, ikind, n, <sfer_bf16 *>d, nthreads,
                         total)
    elif vkind == V_C64:
        return run_index(<const sfer_c64 *>g, n_full, rim, ikind, n, <sfer_c64 *>d, nthreads,
                         total)
    elif vkind == V_C128:
        return run_index(<const sfer_c128 *>g, n_full, rim, ikind, n, <sfer_c128 *>d, nthreads,
                         total)
    elif vkind == V_U8:
        return run_index(<const uint8_t *>g, n_full, rim, ikind, n, <uint8_t *>d, nthreads, total)
    elif vkind == V_U16:
        return run_index(<const uint16_t *>g, n_full, rim, ikind, n, <uint16_t *>d, nthreads,
                         total)
    elif vkind == V_U32:
        return run_index(<const uint32_t *>g, n_full, rim, ikind, n, <uint32_t *>d, nthreads,
                         total)
    else:
        return run_index(<const uint64_t *>g, n_full, rim, ikind, n, <uint64_t *>d, nthreads,
                         total)


# ---------------------------------------------------------------------------------------------
# Python entry points

cdef extern from "numpy/arrayobject.h":
    object PyArray_Scalar(void *data, cnp.dtype descr, object base)
    enum: NPY_HALF
    enum: NPY_USERDEF

cdef union scalar_t:        # the result, in the bits of its output dtype
    uint8_t u8
    uint16_t u16
    uint32_t u32
    uint64_t u64
    float f32[2]
    double f64[2]


cdef inline double compensated_value(double s, double c) noexcept nogil:
    # A compensated pair's value.  A non-finite sum stands as it is (its compensation may be
    # NaN); a NaN is the canonical quiet NaN, so its bits never depend on the order of the adds.
    if s != s:
        return NAN
    return s + c if isfinite(s) else s


cdef object to_scalar(const part_t *total, int vkind, cnp.dtype dtype):
    # The sum as a NumPy scalar of dtype, rounded once from float64 (wrapped for integers).
    cdef scalar_t v
    v.f64[0] = 0.0
    v.f64[1] = 0.0
    if vkind == V_U8:
        v.u8 = <uint8_t>total.u
    elif vkind == V_U16:
        v.u16 = <uint16_t>total.u
    elif vkind == V_U32:
        v.u32 = <uint32_t>total.u
    elif vkind == V_U64:
        v.u64 = total.u
    elif vkind == V_F16:
        v.u16 = sfer_double_to_f16_bits(compensated_value(total.s0, total.c0))
    elif vkind == V_BF16:
        v.u16 = sfer_double_to_bf16_bits(compensated_value(total.s0, total.c0))
    elif vkind == V_F32:
        v.f32[0] = <float>compensated_value(total.s0, total.c0)
    elif vkind == V_F64:
        v.f64[0] = compensated_value(total.s0, total.c0)
    elif vkind == V_C64:
        v.f32[0] = <float>compensated_value(total.s0, total.c0)
        v.f32[1] = <float>compensated_value(total.s1, total.c1)
    else:
        v.f64[0] = compensated_value(total.s0, total.c0)
        v.f64[1] = compensated_value(total.s1, total.c1)
    return PyArray_Scalar(&v, dtype, None)


cdef int64_t run_checked(cnp.ndarray rim, cnp.ndarray g, cnp.ndarray d, int vkind, int ikind,
                         int num_threads, part_t *total) except -2:
    # Runs the kernel with the GIL released, on the thread count the runtime plans
    # (sfer/_runtime.pyx).  rim, g: in; d, total: out.  Returns -1, or raises IndexError for
    # the first out-of-range entry (zeroing d, which may be the caller's out=, so that no
    # half-written result is left behind) or MemoryError.
    cdef const void *gp = cnp.PyArray_DATA(g)
    cdef const void *rp = cnp.PyArray_DATA(rim)
    cdef void *dp = cnp.PyArray_DATA(d)
    cdef int64_t n = cnp.PyArray_DIM(rim, 0)
    cdef int64_t n_full = cnp.PyArray_DIM(g, 0)
    cdef int64_t bad
    cdef int nthreads = plan_threads(num_threads, n + n_full)
    with nogil:
        nthreads = enter_call(nthreads)
        bad = run_value(gp, vkind, n_full, rp, ikind, n, dp, nthreads, total)
        leave_call()
    if bad == ERR_NOMEM:
        raise MemoryError("sfer: could not allocate the kernel's work space")
    if bad >= 0:
        memset(dp, 0, <size_t>cnp.PyArray_NBYTES(d))
        raise IndexError(
            f"reverse_index_map[{bad}] = {rim[bad]} is out of range [0, {n_full})")
    return -1


# ---------------------------------------------------------------------------------------------
# The rules: each accept/reject decision is made here, once, for the C fast path and for the
# Python slow path (sfer/_validate.py, which only converts what the user passed).

cdef int value_kind_of(int t, int size) noexcept:
    # The value kind of a built-in dtype (type number, item size; native byte order), or -1.
    if t == cnp.NPY_FLOAT:
        return V_F32
    if t == cnp.NPY_DOUBLE:
        return V_F64
    if t == NPY_HALF:
        return V_F16
    if t == cnp.NPY_CFLOAT:
        return V_C64
    if t == cnp.NPY_CDOUBLE:
        return V_C128
    if cnp.PyTypeNum_ISINTEGER(t):
        if size == 1:
            return V_U8
        if size == 2:
            return V_U16
        if size == 4:
            return V_U32
        if size == 8:
            return V_U64
    return -1


cdef int index_kind_of(int t, int size) noexcept:
    # The index kind of a built-in integer dtype (native byte order), or -1.
    if not cnp.PyTypeNum_ISINTEGER(t) or size not in (1, 2, 4, 8):
        return -1
    if cnp.PyTypeNum_ISSIGNED(t):
        return I_I8 if size == 1 else I_I16 if size == 2 else I_I32 if size == 4 else I_I64
    return I_U8 if size == 1 else I_U16 if size == 2 else I_U32 if size == 4 else I_U64


cdef int value_kind_of_dtype(cnp.dtype dtype) except? -1:
    # Any byte order: the value kind, or -1 (bfloat16 as well as the built-in dtypes).
    if _dtypes.is_bfloat16(dtype):
        return V_BF16
    if dtype.kind not in "iufc":  # bool, datetime, str, object, void, user types
        return -1
    return value_kind_of(dtype.type_num, dtype.itemsize)


def check_dtypes(cnp.dtype map_dtype, cnp.dtype grad_dtype):
    """Raise TypeError unless the grad op takes a map of ``map_dtype`` and grad_values of
    ``grad_dtype`` (any byte order)."""
    if value_kind_of_dtype(grad_dtype) < 0:
        raise TypeError(
            f"grad_values has dtype {grad_dtype.name} ({grad_dtype.str}), which sfer does not "
            f"support; supported: {_dtypes.grad_values_text()}")
    if map_dtype.kind not in "iu" or index_kind_of(map_dtype.type_num, map_dtype.itemsize) < 0:
        raise TypeError(
            f"reverse_index_map must have an integer dtype, got {map_dtype.name}")


cpdef int thread_request(object num_threads) except -1:
    """``num_threads`` as the runtime takes it (0: the default), or TypeError/ValueError."""
    cdef object n
    if num_threads is None:
        return 0
    if type(num_threads) is int and num_threads >= 1:
        return min(<object>num_threads, MAX_THREADS)
    if isinstance(num_threads, (bool, np.bool_)):
        raise TypeError(f"num_threads must be None or an int, got {num_threads!r}")
    try:
        n = operator.index(num_threads)
    except TypeError:
        raise TypeError(
            f"num_threads must be None or an int, got {type(num_threads).__name__} "
            f"{num_threads!r}") from None
    if n < 1:
        raise ValueError(f"num_threads must be >= 1 (or None for OpenMP's default), got {n}")
    return min(n, MAX_THREADS)


cdef inline bint behaved_vector(cnp.ndarray a) noexcept:
    # 1-D, C-contiguous, aligned, native byte order: what the kernel reads as it is.
    return (cnp.PyArray_NDIM(a) == 1 and cnp.PyArray_ISCARRAY_RO(a)
            and cnp.PyArray_ISNOTSWAPPED(a))


cdef inline bint may_overlap(cnp.ndarray a, cnp.ndarray b):
    # The memory of a and b may overlap (their byte bounds do, as np.may_share_memory says).
    cdef char *pa
    cdef char *pb
    if cnp.PyArray_ISCONTIGUOUS(a) and cnp.PyArray_ISCONTIGUOUS(b):
        pa = <char *>cnp.PyArray_DATA(a)
        pb = <char *>cnp.PyArray_DATA(b)
        return not (pa + cnp.PyArray_NBYTES(a) <= pb or pb + cnp.PyArray_NBYTES(b) <= pa
                    or cnp.PyArray_NBYTES(a) == 0 or cnp.PyArray_NBYTES(b) == 0)
    return bool(np.may_share_memory(a, b))


cdef inline bint out_fits(object out, cnp.npy_intp n, cnp.PyArray_Descr *descr, object map_given,
                          object grad_given):
    # The rules of out= (see output_for) in C: True when out can receive d_values.
    cdef cnp.ndarray d
    if not isinstance(out, np.ndarray):
        return False
    d = <cnp.ndarray>out
    return (cnp.PyArray_NDIM(d) == 1 and cnp.PyArray_DIM(d, 0) == n
            and (cnp.PyArray_DESCR(d) == descr
                 or cnp.PyArray_EquivTypes(<cnp.dtype>cnp.PyArray_DESCR(d), <cnp.dtype>descr))
            and cnp.PyArray_ISWRITEABLE(d) and cnp.PyArray_ISCONTIGUOUS(d)
            and cnp.PyArray_ISALIGNED(d)
            and not (type(map_given) is cnp.ndarray and may_overlap(d, <cnp.ndarray>map_given))
            and not (type(grad_given) is cnp.ndarray
                     and may_overlap(d, <cnp.ndarray>grad_given)))


cpdef cnp.ndarray output_for(object out, cnp.npy_intp n, cnp.dtype dtype, object map_given,
                             object grad_given):
    """Where ``d_values`` goes: a new array of ``n`` items of ``dtype`` (native) when ``out`` is
    None, else ``out`` if it can receive them (TypeError/ValueError saying why not).
    ``map_given``/``grad_given``: the inputs as the user passed them, which out must not
    overlap."""
    cdef cnp.ndarray d
    if out is None:
        if cnp.PyArray_ISNBO(dtype.byteorder) and dtype.type_num < NPY_USERDEF:
            return cnp.PyArray_EMPTY(1, &n, dtype.type_num, 0)
        return np.empty(n, dtype=dtype)
    if not isinstance(out, np.ndarray):
        raise TypeError(f"out must be a numpy.ndarray, got {type(out).__name__}")
    d = <cnp.ndarray>out
    if out_fits(out, n, <cnp.PyArray_Descr *>dtype, map_given, grad_given):
        return d    # the common case, decided in C; below, the same rules one by one
    if cnp.PyArray_NDIM(d) != 1 or cnp.PyArray_DIM(d, 0) != n:
        raise ValueError(f"out must have shape ({n},), got {out.shape}")
    if d.dtype != dtype:
        raise TypeError(f"out must have dtype {dtype.name} (native byte order), got "
                        f"{d.dtype.name} ({d.dtype.str})")
    if not cnp.PyArray_ISWRITEABLE(d):
        raise ValueError("out must be writeable")
    if not (cnp.PyArray_ISCONTIGUOUS(d) and cnp.PyArray_ISALIGNED(d)):
        raise ValueError("out must be C-contiguous and aligned")
    for arr, name in ((map_given, "reverse_index_map"), (grad_given, "grad_values")):
        if isinstance(arr, np.ndarray) and may_overlap(d, <cnp.ndarray>arr):
            raise ValueError(f"out must not overlap {name}")
    return d


# ---------------------------------------------------------------------------------------------
# Entry points

def grad_kernel(cnp.ndarray rim, cnp.ndarray g, cnp.ndarray d, int num_threads):
    """Run the kernel on normalised inputs (sfer/_validate.py): ``rim`` and ``g`` behaved 1-D
    vectors of supported dtypes, ``d`` from :func:`output_for`, ``num_threads`` from
    :func:`thread_request`.  Returns ``GradResult``; IndexError for the first bad entry."""
    cdef part_t total
    cdef int vkind = value_kind_of_dtype(g.dtype)
    cdef int ikind = index_kind_of(cnp.PyArray_TYPE(rim), cnp.PyArray_ITEMSIZE(rim))
    if vkind < 0 or ikind < 0 or not (behaved_vector(rim) and behaved_vector(g)):
        raise AssertionError("sfer: grad_kernel got inputs it cannot read as they are")
    run_checked(rim, g, d, vkind, ikind, num_threads, &total)
    return GradResult(d, to_scalar(&total, vkind, g.dtype))


cdef object fast_grad(object reverse_index_map, object grad_values, object num_threads,
                      object out):
    # The whole call for the common case, in C; None when the inputs need converting first:
    # exact ndarrays that the kernel can read as they are (1-D, C-contiguous, aligned, native
    # order, a built-in dtype).  Anything else returns None, and sfer._validate.slow_path
    # converts it (or explains why it cannot).
    cdef cnp.ndarray rim, g, d
    cdef int vkind, ikind, nthreads
    cdef cnp.npy_intp n
    cdef part_t total
    if type(reverse_index_map) is not cnp.ndarray or type(grad_values) is not cnp.ndarray:
        return None
    rim = <cnp.ndarray>reverse_index_map
    g = <cnp.ndarray>grad_values
    if not (behaved_vector(rim) and behaved_vector(g)):
        return None
    vkind = value_kind_of(cnp.PyArray_TYPE(g), cnp.PyArray_ITEMSIZE(g))
    ikind = index_kind_of(cnp.PyArray_TYPE(rim), cnp.PyArray_ITEMSIZE(rim))
    if vkind < 0 or ikind < 0:
        return None
    nthreads = thread_request(num_threads)
    n = cnp.PyArray_DIM(rim, 0)
    if out is None:
        d = cnp.PyArray_EMPTY(1, &n, cnp.PyArray_TYPE(g), 0)
    elif out_fits(out, n, cnp.PyArray_DESCR(g), rim, g):
        d = <cnp.ndarray>out
    else:
        d = output_for(out, n, g.dtype, rim, g)     # raises, saying which rule out breaks
    run_checked(rim, g, d, vkind, ikind, nthreads, &total)
    return _tuple_new(GradResult, (d, to_scalar(&total, vkind, g.dtype)))


_slow_path = None


def sparse_fill_empty_rows_grad(reverse_index_map, grad_values, *, num_threads=None, out=None):
    """The gradient of SparseFillEmptyRows (TensorFlow's ``SparseFillEmptyRowsGrad``).

    Computes, for ``N = len(reverse_index_map)`` and ``N_full = len(grad_values)``::

        d_values[j]     = grad_values[reverse_index_map[j]]        for 0 <= j < N
        d_default_value = sum of grad_values[k] over every k in [0, N_full)
                          that does not occur in reverse_index_map

    Parameters
    ----------
    reverse_index_map : array_like of integers, shape (N,)
        Any integer dtype.  Every entry must lie in ``[0, N_full)``; repeats are allowed
        (a repeated position is excluded from the sum once).
    grad_values : array_like, shape (N_full,)
        float16, float32, float64, complex64, complex128, int8 .. int64, uint8 .. uint64, or
        bfloat16 (with ``ml_dtypes`` installed).
    num_threads : int, optional
        The most OpenMP threads to use; ``None`` means OpenMP's default (``OMP_NUM_THREADS``).
        Small inputs run on one thread.  The result is bit-identical for every value.
    out : ndarray, optional
        Where to write ``d_values``: shape ``(N,)``, ``grad_values``' dtype in native byte
        order, writeable, C-contiguous, not overlapping either input.  Returned as
        ``d_values``.  If the call raises IndexError, ``out`` is left zero-filled.

    Returns
    -------
    GradResult
        ``(d_values, d_default_value)``: a new array of shape ``(N,)`` (or ``out``) and a
        NumPy scalar, both of ``grad_values``' dtype (in native byte order).

    Raises
    ------
    TypeError
        A dtype sfer does not handle, a ``num_threads`` that is not an int, a bad ``out`` type.
    ValueError
        An input that is not 1-D or not convertible to an array; ``num_threads < 1``; an
        ``out`` of the wrong shape, read-only, non-contiguous or overlapping an input.
    IndexError
        An entry outside ``[0, N_full)``; the message names the first such position.

    Notes
    -----
    Integer sums wrap modulo ``2**bits``.  float16, bfloat16, float32 and complex64 sums are
    accumulated in float64 (lanes and blocks combined with compensation), float64 and
    complex128 sums with compensated (Neumaier) summation throughout; the float64 result is
    then rounded to the output dtype (``sfer.reference.error_bound`` bounds the difference
    from the exact sum).  The inputs are never modified and the GIL is released while the
    kernel runs.
    """
    global _slow_path
    result = fast_grad(reverse_index_map, grad_values, num_threads, out)
    if result is not None:
        return result
    if _slow_path is None:  # imported late: sfer._validate imports this module
        from sfer._validate import slow_path
        _slow_path = slow_path
    return _slow_path(reverse_index_map, grad_values, num_threads, out)


_PATH_NAMES = {PATH_BLOCK_WALK: "block_walk", PATH_BITMAPS: "bitmaps", PATH_BYTES: "bytes"}


def _last_path():
    """The path the latest kernel call that reached one took: ``"block_walk"``, ``"bitmaps"``
    (marking, a bitmap per thread) or ``"bytes"`` (marking, a shared byte array, past
    ``MAX_BITMAPS`` threads); None before any (a test hook, racy across Python threads)."""
    return _PATH_NAMES.get(sfer_atomic_load(&_last_path_code))


def _constants():
    """The kernel's tuning constants, for tests that aim at a threshold."""
    return {"BLOCK": BLOCK, "SERIAL_BELOW": SERIAL_BELOW, "MAX_WINDOW": MAX_WINDOW,
            "MAX_BITMAPS": MAX_BITMAPS, "NEAR_AHEAD": NEAR_AHEAD, "FAR_AHEAD": FAR_AHEAD,
            "FAR_BYTES": FAR_BYTES, "STREAM_BYTES": STREAM_BYTES, "LANES": LANES,
            "MAP_AHEAD": MAP_AHEAD, "SCREEN": SCREEN, "MAX_THREADS": MAX_THREADS}
