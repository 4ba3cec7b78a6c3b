# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
# cython: initializedcheck=False
"""The forward op, SparseFillEmptyRows: its kernels and entry point (private: call
``sfer.sparse_fill_empty_rows``).

A call on one thread (values of a dtype the kernels place; a small call, or one with
``dense_rows <= 2 N``) first tries a single pass (``run_single``) that checks the rows and
places the entries by the sorted rule below as long as the rows never decrease, reading
``indices`` once, into outputs with room for ``N + dense_rows`` entries cut to ``N_full`` at the
end (the pages past it never written); the entries before the first empty row are copied last,
or not at all when no row is empty (the fast path's views).  Rows that decrease send it on as a
large call.  Every other call first scans column 0 of ``indices`` (in parallel, each thread a
contiguous slice of entries): it checks the rows, learns whether they never decrease, and
counts the distinct rows.  Then one of four paths places the entries; none depends on the
thread count.  Each path cuts the entries into a slice per thread, with state of its own, so a
call runs on no more threads than the CPUs this process may use
(``sfer._runtime.state_threads``): more could not run at once.

* ``"fast"``: rows sorted and no row empty.  The outputs are the (converted) inputs, handed
  back as read-only views; only ``reverse_index_map`` (``0..N-1``) and
  ``empty_row_indicator`` (all False) are written.
* ``"sorted"``: rows sorted, some rows empty.  Entry ``i`` goes to ``i + E(row)``, ``E(row)``
  the number of empty rows below its row, so each thread copies its slice as runs between
  empty rows (``memcpy``), writing the default entries of the gaps it meets.  No counters.
  The rule is ``sfer_fill_sorted`` (``src/sfer_fill.h``), the single pass's too.
* ``"counting"``: rows not sorted.  A stable counting sort: each thread counts the rows of its
  slice, the counts become, row by row, each thread's first output position in that row, and
  each thread places its entries in input order.  Extra memory: ``threads x dense_rows``
  counters, int32 where ``N + dense_rows`` fits, else int64 (fewer threads count when the
  counters would outweigh the outputs: ``sfer._runtime.counting_threads``).
* ``"partition"``: rows not sorted, a large call (``PARTITION_BELOW`` entries or more).  The
  entries are radix-partitioned by row into buckets of ``2**k`` rows whose outputs fit in L2,
  each slice's entries copied in input order to their bucket's output range (through
  write-combining lines); each bucket is then placed in cache by a stable counting sort, and a
  last pass writes ``reverse_index_map`` in input order (``src/sfer_fill.h``, ``sfer_part_*``).
  Extra memory: 4 bytes per entry, a bit per row per slice, counts per bucket per slice, one
  bucket's work space per placing thread; all of it no more than the outputs (threads are
  lowered; the counting path takes the call where even one would not fit).

Every kernel reads the call's inputs and writes its outputs through one context,
``sfer_fill_ctx`` (``src/sfer_fill.h``).

The input rules (conversion, dtypes, shapes in TensorFlow's order, ``default_value``) are
``sfer._fill_inputs``'s, shared with ``sfer.reference``; exact ndarrays in the common layouts
and dtypes, with a ``default_value`` that converts exactly (a Python or NumPy number or a 0-d
array of a built-in number dtype; ``fast_default``), skip them (``fast_fill``), having nothing
to convert and nothing to reject but rows.
"""

cimport numpy as cnp
from cpython.object cimport Py_TYPE
from cython.parallel cimport prange, threadid
from libc.math cimport isfinite
from libc.stdint cimport int8_t, int16_t, int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.stdlib cimport calloc, free, malloc
from libc.string cimport memcpy

from sfer._common cimport sfer_atomic_load, sfer_atomic_store, sfer_prefetch_w
from sfer._runtime cimport (SERIAL_BELOW, counting_threads, enter_call, leave_call,
                            plan_threads, runnable_cpus, state_threads, thread_request)

import numpy as np

from sfer import _errors
from sfer._fill_inputs import fill_inputs as _fill_inputs
from sfer._result import FillResult

cnp.import_array()

cdef extern from "numpy/arrayobject.h":
    enum: NPY_HALF
    # A view of the whole array with its own dtype and type (NULL, NULL).
    object PyArray_View(cnp.ndarray, void *, void *)

cdef extern from *:
    """
    #define sfer_is_numpy_scalar(o) PyArray_IsScalar((o), Generic)
    """
    # Whether o is a NumPy scalar (an instance of np.generic).
    bint is_numpy_scalar "sfer_is_numpy_scalar"(object o) noexcept

