"""The object-aware methods, derived from :mod:`occon_plugin.methods.table`, and their registration
in solo-learn's ``METHODS``.

For every row of the table whose parent the installed solo-learn has, this module defines
``class <Class>(OcconMethodMixin, <parent class>)`` (e.g. ``SimCLROccon(OcconMethodMixin, SimCLR)``)
as a module attribute, so ``occon_plugin.methods:<Class>`` (the entry points) and pickling find it.
A row whose parent the host lacks (solo-learn 1.0.2 has no ``mocov3``, ``mae``, ``vibcreg``,
``all4one``) is not registered; asking for its class raises :class:`MethodUnavailable` naming the
missing parent.
"""
from __future__ import annotations

import warnings
from typing import Dict

from occon_plugin import host
from occon_plugin.errors import ConfigError
from occon_plugin.methods import table
from occon_plugin.methods.base import OcconMethodMixin

ENTRY_POINT_GROUP = table.ENTRY_POINT_GROUP


class MethodUnavailable(ConfigError, AttributeError):
    """An object-aware method whose parent the installed solo-learn does not have."""


def derive(name: str, parent: str, class_name: str) -> type:
    """``class <class_name>(OcconMethodMixin, host.METHODS[parent])``: the parent plus the object-aware
    batch handling of :class:`OcconMethodMixin`, nothing else (no overridden loss, network or hook)."""
    parent_cls = host.METHODS[parent]
    doc = (f"solo-learn's ``{parent}`` ({parent_cls.__module__}.{parent_cls.__qualname__}) trained on the "
           f"object-aware positives of :mod:`occon_plugin.augment` (``method: {name}``).")
    return type(class_name, (OcconMethodMixin, parent_cls),
                {"__module__": __name__, "__qualname__": class_name, "__doc__": doc,
                 "occon_name": name, "occon_parent": parent})


# name -> class of every object-aware method the installed host can run
OCCON_METHODS: Dict[str, type] = {}
# name -> parent method name, for those same methods (docs, tests, the zoo)
PARENT_METHOD: Dict[str, str] = {}
# name -> why it is not available on this host (its parent is missing)
UNAVAILABLE: Dict[str, str] = {}
_CLASS_OF_NAME: Dict[str, str] = {}

for _name, _parent, _class_name, _family in table.ROWS:
    _CLASS_OF_NAME[_class_name] = _name
    if _parent in host.METHODS:
        OCCON_METHODS[_name] = globals()[_class_name] = derive(_name, _parent, _class_name)
        PARENT_METHOD[_name] = _parent
    else:
        UNAVAILABLE[_name] = (f"method {_name} extends solo-learn's {_parent!r}, which solo-learn "
                              f"{host.SOLO_VERSION} ({host.GENERATION} API) does not have; "
                              f"install solo-learn main to use it")
del _name, _parent, _class_name, _family


def __getattr__(attr: str):
    """A class of the table that this host cannot build: a clear error instead of a bare AttributeError."""
    name = _CLASS_OF_NAME.get(attr)
    if name is not None and name in UNAVAILABLE:
        raise MethodUnavailable(UNAVAILABLE[name])
    raise AttributeError(f"module {__name__!r} has no attribute {attr!r}")


def register() -> Dict[str, type]:
    """Add the object-aware methods to ``solo.methods.METHODS``.

    Idempotent; a name the host (or another plugin) already uses for a different class is
    left alone with a warning, never overwritten. Returns what is registered under our names.
    """
    for name, cls in OCCON_METHODS.items():
        current = host.METHODS.get(name)
        if current is None:
            host.METHODS[name] = cls
        elif current is not cls:
            warnings.warn(
                f"solo.methods.METHODS[{name!r}] is already {current.__module__}.{current.__qualname__}; "
                "occon-plugin leaves it in place",
                RuntimeWarning,
                stacklevel=2,
            )
    return {name: host.METHODS[name] for name in OCCON_METHODS}


# Importing this module (which imports solo-learn through occon_plugin.host) registers the methods.
register()

__all__ = ["OCCON_METHODS", "PARENT_METHOD", "UNAVAILABLE", "MethodUnavailable", "ENTRY_POINT_GROUP",
           "derive", "register", *(cls.__name__ for cls in OCCON_METHODS.values())]
