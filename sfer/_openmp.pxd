# The one place sfer touches the OpenMP runtime.  Without OpenMP (a serial build, or a compiler
# that lacks it) every call falls back to a no-op that describes a single thread, and Cython's
# prange compiles to a plain loop.

cdef extern from *:
    """
    #ifdef _OPENMP
    #include <omp.h>
    #define SFER_HAVE_OPENMP 1
    #else
    #define SFER_HAVE_OPENMP 0
    static inline int omp_get_max_threads(void) { return 1; }
    static inline int omp_get_thread_num(void) { return 0; }
    static inline int omp_get_num_threads(void) { return 1; }
    #endif
    """
    const int SFER_HAVE_OPENMP
    int omp_get_max_threads() noexcept nogil
    int omp_get_thread_num() noexcept nogil
    int omp_get_num_threads() noexcept nogil
