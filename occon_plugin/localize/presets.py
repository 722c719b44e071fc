"""Localization presets: named sets of ContraCAM/CRF settings, and the one each model gets by default.

A preset fills every localization key the user left unset (``None`` in
:class:`~occon_plugin.localize.runner.LocalizeSettings`, ``null`` in ``configs/localize.yaml``);
explicit keys always win. ``preset=auto`` (the default) takes the preset that travels with the model:
its :class:`~occon_plugin.models.ModelSpec` ``defaults["localize"]`` (filled here, per model name and
then per family, into :data:`occon_plugin.models.MODEL_DEFAULTS`).

========================  ========================================================================
preset                    what
========================  ========================================================================
``paper``                 the paper's / authors' localization operator (App. B.1, authors' code):
                          T=10, expansion, dense CRF on the 224x224 model input (pydensecrf
                          defaults), tau 0.2, fill = normalization mean
``bg_mixup``              the paper's BG-Mixup masks (Sec. 3.1): T=1, no expansion, no CRF
``lite``                  measured best for the embedded EfficientNet-Lite0 on the dev sets
                          (``bench/localize_quality.py``, ``docs/results.md``; the choices one by one,
                          with paired differences: ``docs/fidelity.md``): T=3 (within 0.001 mIoU of
                          T=10), expansion with dilation 2 after it, CRF on the 224x224 input with a
                          narrower, weaker bilateral kernel (srgb 8, compat 7)
``resnet``                contrastive ResNets (the paper's models): the paper's operator, as the authors
                          ran it on their MoCo v2 / BYOL ResNets (not re-measured here: no
                          self-supervised ResNet weights are available to this project)
``no_expansion``          models without a stage to expand (ViT, other CNNs): the paper's operator
                          without the expansion trick
========================  ========================================================================

Which preset a model gets (``preset=auto``): by name first, then by family (``efficientnet-lite`` ->
``lite``, ``resnet`` -> ``resnet``, ``vit``/``cnn`` -> ``no_expansion``).
"""
from __future__ import annotations

import copy
from typing import Any, Dict

from occon_plugin.errors import ConfigError

# The keys a preset decides (section -> keys); every other setting has an ordinary default.
PRESET_KEYS: Dict[str, tuple] = {
    "cam": ("iters", "nsr", "expand", "dilate", "temperature", "early_exit_tol", "fill", "flip"),
    "crf": ("enabled", "resolution", "bilateral_srgb", "bilateral_compat"),
}
_PYDENSECRF = {"bilateral_srgb": 13.0, "bilateral_compat": 10.0}  # the library's README defaults (paper App. B)

_PAPER = {
    "cam": {"iters": 10, "nsr": True, "expand": True, "dilate": False, "temperature": 0.2, "early_exit_tol": 0.0,
            "fill": "mean", "flip": False},
    "crf": {"enabled": True, "resolution": "input", **_PYDENSECRF},
}

PRESETS: Dict[str, Dict[str, Dict[str, Any]]] = {
    "paper": _PAPER,
    "bg_mixup": {
        "cam": {**_PAPER["cam"], "iters": 1, "expand": False},
        "crf": {"enabled": False, "resolution": "input", **_PYDENSECRF},
    },
    "lite": {
        "cam": {**_PAPER["cam"], "iters": 3, "expand": True, "dilate": True},
        "crf": {"enabled": True, "resolution": "input", "bilateral_srgb": 8.0, "bilateral_compat": 7.0},
    },
    "resnet": _PAPER,
    "no_expansion": {
        "cam": {**_PAPER["cam"], "expand": False},
        "crf": {"enabled": True, "resolution": "input", **_PYDENSECRF},
    },
}

# preset=auto: model name first, then family (occon_plugin.models.spec.FAMILIES).
BY_NAME: Dict[str, str] = {"efficientnet-lite0": "lite"}
BY_FAMILY: Dict[str, str] = {"efficientnet-lite": "lite", "resnet": "resnet", "vit": "no_expansion",
                             "cnn": "no_expansion"}
FALLBACK = "no_expansion"


def preset_values(name: str) -> Dict[str, Dict[str, Any]]:
    """A deep copy of preset ``name``'s settings; ConfigError names the known presets."""
    if name not in PRESETS:
        raise ConfigError(f"preset={name!r} is unknown: use auto or one of {sorted(PRESETS)}")
    return copy.deepcopy(PRESETS[name])


def model_preset_name(spec) -> str:
    """The preset that travels with a model: ``spec.defaults["localize"]["preset"]`` if set, else by
    the spec's ``name``, then its ``family``."""
    attached = (getattr(spec, "defaults", None) or {}).get("localize") or {}
    if attached.get("preset"):
        return str(attached["preset"])
    name, family = getattr(spec, "name", None), getattr(spec, "family", None)
    return BY_NAME.get(name) or BY_FAMILY.get(family) or FALLBACK


def register_model_defaults() -> None:
    """Attach each model's preset to :data:`occon_plugin.models.MODEL_DEFAULTS` (so ``spec.defaults``
    carries it); an entry someone else already put there is kept."""
    from occon_plugin.models import MODEL_DEFAULTS

    for key, preset in {**BY_FAMILY, **BY_NAME}.items():
        entry = MODEL_DEFAULTS.setdefault(key, {})
        entry.setdefault("localize", {"preset": preset, **preset_values(preset)})


def apply_preset(settings, spec=None) -> str:
    """Fill the unset (None) preset keys of ``settings`` (a LocalizeSettings) in place; returns the
    preset's name. ``settings.preset`` "auto" resolves through :func:`model_preset_name` (``spec``
    required then)."""
    name = settings.preset
    if name in (None, "", "auto"):
        if spec is None:
            raise ConfigError("preset=auto needs the model to choose its preset; give preset=<name>")
        name = model_preset_name(spec)
    values = preset_values(name)
    for section, keys in PRESET_KEYS.items():
        target = getattr(settings, section)
        for key in keys:
            if getattr(target, key) is None:
                setattr(target, key, values[section][key])
    settings.preset = name
    return name


def unresolved(settings) -> list[str]:
    """Preset keys still None (``apply_preset`` not run yet)."""
    return [f"{section}.{key}" for section, keys in PRESET_KEYS.items() for key in keys
            if getattr(getattr(settings, section), key) is None]


def describe(name: str) -> str:
    """One line: ``paper: cam.iters=10 cam.expand=True ... crf.enabled=True crf.resolution=input``."""
    values = preset_values(name)
    return f"{name}: " + " ".join(f"{s}.{k}={values[s][k]}" for s, keys in PRESET_KEYS.items() for k in keys)


def _check_tables() -> None:
    for name, values in PRESETS.items():
        for section, keys in PRESET_KEYS.items():
            missing = [k for k in keys if k not in values.get(section, {})]
            if missing:
                raise AssertionError(f"preset {name!r} lacks {section}.{missing}")
    for table in (BY_NAME, BY_FAMILY):
        for preset in table.values():
            if preset not in PRESETS:
                raise AssertionError(f"model preset {preset!r} is not in PRESETS")


_check_tables()
register_model_defaults()
