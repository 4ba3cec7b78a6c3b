"""pytest configuration for the sfer suite.

The suite tests the INSTALLED package: the repository root (and the current
directory, when it is the repository root) are removed from sys.path before
anything imports sfer, so ``python -m pytest`` cannot pick up the source tree.
tests/ has no __init__.py; pytest's default "prepend" import mode puts tests/
on sys.path, which is how ``import oracle`` / ``import checks`` work.

Hypothesis profiles (select with HYPOTHESIS_PROFILE=<name>):
  ci    (default) moderate number of examples, no deadline
  long  many examples, for soak runs
  dev   few examples, for quick local iterations
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def _strip_repo_from_sys_path() -> None:
    keep = []
    for entry in sys.path:
        try:
            resolved = Path(entry or os.getcwd()).resolve()
        except OSError:  # pragma: no cover
            keep.append(entry)
            continue
        if resolved == REPO_ROOT:
            continue
        keep.append(entry)
    sys.path[:] = keep
    # make ``import oracle`` work under any --import-mode
    tests_dir = str(Path(__file__).resolve().parent)
    if tests_dir not in sys.path:
        sys.path.insert(0, tests_dir)


_strip_repo_from_sys_path()

from hypothesis import HealthCheck, settings  # noqa: E402

_common = dict(
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile("ci", max_examples=60, **_common)
settings.register_profile("long", max_examples=2000, **_common)
settings.register_profile("dev", max_examples=15, **_common)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(autouse=True)
def _cpus_of_a_large_machine():
    """Past MAX_BITMAPS threads the grad's marking path, and the forward op's partition slices,
    depend on the CPUs this process may use (``sfer._runtime.state_threads``).  Every test runs
    as on a machine with MAX_THREADS CPUs, so that its paths are those of its num_threads on
    any machine; tests of that rule set the count themselves (``sfer._runtime._set_cpus``)."""
    import sfer._grad
    import sfer._runtime

    sfer._runtime._set_cpus(sfer._grad._constants()["MAX_THREADS"])
    yield
    sfer._runtime._set_cpus(0)


@pytest.fixture
def rng() -> np.random.Generator:
    """A fixed-seed generator: deterministic test data."""
    return np.random.default_rng(20240601)


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


def pytest_report_header(config):
    try:
        import sfer

        where = sfer.__file__
        omp = sfer.openmp_enabled()
        version = sfer.__version__
    except Exception as exc:  # noqa: BLE001 - header only; tests will fail loudly
        return f"sfer: import failed: {exc!r}"
    return f"sfer {version} from {where} (openmp_enabled={omp})"
