"""Masks -> object boxes (paper App. B): OpenCV contours, +20 % margins, drop boxes under 1 % of the image."""
from __future__ import annotations

import cv2
import numpy as np


def mask_to_boxes(mask: np.ndarray, threshold: float, margin: float = 0.2,
                  min_area_frac: float = 0.01, min_area_before_margin: bool = False) -> list[list[float]]:
    """Normalized ``[x1, y1, x2, y2]`` boxes of the connected regions of ``mask >= threshold``.

    Each contour's bounding rectangle grows by ``margin`` of its width on the left and on the
    right and of its height on top and at the bottom, is clipped to the image, and is dropped if
    its area is below ``min_area_frac`` of the image — the area with the margin, or, with
    ``min_area_before_margin``, the contour's own bounding rectangle (the authors' code: a region
    too small before its margin is dropped even when the margin would lift it over the limit).
    Sorted by area, largest first.

    ``mask``: float ``H x W`` (any real dtype; the store's 8-bit mask / 255).

    Raises:
        ValueError: ``mask`` is not 2-D.
    """
    if mask.ndim != 2:
        raise ValueError(f"mask must be H x W, got shape {mask.shape}")
    height, width = mask.shape
    binary = (np.asarray(mask) >= threshold).astype(np.uint8)
    contours, _ = cv2.findContours(binary, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    boxes = []
    for contour in contours:
        x, y, w, h = cv2.boundingRect(contour)  # pixel x..x+w (exclusive)
        x1, x2 = max(0.0, x - margin * w), min(float(width), x + w + margin * w)
        y1, y2 = max(0.0, y - margin * h), min(float(height), y + h + margin * h)
        area = w * h if min_area_before_margin else (x2 - x1) * (y2 - y1)
        if area < min_area_frac * width * height:
            continue
        boxes.append([x1 / width, y1 / height, x2 / width, y2 / height])
    boxes.sort(key=lambda b: (-(b[2] - b[0]) * (b[3] - b[1]), b[0], b[1]))
    return boxes
