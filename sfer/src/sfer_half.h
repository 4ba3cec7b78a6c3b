/* float16 and bfloat16: exact widening to float32, and float64 rounded once to their bits. */
#ifndef SFER_HALF_H
#define SFER_HALF_H

#include <math.h>
#include <stdint.h>
#include <string.h>

#include "sfer_types.h"

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

#endif  /* SFER_HALF_H */
