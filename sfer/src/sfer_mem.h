/* Memory helpers of the kernels: mark bits and bytes, non-temporal stores, prefetch hints. */
#ifndef SFER_MEM_H
#define SFER_MEM_H

#include <stdint.h>
#include <string.h>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

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
/* Prefetch hints: they never fault, but callers still form only pointers inside their arrays
   (a pointer past the end, other than one past it, is undefined behaviour in C).  Where the
   address may lie past the end, sfer_prefetch_addr takes it as an integer: no pointer is
   formed until the hint, whose address is never dereferenced. */
static inline void sfer_prefetch_addr(uintptr_t addr) { __builtin_prefetch((const void *)addr, 0, 3); }
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

#endif  /* SFER_MEM_H */
