"""The default thread count, sfer.get_num_threads(): OMP_NUM_THREADS, a threadpoolctl limit,
else the CPUs in the affinity mask capped by the cgroup CPU quota; num_threads=n overrides it.

The affinity and environment cases run in a child process (tests/_num_threads_child.py), so
that they see a fresh start-up and do not disturb this process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Optional

import numpy as np
import pytest

import sfer
import sfer._grad
import sfer._runtime
from sfer._runtime import _cpu_quota

CHILD = Path(__file__).resolve().parent / "_num_threads_child.py"
OPENMP = sfer.openmp_enabled()

needs_affinity = pytest.mark.skipif(
    not hasattr(os, "sched_setaffinity"), reason="os.sched_setaffinity is not available"
)


def large_call_threads(num_threads: Optional[int] = None) -> int:
    """The thread count a large call (N + N_full = 400,000) really ran with."""
    g = np.arange(200_000, dtype=np.float64)
    rim = np.arange(200_000, dtype=np.int64)
    res = sfer.sparse_fill_empty_rows_grad(rim, g, num_threads=num_threads)
    assert res.d_default_value == 0.0
    return int(sfer._runtime._last_threads())


def run_child(mode: str, tmp_path: Path, **env: str) -> dict[str, Any]:
    """Run the child in ``mode``.  OMP_NUM_THREADS is removed from its environment unless
    given in ``env``; SFER_CGROUP_ROOT points at an empty folder (no CPU quota) unless given,
    so that the host's quota does not enter the expected values."""
    empty = tmp_path / "no-cgroup"
    empty.mkdir(exist_ok=True)
    child_env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    child_env["SFER_CGROUP_ROOT"] = str(empty)
    child_env.update(env)
    proc = subprocess.run(
        [sys.executable, str(CHILD), mode],
        cwd=tmp_path,
        env=child_env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------------------------
# the cgroup CPU quota, against fixture files
# ---------------------------------------------------------------------------------------------


def write(root: Path, rel: str, text: str) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("max 100000\n", None),
        ("150000 100000\n", 2),
        ("50000 100000\n", 1),
        ("100000 100000\n", 1),
        ("100001 100000\n", 2),
        ("400000 100000\n", 4),
        ("1000 100000\n", 1),
        ("200000 50000", 4),
    ],
)
def test_quota_cgroup_v2(tmp_path, text, expected):
    write(tmp_path, "cpu.max", text)
    assert _cpu_quota(tmp_path) == expected
    assert _cpu_quota(str(tmp_path)) == expected


@pytest.mark.parametrize(
    "quota, period, expected",
    [
        ("-1\n", "100000\n", None),
        ("250000\n", "100000\n", 3),
        ("100000\n", "100000\n", 1),
        ("50000\n", "100000\n", 1),
        ("300000\n", "100000\n", 3),
    ],
)
@pytest.mark.parametrize("where", ["cpu/", ""])
def test_quota_cgroup_v1(tmp_path, quota, period, expected, where):
    write(tmp_path, where + "cpu.cfs_quota_us", quota)
    write(tmp_path, where + "cpu.cfs_period_us", period)
    assert _cpu_quota(tmp_path) == expected


@pytest.mark.parametrize(
    "files",
    [
        {},
        {"cpu.max": ""},
        {"cpu.max": "garbage"},
        {"cpu.max": "150000"},
        {"cpu.max": "150000 100000 7"},
        {"cpu.max": "1.5 1"},
        {"cpu.max": "150000 0"},
        {"cpu.max": "0 100000"},
        {"cpu.max": "-5 100000"},
        {"cpu.max": "150000 max"},
        {"cpu.max": "\xff\xfe 100000"},
        {"cpu/cpu.cfs_quota_us": "250000"},  # no period
        {"cpu/cpu.cfs_period_us": "100000"},  # no quota
        {"cpu/cpu.cfs_quota_us": "lots", "cpu/cpu.cfs_period_us": "100000"},
        {"cpu/cpu.cfs_quota_us": "250000", "cpu/cpu.cfs_period_us": "0"},
        {"cpu/cpu.cfs_quota_us": "250000", "cpu/cpu.cfs_period_us": ""},
        {"cpu.cfs_quota_us": "-1", "cpu.cfs_period_us": "100000"},
    ],
    ids=lambda files: repr(files),
)
def test_quota_missing_or_malformed_means_no_limit(tmp_path, files):
    for rel, text in files.items():
        write(tmp_path, rel, text)
    assert _cpu_quota(tmp_path) is None


