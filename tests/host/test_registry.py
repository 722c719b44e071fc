"""Registration of the object-aware methods in the host's METHODS."""
import warnings
from importlib.metadata import entry_points

import pytest

import occon_plugin
from occon_plugin import host
from occon_plugin.methods import OCCON_METHODS, BYOLOccon, MoCoV2Occon, register


def test_import_registers_both_methods():
    assert host.METHODS["mocov2_occon"] is MoCoV2Occon
    assert host.METHODS["byol_occon"] is BYOLOccon


def test_register_is_idempotent():
    before = dict(host.METHODS)
    assert register() == OCCON_METHODS
    assert occon_plugin.register() == OCCON_METHODS
    assert host.METHODS == before


def test_register_never_overwrites_a_foreign_name(monkeypatch):
    class Foreign:  # what another plugin might have put under our name
        pass

    monkeypatch.setitem(host.METHODS, "byol_occon", Foreign)
    with pytest.warns(RuntimeWarning, match="byol_occon"):
        registered = register()
    assert host.METHODS["byol_occon"] is Foreign
    assert registered["byol_occon"] is Foreign
    assert host.METHODS["mocov2_occon"] is MoCoV2Occon


def test_host_names_untouched():
    assert host.METHODS["mocov2plus"] is host.MoCoV2Plus
    assert host.METHODS["byol"] is host.BYOL


def test_subclass_host_parents():
    assert issubclass(MoCoV2Occon, host.MoCoV2Plus)
    assert issubclass(BYOLOccon, host.BYOL)


def test_entry_points_advertise_the_classes():
    eps = {ep.name: ep for ep in entry_points(group="solo_learn.methods")}
    assert eps["mocov2_occon"].load() is MoCoV2Occon
    assert eps["byol_occon"].load() is BYOLOccon
