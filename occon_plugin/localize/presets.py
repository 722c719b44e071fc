"""Localization presets: named sets of ContraCAM/refinement settings, and the one each model gets by default.

A preset fills every localization key the user left unset (``None`` in
:class:`~occon_plugin.localize.runner.LocalizeSettings`, ``null`` in ``configs/localize.yaml``);
explicit keys always win. A preset is stated in the settings' own types (:class:`Preset`: a
:class:`~occon_plugin.localize.settings.CamSettings` and a ``RefineSettings`` with every key set), so a new
setting is one field of those classes and one value per preset here. ``preset=auto`` (the default) takes the
preset that travels with the model: the ``preset`` of its family's entry in
:data:`occon_plugin.models.FAMILIES` (or a ``spec.defaults["localize"]["preset"]`` a loader attached).

========================  ========================================================================
preset                    what
========================  ========================================================================
``paper``                 the paper's / authors' localization operator (App. B.1, authors' code):
                          T=10, expansion, dense CRF on the 224x224 model input (pydensecrf
                          defaults), tau 0.2, fill = normalization mean
``bg_mixup``              the paper's BG-Mixup masks (Sec. 3.1): T=1, no expansion, no refinement
``lite``                  measured best for the embedded EfficientNet-Lite0 on the dev sets
                          (``bench/localize_quality.py``, ``docs/results.md``; the choices one by one,
                          with paired differences: ``docs/fidelity.md``): T=2, expansion with dilation 2
                          after it, refinement ``crf+fgs``: the dense CRF on the 224x224 input at 64x64
                          with a narrower, weaker bilateral kernel (srgb 8, compat 7), then the fast
                          global smoother at 224x224 (lambda 1000, sigma 6)
``resnet``                contrastive ResNets (the paper's models): the paper's operator, as the authors
                          ran it on their MoCo v2 / BYOL ResNets (not re-measured here: no
                          self-supervised ResNet weights are available to this project)
``no_expansion``          models without a stage to expand (ViT, other CNNs): the paper's operator
                          without the expansion trick
========================  ========================================================================

Which preset a model gets (``preset=auto``): its family's (``efficientnet-lite`` -> ``lite``, ``resnet`` ->
``resnet``, ``vit``/``swin``/``convnext``/``cnn`` -> ``no_expansion``), :data:`FALLBACK` for a family
that names none.
"""
from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from typing import Any, Dict, Iterator, Tuple

from occon_plugin.errors import ConfigError
from occon_plugin.localize.refiners import (REFINERS, RefineSettings, canonical_method, check_refine, fill_param_defaults,
                                            refine_settings)
from occon_plugin.localize.settings import CamSettings
from occon_plugin.models import FAMILIES


@dataclass(frozen=True)
class Preset:
    """A named set of localization settings: every ``cam.*`` key, ``refine.method``, ``refine.resolution``
    and the refinement parameters it chooses (the ones it leaves None take the methods' defaults).

    Raises:
        ConfigError: a ``cam`` key or ``refine.method``/``resolution`` left None, or a value out of range.
    """

    cam: CamSettings
    refine: RefineSettings

    def __post_init__(self):
        missing = [f"cam.{f.name}" for f in dataclasses.fields(self.cam) if getattr(self.cam, f.name) is None]
        missing += [f"refine.{k}" for k in ("method", "resolution") if getattr(self.refine, k) is None]
        if missing:
            raise ConfigError(f"a preset must set every cam key and refine.method/resolution; this one lacks {missing}")
        bad = self.cam.problems()
        if bad:
            key, value, what = bad[0]
            raise ConfigError(f"preset cam.{key}={value!r} is invalid: {what}")
        check_refine(self.refine)


_PYDENSECRF = {"bilateral_srgb": 13.0, "bilateral_compat": 10.0}  # the library's README defaults (paper App. B)
_PAPER_CAM = CamSettings(iters=10, nsr=True, expand=True, dilate=False, temperature=0.2, early_exit_tol=0.0,
                         fill="mean", flip=False, weights="mean", score="contrastive")
_PAPER = Preset(_PAPER_CAM, refine_settings("crf", "input", crf=_PYDENSECRF))

