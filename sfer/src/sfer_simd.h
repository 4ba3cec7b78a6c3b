/* Masked lane sums: the SSE2 loops of the block sums, and the bit masks they rest on. */
#ifndef SFER_SIMD_H
#define SFER_SIMD_H

#include <stdint.h>
#include <string.h>

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
static inline int64_t sfer_masked_sum_f32_sse2(const float *g, const uint8_t *mark,
                                               int64_t len, double *s) {
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
#if defined(__GNUC__) && defined(__x86_64__)
#include <immintrin.h>
/* The float32 loop with AVX2, for the CPUs that have it (checked at run time: the build
   targets SSE2): half the instructions of the SSE2 loop, whose count bounds the one-thread
   block walk's sums (benchmarks/README.md, "The grad's walk on one thread").  Lanes 0-3 in
   a0, 4-7 in a1: the same lanes and order, so the same bits. */
__attribute__((target("avx2")))
static int64_t sfer_masked_sum_f32_avx2(const float *g, const uint8_t *mark, int64_t len,
                                        double *s) {
    __m256d a0 = _mm256_loadu_pd(s), a1 = _mm256_loadu_pd(s + 4);
    int64_t k;
    for (k = 0; k + 8 <= len; k += 8) {
        __m256i keep = _mm256_cmpeq_epi32(
            _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(mark + k))),
            _mm256_setzero_si256());
        __m256 x = _mm256_and_ps(_mm256_loadu_ps(g + k), _mm256_castsi256_ps(keep));
        a0 = _mm256_add_pd(a0, _mm256_cvtps_pd(_mm256_castps256_ps128(x)));
        a1 = _mm256_add_pd(a1, _mm256_cvtps_pd(_mm256_extractf128_ps(x, 1)));
    }
    _mm256_storeu_pd(s, a0);
    _mm256_storeu_pd(s + 4, a1);
    return k;
}
static inline int64_t sfer_masked_sum_f32(const float *g, const uint8_t *mark, int64_t len,
                                          double *s) {
    if (__builtin_cpu_supports("avx2")) return sfer_masked_sum_f32_avx2(g, mark, len, s);
    return sfer_masked_sum_f32_sse2(g, mark, len, s);
}
#else
static inline int64_t sfer_masked_sum_f32(const float *g, const uint8_t *mark, int64_t len,
                                          double *s) {
    return sfer_masked_sum_f32_sse2(g, mark, len, s);
}
#endif
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

#endif  /* SFER_SIMD_H */
