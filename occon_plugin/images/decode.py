"""The one decode rule: any image file -> ``H x W x 3`` uint8 RGB, the same pixels in every path.

Localization, both pretraining pipelines (torchvision v2 and DALI), evaluation and feature
extraction all read images through :func:`decode_image_bytes`; the DALI pipeline hands its own
decoder only the files for which it was measured to return exactly these pixels
(:func:`dali_decodes_natively`, checked image by image in ``tests/robustness``) and feeds every
other file as this rule's output. The rule, in order:

1. **Orientation**: the EXIF orientation tag is applied (``PIL.ImageOps.exif_transpose``), so
   width and height are those of the displayed photo. DALI's decoder does the same.
2. **8-bit modes** (``1``, ``L``, ``P``, ``RGB``, ``RGBA``, ``LA``, ``PA``, ``CMYK``, ``YCbCr``,
   ``RGBX``, ``La``, ``RGBa``, ``LAB``, ``HSV``): ``PIL.Image.convert("RGB")``. **Alpha is dropped**
   (the colour stored under a transparent pixel is kept, a palette's transparent index keeps its
   palette colour), exactly what torchvision's ``ImageFolder`` loader — and so solo-learn's
   baseline — and DALI's decoder do; CMYK uses PIL's conversion (no ICC profile is applied).
3. **16-bit samples** (16-bit PNG of any colour type, ``I;16*`` modes): scaled, never clipped:
   ``v8 = round(v16 * 255 / 65535)`` (DALI's own rule; PIL alone would keep only the high byte
   of colour PNGs and clip grey ones to white). Alpha is dropped as above.
4. **32-bit integer** (``I``): values in ``0..65535`` are 16-bit data (how PIL opens 16-bit
   grey TIFFs): rule 3; otherwise scaled from the full ``0..2**32-1`` range (negatives -> 0).
5. **32-bit float** (``F``): finite values within ``[0, 1]`` are scaled by 255; within
   ``[0, 255]`` they are taken as they are; otherwise min-max scaled to ``0..255``. NaN -> 0.
   Values are rounded to the nearest integer.
6. Multi-frame files (animated PNG/WebP, multi-page TIFF): the first frame.

Grey results are replicated to three channels. Files that cannot be decoded raise
:class:`~occon_plugin.images.loading.BadImageError` (see ``loading.py``).
"""
from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageOps

EXIF_ORIENTATION_TAG = 274
# EXIF orientations that swap width and height (transpose, rotate 90/270, transverse).
SWAPPING_ORIENTATIONS = {5, 6, 7, 8}
_TRANSPOSE = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
              4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE,
              6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE, 8: Image.Transpose.ROTATE_90}

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")

# (format, mode) pairs DALI's CPU/GPU decoder turns into exactly this rule's pixels (8-bit data
# only; tests/robustness/test_decode.py compares every pair pixel by pixel).
DALI_NATIVE = {
    "JPEG": {"RGB", "L", "CMYK"},
    "PNG": {"RGB", "L", "RGBA", "LA", "P", "1"},
    "BMP": {"RGB"},
    "WEBP": {"RGB", "RGBA"},
    "TIFF": {"RGB"},
}


def png_bit_depth(head: bytes) -> int | None:
    """Bit depth from a PNG's IHDR (``head`` = the file's first >= 25 bytes); None if not a PNG."""
    if len(head) >= 25 and head.startswith(_PNG_SIGNATURE) and head[12:16] == b"IHDR":
        return head[24]
    return None


def orientation_of(img: Image.Image) -> int:
    """The EXIF orientation (1..8; 1 when absent or unreadable)."""
    try:
        value = img.getexif().get(EXIF_ORIENTATION_TAG, 1)
        return int(value) if int(value) in range(1, 9) else 1
    except Exception:  # a damaged EXIF block: PIL's exif_transpose ignores it too
        return 1


def dali_decodes_natively(fmt: str | None, mode: str, bit_depth: int | None) -> bool:
    """Whether DALI's decoder gives exactly :func:`decode_image_bytes`'s pixels for such a file."""
    if bit_depth not in (None, 1, 2, 4, 8):
        return False
    return mode in DALI_NATIVE.get(fmt or "", ())


def _scale16(values: np.ndarray) -> np.ndarray:
    return np.rint(values.astype(np.float64) * (255.0 / 65535.0)).astype(np.uint8)


def _grey_to_rgb(grey: np.ndarray) -> np.ndarray:
    return np.repeat(grey[..., None], 3, axis=2)


def _float_to_u8(values: np.ndarray) -> np.ndarray:
    values = np.where(np.isfinite(values), values.astype(np.float64), np.nan)
    finite = values[np.isfinite(values)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)
    if lo >= 0.0 and hi <= 1.0:
        scaled = values * 255.0
    elif lo >= 0.0 and hi <= 255.0:
        scaled = values
    else:
        scaled = (values - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(values)
    return np.rint(np.nan_to_num(scaled, nan=0.0)).clip(0, 255).astype(np.uint8)


def to_rgb_array(img: Image.Image) -> np.ndarray:
    """Rules 2 and 4-5 for a loaded PIL image whose orientation is already applied."""
    mode = img.mode
    if mode in _SIXTEEN_BIT_MODES:
        return _grey_to_rgb(_scale16(np.asarray(img)))
    if mode == "I":
        values = np.asarray(img).astype(np.int64)
        if values.size and values.min() >= 0 and values.max() <= 65535:
            return _grey_to_rgb(_scale16(values))
        return _grey_to_rgb(np.rint(values.clip(0, None) * (255.0 / (2 ** 32 - 1))).astype(np.uint8))
    if mode == "F":
        return _grey_to_rgb(_float_to_u8(np.asarray(img)))
    return np.asarray(img.convert("RGB"), dtype=np.uint8)


def _decode_png16(data: bytes, orientation: int) -> np.ndarray:
    import cv2

    arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED | cv2.IMREAD_IGNORE_ORIENTATION)
    if arr is None:
        raise OSError("OpenCV cannot decode this 16-bit PNG")
    if arr.ndim == 3:
        arr = arr[..., 2::-1] if arr.shape[2] >= 3 else arr[..., 0]  # BGR(A) -> RGB, alpha dropped
    rgb = _scale16(arr) if arr.dtype == np.uint16 else arr.astype(np.uint8)
    if rgb.ndim == 2:
        rgb = _grey_to_rgb(rgb)
    if orientation in _TRANSPOSE:
        rgb = np.asarray(Image.fromarray(np.ascontiguousarray(rgb)).transpose(_TRANSPOSE[orientation]))
    return np.ascontiguousarray(rgb)


def decode_image_bytes(data: bytes) -> np.ndarray:
    """The rule above applied to an encoded file's bytes: ``H x W x 3`` uint8 RGB (a fresh,
    writable, C-contiguous array). Raises PIL/OS errors for undecodable data (the caller
    names the file)."""
    with Image.open(io.BytesIO(data)) as img:
        img.load()  # decode now: truncated/corrupt data fails here, not later
        if png_bit_depth(data[:32]) == 16:
            return _decode_png16(data, orientation_of(img))
        img = ImageOps.exif_transpose(img)
        return np.array(to_rgb_array(img), dtype=np.uint8, order="C", copy=True)


def decode_to_pil(data: bytes) -> Image.Image:
    """:func:`decode_image_bytes` as an RGB ``PIL.Image`` (for torchvision-style loaders)."""
    return Image.fromarray(decode_image_bytes(data), mode="RGB")
