"""Shared fixtures of the bad-input battery: one generated "mixed" folder (real photos in every mode
plus every kind of bad file) and its store (real ContraCAM, tiny settings). Helpers live in
``robustness_helpers.py`` (this file puts the folder on ``sys.path`` for the test modules).

Images are tiny (<= 96 px) so the whole battery runs in CI in minutes on 2 cores.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from robustness_helpers import Mixed, localize_settings, make_mixed_folder  # noqa: E402


def pytest_configure(config):
    config.addinivalue_line("markers", "kind(id): the bad-input kind (tests/robustness/kinds.py) a test asserts")


@pytest.fixture(scope="session")
def mixed(tmp_path_factory) -> Mixed:
    return make_mixed_folder(tmp_path_factory.mktemp("battery") / "mixed")


@pytest.fixture(scope="session")
def mixed_store(mixed, tmp_path_factory) -> Path:
    """The mixed folder localized by the real runner (EfficientNet-Lite0, tiny settings)."""
    from occon_plugin.localize.runner import run_localize

    out = tmp_path_factory.mktemp("battery_store") / "store"
    summary = run_localize(localize_settings(mixed.root, out))
    assert summary["written_ok"] == len(mixed.good) and summary["written_bad"] == len(mixed.bad)
    return out
