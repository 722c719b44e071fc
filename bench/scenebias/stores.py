"""Control stores of the scene-bias benchmark: the **oracle** (ground-truth masks) and **random** masks of
the same areas at random places, written in the plugin's store format with the plugin's own rules.

Both go through :class:`occon_plugin.store.StoreWriter` (fingerprints of the images, atomic files) and
turn a mask into boxes and a background rectangle exactly as ``occon-localize`` does
(:func:`occon_plugin.localize.boxes.mask_to_boxes`, :func:`occon_plugin.localize.background.
largest_empty_rectangle`, with the default ``threshold`` / ``bg_threshold`` / ``box_margin`` /
``min_box_area`` of ``configs/localize.yaml``), so the three arms (ContraCAM, oracle, random) differ only
in the mask they start from.

Random masks: one ellipse per ground-truth object (connected component), with the object's area and a
random aspect ratio in [2/3, 3/2], at a uniformly random place inside the image, objects not overlapping
where possible. An ellipse, not the object's own silhouette moved: a displaced silhouette would carry the
class (the shape) into the mixed or cropped image.
"""
from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Callable, Optional

import numpy as np
from PIL import Image
from scipy import ndimage

from occon_plugin.images import list_images
from occon_plugin.localize.background import largest_empty_rectangle
from occon_plugin.localize.boxes import mask_to_boxes
from occon_plugin.store import StoreEntry, StoreWriter

# The defaults of occon-localize (configs/localize.yaml): one set of rules for every arm.
RULES = {"threshold": 0.5, "bg_threshold": 0.2, "box_margin": 0.2, "min_box_area": 0.01,
         "min_box_area_before_margin": True}


def entry_from_mask(path: str, mask_u8: np.ndarray) -> StoreEntry:
    """The store entry of an image whose stored mask is ``mask_u8`` (uint8 H x W, 255 = object)."""
    mask = mask_u8.astype(np.float32) / np.float32(255.0)
    boxes = mask_to_boxes(mask, RULES["threshold"], RULES["box_margin"], RULES["min_box_area"],
                          RULES["min_box_area_before_margin"])
    rect = largest_empty_rectangle(mask >= RULES["bg_threshold"])
    h, w = mask_u8.shape
    return StoreEntry(path=path, width=w, height=h, boxes=boxes, bg_rect=None if rect is None else list(rect))


def write_store(images: Path, out: Path, kind: str, mask_of: Callable[[str], np.ndarray]) -> Path:
    """Write a complete store for every image under ``images`` whose mask is ``mask_of(rel path)``
    (uint8 H x W); an existing complete store of the same kind is kept (resumable)."""
    listing = list_images(images)
    manifest = out / "manifest.json"
    if manifest.is_file():
        meta = json.loads(manifest.read_text())
        if meta.get("complete") and meta.get("counts", {}).get("written") == len(listing):
            return out
    settings = {"source": kind, **RULES}
    writer = StoreWriter(out, settings, model_hash=kind, resume=False)
    writer.attach_images(images, list(listing))
    for rel in listing:
        mask_u8 = mask_of(rel)
        writer.write(entry_from_mask(rel, mask_u8), mask_u8)
    writer.close(listed=len(listing), model=kind, data=str(images))
    return out


def gt_mask(masks_root: Path) -> Callable[[str], np.ndarray]:
    """``rel -> uint8 mask`` read from ``masks_root/<rel stem>.png`` (0/255)."""
    def read(rel: str) -> np.ndarray:
        with Image.open(masks_root / Path(rel).with_suffix(".png")) as im:
            return (np.asarray(im.convert("L")) >= 128).astype(np.uint8) * 255
    return read


def random_ellipses(mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One ellipse of the same area per connected component of ``mask`` (bool H x W), at random places."""
    h, w = mask.shape
    labels, n = ndimage.label(mask)
    areas = ndimage.sum_labels(mask, labels, index=np.arange(1, n + 1)) if n else []
    out = np.zeros((h, w), bool)
    yy, xx = np.mgrid[0:h, 0:w]
    for area in sorted(areas, reverse=True):
        aspect = math.exp(rng.uniform(math.log(2 / 3), math.log(3 / 2)))
        a = math.sqrt(area / math.pi * aspect)  # semi-axes with pi*a*b = area, a/b = aspect
        b = area / (math.pi * a)
        a, b = min(a, w / 2 - 0.5), min(b, h / 2 - 0.5)
        best: Optional[np.ndarray] = None
        for _ in range(50):
            cx, cy = rng.uniform(a, w - a), rng.uniform(b, h - b)
            e = ((xx + 0.5 - cx) / a) ** 2 + ((yy + 0.5 - cy) / b) ** 2 <= 1.0
            if best is None:
                best = e
            if not (e & out).any():
                best = e
                break
        out |= best
    return out


def random_mask(masks_root: Path, seed: int) -> Callable[[str], np.ndarray]:
    """``rel -> uint8 mask``: :func:`random_ellipses` of the ground truth, drawn from ``(seed, rel)``."""
    read = gt_mask(masks_root)

    def make(rel: str) -> np.ndarray:
        rng = np.random.default_rng([seed, int.from_bytes(hashlib.blake2b(rel.encode(), digest_size=8).digest(),
                                                          "little")])
        return random_ellipses(read(rel) > 0, rng).astype(np.uint8) * 255
    return make
