# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Compiled kernels of sfer (private: call ``sfer.sparse_fill_empty_rows_grad``).

Definitions used by every kernel below:

* ``key(r)``: a map entry as an unsigned 64-bit number.  Signed entries are sign-extended first,
  so a negative entry becomes >= 2**63 and fails the single range test ``key(r) < n_full``.
* The unreferenced sum is defined block by block: positions ``[0, n_full)`` are cut into blocks
  of ``BLOCK`` positions; inside a block, position ``k`` is added to lane ``k % 8`` (complex:
  lane ``k % 4``, real and imaginary parts apart) in increasing ``k``; lanes are combined in a
  fixed order, then blocks in increasing order.  The result depends on nothing else: not on the
  thread count, not on the order of the map, not on which code path (block walk or marking)
  produced it.  Skipped (referenced) positions add nothing, which is the same as adding ``+0``.
* Accumulators: float64 for float16/bfloat16/float32/complex64; compensated (Neumaier) float64
  for float64/complex128; uint64 (wrapping) for integers, whose low bits are the exact sum
  modulo 2**bits whatever the signedness.

Every kernel is ``noexcept nogil``; inputs are ``const``; outputs are marked ``# out``.
"""

cimport numpy as cnp
from cython.parallel cimport prange
from libc.math cimport NAN, fabs, isfinite
from libc.stdint cimport (int8_t, int16_t, int32_t, int64_t, uint8_t, uint16_t, uint32_t,
                          uint64_t)
from libc.stdlib cimport calloc, free, malloc
from libc.string cimport memcpy, memset

from sfer._openmp cimport SFER_HAVE_OPENMP, omp_get_max_threads

import os

from sfer._result import GradResult
from sfer._threads import _default_num_threads

cnp.import_array()

cdef object _tuple_new = tuple.__new__

# Fork safety.  GNU libgomp hangs a forked child that enters a parallel region after the
# parent already ran one (its thread pool does not survive fork).  A child created by fork()
# therefore runs every call on its own thread, never entering OpenMP (the serial path calls
# the kernels directly).  Processes started by spawn or forkserver are not affected.
cdef bint _forked_child = False


def _after_fork_in_child():
    global _forked_child
    _forked_child = True
    sfer_calls_reset()


def in_forked_child():
    """True in a process created by fork() from one that had imported sfer (runs serially)."""
    return bool(_forked_child)


os.register_at_fork(after_in_child=_after_fork_in_child)

cdef extern from *:
    """
    #include <math.h>
    #include <stdint.h>
    #include <string.h>
    typedef struct { uint16_t bits; } sfer_f16;
    typedef struct { uint16_t bits; } sfer_bf16;
    typedef struct { float re, im; } sfer_c64;
    typedef struct { double re, im; } sfer_c128;

    /* IEEE binary16 -> binary32, exact for every input (subnormals, inf, NaN payloads). */
    static inline float sfer_f16_to_float(sfer_f16 h) {
        union { uint32_t u; float f; } o, magic, infnan;
        magic.u = (uint32_t)(254 - 15) << 23;     /* 2**112 */
        infnan.u = (uint32_t)(127 + 16) << 23;    /* 2**16: the smallest half exponent 31 */
        o.u = (uint32_t)(h.bits & 0x7fffu) << 13;
        o.f *= magic.f;
        if (o.f >= infnan.f) o.u |= (uint32_t)255 << 23;
        o.u |= (uint32_t)(h.bits & 0x8000u) << 16;
        return o.f;
    }
    static inline float sfer_bf16_to_float(sfer_bf16 h) {
        union { uint32_t u; float f; } o;
        o.u = (uint32_t)h.bits << 16;
        return o.f;
    }
    /* float64 -> bfloat16 bits, rounded once to nearest-even: round to odd into float32
       (exact truncation plus a sticky bit), then round to nearest-even into bfloat16. */
    static inline uint16_t sfer_double_to_bf16_bits(double d) {
        union { uint32_t u; float f; } v;
        v.f = (float)d;
        if (d != d) return (uint16_t)((v.u >> 16) | 0x0040u);
        if (isfinite(d) && (double)v.f != d) {
            if (fabs((double)v.f) > fabs(d)) v.u -= 1u;
            v.u |= 1u;
        }
        return (uint16_t)((v.u + 0x7fffu + ((v.u >> 16) & 1u)) >> 16);
    }
    /* Bit i of a bitmap that this thread alone writes. */
    static inline void sfer_bit_set(uint64_t *bits, uint64_t i) {
        bits[i >> 6] |= (uint64_t)1 << (i & 63);
    }
    /* Byte i of a mark array that threads share: every writer stores the same 1, so a plain
       store (a relaxed atomic one, to be correct C) is enough; no read-modify-write, which
       would wait for its cache line and stall the gathers behind it. */
    static inline void sfer_byte_mark(uint8_t *marks, uint64_t i) {
        __atomic_store_n(marks + i, (uint8_t)1, __ATOMIC_RELAXED);
    }
    /* The 64 bits of m as 64 bytes 0/1, bit i to out[i]. */
    static inline void sfer_bits_to_bytes(uint64_t m, uint8_t *out) {
        int i;
        for (i = 0; i < 64; i++) out[i] = (uint8_t)((m >> i) & 1u);
    }
    /* All ones when skip == 0, else zero; and v, or +0 when skip is set. */
    static inline uint64_t sfer_keep_mask(uint8_t skip) { return (uint64_t)0 - (uint64_t)(skip == 0); }
    static inline double sfer_keep(double v, uint8_t skip) {
        uint64_t b;
        memcpy(&b, &v, 8);
        b &= sfer_keep_mask(skip);
        memcpy(&v, &b, 8);
        return v;
    }
    /* Masked lane sums with SSE2 (every x86-64 has it).  Lane l of s (and c) takes the
       elements k = l (mod 8), in increasing k, exactly as the generic Cython loop does, so the
       results are bit-identical.  Return how many elements they did (a multiple of 8; 0
       without SSE2, leaving all the work to the generic loop). */
    #if defined(__SSE2__)
    #include <emmintrin.h>
    static inline __m128i sfer_keep_bytes(const uint8_t *mark) {  /* 0xff where mark == 0 */
        return _mm_cmpeq_epi8(_mm_loadl_epi64((const __m128i *)mark), _mm_setzero_si128());
    }
    static inline int64_t sfer_masked_sum_f32(const float *g, const uint8_t *mark, int64_t len,
                                              double *s) {
        __m128d a0 = _mm_loadu_pd(s), a1 = _mm_loadu_pd(s + 2);
        __m128d a2 = _mm_loadu_pd(s + 4), a3 = _mm_loadu_pd(s + 6);
        int64_t k;
        for (k = 0; k + 8 <= len; k += 8) {
            __m128i keep16 = _mm_unpacklo_epi8(sfer_keep_bytes(mark + k), sfer_keep_bytes(mark + k));
            __m128 x0 = _mm_and_ps(_mm_loadu_ps(g + k),
                                   _mm_castsi128_ps(_mm_unpacklo_epi16(keep16, keep16)));
            __m128 x1 = _mm_and_ps(_mm_loadu_ps(g + k + 4),
                                   _mm_castsi128_ps(_mm_unpackhi_epi16(keep16, keep16)));
            a0 = _mm_add_pd(a0, _mm_cvtps_pd(x0));
            a1 = _mm_add_pd(a1, _mm_cvtps_pd(_mm_movehl_ps(x0, x0)));
            a2 = _mm_add_pd(a2, _mm_cvtps_pd(x1));
            a3 = _mm_add_pd(a3, _mm_cvtps_pd(_mm_movehl_ps(x1, x1)));
        }
        _mm_storeu_pd(s, a0); _mm_storeu_pd(s + 2, a1);
        _mm_storeu_pd(s + 4, a2); _mm_storeu_pd(s + 6, a3);
        return k;
    }
    static inline void sfer_neumaier2(__m128d *s, __m128d *c, __m128d x) {
        const __m128d abs_mask = _mm_castsi128_pd(_mm_set1_epi64x(0x7fffffffffffffffLL));
        __m128d t = _mm_add_pd(*s, x);
        __m128d ge = _mm_cmpge_pd(_mm_and_pd(*s, abs_mask), _mm_and_pd(x, abs_mask));
        __m128d a = _mm_add_pd(_mm_sub_pd(*s, t), x);
        __m128d b = _mm_add_pd(_mm_sub_pd(x, t), *s);
        *c = _mm_add_pd(*c, _mm_or_pd(_mm_and_pd(ge, a), _mm_andnot_pd(ge, b)));
        *s = t;
    }
    static inline int64_t sfer_masked_sum_f64(const double *g, const uint8_t *mark, int64_t len,
                                              double *s, double *c) {
        __m128d s0 = _mm_loadu_pd(s), s1 = _mm_loadu_pd(s + 2);
        __m128d s2 = _mm_loadu_pd(s + 4), s3 = _mm_loadu_pd(s + 6);
        __m128d c0 = _mm_loadu_pd(c), c1 = _mm_loadu_pd(c + 2);
        __m128d c2 = _mm_loadu_pd(c + 4), c3 = _mm_loadu_pd(c + 6);
        int64_t k;
        for (k = 0; k + 8 <= len; k += 8) {
            __m128i keep16 = _mm_unpacklo_epi8(sfer_keep_bytes(mark + k), sfer_keep_bytes(mark + k));
            __m128i lo = _mm_unpacklo_epi16(keep16, keep16), hi = _mm_unpackhi_epi16(keep16, keep16);
            sfer_neumaier2(&s0, &c0, _mm_and_pd(_mm_loadu_pd(g + k),
                                                _mm_castsi128_pd(_mm_unpacklo_epi32(lo, lo))));
            sfer_neumaier2(&s1, &c1, _mm_and_pd(_mm_loadu_pd(g + k + 2),
                                                _mm_castsi128_pd(_mm_unpackhi_epi32(lo, lo))));
            sfer_neumaier2(&s2, &c2, _mm_and_pd(_mm_loadu_pd(g + k + 4),
                                                _mm_castsi128_pd(_mm_unpacklo_epi32(hi, hi))));
            sfer_neumaier2(&s3, &c3, _mm_and_pd(_mm_loadu_pd(g + k + 6),
                                                _mm_castsi128_pd(_mm_unpackhi_epi32(hi, hi))));
        }
        _mm_storeu_pd(s, s0); _mm_storeu_pd(s + 2, s1); _mm_storeu_pd(s + 4, s2); _mm_storeu_pd(s + 6, s3);
        _mm_storeu_pd(c, c0); _mm_storeu_pd(c + 2, c1); _mm_storeu_pd(c + 4, c2); _mm_storeu_pd(c + 6, c3);
        return k;
    }
    #else
    static inline int64_t sfer_masked_sum_f32(const float *g, const uint8_t *mark, int64_t len,
                                              double *s) { return 0; }
    static inline int64_t sfer_masked_sum_f64(const double *g, const uint8_t *mark, int64_t len,
                                              double *s, double *c) { return 0; }
    #endif
    /* Non-temporal stores of one 4- or 8-byte item: a large output written once is not read
       back (no read-for-ownership) and does not evict the inputs from cache.  A fence makes
       them visible before the parallel region ends. */
    static inline void sfer_stream4(void *dst, const void *src) {
    #if defined(__SSE2__)
        int v; memcpy(&v, src, 4); _mm_stream_si32((int *)dst, v);
    #else
        memcpy(dst, src, 4);
    #endif
    }
    static inline void sfer_stream8(void *dst, const void *src) {
    #if defined(__SSE2__) && defined(__x86_64__)
        long long v; memcpy(&v, src, 8); _mm_stream_si64((long long *)dst, v);
    #else
        memcpy(dst, src, 8);
    #endif
    }
    /* A hint only: prefetching past the end of an array is harmless. */
    static inline void sfer_prefetch(const void *p) { __builtin_prefetch(p, 0, 3); }
    static inline void sfer_prefetch_w(void *p) { __builtin_prefetch(p, 1, 3); }
    /* Into L2 but not L1: an L1 prefetch holds one of the core's few L1 miss buffers until
       the line arrives, which caps the misses in flight; an L2 prefetch does not. */
    static inline void sfer_prefetch_l2(const void *p) { __builtin_prefetch(p, 0, 2); }
    static inline void sfer_stream_fence(void) {
    #if defined(__SSE2__)
        _mm_sfence();
    #endif
    }
    /* The number of calls in their kernels right now (all threads). */
    static int sfer_calls = 0;
    static inline int sfer_calls_enter(void) { return __atomic_add_fetch(&sfer_calls, 1, __ATOMIC_RELAXED); }
    static inline void sfer_calls_leave(void) { __atomic_sub_fetch(&sfer_calls, 1, __ATOMIC_RELAXED); }
    static inline void sfer_calls_reset(void) { __atomic_store_n(&sfer_calls, 0, __ATOMIC_RELAXED); }
    static inline int sfer_flag_get(int *p) { return __atomic_load_n(p, __ATOMIC_RELAXED); }
    static inline void sfer_flag_set(int *p) { __atomic_store_n(p, 1, __ATOMIC_RELAXED); }
    /* The thread count and the path of the latest kernel call (test hooks: _last_threads,
       _last_path). */
    static int sfer_last_threads = 0;
    static int sfer_last_path = -1;
    static inline void sfer_set_last_path(int p) { __atomic_store_n(&sfer_last_path, p, __ATOMIC_RELAXED); }
    """
    ctypedef struct sfer_f16:
        uint16_t bits
    ctypedef struct sfer_bf16:
        uint16_t bits
    ctypedef struct sfer_c64:
        float re
        float im
    ctypedef struct sfer_c128:
        double re
        double im
    float sfer_f16_to_float(sfer_f16 h) noexcept nogil
    float sfer_bf16_to_float(sfer_bf16 h) noexcept nogil
    uint16_t sfer_double_to_bf16_bits(double d) noexcept nogil
    void sfer_bit_set(uint64_t *bits, uint64_t i) noexcept nogil
    void sfer_byte_mark(uint8_t *marks, uint64_t i) noexcept nogil
    void sfer_bits_to_bytes(uint64_t m, uint8_t *out) noexcept nogil
    uint64_t sfer_keep_mask(uint8_t skip) noexcept nogil
    double sfer_keep(double v, uint8_t skip) noexcept nogil
    int64_t sfer_masked_sum_f32(const float *g, const uint8_t *mark, int64_t len,
                                double *s) noexcept nogil
    int64_t sfer_masked_sum_f64(const double *g, const uint8_t *mark, int64_t len,
                                double *s, double *c) noexcept nogil
    void sfer_stream4(void *dst, const void *src) noexcept nogil
    void sfer_stream8(void *dst, const void *src) noexcept nogil
    void sfer_stream_fence() noexcept nogil
    void sfer_prefetch(const void *p) noexcept nogil
    void sfer_prefetch_w(void *p) noexcept nogil
    void sfer_prefetch_l2(const void *p) noexcept nogil
    int sfer_calls_enter() noexcept nogil
    void sfer_calls_leave() noexcept nogil
    void sfer_calls_reset() noexcept nogil
    int sfer_flag_get(int *p) noexcept nogil
    void sfer_flag_set(int *p) noexcept nogil
    int sfer_last_threads
    int sfer_last_path
    void sfer_set_last_path(int p) noexcept nogil


# Value kinds (by what the sum needs; signed and unsigned integers of one width share a kind)
# and index kinds.  sfer/_grad.py maps NumPy dtypes onto these codes.
cpdef enum:
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

cpdef enum:
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
    SERIAL_BELOW = 65536    # N + N_full below this: one thread (a parallel region costs more)
    MAX_WINDOW = 16         # blocks per window of a single-threaded block walk
    MAX_BITMAPS = 8         # up to this many threads, each has a bitmap of its own on the
                            # marking path; more share one byte array (<= 1 byte/position)
    # Prefetch distances (entries) on the marking path.  A small grad_values array sits in
    # cache: prefetch into L1, a little ahead.  From FAR_BYTES up its lines come from DRAM, and
    # the number of misses in flight is what counts: prefetch into L2 (see sfer_prefetch_l2),
    # far ahead.  Measured on a 2-core AMD EPYC (1 MiB L2 per core, 32 MiB L3): the far mode
    # halves single-threaded time at 10^7 float32 and is slower below ~6 MiB.
    NEAR_AHEAD = 24
    FAR_AHEAD = 128
    FAR_BYTES = 6 << 20
    STREAM_BYTES = 1 << 25  # outputs from 32 MiB up are written with non-temporal stores
    ERR_NOMEM = -2
    # The paths, as _last_path() names them
    PATH_BLOCK_WALK = 0     # block-ordered map: the block walk
    PATH_BITMAPS = 1        # marking path, a bitmap per thread (<= MAX_BITMAPS threads)
    PATH_BYTES = 2          # marking path, one shared byte array (more threads)

ctypedef fused val_t:
    uint8_t
    uint16_t
    uint32_t
    uint64_t
    sfer_f16
    sfer_bf16
    float
    double
    sfer_c64
    sfer_c128

ctypedef fused mark_t:      # the marking path's marks: a bitmap per thread, or shared bytes
    uint64_t
    uint8_t

ctypedef fused idx_t:
    int8_t
    int16_t
    int32_t
    int64_t
    uint8_t
    uint16_t
    uint32_t
    uint64_t

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

cdef inline uint64_t key(idx_t r) noexcept nogil:
    if idx_t is int8_t or idx_t is int16_t or idx_t is int32_t or idx_t is int64_t:
        return <uint64_t>(<int64_t>r)
    else:
        return <uint64_t>r


cdef inline void put(val_t *dst, const val_t *src, bint stream) noexcept nogil:
    # dst: out.  Copies one item, with a non-temporal store when stream is set (4- and 8-byte
    # items; others are copied plainly).
    if stream and sizeof(val_t) == 4:
        sfer_stream4(dst, src)
    elif stream and sizeof(val_t) == 8:
        sfer_stream8(dst, src)
    else:
        dst[0] = src[0]


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
    for i in range(8):
        L.s[i] = 0.0
        L.c[i] = 0.0
        L.u[i] = 0


cdef inline void lane_add_unless(lanes_t *L, uint64_t k, val_t x, uint8_t skip) noexcept nogil:
    # L: in/out.  Adds value x at position k to its lane, or +0 when skip is set: a bit mask,
    # not a multiply (NaN * 0 is NaN) nor a branch (unpredictable; blocks vectorisation).
    # Adding +0 leaves every accumulator bit-identical (they are never -0).
    cdef int l
    if val_t is uint8_t or val_t is uint16_t or val_t is uint32_t or val_t is uint64_t:
        L.u[k & 7] += <uint64_t>x & sfer_keep_mask(skip)
    elif val_t is sfer_f16:
        L.s[k & 7] += sfer_keep(<double>sfer_f16_to_float(x), skip)
    elif val_t is sfer_bf16:
        L.s[k & 7] += sfer_keep(<double>sfer_bf16_to_float(x), skip)
    elif val_t is float:
        L.s[k & 7] += sfer_keep(<double>x, skip)
    elif val_t is double:
        neumaier(&L.s[k & 7], &L.c[k & 7], sfer_keep(x, skip))
    elif val_t is sfer_c64:
        l = <int>(k & 3) * 2
        L.s[l] += sfer_keep(<double>x.re, skip)
        L.s[l + 1] += sfer_keep(<double>x.im, skip)
    elif val_t is sfer_c128:
        l = <int>(k & 3) * 2
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
    for i in range(8):
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
        for l in range(8):
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
        r = key(rim[j])
        if r >= n_full:
            sfer_stream_fence()
            return j
        if j + dist < j1:
            # Random access: ask for the lines `dist` entries on, so that many cache misses
            # are in flight at once (a hint: never out of bounds).
            ahead = key(rim[j + dist])
            if ahead < n_full:
                if far:
                    sfer_prefetch_l2(&g[ahead])
                else:
                    sfer_prefetch(&g[ahead])
                if mark_t is uint64_t:
                    sfer_prefetch_w(&marks[ahead >> 6])
                else:
                    sfer_prefetch_w(&marks[ahead])
        put(&d[j], &g[r], stream)
        if mark_t is uint64_t:
            sfer_bit_set(marks, r)
        else:
            sfer_byte_mark(marks, r)
    sfer_stream_fence()
    return -1


cdef inline int64_t lower_bound(const idx_t *rim, int64_t n, uint64_t x) noexcept nogil:
    # The first j with key(rim[j]) >= x, if the map is block-ordered and x is a block start
    # (any j in [0, n] otherwise).
    cdef int64_t lo = 0, hi = n, mid
    while lo < hi:
        mid = lo + (hi - lo) // 2
        if key(rim[mid]) < x:
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
    if j > 0 and key(rim[j - 1]) >= <uint64_t>(b0 * BLOCK):
        sfer_flag_set(abort)
        return 1
    j_range[0] = j
    w = b0
    while w < b1:
        wstart = <uint64_t>(w * BLOCK)
        wlen = <uint64_t>min(window * BLOCK, k1 - w * BLOCK)
        memset(mark, 0, wlen)
        while j < n:    # the hot loop: one subtraction and one compare per entry
            u = key(rim[j]) - wstart
            if u >= wlen:
                if key(rim[j]) < wstart:   # an entry of an earlier window: not ordered
                    sfer_flag_set(abort)
                    sfer_stream_fence()
                    return 1
                break
            put(&d[j], &g[wstart + u], stream)
            mark[u] = 1
            sfer_prefetch(&rim[j + 512])
            j += 1
        if sfer_flag_get(abort):
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

cdef void combine(const part_t *parts, int64_t nb, part_t *total) noexcept nogil:
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
    # whole block before meeting the first out-of-order entry: the first 256 entries and 256
    # entries spread over the map must be block-ordered.  Proves nothing; the walk checks
    # every entry.
    cdef int64_t i, m = min(n, 256)
    for i in range(1, m):
        if key(rim[i]) // BLOCK < key(rim[i - 1]) // BLOCK:
            return False
    if n > 512:
        for i in range(1, 256):
            if key(rim[i * (n // 256)]) // BLOCK < key(rim[(i - 1) * (n // 256)]) // BLOCK:
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


cdef int64_t marking(const val_t *g, int64_t n_full, const idx_t *rim, int64_t n, val_t *d,
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
    combine(NULL, 0, total)
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
        sfer_set_last_path(PATH_BLOCK_WALK)
    else:
        sfer_set_last_path(PATH_BYTES if nthreads > MAX_BITMAPS else PATH_BITMAPS)
        res = marking(g, n_full, rim, n, d, nthreads, nb, parts, stream)
    if res == -1:
        combine(parts, nb, total)
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

cdef extern from *:
    """
    /* float64 -> float16 bits, rounded once (to nearest-even), where the compiler has _Float16;
       else round to odd into float32 (truncate + sticky bit), then to nearest-even into half. */
    static inline uint16_t sfer_double_to_f16_bits(double d) {
    #if defined(__FLT16_MAX__)
        _Float16 h = (_Float16)d;
        uint16_t b;
        memcpy(&b, &h, 2);
        return b;
    #else
        union { uint32_t u; float f; } v;
        uint32_t a, sign, m, e, shift, half, rem;
        v.f = (float)d;
        if (d == d && isfinite(d) && (double)v.f != d) {
            if (fabs((double)v.f) > fabs(d)) v.u -= 1u;
            v.u |= 1u;
        }
        sign = (v.u >> 16) & 0x8000u;
        a = v.u & 0x7fffffffu;
        if (a > 0x7f800000u) return (uint16_t)(sign | 0x7e00u | ((a >> 13) & 0x3ffu));
        if (a >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u);    /* >= 65520: inf */
        if (a >= 0x38800000u) {                                      /* normal half */
            a += 0x0fffu + ((a >> 13) & 1u);
            return (uint16_t)(sign | ((a - 0x38000000u) >> 13));
        }
        if (a < 0x33000000u) return (uint16_t)sign;                 /* < 2**-25: zero */
        e = a >> 23;
        m = (a & 0x7fffffu) | 0x800000u;
        shift = 126u - e;                                            /* 14..24 */
        half = 1u << (shift - 1);
        rem = m & ((1u << shift) - 1u);
        m >>= shift;
        if (rem > half || (rem == half && (m & 1u))) m += 1u;
        return (uint16_t)(sign | m);
    #endif
    }
    """
    uint16_t sfer_double_to_f16_bits(double d) noexcept nogil

cdef extern from "numpy/arrayobject.h":
    object PyArray_Scalar(void *data, cnp.dtype descr, object base)
    enum: NPY_HALF

cdef union scalar_t:        # the result, in the bits of its output dtype
    uint8_t u8
    uint16_t u16
    uint32_t u32
    uint64_t u64
    float f32[2]
    double f64[2]


cdef inline double finish(double s, double c) noexcept nogil:
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
        v.u16 = sfer_double_to_f16_bits(finish(total.s0, total.c0))
    elif vkind == V_BF16:
        v.u16 = sfer_double_to_bf16_bits(finish(total.s0, total.c0))
    elif vkind == V_F32:
        v.f32[0] = <float>finish(total.s0, total.c0)
    elif vkind == V_F64:
        v.f64[0] = finish(total.s0, total.c0)
    elif vkind == V_C64:
        v.f32[0] = <float>finish(total.s0, total.c0)
        v.f32[1] = <float>finish(total.s1, total.c1)
    else:
        v.f64[0] = finish(total.s0, total.c0)
        v.f64[1] = finish(total.s1, total.c1)
    return PyArray_Scalar(&v, dtype, None)


cdef int64_t run_checked(cnp.ndarray rim, cnp.ndarray g, cnp.ndarray d, int vkind, int ikind,
                         int num_threads, part_t *total) except -2:
    # Runs the kernel with the GIL released.  rim, g: in; d, total: out.  Returns -1, or
    # raises IndexError for the first out-of-range entry (zeroing d, which may be the caller's
    # out=, so that no half-written result is left behind) or MemoryError.
    global sfer_last_threads
    cdef const void *gp = cnp.PyArray_DATA(g)
    cdef const void *rp = cnp.PyArray_DATA(rim)
    cdef void *dp = cnp.PyArray_DATA(d)
    cdef int64_t n = cnp.PyArray_DIM(rim, 0)
    cdef int64_t n_full = cnp.PyArray_DIM(g, 0)
    cdef int64_t bad
    cdef int active
    cdef int nthreads = num_threads
    if n + n_full < SERIAL_BELOW or _forked_child:
        nthreads = 1
    elif nthreads <= 0:
        # The default (sfer.get_num_threads): OMP_NUM_THREADS or a threadpoolctl limit when
        # set, else the CPUs this process may use (affinity mask, container CPU quota).
        nthreads = _default_num_threads()
    with nogil:
        # Thread policy: the thread count is shared out among the calls running at the same
        # moment, so that many Python threads calling sfer at once do not oversubscribe the
        # cores.
        active = sfer_calls_enter()
        nthreads = max(1, nthreads // active)
        sfer_last_threads = nthreads
        bad = run_value(gp, vkind, n_full, rp, ikind, n, dp, nthreads, total)
        sfer_calls_leave()
    if bad == ERR_NOMEM:
        raise MemoryError("sfer: could not allocate the kernel's work space")
    if bad >= 0:
        memset(dp, 0, <size_t>cnp.PyArray_NBYTES(d))
        raise IndexError(
            f"reverse_index_map[{bad}] = {rim[bad]} is out of range [0, {n_full})")
    return -1


def grad(cnp.ndarray rim, cnp.ndarray g, cnp.ndarray d, int vkind, int ikind, int num_threads):
    """Run the kernel on validated inputs; returns ``d_default_value``.

    ``rim`` and ``g``: 1-D, C-contiguous, aligned, native byte order, of kinds ``ikind`` and
    ``vkind``; ``d``: a writeable C-contiguous output of ``len(rim)`` items of ``g``'s dtype
    that overlaps neither.  ``num_threads`` <= 0 means OpenMP's default.  Raises IndexError for
    the first out-of-range entry.
    """
    cdef part_t total
    run_checked(rim, g, d, vkind, ikind, num_threads, &total)
    return to_scalar(&total, vkind, g.dtype)


cdef int value_kind_of(int t, int size) noexcept:
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
    if not cnp.PyTypeNum_ISINTEGER(t) or size not in (1, 2, 4, 8):
        return -1
    if cnp.PyTypeNum_ISSIGNED(t):
        return I_I8 if size == 1 else I_I16 if size == 2 else I_I32 if size == 4 else I_I64
    return I_U8 if size == 1 else I_U16 if size == 2 else I_U32 if size == 4 else I_U64


def value_kind(cnp.dtype dtype):
    """The kernel's value kind for a NumPy dtype (native byte order assumed), or -1."""
    return value_kind_of(dtype.type_num, dtype.itemsize)


