"""What a loaded model is: :class:`ModelSpec` (name, family, normalization, optional default settings), and
the model families (:data:`FAMILIES`): what builds, splits and normalizes each, and its localization preset.

A family is registered where it is defined (:func:`register_family`, next to its builder in
:mod:`occon_plugin.models.build`, like timm's ``register_model``/``default_cfgs``); nothing dispatches on
family names by hand. ``name`` and ``family`` are stable strings other parts of the plugin may key on:

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
from typing import Any, Callable, Dict, Optional

from occon_plugin.models.normalization import IMAGENET, Normalization


@dataclass(frozen=True)
class ModelFamily:
    """One model family: everything the plugin needs to know about it, in one place.

    name: the family's stable name (``ModelSpec.family``, the ``family`` of an occon checkpoint record).
    build: ``build(arch: str, arch_kwargs: dict) -> nn.Module``, the backbone (no classifier) whose
        ``state_dict`` an occon record of this family holds; None: not read from checkpoint records.
    cam: ``cam(spec, backbone, head) -> CamModel``, the CAM split (:mod:`occon_plugin.models.cam`) of a
        backbone made by ``build`` (or by this family's loader); ``head``: the projector or None.
    preset: the localization preset ``preset=auto`` gives its models (a name of
        :data:`occon_plugin.localize.presets.PRESETS`; None: the presets' fallback).
    normalization: what its models expect when nothing else says so (records carry their own).
    what: one line for the docs.
    """

    name: str
    build: Optional[Callable[[str, Dict[str, Any]], Any]] = None
    cam: Optional[Callable[[Any, Any, Any], Any]] = None
    preset: Optional[str] = None
    normalization: Normalization = IMAGENET
    what: str = ""


# name -> family, filled by register_family where each family is defined (occon_plugin.models.build)
FAMILIES: Dict[str, ModelFamily] = {}


def register_family(family: ModelFamily) -> ModelFamily:
    """Add (or replace) ``family`` in :data:`FAMILIES`; returns it. A new family: its builder, its CAM split
    and one ``register_family`` call beside them."""
    FAMILIES[family.name] = family
    return family


@dataclass
class ModelSpec:
    """Description of a loaded model; everything that is not weights.

    name: stable model name (``resnet18``, ``vit_small``, ``efficientnet-lite0``, ``torchvision:vgg16``).
    family: one of :data:`FAMILIES`.
    normalization: what the weights were trained with (inputs are [0, 1] RGB, normalized inside the model).
    source: what was asked for (the spec string: zoo name, ``torchvision:<name>``, checkpoint path).
    arch_kwargs: what rebuilds the architecture (``cifar_stem``, ``patch_size``, ...).
    method: the pretraining method when known (``mocov2plus``, ``byol_occon``, ...), else None.
    defaults: optional settings attached to this one model by its loader, e.g. ``{"localize": {"preset":
        "paper"}}`` (wins over the family's preset); a plain dict.
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
        """Raises ValueError for a family that is not registered (a loader's mistake, not the user's)."""
        if self.family not in FAMILIES:
            raise ValueError(f"model family must be one of {sorted(FAMILIES)}; got {self.family!r}")

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
