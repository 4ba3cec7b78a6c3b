# The process-wide runtime that every op shares (its sole owner: sfer/_runtime.pyx): the thread
# policy, the count of calls in flight, the fork state.  Ops cimport these; being one module,
# the state is one, whichever op runs.

from libc.stdint cimport int64_t

cdef enum:
    SERIAL_BELOW = 65536    # a call on less work than this (items read + written) runs on one
                            # thread: a parallel region would cost more than it saves
    MAX_THREADS = 256       # num_threads above this is taken as this: asking GNU libgomp for
                            # tens of thousands of threads crashes the process

cpdef int thread_request(object num_threads) except -1
cdef int plan_threads(int num_threads, int64_t work) except -1
cdef int enter_call(int nthreads) noexcept nogil
cdef void leave_call() noexcept nogil
cdef int counting_threads(int nthreads, int64_t rows, int counter_bytes, int64_t entries,
                          int64_t entry_bytes) noexcept nogil
cdef int runnable_cpus() except -1
cdef int state_threads(int nthreads, int cpus) noexcept nogil
