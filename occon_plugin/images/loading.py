"""Robust image loading: EXIF-transposed RGB uint8, with one error type for any unreadable file."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from occon_plugin.errors import DataError

# EXIF orientations that swap width and height (transpose, rotate 90/270, transverse).
_SWAPPING_ORIENTATIONS = {5, 6, 7, 8}
_EXIF_ORIENTATION_TAG = 274


class BadImageError(DataError):
    """An image that cannot be decoded; long runs catch it, count it and go on."""

    def __init__(self, path: str | Path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"bad image {path}: {reason}")


def load_image(root: str | Path, rel: str) -> np.ndarray:
    """Read ``root/rel`` as an ``H x W x 3`` uint8 RGB array, EXIF orientation applied."""
    path = Path(root) / rel
    try:
        with Image.open(path) as img:
            img.load()  # decode now: truncated/corrupt data fails here, not later
            img = ImageOps.exif_transpose(img)
            return np.asarray(img.convert("RGB"), dtype=np.uint8).copy()
    except FileNotFoundError as exc:
        raise BadImageError(path, "file not found") from exc
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise BadImageError(path, f"{type(exc).__name__}: {exc}") from exc


def image_size(root: str | Path, rel: str) -> tuple[int, int]:
    """``(width, height)`` after EXIF orientation, read from the header only (no decoding)."""
    path = Path(root) / rel
    try:
        with Image.open(path) as img:
            width, height = img.size
            if img.getexif().get(_EXIF_ORIENTATION_TAG) in _SWAPPING_ORIENTATIONS:
                width, height = height, width
            return width, height
    except FileNotFoundError as exc:
        raise BadImageError(path, "file not found") from exc
    except (OSError, ValueError, SyntaxError) as exc:
        raise BadImageError(path, f"{type(exc).__name__}: {exc}") from exc
