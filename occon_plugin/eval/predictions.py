"""Localization predictions to evaluate: a mask store (``occon-localize`` output) or a CAM folder.

A CAM folder holds one map per image at ``<rel path stem>.npy`` (any 2-D float array, any size)
or ``<rel path stem>.png`` (8-bit), as in the wsolevaluation protocol. Maps of another size are
resized to the image with bicubic interpolation (the reference's choice) and min-max normalized to
[0, 1] per image. Store masks are already calibrated soft masks: they are used as they are.
"""
from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import Optional

import cv2
import numpy as np
from PIL import Image

from occon_plugin.eval.boxes import normalize_cam
from occon_plugin.store import Store


class CamFolder:
    kind = "cam_dir"

    def __init__(self, root):
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"CAM folder {self.root} does not exist")

    def _find(self, rel: str) -> Optional[Path]:
        stem = PurePosixPath(rel).with_suffix("")
        for ext in (".npy", ".png"):
            p = self.root / f"{stem}{ext}"
            if p.is_file():
                return p
        return None

    def load(self, rel: str, width: int, height: int) -> Optional[np.ndarray]:
        path = self._find(rel)
        if path is None:
            return None
        if path.suffix == ".npy":
            cam = np.load(path, allow_pickle=False).astype(np.float32)
        else:
            with Image.open(path) as img:
                cam = np.asarray(img.convert("L"), dtype=np.float32) / 255.0
        cam = np.squeeze(cam)
        if cam.ndim != 2:
            raise ValueError(f"CAM {path} must be a 2-D map; it has shape {cam.shape}")
        return normalize_cam(resize_map(cam, width, height))


class StorePredictions:
    kind = "store"

    def __init__(self, root):
        self.store = Store.open(root)

    def load(self, rel: str, width: int, height: int) -> Optional[np.ndarray]:
        entry = self.store.entries.get(rel)
        if entry is None or not entry.ok:
            return None
        return resize_map(self.store.load_mask(rel), width, height)


def resize_map(cam: np.ndarray, width: int, height: int) -> np.ndarray:
    """``cam`` at ``width`` x ``height`` (bicubic when the size differs), float32."""
    cam = np.asarray(cam, dtype=np.float32)
    if cam.shape != (height, width):
        cam = cv2.resize(cam, (width, height), interpolation=cv2.INTER_CUBIC)
    return cam


def open_predictions(source):
    """A store (a folder with ``manifest.json``) or a CAM folder."""
    source = Path(source)
    if (source / "manifest.json").is_file():
        return StorePredictions(source)
    return CamFolder(source)
