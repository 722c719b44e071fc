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

from occon_plugin.errors import DataError
from occon_plugin.eval.boxes import normalize_cam
from occon_plugin.images import file_fingerprint
from occon_plugin.store import Store, StoreError


class PredictionsNotFound(DataError, FileNotFoundError):
    """The predictions path does not exist."""


class PredictionError(DataError, ValueError):
    """A prediction file that cannot be used; the message names it."""


class CamFolder:
    """Prediction maps as a folder of image-named files (``.npy`` float maps or 8-bit PNGs), read one per image.

    Raises:
        PredictionsNotFound: the folder is neither a store nor a folder of maps."""

    kind = "cam_dir"
    note = None
    last_constant = False  # the map :meth:`load` read last was constant and positive (see there)
    last_nonfinite = False  # ... held NaN or infinite values (scored as no object, as wsolevaluation does)

    def __init__(self, root):
        self.root = Path(root)
        if not self.root.is_dir():
            raise PredictionsNotFound(f"predictions {self.root} is neither a store (no manifest.json) nor an "
                                      f"existing CAM folder")

    def _find(self, rel: str) -> Optional[Path]:
        stem = PurePosixPath(rel).with_suffix("")
        for ext in (".npy", ".png"):
            p = self.root / f"{stem}{ext}"
            if p.is_file():
                return p
        return None

    def status(self, rel: str) -> str:
        return "ok" if self._find(rel) is not None else "missing"

    def mismatch(self, rel: str, width: int, height: int, image_root: Optional[Path]) -> Optional[str]:
        return None  # CAMs of any size are resized to the image by the protocol (wsolevaluation)

    def load(self, rel: str, width: int, height: int) -> Optional[np.ndarray]:
        """The CAM of ``rel`` as stored (float32 2-D, any size: the protocol resizes it); None when missing.

        Raises:
            PredictionError: a map that cannot be read or is not 2-D.
        """
        path = self._find(rel)
        if path is None:
            return None
        try:
            if path.suffix == ".npy":
                cam = np.load(path, allow_pickle=False).astype(np.float32)
            else:
                with Image.open(path) as img:
                    cam = np.asarray(img.convert("L"), dtype=np.float32) / 255.0
        except (OSError, ValueError, SyntaxError, EOFError) as exc:
            raise PredictionError(f"CAM {path} cannot be read ({type(exc).__name__}: {exc}); fix or remove it") from exc
        cam = np.squeeze(cam)
        if cam.ndim != 2:
            raise PredictionError(f"CAM {path} must be a 2-D map; it has shape {cam.shape}")
        # min-max normalization (the wsolevaluation protocol) has no ranking to keep in a constant map: it
        # becomes zeros (no object anywhere). A constant positive file (e.g. a "whole image" baseline) is
        # therefore not scored as what it looks like: the evaluator says so (``constant_maps``)
        self.last_nonfinite = not bool(np.isfinite(cam).all())
        self.last_constant = bool(not self.last_nonfinite and cam.max() == cam.min() and cam.max() > 0)
        return normalize_cam(resize_map(cam, width, height))


class StorePredictions:
    """Masks of an ``occon-localize`` store. Store masks are at their image's own size: a ground
    truth of another size, or an image file other than the one the mask was computed from, is a
    mismatch (:meth:`mismatch`), never resized silently."""

    kind = "store"

    def __init__(self, root, allow_v1_store: bool = False, image_root=None):
        """Raises :class:`~occon_plugin.store.UnverifiableStoreError` for a schema-v1 store unless
        ``allow_v1_store`` (then :attr:`note` says what is not checked)."""
        self.store = Store.open(root)
        self.note = self.store.require_fingerprints(allow_v1_store, "allow_v1_store", image_root)
        self.unverified: list[str] = []  # images absent under the image root: their masks were checked by size only

    def status(self, rel: str) -> str:
        """``"ok"``, ``"missing"`` (no entry) or ``"failed"`` (the image was unreadable at localization)."""
        entry = self.store.entries.get(rel)
        if entry is None:
            return "missing"
        return "ok" if entry.ok else "failed"

    def mismatch(self, rel: str, width: int, height: int, image_root: Optional[Path]) -> Optional[str]:
        """Why the stored mask of ``rel`` does not belong to this ground truth / image, or None."""
        entry = self.store.entries[rel]
        if (entry.width, entry.height) != (width, height):
            return f"store mask is {entry.width}x{entry.height}, ground truth {width}x{height}"
        if image_root is not None and entry.fingerprint:
            try:
                current = file_fingerprint(Path(image_root) / rel)
            except OSError:  # the image is absent here: the size check above is all we can do (said by the CLI)
                self.unverified.append(rel)
                return None
            if current != entry.fingerprint:
                return "store mask was computed from another file than this image (fingerprint differs)"
        problem = entry.problem()
        return f"damaged store entry: {problem}" if problem else None

    def load(self, rel: str, width: int, height: int) -> Optional[np.ndarray]:
        """The prediction map of ``rel`` at the ground truth's size: float32 H x W in [0, 1].

        Raises:
            StoreError: the stored mask's size differs from the ground truth's.
        """
        entry = self.store.entries.get(rel)
        if entry is None or not entry.ok:
            return None
        mask = self.store.load_mask(rel)
        if mask.shape != (height, width):
            raise StoreError(f"store mask of {rel} is {mask.shape[1]}x{mask.shape[0]}, the ground truth is "
                             f"{width}x{height}: not resized (check mismatch() first)")
        return mask


def resize_map(cam: np.ndarray, width: int, height: int) -> np.ndarray:
    """``cam`` at ``width`` x ``height`` (bicubic when the size differs), float32.

    A map that is one value everywhere stays exactly that value: bicubic resampling of a constant leaves
    1-ulp float noise (1.0 -> 0.9999999 here and there), which min-max normalization would blow up into a
    0/1 pattern of thousands of contours, i.e. boxes of noise instead of the protocol's "no box" (and
    minutes of box search per image)."""
    cam = np.asarray(cam, dtype=np.float32)
    if cam.shape != (height, width):
        if cam.size and cam.min() == cam.max():
            return np.full((height, width), cam.flat[0], dtype=np.float32)
        cam = cv2.resize(cam, (width, height), interpolation=cv2.INTER_CUBIC)
    return cam


def open_predictions(source, allow_v1_store: bool = False, image_root=None):
    """A store (a folder with ``manifest.json``; see :class:`StorePredictions` for ``allow_v1_store``)
    or a CAM folder."""
    source = Path(source)
    if (source / "manifest.json").is_file():
        return StorePredictions(source, allow_v1_store, image_root)
    return CamFolder(source)
