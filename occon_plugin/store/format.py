"""The on-disk store layout (see docs/store-format.md) and its small shared helpers."""
from __future__ import annotations

from occon_plugin.atomic import atomic_write_bytes, atomic_write_json  # noqa: F401  (part of the store API)

import json
import math
import struct
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath

import cv2
import numpy as np

SCHEMA_NAME = "occon-store"
SCHEMA_VERSION = 2          # 2: entries carry the image file's fingerprint
READABLE_VERSIONS = (1, 2)  # version 1 stores are read; their images cannot be verified (sizes only)
INDEX_FILE = "index.jsonl"
MANIFEST_FILE = "manifest.json"
MASK_DIR = "masks"
STATUS_OK = "ok"
# Index lines written by rank r > 0 of a distributed run, merged into index.jsonl by close().
RANK_INDEX_GLOB = "index.rank*.jsonl"


def rank_index_file(rank: int) -> str:
    return INDEX_FILE if rank == 0 else f"index.rank{rank}.jsonl"


@dataclass
class StoreEntry:
    """One image of the store. ``boxes`` are normalized ``[x1, y1, x2, y2]`` in [0, 1];
    ``bg_rect`` is a half-open pixel rectangle ``[x1, y1, x2, y2]`` (x2 - x1 = width) or None;
    ``fingerprint`` is :func:`occon_plugin.images.file_fingerprint` of the image file the entry was
    computed from (None: unknown, e.g. a version-1 store)."""

    path: str
    width: int
    height: int
    boxes: list[list[float]] = field(default_factory=list)
    bg_rect: list[int] | None = None
    status: str = STATUS_OK
    fingerprint: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == STATUS_OK

    def to_json(self) -> str:
        data = asdict(self)
        data["boxes"] = [[round(float(v), 6) for v in box] for box in self.boxes]
        data["bg_rect"] = None if self.bg_rect is None else [int(v) for v in self.bg_rect]
        return json.dumps(data, separators=(",", ":"))

    @classmethod
    def from_dict(cls, data: dict) -> "StoreEntry":
        """Raises KeyError/TypeError/ValueError for a malformed row (the reader names the line)."""
        if not isinstance(data.get("path"), str) or not data["path"]:
            raise ValueError("no 'path'")
        return cls(path=data["path"], width=int(data["width"]), height=int(data["height"]),
                   boxes=[list(map(float, b)) for b in data.get("boxes") or []],
                   bg_rect=None if data.get("bg_rect") is None else [int(v) for v in data["bg_rect"]],
                   status=str(data.get("status", STATUS_OK)), fingerprint=data.get("fingerprint"))

    def problem(self) -> str | None:
        """Why this entry cannot be used as it is (sizes, boxes, background rectangle), or None.

        Boxes must be 4 finite numbers with ``0 <= x1 < x2 <= 1`` and ``0 <= y1 < y2 <= 1``
        (1e-6 tolerance); ``bg_rect`` 4 integers with ``0 <= x1 < x2 <= width`` and
        ``0 <= y1 < y2 <= height``."""
        if not self.ok:
            return None
        if self.width < 1 or self.height < 1:
            return f"size {self.width}x{self.height} has no pixels"
        eps = 1e-6
        for k, box in enumerate(self.boxes):
            if len(box) != 4 or not all(math.isfinite(v) for v in box):
                return f"box {k} {box} is not 4 finite numbers"
            x1, y1, x2, y2 = box
            if not (-eps <= x1 < x2 <= 1 + eps and -eps <= y1 < y2 <= 1 + eps):
                return f"box {k} {[round(v, 4) for v in box]} is inverted, empty or outside [0, 1]"
        if self.bg_rect is not None:
            if len(self.bg_rect) != 4:
                return f"bg_rect {self.bg_rect} is not 4 integers"
            x1, y1, x2, y2 = self.bg_rect
            if not (0 <= x1 < x2 <= self.width and 0 <= y1 < y2 <= self.height):
                return f"bg_rect {self.bg_rect} is empty or outside the {self.width}x{self.height} image"
        return None


def mask_relpath(path: str) -> str:
    """``masks/<image path, extension replaced by .png>`` (POSIX, relative to the store)."""
    return (PurePosixPath(MASK_DIR) / PurePosixPath(path).with_suffix(".png")).as_posix()


def find_mask_collisions(paths: list[str]) -> list[tuple[str, str]]:
    """Image pairs whose masks would share a file (``a.jpg`` and ``a.png``)."""
    seen: dict[str, str] = {}
    clashes = []
    for p in paths:
        m = mask_relpath(p)
        if m in seen:
            clashes.append((seen[m], p))
        else:
            seen[m] = p
    return clashes


def mask_to_u8(mask: np.ndarray) -> np.ndarray:
    """Soft mask in [0, 1] -> uint8 0..255 (rounded); the store's lossless quantization."""
    return np.clip(np.rint(np.asarray(mask, dtype=np.float64) * 255.0), 0, 255).astype(np.uint8)


def mask_from_u8(mask_u8: np.ndarray) -> np.ndarray:
    return mask_u8.astype(np.float32) / 255.0


PNG_LEVEL = 4


