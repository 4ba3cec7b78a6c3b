# cython: language_level=3
"""The runtime all of sfer's ops share (private): the thread policy, calls in flight, fork
state.  It is the one home of every thread rule; ``sfer.get_num_threads`` is defined here.

Thread policy, in three steps:

1. ``thread_request`` (with the GIL, as the call is checked): the user's ``num_threads`` as a
   request, 0 for the default (``None``), capped at ``MAX_THREADS``; TypeError/ValueError for
   anything else.
2. ``plan_threads`` (with the GIL, before a kernel runs): 1 for a call on little work
   (``SERIAL_BELOW``) and in a child created by ``fork()``; else the request, or the default
   (:func:`get_num_threads`'s rule, see there).
3. ``enter_call`` (without the GIL, as the kernel starts): that count shared out among the
   calls in flight at that moment, ``max(1, count // calls)``, so that many Python threads
   calling sfer at once do not oversubscribe the cores; ``leave_call`` when it ends.

An op may use fewer threads than planned where its own work says so: the forward op's
counting path asks ``counting_threads``; where each thread keeps state of its own (the grad's
bitmaps past ``MAX_BITMAPS`` threads, the forward op's slices of entries on every path), the op
asks ``state_threads``: no more such threads than the CPUs this process may use
(``runnable_cpus``), since more could not run at once and would only add state and passes.

Fork safety: GNU libgomp hangs a forked child that enters a parallel region after the parent
already ran one (its thread pool does not survive fork).  A child created by fork() therefore
runs every call on one thread, never entering OpenMP.  Processes started by spawn or
forkserver are not affected.

The default count (rule of :func:`get_num_threads`), in order:

1. A serial build (``sfer.openmp_enabled()`` is False), or a process created by ``fork()``: 1.
2. ``OMP_NUM_THREADS`` was set (to a non-empty value) in the environment when sfer was
   imported: OpenMP's ``omp_get_max_threads()``.  OpenMP reads the variable at start-up and
   parses it (``"4,2"`` and the like are OpenMP's business).
3. A thread limit is active: someone called ``omp_set_num_threads`` (this is what
   ``threadpoolctl.threadpool_limits(n, user_api="openmp")`` does): ``omp_get_max_threads()``.
   It is detected as ``omp_get_max_threads()`` differing from the value it had when sfer was
   imported.  Limitation: a limit equal to that start-up value cannot be told apart from no
   limit; then rule 4 applies (which gives the same count unless the affinity mask or the
   CPU quota is smaller).  In GNU libgomp ``omp_set_num_threads`` is per thread, so a limit
   reaches the calls made from the Python thread that set it.
4. Otherwise: the CPUs this process may run on, which containers and batch schedulers set
   below the machine's CPU count: the CPUs in the affinity mask (``os.sched_getaffinity(0)``,
   read on every call because it can change; ``os.cpu_count()`` where that does not exist),
   capped by the cgroup CPU quota rounded up (cgroup v2 ``cpu.max``, cgroup v1
   ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us``).  This is the count that loky/joblib,
   scikit-learn and the JVM use.

The result is never less than 1.

The quota is read once, from the files of the cgroup root ``/sys/fs/cgroup`` (where a
container sees its own cgroup): ``cpu.max``, then ``cpu/cpu.cfs_quota_us`` with
``cpu/cpu.cfs_period_us``, then ``cpu.cfs_quota_us`` with ``cpu.cfs_period_us``; the first that
can be read and parsed decides.  Missing, unreadable or malformed files mean no limit; nothing
here raises.  The quota of a nested cgroup (a systemd slice on a host) is not looked for.

For tests: :func:`_cpu_quota` takes the root to read as a parameter (and caches nothing), and
the private environment variable ``SFER_CGROUP_ROOT``, read on the first call that needs the
quota, points the cached reader at another root.
"""

import operator
import os

import numpy as np

from sfer._openmp cimport SFER_HAVE_OPENMP, omp_get_max_threads

from sfer import _errors

cdef extern from "src/sfer_cpus.h":
    int sfer_affinity_cpus() noexcept nogil

cdef extern from "src/sfer_atomic.h":
    int sfer_atomic_add(int *p, int v) noexcept nogil
    int sfer_atomic_load(int *p) noexcept nogil
    void sfer_atomic_store(int *p, int v) noexcept nogil

__all__ = ["get_num_threads"]

cdef bint _forked_child = False
cdef int _calls = 0             # calls in their kernels right now, all threads, all ops
cdef int _last_nthreads = 0     # the thread count the latest call ran with (a test hook)
cdef int _cpus_override = 0     # runnable_cpus()'s answer when > 0 (a test hook: _set_cpus)

