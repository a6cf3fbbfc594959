"""Sphinx configuration: MyST markdown pages, MathJax, autodoc of pyro_vae's docstrings."""

import pyro_vae

project = "pyro_vae"
author = "the pyro_vae developers"
release = pyro_vae.__version__
extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
]
myst_enable_extensions = ["dollarmath", "amsmath"]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
exclude_patterns = ["_build"]
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"members": True, "show-inheritance": True}
html_theme = "furo"
html_title = f"pyro_vae {release}"
nitpicky = False
