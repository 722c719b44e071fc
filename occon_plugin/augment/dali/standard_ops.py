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

from occon_plugin.models.normalization import IMAGENET_MEAN, IMAGENET_STD  # the one ImageNet constant
DEFAULT_BLUR_WINDOW = 23  # the host's DALI builder uses a 23x23 window
SOLARIZE_THRESHOLD = 128


def _get(node: Mapping, key: str, default=None):
    value = node.get(key, default) if hasattr(node, "get") else getattr(node, key, default)
    return default if value is None else value


@dataclass(frozen=True)
class ViewOps:
    """One entry of the host's ``augmentations`` list, read into plain numbers."""

    crop_size: int
    rrc_enabled: bool = True
    crop_min_scale: float = 0.08
    crop_max_scale: float = 1.0
    jitter_prob: float = 0.0
    brightness: float = 0.0
    contrast: float = 0.0
    saturation: float = 0.0
    hue: float = 0.0
    grayscale_prob: float = 0.0
    blur_prob: float = 0.0
    sigma_min: float = 0.1
    sigma_max: float = 2.0
    blur_window: int = DEFAULT_BLUR_WINDOW
    solarization_prob: float = 0.0
    flip_prob: float = 0.0
    num_crops: int = 1

    @classmethod
    def from_cfg(cls, entry: Mapping) -> "ViewOps":
        rrc = _get(entry, "rrc", {})
        jitter = _get(entry, "color_jitter", {})
        blur = _get(entry, "gaussian_blur", {})
        window = int(_get(blur, "kernel_size", DEFAULT_BLUR_WINDOW))
        return cls(
            crop_size=int(_get(entry, "crop_size")),
            rrc_enabled=bool(_get(rrc, "enabled", True)),
            crop_min_scale=float(_get(rrc, "crop_min_scale", 0.08)),
            crop_max_scale=float(_get(rrc, "crop_max_scale", 1.0)),
            jitter_prob=float(_get(jitter, "prob", 0.0)),
            brightness=float(_get(jitter, "brightness", 0.0)),
            contrast=float(_get(jitter, "contrast", 0.0)),
            saturation=float(_get(jitter, "saturation", 0.0)),
            hue=float(_get(jitter, "hue", 0.0)),
            grayscale_prob=float(_get(_get(entry, "grayscale", {}), "prob", 0.0)),
            blur_prob=float(_get(blur, "prob", 0.0)),
            sigma_min=float(_get(blur, "sigma_min", 0.1)),
            sigma_max=float(_get(blur, "sigma_max", 2.0)),
            blur_window=window + (1 - window % 2),  # DALI needs an odd window
            solarization_prob=float(_get(_get(entry, "solarization", {}), "prob", 0.0)),
            flip_prob=float(_get(_get(entry, "horizontal_flip", {}), "prob", 0.0)),
            num_crops=int(_get(entry, "num_crops", 1)),
        )


def views_from_cfg(augmentations) -> list[ViewOps]:
    """One ``ViewOps`` per produced view (an entry with ``num_crops: 2`` gives two views)."""
    if augmentations is None or len(augmentations) == 0:
        raise ValueError("augmentations is empty: give a list of pipelines, e.g. one with num_crops: 2")
    views = []
    for i, entry in enumerate(augmentations):
        if _get(entry, "crop_size") is None:
            raise ValueError(f"augmentations[{i}].crop_size is required (the side of the square views)")
        if float(_get(_get(entry, "equalization", {}), "prob", 0.0)) > 0:
            raise ValueError(f"augmentations[{i}].equalization.prob > 0: equalization has no DALI op "
                             f"(solo-learn's DALI loader rejects it too); set it to 0 or use the torchvision loader")
        ops = ViewOps.from_cfg(entry)
        if not 0.0 <= ops.hue <= 0.5:
            raise ValueError(f"augmentations[{i}].color_jitter.hue={ops.hue} must be in [0, 0.5] (torchvision's range)")
        if ops.num_crops < 1:
            raise ValueError(f"augmentations[{i}].num_crops={ops.num_crops} must be >= 1")
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
