"""The standard per-view SSL augmentations as DALI ops (the host's DALI op choices).

Follows solo-learn's DALI builder: random resized crop (cubic), colour jitter / grayscale /
gaussian blur / solarization each applied with a per-sample coin flip, then one
``crop_mirror_normalize`` that flips and normalizes to NCHW float. Used by the object-aware
pipeline and by the host-style pipeline of ``bench/augment_dali.py`` so that both run the
same ops. Must be called inside a ``pipeline_def(enable_conditionals=True)`` body.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from nvidia.dali import fn, types

from occon_plugin.augment.views import DALI_BLUR_WINDOW, view_default
from occon_plugin.errors import ConfigError
from occon_plugin.models.normalization import IMAGENET_MEAN, IMAGENET_STD  # the one ImageNet constant

DEFAULT_BLUR_WINDOW = DALI_BLUR_WINDOW  # the host's DALI builder uses a 23x23 window
SOLARIZE_THRESHOLD = 128


def _get(node: Mapping, key: str, default=None):
    value = node.get(key, default) if hasattr(node, "get") else getattr(node, key, default)
    return default if value is None else value


@dataclass(frozen=True)
class ViewOps:
    """One entry of the host's ``augmentations`` list, read into plain numbers."""

    crop_size: int
    rrc_enabled: bool = view_default("rrc", "enabled")
    crop_min_scale: float = view_default("rrc", "crop_min_scale")
    crop_max_scale: float = view_default("rrc", "crop_max_scale")
    jitter_prob: float = view_default("color_jitter", "prob")
    brightness: float = view_default("color_jitter", "brightness")
    contrast: float = view_default("color_jitter", "contrast")
    saturation: float = view_default("color_jitter", "saturation")
    hue: float = view_default("color_jitter", "hue")
    grayscale_prob: float = view_default("grayscale", "prob")
    blur_prob: float = view_default("gaussian_blur", "prob")
    sigma_min: float = view_default("gaussian_blur", "sigma_min")
    sigma_max: float = view_default("gaussian_blur", "sigma_max")
    blur_window: int = DEFAULT_BLUR_WINDOW
    solarization_prob: float = view_default("solarization", "prob")
    flip_prob: float = view_default("horizontal_flip", "prob")
    num_crops: int = view_default("num_crops")

    @classmethod
    def from_cfg(cls, entry: Mapping) -> "ViewOps":
        rrc = _get(entry, "rrc", {})
        jitter = _get(entry, "color_jitter", {})
        blur = _get(entry, "gaussian_blur", {})
        window = int(_get(blur, "kernel_size", DEFAULT_BLUR_WINDOW))
        d = cls.__dataclass_fields__  # the defaults: occon_plugin.augment.views.VIEW_DEFAULTS
        return cls(
            crop_size=int(_get(entry, "crop_size")),
            rrc_enabled=bool(_get(rrc, "enabled", d["rrc_enabled"].default)),
            crop_min_scale=float(_get(rrc, "crop_min_scale", d["crop_min_scale"].default)),
            crop_max_scale=float(_get(rrc, "crop_max_scale", d["crop_max_scale"].default)),
            jitter_prob=float(_get(jitter, "prob", d["jitter_prob"].default)),
            brightness=float(_get(jitter, "brightness", d["brightness"].default)),
            contrast=float(_get(jitter, "contrast", d["contrast"].default)),
            saturation=float(_get(jitter, "saturation", d["saturation"].default)),
            hue=float(_get(jitter, "hue", d["hue"].default)),
            grayscale_prob=float(_get(_get(entry, "grayscale", {}), "prob", d["grayscale_prob"].default)),
            blur_prob=float(_get(blur, "prob", d["blur_prob"].default)),
            sigma_min=float(_get(blur, "sigma_min", d["sigma_min"].default)),
            sigma_max=float(_get(blur, "sigma_max", d["sigma_max"].default)),
            blur_window=window + (1 - window % 2),  # DALI needs an odd window
            solarization_prob=float(_get(_get(entry, "solarization", {}), "prob", d["solarization_prob"].default)),
            flip_prob=float(_get(_get(entry, "horizontal_flip", {}), "prob", d["flip_prob"].default)),
            num_crops=int(_get(entry, "num_crops", d["num_crops"].default)),
        )


