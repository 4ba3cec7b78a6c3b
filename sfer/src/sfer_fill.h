/* The forward op's placement rules (sfer/_fill.pyx), each written once and used by every path
   that needs it: the serial small-call path, the parallel sorted path and the counting path.
   A kernel reads its inputs and writes its outputs through one sfer_fill_ctx. */
#ifndef SFER_FILL_H
#define SFER_FILL_H

#include <stdint.h>
#include <string.h>

#if defined(__GNUC__)
#define SFER_NOINLINE __attribute__((noinline))
#elif defined(_MSC_VER)
#define SFER_NOINLINE __declspec(noinline)
#else
#define SFER_NOINLINE
#endif

/* One call's arrays and sizes.  The inputs are set before any kernel runs; the outputs once
   they are allocated (out_ind and out_vals after the lay-out, when N_full is known). */
typedef struct {
    const int64_t *ind;   /* in: [n, rank] int64, C order; column 0 is the row */
    const char *vals;     /* in: n items of `size` bytes; NULL when NumPy places the values
                             (object and StringDType) */
    const char *dflt;     /* in: the default value's `size` bytes; NULL likewise */
    int64_t n;            /* entries */
    int64_t rank;         /* columns of ind */
    int64_t dense_rows;   /* dense_shape[0] */
    int64_t size;         /* bytes per value item */
    int64_t *out_ind;     /* out: [N_full, rank] */
    char *out_vals;       /* out: N_full items; NULL when NumPy places the values */
    int64_t *rim;         /* out: reverse_index_map, [n] */
    uint8_t *empty;       /* out: empty_row_indicator, [dense_rows] */
} sfer_fill_ctx;

/* sfer_fill_sorted's failures (with check set); a success is an e >= 0. */
enum { SFER_FILL_UNSORTED = -1, SFER_FILL_BAD_ROW = -2 };

/* dst: out.  One item of `size` bytes; the common sizes as fixed-size copies. */
static inline void sfer_copy_item(char *dst, const char *src, int64_t size)
{
    switch (size) {
    case 8: memcpy(dst, src, 8); break;
    case 4: memcpy(dst, src, 4); break;
    case 2: memcpy(dst, src, 2); break;
    case 1: dst[0] = src[0]; break;
    case 16: memcpy(dst, src, 16); break;
    default: memcpy(dst, src, (size_t)size);
    }
}

/* The default entry [row, 0, ..., 0] (and its value, unless out_vals is NULL) at output
   position p.  The caller flags the row empty. */
static inline void sfer_fill_default(const sfer_fill_ctx *c, int64_t row, int64_t p)
{
    const int64_t rank = c->rank, size = c->size;
    char *out_vals = c->out_vals;
    int64_t *out_ind = c->out_ind + p * rank;
    int64_t x = row;   /* row, then zeros (a loop of zeros alone becomes a memset call) */
    for (int64_t k = 0; k < rank; k++, x = 0)
        out_ind[k] = x;
    if (out_vals)
        sfer_copy_item(out_vals + p * size, c->dflt, size);
}

/* Rows q0 <= q < q1, all empty: their default entries at output positions p, p + 1, ...,
   and their empty flags. */
static inline void sfer_fill_gap(const sfer_fill_ctx *c, int64_t q0, int64_t q1, int64_t p)
{
    for (int64_t q = q0; q < q1; q++) {
        sfer_fill_default(c, q, p + q - q0);
        c->empty[q] = 1;
    }
}

/* Rows q0 <= q < q1 that are flagged empty: their default entries at output positions
   starts[q] (the counting path's). */
static inline void sfer_fill_defaults(const sfer_fill_ctx *c, int64_t q0, int64_t q1,
                                      const int64_t *starts)
{
    const sfer_fill_ctx k = *c;   /* a copy no store can alias: its fields stay in registers */
    for (int64_t q = q0; q < q1; q++)
        if (k.empty[q])
            sfer_fill_default(&k, q, starts[q]);
}

/* Entries i0 <= i < i1, all of one run (no empty row between their rows): to output
   positions i + e, their indices and values as one block each. */
static inline void sfer_fill_run(const sfer_fill_ctx *c, int64_t i0, int64_t i1, int64_t e)
{
    if (i1 <= i0)
        return;
    int64_t *rim = c->rim;
    memcpy(c->out_ind + (i0 + e) * c->rank, c->ind + i0 * c->rank,
           (size_t)((i1 - i0) * c->rank) * sizeof(int64_t));
    if (c->out_vals)
        memcpy(c->out_vals + (i0 + e) * c->size, c->vals + i0 * c->size,
               (size_t)((i1 - i0) * c->size));
    for (int64_t i = i0; i < i1; i++)
        rim[i] = i + e;
}

/* The sorted placement: entry i goes to i + E(row), E(row) the empty rows below its row.
   Places entries i0 <= i < i1 and the empty rows between the row of entry i0 - 1 (-1 for
   i0 = 0) and the row of entry i1 - 1, writes their empty flags (not those of rows after the
   row of entry i1 - 1), and copies the entries between gaps as runs.  e: the empty rows up to
   the row of entry i0 - 1 (0 for i0 = 0).  Returns e after entry i1 - 1.

   check = 0: the rows are known to be in range and sorted (scanned already).  check = 1 (a
   single pass over rows not scanned yet): returns SFER_FILL_BAD_ROW with *bad the first entry
   whose row is outside [0, dense_rows) when every entry before it is in range and sorted, and
   SFER_FILL_UNSORTED at the first row that decreases (the outputs are then garbage). */
static inline int64_t sfer_fill_sorted(const sfer_fill_ctx *c, int64_t i0, int64_t i1,
                                       int64_t e, int check, int64_t *bad)
{
    const int64_t *ind = c->ind;
    const int64_t rank = c->rank, dense_rows = c->dense_rows;
    uint8_t *empty = c->empty;
    int64_t s = i0, prev = i0 > 0 ? ind[(i0 - 1) * rank] : -1;
    for (int64_t i = i0; i < i1; i++) {
        int64_t r = ind[i * rank];
        if (check) {
            if ((uint64_t)r >= (uint64_t)dense_rows) {
                *bad = i;
                return SFER_FILL_BAD_ROW;
            }
            if (r < prev)
                return SFER_FILL_UNSORTED;
        }
        empty[r] = 0;   /* every entry (no branch on "a new row": it would be mispredicted) */
        if (r > prev + 1) {   /* rows prev+1 .. r-1 are empty: the run before them goes first */
            sfer_fill_run(c, s, i, e);
            sfer_fill_gap(c, prev + 1, r, i + e);
            e += r - prev - 1;
            s = i;
        }
        prev = r;
    }
    sfer_fill_run(c, s, i1, e);
    return e;
}

/* sfer_fill_sorted on a slice whose rows are scanned already (check = 0): the sorted path's,
   one call per thread.  Not inlined into the parallel region, so that its loop has the
   registers to itself. */
static SFER_NOINLINE int64_t sfer_fill_sorted_slice(const sfer_fill_ctx *c, int64_t i0,
                                                   int64_t i1, int64_t e)
{
    return sfer_fill_sorted(c, i0, i1, e, 0, NULL);
}

#endif  /* SFER_FILL_H */
