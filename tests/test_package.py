"""Packaging: version, installed location, typing files, the CLI."""

from __future__ import annotations

import importlib.metadata
import os
import re
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
from oracle import index_error_message, reference_grad, scalar_bits

REPO_ROOT = Path(__file__).resolve().parents[1]
PKG_DIR = Path(sfer.__file__).resolve().parent


def test_version():
    assert sfer.__version__ == "0.2.0"
    assert importlib.metadata.version("sfer") == "0.2.0"
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


def test_supported_pythons_agree():
    """requires-python, the "Python :: 3.X" classifiers (ci/build_wheel.sh builds a wheel for
    each) and this interpreter agree: no gap in the classifiers, the oldest one is the floor."""
    meta = importlib.metadata.metadata("sfer")
    versions = sorted(
        tuple(int(part) for part in c.rsplit(" :: ", 1)[1].split("."))
        for c in meta.get_all("Classifier") or []
        if re.fullmatch(r"Programming Language :: Python :: 3\.\d+", c)
    )
    assert versions, "no Python 3.X classifiers"
    assert versions == [(3, minor) for minor in range(versions[0][1], versions[-1][1] + 1)]
    assert meta["Requires-Python"] == ">=%d.%d" % versions[0]
    assert sys.version_info[:2] in versions


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
    eps = importlib.metadata.entry_points()
    # Python 3.9's entry_points() takes no group= and returns a dict of groups
    eps = eps.select(group="console_scripts") if hasattr(eps, "select") else eps["console_scripts"]
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
    assert "fill" in proc.stdout


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
    # the demo's worked example: the forward op, then its grad fed with its reverse_index_map
    lines = [" ".join(line.split()) for line in proc.stdout.splitlines()]
    pair = [
        "output_indices = [[0, 1], [0, 3], [1, 0], [2, 0], [3, 1], [4, 0]]",
        "output_values = [1, 2, -1, 3, 4, -1]",
        "empty_row_indicator = [False, True, False, False, True]",
        "reverse_index_map = [0, 1, 3, 4] (the output position of each entry)",
        "reverse_index_map = [0, 1, 3, 4] (int64, from a)",
        "grad_values = [0.5, 1, 2, 4, 8, 16] (float32)",
        "d_values = [0.5, 1, 4, 8]",
        "d_default_value = 18.0 (= grad_values[2] + grad_values[5] = 2 + 16)",
    ]
    at = [lines.index(text) for text in pair]  # ValueError names a missing line
    assert at == sorted(at), proc.stdout
    assert "MISMATCH" not in proc.stdout


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
    assert "0.2.0" in proc.stdout + proc.stderr


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


# sfer fill ----------------------------------------------------------------

FILL_FIELDS = ("output_indices", "output_values", "empty_row_indicator", "reverse_index_map")


def save_fill_inputs(where, indices, values, dense_shape):
    np.save(where / "i.npy", indices)
    np.save(where / "v.npy", values)
    np.save(where / "s.npy", dense_shape)


def assert_npz_is(path, expected):
    """The .npz at ``path`` holds exactly the FillResult ``expected``: names, dtypes, shapes
    and bytes."""
    with np.load(path, allow_pickle=False) as npz:
        assert sorted(npz.files) == sorted(FILL_FIELDS)
        for name in FILL_FIELDS:
            got, want = npz[name], np.asarray(getattr(expected, name))
            assert got.dtype == want.dtype, name
            assert got.shape == want.shape, name
            assert got.tobytes() == want.tobytes(), name


def run_main(argv, cwd, monkeypatch, capsys):
    """``sfer ARGV`` in this process (the console script's ``main``): (status, out, err)."""
    from sfer._cli import main

    monkeypatch.chdir(cwd)
    status = main(argv)
    out, err = capsys.readouterr()
    return status, out, err


def shuffled_sparse(rng, n=60, rows=25, rank=3):
    """indices [n, rank] in shuffled row order, some rows empty, and dense_shape."""
    indices = np.column_stack([rng.integers(0, rows, n)]
                              + [rng.integers(0, 7, n) for _ in range(rank - 1)])
    assert len(set(indices[:, 0].tolist())) < rows  # some rows are empty
    return indices.astype(np.int32), np.array([rows] + [7] * (rank - 1), dtype=np.int64)


