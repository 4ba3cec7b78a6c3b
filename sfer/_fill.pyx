# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""The forward op, SparseFillEmptyRows: its kernels and entry point (private: call
``sfer.sparse_fill_empty_rows``).

Every call first scans column 0 of ``indices`` (in parallel, each thread a contiguous slice of
entries): it checks the rows, learns whether they never decrease, and counts the distinct rows.
Then one of three paths places the entries; none depends on the thread count:

* ``"fast"``: rows sorted and no row empty.  The outputs are the (converted) inputs, handed
  back as read-only views; only ``reverse_index_map`` (``0..N-1``) and
  ``empty_row_indicator`` (all False) are written.
* ``"sorted"``: rows sorted, some rows empty.  Entry ``i`` goes to ``i + E(row)``, ``E(row)``
  the number of empty rows below its row, so each thread copies its slice as runs between
  empty rows (``memcpy``), writing the default entries of the gaps it meets.  No counters.
* ``"counting"``: rows not sorted.  A stable counting sort: each thread counts the rows of its
  slice, the counts become, row by row, each thread's first output position in that row, and
  each thread places its entries in input order.  Extra memory: ``threads x dense_rows``
  int64 counters (fewer threads count when the counters would outweigh the outputs).

The input rules (conversion, dtypes, shapes in TensorFlow's order, ``default_value``) are
``sfer._fill_inputs``'s, shared with ``sfer.reference``; exact ndarrays in the common layouts
and dtypes skip them (``fast_fill``), having nothing to convert and nothing to reject but rows.
"""

cimport numpy as cnp
from cython.parallel cimport prange
from libc.math cimport isfinite
from libc.stdint cimport int8_t, int16_t, int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.stdlib cimport free, malloc
from libc.string cimport memcpy, memset

from sfer._common cimport sfer_atomic_load, sfer_atomic_store, sfer_prefetch_w
from sfer._runtime cimport (SERIAL_BELOW, counting_threads, enter_call, leave_call,
                            plan_threads, thread_request)

import numpy as np

from sfer import _errors
from sfer._fill_inputs import fill_inputs as _fill_inputs
from sfer._result import FillResult

cnp.import_array()

cdef extern from "numpy/arrayobject.h":
    enum: NPY_HALF
    # A view of the whole array with its own dtype and type (NULL, NULL).
    object PyArray_View(cnp.ndarray, void *, void *)

cdef object _tuple_new = tuple.__new__

cdef enum:
    AHEAD = 16          # entries between a prefetch and its use (unsorted rows)

cdef enum:
    PATH_FAST = 1
    PATH_SORTED = 2
    PATH_COUNTING = 3

cdef int _last_path_code = 0   # the path of the latest call that reached one (a test hook)
cdef bint _wide_counters = False    # int64 counters even where int32 fit (a test hook)


ctypedef fused cnt_t:     # the counting path's counters: int32 whenever N + dense_rows fits,
    int32_t                 # which halves the memory they hit at random
    int64_t


ctypedef struct slice_scan:
    int64_t bad         # out: the first entry of the slice whose row is out of range, or -1
    int64_t new_rows    # out: entries i of the slice with i == 0 or row(i) != row(i - 1)
    int64_t down        # out: entries i of the slice with row(i) < row(i - 1)


# ---------------------------------------------------------------------------------------------
# Kernels (no GIL).  ind: int64 [n, rank], C order; vals: n items of `size` bytes (NULL when
# NumPy places the values: object and StringDType); dflt: the default value's `size` bytes.

cdef inline void copy_item(char *dst, const char *src, Py_ssize_t size) noexcept nogil:
    # dst: out.  One item of `size` bytes; the common sizes as fixed-size copies.
    if size == 8:
        memcpy(dst, src, 8)
    elif size == 4:
        memcpy(dst, src, 4)
    elif size == 2:
        memcpy(dst, src, 2)
    elif size == 1:
        dst[0] = src[0]
    elif size == 16:
        memcpy(dst, src, 16)
    else:
        memcpy(dst, src, size)


cdef inline void put_default(int64_t row, int64_t p, int64_t rank, const char *dflt,
                             Py_ssize_t size, int64_t *out_ind, char *out_vals) noexcept nogil:
    # out_ind, out_vals: out.  The default entry [row, 0, ..., 0] at output position p.
    cdef int64_t k
    out_ind[p * rank] = row
    for k in range(1, rank):
        out_ind[p * rank + k] = 0
    if out_vals != NULL:
        copy_item(out_vals + p * size, dflt, size)


cdef void scan_slice(const int64_t *ind, int64_t rank, int64_t dense_rows, int64_t i0,
                     int64_t i1, slice_scan *s) noexcept nogil:
    # ind: in; s: out.  Scans the rows of entries i0 <= i < i1, each against the entry before
    # it (the one before i0 too), without a branch per entry; the first bad entry, if any, is
    # then found by a second look at the slice.
    cdef int64_t i, r, prev = ind[(i0 - 1) * rank] if i0 > 0 else -1
    cdef int64_t new_rows = 0, down = 0
    cdef uint64_t bad = 0
    for i in range(i0, i1):
        r = ind[i * rank]
        bad |= <uint64_t>r >= <uint64_t>dense_rows
        new_rows += r != prev
        down += r < prev
        prev = r
    s.new_rows = new_rows
    s.down = down
    s.bad = -1
    if bad:
        for i in range(i0, i1):
            if <uint64_t>ind[i * rank] >= <uint64_t>dense_rows:
                s.bad = i
                break


cdef void place_sorted(const int64_t *ind, int64_t rank, const char *vals, Py_ssize_t size,
                       const char *dflt, int64_t i0, int64_t i1, int64_t e, int64_t *out_ind,
                       char *out_vals, int64_t *rim, uint8_t *empty) noexcept nogil:
    # Sorted rows: places entries i0 <= i < i1 and the empty rows between the row of entry
    # i0 - 1 (-1 for none) and the row of entry i1 - 1, and writes their empty flags.  e: in,
    # the empty rows below the row of entry i0 - 1 (plus one).  Entry i goes to i + e, e
    # growing at each gap; the entries between gaps are copied as runs.
    cdef int64_t i, q, k, r, s = i0, prev = ind[(i0 - 1) * rank] if i0 > 0 else -1
    for i in range(i0, i1):
        r = ind[i * rank]
        empty[r] = 0       # every entry (no branch on "a new row": it would be mispredicted)
        if r > prev + 1:   # rows prev+1 .. r-1 are empty: the run before them goes first
            copy_run(ind, rank, vals, size, s, i, e, out_ind, out_vals, rim)
            for q in range(prev + 1, r):
                put_default(q, i + e, rank, dflt, size, out_ind, out_vals)
                empty[q] = 1
                e += 1
            s = i
        prev = r
    copy_run(ind, rank, vals, size, s, i1, e, out_ind, out_vals, rim)


cdef inline void copy_run(const int64_t *ind, int64_t rank, const char *vals, Py_ssize_t size,
                          int64_t i0, int64_t i1, int64_t e, int64_t *out_ind, char *out_vals,
                          int64_t *rim) noexcept nogil:
    # out_ind, out_vals, rim: out.  Entries i0 <= i < i1 to output positions i + e.
    cdef int64_t i
    if i1 <= i0:
        return
    memcpy(out_ind + (i0 + e) * rank, ind + i0 * rank, <size_t>((i1 - i0) * rank * 8))
    if out_vals != NULL:
        memcpy(out_vals + (i0 + e) * size, vals + i0 * size, <size_t>((i1 - i0) * size))
    for i in range(i0, i1):
        rim[i] = i + e


cdef void scatter_values(const char *vals, Py_ssize_t size, const int64_t *rim, int64_t n,
                         char *out_vals) noexcept nogil:
    # out_vals: out.  out_vals[rim[i]] = vals[i] for i < n, one loop per item size (no
    # dispatch per item).
    cdef int64_t i
    if size == 4:
        for i in range(n):
            memcpy(out_vals + rim[i] * 4, vals + i * 4, 4)
    elif size == 8:
        for i in range(n):
            memcpy(out_vals + rim[i] * 8, vals + i * 8, 8)
    elif size == 2:
        for i in range(n):
            memcpy(out_vals + rim[i] * 2, vals + i * 2, 2)
    elif size == 1:
        for i in range(n):
            out_vals[rim[i]] = vals[i]
    elif size == 16:
        for i in range(n):
            memcpy(out_vals + rim[i] * 16, vals + i * 16, 16)
    else:
        for i in range(n):
            memcpy(out_vals + rim[i] * size, vals + i * size, <size_t>size)


cdef extern from "src/sfer_fill.h":
    int64_t sfer_place_sorted_rows(const int64_t *ind, int64_t n, int64_t rank,
                                   int64_t dense_rows, const char *dflt, int64_t size,
                                   int64_t *out_ind, char *out_vals, int64_t *rim,
                                   uint8_t *empty, int64_t *bad) noexcept nogil


cdef int64_t place_small(const int64_t *ind, int64_t n, int64_t rank, int64_t dense_rows,
                         const char *vals, Py_ssize_t size, const char *dflt, int64_t *out_ind,
                         char *out_vals, int64_t *rim, uint8_t *empty,
                         int64_t *bad) noexcept nogil:
    # A small call, on one thread: scan and place in one pass, as long as the rows never
    # decrease (out_ind and out_vals have room for N + dense_rows entries: N_full is known only
    # at the end); the values follow in a second loop.  Returns N_full; or -1 when the rows
    # turn out unsorted (the caller then takes the scan and the counting path, which finds
    # any bad row); or -2 with bad[0] the first entry whose row is out of range (every entry
    # before it was in range and sorted).
    cdef int64_t n_full = sfer_place_sorted_rows(ind, n, rank, dense_rows, dflt, size, out_ind,
                                                 out_vals, rim, empty, bad)
    if n_full >= 0 and out_vals != NULL:
        scatter_values(vals, size, rim, n, out_vals)
    return n_full


cdef void count_rows(const int64_t *ind, int64_t rank, int64_t i0, int64_t i1,
                     cnt_t *counts) noexcept nogil:
    # counts: in/out (zeroed).  Counts the rows of entries i0 <= i < i1 (checked already),
    # each counter prefetched AHEAD entries before it is needed: unsorted rows hit the
    # counters at random, and the prefetches keep many of those misses in flight.
    cdef int64_t i
    for i in range(i0, i1 - AHEAD):
        sfer_prefetch_w(&counts[ind[(i + AHEAD) * rank]])
        counts[ind[i * rank]] += 1
    for i in range(max(i0, i1 - AHEAD), i1):
        counts[ind[i * rank]] += 1


cdef void place_counted(const int64_t *ind, int64_t rank, const char *vals, Py_ssize_t size,
                        int64_t i0, int64_t i1, cnt_t *next_pos, int64_t *out_ind,
                        char *out_vals, int64_t *rim) noexcept nogil:
    # next_pos: in/out (this thread's next output position in each row); out_ind, out_vals,
    # rim: out.  Places entries i0 <= i < i1 in input order.  Two prefetch stages: the row's
    # next_pos 2 * AHEAD entries ahead, then, AHEAD entries ahead, the output slots it points
    # to (a hint only: a row met again in between moves them by a slot or two).
    cdef int64_t i, p, k, r, q
    for i in range(i0, i1):
        if i + 2 * AHEAD < i1:
            sfer_prefetch_w(&next_pos[ind[(i + 2 * AHEAD) * rank]])
        if i + AHEAD < i1:
            q = next_pos[ind[(i + AHEAD) * rank]]
            sfer_prefetch_w(&out_ind[q * rank])
            if out_vals != NULL:
                sfer_prefetch_w(out_vals + q * size)
        r = ind[i * rank]
        p = next_pos[r]
        next_pos[r] = <cnt_t>(p + 1)
        rim[i] = p
        for k in range(rank):
            out_ind[p * rank + k] = ind[i * rank + k]
        if out_vals != NULL:
            copy_item(out_vals + p * size, vals + i * size, size)


cdef int64_t count_and_lay_out(const int64_t *ind, int64_t n, int64_t rank, int64_t dense_rows,
                               int nthreads, cnt_t *counts, int64_t *starts,
                               uint8_t *empty) noexcept nogil:
    # counts [nthreads, dense_rows] (zeroed): out, each thread's first output position in each
    # row.  starts, empty: out.  Each thread counts the rows of its slice; the counts become,
    # row by row, the threads' first positions.  Returns N_full.
    cdef int64_t r, c, p, run = 0
    cdef int64_t t
    cdef int t32
    for t32 in prange(nthreads, schedule='static', num_threads=nthreads):
        count_rows(ind, rank, t32 * n // nthreads, (t32 + 1) * n // nthreads,
                   &counts[t32 * dense_rows])
    for r in prange(dense_rows, schedule='static', num_threads=nthreads):
        c = 0
        for t in range(nthreads):
            c = c + counts[t * dense_rows + r]
        starts[r] = c           # the row's total, for now
        empty[r] = c == 0
    for r in range(dense_rows):
        c = starts[r]
        starts[r] = run
        run += c if c > 0 else 1
    for r in prange(dense_rows, schedule='static', num_threads=nthreads):
        p = starts[r]
        for t in range(nthreads):
            c = counts[t * dense_rows + r]
            counts[t * dense_rows + r] = <cnt_t>p
            p = p + c
    return run


cdef void place_all_counted(const int64_t *ind, int64_t n, int64_t rank, const char *vals,
                            Py_ssize_t size, int64_t dense_rows, int nthreads, cnt_t *counts,
                            int64_t *out_ind, char *out_vals, int64_t *rim) noexcept nogil:
    # counts: in/out, from count_and_lay_out.  Each thread places its slice.
    cdef int t
    for t in prange(nthreads, schedule='static', num_threads=nthreads):
        place_counted(ind, rank, vals, size, t * n // nthreads, (t + 1) * n // nthreads,
                      &counts[t * dense_rows], out_ind, out_vals, rim)


# ---------------------------------------------------------------------------------------------
# The call, on inputs the kernels can read as they are

cdef inline cnp.ndarray new_like(cnp.npy_intp n, cnp.ndarray like):
    # A new uninitialised vector of n items of like's dtype (native byte order).
    cdef int t = cnp.PyArray_TYPE(like)
    if t < cnp.NPY_OBJECT or t == NPY_HALF:
        return cnp.PyArray_EMPTY(1, &n, t, 0)
    return np.empty(n, dtype=like.dtype)


cdef inline object read_only(cnp.ndarray a):
    # A read-only view of a: the fast path hands the inputs back, and no caller may write
    # through them into its inputs.
    cdef cnp.ndarray v = <cnp.ndarray>PyArray_View(a, NULL, NULL)
    cnp.PyArray_CLEARFLAGS(v, cnp.NPY_ARRAY_WRITEABLE)
    return v


cdef object check_memory(object dense_rows, int64_t rank, Py_ssize_t size):
    # MemoryError, before any allocation, when the outputs of dense_rows rows (one entry each at
    # least, and a flag) cannot exist in this address space: TensorFlow's crashers, such as a
    # dense_shape of 2**62 rows.  dense_rows: a Python int (a uint64 may exceed int64).
    cdef object need = dense_rows * (1 + 8 * rank + size)
    if need > 0x7fffffffffffffff:
        raise MemoryError(_errors.rows_too_many(dense_rows, need, 1 + 8 * rank + size))


cdef object run_small(cnp.ndarray ind, cnp.ndarray vals, int64_t dense_rows, const char *dflt,
                      object default, object given):
    # A small call (on one thread): place_small's single pass; the result, or None when the
    # rows are not sorted (the caller goes on as for a large call).  Arguments as run_fill's.
    cdef int64_t n = cnp.PyArray_DIM(ind, 0)
    cdef int64_t rank = cnp.PyArray_DIM(ind, 1)
    cdef Py_ssize_t size = cnp.PyArray_ITEMSIZE(vals)
    cdef const int64_t *ip = <const int64_t *>cnp.PyArray_DATA(ind)
    cdef cnp.npy_intp dims[2]
    cdef cnp.npy_intp rows_ = dense_rows
    cdef cnp.PyArray_Dims new_shape
    cdef int64_t n_full, bad = -1
    cdef cnp.ndarray out_ind, out_vals, empty, rim
    cdef int64_t i
    for i in range(1, min(n, 16)):   # unsorted rows show early, as a rule: no outputs wasted
        if ip[i * rank] < ip[(i - 1) * rank]:
            return None
    dims[0] = n + dense_rows
    dims[1] = rank
    out_ind = cnp.PyArray_EMPTY(2, dims, cnp.NPY_INT64, 0)
    out_vals = new_like(dims[0], vals)
    empty = cnp.PyArray_EMPTY(1, &rows_, cnp.NPY_BOOL, 0)
    rim = cnp.PyArray_EMPTY(1, <cnp.npy_intp *>&n, cnp.NPY_INT64, 0)
    with nogil:
        n_full = place_small(ip, n, rank, dense_rows,
                             <const char *>cnp.PyArray_DATA(vals) if dflt != NULL else NULL,
                             size, dflt, <int64_t *>cnp.PyArray_DATA(out_ind),
                             <char *>cnp.PyArray_DATA(out_vals) if dflt != NULL else NULL,
                             <int64_t *>cnp.PyArray_DATA(rim),
                             <uint8_t *>cnp.PyArray_DATA(empty), &bad)
    if n_full == -1:
        return None
    if n_full == -2:
        raise IndexError(_errors.row_out_of_range(
            bad, ip[bad * rank] if given is None else int(given[bad, 0]), dense_rows))
    if n_full == n:   # the fast path after all: rim is 0..N-1, no row empty
        sfer_atomic_store(&_last_path_code, PATH_FAST)
        return _tuple_new(FillResult, (read_only(ind), read_only(vals), empty, rim))
    sfer_atomic_store(&_last_path_code, PATH_SORTED)
    dims[0] = n_full
    new_shape.ptr = dims
    new_shape.len = 2
    cnp.PyArray_Resize(out_ind, &new_shape, 0, cnp.NPY_CORDER)
    new_shape.len = 1
    cnp.PyArray_Resize(out_vals, &new_shape, 0, cnp.NPY_CORDER)
    if dflt == NULL:   # references (objects, StringDType): placed by NumPy, under the GIL
        out_vals[...] = default
        out_vals[rim] = vals
    return _tuple_new(FillResult, (out_ind, out_vals, empty, rim))


cdef object run_fill(cnp.ndarray ind, cnp.ndarray vals, int64_t dense_rows, const char *dflt,
                     object default, int requested, object given):
    # ind: int64 [n, rank], C-contiguous and aligned; vals: [n] of the output dtype, likewise;
    # dflt: the default's bytes, or NULL when NumPy places the values (object, StringDType;
    # `default` is then a 0-d array of the output dtype); requested: from thread_request;
    # given: the indices before their conversion to int64 (for the error message), or None.
    cdef int64_t n = cnp.PyArray_DIM(ind, 0)
    cdef int64_t rank = cnp.PyArray_DIM(ind, 1)
    cdef Py_ssize_t size = cnp.PyArray_ITEMSIZE(vals)
    cdef const int64_t *ip = <const int64_t *>cnp.PyArray_DATA(ind)
    cdef const char *vp = <const char *>cnp.PyArray_DATA(vals) if dflt != NULL else NULL
    cdef int nthreads, t, tc
    cdef int64_t i0, bad = -1, new_rows = 0, down = 0, n_full, e, last, q, r0
    cdef cnp.npy_intp shape2[2]
    cdef cnp.npy_intp rows_ = dense_rows
    cdef cnp.ndarray out_ind, out_vals, empty, rim, counts, starts
    cdef int64_t *rp
    cdef int64_t *oip
    cdef char *ovp
    cdef uint8_t *ep
    cdef void *cp
    cdef int64_t *sp
    cdef bint narrow
    cdef slice_scan *scans
    # the work (saturated: dense_rows may be as large as 2**63 - 1)
    cdef int64_t work = (n + dense_rows if dense_rows <= 0x7fffffffffffffff - n
                         else 0x7fffffffffffffff)
    nthreads = plan_threads(requested, work)
    scans = <slice_scan *>malloc(nthreads * sizeof(slice_scan))
    if scans == NULL:
        raise MemoryError(_errors.no_work_space())
    with nogil:
        nthreads = enter_call(nthreads)
    try:
        if nthreads == 1 and work < SERIAL_BELOW and dflt != NULL:
            result = run_small(ind, vals, dense_rows, dflt, default, given)
            if result is not None:
                return result
        # 1. scan: the rows checked, sorted or not, how many distinct
        with nogil:
            for t in prange(nthreads, schedule='static', num_threads=nthreads):
                scan_slice(ip, rank, dense_rows, t * n // nthreads, (t + 1) * n // nthreads,
                           &scans[t])
            for t in range(nthreads):
                if scans[t].bad >= 0 and bad < 0:
                    bad = scans[t].bad
                new_rows += scans[t].new_rows
                down += scans[t].down
        if bad >= 0:
            raise IndexError(_errors.row_out_of_range(
                bad, ip[bad * rank] if given is None else int(given[bad, 0]), dense_rows))
        check_memory(dense_rows, rank, size)
        if down == 0 and new_rows == dense_rows:
            # 2a. fast: the outputs are the inputs
            sfer_atomic_store(&_last_path_code, PATH_FAST)
            empty = cnp.PyArray_ZEROS(1, &rows_, cnp.NPY_BOOL, 0)
            rim = cnp.PyArray_EMPTY(1, <cnp.npy_intp *>&n, cnp.NPY_INT64, 0)
            rp = <int64_t *>cnp.PyArray_DATA(rim)
            with nogil:
                for i0 in prange(n, schedule='static', num_threads=nthreads):
                    rp[i0] = i0
            return _tuple_new(FillResult, (read_only(ind), read_only(vals), empty, rim))

        n_full = n + dense_rows - new_rows if down == 0 else 0
        empty = cnp.PyArray_EMPTY(1, &rows_, cnp.NPY_BOOL, 0)
        ep = <uint8_t *>cnp.PyArray_DATA(empty)
        rim = cnp.PyArray_EMPTY(1, <cnp.npy_intp *>&n, cnp.NPY_INT64, 0)
        rp = <int64_t *>cnp.PyArray_DATA(rim)
        if down == 0:
            # 2b. sorted, with empty rows: runs between the gaps
            sfer_atomic_store(&_last_path_code, PATH_SORTED)
            shape2[0] = n_full
            shape2[1] = rank
            out_ind = cnp.PyArray_EMPTY(2, shape2, cnp.NPY_INT64, 0)
            out_vals = new_like(n_full, vals)
            oip = <int64_t *>cnp.PyArray_DATA(out_ind)
            ovp = <char *>cnp.PyArray_DATA(out_vals) if dflt != NULL else NULL
            with nogil:
                # each thread's e: the empty rows up to the row before its slice,
                # (that row + 1) minus the distinct rows before the slice
                new_rows = 0
                for t in range(nthreads):
                    i0 = t * n // nthreads
                    e = (ip[(i0 - 1) * rank] + 1 if i0 > 0 else 0) - new_rows
                    new_rows += scans[t].new_rows
                    scans[t].new_rows = e           # reused: thread t's starting e
                for t in prange(nthreads, schedule='static', num_threads=nthreads):
                    place_sorted(ip, rank, vp, size, dflt, t * n // nthreads,
                                 (t + 1) * n // nthreads, scans[t].new_rows, oip, ovp, rp, ep)
                # the empty rows after the last entry's row
                last = ip[(n - 1) * rank] if n > 0 else -1
                e = n + last + 1 - new_rows       # the output position of row last + 1
                for q in prange(last + 1, dense_rows, schedule='static', num_threads=nthreads):
                    put_default(q, e + q - last - 1, rank, dflt, size, oip, ovp)
                    ep[q] = 1
        else:
            # 2c. not sorted: a stable counting sort, with fewer threads counting when their
            # counters would take more memory than the outputs
            sfer_atomic_store(&_last_path_code, PATH_COUNTING)
            narrow = n + dense_rows <= 0x7fffffff and not _wide_counters
            tc = counting_threads(nthreads, dense_rows, 4 if narrow else 8, n,
                                  8 * rank + size + 8)
            shape2[0] = tc
            shape2[1] = dense_rows
            counts = cnp.PyArray_ZEROS(2, shape2, cnp.NPY_INT32 if narrow else cnp.NPY_INT64, 0)
            cp = cnp.PyArray_DATA(counts)
            starts = cnp.PyArray_EMPTY(1, &rows_, cnp.NPY_INT64, 0)
            sp = <int64_t *>cnp.PyArray_DATA(starts)
            with nogil:
                if narrow:
                    n_full = count_and_lay_out(ip, n, rank, dense_rows, tc, <int32_t *>cp, sp, ep)
                else:
                    n_full = count_and_lay_out(ip, n, rank, dense_rows, tc, <int64_t *>cp, sp, ep)
            shape2[0] = n_full
            shape2[1] = rank
            out_ind = cnp.PyArray_EMPTY(2, shape2, cnp.NPY_INT64, 0)
            out_vals = new_like(n_full, vals)
            oip = <int64_t *>cnp.PyArray_DATA(out_ind)
            ovp = <char *>cnp.PyArray_DATA(out_vals) if dflt != NULL else NULL
            with nogil:
                if narrow:
                    place_all_counted(ip, n, rank, vp, size, dense_rows, tc, <int32_t *>cp,
                                      oip, ovp, rp)
                else:
                    place_all_counted(ip, n, rank, vp, size, dense_rows, tc, <int64_t *>cp,
                                      oip, ovp, rp)
                for q in prange(dense_rows, schedule='static', num_threads=nthreads):
                    if ep[q]:
                        put_default(q, sp[q], rank, dflt, size, oip, ovp)
        if dflt == NULL:   # references (objects, StringDType): placed by NumPy, under the GIL
            out_vals[...] = default
            out_vals[rim] = vals
        return _tuple_new(FillResult, (out_ind, out_vals, empty, rim))
    finally:
        free(scans)
        with nogil:
            leave_call()


# ---------------------------------------------------------------------------------------------
# The C fast path: exact ndarrays that need no conversion, a default of a plain type

ctypedef union item_buf:
    int8_t i8
    int16_t i16
    int32_t i32
    int64_t i64
    uint8_t u8
    uint16_t u16
    uint32_t u32
    uint64_t u64
    float f32
    double f64
    char raw[32]


cdef inline bint behaved(cnp.ndarray a) noexcept:
    # C-contiguous, aligned, native byte order: what the kernels read as it is.
    return cnp.PyArray_ISCARRAY_RO(a) and cnp.PyArray_ISNOTSWAPPED(a)


cdef bint fast_default(object default, cnp.ndarray vals, item_buf *buf):
    # buf: out.  The default's bytes in values' dtype when it is a Python float, int or bool
    # (or a NumPy scalar of values' own type) that converts exactly as sfer._fill_inputs
    # converts it, without a doubt about fitting; False leaves it to sfer._fill_inputs.
    cdef int t = cnp.PyArray_TYPE(vals)
    cdef int size = cnp.PyArray_ITEMSIZE(vals)
    cdef double d
    cdef int64_t v
    if type(default) is float:
        d = <double>default
        if t == cnp.NPY_DOUBLE:
            buf.f64 = d
            return True
        if t == cnp.NPY_FLOAT:
            buf.f32 = <float>d
            return isfinite(buf.f32) or not isfinite(d)   # else: overflow, an error
        return False
    if type(default) is int:
        if not -0x8000000000000000 <= default <= 0x7fffffffffffffff:
            return False
        v = <int64_t>default
        if t == cnp.NPY_DOUBLE:
            buf.f64 = <double>v
            return True
        if t == cnp.NPY_FLOAT:
            buf.f32 = <float>v
            return True
        if not cnp.PyTypeNum_ISINTEGER(t):
            return False
        if cnp.PyTypeNum_ISSIGNED(t):
            if size == 8:
                buf.i64 = v
                return True
            if size == 4 and -0x80000000 <= v <= 0x7fffffff:
                buf.i32 = <int32_t>v
                return True
            if size == 2 and -0x8000 <= v <= 0x7fff:
                buf.i16 = <int16_t>v
                return True
            if size == 1 and -0x80 <= v <= 0x7f:
                buf.i8 = <int8_t>v
                return True
            return False
        if v < 0:
            return False
        if size == 8:
            buf.u64 = <uint64_t>v
            return True
        if size == 4 and v <= 0xffffffff:
            buf.u32 = <uint32_t>v
            return True
        if size == 2 and v <= 0xffff:
            buf.u16 = <uint16_t>v
            return True
        if size == 1 and v <= 0xff:
            buf.u8 = <uint8_t>v
            return True
        return False
    if type(default) is bool:
        if t != cnp.NPY_BOOL:
            return False
        buf.u8 = 1 if default else 0
        return True
    if type(default) is vals.dtype.type and size <= 32:
        cnp.PyArray_ScalarAsCtype(default, buf)   # a NumPy scalar of values' own type
        return True
    return False


cdef bint fast_shape(object dense_shape, int64_t rank, int64_t *dense_rows):
    # dense_rows: out.  dense_shape[0] when dense_shape is an int64 ndarray or a list/tuple of
    # Python ints of length rank, and dense_shape[0] >= 0; False leaves it to
    # sfer._fill_inputs.
    cdef cnp.ndarray a
    cdef object x
    if type(dense_shape) is cnp.ndarray:
        a = <cnp.ndarray>dense_shape
        if not (cnp.PyArray_NDIM(a) == 1 and cnp.PyArray_DIM(a, 0) == rank and behaved(a)
                and cnp.PyArray_TYPE(a) == cnp.NPY_INT64):
            return False
        dense_rows[0] = (<const int64_t *>cnp.PyArray_DATA(a))[0]
    elif type(dense_shape) is tuple or type(dense_shape) is list:
        if len(dense_shape) != rank:
            return False
        for x in dense_shape:
            if type(x) is not int or not 0 <= x <= 0x7fffffffffffffff:
                return False
        dense_rows[0] = <int64_t>dense_shape[0]
    else:
        return False
    return dense_rows[0] >= 0


cdef object fast_fill(object indices, object values, object dense_shape, object default,
                      object num_threads):
    # The whole call for the common case; None when the inputs need converting or checking
    # first (sfer._fill_inputs then converts them, or explains why it cannot): int64 indices
    # [N, R >= 1] and [N] values of a built-in number or bool dtype, both behaved ndarrays, a
    # dense_shape fast_shape reads and a default fast_default converts.
    cdef cnp.ndarray ind, vals
    cdef int64_t dense_rows = 0
    cdef int t
    cdef item_buf buf
    if type(indices) is not cnp.ndarray or type(values) is not cnp.ndarray:
        return None
    ind = <cnp.ndarray>indices
    vals = <cnp.ndarray>values
    t = cnp.PyArray_TYPE(vals)
    if not (cnp.PyArray_NDIM(ind) == 2 and cnp.PyArray_DIM(ind, 1) >= 1 and behaved(ind)
            and cnp.PyArray_TYPE(ind) == cnp.NPY_INT64
            and cnp.PyArray_NDIM(vals) == 1 and cnp.PyArray_DIM(vals, 0) == cnp.PyArray_DIM(ind, 0)
            and behaved(vals) and (t <= cnp.NPY_CLONGDOUBLE or t == NPY_HALF)):
        return None
    if not fast_shape(dense_shape, cnp.PyArray_DIM(ind, 1), &dense_rows):
        return None
    if not fast_default(default, vals, &buf):
        return None
    return run_fill(ind, vals, dense_rows, buf.raw, None, thread_request(num_threads), None)


def sparse_fill_empty_rows(indices, values, dense_shape, default_value, *, num_threads=None):
    """TensorFlow's ``SparseFillEmptyRows``: fill the empty rows of a sparse tensor.

    Parameters
    ----------
    indices : array_like of integers, shape (N, R)
        The entries' coordinates; column 0 is the row, checked against ``dense_shape[0]``
        (columns 1.. pass through unchecked, as in TensorFlow).
    values : array_like, shape (N,)
        Any dtype: numbers, bool, bfloat16, strings (``S``, ``U``, ``StringDType``), objects,
        datetimes, structured records.
    dense_shape : array_like of integers, shape (R,)
    default_value : scalar
        The value of the entry added to each empty row; converted to ``values``' dtype, and an
        error if it does not fit.
    num_threads : int, optional
        As for :func:`sfer.sparse_fill_empty_rows_grad`; the result is the same for every value.

    Returns
    -------
    FillResult
        ``(output_indices, output_values, empty_row_indicator, reverse_index_map)``: int64
        ``[N_full, R]``, ``[N_full]`` of ``values``' dtype (for ``S``/``U`` the wider of
        ``values`` and ``default_value``), bool ``[dense_shape[0]]`` and int64 ``[N]``.
        Entries are grouped by row in increasing row order, keeping their input order within
        a row; each empty row ``r`` gets one entry ``[r, 0, ..., 0]`` with ``default_value``.
        When no row is empty and the rows never decrease, ``output_indices`` and
        ``output_values`` are **read-only views** of the (converted) inputs, as TensorFlow
        hands its inputs back; ``np.array(x)`` gives a writable copy.

    Raises
    ------
    TypeError, ValueError, IndexError
        As ``sfer.reference.sparse_fill_empty_rows`` documents, in TensorFlow's order; the
        IndexError names the first entry whose row is out of range, whatever the thread count.
    MemoryError
        When ``dense_shape[0]`` rows cannot fit in memory (e.g. ``2**62``).
    """
    cdef cnp.ndarray vals_k, default_k
    result = fast_fill(indices, values, dense_shape, default_value, num_threads)
    if result is not None:
        return result
    idx, vals, shape, default, out_dtype = _fill_inputs(indices, values, dense_shape,
                                                        default_value)
    requested = thread_request(num_threads)
    if int(shape[0]) > 0x7fffffffffffffff:   # a uint64 beyond int64: no row can be placed
        check_memory(int(shape[0]), idx.shape[1], out_dtype.itemsize)
    ind = np.ascontiguousarray(idx, dtype=np.int64)   # uint64 rows beyond int64: negative, bad
    if not ind.flags.aligned:   # ascontiguousarray keeps an unaligned buffer: the kernels load int64
        ind = ind.copy()
    vals_k = np.ascontiguousarray(vals, dtype=out_dtype)
    if out_dtype.hasobject or out_dtype.kind == "T":
        return run_fill(ind, vals_k, int(shape[0]), NULL, default, requested, idx)
    default_k = np.ascontiguousarray(default, dtype=out_dtype)
    return run_fill(ind, vals_k, int(shape[0]), <const char *>cnp.PyArray_DATA(default_k),
                    None, requested, idx)


_PATH_NAMES = {PATH_FAST: "fast", PATH_SORTED: "sorted", PATH_COUNTING: "counting"}


def _last_path():
    """The path the latest call that reached one took: ``"fast"``, ``"sorted"`` or
    ``"counting"``; None before any (a test hook, racy across Python threads)."""
    return _PATH_NAMES.get(sfer_atomic_load(&_last_path_code))


def _use_wide_counters(flag):
    """Make the counting path use int64 counters even where int32 ones fit (True), or only
    where they must (False, the default): a test hook, for the path that otherwise needs
    N + dense_rows >= 2**31."""
    global _wide_counters
    _wide_counters = bool(flag)
