"""Packaging: version, installed location, typing files, the CLI."""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import numpy as np
import pytest

import sfer
import sfer._fill
import sfer._grad
import sfer._runtime
from reference import index_error_message, reference_grad, scalar_bits

REPO_ROOT = Path(__file__).resolve().parents[1]
PKG_DIR = Path(sfer.__file__).resolve().parent


def test_version():
    assert sfer.__version__ == "0.1.0"
    assert importlib.metadata.version("sfer") == "0.1.0"
    assert sfer.__version__ == importlib.metadata.version("sfer")


def test_imported_from_installed_package_not_checkout():
    pkg = Path(sfer.__file__).resolve()
    assert not pkg.is_relative_to(REPO_ROOT), (
        f"sfer was imported from the source tree ({pkg}); the tests must run "
        f"against the installed wheel"
    )
    for module in (sfer._grad, sfer._fill, sfer._runtime):
        path = Path(module.__file__).resolve()
        assert not path.is_relative_to(REPO_ROOT), path
        assert path.parent == PKG_DIR


def test_public_api():
    assert callable(sfer.sparse_fill_empty_rows_grad)
    assert callable(sfer.openmp_enabled)
    assert issubclass(sfer.GradResult, tuple)
    assert sfer.GradResult._fields == ("d_values", "d_default_value")
    for name in ("sparse_fill_empty_rows_grad", "GradResult", "openmp_enabled", "__version__"):
        assert hasattr(sfer, name)
        if hasattr(sfer, "__all__"):
            assert name in sfer.__all__


def test_typing_files_installed():
    assert (PKG_DIR / "py.typed").is_file()
    assert "def sparse_fill_empty_rows_grad" in (PKG_DIR / "_grad.pyi").read_text()
    assert "def openmp_enabled" in (PKG_DIR / "_runtime.pyi").read_text()


def test_distribution_files_listed():
    files = {str(f).replace("\\", "/") for f in importlib.metadata.files("sfer") or []}
    assert "sfer/py.typed" in files
    for name in ("_grad", "_fill", "_runtime"):
        assert f"sfer/{name}.pyi" in files
        assert any(f.startswith(f"sfer/{name}.") and f.endswith((".so", ".pyd")) for f in files)
    # the sources an sdist-less rebuild or a cimport needs travel too
    assert "sfer/_common.pxd" in files and "sfer/_runtime.pxd" in files
    assert any(f.startswith("sfer/src/") and f.endswith(".h") for f in files)


def test_console_script_entry_point():
    eps = importlib.metadata.entry_points(group="console_scripts")
    matches = [ep for ep in eps if ep.name == "sfer"]
    assert len(matches) == 1
    assert matches[0].value.startswith("sfer")


# --------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------

def sfer_command() -> str:
    """Path of the installed ``sfer`` console script."""
    candidates = [
        Path(sysconfig.get_path("scripts")) / "sfer",
        Path(sys.executable).parent / "sfer",
    ]
    for c in candidates:
        if c.is_file():
            return str(c)
    pytest.fail(f"the 'sfer' console script is not installed (looked in {candidates})")


def run(args, cwd, **kw):
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    return subprocess.run(
        args, capture_output=True, text=True, cwd=cwd, env=env, timeout=120, **kw
    )


