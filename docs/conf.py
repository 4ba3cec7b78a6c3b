"""Sphinx configuration of sfer's documentation.

Build it with ``bash ci/docs.sh``: that installs sfer into a fresh virtual environment and
builds these pages against the *installed* package (autodoc reads the compiled modules'
docstrings; the source tree has no compiled extension and is never put on ``sys.path``).
Warnings are errors there, and the examples run as doctests (``sphinx-build -b doctest``).
"""

from __future__ import annotations

from pathlib import Path

import sfer

_ROOT = Path(__file__).resolve().parents[1]
if Path(sfer.__file__).resolve().is_relative_to(_ROOT):
    raise RuntimeError(
        f"the docs must document the installed sfer, not the source tree ({sfer.__file__}): "
        "build them with `bash ci/docs.sh`"
    )

project = "sfer"
author = "sfer maintainers"
copyright = "the sfer maintainers"
release = sfer.__version__
version = release

extensions = ["sphinx.ext.autodoc", "sphinx.ext.doctest", "numpydoc"]

exclude_patterns = ["_build"]
root_doc = "index"
html_theme = "alabaster"
html_title = f"sfer {release}"

# Document each object under the name users import it by (sfer.GradResult, not
# sfer._result.GradResult), in the order of the source.
add_module_names = True
autodoc_member_order = "bysource"
numpydoc_show_class_members = False

# Every page's examples run in one namespace per page, with NumPy's default print options
# (the outputs shown assume them) and NumPy 2's scalar reprs (np.float32(18.0)).
doctest_global_setup = """
import numpy as np
import sfer
np.set_printoptions(legacy=False, precision=8, threshold=1000, linewidth=75)
if int(np.__version__.split(".")[0]) < 2:
    raise RuntimeError("the documented examples show NumPy 2 scalar reprs")
"""
