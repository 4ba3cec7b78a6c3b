"""The default thread count: what a call with ``num_threads=None`` uses.

:func:`get_num_threads` applies this rule, in order:

1. A serial build (``sfer.openmp_enabled()`` is False), or a process created by ``fork()``
   (where sfer runs every call on one thread, see ``sfer._runtime``): 1.
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

from __future__ import annotations

import os
from types import ModuleType
from typing import Optional, Union

__all__ = ["get_num_threads"]

_CGROUP_ROOT = "/sys/fs/cgroup"

# OpenMP reads OMP_NUM_THREADS when its runtime is loaded, which is when sfer._runtime (whose
# module init imports this module) is loaded: read it at the same moment.  libgomp ignores an
# empty value.
_OMP_NUM_THREADS_SET = bool(os.environ.get("OMP_NUM_THREADS", "").strip())

_core: Optional[ModuleType] = None  # sfer._runtime, imported lazily (it imports
# this module)
_start_max_threads: Optional[int] = None  # omp_get_max_threads() when sfer was imported
_quota_cached = False
_quota: Optional[int] = None


def _core_module() -> ModuleType:
    global _core
    if _core is None:
        from sfer import _runtime as core

        _core = core
    return _core


def _record_start_max_threads() -> int:
    """omp_get_max_threads() as sfer starts: recorded by sfer/__init__.py right after it
    imports sfer._runtime (or, failing that, on the first call that asks)."""
    global _start_max_threads
    if _start_max_threads is None:
        _start_max_threads = int(_core_module().max_threads())
    return _start_max_threads


def _read_small(path: str) -> Optional[str]:
    try:
        with open(path, encoding="ascii") as f:
            return f.read(256)
    except (OSError, ValueError):  # missing, unreadable, not text
        return None


def _quota_period(root: str) -> Optional[tuple[int, int]]:
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


def _cpu_quota(root: Union[str, os.PathLike[str], None] = None) -> Optional[int]:
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


def _cached_cpu_quota() -> Optional[int]:
    global _quota, _quota_cached
    if not _quota_cached:
        _quota = _cpu_quota()
        _quota_cached = True
    return _quota


def _available_cpus() -> int:
    """CPUs in this thread's affinity mask (os.cpu_count() where there is no such call),
    capped by the cgroup CPU quota; at least 1."""
    try:
        count = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # no sched_getaffinity on this platform
        count = os.cpu_count() or 1
    quota = _cached_cpu_quota()
    if quota is not None:
        count = min(count, quota)
    return max(1, count)


def _default_num_threads() -> int:
    """The thread count of a large call with ``num_threads=None`` (before it is shared out
    among the calls in flight).  sfer._runtime calls this once per such call, never in a forked
    child: it costs one ``sched_getaffinity`` call and no file reads after the first."""
    core = _core_module()
    if not core.openmp_enabled():
        return 1
    omp = int(core.max_threads())
    if _OMP_NUM_THREADS_SET or omp != _record_start_max_threads():
        return max(1, omp)
    return _available_cpus()


def get_num_threads() -> int:
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
    if _core_module().in_forked_child():
        return 1
    return _default_num_threads()
