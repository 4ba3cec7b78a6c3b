# What every op's kernels share (inline, so each op's module compiles its own copy): the item
# types, the fused value and index types, the C helpers of sfer/src/, reading a map entry, and
# storing an item.  The process-wide state lives in sfer/_runtime.pyx, not here.

from libc.stdint cimport (int8_t, int16_t, int32_t, int64_t, uint8_t, uint16_t, uint32_t,
                          uint64_t, uintptr_t)

cdef extern from "src/sfer_types.h":
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

cdef extern from "src/sfer_half.h":
    float sfer_f16_to_float(sfer_f16 h) noexcept nogil
    float sfer_bf16_to_float(sfer_bf16 h) noexcept nogil
    uint16_t sfer_double_to_f16_bits(double d) noexcept nogil
    uint16_t sfer_double_to_bf16_bits(double d) noexcept nogil

cdef extern from "src/sfer_simd.h":
    uint64_t sfer_keep_mask(uint8_t skip) noexcept nogil
    double sfer_keep(double v, uint8_t skip) noexcept nogil
    int64_t sfer_masked_sum_f32(const float *g, const uint8_t *mark, int64_t len,
                                double *s) noexcept nogil
    int64_t sfer_masked_sum_f64(const double *g, const uint8_t *mark, int64_t len,
                                double *s, double *c) noexcept nogil

cdef extern from "src/sfer_mem.h":
    void sfer_bit_set(uint64_t *bits, uint64_t i) noexcept nogil
    void sfer_byte_mark(uint8_t *marks, uint64_t i) noexcept nogil
    void sfer_bits_to_bytes(uint64_t m, uint8_t *out) noexcept nogil
    void sfer_stream4(void *dst, const void *src) noexcept nogil
    void sfer_stream8(void *dst, const void *src) noexcept nogil
    void sfer_stream_fence() noexcept nogil
    void sfer_prefetch(const void *p) noexcept nogil
    void sfer_prefetch_addr(uintptr_t addr) noexcept nogil
    void sfer_prefetch_w(void *p) noexcept nogil
    void sfer_prefetch_l2(const void *p) noexcept nogil

cdef extern from "src/sfer_atomic.h":
    int sfer_atomic_load(int *p) noexcept nogil
    void sfer_atomic_store(int *p, int v) noexcept nogil

ctypedef fused val_t:       # the items an op moves (and the grad sums), by their bits
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

ctypedef fused idx_t:       # the entries of an index array
    int8_t
    int16_t
    int32_t
    int64_t
    uint8_t
    uint16_t
    uint32_t
    uint64_t


cdef inline uint64_t index_key(idx_t r) noexcept nogil:
    # An index entry as an unsigned 64-bit number.  Signed entries are sign-extended first, so
    # a negative entry becomes >= 2**63 and fails the single range test index_key(r) < bound.
    if idx_t is int8_t or idx_t is int16_t or idx_t is int32_t or idx_t is int64_t:
        return <uint64_t>(<int64_t>r)
    else:
        return <uint64_t>r


cdef inline void store_item(val_t *dst, const val_t *src, bint stream) noexcept nogil:
    # dst: out.  Copies one item, with a non-temporal store when stream is set (4- and 8-byte
    # items; others are copied plainly).
    if stream and sizeof(val_t) == 4:
        sfer_stream4(dst, src)
    elif stream and sizeof(val_t) == 8:
        sfer_stream8(dst, src)
    else:
        dst[0] = src[0]