PRESETS: Dict[str, Preset] = {
    "paper": _PAPER,
    "bg_mixup": Preset(dataclasses.replace(_PAPER_CAM, iters=1, expand=False), refine_settings("none", "input")),
    # the dense CRF on the 224x224 input at 64x64 (max_pixels), then the fast global smoother at 224x224
    "lite": Preset(dataclasses.replace(_PAPER_CAM, iters=2, expand=True, dilate=True),
                   refine_settings("crf+fgs", "input",
                                   crf={"bilateral_srgb": 8.0, "bilateral_compat": 7.0, "max_pixels": 4096},
                                   fgs={"lam": 1000.0, "sigma_color": 6.0})),
    "resnet": _PAPER,
    "no_expansion": Preset(dataclasses.replace(_PAPER_CAM, expand=False), refine_settings("crf", "input", crf=_PYDENSECRF)),
}

FALLBACK = "no_expansion"  # preset=auto for a model whose family names no preset


def preset(name: str) -> Preset:
    """A deep copy of preset ``name``.

    Raises:
        ConfigError: ``name`` is not in :data:`PRESETS` (the message lists the known presets).
    """
    if name not in PRESETS:
        raise ConfigError(f"preset={name!r} is unknown: use auto or one of {sorted(PRESETS)}")
    return copy.deepcopy(PRESETS[name])


def model_preset_name(spec) -> str:
    """The preset that travels with a model (a :class:`~occon_plugin.models.ModelSpec`): ``spec.defaults
    ["localize"]["preset"]`` if set, else its family's (:data:`occon_plugin.models.FAMILIES`), else
    :data:`FALLBACK`."""
    attached = (getattr(spec, "defaults", None) or {}).get("localize") or {}
    if attached.get("preset"):
        return str(attached["preset"])
    family = FAMILIES.get(getattr(spec, "family", None))
    return (family.preset if family is not None else None) or FALLBACK


def _fill_unset(target: Any, source: Any) -> None:
    """Every None field of the dataclass ``target`` takes ``source``'s value; nested dataclasses field by field."""
    for f in dataclasses.fields(target):
        mine, theirs = getattr(target, f.name), getattr(source, f.name)
        if dataclasses.is_dataclass(mine):
            _fill_unset(mine, theirs)
        elif mine is None:
            setattr(target, f.name, copy.deepcopy(theirs))


def apply_preset(settings, spec=None) -> str:
    """Fill the unset (None) ``cam`` and ``refine`` keys of ``settings`` (a LocalizeSettings) in place from the
    preset, then every refinement parameter still unset with its method's default; returns the preset's name.
    ``settings.preset`` "auto" resolves through :func:`model_preset_name`; ``refine.method`` ends in its one
    spelling (:func:`~occon_plugin.localize.refiners.canonical_method`: ``crf + fgs`` -> ``crf+fgs``).

    Raises:
        ConfigError: ``preset=auto`` without ``spec``, or an unknown preset name.
    """
    name = settings.preset
    if name in (None, "", "auto"):
        if spec is None:
            raise ConfigError("preset=auto needs the model to choose its preset; give preset=<name>")
        name = model_preset_name(spec)
    chosen = preset(name)
    _fill_unset(settings.cam, chosen.cam)
    _fill_unset(settings.refine, chosen.refine)
    fill_param_defaults(settings.refine)
    settings.refine.method = canonical_method(settings.refine.method)
    settings.preset = name
    return name


def unresolved(settings) -> list[str]:
    """The keys a preset decides that are still None in ``settings`` (``apply_preset`` not run yet)."""
    return [key for key, value in _preset_keys(settings.cam, settings.refine) if value is None]


def _preset_keys(cam: CamSettings, refine: RefineSettings) -> Iterator[Tuple[str, Any]]:
    """``(dotted key, value)`` of every key a preset must set: each ``cam.*``, ``refine.method``, ``.resolution``."""
    for f in dataclasses.fields(cam):
        yield f"cam.{f.name}", getattr(cam, f.name)
    yield "refine.method", refine.method
    yield "refine.resolution", refine.resolution


def describe(name: str) -> str:
    """One line: ``paper: cam.iters=10 ... refine.method=crf refine.resolution=input refine.crf.bilateral_srgb=13.0``
    (the preset's own keys; the refinement parameters it leaves out are the methods' defaults).

    Raises:
        ConfigError: an unknown preset name.
    """
    chosen = preset(name)
    keys = [f"{key}={value}" for key, value in _preset_keys(chosen.cam, chosen.refine)]
    keys += [f"refine.{m}.{k}={v}" for m in REFINERS for k, v in dataclasses.asdict(getattr(chosen.refine, m)).items()
             if v is not None]
    return f"{name}: " + " ".join(keys)