def test_quota_unreadable_files_mean_no_limit(tmp_path):
    (tmp_path / "cpu.max").mkdir()  # a directory where a file should be: open() fails
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").mkdir()
    write(tmp_path, "cpu/cpu.cfs_period_us", "100000")
    assert _cpu_quota(tmp_path) is None
    assert _cpu_quota(tmp_path / "does-not-exist") is None


def test_quota_sources_in_order(tmp_path):
    # v2 first; then the v1 cpu controller's folder; then the v1 files at the root
    write(tmp_path, "cpu.cfs_quota_us", "700000")
    write(tmp_path, "cpu.cfs_period_us", "100000")
    assert _cpu_quota(tmp_path) == 7
    write(tmp_path, "cpu/cpu.cfs_quota_us", "500000")
    write(tmp_path, "cpu/cpu.cfs_period_us", "100000")
    assert _cpu_quota(tmp_path) == 5
    write(tmp_path, "cpu.max", "300000 100000")
    assert _cpu_quota(tmp_path) == 3
    write(tmp_path, "cpu.max", "max 100000")  # v2 with no limit: v1 leftovers do not count
    assert _cpu_quota(tmp_path) is None
    write(tmp_path, "cpu.max", "nonsense")  # a malformed source is skipped
    assert _cpu_quota(tmp_path) == 5


def test_quota_root_from_environment(tmp_path, monkeypatch):
    write(tmp_path, "cpu.max", "250000 100000")
    monkeypatch.setenv("SFER_CGROUP_ROOT", str(tmp_path))
    assert _cpu_quota() == 3


@needs_affinity
@pytest.mark.parametrize("cpu_max, cap", [("50000 100000", 1), ("150000 100000", 2)])
def test_quota_caps_the_default(tmp_path, cpu_max, cap):
    """End to end: SFER_CGROUP_ROOT with a quota, in a fresh process."""
    root = tmp_path / "cgroup"
    write(root, "cpu.max", cpu_max)
    rep = run_child("affinity", tmp_path, SFER_CGROUP_ROOT=str(root))
    if not rep["openmp"]:
        assert rep["start"]["get"] == rep["start"]["ran"] == 1
        return
    expected = min(cap, rep["n_affinity"])
    assert rep["start"] == {"get": expected, "ran": expected, "ran5": 5}
    assert rep["one"] == {"get": 1, "ran": 1, "ran5": 5}


# ---------------------------------------------------------------------------------------------
# the affinity mask, OMP_NUM_THREADS, fork
# ---------------------------------------------------------------------------------------------


@needs_affinity
def test_affinity_mask_sets_the_default(tmp_path):
    rep = run_child("affinity", tmp_path)
    if not rep["openmp"]:
        for key in ("start", "one", "restored"):
            assert rep[key]["get"] == rep[key]["ran"] == 1, rep
        return
    n = rep["n_affinity"]
    assert 1 <= n <= rep["cpu_count"]
    # all CPUs of the mask (no quota: SFER_CGROUP_ROOT is an empty folder)
    assert rep["start"] == {"get": n, "ran": n, "ran5": 5}, rep
    # one CPU, set after import: read on every call; num_threads=5 still wins
    assert rep["one"] == {"get": 1, "ran": 1, "ran5": 5}, rep
    # the whole mask again
    assert rep["restored"] == {"get": n, "ran": n, "ran5": 5}, rep


@needs_affinity
def test_omp_num_threads_wins_over_affinity(tmp_path):
    rep = run_child("affinity", tmp_path, OMP_NUM_THREADS="3")
    if not rep["openmp"]:
        assert rep["start"]["get"] == rep["one"]["get"] == 1
        return
    assert rep["omp_max"] == 3
    for key in ("start", "one", "restored"):
        assert rep[key] == {"get": 3, "ran": 3, "ran5": 5}, (key, rep)


