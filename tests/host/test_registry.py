"""Registration of the object-aware methods in the host's METHODS, with and without the startup hook."""
import os
import subprocess
import sys
import sysconfig
from importlib.metadata import entry_points
from pathlib import Path

import pytest

import occon_plugin
from occon_plugin import host
from occon_plugin.methods import OCCON_METHODS, BYOLOccon, MoCoV2Occon, register, table

HOOK = "occon_plugin_autoregister.pth"
# what this host can run: every row of the table whose parent the installed solo-learn has
EXPECTED = sorted(name for name, parent, _, _ in table.ROWS if parent in host.METHODS)


def test_import_registers_every_available_method():
    assert {"mocov2_occon", "byol_occon"} <= set(EXPECTED)
    assert host.METHODS["mocov2_occon"] is MoCoV2Occon
    assert host.METHODS["byol_occon"] is BYOLOccon
    assert sorted(k for k in host.METHODS if k.endswith("_occon")) == EXPECTED == sorted(OCCON_METHODS)


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


def _python(code: str, **env) -> str:
    proc = subprocess.run([sys.executable, "-W", "ignore", "-c", code], capture_output=True, text=True, timeout=300,
                          env={**os.environ, **env}, cwd=os.path.dirname(sys.executable))  # not the repo: no cwd import
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout.strip().splitlines()[-1]


def test_startup_hook_is_installed_in_site_packages():
    hook = Path(sysconfig.get_paths()["purelib"]) / HOOK
    assert hook.is_file(), f"{hook} missing: the install (./run setup = pip install -e .) did not place the hook"
    assert "occon_plugin" in hook.read_text() and "OCCON_PLUGIN_AUTOREGISTER" in hook.read_text()


def test_host_import_alone_registers_through_the_startup_hook():
    # a fresh interpreter that only imports solo-learn (as solo-learn's own main_pretrain.py does)
    out = _python("import solo.methods as m; print(sorted(k for k in m.METHODS if k.endswith('_occon')))")
    assert out == str(EXPECTED)
    # the hook only armed the post-import hook: nothing heavy at interpreter start
    out = _python("import sys; print('occon_plugin' in sys.modules, 'torch' in sys.modules, 'solo' in sys.modules)")
    assert out == "True False False"


def test_startup_hook_can_be_turned_off():
    out = _python("import sys, solo.methods as m; print('occon_plugin' in sys.modules, "
                  "any(k.endswith('_occon') for k in m.METHODS))", OCCON_PLUGIN_AUTOREGISTER="0")
    assert out == "False False"


def test_startup_hook_switch_values():
    # the hook's own line, run in an interpreter started without site (-S: no .pth ran)
    hook = (Path(sysconfig.get_paths()["purelib"]) / HOOK).read_text().splitlines()
    line = next(l for l in hook if l.startswith("import"))
    code = ("import os, sys\n"
            f"sys.path.insert(0, {occon_plugin.__path__[0].rsplit('/', 1)[0]!r})\n"
            "seen = []\n"
            "for value in ['0', 'false', 'OFF', 'no', ' 0 ', '1', 'true', '']:\n"
            "    os.environ['OCCON_PLUGIN_AUTOREGISTER'] = value\n"
            "    sys.modules.pop('occon_plugin', None)\n"
            f"    exec({line!r})\n"
            "    seen.append('occon_plugin' in sys.modules)\n"
            "print(seen)")
    proc = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str([False] * 5 + [True] * 3)


def test_import_order_plugin_first_registers_when_solo_loads():
    # occon_plugin alone does not import solo-learn (cheap for localize/eval tools) ...
    out = _python("import sys, occon_plugin, occon_plugin.localize.engine; print('solo' in sys.modules)",
                  OCCON_PLUGIN_AUTOREGISTER="0")
    assert out == "False"
    # ... and METHODS holds the methods as soon as solo.methods is imported
    out = _python("import occon_plugin, solo.methods as m; print(sorted(k for k in m.METHODS if 'occon' in k))",
                  OCCON_PLUGIN_AUTOREGISTER="0")
    assert out == str(EXPECTED)


def test_import_order_solo_first_registers_on_plugin_import():
    out = _python("import solo.methods as m, occon_plugin; print(sorted(k for k in m.METHODS if 'occon' in k))",
                  OCCON_PLUGIN_AUTOREGISTER="0")
    assert out == str(EXPECTED)


def test_a_broken_plugin_never_breaks_the_host_import(tmp_path):
    # occon_plugin.methods failing (e.g. a half-installed plugin) must leave solo-learn importable
    code = ("import sys, warnings, occon_plugin; sys.modules['occon_plugin.methods'] = None\n"
            "with warnings.catch_warnings(record=True) as w:\n"
            "    warnings.simplefilter('always')\n"
            "    import solo.methods as m\n"
            "print(any('could not register' in str(x.message) for x in w), 'mocov2plus' in m.METHODS)")
    assert _python(code, OCCON_PLUGIN_AUTOREGISTER="0") == "True True"