def index_kind(cnp.dtype dtype):
    """The kernel's index kind for an integer NumPy dtype (native byte order assumed), or -1."""
    return index_kind_of(dtype.type_num, dtype.itemsize)


cdef inline bint behaved_vector(cnp.ndarray a) noexcept:
    # 1-D, C-contiguous, aligned, native byte order: what the kernel reads as it is.
    return (cnp.PyArray_NDIM(a) == 1 and cnp.PyArray_ISCARRAY_RO(a)
            and cnp.PyArray_ISNOTSWAPPED(a))


cdef inline bint disjoint(cnp.ndarray a, cnp.ndarray b) noexcept:
    # The memory of two contiguous arrays does not overlap.
    cdef char *pa = <char *>cnp.PyArray_DATA(a)
    cdef char *pb = <char *>cnp.PyArray_DATA(b)
    return pa + cnp.PyArray_NBYTES(a) <= pb or pb + cnp.PyArray_NBYTES(b) <= pa


cdef object fast_grad(object reverse_index_map, object grad_values, object num_threads,
                      object out):
    # The whole call for the common case, in C; None when it does not apply: exact ndarrays
    # that the kernel can read as they are (1-D, C-contiguous, aligned, native order, a
    # built-in dtype), num_threads None or an int >= 1, out None or a valid output.  Anything
    # else returns None and sfer._grad.slow_path validates it (and raises the precise error).
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
    if num_threads is None:
        nthreads = 0
    elif type(num_threads) is int and num_threads >= 1:
        nthreads = min(num_threads, 65536)
    else:
        return None
    n = cnp.PyArray_DIM(rim, 0)
    if out is None:
        d = cnp.PyArray_EMPTY(1, &n, cnp.PyArray_TYPE(g), 0)
    else:
        if type(out) is not cnp.ndarray:
            return None
        d = <cnp.ndarray>out
        if not (behaved_vector(d) and cnp.PyArray_ISWRITEABLE(d) and cnp.PyArray_DIM(d, 0) == n
                and cnp.PyArray_TYPE(d) == cnp.PyArray_TYPE(g)
                and disjoint(d, rim) and disjoint(d, g)):
            return None
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
    accumulated in float64, float64 and complex128 sums with compensated (Neumaier)
    summation; the result is rounded once.  The inputs are never modified and the GIL is
    released while the kernel runs.
    """
    global _slow_path
    result = fast_grad(reverse_index_map, grad_values, num_threads, out)
    if result is not None:
        return result
    if _slow_path is None:  # imported late: sfer._grad imports this module
        from sfer._grad import slow_path
        _slow_path = slow_path
    return _slow_path(reverse_index_map, grad_values, num_threads, out)


def openmp_enabled():
    """True when this build of sfer runs its kernels with OpenMP threads."""
    return bool(SFER_HAVE_OPENMP)


def max_threads():
    """OpenMP's ``omp_get_max_threads()`` (1 in a serial build)."""
    return omp_get_max_threads()


_PATH_NAMES = {PATH_BLOCK_WALK: "block_walk", PATH_BITMAPS: "bitmaps", PATH_BYTES: "bytes"}


def _last_path():
    """The path the latest kernel call that reached one took: ``"block_walk"``, ``"bitmaps"``
    (marking, a bitmap per thread) or ``"bytes"`` (marking, a shared byte array, past
    ``MAX_BITMAPS`` threads); None before any (a test hook, racy across Python threads)."""
    return _PATH_NAMES.get(sfer_last_path)


def _constants():
    """The kernel's tuning constants, for tests that aim at a threshold."""
    return {"BLOCK": BLOCK, "SERIAL_BELOW": SERIAL_BELOW, "MAX_WINDOW": MAX_WINDOW,
            "MAX_BITMAPS": MAX_BITMAPS, "NEAR_AHEAD": NEAR_AHEAD, "FAR_AHEAD": FAR_AHEAD,
            "FAR_BYTES": FAR_BYTES, "STREAM_BYTES": STREAM_BYTES}


def _last_threads():
    """The thread count the latest kernel call ran with, after the small-input, fork and
    sharing rules (a test hook; racy when several Python threads call sfer at once)."""
    return sfer_last_threads