def test_cli_fill_round_trip(tmp_path):
    rng = np.random.default_rng(11)
    indices, dense_shape = shuffled_sparse(rng)
    values = rng.standard_normal(len(indices)).astype(np.float32)
    save_fill_inputs(tmp_path, indices, values, dense_shape)
    proc = run([sfer_command(), "fill", "i.npy", "v.npy", "s.npy", "--default", "-1.5",
                "-o", "out.npz"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("wrote out.npz: "), proc.stdout
    assert not proc.stderr
    expected = sfer.sparse_fill_empty_rows(indices, values, dense_shape, -1.5)
    assert expected.empty_row_indicator.any()
    assert_npz_is(tmp_path / "out.npz", expected)
    assert {p.name for p in tmp_path.iterdir()} == {"i.npy", "v.npy", "s.npy", "out.npz"}


@pytest.mark.parametrize("dtype, text, default", [
    (np.int8, "-7", -7),
    (np.uint64, str(2**64 - 1), 2**64 - 1),
    (np.float64, "2.5e-1", 0.25),
    (np.float32, "-inf", -np.inf),  # --default takes the next word even if it starts with -
    (np.float64, "-1e-3", -1e-3),
    (np.complex64, "1+2j", 1 + 2j),
    (np.bool_, "TRUE", True),
    (np.bool_, "0", False),
    ("U3", "n/a", "n/a"),
    ("U3", "-x", "-x"),
    ("U2", "longer", "longer"),  # widens the output dtype, as the API does
    ("S4", "\u00e9t\u00e9", "\u00e9t\u00e9".encode()),  # bytes as given on the command line
])
def test_cli_fill_default_by_dtype(tmp_path, monkeypatch, capsys, dtype, text, default):
    indices = np.array([[3, 0], [0, 1], [3, 2]], dtype=np.int64)
    values = np.array([1, 0, 1]).astype(dtype) if np.dtype(dtype).kind not in "SU" else \
        np.array(["ab", "c", "d"], dtype=dtype)
    dense_shape = np.array([5, 3])
    save_fill_inputs(tmp_path, indices, values, dense_shape)
    status, out, err = run_main(["fill", "i.npy", "v.npy", "s.npy", "--default", text,
                                 "-o", "out.npz", "-q"], tmp_path, monkeypatch, capsys)
    assert status == 0, err
    assert out == err == ""
    expected = sfer.sparse_fill_empty_rows(indices, values, dense_shape, default)
    assert_npz_is(tmp_path / "out.npz", expected)
    with np.load(tmp_path / "out.npz") as npz:
        assert npz["output_values"][1] == default  # row 1 is empty: position 1 is the default


def test_cli_fill_fast_path(tmp_path, monkeypatch, capsys):
    # no empty row, rows in order: the op hands back views of the memory-mapped inputs
    indices = np.array([[0, 2], [1, 1], [1, 0], [2, 5]], dtype=np.int64)
    values = np.array([10, 20, 30, 40], dtype=np.int16)
    save_fill_inputs(tmp_path, indices, values, np.array([3, 6]))
    status, out, err = run_main(["fill", "i.npy", "v.npy", "s.npy", "--default", "0",
                                 "-o", "out.npz"], tmp_path, monkeypatch, capsys)
    assert status == 0, err
    assert "0 of 3 rows were empty" in out
    assert_npz_is(tmp_path / "out.npz",
                  sfer.sparse_fill_empty_rows(indices, values, np.array([3, 6]), 0))


def test_cli_fill_num_threads(tmp_path, monkeypatch, capsys):
    rng = np.random.default_rng(5)
    indices, dense_shape = shuffled_sparse(rng, n=200, rows=90, rank=2)
    values = rng.integers(-100, 100, len(indices)).astype(np.int32)
    save_fill_inputs(tmp_path, indices, values, dense_shape)
    expected = sfer.sparse_fill_empty_rows(indices, values, dense_shape, 9, num_threads=1)
    seen = []
    real = sfer.sparse_fill_empty_rows

    def spy(*args, **kwargs):
        seen.append(kwargs.get("num_threads", "missing"))
        return real(*args, **kwargs)

    monkeypatch.setattr(sfer, "sparse_fill_empty_rows", spy)
    for option, threads in [(["--num-threads", "3"], 3), (["--threads", "2"], 2), ([], None)]:
        status, _, err = run_main(["fill", "i.npy", "v.npy", "s.npy", "--default", "9",
                                   "-o", "out.npz", *option], tmp_path, monkeypatch, capsys)
        assert status == 0, err
        assert seen[-1] == threads
        assert_npz_is(tmp_path / "out.npz", expected)
    status, _, err = run_main(["fill", "i.npy", "v.npy", "s.npy", "--default", "9",
                               "-o", "bad.npz", "--num-threads", "0"], tmp_path, monkeypatch,
                              capsys)
    assert status == 2
    assert "expected a positive integer, got '0'" in err
    assert not (tmp_path / "bad.npz").exists()


def test_cli_fill_out_of_range_row(tmp_path):
    indices = np.array([[0, 0], [4, 1], [5, 0], [-1, 0]], dtype=np.int64)
    save_fill_inputs(tmp_path, indices, np.arange(4.0), np.array([5, 2]))
    proc = run([sfer_command(), "fill", "i.npy", "v.npy", "s.npy", "--default", "0",
                "-o", "out.npz"], tmp_path)
    assert proc.returncode == 2
    assert proc.stderr == "sfer: error: indices[2, 0] = 5 is out of range [0, 5)\n"
    assert proc.stdout == ""
    assert not (tmp_path / "out.npz").exists()


def fill_error(tmp_path, monkeypatch, capsys, files, default="0"):
    """Run ``sfer fill`` on FILES (names in tmp_path) expecting bad input: the one-line
    message (status 2, nothing written)."""
    status, out, err = run_main(["fill", *files, "--default", default, "-o", "out.npz"],
                                tmp_path, monkeypatch, capsys)
    assert status == 2, err
    assert out == ""
    assert err.startswith("sfer: error: ") and err.count("\n") == 1, err
    assert not (tmp_path / "out.npz").exists()
    assert not list(tmp_path.glob(".sfer-*"))  # no temporary file left behind
    return err


def test_cli_fill_missing_file(tmp_path, monkeypatch, capsys):
    save_fill_inputs(tmp_path, np.zeros((1, 1), np.int64), np.zeros(1), np.array([1]))
    err = fill_error(tmp_path, monkeypatch, capsys, ["i.npy", "nope.npy", "s.npy"])
    assert err == "sfer: error: cannot read values file 'nope.npy': No such file or directory\n"


@pytest.mark.parametrize("values, dense_shape, message", [
    (np.zeros(3), np.array([4, 2]),
     "values has length 3 but indices has shape (2, 2): len(values) must equal indices.shape[0]"),
    (np.zeros(2), np.array([4, 2, 1]), "dense_shape has length 3 but indices has shape (2, 2)"),
    (np.zeros((2, 1)), np.array([4, 2]), "values must be a vector (1-D), got shape (2, 1)"),
    (np.zeros(2), np.array([4.0, 2.0]), "dense_shape must have an integer dtype, got float64"),
])
def test_cli_fill_bad_shape_or_dtype(tmp_path, monkeypatch, capsys, values, dense_shape,
                                     message):
    save_fill_inputs(tmp_path, np.array([[0, 0], [3, 1]]), values, dense_shape)
    err = fill_error(tmp_path, monkeypatch, capsys, ["i.npy", "v.npy", "s.npy"])
    assert message in err


def test_cli_fill_pickled_values_refused(tmp_path, monkeypatch, capsys):
    save_fill_inputs(tmp_path, np.array([[0, 0]]), np.array(["a"], dtype=object), np.array([2, 1]))
    err = fill_error(tmp_path, monkeypatch, capsys, ["i.npy", "v.npy", "s.npy"], default="b")
    assert "values file 'v.npy' holds Python objects" in err
    assert "does not load pickles" in err


@pytest.mark.parametrize("dtype, text, message", [
    (np.int8, "300", "default_value = 300 does not fit in values' dtype int8 (range [-128, 127])"),
    (np.int32, "1.5", "default_value has dtype float64, which does not convert to values' dtype "
                      "int32"),
    (np.float16, "1e10", "overflows values' dtype float16"),
    (np.float32, "1+2j", "default_value has dtype complex128, which does not convert"),
    (np.float64, "one", "--default 'one' is not a number (values have dtype float64)"),
    (np.bool_, "yes", "--default must be true, false, 1 or 0 for values of dtype bool, got 'yes'"),
])
def test_cli_fill_default_does_not_fit(tmp_path, monkeypatch, capsys, dtype, text, message):
    save_fill_inputs(tmp_path, np.array([[0, 0], [2, 1]]), np.zeros(2, dtype), np.array([4, 2]))
    err = fill_error(tmp_path, monkeypatch, capsys, ["i.npy", "v.npy", "s.npy"], default=text)
    assert message in err


@pytest.mark.parametrize("command", ["demo", "grad", "fill"])
def test_cli_one_thread_option_for_every_command(command, tmp_path, monkeypatch, capsys):
    # --num-threads N everywhere (the API's name), --threads N its alias; both reach the op
    from sfer import _cli

    parser = _cli._build_parser()
    args = {"demo": ["demo"], "grad": ["grad", "r.npy", "g.npy", "-o", "o.npz"],
            "fill": ["fill", "i.npy", "v.npy", "s.npy", "--default", "0", "-o", "o.npz"]}
    for option in ("--num-threads", "--threads"):
        assert parser.parse_args(args[command] + [option, "5"]).threads == 5
    assert parser.parse_args(args[command]).threads is None
    status, _, err = run_main(args[command] + ["--num-threads", "0"], tmp_path, monkeypatch,
                              capsys)
    assert status == 2 and "expected a positive integer, got '0'" in err
    status, out, err = run_main([command, "--help"], tmp_path, monkeypatch, capsys)
    # (Python 3.13's argparse shows the metavar once: "--num-threads, --threads N")
    assert status == 0 and re.search(r"--num-threads( N)?, --threads N", out), out


def test_cli_demo_runs_both_ops(tmp_path, monkeypatch, capsys):
    status, out, err = run_main(["--size", "3000", "--repeat", "1", "--num-threads", "2"],
                                tmp_path, monkeypatch, capsys)
    assert status == 0, err
    assert out.splitlines()[0].startswith(
        f"sfer {sfer.__version__}: TensorFlow's SparseFillEmptyRows and "
        "SparseFillEmptyRowsGrad for NumPy")
    assert "2) The forward op on generated data" in out
    assert "yes (all four outputs bit-identical to sfer.reference's)" in out
    assert "3) The grad on generated data: N_full = 3,000" in out
    assert out.count("ratio NumPy/sfer") == 2
    assert "threads                2 (--num-threads)" in out


@pytest.mark.parametrize("order", ["sorted", "shuffled"])
@pytest.mark.parametrize("rank", [1, 2, 3])
def test_cli_demo_numpy_composite_is_the_op(order, rank):
    # the demo times the forward op against this composite: it must compute the same thing
    from sfer._cli import _numpy_fill

    rng = np.random.default_rng(rank)
    rows = np.sort(rng.integers(0, 40, 70))
    if order == "shuffled":
        rows = rng.permutation(rows)
    indices = np.column_stack([rows] + [rng.integers(0, 9, 70) for _ in range(rank - 1)])
    values = rng.standard_normal(70).astype(np.float32)
    dense_shape = np.array([45] + [9] * (rank - 1))
    got = _numpy_fill(np, indices, values, dense_shape, 7)
    want = sfer.reference.sparse_fill_empty_rows(indices, values, dense_shape, 7)
    for a, b in zip(got, want):
        assert a.dtype == b.dtype and a.shape == b.shape
        assert a.tobytes() == b.tobytes()


def test_import_sfer_imports_no_optional_package():
    # ml_dtypes costs ~0.6 s to load, torch/jax/pyarrow/dask far more: `import sfer` (and the
    # CLI's --help) must not load them, even when they are installed
    code = ("import sys, sfer, sfer._cli, sfer.reference; "
            "print(sorted(m for m in ('ml_dtypes', 'torch', 'jax', 'pyarrow', 'dask', "
            "'polars', 'tensorflow') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, cwd=os.path.dirname(PKG_DIR.parent))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_bfloat16_recognised_without_importing_ml_dtypes_first():
    # sfer never imports ml_dtypes itself; an array of its dtypes is recognised by the dtype
    ml_dtypes = pytest.importorskip("ml_dtypes")
    from sfer import _dtypes

    bf16 = np.dtype(ml_dtypes.bfloat16)
    assert _dtypes.is_bfloat16(bf16) and _dtypes.is_bfloat16(bf16.newbyteorder(">"))
    assert not _dtypes.is_bfloat16(np.dtype(np.float16))
    assert _dtypes.is_grad_value_dtype(bf16)
    assert not _dtypes.is_grad_value_dtype(np.dtype(ml_dtypes.float8_e4m3fn))
    kinds = {"int4": "i", "uint4": "u", "float8_e5m2": "f", "float8_e4m3fn": "f",
             "bfloat16": "f"}
    for name, kind in kinds.items():
        assert _dtypes.logical_kind(np.dtype(getattr(ml_dtypes, name))) == kind, name
    for dtype in ("int8", "float32", "complex64", "V4", "M8[s]", "O"):
        assert _dtypes.ml_kind(np.dtype(dtype)) is None
        assert _dtypes.logical_kind(np.dtype(dtype)) == np.dtype(dtype).kind


_APACHE = ("Apache License", "Version 2.0, January 2004")
_GPL3 = ("GNU GENERAL PUBLIC LICENSE", "Version 3, 29 June 2007")
_GCC_EXCEPTION = ("GCC RUNTIME LIBRARY EXCEPTION", "Version 3.1, 31 March 2009")
_BUNDLED_EXPRESSION = "Apache-2.0 AND GPL-3.0-or-later WITH GCC-exception-3.1"


def _check_licences(licence_texts, expression, bundles_libgomp):
    text = "\n".join(licence_texts)
    assert all(words in text for words in _APACHE), "sfer's Apache-2.0 licence is missing"
    if bundles_libgomp:  # the libgomp in sfer.libs comes with its licence and exception
        assert all(words in text for words in _GPL3 + _GCC_EXCEPTION), (
            "the bundled libgomp's GPL-3.0 / GCC Runtime Library Exception texts are missing")
        assert "sfer.libs/libgomp-*.so.1" in text
        assert expression == _BUNDLED_EXPRESSION
    else:
        assert expression == "Apache-2.0"


def test_installed_distribution_carries_licences():
    # PEP 639: License-Expression and License-File metadata, files under .dist-info/licenses
    dist = importlib.metadata.distribution("sfer")
    declared = dist.metadata.get_all("License-File") or []
    assert "LICENSE" in declared
    texts = [f.read_text() for f in dist.files or []
             if ".dist-info/licenses/" in str(f).replace("\\", "/")]
    assert len(texts) == len(declared)
    bundled = [f for f in dist.files or [] if re.search(r"sfer\.libs/libgomp[^/]*\.so", str(f))]
    _check_licences(texts, dist.metadata["License-Expression"], bool(bundled))


def test_built_wheel_carries_licences():
    # ci/test.sh (the README's test command) names the wheel it installed: open it
    import zipfile

    wheel = os.environ.get("SFER_WHEEL")
    if not wheel:
        pytest.skip("SFER_WHEEL is not set (ci/test.sh sets it to the wheel it tests)")
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        texts = [zf.read(n).decode() for n in names if ".dist-info/licenses/" in n]
        meta = next(n for n in names if n.endswith(".dist-info/METADATA"))
        expression = re.search(r"^License-Expression: (.*)$", zf.read(meta).decode(), re.M)
    bundled = any(re.search(r"sfer\.libs/libgomp[^/]*\.so", n) for n in names)
    assert expression is not None
    _check_licences(texts, expression.group(1).strip(), bundled)
    assert bundled == ("manylinux" in os.path.basename(wheel))