_CGROUP_ROOT = "/sys/fs/cgroup"

# OpenMP reads OMP_NUM_THREADS when its runtime is loaded, which is when this module is
# loaded: read it at the same moment.  libgomp ignores an empty value.
cdef bint _omp_num_threads_set = bool(os.environ.get("OMP_NUM_THREADS", "").strip())
cdef int _start_max_threads = omp_get_max_threads()   # OpenMP's count when sfer was imported
cdef bint _quota_cached = False
cdef object _quota = None


def _after_fork_in_child():
    global _forked_child
    _forked_child = True
    sfer_atomic_store(&_calls, 0)


os.register_at_fork(after_in_child=_after_fork_in_child)


# ---------------------------------------------------------------------------------------------
# The request, the plan, the calls in flight

cpdef int thread_request(object num_threads) except -1:
    """``num_threads`` as :func:`plan_threads` takes it (0: the default), capped at
    ``MAX_THREADS``; TypeError/ValueError for anything but None or an int >= 1."""
    cdef object n
    if num_threads is None:
        return 0
    if type(num_threads) is int and num_threads >= 1:
        return min(<object>num_threads, MAX_THREADS)
    if isinstance(num_threads, (bool, np.bool_)):
        raise TypeError(_errors.num_threads_bool(num_threads))
    try:
        n = operator.index(num_threads)
    except TypeError:
        raise TypeError(_errors.num_threads_type(num_threads)) from None
    if n < 1:
        raise ValueError(_errors.num_threads_below_one(n))
    return min(n, MAX_THREADS)


cdef int plan_threads(int num_threads, int64_t work) except -1:
    if work < SERIAL_BELOW or _forked_child:
        return 1
    if num_threads <= 0:
        return default_threads()
    return num_threads


