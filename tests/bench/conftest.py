"""Shared by the bench tests: ``bench/science.py`` loaded as a module (it is a script, not a package)."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def science():
    """``bench/science.py`` as a module: ``SIZES``, ``size_cells``, ``main(argv)``."""
    spec = importlib.util.spec_from_file_location("science_cli", REPO / "bench" / "science.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
