"""sfer: TensorFlow's SparseFillEmptyRowsGrad for NumPy, without TensorFlow.

>>> import numpy as np, sfer
>>> r = sfer.sparse_fill_empty_rows_grad([0, 2], np.array([1.0, 2.0, 4.0]))
>>> r.d_values, r.d_default_value
(array([1., 4.]), np.float64(2.0))
"""

try:
    from sfer._grad import sparse_fill_empty_rows_grad
    from sfer._runtime import openmp_enabled
except ModuleNotFoundError as _exc:  # pragma: no cover - exercised in a subprocess
    if _exc.name not in ("sfer._grad", "sfer._runtime"):
        raise
    import os as _os

    raise ImportError(
        f"sfer's compiled extension ({_exc.name}) is missing from "
        f"{_os.path.dirname(_os.path.abspath(__file__))}. This happens when Python imports "
        "sfer from its source tree, e.g. when `python -m sfer` runs in the repository root: "
        "the current directory comes first on sys.path and shadows the installed sfer. Run "
        "the installed `sfer` command, or run Python from another directory; to work in the "
        "source tree, build in place with `python setup.py build_ext --inplace`."
    ) from None
from sfer import reference
from sfer._arrow import from_arrow, to_arrow
from sfer._fill import sparse_fill_empty_rows
from sfer._ragged import ragged_to_sparse, sparse_to_ragged
from sfer._result import FillResult, GradResult, SparseCOO
from sfer._runtime import get_num_threads
from sfer._version import __version__

__all__ = [
    "FillResult",
    "GradResult",
    "SparseCOO",
    "__version__",
    "from_arrow",
    "get_num_threads",
    "openmp_enabled",
    "ragged_to_sparse",
    "reference",
    "sparse_fill_empty_rows",
    "sparse_fill_empty_rows_grad",
    "sparse_to_ragged",
    "to_arrow",
]
