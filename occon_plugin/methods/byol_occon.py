"""BYOL with object-aware positives (``method: byol_occon``)."""
from occon_plugin import host
from occon_plugin.methods.base import OcconMethodMixin


class BYOLOccon(OcconMethodMixin, host.BYOL):
    """The host's BYOL trained on OA-Crop / BG-Mixup positives from :mod:`occon_plugin.augment`."""
