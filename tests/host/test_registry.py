"""Registration of the object-aware methods in the host's METHODS."""
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


def _python(code: str) -> str:
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-W", "ignore", "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout.strip().splitlines()[-1]


def test_import_order_plugin_first_registers_when_solo_loads():
    # occon_plugin alone does not import solo-learn (cheap for localize/eval tools) ...
    out = _python("import sys, occon_plugin, occon_plugin.localize.contracam; "
                  "print('solo' in sys.modules)")
    assert out == "False"
    # ... and METHODS holds both names as soon as solo.methods is imported
    out = _python("import occon_plugin, solo.methods as m; print(sorted(k for k in m.METHODS if 'occon' in k))")
    assert out == "['byol_occon', 'mocov2_occon']"


def test_import_order_solo_first_registers_on_plugin_import():
    out = _python("import solo.methods as m, occon_plugin; print(sorted(k for k in m.METHODS if 'occon' in k))")
    assert out == "['byol_occon', 'mocov2_occon']"