def views_from_cfg(augmentations) -> list[ViewOps]:
    """One ``ViewOps`` per produced view (an entry with ``num_crops: 2`` gives two views).
    Raises :class:`~occon_plugin.errors.ConfigError` naming ``augmentations[i].<key>`` for a value DALI
    cannot run (no ``crop_size``, ``equalization``, a hue outside [0, 0.5], ``num_crops`` < 1)."""
    if augmentations is None or len(augmentations) == 0:
        raise ConfigError("augmentations is empty: give a list of pipelines, e.g. one with num_crops: 2")
    views = []
    for i, entry in enumerate(augmentations):
        if _get(entry, "crop_size") is None:
            raise ConfigError(f"augmentations[{i}].crop_size is required (the side of the square views)")
        if float(_get(_get(entry, "equalization", {}), "prob", 0.0)) > 0:
            raise ConfigError(f"augmentations[{i}].equalization.prob > 0: equalization has no DALI op "
                             f"(solo-learn's DALI loader rejects it too); set it to 0 or use the torchvision loader")
        ops = ViewOps.from_cfg(entry)
        if not 0.0 <= ops.hue <= 0.5:
            raise ConfigError(f"augmentations[{i}].color_jitter.hue={ops.hue} must be in [0, 0.5] (torchvision's range)")
        if ops.num_crops < 1:
            raise ConfigError(f"augmentations[{i}].num_crops={ops.num_crops} must be >= 1")
        views.extend([ops] * ops.num_crops)
    return views


def _coin(prob: float):
    return fn.random.coin_flip(probability=prob, dtype=types.BOOL)


def _uniform_factor(strength: float):
    return fn.random.uniform(range=[max(0.0, 1.0 - strength), 1.0 + strength])


def _color_jitter(images, ops: ViewOps):
    # torchvision's ranges; DALI's hue is in degrees.
    if _coin(ops.jitter_prob):
        images = fn.color_twist(
            images,
            brightness=_uniform_factor(ops.brightness) if ops.brightness else 1.0,
            contrast=_uniform_factor(ops.contrast) if ops.contrast else 1.0,
            saturation=_uniform_factor(ops.saturation) if ops.saturation else 1.0,
            hue=fn.random.uniform(range=[-360.0 * ops.hue, 360.0 * ops.hue]) if ops.hue else 0.0,
        )
    return images


def _grayscale(images, ops: ViewOps):
    if _coin(ops.grayscale_prob):
        gray = fn.color_space_conversion(images, image_type=types.RGB, output_type=types.GRAY)
        images = fn.cat(gray, gray, gray, axis=2)
    return images


def _gaussian_blur(images, ops: ViewOps):
    if _coin(ops.blur_prob):
        sigma = fn.random.uniform(range=[ops.sigma_min, ops.sigma_max])
        images = fn.gaussian_blur(images, window_size=ops.blur_window, sigma=sigma)
    return images


def _solarize(images):
    inverted = types.Constant(255, dtype=types.UINT8) - images
    bright = images >= SOLARIZE_THRESHOLD
    return bright * inverted + (True ^ bright) * images


def _maybe_solarize(images, ops: ViewOps):
    if _coin(ops.solarization_prob):
        images = _solarize(images)
    return images


def apply_view_ops(images, ops: ViewOps):
    """HWC uint8 images (any size) -> NCHW float (crop_size², ImageNet-normalized)."""
    if ops.rrc_enabled:
        images = fn.random_resized_crop(
            images, size=ops.crop_size,
            random_area=(ops.crop_min_scale, ops.crop_max_scale), interp_type=types.INTERP_CUBIC)
    else:
        images = fn.resize(images, size=(ops.crop_size, ops.crop_size),
                           interp_type=types.INTERP_CUBIC)
    # A probability of 0 builds no op at all, as in the host's builder.
    if ops.jitter_prob:
        images = _color_jitter(images, ops)
    if ops.grayscale_prob:
        images = _grayscale(images, ops)
    if ops.blur_prob:
        images = _gaussian_blur(images, ops)
    if ops.solarization_prob:
        images = _maybe_solarize(images, ops)
    mirror = fn.random.coin_flip(probability=ops.flip_prob) if ops.flip_prob else 0
    return fn.crop_mirror_normalize(
        images, dtype=types.FLOAT, output_layout="CHW", mirror=mirror,
        mean=[255.0 * v for v in IMAGENET_MEAN], std=[255.0 * v for v in IMAGENET_STD])
