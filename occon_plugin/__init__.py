"""occon-plugin: object-aware contrastive learning (Mo et al., NeurIPS 2021) for solo-learn.

Importing the package registers the object-aware methods (``mocov2_occon``, ``byol_occon``, ...,
see :mod:`occon_plugin.methods.table`) in ``solo.methods.METHODS`` (idempotent; see
:func:`register`). If solo-learn is not imported yet, registration happens the moment
``solo.methods`` is imported, so tools that never touch the host (``occon-localize``, its CRF
workers, the eval scripts) do not pay for importing solo-learn and Lightning.

Installing the package also installs a startup hook, ``occon_plugin_autoregister.pth``, that
imports this (small, torch-free) module in every Python process of the environment: solo-learn's
own scripts then see the methods with no ``import occon_plugin`` in them. Set the environment
variable ``OCCON_PLUGIN_AUTOREGISTER=0`` to turn the hook off (``bench/startup.py`` measures its
cost). This module must stay cheap to import: standard library only, nothing that imports
``importlib.abc`` (~10 ms), torch or solo-learn.
"""
from __future__ import annotations

import sys

__version__ = "0.1.0"

AUTOREGISTER_ENV = "OCCON_PLUGIN_AUTOREGISTER"  # "0" / "false" / "off" / "no": no startup hook


def register():
    """Add the object-aware methods to ``solo.methods.METHODS`` now (imports solo-learn)."""
    from occon_plugin.methods import register as _register

    return _register()


def _register_after_host_import() -> None:
    """Called right after ``solo.methods`` (or the plugin's adapter ``occon_plugin.host``) finished importing.
    A failure here must never break the host's own import (a user running solo-learn's scripts): it becomes a
    warning, and an explicit ``import occon_plugin.methods`` shows the full error."""
    host = sys.modules.get("occon_plugin.host")
    if host is not None and not getattr(host, "READY", False):
        return  # occon_plugin.host is importing solo-learn right now: this hook runs again when it is done
    if sys.modules.get("occon_plugin.methods") is not None:
        return  # occon_plugin.methods is importing (it registers at its end) or registered already
    try:
        register()
    except Exception as exc:  # noqa: BLE001 - reported, the host stays usable
        import warnings

        warnings.warn(f"occon-plugin could not register its methods in solo.methods.METHODS ({exc!r}); "
                      f"`python -c 'import occon_plugin.methods'` shows the error", RuntimeWarning, stacklevel=2)


# The modules after whose import the methods are registered: solo-learn's method table (a user's own
# script), and the plugin's adapter (``import occon_plugin.host``: it imports ``solo.methods`` itself, while
# it is still half-imported, so registering has to wait until the adapter is done).
_REGISTER_AFTER = ("solo.methods", "occon_plugin.host")


class _RegisterAfterSoloMethods:
    """Post-import hook (a ``sys.meta_path`` finder, duck-typed to stay cheap): run :func:`register`
    right after ``solo.methods`` or ``occon_plugin.host`` finishes importing. One shot per module."""

    def __init__(self):
        self.waiting = set(_REGISTER_AFTER)

    def find_spec(self, name, path, target=None):
        if name not in self.waiting:
            return None
        self.waiting.discard(name)
        spec = None
        others = [f for f in sys.meta_path if f is not self]  # also keeps the lookup below from recursing
        for finder in others:  # whoever would have found it (path finder, editable finders)
            find = getattr(finder, "find_spec", None)
            spec = find(name, path, target) if find is not None else None
            if spec is not None:
                break
        if not self.waiting and self in sys.meta_path:
            sys.meta_path.remove(self)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        exec_module = spec.loader.exec_module

        def exec_then_register(module):
            exec_module(module)
            _register_after_host_import()

        spec.loader.exec_module = exec_then_register
        return spec


def _arm() -> None:
    if "solo.methods" in sys.modules:
        register()
    elif not any(isinstance(f, _RegisterAfterSoloMethods) for f in sys.meta_path):
        sys.meta_path.insert(0, _RegisterAfterSoloMethods())


_arm()

__all__ = ["register", "__version__", "AUTOREGISTER_ENV"]
