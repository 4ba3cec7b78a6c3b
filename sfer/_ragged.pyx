# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
# cython: initializedcheck=False
"""The ragged conversions, TensorFlow's ``RaggedTensor.to_sparse`` and
``RaggedTensor.from_sparse``: their kernels and entry points (private: call
``sfer.ragged_to_sparse`` and ``sfer.sparse_to_ragged``).

``ragged_to_sparse``: the splits of every level are scanned in parallel (each thread a chunk
of a level: the first decrease, the widest row), checked in TensorFlow's order, and then the
entries of the last level are cut into one contiguous slice per thread.  Each thread finds the
row of its first entry at every level by binary search, then walks its entries and rows
forward, writing ``indices`` (int64, ``[N * inner, k + values.ndim]``); one level of 1-D values
takes ``src/sfer_ragged.h``, which writes short rows in fixed steps (no branch per row's end).
No output depends on the thread count; the values are handed back as they are (a view),
flattened as TensorFlow flattens them.

``sparse_to_ragged``: one pass over the entries, one slice per thread: each entry is checked
(row in range, rows never decreasing, columns 0, 1, 2, ... within a row) and each first entry
of a row writes the splits of the rows between it and the row before.

The way through a call: the entry point -> a C acceptance check of the common case (exact
ndarrays: int64 splits or indices) or else ``sfer._ragged_inputs`` (converts and rejects, in
Python) -> the plan (``sfer._runtime``: ``plan_threads``, ``enter_call``/``leave_call``; a
call with nthreads == 1 never enters an OpenMP region) -> the kernels, which share one
``ragged_call`` context.
"""

cimport numpy as cnp
from cython.parallel cimport prange
from libc.stdint cimport int64_t, uint64_t
from libc.stdlib cimport free, malloc

from sfer._runtime cimport enter_call, leave_call, plan_threads, thread_request

import numpy as np

from sfer import _errors
from sfer._ragged_inputs import (check_splits, entry_error, indices_out, ragged_inputs,
                                 sparse_inputs)
from sfer._result import SparseCOO

cnp.import_array()

cdef extern from "numpy/arrayobject.h":
    # A view of the whole array with its own dtype and type (NULL, NULL).
    object PyArray_View(cnp.ndarray, void *, void *)

cdef extern from "src/sfer_ragged.h":
    void sfer_flat_rows(const int64_t *s, int64_t r, int64_t j0, int64_t j1,
                        int64_t *out) noexcept nogil

cdef object _tuple_new = tuple.__new__
cdef list _ONE_NAME = ["row_splits"]


ctypedef struct ragged_call:
    const int64_t **splits  # the k splits vectors, outermost first
    const int64_t *lens     # their lengths
    int64_t k
    int64_t n               # the entries of the last level: values.shape[0]
    int64_t inner           # the items of an entry: prod(values.shape[1:])
    int64_t ndims           # values.ndim - 1
    const int64_t *dims     # values.shape[1:]
    int64_t *out            # out: indices, [n * inner, k + 1 + ndims]


ctypedef struct level_scan:
    int64_t down            # out: the first i of the chunk with s[i] < s[i - 1], or -1
    uint64_t width          # out: the widest row of the chunk (meaningless if down >= 0)


# ---------------------------------------------------------------------------------------------
# Kernels (no GIL)

cdef void scan_chunk(const int64_t *s, int64_t i0, int64_t i1, level_scan *out) noexcept nogil:
    # out: out.  Rows i - 1 of s for max(i0, 1) <= i < i1: a branch-free pass, then a second
    # look for the first decrease only where there is one.
    cdef int64_t i
    cdef uint64_t w, width = 0
    cdef bint down = False
    for i in range(max(i0, 1), i1):
        down |= s[i] < s[i - 1]
        w = <uint64_t>s[i] - <uint64_t>s[i - 1]   # unsigned: no overflow, whatever s holds
        width = w if w > width else width
    out.width = width
    out.down = -1
    if down:
        for i in range(max(i0, 1), i1):
            if s[i] < s[i - 1]:
                out.down = i
                break


