"""The on-disk store layout (see docs/store-format.md) and its small shared helpers."""
from __future__ import annotations

from occon_plugin.atomic import atomic_write_bytes, atomic_write_json  # noqa: F401  (part of the store API)

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath

import cv2
import numpy as np

SCHEMA_NAME = "occon-store"
SCHEMA_VERSION = 1
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
    ``bg_rect`` is a half-open pixel rectangle ``[x1, y1, x2, y2]`` (x2 - x1 = width) or None."""

    path: str
    width: int
    height: int
    boxes: list[list[float]] = field(default_factory=list)
    bg_rect: list[int] | None = None
    status: str = STATUS_OK

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
        return cls(path=data["path"], width=int(data["width"]), height=int(data["height"]),
                   boxes=[list(map(float, b)) for b in data.get("boxes") or []],
                   bg_rect=None if data.get("bg_rect") is None else [int(v) for v in data["bg_rect"]],
                   status=data.get("status", STATUS_OK))


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


def encode_mask_png(mask_u8: np.ndarray) -> bytes:
    if mask_u8.dtype != np.uint8 or mask_u8.ndim != 2:
        raise ValueError(f"mask must be a 2-D uint8 array, got {mask_u8.dtype} {mask_u8.shape}")
    ok, buf = cv2.imencode(".png", mask_u8, [cv2.IMWRITE_PNG_COMPRESSION, 6])
    if not ok:
        raise RuntimeError("OpenCV failed to encode a mask as PNG")
    return buf.tobytes()


def decode_mask_png(path: Path) -> np.ndarray:
    data = np.fromfile(path, dtype=np.uint8)  # not cv2.imread: it mishandles non-ASCII paths
    mask = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if mask is None or mask.ndim != 2 or mask.dtype != np.uint8:
        raise ValueError(f"mask file {path} is not an 8-bit grayscale PNG")
    return mask


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
