"""Overlays for eyes: a CAM heat map blended over the image, with predicted and GT boxes (PIL only)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import numpy as np
from PIL import Image, ImageDraw
from occon_plugin.atomic import atomic_path

PRED_COLOR = (255, 255, 0)  # yellow: estimated boxes
GT_COLOR = (0, 255, 0)  # green: ground truth


def jet(values: np.ndarray) -> np.ndarray:
    """The classic 'jet' colormap of values in [0, 1] -> uint8 RGB (piecewise linear)."""
    v = np.clip(np.asarray(values, dtype=np.float32), 0, 1)[..., None]
    channels = np.concatenate([1.5 - np.abs(4 * v - 3), 1.5 - np.abs(4 * v - 2), 1.5 - np.abs(4 * v - 1)], -1)
    return (np.clip(channels, 0, 1) * 255).astype(np.uint8)


def render_overlay(image: np.ndarray, cam: np.ndarray, pred_boxes: Optional[Sequence] = None,
                   gt_boxes: Optional[Sequence] = None, alpha: float = 0.5, width: int = 2) -> np.ndarray:
    """``image`` (H, W, 3) uint8 blended with the jet-coloured ``cam`` (H, W in [0, 1]) plus box outlines.

    Raises:
        ValueError: the CAM's shape differs from the image's.
    """
    image = np.asarray(image, dtype=np.uint8)
    cam = np.asarray(cam, dtype=np.float32)
    if cam.shape != image.shape[:2]:
        raise ValueError(f"CAM shape {cam.shape} differs from the image's {image.shape[:2]}")
    blended = (1 - alpha) * image.astype(np.float32) + alpha * jet(cam).astype(np.float32)
    canvas = Image.fromarray(np.clip(blended, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(canvas)
    for boxes, color in ((gt_boxes, GT_COLOR), (pred_boxes, PRED_COLOR)):
        for x0, y0, x1, y1 in np.asarray(boxes if boxes is not None else [], dtype=np.float64).reshape(-1, 4):
            draw.rectangle([x0, y0, max(x0, x1 - 1), max(y0, y1 - 1)], outline=color, width=width)
    return np.asarray(canvas)


def save_png(array: np.ndarray, path) -> Path:
    """Write an RGB uint8 array as PNG atomically."""
    path = Path(path)
    with atomic_path(path, suffix=".png") as tmp:
        Image.fromarray(np.asarray(array, dtype=np.uint8)).save(tmp, format="PNG")
    return path
