# Stub for the compiled module sfer._grad (mypy.stubtest checks it: ci/test.sh).
from typing import Any

import numpy as np

from sfer._result import GradResult

def sparse_fill_empty_rows_grad(
    reverse_index_map: Any,
    grad_values: Any,
    *,
    num_threads: int | None = None,
    out: np.ndarray | None = None,
) -> GradResult: ...
def _last_path() -> str | None: ...
def _constants() -> dict[str, int]: ...
