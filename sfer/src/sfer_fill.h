/* The forward op's placement rules (sfer/_fill.pyx), each written once and used by every path
   that needs it: the serial small-call path, the parallel sorted path and the counting path.
   A kernel reads its inputs and writes its outputs through one sfer_fill_ctx. */
#ifndef SFER_FILL_H
#define SFER_FILL_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "sfer_mem.h"

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
    int64_t *first_gap;   /* the checked single pass (one thread): out, the first entry that
                             an empty row moves (written once at most); the entries before it
                             are left in place (rim written, no copy: the caller copies them
                             once it knows that a row is empty).  NULL on the other paths. */
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
   positions i + e, their indices and values as one block each.  lazy (the checked single
   pass's): a run at e = 0 is left in place for now (see first_gap), only its rim written. */
static inline void sfer_fill_run(const sfer_fill_ctx *c, int64_t i0, int64_t i1, int64_t e,
                                 int lazy)
{
    if (i1 <= i0)
        return;
    int64_t *rim = c->rim;
    if (lazy && e == 0) {
        for (int64_t i = i0; i < i1; i++)
            rim[i] = i;
        return;
    }
    memcpy(c->out_ind + (i0 + e) * c->rank, c->ind + i0 * c->rank,
           (size_t)((i1 - i0) * c->rank) * sizeof(int64_t));
    if (c->out_vals)
        memcpy(c->out_vals + (i0 + e) * c->size, c->vals + i0 * c->size,
               (size_t)((i1 - i0) * c->size));
    for (int64_t i = i0; i < i1; i++)
        rim[i] = i + e;
}

/* The first failure among entries 0 <= i < i1, in entry order: SFER_FILL_BAD_ROW with *bad
   the entry whose row is out of range, or SFER_FILL_UNSORTED at a row that decreases.  The
   checked pass of sfer_fill_sorted calls it once it has seen that there is one, so that the
   error is the scan's (the first bad entry), whatever the pass met first. */
static SFER_NOINLINE int64_t sfer_rows_failure(const sfer_fill_ctx *c, int64_t i1, int64_t *bad)
{
    const int64_t *ind = c->ind;
    int64_t prev = -1;
    for (int64_t i = 0; i < i1; i++) {
        int64_t r = ind[i * c->rank];
        if ((uint64_t)r >= (uint64_t)c->dense_rows) {
            *bad = i;
            return SFER_FILL_BAD_ROW;
        }
        if (r < prev)
            return SFER_FILL_UNSORTED;
        prev = r;
    }
    return SFER_FILL_UNSORTED;   /* not reached: the caller saw a failure */
}

/* The sorted placement: entry i goes to i + E(row), E(row) the empty rows below its row.
   Places entries i0 <= i < i1 and the empty rows between the row of entry i0 - 1 (-1 for
   i0 = 0) and the row of entry i1 - 1, writes their empty flags (not those of rows after the
   row of entry i1 - 1), and copies the entries between gaps as runs.  e: the empty rows up to
   the row of entry i0 - 1 (0 for i0 = 0).  Returns e after entry i1 - 1.

   One branch per entry, taken only at a gap or a failure: a row at most one above the one
   before it needs no other work.

   check = 0: the rows are known to be in range and sorted (scanned already); the flags of the
   rows of the entries are zeroed here, as one block.  check = 1 (the single pass: i0 = 0,
   rows not scanned; the caller has zeroed every flag and set c->first_gap): returns
   SFER_FILL_BAD_ROW with *bad the first entry whose row is outside [0, dense_rows) when every
   entry before it is in range and sorted, and SFER_FILL_UNSORTED at the first row that
   decreases (the outputs are then garbage); the entries before the first gap are not copied
   (sfer_fill_run's lazy). */
static inline int64_t sfer_fill_sorted(const sfer_fill_ctx *c, int64_t i0, int64_t i1,
                                       int64_t e, int check, int64_t *bad)
{
    const int64_t *ind = c->ind;
    const int64_t rank = c->rank, dense_rows = c->dense_rows;
    int64_t s = i0, prev = i0 > 0 ? ind[(i0 - 1) * rank] : -1;
    if (i1 <= i0)
        return e;
    if (!check)
        memset(c->empty + prev + 1, 0, (size_t)(ind[(i1 - 1) * rank] - prev));
    else if ((uint64_t)ind[i0 * rank] >= (uint64_t)dense_rows)
        return sfer_rows_failure(c, i0 + 1, bad);
    for (int64_t i = i0; i < i1; i++) {
        int64_t r = ind[i * rank];
        /* unsigned: a gap, or (checked pass) a row that decreases or is far out of range */
        if ((uint64_t)r - (uint64_t)prev > 1) {
            if (check && (r < prev || r >= dense_rows))
                return sfer_rows_failure(c, i + 1, bad);
            if (check && e == 0)
                *c->first_gap = i;
            sfer_fill_run(c, s, i, e, check);   /* the run before the gap goes first */
            sfer_fill_gap(c, prev + 1, r, i + e);
            e += r - prev - 1;
            s = i;
        }
        prev = r;
    }
    /* rows one above the one before were not checked one by one: the last is the highest */
    if (check && prev >= dense_rows)
        return sfer_rows_failure(c, i1, bad);
    sfer_fill_run(c, s, i1, e, check);
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

/* Entries i0 <= i < i1 copied to the same output positions (the single pass's entries before
   the first gap, once a row is known to be empty). */
static inline void sfer_fill_copy(const sfer_fill_ctx *c, int64_t i0, int64_t i1)
{
    if (i1 <= i0)
        return;
    memcpy(c->out_ind + i0 * c->rank, c->ind + i0 * c->rank,
           (size_t)((i1 - i0) * c->rank) * sizeof(int64_t));
    if (c->out_vals)
        memcpy(c->out_vals + i0 * c->size, c->vals + i0 * c->size, (size_t)((i1 - i0) * c->size));
}

/* ---------------------------------------------------------------------------------------------
   The partitioned placement (rows not sorted, large calls).  Rows are cut into buckets of
   1 << shift rows each; a bucket's outputs fit in L2.  Each slice of entries (the scan's
   slices, t * n / nthreads ...) is counted by bucket and marks its rows in a bitmap
   (sfer_part_count); the buckets' output ranges follow (sfer_part_distinct, then
   sfer_part_lay_out); each slice copies its entries, in input order, to the next free slots of
   their buckets' ranges (sfer_part_scatter: one sequential write stream per bucket); each
   bucket then places its own range by a counting sort in cache (sfer_part_place), and a last
   pass over each slice writes reverse_index_map in input order (sfer_part_rim).  Within a
   bucket, the slots hold slice 0's entries, then slice 1's, ..., each in input order: the
   grouping stays stable. */
typedef struct {
    int shift;            /* bucket b holds rows [b << shift, (b + 1) << shift); shift >= 6 */
    int nthreads;         /* the slices of entries */
    int64_t buckets;      /* ceil(dense_rows / (1 << shift)) */
    int64_t words;        /* 64-bit words of one slice's row bitmap: ceil(dense_rows / 64) */
    int64_t *cur;         /* [2, nthreads, buckets], zeroed: each slice's count of entries in
                             each bucket (the first copy), then its next entry slot there: the
                             scatter's copy and the rim pass's copy */
    int64_t *first;       /* [buckets + 1]: each bucket's first entry slot (slots 0..n-1) */
    int64_t *start;       /* [buckets + 1]: each bucket's distinct rows, then its first output
                             position (start[buckets] = N_full) */
    uint64_t *bits;       /* [nthreads, words], zeroed: the rows each slice holds */
    uint32_t *pos;        /* [n]: entry slot g of bucket b -> its output position - start[b] */
    int64_t cap;          /* the most entries in one bucket (sfer_part_lay_out's) */
} sfer_part_ctx;

/* Bytes of one thread's sfer_part_place work space: the bucket's row counters, its entries'
   indices and values. */
static inline int64_t sfer_part_tmp_bytes(const sfer_fill_ctx *c, const sfer_part_ctx *pc)
{
    int64_t b = ((int64_t)4 << pc->shift) + pc->cap * (8 * c->rank + (c->dflt ? c->size : 0));
    return (b + 63) & ~(int64_t)63;
}

/* Slice t: counts its entries by bucket (cur's first copy, row t) and marks their rows (bits,
   row t).  The rows are checked already. */
static SFER_NOINLINE void sfer_part_count(const sfer_fill_ctx *c, const sfer_part_ctx *pc, int t)
{
    const int64_t *ind = c->ind;
    const int64_t rank = c->rank, n = c->n;
    const int shift = pc->shift;
    int64_t *cnt = pc->cur + t * pc->buckets;
    uint64_t *bits = pc->bits + t * pc->words;
    for (int64_t i = t * n / pc->nthreads, i1 = (t + 1) * n / pc->nthreads; i < i1; i++) {
        uint64_t r = (uint64_t)ind[i * rank];
        cnt[r >> shift]++;
        bits[r >> 6] |= (uint64_t)1 << (r & 63);
    }
}

/* The distinct rows of bucket b: the rows marked in any slice's bitmap. */
static inline int64_t sfer_part_distinct(const sfer_part_ctx *pc, int64_t b)
{
    int64_t w0 = (b << pc->shift) >> 6, w1 = ((b + 1) << pc->shift) >> 6, d = 0;
    if (w1 > pc->words)
        w1 = pc->words;
    for (int64_t w = w0; w < w1; w++) {
        uint64_t x = 0;
        for (int t = 0; t < pc->nthreads; t++)
            x |= pc->bits[t * pc->words + w];
        d += __builtin_popcountll(x);
    }
    return d;
}

/* The lay-out, from the counts and each bucket's distinct rows (in start): first, start, cap,
   and each slice's first entry slot in each bucket (both copies of cur).  Returns N_full. */
static int64_t sfer_part_lay_out(const sfer_fill_ctx *c, sfer_part_ctx *pc)
{
    const int64_t k = pc->buckets, tk = pc->nthreads * k;
    int64_t e = 0, p = 0, cap = 0;
    for (int64_t b = 0; b < k; b++) {
        int64_t r0 = b << pc->shift, r1 = (b + 1) << pc->shift, g = e;
        int64_t distinct = pc->start[b];
        if (r1 > c->dense_rows)
            r1 = c->dense_rows;
        for (int64_t x = b; x < tk; x += k) {
            int64_t m = pc->cur[x];
            pc->cur[x] = pc->cur[tk + x] = g;
            g += m;
        }
        pc->first[b] = e;
        pc->start[b] = p;
        p += g - e + (r1 - r0) - distinct;
        cap = g - e > cap ? g - e : cap;
        e = g;
    }
    pc->first[k] = e;
    pc->start[k] = p;
    pc->cap = cap;
    return p;
}

/* Slice t: each entry, in input order, to the next free slot of its bucket's output range
   (cur's first copy, row t); reverse_index_map holds its bucket for now. */
static SFER_NOINLINE void sfer_part_scatter(const sfer_fill_ctx *c, const sfer_part_ctx *pc,
                                            int t)
{
    const sfer_fill_ctx k = *c;
    const int shift = pc->shift;
    const int64_t *first = pc->first, *start = pc->start;
    int64_t *cur = pc->cur + t * pc->buckets;
    for (int64_t i = t * k.n / pc->nthreads, i1 = (t + 1) * k.n / pc->nthreads; i < i1; i++) {
        const int64_t *src = k.ind + i * k.rank;
        int64_t b = (int64_t)((uint64_t)src[0] >> shift);
        int64_t p = cur[b]++ + start[b] - first[b];
        int64_t *dst = k.out_ind + p * k.rank;
        for (int64_t j = 0; j < k.rank; j++)
            dst[j] = src[j];
        if (k.out_vals)
            sfer_copy_item(k.out_vals + p * k.size, k.vals + i * k.size, k.size);
        k.rim[i] = b;
    }
}

/* A write-combining line: the 64 bytes at `line` (64-byte aligned) from buf, those from lo on
   only (lo: where this slice's part of the bucket's range starts): a whole line owned goes
   out with non-temporal stores (no read for ownership), a line shared with the range before
   it with plain ones. */
static inline void sfer_wc_flush(char *line, const char *buf, char *lo)
{
    if (lo <= line) {
        for (int j = 0; j < 64; j += 8)
            sfer_stream8(line + j, buf + j);
    } else {
        memcpy(lo, buf + (lo - line), (size_t)(64 - (lo - line)));
    }
}

/* The bytes [line, end) of an unfinished line, from lo on (the bucket's last line). */
static inline void sfer_wc_tail(char *end, const char *buf, char *lo)
{
    char *line = (char *)((uintptr_t)end & ~(uintptr_t)63);
    if (lo < line)
        lo = line;
    if (end > lo)
        memcpy(lo, buf + (lo - line), (size_t)(end - lo));
}

/* sfer_part_scatter through a 64-byte write-combining line per bucket for the indices and
   one for the values: each bucket's range fills line by line, and whole lines go out with
   non-temporal stores.  For values of 1, 2, 4, 8 or 16 bytes on their own alignment (an item
   never straddles a line), or none; 0 (nothing written) when they are not, or when the
   lines' memory cannot be had. */
static SFER_NOINLINE int sfer_part_scatter_wc(const sfer_fill_ctx *c, const sfer_part_ctx *pc,
                                              int t)
{
    const sfer_fill_ctx k = *c;
    const int shift = pc->shift;
    const int64_t nb = pc->buckets, *first = pc->first, *start = pc->start;
    int64_t *cur = pc->cur + t * nb;
    const int64_t *cur0 = pc->cur + (pc->nthreads + t) * nb;   /* this slice's first slots */
    if (k.out_vals && (64 % k.size != 0 || (uintptr_t)k.out_vals % k.size != 0))
        return 0;
    char *mem = (char *)malloc((size_t)(nb * 128 + 64));
    if (!mem)
        return 0;
    char *bufs = (char *)(((uintptr_t)mem + 63) & ~(uintptr_t)63);
    for (int64_t i = t * k.n / pc->nthreads, i1 = (t + 1) * k.n / pc->nthreads; i < i1; i++) {
        const int64_t *src = k.ind + i * k.rank;
        int64_t b = (int64_t)((uint64_t)src[0] >> shift), d = start[b] - first[b];
        int64_t p = cur[b]++ + d;
        char *buf = bufs + 128 * b, *a = (char *)(k.out_ind + p * k.rank);
        for (int64_t j = 0; j < k.rank; j++) {
            memcpy(buf + ((uintptr_t)a & 63), src + j, 8);
            a += 8;
            if (((uintptr_t)a & 63) == 0)
                sfer_wc_flush(a - 64, buf, (char *)(k.out_ind + (cur0[b] + d) * k.rank));
        }
        if (k.out_vals) {
            a = k.out_vals + p * k.size;
            sfer_copy_item(buf + 64 + ((uintptr_t)a & 63), k.vals + i * k.size, k.size);
            a += k.size;
            if (((uintptr_t)a & 63) == 0)
                sfer_wc_flush(a - 64, buf + 64, k.out_vals + (cur0[b] + d) * k.size);
        }
        k.rim[i] = b;
    }
    for (int64_t b = 0; b < nb; b++) {
        int64_t d = start[b] - first[b];
        if (cur[b] == cur0[b])
            continue;
        sfer_wc_tail((char *)(k.out_ind + (cur[b] + d) * k.rank), bufs + 128 * b,
                     (char *)(k.out_ind + (cur0[b] + d) * k.rank));
        if (k.out_vals)
            sfer_wc_tail(k.out_vals + (cur[b] + d) * k.size, bufs + 128 * b + 64,
                         k.out_vals + (cur0[b] + d) * k.size);
    }
    sfer_stream_fence();
    free(mem);
    return 1;
}

/* Bucket b: its entries (in its output range since sfer_part_scatter) go to tmp, then back
   by a stable counting sort on their rows, with each empty row's default entry and the
   bucket's empty flags; pos gets each slot's output position.  tmp: sfer_part_tmp_bytes. */
static SFER_NOINLINE void sfer_part_place(const sfer_fill_ctx *c, const sfer_part_ctx *pc,
                                          int64_t b, char *tmp)
{
    const sfer_fill_ctx k = *c;
    const int64_t m = pc->first[b + 1] - pc->first[b], p0 = pc->start[b], r0 = b << pc->shift;
    int64_t rows = k.dense_rows - r0 < ((int64_t)1 << pc->shift)
                   ? k.dense_rows - r0 : ((int64_t)1 << pc->shift);
    uint32_t *cnt = (uint32_t *)tmp, *pos = pc->pos + pc->first[b], off = 0;
    int64_t *t_ind = (int64_t *)(tmp + ((int64_t)4 << pc->shift));
    char *t_vals = (char *)(t_ind + m * k.rank);
    memcpy(t_ind, k.out_ind + p0 * k.rank, (size_t)(m * k.rank) * sizeof(int64_t));
    if (k.out_vals)
        memcpy(t_vals, k.out_vals + p0 * k.size, (size_t)(m * k.size));
    memset(cnt, 0, (size_t)rows * sizeof(uint32_t));
    for (int64_t j = 0; j < m; j++)
        cnt[t_ind[j * k.rank] - r0]++;
    for (int64_t q = 0; q < rows; q++) {
        uint32_t x = cnt[q];
        cnt[q] = off;
        k.empty[r0 + q] = x == 0;
        if (x == 0)
            sfer_fill_default(&k, r0 + q, p0 + off);
        off += x ? x : 1;
    }
    for (int64_t j = 0; j < m; j++) {
        const int64_t *src = t_ind + j * k.rank;
        uint32_t o = cnt[src[0] - r0]++;
        int64_t *dst = k.out_ind + (p0 + o) * k.rank;
        for (int64_t x = 0; x < k.rank; x++)
            dst[x] = src[x];
        if (k.out_vals)
            sfer_copy_item(k.out_vals + (p0 + o) * k.size, t_vals + j * k.size, k.size);
        pos[j] = o;
    }
}

/* Slice t: reverse_index_map in input order, each entry's output position read from pos at
   the slot sfer_part_scatter gave it (cur's second copy, row t). */
static SFER_NOINLINE void sfer_part_rim(const sfer_fill_ctx *c, const sfer_part_ctx *pc, int t)
{
    int64_t *rim = c->rim;
    const int64_t *start = pc->start;
    const uint32_t *pos = pc->pos;
    int64_t *cur = pc->cur + (pc->nthreads + t) * pc->buckets;
    for (int64_t i = t * c->n / pc->nthreads, i1 = (t + 1) * c->n / pc->nthreads; i < i1; i++) {
        int64_t b = rim[i];
        rim[i] = start[b] + pos[cur[b]++];
    }
}

#endif  /* SFER_FILL_H */