cdef void scan_levels(const ragged_call *c, int nthreads, level_scan *scans) noexcept nogil:
    # scans [k * nthreads]: out, chunk t of level d in scans[d * nthreads + t].
    cdef int q, d, t
    cdef int64_t m
    if nthreads == 1:
        for d in range(c.k):
            scan_chunk(c.splits[d], 0, c.lens[d], &scans[d])
        return
    for q in prange(c.k * nthreads, schedule='static', num_threads=nthreads):
        d = q // nthreads
        t = q % nthreads
        m = c.lens[d]
        scan_chunk(c.splits[d], t * m // nthreads, (t + 1) * m // nthreads, &scans[q])


cdef inline int64_t row_of(const int64_t *s, int64_t length, int64_t j) noexcept nogil:
    # The row of item j: the largest r < length - 1 with s[r] <= j (s checked: s[0] = 0 <= j
    # < s[length - 1]).
    cdef int64_t lo = 0, hi = length - 1, mid
    while hi - lo > 1:
        mid = lo + (hi - lo) // 2
        if s[mid] <= j:
            lo = mid
        else:
            hi = mid
    return lo


cdef void write_flat(const ragged_call *c, int64_t j0, int64_t j1) noexcept nogil:
    # One level, 1-D values: out[j] = [row, j - s[row]] for j0 <= j < j1 (src/sfer_ragged.h).
    sfer_flat_rows(c.splits[0], row_of(c.splits[0], c.lens[0], j0), j0, j1, c.out)


cdef void expand(int64_t *row, int64_t lead, const ragged_call *c, int64_t cols) noexcept nogil:
    # row: in/out, its first `lead` columns written.  The entry's c.inner index rows: the
    # same lead, then each item's position in values.shape[1:], in row-major order.
    cdef int64_t m, e, rem, q
    for m in range(c.inner):
        if m > 0:
            for e in range(lead):
                row[m * cols + e] = row[e]
        rem = m
        for e in range(c.ndims - 1, -1, -1):
            q = rem // c.dims[e]
            row[m * cols + lead + e] = rem - q * c.dims[e]
            rem = q


cdef void write_nested(const ragged_call *c, int64_t *pos, int64_t j0,
                       int64_t j1) noexcept nogil:
    # pos [k]: scratch (each level's current row).  Entries j0 <= j < j1 of any number of
    # levels, and values of any rank.
    cdef int64_t k = c.k, cols = c.k + 1 + c.ndims, j, d
    cdef const int64_t **s = c.splits
    cdef int64_t *row
    pos[k - 1] = row_of(s[k - 1], c.lens[k - 1], j0)
    for d in range(k - 2, -1, -1):
        pos[d] = row_of(s[d], c.lens[d], pos[d + 1])
    for j in range(j0, j1):
        while s[k - 1][pos[k - 1] + 1] <= j:
            pos[k - 1] += 1
        for d in range(k - 2, -1, -1):
            while s[d][pos[d] + 1] <= pos[d + 1]:
                pos[d] += 1
        row = c.out + j * c.inner * cols
        row[0] = pos[0]
        for d in range(1, k):
            row[d] = pos[d] - s[d - 1][pos[d - 1]]
        row[k] = j - s[k - 1][pos[k - 1]]
        if c.ndims > 0:
            expand(row, k + 1, c, cols)


cdef inline void write_part(const ragged_call *c, int64_t *pos, int64_t j0,
                            int64_t j1) noexcept nogil:
    if j0 >= j1:
        return
    if c.k == 1 and c.ndims == 0:
        write_flat(c, j0, j1)
    else:
        write_nested(c, pos, j0, j1)


cdef void write_all(const ragged_call *c, int nthreads, int64_t *scratch) noexcept nogil:
    # scratch [nthreads * k]: each thread's rows.  Thread t writes the entries
    # [t * n / nthreads, (t + 1) * n / nthreads).
    cdef int t
    cdef int64_t n = c.n
    if c.inner == 0 or n == 0:
        return
    if nthreads == 1:
        write_part(c, scratch, 0, n)
        return
    for t in prange(nthreads, schedule='static', num_threads=nthreads):
        write_part(c, scratch + t * c.k, t * n // nthreads, (t + 1) * n // nthreads)


cdef void sparse_slice(const int64_t *ind, int64_t rows, int64_t i0, int64_t i1,
                       int64_t *splits, int64_t *bad) noexcept nogil:
    # splits, bad: out.  Entries i0 <= i < i1 of int64 [N, 2] indices, each against the one
    # before it: bad[0] is the first that breaks a rule (or -1); the first entry of each row
    # writes the splits of the rows from the row before it.
    cdef int64_t i, r, col, q
    cdef int64_t prev_r = ind[2 * (i0 - 1)] if i0 > 0 else -1
    cdef uint64_t prev_c = <uint64_t>ind[2 * (i0 - 1) + 1] if i0 > 0 else 0
    bad[0] = -1
    for i in range(i0, i1):
        r = ind[2 * i]
        col = ind[2 * i + 1]
        if <uint64_t>r >= <uint64_t>rows or r < prev_r:
            bad[0] = i
            return
        if r == prev_r:
            if <uint64_t>col != prev_c + 1:
                bad[0] = i
                return
        else:
            if col != 0:
                bad[0] = i
                return
            for q in range(max(prev_r + 1, 0), r + 1):
                splits[q] = i
        prev_r = r
        prev_c = <uint64_t>col


# ---------------------------------------------------------------------------------------------
# ragged_to_sparse

cdef object check_scans(const ragged_call *c, int nthreads, level_scan *scans, list names,
                        list splits):
    # The splits' values, in sfer._ragged_inputs.check_splits' order; the widths (a list).
    cdef int64_t d, t, i, last
    cdef uint64_t width
    widths = [0] * c.k
    for d in range(c.k - 1, -1, -1):
        if c.lens[d] == 0 or c.splits[d][0] != 0:
            check_splits(splits[d:d + 1], names[d:d + 1], 0)   # raises
        width = 0
        for t in range(nthreads):
            i = scans[d * nthreads + t].down
            if i >= 0:
                raise ValueError(_errors.splits_decrease(names[d], i, c.splits[d][i - 1],
                                                         c.splits[d][i]))
            width = max(width, scans[d * nthreads + t].width)
        widths[d] = width
        last = c.splits[d][c.lens[d] - 1]
        if d == c.k - 1 and last != c.n:
            raise ValueError(_errors.splits_wrong_end(names[d], last, c.n,
                                                      "values (values.shape[0])"))
        if d < c.k - 1 and last != max(c.lens[d + 1] - 1, 0):
            raise ValueError(_errors.splits_wrong_end(
                names[d], last, max(c.lens[d + 1] - 1, 0),
                f"{names[d + 1]}'s rows (its length minus 1)"))
    return widths


cdef cnp.ndarray given_out(tuple want, cnp.npy_intp *dims, cnp.ndarray vals, list splits):
    # The caller's out= for indices [dims[0], dims[1]], if it can receive them (else the error).
    out, values, row_splits = want
    levels = (list(row_splits) if isinstance(row_splits, (list, tuple)) else [row_splits])
    return indices_out(out, (dims[0], dims[1]), [values, vals], levels + splits)


cdef object run_ragged(cnp.ndarray vals, list splits, list names, int requested, tuple want):
    # vals: >= 1-D; splits: int64 vectors, C-contiguous and aligned; names: theirs; want: None,
    # or (out, values, row_splits) as the caller gave them: indices go to out (checked here).
    cdef ragged_call c
    cdef int64_t d, cols, work
    cdef int nthreads
    cdef cnp.ndarray s, out
    cdef cnp.npy_intp dims2[2]
    cdef level_scan *scans = NULL
    cdef int64_t *scratch = NULL
    c.k = len(splits)
    c.n = cnp.PyArray_DIM(vals, 0)
    c.ndims = cnp.PyArray_NDIM(vals) - 1
    c.dims = <const int64_t *>(cnp.PyArray_DIMS(vals) + 1)   # npy_intp: int64 (64-bit only)
    c.inner = 1
    for d in range(c.ndims):
        c.inner *= c.dims[d]
    cols = c.k + 1 + c.ndims
    c.splits = <const int64_t **>malloc(c.k * sizeof(int64_t *))
    c.lens = <const int64_t *>malloc(c.k * sizeof(int64_t))
    if c.splits == NULL or c.lens == NULL:
        free(c.splits)
        free(<void *>c.lens)
        raise MemoryError(_errors.no_work_space())
    work = c.n * c.inner * cols
    for d in range(c.k):
        s = <cnp.ndarray>splits[d]
        c.splits[d] = <const int64_t *>cnp.PyArray_DATA(s)
        (<int64_t *>c.lens)[d] = cnp.PyArray_DIM(s, 0)
        work += c.lens[d]
    nthreads = plan_threads(requested, work)
    try:
        scans = <level_scan *>malloc(c.k * nthreads * sizeof(level_scan))
        scratch = <int64_t *>malloc(c.k * nthreads * sizeof(int64_t))
        if scans == NULL or scratch == NULL:
            raise MemoryError(_errors.no_work_space())
        with nogil:
            nthreads = enter_call(nthreads)
        try:
            with nogil:
                scan_levels(&c, nthreads, scans)
            widths = check_scans(&c, nthreads, scans, names, splits)
            dims2[0] = c.n * c.inner
            dims2[1] = cols
            out = (cnp.PyArray_EMPTY(2, dims2, cnp.NPY_INT64, 0) if want is None
                   else given_out(want, dims2, vals, splits))
            c.out = <int64_t *>cnp.PyArray_DATA(out)
            with nogil:
                write_all(&c, nthreads, scratch)
        finally:
            with nogil:
                leave_call()
    finally:
        free(scans)
        free(scratch)
        free(c.splits)
        free(<void *>c.lens)
    shape = np.array([cnp.PyArray_DIM(<cnp.ndarray>splits[0], 0) - 1] + widths
                     + [vals.shape[d] for d in range(1, c.ndims + 1)], dtype=np.int64)
    flat = PyArray_View(vals, NULL, NULL) if c.ndims == 0 else vals.reshape(-1)
    return _tuple_new(SparseCOO, (out, flat, shape))


cdef inline bint behaved(cnp.ndarray a) noexcept:
    # C-contiguous, aligned, native byte order: what the kernels read as it is.
    return cnp.PyArray_ISCARRAY_RO(a) and cnp.PyArray_ISNOTSWAPPED(a)


def ragged_to_sparse(values, row_splits, *, num_threads=None, out=None):
    """A ragged tensor (``values`` and its row splits) as a COO sparse tensor: exactly
    ``tf.RaggedTensor.from_nested_row_splits(values, row_splits).to_sparse()``.

    Parameters
    ----------
    values : array_like, shape (N, ...)
        The flat values, any dtype; dimensions after the first are uniform inner dimensions.
    row_splits : array_like of integers, or a sequence of them
        One splits vector (``len = rows + 1``), or one per ragged dimension, outermost first.
        Each starts at 0, never decreases and ends at the length of the next level (the
        last: ``N``).
    num_threads : int, optional
        As for :func:`sfer.sparse_fill_empty_rows`; the result is the same for every value.
    out : numpy.ndarray, optional
        Where to write ``indices``: int64 (native byte order), of their shape
        ``(N * inner, k + values.ndim)``, writeable, C-contiguous and aligned, sharing no
        memory with ``values`` or the splits; returned as ``indices``. A pipeline that
        converts batches of one size can pass the same array each time: a new ``indices``
        costs the kernel's zeroing of its fresh pages, most of the call's time on large
        inputs (:doc:`ragged`). A call that raises leaves it as it was.

    Returns
    -------
    SparseCOO
        ``(indices, values, dense_shape)``: int64 ``[N * inner, k + values.ndim]`` in
        row-major order (``inner``: the items of ``values.shape[1:]``); ``values`` flattened
        (a view of the input where NumPy can make one); int64 ``dense_shape``, the bounding
        shape ``[rows, widest row of each ragged dimension..., values.shape[1:]...]``.
        ``sfer.sparse_fill_empty_rows(*coo, default_value)`` takes it as it is.

    Raises
    ------
    TypeError, ValueError
        Splits that are not integer vectors, or that do not start at 0, decrease or end
        elsewhere than the next level's length (innermost level first, as TensorFlow checks);
        values of no dimension; an ``out`` that cannot receive ``indices`` (checked after the
        inputs).
    """
    cdef cnp.ndarray vals, s
    if type(values) is cnp.ndarray and type(row_splits) is cnp.ndarray:
        vals = <cnp.ndarray>values
        s = <cnp.ndarray>row_splits
        if (cnp.PyArray_NDIM(vals) >= 1 and cnp.PyArray_NDIM(s) == 1 and behaved(s)
                and cnp.PyArray_TYPE(s) == cnp.NPY_INT64):
            return run_ragged(vals, [s], _ONE_NAME, thread_request(num_threads),
                              None if out is None else (out, values, row_splits))
    vals, splits, names = ragged_inputs(values, row_splits)
    return run_ragged(vals, splits, names, thread_request(num_threads),
                      None if out is None else (out, values, row_splits))


# ---------------------------------------------------------------------------------------------
# sparse_to_ragged

cdef object run_sparse(cnp.ndarray ind, cnp.ndarray vals, int64_t rows, object given,
                       int requested):
    # ind: int64 [N, 2], C-contiguous and aligned; given: the indices as the caller gave them.
    cdef int64_t n = cnp.PyArray_DIM(ind, 0), q, bad = -1, last
    cdef const int64_t *ip = <const int64_t *>cnp.PyArray_DATA(ind)
    cdef cnp.npy_intp length = rows + 1
    cdef int nthreads = plan_threads(requested, 2 * n + rows)
    cdef int t
    cdef int64_t *bads
    cdef int64_t *sp
    if rows >= 0x0fffffffffffffff:
        raise MemoryError(_errors.rows_too_many(rows, (rows + 1) * 8, 8))
    splits = cnp.PyArray_EMPTY(1, &length, cnp.NPY_INT64, 0)
    sp = <int64_t *>cnp.PyArray_DATA(splits)
    bads = <int64_t *>malloc(nthreads * sizeof(int64_t))
    if bads == NULL:
        raise MemoryError(_errors.no_work_space())
    with nogil:
        nthreads = enter_call(nthreads)
        if nthreads == 1:
            sparse_slice(ip, rows, 0, n, sp, bads)
        else:
            for t in prange(nthreads, schedule='static', num_threads=nthreads):
                sparse_slice(ip, rows, t * n // nthreads, (t + 1) * n // nthreads, sp, &bads[t])
        for t in range(nthreads):
            if bads[t] >= 0:
                bad = bads[t]
                break
        if bad < 0:
            last = ip[2 * (n - 1)] if n > 0 else -1
            for q in range(last + 1, rows + 1):
                sp[q] = n
        leave_call()
    free(bads)
    if bad >= 0:
        raise entry_error(ind, given, bad, rows)
    return PyArray_View(vals, NULL, NULL), splits


def sparse_to_ragged(indices, values, dense_shape, *, num_threads=None):
    """A rank-2 COO sparse tensor as ``(values, row_splits)``: exactly
    ``tf.RaggedTensor.from_sparse``.

    Parameters
    ----------
    indices : array_like of integers, shape (N, 2)
        In row-major order, right-ragged: the columns of each row are ``0, 1, ..., k - 1``.
    values : array_like, shape (N,)
    dense_shape : array_like of integers, shape (2,)
        ``dense_shape[0]`` is the number of rows (``dense_shape[1]`` is not used, as in
        TensorFlow).
    num_threads : int, optional
        As for :func:`sfer.sparse_fill_empty_rows`; the result is the same for every value.

    Returns
    -------
    tuple
        ``(values, row_splits)``: ``values`` (a view of the input) and int64 ``row_splits``
        of length ``dense_shape[0] + 1``.

    Raises
    ------
    ValueError
        A rank other than 2, rows out of order, a row whose columns are not ``0, 1, ...``
        (TensorFlow's "not right-ragged"); the message names the first such entry.
    IndexError
        A row outside ``[0, dense_shape[0])``.
    """
    cdef cnp.ndarray ind, vals
    ind, vals, given, rows = sparse_inputs(indices, values, dense_shape)
    return run_sparse(ind, vals, rows, given, thread_request(num_threads))