@needs_affinity
def test_omp_num_threads_wins_over_quota(tmp_path):
    root = tmp_path / "cgroup"
    write(root, "cpu.max", "50000 100000")
    rep = run_child("affinity", tmp_path, OMP_NUM_THREADS="3", SFER_CGROUP_ROOT=str(root))
    if rep["openmp"]:
        assert rep["start"] == {"get": 3, "ran": 3, "ran5": 5}, rep


@needs_affinity
def test_num_threads_overrides_affinity_and_threadpoolctl_limit(tmp_path):
    pytest.importorskip("threadpoolctl")
    rep = run_child("limit", tmp_path)
    if not rep["openmp"]:
        for key in ("limited", "one_limited", "after"):
            assert rep[key]["get"] == rep[key]["ran"] == 1, rep
        return
    # the limit holds from the first call on (the start-up value is recorded at import)
    assert rep["limited"] == {"get": 1, "ran": 1, "ran5": 5}, rep
    assert rep["one_limited"] == {"get": 1, "ran": 1, "ran5": 5}, rep
    n = rep["n_affinity"]
    assert rep["after"] == {"get": n, "ran": n, "ran5": 5}, rep


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no os.fork")
def test_forked_child_reports_one_thread(tmp_path):
    rep = run_child("fork", tmp_path, OMP_NUM_THREADS="2")
    if rep["openmp"]:
        assert rep["parent"] == {"get": 2, "ran": 2, "ran5": 5}, rep
    assert rep["child"] == {"get": 1, "ran": 1, "ran5": 1}, rep


# ---------------------------------------------------------------------------------------------
# in this process: threadpoolctl, num_threads=n, the serial build
# ---------------------------------------------------------------------------------------------


def test_get_num_threads_is_exported_and_positive():
    assert "get_num_threads" in sfer.__all__
    n = sfer.get_num_threads()
    assert type(n) is int and n >= 1
    assert sfer._runtime._default_num_threads() == n
    assert large_call_threads() == n


def test_serial_build_uses_one_thread():
    assert sfer.get_num_threads() == 1 or sfer.openmp_enabled()


def test_runnable_cpus_are_the_available_cpus():
    # The CPUs that per-thread state is capped at (sfer._runtime.state_threads) are the default
    # count's rule 4 (affinity mask and quota), read from C; the test hook overrides them.
    sfer._runtime._set_cpus(0)
    assert sfer._runtime._runnable_cpus() == sfer._runtime._available_cpus()
    if hasattr(os, "sched_setaffinity"):
        before = os.sched_getaffinity(0)
        try:
            os.sched_setaffinity(0, {min(before)})
            assert sfer._runtime._runnable_cpus() == 1 == sfer._runtime._available_cpus()
        finally:
            os.sched_setaffinity(0, before)
    sfer._runtime._set_cpus(5)
    assert sfer._runtime._runnable_cpus() == 5


def test_small_calls_run_on_one_thread():
    g = np.arange(1000, dtype=np.float64)
    sfer.sparse_fill_empty_rows_grad(np.arange(1000), g, num_threads=4)
    assert sfer._runtime._last_threads() == 1


def test_threadpoolctl_limit_is_honoured_and_lifted():
    threadpoolctl = pytest.importorskip("threadpoolctl")
    before = sfer.get_num_threads()
    assert large_call_threads() == before
    with threadpoolctl.threadpool_limits(limits=1, user_api="openmp"):
        assert sfer.get_num_threads() == 1
        assert large_call_threads() == 1
        assert large_call_threads(5) == 5
    assert sfer.get_num_threads() == before
    assert large_call_threads() == before


@pytest.mark.skipif(not OPENMP, reason="a serial build has no OpenMP limit to raise")
def test_threadpoolctl_limit_above_the_default_is_honoured():
    """A limit is detected as a change of omp_get_max_threads(), not as a smaller count."""
    threadpoolctl = pytest.importorskip("threadpoolctl")
    start = sfer._runtime._record_start_max_threads()
    with threadpoolctl.threadpool_limits(limits=start + 1, user_api="openmp"):
        assert sfer._runtime.max_threads() == start + 1
        assert sfer.get_num_threads() == start + 1
        assert large_call_threads() == start + 1
