"""occon-plugin: object-aware contrastive learning (Mo et al., NeurIPS 2021) for solo-learn.

Importing the package registers ``mocov2_occon`` and ``byol_occon`` in
``solo.methods.METHODS`` (idempotent; see :func:`register`).
"""
from occon_plugin.methods import OCCON_METHODS, register

__version__ = "0.1.0"

register()

__all__ = ["OCCON_METHODS", "register", "__version__"]
