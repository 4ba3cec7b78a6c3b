# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
# cython: initializedcheck=False
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
  add nothing, which is the same as adding ``+0``.  tests/test_grad_summation_order.py pins
  this order with a pure-Python model of it.
* Integers: uint64 lanes (wrapping), whose low bits are the exact sum modulo 2**bits whatever
  the signedness.

Every kernel is ``noexcept nogil``; inputs are ``const``; outputs are marked ``# out``.  A
call's kernels share one ``grad_call`` (its arrays, sizes and plan) instead of long parameter
lists; the arrays also come typed (``g``, ``rim``, ``d``), which picks the specialisation.

The way through a call: ``sparse_fill_empty_rows_grad`` -> ``fast_grad`` (accepts the common
case in C) or else ``sfer._grad_inputs.grad_inputs`` (converts and rejects, in Python, once)
-> ``run`` (the plan: ``sfer._runtime``) -> ``run_value`` (the dtype dispatch generated from
sfer/_dtypes.py's table) -> ``run_grad`` and its kernels.  Nothing here is called back.
"""


cimport numpy as cnp
from cython.parallel cimport prange
from libc.math cimport NAN, fabs, isfinite
from libc.stdint cimport (int8_t, int16_t, int32_t, int64_t, uint8_t, uint16_t, uint32_t,
                          uint64_t, uintptr_t)
from libc.stdlib cimport calloc, free, malloc
from libc.string cimport memset

from sfer._common cimport (idx_t, index_key, sfer_atomic_load, sfer_atomic_store, sfer_bf16,
                           sfer_bit_set, sfer_bits_to_bytes, sfer_byte_mark, sfer_c64,
                           sfer_c128, sfer_double_to_bf16_bits, sfer_double_to_f16_bits,
                           sfer_f16, sfer_bf16_to_float, sfer_f16_to_float, sfer_keep,
                           sfer_keep_mask, sfer_masked_sum_f32, sfer_masked_sum_f64,
                           sfer_prefetch, sfer_prefetch_addr, sfer_prefetch_l2, sfer_prefetch_w,
                           sfer_stream_fence, store_item, val_t)
from sfer._runtime cimport (MAX_THREADS, SERIAL_BELOW, enter_call, leave_call, plan_threads,
                            runnable_cpus, state_threads, thread_request)

import numpy as np

from sfer import _errors
from sfer._grad_inputs import grad_inputs
from sfer._result import GradResult

cnp.import_array()

cdef extern from "numpy/arrayobject.h":
    object PyArray_Scalar(void *data, cnp.dtype descr, object base)
    enum: NPY_FLOAT16
    enum: NPY_FLOAT32
    enum: NPY_FLOAT64
    enum: NPY_COMPLEX64
    enum: NPY_COMPLEX128
    enum: NPY_USERDEF

cdef object _tuple_new = tuple.__new__
cdef int _last_path_code = -1   # the path the latest call took (a test hook: _last_path)

cdef enum:
    BLOCK = 4096            # positions per summation block (a multiple of 8)
    LANES = 8               # lanes of a block sum (complex: LANES // 2 per part)
    MAP_AHEAD = 512         # block walk: prefetch the map this many entries ahead
    GROUP = 8               # block walk: entries per step of its hot loop (walk_groups)
    SCREEN = 256            # entries looks_block_ordered checks at the start, and spread out
    MAX_WINDOW = 16         # blocks per window of a single-threaded block walk
    MAX_BITMAPS = 8         # up to this many threads, each has a bitmap of its own on the
                            # marking path; more share one byte array (<= 1 byte/position),
                            # where more than this many CPUs can run them (else: bitmaps, on
                            # no more threads than the CPUs: sfer._runtime.state_threads)
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

cdef struct grad_call:      # one call of the kernel: what every kernel of it reads and writes
    const void *g           # in: grad_values, n_full items of the value kind
    const void *rim         # in: reverse_index_map, n entries of the index kind
    void *d                 # out: d_values, n items
    int64_t n
    int64_t n_full
    int vkind               # the value and index kinds (sfer/_grad_dispatch.pxi)
    int ikind
    int nthreads            # the threads the kernels run on
    int cpus                # the CPUs that can run them (runnable_cpus), asked past
                            # MAX_BITMAPS threads only (else MAX_THREADS)
    # set by run_grad:
    int64_t nb              # blocks of the unreferenced sum: ceil(n_full / BLOCK)
    bint stream             # d is written with non-temporal stores
    part_t *parts           # out: each block's sum (nb of them)
    # abort, on cache lines of its own (the padding): the block walk's threads set it once
    # one finds the map unordered, and each reads it after every window (measured: with abort
    # beside the fields above, 2-thread block walks were 5-10% slower)
    char _before_abort[128]
    int abort
    char _after_abort[128]


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
    cdef int lane
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
        lane = <int>(k & (LANES // 2 - 1)) * 2
        L.s[lane] += sfer_keep(<double>x.re, skip)
        L.s[lane + 1] += sfer_keep(<double>x.im, skip)
    elif val_t is sfer_c128:
        lane = <int>(k & (LANES // 2 - 1)) * 2
        neumaier(&L.s[lane], &L.c[lane], sfer_keep(x.re, skip))
        neumaier(&L.s[lane + 1], &L.c[lane + 1], sfer_keep(x.im, skip))


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


# ---------------------------------------------------------------------------------------------
# Range kernels: each does the work of one thread on one contiguous range.  g, rim, d: the
# call's arrays (c.g, c.rim, c.d), typed.

cdef void block_sum_masked(const val_t *g, const uint8_t *mark, int64_t k1,
                           part_t *out) noexcept nogil:
    # g, mark: in (a block's first position and its mark); out: out.  The sum of g[k] over
    # 0 <= k < k1 with mark[k] == 0 (position k of the block in lane k % 8).
    cdef lanes_t L
    cdef int64_t k = 0
    cdef int lane
    lanes_zero(&L)
    if val_t is float:      # SIMD versions of the loop below, with the same lanes and order
        k += sfer_masked_sum_f32(g, mark, k1, L.s)
    elif val_t is double:
        k += sfer_masked_sum_f64(g, mark, k1, L.s, L.c)
    while k + 8 <= k1:
        for lane in range(LANES):
            lane_add_unless(&L, <uint64_t>lane, g[k + lane], mark[k + lane])
        k += 8
    while k < k1:
        lane_add_unless(&L, <uint64_t>k, g[k], mark[k])
        k += 1
    lanes_close(&L, out, is_complex_t(<val_t *>NULL))


cdef int64_t gather_mark(const val_t *g, const idx_t *rim, val_t *d, const grad_call *c,
                         mark_t *marks, int64_t j0, int64_t j1) noexcept nogil:
    # d, marks: out.  For j0 <= j < j1: d[j] = g[rim[j]], and position rim[j] marked: a bit
    # set in this thread's own bitmap (mark_t uint64_t) or a byte set to 1 in the byte array
    # that all threads share (mark_t uint8_t).
    # Returns the first j whose entry is out of range (stopping there), or -1.
    cdef int64_t j
    cdef uint64_t r, ahead
    cdef uint64_t n_full = <uint64_t>c.n_full
    cdef bint stream = c.stream
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


cdef inline int64_t walk_groups(const val_t *g, const idx_t *rim, val_t *d, const grad_call *c,
                                uint8_t *mark, int64_t j, uint64_t wstart,
                                uint64_t wlen) noexcept nogil:
    # d[j:], mark: out.  block_walk's hot loop, GROUP entries a step: gathers and marks the
    # entries from j on while they lie in the window [wstart, wstart + wlen), and returns the
    # first j that does not (or the last group's end: block_walk's loop does the rest).  One
    # map prefetch and one loop test per group: the one-thread walk is bound by the count of
    # instructions per entry (benchmarks/README.md, "The grad's walk on one thread").
    cdef uint64_t u
    cdef int i
    cdef int64_t n = c.n
    cdef bint stream = c.stream
    while j + GROUP <= n:
        for i in range(GROUP):
            u = index_key(rim[j + i]) - wstart
            if u >= wlen:
                return j + i
            store_item(&d[j + i], &g[wstart + u], stream)
            mark[u] = 1
        # The map, MAP_AHEAD entries on: possibly past its end, so as an integer address.
        sfer_prefetch_addr(<uintptr_t>rim + <uintptr_t>(j + MAP_AHEAD) * sizeof(idx_t))
        j += GROUP
    return j


cdef int block_walk(const val_t *g, const idx_t *rim, val_t *d, grad_call *c, int64_t b0,
                    int64_t b1, int64_t window, int64_t *j_range) noexcept nogil:
    # d, c.parts[b0:b1], j_range: out; c.abort: in/out (shared by all threads).
    # The marking path done a window of `window` blocks (at most MAX_WINDOW) at a time, for a
    # window-ordered map (one whose entries' windows never decrease: every sorted map is
    # one, and with a single window every map is): the entries of a window are then
    # consecutive, so one forward pass over the map gathers them and marks their positions in
    # a window-sized (cache-resident) mark array, and the window's block sums are taken while
    # its grad_values are still in cache.  Returns 0 when every entry it met fitted a
    # window-ordered map, with the range of j it covered in j_range[0:2]; 1 otherwise (the
    # caller then falls back to the marking path, which also finds any out-of-range entry).
    cdef uint8_t mark[MAX_WINDOW * BLOCK]
    cdef int64_t n = c.n
    cdef bint stream = c.stream
    cdef int64_t k1 = min(b1 * BLOCK, c.n_full)
    cdef int64_t j = lower_bound(rim, n, <uint64_t>(b0 * BLOCK))
    cdef int64_t w, b
    cdef uint64_t u, wstart, wlen
    if j > 0 and index_key(rim[j - 1]) >= <uint64_t>(b0 * BLOCK):
        sfer_atomic_store(&c.abort, 1)
        return 1
    j_range[0] = j
    w = b0
    while w < b1:
        wstart = <uint64_t>(w * BLOCK)
        wlen = <uint64_t>min(window * BLOCK, k1 - w * BLOCK)
        memset(mark, 0, wlen)
        while j < n:    # the hot loop: one subtraction and one compare per entry
            j = walk_groups(g, rim, d, c, mark, j, wstart, wlen)
            if j >= n:
                break
            u = index_key(rim[j]) - wstart
            if u >= wlen:
                if index_key(rim[j]) < wstart:   # an entry of an earlier window: not ordered
                    sfer_atomic_store(&c.abort, 1)
                    sfer_stream_fence()
                    return 1
                break
            store_item(&d[j], &g[wstart + u], stream)
            mark[u] = 1
            # The map, MAP_AHEAD entries on: possibly past its end, so as an integer address.
            sfer_prefetch_addr(<uintptr_t>rim + <uintptr_t>(j + MAP_AHEAD) * sizeof(idx_t))
            j += 1
        if sfer_atomic_load(&c.abort):
            sfer_stream_fence()
            return 1
        for b in range(w, min(w + window, b1)):
            block_sum_masked(g + b * BLOCK, &mark[(b - w) * BLOCK], min(BLOCK, k1 - b * BLOCK),
                             &c.parts[b])
        w += window
    sfer_stream_fence()
    j_range[1] = j
    return 0


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
    block_sum_masked(g + k0, mark, k1 - k0, out)


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


cdef bint ranges_tile(const int *status, const int64_t *j_ranges, int nthreads,
                      int64_t n) noexcept nogil:
    # Every thread's walk succeeded and their ranges of j tile [0, n): then the whole map is
    # block-ordered and every entry lies below n_full (an entry >= n_full stops the last walk
    # short of n).
    cdef int t
    for t in range(nthreads):
        if status[t] != 0:
            return False
    if j_ranges[0] != 0 or j_ranges[2 * nthreads - 1] != n:
        return False
    for t in range(nthreads - 1):
        if j_ranges[2 * t + 1] != j_ranges[2 * t + 2]:
            return False
    return True


cdef bint try_block_ordered(const val_t *g, const idx_t *rim, val_t *d,
                            grad_call *c) noexcept nogil:
    # d, c.parts: out.  The block-ordered path; True when it applied (map block-ordered and in
    # range).  With one thread and one window every map qualifies: no screen, no allocation.
    cdef int64_t one_range[2]
    cdef int one_status
    cdef int64_t *j_ranges = one_range
    cdef int *status = &one_status
    cdef int64_t nb = c.nb
    cdef int nthreads = c.nthreads
    cdef int t
    cdef bint ok
    if not ((nb <= MAX_WINDOW and nthreads == 1) or looks_block_ordered(rim, c.n)):
        return False
    c.abort = 0
    if nthreads == 1:
        # One thread over at most MAX_WINDOW blocks: one window, so any map qualifies.
        status[0] = block_walk(g, rim, d, c, 0, nb, nb if nb <= MAX_WINDOW else 1, j_ranges)
    else:
        j_ranges = <int64_t *>malloc(2 * nthreads * sizeof(int64_t))
        status = <int *>malloc(nthreads * sizeof(int))
        if j_ranges == NULL or status == NULL:
            free(j_ranges)
            free(status)
            return False
        for t in prange(nthreads, schedule='static', num_threads=nthreads):
            status[t] = block_walk(g, rim, d, c, t * nb // nthreads, (t + 1) * nb // nthreads,
                                   1, &j_ranges[2 * t])
    ok = ranges_tile(status, j_ranges, nthreads, c.n)
    if nthreads > 1:
        free(j_ranges)
        free(status)
    return ok


cdef int64_t first_bad_entry(const int64_t *bad, int nthreads) noexcept nogil:
    # The lowest of the threads' first out-of-range entries, or -1.
    cdef int64_t first = -1
    cdef int t
    for t in range(nthreads):
        if bad[t] >= 0 and (first < 0 or bad[t] < first):
            first = bad[t]
    return first


cdef void sum_unmarked(const val_t *g, const grad_call *c, const uint64_t *bits, int nmaps,
                       const uint8_t *marks) noexcept nogil:
    # c.parts: out.  Each block's sum of the positions that no entry marked: in the nmaps
    # bitmaps `bits`, or (nmaps == 0) in the byte array `marks`.
    cdef int64_t b, nb = c.nb, n_full = c.n_full, words = (n_full + 63) // 64
    cdef int nthreads = c.nthreads
    if nthreads == 1:
        for b in range(nb):
            block_sum_bits(g, bits, words, nmaps, b * BLOCK, min((b + 1) * BLOCK, n_full),
                           &c.parts[b])
    elif nmaps == 0:
        for b in prange(nb, schedule='static', num_threads=nthreads):
            block_sum_masked(g + b * BLOCK, marks + b * BLOCK, min(BLOCK, n_full - b * BLOCK),
                             &c.parts[b])
    else:
        for b in prange(nb, schedule='static', num_threads=nthreads):
            block_sum_bits(g, bits, words, nmaps, b * BLOCK, min((b + 1) * BLOCK, n_full),
                           &c.parts[b])


cdef int64_t marking_path(const val_t *g, const idx_t *rim, val_t *d,
                          const grad_call *c) noexcept nogil:
    # d, c.parts: out.  The general path: gather and mark referenced positions, then sum the
    # unmarked ones block by block.  Up to MAX_BITMAPS threads, each thread sets bits in a
    # bitmap of its own (plain bit sets); the block sums take the union of the bitmaps.  More
    # threads share one byte array instead, each storing 1 into the byte of a referenced
    # position: a plain store, which, unlike an atomic bit set on a shared bitmap, does not
    # wait for its cache line and so keeps the gathers' misses in flight.  (run_grad gives
    # this path more than MAX_BITMAPS threads only where more than MAX_BITMAPS CPUs can run
    # them: the cores' stores to one array's lines cost far more than a bitmap each where few
    # cores share them.)  Extra memory: at most one byte per position either way.  Returns -1,
    # the first out-of-range j, or ERR_NOMEM.
    cdef int nthreads = c.nthreads
    cdef int64_t n = c.n
    cdef bint use_bytes = nthreads > MAX_BITMAPS
    cdef int nmaps = 0 if use_bytes else nthreads
    cdef int64_t words = (c.n_full + 63) // 64
    cdef uint64_t *bits = NULL
    cdef uint8_t *marks = NULL
    cdef int64_t *bad = <int64_t *>malloc(nthreads * sizeof(int64_t))
    cdef int64_t first_bad
    cdef int t
    if use_bytes:
        marks = <uint8_t *>calloc(<size_t>c.n_full, 1)
    else:
        bits = <uint64_t *>calloc(<size_t>(nmaps * words), sizeof(uint64_t))
    if (bits == NULL and marks == NULL) or bad == NULL:
        free(bits)
        free(marks)
        free(bad)
        return ERR_NOMEM
    if nthreads == 1:
        bad[0] = gather_mark(g, rim, d, c, bits, 0, n)
    elif use_bytes:
        for t in prange(nthreads, schedule='static', num_threads=nthreads):
            bad[t] = gather_mark(g, rim, d, c, marks, t * n // nthreads,
                                 (t + 1) * n // nthreads)
    else:
        for t in prange(nthreads, schedule='static', num_threads=nthreads):
            bad[t] = gather_mark(g, rim, d, c, &bits[t * words], t * n // nthreads,
                                 (t + 1) * n // nthreads)
    first_bad = first_bad_entry(bad, nthreads)
    if first_bad < 0:
        sum_unmarked(g, c, bits, nmaps, marks)
    free(bits)
    free(marks)
    free(bad)
    return first_bad


cdef int64_t run_grad(const val_t *g, const idx_t *rim, val_t *d, grad_call *c,
                      part_t *total) noexcept nogil:
    # d, total: out.  Returns -1 on success, the first out-of-range j, or ERR_NOMEM.
    cdef part_t few_parts[4]
    cdef int64_t res = -1
    c.nb = (c.n_full + BLOCK - 1) // BLOCK
    c.parts = few_parts
    combine_block_sums(NULL, 0, total)
    if c.n_full == 0:
        return 0 if c.n > 0 else -1
    if c.nb > 4:
        c.parts = <part_t *>malloc(c.nb * sizeof(part_t))
        if c.parts == NULL:
            return ERR_NOMEM
    if c.nthreads > c.nb:
        c.nthreads = <int>c.nb
    # A large output is written with non-temporal stores: nobody reads it back soon enough
    # for it to still be in cache, and it would evict the inputs.
    c.stream = c.n * <int64_t>sizeof(val_t) >= STREAM_BYTES
    if try_block_ordered(g, rim, d, c):
        sfer_atomic_store(&_last_path_code, PATH_BLOCK_WALK)
    else:
        if c.nthreads > MAX_BITMAPS:
            # No more marking threads than CPUs: past MAX_BITMAPS CPUs the shared byte array,
            # else a bitmap per thread (the same memory as MAX_BITMAPS threads, or less).
            c.nthreads = state_threads(c.nthreads, c.cpus)
        sfer_atomic_store(&_last_path_code,
                          PATH_BYTES if c.nthreads > MAX_BITMAPS else PATH_BITMAPS)
        res = marking_path(g, rim, d, c)
    if res == -1:
        combine_block_sums(c.parts, c.nb, total)
    if c.parts != few_parts:
        free(c.parts)
    return res


# The dtype dispatch, generated by setup.py from the table in sfer/_dtypes.py (template:
# sfer/_grad_dispatch.pxi.tp): the value and index kinds, value_kind_of, index_kind_of,
# run_value (-> run_index -> run_grad) and to_scalar.
include "_grad_dispatch.pxi"


# ---------------------------------------------------------------------------------------------
# The call, on inputs the kernel reads as they are

cdef inline bint behaved_vector(cnp.ndarray a) noexcept:
    # 1-D, C-contiguous, aligned, native byte order: what the kernel reads as it is.
    return (cnp.PyArray_NDIM(a) == 1 and cnp.PyArray_ISCARRAY_RO(a)
            and cnp.PyArray_ISNOTSWAPPED(a))


cdef object run(cnp.ndarray rim, cnp.ndarray g, cnp.ndarray d, int vkind, int ikind,
                int requested):
    # The kernel, with the GIL released, on the thread count the runtime plans
    # (sfer/_runtime.pyx): rim and g behaved vectors of the kinds vkind and ikind, d where
    # d_values goes, requested from thread_request.  Returns the GradResult; raises
    # IndexError for the first out-of-range entry (zeroing d, which may be the caller's out=,
    # so that no half-written result is left behind) or MemoryError.
    cdef grad_call c
    cdef part_t total
    cdef int64_t bad
    c.g = cnp.PyArray_DATA(g)
    c.rim = cnp.PyArray_DATA(rim)
    c.d = cnp.PyArray_DATA(d)
    c.n = cnp.PyArray_DIM(rim, 0)
    c.n_full = cnp.PyArray_DIM(g, 0)
    c.vkind = vkind
    c.ikind = ikind
    c.nthreads = plan_threads(requested, c.n + c.n_full)
    c.cpus = runnable_cpus() if c.nthreads > MAX_BITMAPS else MAX_THREADS
    with nogil:
        c.nthreads = enter_call(c.nthreads)
        bad = run_value(&c, &total)
        leave_call()
    if bad == ERR_NOMEM:
        raise MemoryError(_errors.no_work_space())
    if bad >= 0:
        memset(c.d, 0, <size_t>cnp.PyArray_NBYTES(d))
        raise IndexError(_errors.map_entry_out_of_range(bad, rim[bad], c.n_full))
    return _tuple_new(GradResult, (d, to_scalar(&total, vkind, g.dtype)))


cdef object run_converted(object inputs):
    # The call on what sfer._grad_inputs.grad_inputs returned (GradInputs).
    cdef cnp.ndarray rim, g, d
    cdef int requested, vkind, ikind
    rim, g, requested, d = inputs
    vkind = value_kind_of_dtype(g.dtype)
    ikind = index_kind_of(cnp.PyArray_TYPE(rim), cnp.PyArray_ITEMSIZE(rim))
    if vkind < 0 or ikind < 0 or not (behaved_vector(rim) and behaved_vector(g)):
        raise AssertionError("sfer: the grad's kernel got inputs it cannot read as they are")
    return run(rim, g, d, vkind, ikind, requested)


# ---------------------------------------------------------------------------------------------
# The C fast path: it only accepts (the rules and their messages are sfer._grad_inputs's)

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


cdef inline bint out_fits(object out, cnp.npy_intp n, cnp.PyArray_Descr *descr,
                          cnp.ndarray rim, cnp.ndarray g):
    # The rules of out= (sfer._grad_inputs.output_for) at once: True when out can receive
    # d_values of the exact ndarrays rim and g.
    cdef cnp.ndarray d
    if not isinstance(out, np.ndarray):
        return False
    d = <cnp.ndarray>out
    return (cnp.PyArray_NDIM(d) == 1 and cnp.PyArray_DIM(d, 0) == n
            and (cnp.PyArray_DESCR(d) == descr
                 or cnp.PyArray_EquivTypes(<cnp.dtype>cnp.PyArray_DESCR(d), <cnp.dtype>descr))
            and cnp.PyArray_ISWRITEABLE(d) and cnp.PyArray_ISCONTIGUOUS(d)
            and cnp.PyArray_ISALIGNED(d) and not may_overlap(d, rim) and not may_overlap(d, g))


cdef object fast_grad(object reverse_index_map, object grad_values, object num_threads,
                      object out):
    # The whole call for the common case, in C; None when the inputs need converting or
    # checking first: exact ndarrays that the kernel can read as they are (1-D, C-contiguous,
    # aligned, native order, a built-in dtype of the table) and an out= that fits.  Anything
    # else returns None, and sfer._grad_inputs converts it (or explains why it cannot).
    cdef cnp.ndarray rim, g, d
    cdef int vkind, ikind, nthreads
    cdef cnp.npy_intp n
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
    nthreads = thread_request(num_threads)   # the first rule these inputs may break
    n = cnp.PyArray_DIM(rim, 0)
    if out is None:
        d = cnp.PyArray_EMPTY(1, &n, cnp.PyArray_TYPE(g), 0)
    elif out_fits(out, n, cnp.PyArray_DESCR(g), rim, g):
        d = <cnp.ndarray>out
    else:
        return None
    return run(rim, g, d, vkind, ikind, nthreads)


# ---------------------------------------------------------------------------------------------
# The entry point

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
    result = fast_grad(reverse_index_map, grad_values, num_threads, out)
    if result is not None:
        return result
    return run_converted(grad_inputs(reverse_index_map, grad_values, num_threads, out))


_PATH_NAMES = {PATH_BLOCK_WALK: "block_walk", PATH_BITMAPS: "bitmaps", PATH_BYTES: "bytes"}


def _last_path():
    """The path the latest kernel call that reached one took: ``"block_walk"``, ``"bitmaps"``
    (marking, a bitmap per thread) or ``"bytes"`` (marking, a shared byte array, past
    ``MAX_BITMAPS`` threads where more than ``MAX_BITMAPS`` CPUs can run them); None before any
    (a test hook, racy across Python threads)."""
    return _PATH_NAMES.get(sfer_atomic_load(&_last_path_code))


def _constants():
    """The kernel's tuning constants, for tests that aim at a threshold."""
    return {"BLOCK": BLOCK, "SERIAL_BELOW": SERIAL_BELOW, "MAX_WINDOW": MAX_WINDOW,
            "MAX_BITMAPS": MAX_BITMAPS, "NEAR_AHEAD": NEAR_AHEAD, "FAR_AHEAD": FAR_AHEAD,
            "FAR_BYTES": FAR_BYTES, "STREAM_BYTES": STREAM_BYTES, "LANES": LANES,
            "MAP_AHEAD": MAP_AHEAD, "SCREEN": SCREEN, "MAX_THREADS": MAX_THREADS}
