"""examples/parquet_pipeline.py, run small: serially and with --dask (one task per row
group), the same checksum both ways."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("pyarrow")

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "parquet_pipeline.py"


def run(tmp_path, *extra):
    proc = subprocess.run([sys.executable, str(EXAMPLE), "--data",
                           str(tmp_path / "lists.parquet"), "--rows", "3000",
                           "--row-group-size", "700", *extra],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert re.search(r"5 batches, 3000 rows, \d+ ids: .* rows/s", proc.stdout), proc.stdout
    return re.search(r"checksum (\S+)", proc.stdout).group(1)


def test_parquet_pipeline_serial_and_dask(tmp_path):
    serial = run(tmp_path)
    assert (tmp_path / "lists.parquet").is_file()
    pytest.importorskip("dask")
    assert run(tmp_path, "--dask") == serial
    assert run(tmp_path, "--dask", "--scheduler", "synchronous", "--num-threads", "2") == serial
