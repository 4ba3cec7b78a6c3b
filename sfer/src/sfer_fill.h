/* The forward op's one-pass kernel for small calls (sfer/_fill.pyx, place_small): written in C
   so that its pointers can be declared restrict (the outputs never alias the inputs) and the
   row copy specialised by rank, which keeps the per-entry loop short. */
#ifndef SFER_FILL_H
#define SFER_FILL_H

#include <stdint.h>
#include <string.h>

/* The default entry [row, 0, ..., 0] (and its value, unless out_vals is NULL) at position p. */
static inline void sfer_fill_default(int64_t row, int64_t p, int64_t rank, const char *dflt,
                                     int64_t size, int64_t *out_ind, char *out_vals)
{
    out_ind[p * rank] = row;
    for (int64_t k = 1; k < rank; k++)
        out_ind[p * rank + k] = 0;
    if (out_vals)
        memcpy(out_vals + p * size, dflt, (size_t)size);
}

/* Rows sorted so far: entries placed at i + (empty rows below their row), the empty rows'
   defaults between them.  Returns N_full; -1 at the first row that decreases (nothing is
   valid then); -2 with *bad the first entry whose row is outside [0, dense_rows).  out_ind
   has room for N + dense_rows entries; values are left to the caller (rim says where). */
static inline int64_t sfer_place_sorted_rows(
    const int64_t *restrict ind, int64_t n, int64_t rank, int64_t dense_rows,
    const char *dflt, int64_t size, int64_t *restrict out_ind, char *restrict out_vals,
    int64_t *restrict rim, uint8_t *restrict empty, int64_t *bad)
{
    int64_t e = 0, prev = -1;
    for (int64_t i = 0; i < n; i++) {
        int64_t r = ind[i * rank];
        if ((uint64_t)r >= (uint64_t)dense_rows) { *bad = i; return -2; }
        if (r < prev) return -1;
        empty[r] = 0;
        for (int64_t q = prev + 1; q < r; q++, e++) {   /* the empty rows before r */
            sfer_fill_default(q, i + e, rank, dflt, size, out_ind, out_vals);
            empty[q] = 1;
        }
        prev = r;
        int64_t p = i + e;
        rim[i] = p;
        if (rank == 2) {
            out_ind[2 * p] = r;
            out_ind[2 * p + 1] = ind[2 * i + 1];
        } else {
            for (int64_t k = 0; k < rank; k++)
                out_ind[p * rank + k] = ind[i * rank + k];
        }
    }
    for (int64_t q = prev + 1; q < dense_rows; q++, e++) {   /* after the last row */
        sfer_fill_default(q, n + e, rank, dflt, size, out_ind, out_vals);
        empty[q] = 1;
    }
    return n + e;
}

#endif  /* SFER_FILL_H */
