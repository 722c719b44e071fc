"""Robust image loading: the shared decode rule (``decode.py``), one error type for any unreadable
file, header-only inspection and a cheap content fingerprint.

* :func:`load_image` - ``H x W x 3`` uint8 RGB after EXIF orientation (the one decode rule).
* :func:`image_size` - ``(width, height)`` after EXIF orientation, from the header only.
* :func:`inspect_image` - header facts (size, format, mode, whether DALI decodes it natively) and,
  with ``decode=True``, a decodability check as strict as :func:`load_image` (JPEG: the whole
  entropy-coded stream at 1/8 scale, PNG: every chunk's CRC, other formats: a full decode).
* :func:`file_fingerprint` - what a store entry was computed from (size + hash of the first and
  last 64 KiB): swapped, replaced or re-encoded files of the same size are told apart.
* :func:`read_image` - the file read ONCE: its pixels and the fingerprint of the very bytes that were
  decoded (:func:`bytes_fingerprint`, the same rule as :func:`file_fingerprint`), so a photo replaced
  or truncated while it is being read is never described by another file's fingerprint.
"""
from __future__ import annotations

import hashlib
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from occon_plugin.errors import DataError
from occon_plugin.images.decode import (SWAPPING_ORIENTATIONS, dali_decodes_natively, decode_image_bytes,
                                        decode_to_pil, orientation_of, png_bit_depth)

_FINGERPRINT_BLOCK = 64 * 1024
_DECODE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, IndexError, TypeError, KeyError,
                  Image.DecompressionBombError, MemoryError)


class BadImageError(DataError):
    """An image that cannot be decoded; long runs catch it, count it and go on."""

    def __init__(self, path: str | Path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"bad image {path}: {reason}")


