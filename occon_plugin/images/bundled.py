"""Real photos shipped inside scikit-image's wheel: the embedded default dataset (no download)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from occon_plugin.atomic import atomic_path

# Colour photos and a few grey ones (converted to RGB) shipped inside scikit-image's wheel.
SKIMAGE_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "motorcycle_left", "motorcycle_right",
                  "hubble_deep_field", "retina", "immunohistochemistry", "camera", "coins", "clock")


def _skimage_photo(name: str) -> np.ndarray:
    from skimage import data

    if name.startswith("motorcycle_"):  # one stereo pair: (left, right, disparity)
        left, right, _ = data.stereo_motorcycle()
        return left if name.endswith("left") else right
    return getattr(data, name)()


def export_skimage_photos(dst: Path, names=SKIMAGE_PHOTOS, max_side: int | None = 640) -> list[Path]:
    """Write the bundled photos as JPEG files (atomically), longest side <= ``max_side``."""
    from PIL import Image

    dst.mkdir(parents=True, exist_ok=True)
    written = []
    for name in names:
        target = dst / f"{name}.jpg"
        if not target.is_file():
            image = np.asarray(_skimage_photo(name))
            if image.ndim == 2:
                image = np.stack([image] * 3, axis=-1)
            pil = Image.fromarray(image[..., :3].astype(np.uint8))
            if max_side and max(pil.size) > max_side:
                pil.thumbnail((max_side, max_side), Image.BICUBIC)
            with atomic_path(target) as tmp:
                pil.save(tmp, quality=95)
        written.append(target)
    return written
