# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""The forward op, SparseFillEmptyRows: its kernel and entry point (private: call
``sfer.sparse_fill_empty_rows``).

The kernel groups the entries by row in a stable way (a counting sort): each thread counts the
rows of its contiguous slice of entries, the counts become, row by row, each thread's first
output position in that row, and each thread then places its entries in input order.  So the
output does not depend on the thread count.  Extra memory: ``threads x dense_rows`` int64
counters, plus ``dense_rows`` int64 block starts.

The inputs' rules (conversion, dtypes, shapes in TensorFlow's order, ``default_value``) are
those of ``sfer.reference.sparse_fill_empty_rows``, which this module calls to check them.
"""

cimport numpy as cnp
from cython.parallel cimport prange
from libc.stdint cimport int64_t, uint8_t
from libc.stdlib cimport calloc, free, malloc
from libc.string cimport memcpy

from sfer._runtime cimport enter_call, leave_call, plan_threads

import numpy as np

from sfer import reference as _reference
from sfer._grad import thread_request as _thread_request
from sfer._result import FillResult

cnp.import_array()

cdef enum:
    ERR_NOMEM = -2


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


cdef int64_t count_rows(const int64_t *ind, int64_t rank, int64_t dense_rows, int64_t i0,
                        int64_t i1, int64_t *counts, uint8_t *sorted_) noexcept nogil:
    # ind: in; counts, sorted_: out.  Counts the rows of entries i0 <= i < i1 into counts
    # (dense_rows long, zeroed); sorted_[0] = whether their rows never decrease.  Returns the
    # first i whose row is outside [0, dense_rows) (stopping there), or -1.
    cdef int64_t i, r, prev = -1
    cdef uint8_t ok = 1
    for i in range(i0, i1):
        r = ind[i * rank]
        if r < 0 or r >= dense_rows:
            return i
        if r < prev:
            ok = 0
        prev = r
        counts[r] += 1
    sorted_[0] = ok
    return -1


cdef void place_entries(const int64_t *ind, int64_t rank, const char *vals, Py_ssize_t size,
                        int64_t i0, int64_t i1, int64_t *next_pos, int64_t *out_ind,
                        char *out_vals, int64_t *rim) noexcept nogil:
    # ind, vals: in; next_pos: in/out (this thread's next output position of each row);
    # out_ind, out_vals, rim: out.  Places entries i0 <= i < i1 in input order.  vals NULL:
    # the values are placed by the caller (object and other non-fixed-size dtypes).
    cdef int64_t i, p, k
    for i in range(i0, i1):
        p = next_pos[ind[i * rank]]
        next_pos[ind[i * rank]] = p + 1
        rim[i] = p
        for k in range(rank):
            out_ind[p * rank + k] = ind[i * rank + k]
        if vals != NULL:
            copy_item(out_vals + p * size, vals + i * size, size)


cdef int64_t plan_rows(const int64_t *ind, int64_t n, int64_t rank, int64_t dense_rows,
                       int nthreads, int64_t *counts, int64_t *starts, uint8_t *empty,
                       int64_t *n_full, bint *fast) noexcept nogil:
    # ind: in; counts ([nthreads, dense_rows], zeroed), starts, empty, n_full, fast: out.
    # Counts each thread's rows, checks them, and lays the rows out: starts[r] is the first
    # output position of row r (a block of max(count, 1) positions), counts[t, r] becomes the
    # first position in row r of thread t's entries.  fast: no empty row and rows
    # non-decreasing (then the outputs are the inputs).  Returns -1, the first bad i, or
    # ERR_NOMEM.
    cdef int64_t *bad = <int64_t *>malloc(nthreads * sizeof(int64_t))
    cdef uint8_t *sorted_ = <uint8_t *>calloc(nthreads, 1)
    cdef int64_t first_bad = -1, r, run, c, p, t64, b
    cdef int t
    cdef bint all_sorted = True, any_empty = False
    if bad == NULL or sorted_ == NULL:
        free(bad)
        free(sorted_)
        return ERR_NOMEM
    for t in prange(nthreads, schedule='static', num_threads=nthreads):
        bad[t] = count_rows(ind, rank, dense_rows, t * n // nthreads, (t + 1) * n // nthreads,
                            &counts[t * dense_rows], &sorted_[t])
    for t in range(nthreads):
        if bad[t] >= 0 and (first_bad < 0 or bad[t] < first_bad):
            first_bad = bad[t]
        if not sorted_[t]:
            all_sorted = False
        b = t * n // nthreads   # the first entry of thread t's slice, against the one before
        if t > 0 and 0 < b < n and ind[b * rank] < ind[(b - 1) * rank]:
            all_sorted = False
    free(bad)
    free(sorted_)
    if first_bad >= 0:
        return first_bad
    for r in prange(dense_rows, schedule='static', num_threads=nthreads):
        c = 0
        for t64 in range(nthreads):
            c = c + counts[t64 * dense_rows + r]
        starts[r] = c           # the row's total, for now
        empty[r] = c == 0
    run = 0
    for r in range(dense_rows):
        c = starts[r]
        starts[r] = run
        if c == 0:
            any_empty = True
            run += 1
        else:
            run += c
    n_full[0] = run
    fast[0] = all_sorted and not any_empty
    if not fast[0]:
        for r in prange(dense_rows, schedule='static', num_threads=nthreads):
            p = starts[r]
            for t64 in range(nthreads):
                c = counts[t64 * dense_rows + r]
                counts[t64 * dense_rows + r] = p
                p = p + c
    return -1


cdef void place_all(const int64_t *ind, int64_t n, int64_t rank, int64_t dense_rows,
                    const char *vals, Py_ssize_t size, const char *default, int nthreads,
                    int64_t *counts, const int64_t *starts, const uint8_t *empty,
                    int64_t *out_ind, char *out_vals, int64_t *rim) noexcept nogil:
    # counts: in/out (from plan_rows); the rest: in, or out (out_ind, out_vals, rim).  Places
    # every entry and one default entry in each empty row.  vals NULL: values left to the
    # caller.
    cdef int64_t r, p, k
    cdef int t
    for t in prange(nthreads, schedule='static', num_threads=nthreads):
        place_entries(ind, rank, vals, size, t * n // nthreads, (t + 1) * n // nthreads,
                      &counts[t * dense_rows], out_ind, out_vals, rim)
    for r in prange(dense_rows, schedule='static', num_threads=nthreads):
        if empty[r]:
            p = starts[r]
            out_ind[p * rank] = r
            for k in range(1, rank):
                out_ind[p * rank + k] = 0
            if vals != NULL:
                copy_item(out_vals + p * size, default, size)


cdef object read_only(cnp.ndarray a):
    # A read-only view of a: the fast path hands the inputs back, and no caller may write
    # through them into its inputs.
    cdef object v = a.view()
    v.flags.writeable = False
    return v


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
    """
    idx, vals, shape, default, out_dtype = _reference._fill_inputs(indices, values, dense_shape,
                                                                   default_value)
    requested = _thread_request(num_threads)
    cdef int64_t n = idx.shape[0]
    cdef int64_t rank = idx.shape[1]
    cdef int64_t dense_rows = int(shape[0])
    cdef cnp.ndarray ind = np.ascontiguousarray(idx.astype(np.int64, copy=False))
    cdef cnp.ndarray counts, starts, empty, out_ind, out_vals, rim, vals_k, default_k
    cdef int64_t bad, n_full = 0
    cdef bint fast = False
    cdef bint fixed = not out_dtype.hasobject and out_dtype.kind != "T"
    cdef Py_ssize_t size = out_dtype.itemsize
    cdef const char *vp = NULL
    cdef const char *dp = NULL
    cdef int nthreads = plan_threads(requested, n + dense_rows)
    with nogil:
        nthreads = enter_call(nthreads)
    try:
        counts = np.zeros((nthreads, dense_rows), dtype=np.int64)
        starts = np.empty(dense_rows, dtype=np.int64)
        empty = np.empty(dense_rows, dtype=np.bool_)
        with nogil:
            bad = plan_rows(<const int64_t *>cnp.PyArray_DATA(ind), n, rank, dense_rows,
                            nthreads, <int64_t *>cnp.PyArray_DATA(counts),
                            <int64_t *>cnp.PyArray_DATA(starts),
                            <uint8_t *>cnp.PyArray_DATA(empty), &n_full, &fast)
        if bad == ERR_NOMEM:
            raise MemoryError("sfer: could not allocate the kernel's work space")
        if bad >= 0:
            raise IndexError(
                f"indices[{bad}, 0] = {int(idx[bad, 0])} is out of range [0, {dense_rows})")
        vals_k = np.ascontiguousarray(vals, dtype=out_dtype)
        if fast:
            return FillResult(read_only(ind), read_only(vals_k), empty,
                              np.arange(n, dtype=np.int64))
        out_ind = np.empty((n_full, rank), dtype=np.int64)
        out_vals = np.empty(n_full, dtype=out_dtype)
        rim = np.empty(n, dtype=np.int64)
        if fixed:
            default_k = np.ascontiguousarray(default, dtype=out_dtype)
            vp = <const char *>cnp.PyArray_DATA(vals_k)
            dp = <const char *>cnp.PyArray_DATA(default_k)
        with nogil:
            place_all(<const int64_t *>cnp.PyArray_DATA(ind), n, rank, dense_rows, vp, size, dp,
                      nthreads, <int64_t *>cnp.PyArray_DATA(counts),
                      <const int64_t *>cnp.PyArray_DATA(starts),
                      <const uint8_t *>cnp.PyArray_DATA(empty),
                      <int64_t *>cnp.PyArray_DATA(out_ind), <char *>cnp.PyArray_DATA(out_vals),
                      <int64_t *>cnp.PyArray_DATA(rim))
        if not fixed:   # references (objects, StringDType): placed by NumPy, under the GIL
            out_vals[rim] = vals_k
            out_vals[starts[empty]] = default
        return FillResult(out_ind, out_vals, empty, rim)
    finally:
        with nogil:
            leave_call()
