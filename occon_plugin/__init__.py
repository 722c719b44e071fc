"""occon-plugin: object-aware contrastive learning (Mo et al., NeurIPS 2021) for solo-learn.

Importing the package registers ``mocov2_occon`` and ``byol_occon`` in
``solo.methods.METHODS`` (idempotent; see :func:`register`). If solo-learn is not imported yet,
registration happens the moment ``solo.methods`` is imported, so tools that never touch the host
(``occon-localize``, its CRF workers, the eval scripts) do not pay for importing solo-learn and
Lightning.
"""
from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys

__version__ = "0.1.0"


def register():
    """Add the object-aware methods to ``solo.methods.METHODS`` now (imports solo-learn)."""
    from occon_plugin.methods import register as _register

    return _register()


class _RegisterAfterSoloMethods(importlib.abc.MetaPathFinder):
    """Post-import hook: run :func:`register` right after ``solo.methods`` finishes importing."""

    def find_spec(self, name, path, target=None):
        if name != "solo.methods":
            return None
        sys.meta_path.remove(self)  # one shot; also keeps the lookup below from recursing
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None:
            return spec
        exec_module = spec.loader.exec_module

        def exec_then_register(module):
            exec_module(module)
            host = sys.modules.get("occon_plugin.host")
            if host is None or getattr(host, "READY", False):
                register()
            # else: occon_plugin.host is importing solo-learn right now; it registers when done

        spec.loader.exec_module = exec_then_register
        return spec


if "solo.methods" in sys.modules:
    register()
elif not any(isinstance(f, _RegisterAfterSoloMethods) for f in sys.meta_path):
    sys.meta_path.insert(0, _RegisterAfterSoloMethods())

__all__ = ["register", "__version__"]
