"""sfer: TensorFlow's SparseFillEmptyRowsGrad for NumPy, without TensorFlow.

>>> import numpy as np, sfer
>>> r = sfer.sparse_fill_empty_rows_grad([0, 2], np.array([1.0, 2.0, 4.0]))
>>> r.d_values, r.d_default_value
(array([1., 4.]), np.float64(2.0))
"""

from sfer._core import openmp_enabled, sparse_fill_empty_rows_grad
from sfer._result import GradResult
from sfer._version import __version__

__all__ = ["GradResult", "__version__", "openmp_enabled", "sparse_fill_empty_rows_grad"]
