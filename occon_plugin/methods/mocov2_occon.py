"""MoCo v2 with object-aware positives (``method: mocov2_occon``)."""
from occon_plugin import host
from occon_plugin.methods.base import OcconMethodMixin


class MoCoV2Occon(OcconMethodMixin, host.MoCoV2Plus):
    """The host's MoCoV2Plus (queue, momentum encoder, online classifier, loss) trained on
    OA-Crop / BG-Mixup positives from :mod:`occon_plugin.augment`."""
