# Stub for the compiled module sfer._ragged (mypy.stubtest checks it: ci/test.sh).
from typing import Any

import numpy as np

from sfer._result import SparseCOO

def ragged_to_sparse(
    values: Any,
    row_splits: Any,
    *,
    num_threads: int | None = None,
    out: np.ndarray | None = None,
) -> SparseCOO: ...
def sparse_to_ragged(
    indices: Any, values: Any, dense_shape: Any, *, num_threads: int | None = None
) -> tuple[np.ndarray, np.ndarray]: ...