def test_console_script_help(tmp_path):
    proc = run([sfer_command(), "--help"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "grad" in proc.stdout


def unbuilt_source_tree(root: Path) -> Path:
    """A copy of the sfer package's Python files without the compiled extension, as a fresh
    checkout has it, in ``root``; returns ``root`` (the "repository root")."""
    pkg = root / "sfer"
    pkg.mkdir()
    for f in PKG_DIR.glob("*.py"):
        (pkg / f.name).write_text(f.read_text())
    return root


def test_readme_main_job_runs_in_repository_root(tmp_path):
    # The README's "pip install . && sfer" is typed in the repository root, where an unbuilt
    # sfer/ sits in the current directory; the installed command must not import it.
    proc = run([sfer_command()], unbuilt_source_tree(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert "agree" in proc.stdout.lower(), proc.stdout


def test_import_from_unbuilt_source_tree_says_why(tmp_path):
    proc = run([sys.executable, "-m", "sfer"], unbuilt_source_tree(tmp_path))
    assert proc.returncode != 0
    assert "compiled extension (sfer._grad) is missing" in proc.stderr, proc.stderr
    assert "build_ext --inplace" in proc.stderr


def test_python_dash_m_help(tmp_path):
    proc = run([sys.executable, "-m", "sfer", "--help"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "usage" in proc.stdout.lower()


def test_python_dash_m_version(tmp_path):
    proc = run([sys.executable, "-m", "sfer", "--version"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "0.1.0" in proc.stdout + proc.stderr


@pytest.mark.parametrize("how", ["script", "module"])
def test_cli_grad_good_run(tmp_path, how):
    rng = np.random.default_rng(7)
    g = rng.standard_normal(1000).astype(np.float32)
    rim = rng.integers(0, 1000, size=600).astype(np.int32)
    np.save(tmp_path / "RIM.npy", rim)
    np.save(tmp_path / "GRAD.npy", g)
    out = tmp_path / "OUT.npz"
    cmd = [sfer_command()] if how == "script" else [sys.executable, "-m", "sfer"]
    proc = run(cmd + ["grad", "RIM.npy", "GRAD.npy", "-o", str(out)], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert out.is_file()
    with np.load(out) as npz:
        assert set(npz.files) >= {"d_values", "d_default_value"}
        d_values = npz["d_values"]
        d_default = npz["d_default_value"]
    exp_values, _ = reference_grad(rim, g)
    assert d_values.dtype == np.float32
    np.testing.assert_array_equal(d_values.view(np.uint32), exp_values.view(np.uint32))
    assert d_default.dtype == np.float32 and d_default.size == 1
    api = sfer.sparse_fill_empty_rows_grad(rim, g)
    assert scalar_bits(d_default.reshape(())[()]) == scalar_bits(api.d_default_value)


def test_cli_grad_int_dtype(tmp_path):
    g = np.array([5, -3, 7, 100], dtype=np.int16)
    rim = np.array([3, 3], dtype=np.uint8)
    np.save(tmp_path / "r.npy", rim)
    np.save(tmp_path / "g.npy", g)
    proc = run([sfer_command(), "grad", "r.npy", "g.npy", "-o", "o.npz"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    with np.load(tmp_path / "o.npz") as npz:
        np.testing.assert_array_equal(npz["d_values"], [100, 100])
        assert npz["d_values"].dtype == np.int16
        assert int(npz["d_default_value"]) == 9
        assert npz["d_default_value"].dtype == np.int16


def test_cli_grad_out_of_range(tmp_path):
    g = np.arange(10, dtype=np.float64)
    rim = np.array([1, 2, 10, -1], dtype=np.int64)
    np.save(tmp_path / "RIM.npy", rim)
    np.save(tmp_path / "GRAD.npy", g)
    out = tmp_path / "OUT.npz"
    proc = run([sfer_command(), "grad", "RIM.npy", "GRAD.npy", "-o", str(out)], tmp_path)
    assert proc.returncode != 0
    assert index_error_message(2, 10, 10) in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not out.exists()


def test_cli_grad_missing_file(tmp_path):
    proc = run(
        [sys.executable, "-m", "sfer", "grad", "nope.npy", "nope2.npy", "-o", "o.npz"], tmp_path
    )
    assert proc.returncode != 0
    assert proc.stderr.strip()
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "o.npz").exists()


def test_cli_grad_bad_dtype(tmp_path):
    np.save(tmp_path / "r.npy", np.array([0.5, 1.0]))
    np.save(tmp_path / "g.npy", np.arange(3.0))
    proc = run([sfer_command(), "grad", "r.npy", "g.npy", "-o", "o.npz"], tmp_path)
    assert proc.returncode != 0
    assert "reverse_index_map" in proc.stderr
    assert "Traceback" not in proc.stderr