def encode_mask_png(mask_u8: np.ndarray) -> bytes:
    """A stored mask as PNG bytes: ``mask_u8`` (H, W) uint8 in [0, 255] -> an 8-bit grayscale PNG (zlib level
    ``PNG_LEVEL``).

    Raises:
        ValueError: ``mask_u8`` is not a 2-D uint8 array (a caller's bug, not bad input).
        RuntimeError: OpenCV could not encode it."""
    if mask_u8.dtype != np.uint8 or mask_u8.ndim != 2:
        raise ValueError(f"mask must be a 2-D uint8 array, got {mask_u8.dtype} {mask_u8.shape}")
    # zlib level 4: 2-3x faster than 6 for ~5-20 % more bytes (bench/localize.py --png)
    ok, buf = cv2.imencode(".png", mask_u8, [cv2.IMWRITE_PNG_COMPRESSION, PNG_LEVEL])
    if not ok:
        raise RuntimeError("OpenCV failed to encode a mask as PNG")
    return buf.tobytes()


def png_size(data: bytes) -> tuple[int, int, int, int] | None:
    """``(width, height, bit depth, colour type)`` from a PNG's header chunk, or None if ``data`` does
    not start with a PNG signature and an IHDR chunk."""
    if len(data) < 33 or not data.startswith(b"\x89PNG\r\n\x1a\n") or data[12:16] != b"IHDR":
        return None
    return struct.unpack(">IIBB", data[16:26])


def decode_mask_png(path: Path, data: bytes | None = None) -> np.ndarray:
    """A stored mask file -> (H, W) uint8 array in [0, 255]. ``data``: the file's bytes when the caller has
    read them already (``path`` then only names it in the error).

    Raises:
        OSError: the file cannot be read.
        ValueError: the file is not an 8-bit grayscale PNG (callers turn it into the store's one-line error)."""
    # not cv2.imread: it mishandles non-ASCII paths
    buf = np.fromfile(path, dtype=np.uint8) if data is None else np.frombuffer(data, dtype=np.uint8)
    mask = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    if mask is None or mask.ndim != 2 or mask.dtype != np.uint8:
        raise ValueError(f"mask file {path} is not an 8-bit grayscale PNG")
    return mask


def mask_png_problem(path: Path, width: int, height: int) -> str | None:
    """Why ``path`` is not a usable mask of a ``width x height`` image, or None.

    Reads the file's bytes (no inflating): PNG signature, every chunk's CRC, an 8-bit grayscale
    IHDR of the right size, and the end chunk (so a truncated or damaged file is found before
    training, in a fraction of a decode's time)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return "mask file missing"
    except OSError as exc:
        return f"mask file unreadable ({type(exc).__name__}: {exc})"
    if not data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "mask file is not a PNG" if data else "mask file is empty"
    pos, seen_end, ihdr = 8, False, None
    while pos + 12 <= len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind = data[pos + 4:pos + 8]
        body = data[pos + 8:pos + 8 + length]
        crc = data[pos + 8 + length:pos + 12 + length]
        if len(body) != length or len(crc) != 4:
            return "mask PNG is truncated"
        if zlib.crc32(kind + body) != struct.unpack(">I", crc)[0]:
            return f"mask PNG is damaged (bad CRC in a {kind.decode('latin-1')} chunk)"
        if kind == b"IHDR":
            ihdr = struct.unpack(">IIBB", body[:10])
        if kind == b"IEND":
            seen_end = True
            break
        pos += 12 + length
    if not seen_end:
        return "mask PNG is truncated (no end chunk)"
    if ihdr is None:
        return "mask PNG has no header chunk"
    w, h, depth, colour = ihdr
    if depth != 8 or colour != 0:
        return f"mask PNG is not 8-bit grayscale (bit depth {depth}, colour type {colour})"
    if (w, h) != (width, height):
        return f"mask is {w}x{h}, the index says {width}x{height}"
    return None


def read_index_lines(path: Path) -> tuple[list[dict], int]:
    """Parse whole JSON lines; return them and the byte length of the whole-line prefix.

    A killed writer can leave a torn last line (no newline, or unparsable): it is ignored.
    """
    if not path.exists():
        return [], 0
    data = path.read_bytes()
    rows, good_end, start = [], 0, 0
    while True:
        end = data.find(b"\n", start)
        if end < 0:
            break
        line = data[start:end].strip()
        if line:
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                break  # torn line followed by later appends cannot happen; stop at first bad one
        good_end = end + 1
        start = end + 1
    return rows, good_end


def parse_index(path: Path) -> tuple[list["StoreEntry"], list[str]]:
    """Every line of an index file as entries, plus one message per line that is not a valid
    entry (``"index.jsonl line 7: ..."``); a torn last line (no newline, e.g. a killed writer)
    is reported too. Raises nothing for bad lines (they are the returned problems); OSError if the file
    exists but cannot be read."""
    if not path.exists():
        return [], []
    entries, problems = [], []
    lines = path.read_bytes().split(b"\n")
    for number, raw in enumerate(lines, start=1):
        line = raw.strip()
        if not line:
            continue
        torn = number == len(lines)  # the text after the last newline
        try:
            row = json.loads(line)
            if not isinstance(row, dict):
                raise ValueError("not a JSON object")
            entries.append(StoreEntry.from_dict(row))
        except (ValueError, KeyError, TypeError) as exc:
            what = "torn last line (no newline: a writer was killed)" if torn else f"{type(exc).__name__}: {exc}"
            problems.append(f"{path.name} line {number}: {what}")
    return entries, problems
