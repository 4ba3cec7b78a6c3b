# cython: language_level=3
"""The runtime all of sfer's ops share (private): thread policy, calls in flight, fork state.

Thread policy, in two steps:

1. ``plan_threads`` (with the GIL, before a kernel runs): 1 for a call on little work
   (``SERIAL_BELOW``) and in a child created by ``fork()``; else ``num_threads`` when the user
   gave it, or the default (``sfer.get_num_threads()``: ``OMP_NUM_THREADS`` or a threadpoolctl
   limit when set, else the CPUs this process may use).
2. ``enter_call`` (without the GIL, as the kernel starts): that count shared out among the
   calls in flight at that moment, ``max(1, count // calls)``, so that many Python threads
   calling sfer at once do not oversubscribe the cores; ``leave_call`` when it ends.

Fork safety: GNU libgomp hangs a forked child that enters a parallel region after the parent
already ran one (its thread pool does not survive fork).  A child created by fork() therefore
runs every call on one thread, never entering OpenMP.  Processes started by spawn or
forkserver are not affected.
"""

import os

from sfer._openmp cimport SFER_HAVE_OPENMP, omp_get_max_threads
from sfer._threads import _default_num_threads

cdef extern from "src/sfer_atomic.h":
    int sfer_atomic_add(int *p, int v) noexcept nogil
    int sfer_atomic_load(int *p) noexcept nogil
    void sfer_atomic_store(int *p, int v) noexcept nogil

cdef bint _forked_child = False
cdef int _calls = 0             # calls in their kernels right now, all threads, all ops
cdef int _last_nthreads = 0     # the thread count the latest call ran with (a test hook)


def _after_fork_in_child():
    global _forked_child
    _forked_child = True
    sfer_atomic_store(&_calls, 0)


os.register_at_fork(after_in_child=_after_fork_in_child)


cdef int plan_threads(int num_threads, int64_t work) except -1:
    if work < SERIAL_BELOW or _forked_child:
        return 1
    if num_threads <= 0:
        return _default_num_threads()
    return num_threads


cdef int enter_call(int nthreads) noexcept nogil:
    cdef int active = sfer_atomic_add(&_calls, 1)
    nthreads = max(1, nthreads // active)
    sfer_atomic_store(&_last_nthreads, nthreads)
    return nthreads


cdef void leave_call() noexcept nogil:
    sfer_atomic_add(&_calls, -1)


def in_forked_child():
    """True in a process created by fork() from one that had imported sfer (runs serially)."""
    return bool(_forked_child)


def openmp_enabled():
    """True when this build of sfer runs its kernels with OpenMP threads."""
    return bool(SFER_HAVE_OPENMP)


def max_threads():
    """OpenMP's ``omp_get_max_threads()`` (1 in a serial build)."""
    return omp_get_max_threads()


def _last_threads():
    """The thread count the latest kernel call ran with, after the small-input, fork and
    sharing rules (a test hook; racy when several Python threads call sfer at once)."""
    return sfer_atomic_load(&_last_nthreads)