# The call's context and the placement rules that every path shares (see the header).
cdef extern from "src/sfer_fill.h":
    ctypedef struct sfer_fill_ctx:
        const int64_t *ind
        const char *vals
        const char *dflt
        int64_t n
        int64_t rank
        int64_t dense_rows
        int64_t size
        int64_t *out_ind
        char *out_vals
        int64_t *rim
        uint8_t *empty
        int64_t *first_gap
    enum:
        SFER_FILL_UNSORTED
        SFER_FILL_BAD_ROW
    void sfer_copy_item(char *dst, const char *src, int64_t size) noexcept nogil
    void sfer_fill_gap(const sfer_fill_ctx *c, int64_t q0, int64_t q1, int64_t p) noexcept nogil
    void sfer_fill_defaults(const sfer_fill_ctx *c, int64_t q0, int64_t q1,
                            const int64_t *starts) noexcept nogil
    int64_t sfer_fill_sorted(const sfer_fill_ctx *c, int64_t i0, int64_t i1, int64_t e,
                             int check, int64_t *bad) noexcept nogil
    int64_t sfer_fill_sorted_slice(const sfer_fill_ctx *c, int64_t i0, int64_t i1,
                                   int64_t e) noexcept nogil
    void sfer_fill_copy(const sfer_fill_ctx *c, int64_t i0, int64_t i1) noexcept nogil
    ctypedef struct sfer_part_ctx:
        int shift
        int nthreads
        int64_t buckets
        int64_t words
        int64_t *cur
        int64_t *first
        int64_t *start
        uint64_t *bits
        uint32_t *pos
        int64_t cap
    int64_t sfer_part_tmp_bytes(const sfer_fill_ctx *c, const sfer_part_ctx *pc) noexcept nogil
    void sfer_part_count(const sfer_fill_ctx *c, const sfer_part_ctx *pc, int t) noexcept nogil
    int64_t sfer_part_distinct(const sfer_part_ctx *pc, int64_t b) noexcept nogil
    int64_t sfer_part_lay_out(const sfer_fill_ctx *c, sfer_part_ctx *pc) noexcept nogil
    void sfer_part_scatter(const sfer_fill_ctx *c, const sfer_part_ctx *pc, int t) noexcept nogil
    int sfer_part_scatter_wc(const sfer_fill_ctx *c, const sfer_part_ctx *pc, int t) noexcept nogil
    void sfer_part_place(const sfer_fill_ctx *c, const sfer_part_ctx *pc, int64_t b,
                         char *tmp) noexcept nogil
    void sfer_part_rim(const sfer_fill_ctx *c, const sfer_part_ctx *pc, int t) noexcept nogil

cdef extern from *:
    """
    /* tuple.__new__(cls, items) for a tuple subclass cls (a NamedTuple), without the call
       through Python that tuple.__new__ makes. */
    static PyObject *sfer_tuple_new(PyObject *cls, PyObject *items)
    {
        PyObject *args = PyTuple_Pack(1, items), *result;
        if (args == NULL)
            return NULL;
        result = PyTuple_Type.tp_new((PyTypeObject *)cls, args, NULL);
        Py_DECREF(args);
        return result;
    }
    """
    object sfer_tuple_new(object cls, tuple items)


cdef inline object new_result(object out_ind, object out_vals, object empty, object rim):
    # The FillResult of the four outputs.
    return sfer_tuple_new(FillResult, (out_ind, out_vals, empty, rim))

cdef enum:
    AHEAD = 16          # entries between a prefetch and its use (unsorted rows)

cdef enum:
    PATH_FAST = 1
    PATH_SORTED = 2
    PATH_COUNTING = 3
    PATH_PARTITION = 4

cdef enum:
    PARTITION_BELOW = 1 << 19   # unsorted calls on fewer entries take the counting path
    BUCKET_BYTES = 1 << 18      # the partition path's bucket: about this many output bytes
    MAX_BUCKETS = 1 << 12       # ... and at most this many buckets
    MAX_SHIFT = 20              # ... of at most 2**MAX_SHIFT rows

cdef int _last_path_code = 0   # the path of the latest call that reached one (a test hook)
cdef int64_t _partition_below = PARTITION_BELOW   # (a test hook: _set_partition_below)
cdef bint _wide_counters = False    # int64 counters even where int32 fit (a test hook)
cdef int _part_slices = 0       # the latest partition call's slices and placing threads
cdef int _part_placers = 0      # (a test hook: _last_partition_threads)


ctypedef fused cnt_t:     # the counting path's counters: int32 whenever N + dense_rows fits,
    int32_t                 # which halves the memory they hit at random
    int64_t


ctypedef struct slice_scan:
    int64_t bad         # the first entry of the slice whose row is out of range, or -1
    int64_t new_rows    # entries i of the slice with i == 0 or row(i) != row(i - 1)
    int64_t down        # entries i of the slice with row(i) < row(i - 1)
    int64_t e           # the sorted path: the empty rows up to the row before the slice


# ---------------------------------------------------------------------------------------------
# Kernels (no GIL), on one call's sfer_fill_ctx; each copies the fields it loops over into
# locals (a store through an output pointer could otherwise alias them).

cdef void scan_slice(const sfer_fill_ctx *c, int64_t i0, int64_t i1,
                     slice_scan *s) noexcept nogil:
    # s: out (all but e).  Scans the rows of entries i0 <= i < i1, each against the entry
    # before it (the one before i0 too), without a branch per entry; the first bad entry, if
    # any, is then found by a second look at the slice.
    cdef const int64_t *ind = c.ind
    cdef int64_t rank = c.rank, dense_rows = c.dense_rows
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