cdef int enter_call(int nthreads) noexcept nogil:
    cdef int active = sfer_atomic_add(&_calls, 1)
    nthreads = max(1, nthreads // active)
    sfer_atomic_store(&_last_nthreads, nthreads)
    return nthreads


cdef void leave_call() noexcept nogil:
    sfer_atomic_add(&_calls, -1)


cdef int counting_threads(int nthreads, int64_t rows, int counter_bytes, int64_t entries,
                          int64_t entry_bytes) noexcept nogil:
    # The threads that count rows on the forward op's counting path: at most nthreads, and
    # fewer while their counters (rows * counter_bytes each) would take more memory than the
    # outputs (entries * entry_bytes).
    cdef int tc = nthreads
    while tc > 1 and <double>tc * rows * counter_bytes > <double>entries * entry_bytes:
        tc -= 1
    return tc


cdef int runnable_cpus() except -1:
    # The CPUs this process may use (the default count's rule 4, _available_cpus: the affinity
    # mask, capped by the cgroup CPU quota), or the test hook's count.  Threads beyond it cannot
    # run at once.  One sched_getaffinity call from C (Python's builds a set: about 1 us).
    cdef int n
    if _cpus_override > 0:
        return _cpus_override
    n = sfer_affinity_cpus()
    if n <= 0:
        return _available_cpus()
    quota = _cached_cpu_quota()
    return max(1, n if quota is None else min(n, quota))


cdef int state_threads(int nthreads, int cpus) noexcept nogil:
    # The threads of nthreads that keep state of their own (bitmaps, slices, work spaces): no
    # more than cpus (runnable_cpus), and at least 1.  The results never depend on it.
    return max(1, min(nthreads, cpus))


def _runnable_cpus():
    """``runnable_cpus()``: the CPUs that ``state_threads`` caps per-thread state at (a test
    hook)."""
    return runnable_cpus()


def _set_cpus(n):
    """Make ``runnable_cpus`` answer ``n`` (0: the real count again); a test hook, so that
    the paths ``state_threads`` picks do not depend on the machine."""
    global _cpus_override
    _cpus_override = max(0, int(n))


# ---------------------------------------------------------------------------------------------
# The default count

cdef int default_threads() except -1:
    # The thread count of a large call with num_threads=None (before it is shared out among
    # the calls in flight), never asked in a forked child: one sched_getaffinity call and no
    # file reads after the first.
    cdef int omp
    if not SFER_HAVE_OPENMP:
        return 1
    omp = omp_get_max_threads()
    if _omp_num_threads_set or omp != _start_max_threads:
        return max(1, omp)
    return _available_cpus()


def _default_num_threads():
    """The thread count of a large call with ``num_threads=None`` (a test hook)."""
    return default_threads()


def _record_start_max_threads():
    """omp_get_max_threads() as sfer started (recorded when this module was loaded)."""
    return _start_max_threads


def get_num_threads():
    """The number of threads a call with ``num_threads=None`` uses on a large input
    (``N + N_full >= 65536``; smaller inputs run on one thread) when no other call is in
    flight (concurrent calls share it out: ``count // calls in flight``, at least 1).

    * 1 in a serial build (``sfer.openmp_enabled()`` False) and in a process created by
      ``fork()``;
    * ``omp_get_max_threads()`` if ``OMP_NUM_THREADS`` was set when sfer was imported, or if a
      limit set with ``threadpoolctl.threadpool_limits(n, user_api="openmp")`` (or
      ``omp_set_num_threads``) is active; a limit equal to the value OpenMP had when sfer was
      imported cannot be detected;
    * otherwise the number of CPUs in the process's affinity mask (``os.sched_getaffinity``),
      capped by the container's cgroup CPU quota (``cpu.max`` or ``cpu.cfs_quota_us`` /
      ``cpu.cfs_period_us``, rounded up), as loky/joblib, scikit-learn and the JVM count.

    Never less than 1.  An explicit ``num_threads=n`` overrides all of this.
    """
    if _forked_child:
        return 1
    return default_threads()


def _affinity_cpus():
    """The CPUs in this thread's affinity mask (``os.cpu_count()`` where there is no such
    call); at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # no sched_getaffinity on this platform
        return os.cpu_count() or 1


def _available_cpus():
    """:func:`_affinity_cpus`, capped by the cgroup CPU quota; at least 1."""
    count = _affinity_cpus()
    quota = _cached_cpu_quota()
    if quota is not None:
        count = min(count, quota)
    return max(1, count)


def describe_threads(num_threads):
    """What the ``sfer`` demo prints for the threads of a call with ``num_threads`` (None or
    the ``--num-threads`` value)."""
    if not SFER_HAVE_OPENMP:
        return "1 (built without OpenMP; --num-threads has no effect)"
    if num_threads is not None:
        return f"{num_threads} (--num-threads)"
    if os.environ.get("OMP_NUM_THREADS"):
        return (f"{get_num_threads()} (sfer.get_num_threads(); "
                f"OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']})")
    return (f"{get_num_threads()} (sfer.get_num_threads(); OMP_NUM_THREADS "
            f"unset; {_affinity_cpus()} CPUs in the affinity mask)")


# ---------------------------------------------------------------------------------------------
# The cgroup CPU quota

def _read_small(path):
    try:
        with open(path, encoding="ascii") as f:
            return f.read(256)
    except (OSError, ValueError):  # missing, unreadable, not text
        return None


def _quota_period(root):
    """(quota_us, period_us) from the first readable, well-formed source under ``root``;
    quota -1 means no limit.  None when there is none."""
    text = _read_small(os.path.join(root, "cpu.max"))  # cgroup v2: "max 100000" or "150000 100000"
    if text is not None:
        fields = text.split()
        if len(fields) == 2:
            try:
                return (-1 if fields[0] == "max" else int(fields[0])), int(fields[1])
            except ValueError:
                pass
    for sub in ("cpu", ""):  # cgroup v1: the cpu controller's mount, or the root itself
        quota = _read_small(os.path.join(root, sub, "cpu.cfs_quota_us"))
        period = _read_small(os.path.join(root, sub, "cpu.cfs_period_us"))
        if quota is not None and period is not None:
            try:
                return int(quota), int(period)
            except ValueError:
                pass
    return None


def _cpu_quota(root=None):
    """The cgroup CPU quota under ``root`` as a CPU count, quota / period rounded up (at least
    1), or None for no limit (also when the files are missing, unreadable or malformed).

    ``root`` defaults to ``$SFER_CGROUP_ROOT`` or else ``/sys/fs/cgroup``.  Reads the files on
    every call; :func:`get_num_threads` caches the answer.
    """
    if root is None:
        root = os.environ.get("SFER_CGROUP_ROOT") or _CGROUP_ROOT
    qp = _quota_period(os.fspath(root))
    if qp is None:
        return None
    quota, period = qp
    if quota <= 0 or period <= 0:  # -1: no limit; anything else <= 0 is malformed
        return None
    return max(1, -(-quota // period))


def _cached_cpu_quota():
    global _quota, _quota_cached
    if not _quota_cached:
        _quota = _cpu_quota()
        _quota_cached = True
    return _quota


# ---------------------------------------------------------------------------------------------
# Questions about the build and the process

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
