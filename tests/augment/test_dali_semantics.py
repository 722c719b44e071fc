"""The shared semantic suite (``test_semantics.py``, owned by the torchvision path) run on the DALI
pipeline (CPU, ``device_id=None``).

The suite's tests are imported from its file and collected here again with this module's
``make_views`` fixture, which builds the DALI ``sample_views``. Once ``test_semantics.py`` itself
lists the DALI pipeline among its factories, this module skips (no test runs twice).
"""
from __future__ import annotations

import importlib.util
import inspect
from pathlib import Path

import pytest

_SUITE_FILE = Path(__file__).with_name("test_semantics.py")
_spec = importlib.util.spec_from_file_location("occon_shared_semantic_suite", _SUITE_FILE)
suite = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(suite)

_SUITE_RUNS_DALI = "occon_plugin.augment.dali" in inspect.getsource(suite._dali_factory)


def _dali_factory(occon: dict, standard: str, n_views: int):
    from occon_plugin.augment.dali.single import semantic_suite_sample_views

    return semantic_suite_sample_views(occon, standard, n_views, rrc_size=suite.RRC_SIZE, host_aug=suite.HOST_AUG)


@pytest.fixture
def make_views():
    if _SUITE_RUNS_DALI:
        pytest.skip("test_semantics.py runs the DALI pipeline itself")

    def make(occon: dict, standard: str = "identity", n_views: int = 2):
        return _dali_factory(occon, standard, n_views)

    return make


# The suite feeds this test a float mask and expects 0.51 accuracy; the DALI path reads masks as the
# store keeps them (uint8 PNG), which moves soft levels by up to 0.5/255 * 255 = 0.5 more. The same
# checks on real photos with a stored mask are in test_dali_pipeline.py.
_NOT_HERE = {"test_real_photos_mix_exactly_and_host_views_are_well_formed"}

# Every suite test that takes a pipeline (the ``make_views`` fixture), collected on the DALI path.
for _name, _test in vars(suite).copy().items():
    if (_name.startswith("test_") and _name not in _NOT_HERE
            and "make_views" in inspect.signature(_test).parameters):
        globals()[_name] = _test
