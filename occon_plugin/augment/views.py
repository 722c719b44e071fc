"""The one table of per-view augmentation defaults, for both pipelines.

One item of solo-learn main's ``augmentations`` list describes a view pipeline; a key it leaves out takes
the value below on both hosts and in both of the plugin's pipelines (torchvision: the host's own transform,
:func:`occon_plugin.host.build_view_transform`; DALI: :class:`occon_plugin.augment.dali.standard_ops.ViewOps`).
A probability left out means "off". ``gaussian_blur.kernel_size`` is read by the DALI pipeline only (the
host's DALI builder's 23x23 window; torchvision's blur sizes its kernel from sigma).
"""
from __future__ import annotations

from typing import Any

VIEW_DEFAULTS: dict[str, Any] = {
    "rrc": {"enabled": True, "crop_min_scale": 0.08, "crop_max_scale": 1.0},
    "color_jitter": {"prob": 0.0, "brightness": 0.0, "contrast": 0.0, "saturation": 0.0, "hue": 0.0},
    "grayscale": {"prob": 0.0},
    "gaussian_blur": {"prob": 0.0, "sigma_min": 0.1, "sigma_max": 2.0},
    "solarization": {"prob": 0.0},
    "equalization": {"prob": 0.0},
    "horizontal_flip": {"prob": 0.0},
    "crop_size": 224,
    "num_crops": 1,
}
DALI_BLUR_WINDOW = 23  # gaussian_blur.kernel_size default of the DALI pipeline (the host's DALI builder)


def view_default(section: str, key: str | None = None) -> Any:
    """``VIEW_DEFAULTS[section][key]`` (or ``VIEW_DEFAULTS[section]`` for a top-level key such as ``crop_size``).
    Raises ``KeyError`` for a key the table does not have (a programming error, not user input)."""
    value = VIEW_DEFAULTS[section]
    return value[key] if key is not None else value
