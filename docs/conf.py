"""Sphinx configuration of cumel's documentation.

Build (from the repository root)::

    sphinx-build -W --keep-going -b html docs docs/_build/html
    sphinx-build -W -b doctest docs docs/_build/doctest
"""
import os
import subprocess
import sys
from pathlib import Path

import cumel

DOCS = Path(__file__).resolve().parent

project = "cumel"
author = "the cumel developers"
copyright = "the cumel developers"
release = version = cumel.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.doctest",
    "sphinx.ext.mathjax",
    "sphinx.ext.intersphinx",
    "numpydoc",
    "sphinx_gallery.gen_gallery",
    "myst_parser",
]

# "--frontend" must stay two hyphens, not become a dash
smartquotes = False

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
exclude_patterns = ["_build", "_generated/*.txt", "examples/README.rst"]
myst_enable_extensions = ["dollarmath"]
myst_heading_anchors = 3

# API reference: one page per public name, generated from the docstrings (numpydoc sections).
autosummary_generate = True
autodoc_typehints = "none"
numpydoc_show_class_members = False      # the class pages list their members through autodoc
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False

# Every `>>>` block of the pages and of the docstrings they include runs under
# `sphinx-build -b doctest`; these names exist in each.
doctest_global_setup = """
import numpy as np
import cumel
"""

intersphinx_mapping = {}

html_theme = "pydata_sphinx_theme"
html_title = f"cumel {release}"
html_static_path = ["_static"]
html_css_files = ["custom.css"]
html_theme_options = {
    "navigation_with_keys": False,
    "show_toc_level": 2,
    "secondary_sidebar_items": ["page-toc"],
    "footer_start": ["copyright"],
    "footer_end": [],
}
html_sidebars = {"index": [], "getting_started": []}

# The gallery: every docs/examples/plot_*.py runs at build time (small data, seconds each).
sphinx_gallery_conf = {
    "examples_dirs": "examples",
    "gallery_dirs": "auto_examples",
    "filename_pattern": r"plot_",
    "within_subsection_order": "FileNameSortKey",
    "download_all_examples": False,
    "remove_config_comments": True,
    "show_memory": False,
    "matplotlib_animations": False,
    "image_scrapers": ("matplotlib",),
    "reset_modules": ("matplotlib",),
}
os.environ.setdefault("MPLBACKEND", "agg")


def _cli_help():
    """The command line's own --help texts, included verbatim by guide/cli.md (never stale)."""
    out = DOCS / "_generated"
    out.mkdir(exist_ok=True)
    for name, argv in {"cumel": ["--help"], "invert": ["invert", "--help"],
                       "demo": ["demo", "--help"], "frontends": ["frontends", "--help"]}.items():
        text = subprocess.run([sys.executable, "-m", "cumel.cli", *argv], capture_output=True,
                              text=True, env={**os.environ, "COLUMNS": "100"}).stdout
        path = out / f"cli_{name}.txt"
        if not path.exists() or path.read_text() != text:
            path.write_text(text)


_cli_help()


def _check_api_coverage():
    """Every public name must have a page: fail the build when one is missing from docs/api."""
    listed = set()
    for page in (DOCS / "api").glob("*.rst"):
        listed |= {line.strip() for line in page.read_text().splitlines()}
    missing = [name for name in cumel.__all__ if name not in listed]
    try:
        import cumel.torch as cumel_torch
    except ImportError:          # torch (or cumel.torch) absent: nothing more to check
        cumel_torch = None
    if cumel_torch is not None:      # its names go on docs/api/torch.rst
        page = DOCS / "api" / "torch.rst"
        on_page = {line.strip() for line in page.read_text().splitlines()} if page.exists() else set()
        missing += [f"cumel.torch.{name}" for name in getattr(cumel_torch, "__all__", ())
                    if name not in on_page and f"cumel.torch.{name}" not in on_page]
    if missing:
        raise RuntimeError(f"names without an API page (add them to docs/api/*.rst): {missing}")


_check_api_coverage()
templates_path = ["_templates"]