cdef void scan_rows(const sfer_fill_ctx *c, int nthreads, slice_scan *scans,
                    slice_scan *total) noexcept nogil:
    # scans[nthreads], total: out.  Thread t scans slice t (scan_slice); total.bad is the first
    # bad entry of all (or -1), total.new_rows and total.down the sums.
    cdef int64_t n = c.n
    cdef int t
    for t in prange(nthreads, schedule='static', num_threads=nthreads):
        scan_slice(c, t * n // nthreads, (t + 1) * n // nthreads, &scans[t])
    total.bad = -1
    total.new_rows = 0
    total.down = 0
    for t in range(nthreads):
        if scans[t].bad >= 0 and total.bad < 0:
            total.bad = scans[t].bad
        total.new_rows += scans[t].new_rows
        total.down += scans[t].down


cdef void count_rows(const sfer_fill_ctx *c, int64_t i0, int64_t i1,
                     cnt_t *counts) noexcept nogil:
    # counts: in/out (zeroed).  Counts the rows of entries i0 <= i < i1 (checked already),
    # each counter prefetched AHEAD entries before it is needed: unsorted rows hit the
    # counters at random, and the prefetches keep many of those misses in flight.
    cdef const int64_t *ind = c.ind
    cdef int64_t rank = c.rank
    cdef int64_t i
    for i in range(i0, i1 - AHEAD):
        sfer_prefetch_w(&counts[ind[(i + AHEAD) * rank]])
        counts[ind[i * rank]] += 1
    for i in range(max(i0, i1 - AHEAD), i1):
        counts[ind[i * rank]] += 1


cdef void place_counted(const sfer_fill_ctx *c, int64_t i0, int64_t i1,
                        cnt_t *next_pos) noexcept nogil:
    # next_pos: in/out (this thread's next output position in each row).  Places entries
    # i0 <= i < i1 in input order.  Two prefetch stages: the row's next_pos 2 * AHEAD entries
    # ahead, then, AHEAD entries ahead, the output slots it points to (a hint only: a row met
    # again in between moves them by a slot or two).
    cdef const int64_t *ind = c.ind
    cdef const char *vals = c.vals
    cdef int64_t rank = c.rank, size = c.size
    cdef int64_t *out_ind = c.out_ind
    cdef char *out_vals = c.out_vals
    cdef int64_t *rim = c.rim
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
            sfer_copy_item(out_vals + p * size, vals + i * size, size)


cdef int64_t count_and_lay_out(const sfer_fill_ctx *c, int nthreads, cnt_t *counts,
                               int64_t *starts) noexcept nogil:
    # counts [nthreads, dense_rows] (zeroed): out, each thread's first output position in each
    # row.  starts (each row's first output position) and c.empty: out.  Each thread counts the
    # rows of its slice; the counts become, row by row, the threads' first positions.
    # Returns N_full.
    cdef int64_t n = c.n, dense_rows = c.dense_rows
    cdef uint8_t *empty = c.empty
    cdef int64_t r, s, p, run = 0
    cdef int64_t t
    cdef int t32
    for t32 in prange(nthreads, schedule='static', num_threads=nthreads):
        count_rows(c, t32 * n // nthreads, (t32 + 1) * n // nthreads, &counts[t32 * dense_rows])
    for r in prange(dense_rows, schedule='static', num_threads=nthreads):
        s = 0
        for t in range(nthreads):
            s = s + counts[t * dense_rows + r]
        starts[r] = s           # the row's total, for now
        empty[r] = s == 0
    for r in range(dense_rows):
        s = starts[r]
        starts[r] = run
        run += s if s > 0 else 1
    for r in prange(dense_rows, schedule='static', num_threads=nthreads):
        p = starts[r]
        for t in range(nthreads):
            s = counts[t * dense_rows + r]
            counts[t * dense_rows + r] = <cnt_t>p
            p = p + s
    return run


cdef void place_all_counted(const sfer_fill_ctx *c, int nthreads, cnt_t *counts) noexcept nogil:
    # counts: in/out, from count_and_lay_out.  Each thread places its slice.
    cdef int64_t n = c.n
    cdef int t
    for t in prange(nthreads, schedule='static', num_threads=nthreads):
        place_counted(c, t * n // nthreads, (t + 1) * n // nthreads, &counts[t * c.dense_rows])


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


cdef object bad_row_error(const sfer_fill_ctx *c, int64_t bad, object given):
    # The IndexError for entry `bad`, whose row is out of range (given: as for run_fill).
    return IndexError(_errors.row_out_of_range(
        bad, c.ind[bad * c.rank] if given is None else int(given[bad, 0]), c.dense_rows))


cdef cnp.ndarray new_empty(sfer_fill_ctx *c, bint zeroed):
    # empty_row_indicator [dense_rows], all False when zeroed, else uninitialised; its data in
    # c.empty.
    cdef cnp.npy_intp rows = c.dense_rows
    cdef cnp.ndarray empty
    if zeroed:
        empty = cnp.PyArray_ZEROS(1, &rows, cnp.NPY_BOOL, 0)
    else:
        empty = cnp.PyArray_EMPTY(1, &rows, cnp.NPY_BOOL, 0)
    c.empty = <uint8_t *>cnp.PyArray_DATA(empty)
    return empty


cdef cnp.ndarray new_rim(sfer_fill_ctx *c):
    # reverse_index_map [n], uninitialised; its data in c.rim.
    cdef cnp.npy_intp n = c.n
    cdef cnp.ndarray rim = cnp.PyArray_EMPTY(1, &n, cnp.NPY_INT64, 0)
    c.rim = <int64_t *>cnp.PyArray_DATA(rim)
    return rim


cdef cnp.ndarray new_out_ind(sfer_fill_ctx *c, cnp.npy_intp n_full):
    # output_indices [n_full, rank], uninitialised; its data in c.out_ind.
    cdef cnp.npy_intp dims[2]
    cdef cnp.ndarray out_ind
    dims[0] = n_full
    dims[1] = c.rank
    out_ind = cnp.PyArray_EMPTY(2, dims, cnp.NPY_INT64, 0)
    c.out_ind = <int64_t *>cnp.PyArray_DATA(out_ind)
    return out_ind


cdef cnp.ndarray new_out_vals(sfer_fill_ctx *c, cnp.npy_intp n_full, cnp.ndarray vals):
    # output_values [n_full] of vals' dtype, uninitialised; its data in c.out_vals (NULL there
    # when NumPy places the values).
    cdef cnp.ndarray out_vals = new_like(n_full, vals)
    c.out_vals = <char *>cnp.PyArray_DATA(out_vals) if c.dflt != NULL else NULL
    return out_vals


cdef object fill_result(const sfer_fill_ctx *c, object out_ind, object out_vals, object empty,
                        object rim, object vals, object default):
    # The FillResult, once the kernels have run; where they left the values to NumPy (objects,
    # StringDType: c.dflt NULL), NumPy places them first, under the GIL.
    if c.dflt == NULL:
        out_vals[...] = default
        out_vals[rim] = vals
    return new_result(out_ind, out_vals, empty, rim)


cdef void cut_to(cnp.ndarray out_ind, cnp.ndarray out_vals, cnp.npy_intp n_full) except *:
    # Outputs allocated with room to spare cut to their n_full entries, in place (a realloc
    # that shrinks: the pages past n_full, never written, are given back).
    cdef cnp.npy_intp dims[2]
    cdef cnp.PyArray_Dims new_shape
    dims[0] = n_full
    dims[1] = cnp.PyArray_DIM(out_ind, 1)
    new_shape.ptr = dims
    new_shape.len = 2
    cnp.PyArray_Resize(out_ind, &new_shape, 0, cnp.NPY_CORDER)
    new_shape.len = 1
    cnp.PyArray_Resize(out_vals, &new_shape, 0, cnp.NPY_CORDER)


cdef object run_single(sfer_fill_ctx *c, cnp.ndarray ind, cnp.ndarray vals, object given):
    # One thread, values the kernels place (c.dflt set): checks and places the entries in one
    # pass (sfer_fill_sorted with its checks), as long as the rows never decrease, into outputs
    # with room for N + dense_rows entries, cut to N_full at the end.  The entries before the
    # first gap stay where they are until the end (c.first_gap): copied then if a row is
    # empty, else the outputs are the inputs (the fast path).  The result; or None when the
    # rows turn out unsorted, or the outputs cannot be allocated (the caller then goes on as
    # for a large call: the scan finds any bad row first).
    cdef int64_t n = c.n, rank = c.rank, dense_rows = c.dense_rows
    cdef int64_t i, e, last = -1, bad = -1, first_gap = n
    cdef cnp.npy_intp n_full
    for i in range(1, min(n, 16)):   # unsorted rows show early, as a rule: no outputs wasted
        if c.ind[i * rank] < c.ind[(i - 1) * rank]:
            return None
    try:
        empty = new_empty(c, True)   # zeroed: the checked pass flags only the gaps
        rim = new_rim(c)
        out_ind = new_out_ind(c, n + dense_rows)
        out_vals = new_out_vals(c, n + dense_rows, vals)
    except MemoryError:
        return None
    c.first_gap = &first_gap
    with nogil:   # the GIL released once, for the call in flight and its kernel
        enter_call(1)
        e = sfer_fill_sorted(c, 0, n, 0, 1, &bad)
        if e >= 0:
            last = c.ind[(n - 1) * rank] if n > 0 else -1
            if n + e + dense_rows - last - 1 > n:   # a row is empty: the entries before it
                sfer_fill_copy(c, 0, first_gap)
                sfer_fill_gap(c, last + 1, dense_rows, n + e)   # rows after the last entry's
        leave_call()
    c.first_gap = NULL
    if e == SFER_FILL_UNSORTED:
        return None
    if e == SFER_FILL_BAD_ROW:
        raise bad_row_error(c, bad, given)
    n_full = n + e + dense_rows - last - 1
    if n_full == n:   # the fast path after all: rim is 0..N-1, no row empty
        sfer_atomic_store(&_last_path_code, PATH_FAST)
        return new_result(read_only(ind), read_only(vals), empty, rim)
    sfer_atomic_store(&_last_path_code, PATH_SORTED)
    cut_to(out_ind, out_vals, n_full)
    return fill_result(c, out_ind, out_vals, empty, rim, vals, None)


cdef object run_fast(sfer_fill_ctx *c, cnp.ndarray ind, cnp.ndarray vals, int nthreads):
    # Rows sorted, none empty: the outputs are the inputs, as read-only views;
    # reverse_index_map is 0..N-1 and empty_row_indicator all False.
    cdef int64_t i
    cdef int64_t *rp
    sfer_atomic_store(&_last_path_code, PATH_FAST)
    empty = new_empty(c, True)
    rim = new_rim(c)
    rp = c.rim
    with nogil:
        for i in prange(c.n, schedule='static', num_threads=nthreads):
            rp[i] = i
    return new_result(read_only(ind), read_only(vals), empty, rim)


cdef object run_sorted(sfer_fill_ctx *c, cnp.ndarray vals, object default, slice_scan *scans,
                       int nthreads):
    # Rows sorted, some empty: each thread places its slice by the sorted rule
    # (sfer_fill_sorted_slice), from its own e; then the threads share the empty rows after the
    # last entry's row.  scans: the scan's, one per thread.
    cdef int64_t n = c.n, rank = c.rank, dense_rows = c.dense_rows
    cdef int64_t i0, q, e, last, new_rows = 0
    cdef int t
    sfer_atomic_store(&_last_path_code, PATH_SORTED)
    for t in range(nthreads):
        # thread t's e: the empty rows up to the row before its slice, (that row + 1) minus
        # the distinct rows before the slice
        i0 = t * n // nthreads
        scans[t].e = (c.ind[(i0 - 1) * rank] + 1 if i0 > 0 else 0) - new_rows
        new_rows += scans[t].new_rows
    last = c.ind[(n - 1) * rank] if n > 0 else -1
    e = last + 1 - new_rows   # the empty rows up to the last entry's row
    empty = new_empty(c, False)
    rim = new_rim(c)
    out_ind = new_out_ind(c, n + dense_rows - new_rows)
    out_vals = new_out_vals(c, n + dense_rows - new_rows, vals)
    with nogil:
        for t in prange(nthreads, schedule='static', num_threads=nthreads):
            sfer_fill_sorted_slice(c, t * n // nthreads, (t + 1) * n // nthreads, scans[t].e)
        for q in prange(last + 1, dense_rows, schedule='static', num_threads=nthreads):
            sfer_fill_gap(c, q, q + 1, n + e + q - last - 1)   # none: no parallel region
    return fill_result(c, out_ind, out_vals, empty, rim, vals, default)


cdef object run_counting(sfer_fill_ctx *c, cnp.ndarray vals, object default, int nthreads):
    # Rows not sorted: a stable counting sort (count_and_lay_out, then place_all_counted),
    # then each empty row's default at its start.  Its counters are int32 where
    # N + dense_rows fits.
    cdef bint narrow = c.n + c.dense_rows <= 0x7fffffff and not _wide_counters
    cdef int tc = counting_threads(nthreads, c.dense_rows, 4 if narrow else 8, c.n,
                                   8 * c.rank + c.size + 8)
    cdef cnp.npy_intp shape[2]
    cdef cnp.npy_intp rows = c.dense_rows
    cdef int64_t n_full
    cdef int t
    cdef void *cp
    cdef int64_t *sp
    sfer_atomic_store(&_last_path_code, PATH_COUNTING)
    empty = new_empty(c, False)
    rim = new_rim(c)
    shape[0] = tc
    shape[1] = c.dense_rows
    counts = cnp.PyArray_ZEROS(2, shape, cnp.NPY_INT32 if narrow else cnp.NPY_INT64, 0)
    cp = cnp.PyArray_DATA(counts)
    starts = cnp.PyArray_EMPTY(1, &rows, cnp.NPY_INT64, 0)
    sp = <int64_t *>cnp.PyArray_DATA(starts)
    with nogil:
        if narrow:
            n_full = count_and_lay_out(c, tc, <int32_t *>cp, sp)
        else:
            n_full = count_and_lay_out(c, tc, <int64_t *>cp, sp)
    out_ind = new_out_ind(c, n_full)
    out_vals = new_out_vals(c, n_full, vals)
    with nogil:
        if narrow:
            place_all_counted(c, tc, <int32_t *>cp)
        else:
            place_all_counted(c, tc, <int64_t *>cp)
        for t in prange(nthreads, schedule='static', num_threads=nthreads):
            sfer_fill_defaults(c, t * rows // nthreads, (t + 1) * rows // nthreads, sp)
    return fill_result(c, out_ind, out_vals, empty, rim, vals, default)


cdef bint plan_partition(const sfer_fill_ctx *c, int nthreads, sfer_part_ctx *pc) noexcept nogil:
    # pc: out (shift, buckets, words, nthreads; its arrays NULL).  False when the partition
    # path does not pay (few entries: their random writes stay in cache) or
    # cannot run (2**31 entries or more, too many rows for MAX_BUCKETS buckets).  A bucket
    # holds about BUCKET_BYTES of outputs; the slices are as many as the threads, fewer while
    # their bitmaps and counts would take more than half the least the outputs can take.
    cdef int64_t item = 8 * c.rank + c.size
    cdef double least = <double>c.n * (item + 8) + c.dense_rows
    pc.cur = pc.first = pc.start = NULL
    pc.bits = NULL
    pc.pos = NULL
    if (c.n < _partition_below or c.n >= 0x7fffffff
            or c.dense_rows > (<int64_t>MAX_BUCKETS << MAX_SHIFT)):
        return False
    pc.shift = 6
    while pc.shift < MAX_SHIFT and (<int64_t>1 << pc.shift) < c.dense_rows and (
            (c.dense_rows - 1) >> pc.shift >= MAX_BUCKETS
            or <double>(<int64_t>1 << pc.shift) * (c.n + c.dense_rows) * item
            < <double>BUCKET_BYTES * c.dense_rows):
        pc.shift += 1
    pc.buckets = ((c.dense_rows - 1) >> pc.shift) + 1 if c.dense_rows > 0 else 1
    pc.words = (c.dense_rows + 63) >> 6
    pc.nthreads = nthreads
    while pc.nthreads > 1 and pc.nthreads * (8.0 * pc.words + 16.0 * pc.buckets) > least / 2:
        pc.nthreads -= 1
    return True


cdef void free_partition(sfer_part_ctx *pc) noexcept nogil:
    free(pc.cur)
    free(pc.first)
    free(pc.start)
    free(pc.bits)


cdef int place_threads(const sfer_fill_ctx *c, const sfer_part_ctx *pc, int nthreads,
                       int64_t n_full) noexcept nogil:
    # The threads that place buckets: at most nthreads and the buckets, each with its work
    # space, as long as all the scratch takes no more memory than the outputs; 0 when even
    # one work space would not fit.
    cdef double outputs = <double>n_full * (8 * c.rank + c.size) + 8.0 * c.n + c.dense_rows
    cdef double fixed = 4.0 * c.n + pc.nthreads * (8.0 * pc.words + 16.0 * pc.buckets)
    cdef double room = outputs - fixed - 16.0 * pc.buckets
    cdef double each = <double>sfer_part_tmp_bytes(c, pc)
    cdef int tp = nthreads if nthreads < pc.buckets else <int>pc.buckets
    while tp > 0 and tp * each > room:
        tp -= 1
    return tp


cdef object run_partition(sfer_fill_ctx *c, cnp.ndarray vals, object default, int nthreads):
    # Rows not sorted, a large call: the partitioned placement (src/sfer_fill.h), or None when
    # it does not pay or its scratch would outweigh the outputs (then the counting path).
    cdef sfer_part_ctx pc
    cdef int64_t n_full, b, stride
    cdef cnp.npy_intp n = c.n
    cdef int t, tp
    cdef char *tmp = NULL
    if not plan_partition(c, nthreads, &pc):
        return None
    try:
        pc.cur = <int64_t *>calloc(2 * pc.nthreads * pc.buckets, sizeof(int64_t))
        pc.first = <int64_t *>malloc((pc.buckets + 1) * sizeof(int64_t))
        pc.start = <int64_t *>malloc((pc.buckets + 1) * sizeof(int64_t))
        pc.bits = <uint64_t *>calloc(pc.nthreads * pc.words, sizeof(uint64_t))
        pos = cnp.PyArray_EMPTY(1, &n, cnp.NPY_UINT32, 0)   # NumPy's: huge pages where it can
        pc.pos = <uint32_t *>cnp.PyArray_DATA(pos)
        if not (pc.cur and pc.first and pc.start and pc.bits and pc.pos):
            raise MemoryError(_errors.no_work_space())
        with nogil:
            for t in prange(pc.nthreads, schedule='static', num_threads=pc.nthreads):
                sfer_part_count(c, &pc, t)
            for b in prange(pc.buckets, schedule='static', num_threads=pc.nthreads):
                pc.start[b] = sfer_part_distinct(&pc, b)
            n_full = sfer_part_lay_out(c, &pc)
            tp = place_threads(c, &pc, nthreads, n_full)
            stride = sfer_part_tmp_bytes(c, &pc)
            tmp = <char *>malloc(tp * stride) if tp > 0 else NULL
        if tmp == NULL:
            return None
        sfer_atomic_store(&_last_path_code, PATH_PARTITION)
        sfer_atomic_store(&_part_slices, pc.nthreads)
        sfer_atomic_store(&_part_placers, tp)
        empty = new_empty(c, False)
        rim = new_rim(c)
        out_ind = new_out_ind(c, n_full)
        out_vals = new_out_vals(c, n_full, vals)
        with nogil:
            for t in prange(pc.nthreads, schedule='static', num_threads=pc.nthreads):
                if not sfer_part_scatter_wc(c, &pc, t):
                    sfer_part_scatter(c, &pc, t)
            for b in prange(pc.buckets, schedule='dynamic', num_threads=tp):
                sfer_part_place(c, &pc, b, tmp + threadid() * stride)
            for t in prange(pc.nthreads, schedule='static', num_threads=pc.nthreads):
                sfer_part_rim(c, &pc, t)
        return fill_result(c, out_ind, out_vals, empty, rim, vals, default)
    finally:
        free(tmp)
        free_partition(&pc)


cdef object run_fill(cnp.ndarray ind, cnp.ndarray vals, int64_t dense_rows, const char *dflt,
                     object default, int requested, object given):
    # ind: int64 [n, rank], C-contiguous and aligned; vals: [n] of the output dtype, likewise;
    # dflt: the default's bytes, or NULL when NumPy places the values (object, StringDType;
    # `default` is then a 0-d array of the output dtype); requested: from thread_request;
    # given: the indices before their conversion to int64 (for the error message), or None.
    # No more threads than CPUs (state_threads: every path cuts the entries into a slice per
    # thread, each with state of its own).  One thread tries run_single first (a small call,
    # or rows not far more than entries); otherwise run_large.
    cdef sfer_fill_ctx c
    cdef int64_t work
    cdef int nthreads
    c.ind = <const int64_t *>cnp.PyArray_DATA(ind)
    c.vals = <const char *>cnp.PyArray_DATA(vals) if dflt != NULL else NULL
    c.dflt = dflt
    c.n = cnp.PyArray_DIM(ind, 0)
    c.rank = cnp.PyArray_DIM(ind, 1)
    c.dense_rows = dense_rows
    c.size = cnp.PyArray_ITEMSIZE(vals)
    c.first_gap = NULL
    # the work (saturated: dense_rows may be as large as 2**63 - 1)
    work = (c.n + dense_rows if dense_rows <= 0x7fffffffffffffff - c.n
            else 0x7fffffffffffffff)
    nthreads = plan_threads(requested, work)
    if nthreads > 1:
        nthreads = state_threads(nthreads, runnable_cpus())
    if nthreads == 1 and dflt != NULL and (work < SERIAL_BELOW or dense_rows <= 2 * c.n):
        result = run_single(&c, ind, vals, given)
        if result is not None:
            return result
    return run_large(&c, ind, vals, default, nthreads, given)


cdef object run_large(sfer_fill_ctx *c, cnp.ndarray ind, cnp.ndarray vals, object default,
                      int nthreads, object given):
    # The call in flight on nthreads (planned, at most the CPUs): the scan (scan_rows) picks
    # the path.
    cdef slice_scan total
    cdef slice_scan *scans = <slice_scan *>malloc(nthreads * sizeof(slice_scan))
    if scans == NULL:
        raise MemoryError(_errors.no_work_space())
    nthreads = enter_call(nthreads)
    try:
        with nogil:
            scan_rows(c, nthreads, scans, &total)
        if total.bad >= 0:
            raise bad_row_error(c, total.bad, given)
        check_memory(c.dense_rows, c.rank, c.size)
        if total.down == 0 and total.new_rows == c.dense_rows:
            return run_fast(c, ind, vals, nthreads)
        if total.down == 0:
            return run_sorted(c, vals, default, scans, nthreads)
        result = run_partition(c, vals, default, nthreads)
        return result if result is not None else run_counting(c, vals, default, nthreads)
    finally:
        free(scans)
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


cdef inline bint number_type(int t) noexcept:
    # A built-in number or bool type: what the kernels place, and item_buf holds.
    return t <= cnp.NPY_CLONGDOUBLE or t == NPY_HALF


cdef inline bint behaved(cnp.ndarray a) noexcept:
    # C-contiguous, aligned, native byte order: what the kernels read as it is.
    return cnp.PyArray_ISCARRAY_RO(a) and cnp.PyArray_ISNOTSWAPPED(a)


cdef bint fast_int_item(int64_t v, int t, int size, item_buf *buf) noexcept:
    # buf: out.  v in the integer type t (of `size` bytes) when it fits; False when it does
    # not (sfer._fill_inputs then explains why).
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


cdef bint double_item(double d, int t, item_buf *buf) noexcept:
    # buf: out.  A Python float (or a NumPy float16/32/64 number, exact as a double) in the
    # values' type t; False for another t, or a finite d that would overflow float32 (an error).
    if t == cnp.NPY_DOUBLE:
        buf.f64 = d
        return True
    if t == cnp.NPY_FLOAT:
        buf.f32 = <float>d
        return isfinite(buf.f32) or not isfinite(d)
    return False


cdef bint int_item(int64_t v, int t, int size, item_buf *buf) noexcept:
    # buf: out.  A Python int within int64 (or a NumPy integer of that value) in the values'
    # type t: a float32/float64 by rounding, an integer type if it fits; False otherwise.
    if t == cnp.NPY_DOUBLE:
        buf.f64 = <double>v
        return True
    if t == cnp.NPY_FLOAT:
        buf.f32 = <float>v
        return True
    return cnp.PyTypeNum_ISINTEGER(t) and fast_int_item(v, t, size, buf)


cdef bint number_item(int dt, int dsize, const char *src, int t, int size,
                      item_buf *buf) noexcept:
    # buf: out.  The NumPy number of built-in type dt (dsize bytes) at src (aligned, native
    # byte order) in
    # the values' type t: its bytes when dt is t; a float or double as a Python float; an
    # integer within int64 as a Python int; False for the rest (bool or float16 into another
    # type, unsigned beyond int64: sfer._fill_inputs then decides).
    cdef uint64_t u
    if dt == t:
        memcpy(buf.raw, src, size)
        return True
    if dt == cnp.NPY_DOUBLE:
        return double_item((<const double *>src)[0], t, buf)
    if dt == cnp.NPY_FLOAT:
        return double_item((<const float *>src)[0], t, buf)
    if not cnp.PyTypeNum_ISINTEGER(dt):
        return False
    if cnp.PyTypeNum_ISSIGNED(dt):
        return int_item(signed_at(src, dsize), t, size, buf)
    u = unsigned_at(src, dsize)
    return u <= 0x7fffffffffffffff and int_item(<int64_t>u, t, size, buf)


cdef inline int64_t signed_at(const char *src, int size) noexcept:
    if size == 8:
        return (<const int64_t *>src)[0]
    if size == 4:
        return (<const int32_t *>src)[0]
    if size == 2:
        return (<const int16_t *>src)[0]
    return (<const int8_t *>src)[0]


cdef inline uint64_t unsigned_at(const char *src, int size) noexcept:
    if size == 8:
        return (<const uint64_t *>src)[0]
    if size == 4:
        return (<const uint32_t *>src)[0]
    if size == 2:
        return (<const uint16_t *>src)[0]
    return (<const uint8_t *>src)[0]


cdef bint fast_default(object default, cnp.ndarray vals, item_buf *buf):
    # buf: out.  The default's bytes in values' dtype when it is a Python float, int or bool,
    # a NumPy number or a 0-d array of a built-in number dtype, that converts exactly as
    # sfer._fill_inputs converts it, without a doubt about fitting (number_item); False leaves
    # it to sfer._fill_inputs.
    cdef int t = cnp.PyArray_TYPE(vals)
    cdef int size = cnp.PyArray_ITEMSIZE(vals)
    cdef cnp.ndarray a
    cdef cnp.dtype descr
    cdef item_buf scalar
    if type(default) is float:
        return double_item(<double>default, t, buf)
    if type(default) is int:
        if not -0x8000000000000000 <= default <= 0x7fffffffffffffff:
            return False
        return int_item(<int64_t>default, t, size, buf)
    if type(default) is bool:
        if t != cnp.NPY_BOOL:
            return False
        buf.u8 = 1 if default else 0
        return True
    if type(default) is cnp.ndarray:
        a = <cnp.ndarray>default
        if not (cnp.PyArray_NDIM(a) == 0 and behaved(a) and number_type(cnp.PyArray_TYPE(a))):
            return False
        return number_item(cnp.PyArray_TYPE(a), cnp.PyArray_ITEMSIZE(a), cnp.PyArray_BYTES(a),
                           t, size, buf)
    if not is_numpy_scalar(default):
        return False
    descr = cnp.PyArray_DescrFromScalar(default)
    if descr.typeobj != Py_TYPE(default) or not number_type(descr.type_num):
        return False   # a subclass of a NumPy type, or not a number
    cnp.PyArray_ScalarAsCtype(default, &scalar)
    return number_item(descr.type_num, descr.itemsize, scalar.raw, t, size, buf)


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
            and behaved(vals) and number_type(t)):
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
    if not ind.flags.aligned:   # ascontiguousarray keeps an unaligned buffer; kernels load int64
        ind = ind.copy()
    vals_k = np.ascontiguousarray(vals, dtype=out_dtype)
    if out_dtype.hasobject or out_dtype.kind == "T":
        return run_fill(ind, vals_k, int(shape[0]), NULL, default, requested, idx)
    default_k = np.ascontiguousarray(default, dtype=out_dtype)
    return run_fill(ind, vals_k, int(shape[0]), <const char *>cnp.PyArray_DATA(default_k),
                    None, requested, idx)


_PATH_NAMES = {PATH_FAST: "fast", PATH_SORTED: "sorted", PATH_COUNTING: "counting",
               PATH_PARTITION: "partition"}


def _last_path():
    """The path the latest call that reached one took: ``"fast"``, ``"sorted"``,
    ``"partition"`` or ``"counting"``; None before any (a test hook, racy across Python threads)."""
    return _PATH_NAMES.get(sfer_atomic_load(&_last_path_code))


def _use_wide_counters(flag):
    """Make the counting path use int64 counters even where int32 ones fit (True), or only
    where they must (False, the default): a test hook, for the path that otherwise needs
    N + dense_rows >= 2**31."""
    global _wide_counters
    _wide_counters = bool(flag)


def _last_partition_threads():
    """``(slices, placing threads)`` of the latest call that took the partition path, after
    the memory and CPU caps (a test hook, racy across Python threads)."""
    return sfer_atomic_load(&_part_slices), sfer_atomic_load(&_part_placers)


def _set_partition_below(entries):
    """Unsorted calls on fewer than ``entries`` entries take the counting path, the others the
    partition path where it can run (a test hook: the default is ``PARTITION_BELOW``; pass
    None to restore it).  Returns the previous value."""
    global _partition_below
    old = _partition_below
    _partition_below = PARTITION_BELOW if entries is None else int(entries)
    return old
