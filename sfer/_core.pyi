# Stub for the compiled module sfer._core (checked against the build by mypy.stubtest in ci/test.sh).
from typing import Any

import numpy as np

from sfer._result import GradResult

V_U8: int
V_U16: int
V_U32: int
V_U64: int
V_F16: int
V_BF16: int
V_F32: int
V_F64: int
V_C64: int
V_C128: int
I_I8: int
I_I16: int
I_I32: int
I_I64: int
I_U8: int
I_U16: int
I_U32: int
I_U64: int

def grad(
    rim: np.ndarray, g: np.ndarray, d: np.ndarray, vkind: int, ikind: int, num_threads: int
) -> Any: ...
def sparse_fill_empty_rows_grad(
    reverse_index_map: Any,
    grad_values: Any,
    *,
    num_threads: int | None = None,
    out: np.ndarray | None = None,
) -> GradResult: ...
def in_forked_child() -> bool: ...
def value_kind(dtype: np.dtype) -> int: ...
def index_kind(dtype: np.dtype) -> int: ...
def openmp_enabled() -> bool: ...
def max_threads() -> int: ...
def _last_threads() -> int: ...
def _last_path() -> str | None: ...
def _constants() -> dict[str, int]: ...