def _reason(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    if isinstance(exc, Image.UnidentifiedImageError):
        return "not an image PIL can identify (empty, text or an unsupported format)"
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError as exc:
        reason = "dangling symbolic link" if path.is_symlink() else "file not found"
        raise BadImageError(path, reason) from exc
    except OSError as exc:  # permission denied, a folder named like an image, I/O error
        raise BadImageError(path, _reason(exc)) from exc


def _decode(path: Path, data: bytes) -> np.ndarray:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # palette transparency notes
            return decode_image_bytes(data)
    except _DECODE_ERRORS as exc:
        raise BadImageError(path, _reason(exc)) from exc


def load_image(root: str | Path, rel: str) -> np.ndarray:
    """Read ``root/rel`` as an ``H x W x 3`` uint8 RGB array by the shared decode rule
    (:mod:`occon_plugin.images.decode`). Raises :class:`BadImageError` naming the file."""
    path = Path(root) / rel
    return _decode(path, _read_bytes(path))


@dataclass
class ReadImage:
    """One image file read once: ``pixels`` (``H x W x 3`` uint8, the shared decode rule) or ``error``
    (why it cannot be decoded), and ``fingerprint``: :func:`bytes_fingerprint` of the bytes that were
    decoded (None when the file could not be read at all)."""

    pixels: np.ndarray | None
    fingerprint: str | None
    error: BadImageError | None = None


def read_image(root: str | Path, rel: str) -> ReadImage:
    """Read ``root/rel`` once, decode those bytes and fingerprint the same bytes (what a store entry
    records: the mask and its fingerprint describe one and the same file content, even when the file
    is replaced or truncated while it is read). Never raises for a bad image: see :class:`ReadImage`."""
    path = Path(root) / rel
    try:
        data = _read_bytes(path)
    except BadImageError as err:
        return ReadImage(None, None, err)
    fingerprint = bytes_fingerprint(data)
    try:
        return ReadImage(_decode(path, data), fingerprint)
    except BadImageError as err:
        return ReadImage(None, fingerprint, err)


def load_pil_image(path: str | Path) -> Image.Image:
    """``loader=`` for torchvision's ``ImageFolder``: the shared decode rule as an RGB PIL image.

    Raises:
        BadImageError: the file cannot be read or decoded (names the file and why)."""
    path = Path(path)
    data = _read_bytes(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            return decode_to_pil(data)
    except _DECODE_ERRORS as exc:
        raise BadImageError(path, _reason(exc)) from exc


@dataclass(frozen=True)
class ImageInfo:
    """Header facts of one image. ``width``/``height``: after EXIF orientation."""

    width: int
    height: int
    format: str | None
    mode: str
    orientation: int = 1
    bit_depth: int | None = None  # PNG only

    @property
    def dali_native(self) -> bool:
        """DALI's decoder returns exactly the shared rule's pixels for this file."""
        return dali_decodes_natively(self.format, self.mode, self.bit_depth)


def _header(path: Path) -> ImageInfo:
    with open(path, "rb") as fh:
        head = fh.read(32)
        fh.seek(0)
        with Image.open(fh) as img:
            width, height = img.size
            if width < 1 or height < 1:
                raise ValueError(f"image has no pixels ({width}x{height})")
            orientation = orientation_of(img)
            if orientation in SWAPPING_ORIENTATIONS:
                width, height = height, width
            return ImageInfo(width, height, img.format, img.mode, orientation, png_bit_depth(head))


def _decode_check(path: Path, info: ImageInfo) -> None:
    """As strict as :func:`load_image`, cheaper where a format allows."""
    if info.format == "JPEG":
        with Image.open(path) as img:
            img.draft(img.mode if img.mode in ("RGB", "L", "CMYK") else "RGB", (max(1, img.size[0] // 8),
                                                                                 max(1, img.size[1] // 8)))
            img.load()  # walks the whole entropy-coded stream: truncation and broken data fail here
    elif info.format == "PNG":
        with Image.open(path) as img:
            img.verify()  # every chunk's CRC and the end chunk, no inflating
    else:
        decode_image_bytes(path.read_bytes())


def inspect_image(root: str | Path, rel: str, decode: bool = False) -> ImageInfo:
    """Header facts of ``root/rel``; ``decode=True`` also checks that :func:`load_image` would
    succeed. Raises :class:`BadImageError` naming the file and why."""
    path = Path(root) / rel
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            info = _header(path)
            if decode:
                _decode_check(path, info)
            return info
    except FileNotFoundError as exc:
        reason = "dangling symbolic link" if path.is_symlink() else "file not found"
        raise BadImageError(path, reason) from exc
    except _DECODE_ERRORS as exc:
        raise BadImageError(path, _reason(exc)) from exc


def image_size(root: str | Path, rel: str) -> tuple[int, int]:
    """``(width, height)`` after EXIF orientation, read from the header only (no decoding)."""
    info = inspect_image(root, rel)
    return info.width, info.height


def _fingerprint(size: int, head: bytes, tail: bytes) -> str:
    """The one fingerprint rule: ``"<size>:<BLAKE2b-128 of size, first 64 KiB, last 64 KiB>"`` (the tail
    is what follows the head when the file is at most 128 KiB: every byte counts once)."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(size.to_bytes(8, "little"))
    digest.update(head)
    digest.update(tail)
    return f"{size}:{digest.hexdigest()}"


def bytes_fingerprint(data: bytes) -> str:
    """:func:`file_fingerprint` of a file whose content is ``data`` (computed from memory)."""
    size = len(data)
    block = _FINGERPRINT_BLOCK
    tail = data[size - block:] if size > 2 * block else data[block:]
    return _fingerprint(size, data[:block], tail)


def file_fingerprint(path: str | Path) -> str:
    """``"<size>:<hex>"``: the file's byte size and a BLAKE2b-128 hash of its first and last
    64 KiB (the whole file when smaller). Costs two small reads, not a decode; equal to
    :func:`bytes_fingerprint` of the file's content. Raises OSError."""
    block = _FINGERPRINT_BLOCK
    with open(path, "rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        head = fh.read(block)
        if size > 2 * block:
            fh.seek(size - block)
        tail = fh.read(block) if size > block else b""
    return _fingerprint(size, head, tail)
