# Stub for the compiled module sfer._fill (mypy.stubtest checks it: ci/test.sh).
from typing import Any

from sfer._result import FillResult

def sparse_fill_empty_rows(
    indices: Any,
    values: Any,
    dense_shape: Any,
    default_value: Any,
    *,
    num_threads: int | None = None,
) -> FillResult: ...

def _last_path() -> str | None: ...
def _last_partition_threads() -> tuple[int, int]: ...
def _use_wide_counters(flag: bool) -> None: ...
