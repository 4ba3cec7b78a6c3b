/* The flat ragged-to-sparse writer: one ragged level, 1-D values.  For j0 <= j < j1,
   out[2 j] = r and out[2 j + 1] = j - s[r], where r is the row of entry j (s[r] <= j < s[r + 1]).

   Rows here are short (a few to a few tens of entries), so a loop whose length is the row's
   length ends in a mispredicted branch nearly every row, which costs more than the row's
   stores.  The wide loop writes each row in steps of SFER_FLAT_STEP entries, always at least
   one step: the entries past the row's end are garbage that the next rows, written after it
   by the same thread, overwrite.  It is taken only while the step cannot reach j1, so that no
   write leaves the thread's own slice [j0, j1); the last rows take the exact loop. */
#ifndef SFER_RAGGED_H
#define SFER_RAGGED_H

#include <stdint.h>
#include <string.h>

#define SFER_FLAT_STEP 16   /* entries a step: 8 stores of 32 bytes */

typedef int64_t sfer_i64x4 __attribute__((vector_size(32)));

/* Entries j to j1 (exclusive) of the rows from r on, one at a time; s[r] <= j < s[r + 1]. */
static inline void sfer_flat_exact(const int64_t *s, int64_t r, int64_t j, int64_t j1,
                                   int64_t *out) {
    while (j < j1) {
        int64_t start = s[r], end = s[r + 1] < j1 ? s[r + 1] : j1;
        for (; j < end; j++) {
            out[2 * j] = r;
            out[2 * j + 1] = j - start;
        }
        r++;
    }
}

/* The wide loop: rows from r on while their steps end by j1; returns the first row left
   (its start is where the exact loop goes on).  s[r] is the first entry to write. */
#define SFER_FLAT_WIDE_BODY                                                                  \
    const sfer_i64x4 lane = {0, 0, 0, 1};                                                    \
    int64_t end;                                                                             \
    while ((end = s[r + 1]) + SFER_FLAT_STEP <= j1) {                                        \
        int64_t len = end - s[r], b = 0;                                                     \
        int64_t *p = out + 2 * s[r];                                                         \
        do {                                                                                 \
            sfer_i64x4 v = (sfer_i64x4){r, b, r, b} + lane;                                  \
            const sfer_i64x4 two = {0, 2, 0, 2};                                             \
            int q;                                                                           \
            for (q = 0; q < SFER_FLAT_STEP / 2; q++) {                                       \
                memcpy(p + 4 * q, &v, sizeof v);                                             \
                v += two;                                                                    \
            }                                                                                \
            p += 2 * SFER_FLAT_STEP;                                                         \
            b += SFER_FLAT_STEP;                                                             \
        } while (b < len);                                                                   \
        r++;                                                                                 \
    }                                                                                        \
    return r;

static int64_t sfer_flat_wide_generic(const int64_t *s, int64_t r, int64_t j1, int64_t *out) {
    SFER_FLAT_WIDE_BODY
}

#if defined(__GNUC__) && defined(__x86_64__)
__attribute__((target("avx2")))
static int64_t sfer_flat_wide_avx2(const int64_t *s, int64_t r, int64_t j1, int64_t *out) {
    SFER_FLAT_WIDE_BODY
}
#define SFER_FLAT_WIDE(s, r, j1, out) \
    (__builtin_cpu_supports("avx2") ? sfer_flat_wide_avx2(s, r, j1, out) \
                                    : sfer_flat_wide_generic(s, r, j1, out))
#else
#define SFER_FLAT_WIDE(s, r, j1, out) sfer_flat_wide_generic(s, r, j1, out)
#endif

/* The writer: r is the row of j0 (s[r] <= j0 < s[r + 1]). */
static inline void sfer_flat_rows(const int64_t *s, int64_t r, int64_t j0, int64_t j1,
                                  int64_t *out) {
    int64_t first_end = s[r + 1] < j1 ? s[r + 1] : j1;
    sfer_flat_exact(s, r, j0, first_end, out);   /* the first row: maybe entered midway */
    if (first_end >= j1)
        return;
    r = SFER_FLAT_WIDE(s, r + 1, j1, out);
    sfer_flat_exact(s, r, s[r], j1, out);
}

#endif  /* SFER_RAGGED_H */
