"""The object-aware methods and their registration in solo-learn's ``METHODS``."""
from __future__ import annotations

import warnings
from typing import Dict

from occon_plugin import host
from occon_plugin.methods.byol_occon import BYOLOccon
from occon_plugin.methods.mocov2_occon import MoCoV2Occon

OCCON_METHODS: Dict[str, type] = {"mocov2_occon": MoCoV2Occon, "byol_occon": BYOLOccon}
# The method each object-aware method extends (for docs, tests and the zoo).
PARENT_METHOD: Dict[str, str] = {"mocov2_occon": "mocov2plus", "byol_occon": "byol"}
ENTRY_POINT_GROUP = "solo_learn.methods"


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

__all__ = ["BYOLOccon", "MoCoV2Occon", "OCCON_METHODS", "PARENT_METHOD", "register", "ENTRY_POINT_GROUP"]
