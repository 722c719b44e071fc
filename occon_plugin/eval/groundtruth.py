"""Ground truth for localization: COCO json (union of instance masks + instance boxes) or a mask folder.

Both yield :class:`GroundTruth` records one image at a time, keyed by the image's relative path
(the same key the store and CAM folders use).
"""
from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Iterator, Optional

import numpy as np
from PIL import Image
from scipy import ndimage

from occon_plugin.images import IMAGE_EXTENSIONS, image_size, list_images

MASK_EXTENSIONS = (".png", ".bmp", ".tif", ".tiff", ".jpg", ".jpeg")


@dataclass
class GroundTruth:
    path: str  # image path relative to the image root (POSIX)
    width: int
    height: int
    mask: np.ndarray  # bool (H, W): union of all objects
    boxes: np.ndarray  # float (K, 4) pixel x0y0x1y1 (x1 = x0 + w), K may be 0
    root: Optional[Path] = None  # image folder: the image is root / path


def coco_boxes_xyxy(anns: list[dict]) -> np.ndarray:
    """COCO ``[x, y, w, h]`` boxes as ``[x0, y0, x0 + w, y0 + h]``."""
    if not anns:
        return np.zeros((0, 4))
    xywh = np.array([a["bbox"] for a in anns], dtype=np.float64).reshape(-1, 4)
    return np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)


def iter_coco(json_path, image_root=None, include_crowd: bool = True) -> Iterator[GroundTruth]:
    """GT of every image of a COCO instances json: mask = union of ``annToMask`` of its annotations."""
    from pycocotools.coco import COCO

    listing = list_images(json_path, image_root)
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
        coco = COCO(str(json_path))
    for rel, image_id in zip(listing.paths, listing.image_ids):
        info = coco.imgs[image_id]
        h, w = int(info["height"]), int(info["width"])
        anns = coco.loadAnns(coco.getAnnIds(imgIds=[image_id], iscrowd=None if include_crowd else False))
        mask = np.zeros((h, w), dtype=bool)
        for ann in anns:
            mask |= coco.annToMask(ann).astype(bool)
        yield GroundTruth(rel, w, h, mask, coco_boxes_xyxy(anns), listing.root)


def component_boxes(mask: np.ndarray) -> np.ndarray:
    """One ``x0y0x1y1`` box (x1 exclusive, like COCO's x + w) per 8-connected foreground component."""
    labels, _ = ndimage.label(mask, structure=np.ones((3, 3)))
    boxes = [[sl[1].start, sl[0].start, sl[1].stop, sl[0].stop] for sl in ndimage.find_objects(labels)]
    return np.asarray(boxes, dtype=np.float64).reshape(-1, 4)


def find_mask_file(mask_dir: Path, rel: str) -> Optional[Path]:
    """The mask of image ``rel``: same relative folder and stem, any mask extension."""
    stem = PurePosixPath(rel).with_suffix("")
    for ext in MASK_EXTENSIONS:
        candidate = mask_dir / f"{stem}{ext}"
        if candidate.is_file():
            return candidate
    return None


def read_binary_mask(path: Path) -> np.ndarray:
    """A GT mask file as bool (H, W): any nonzero pixel (of any channel) is foreground."""
    with Image.open(path) as img:
        arr = np.asarray(img)
    return arr.any(axis=2) if arr.ndim == 3 else arr > 0


def iter_mask_folder(image_dir, mask_dir) -> Iterator[GroundTruth]:
    """GT from ``mask_dir/<rel stem>.png`` for every image ``image_dir/<rel>`` (boxes: mask components).

    Every image must have a mask of its own size: the first mismatch is an error naming both folders.
    """
    image_dir, mask_dir = Path(image_dir), Path(mask_dir)
    if not mask_dir.is_dir():
        raise FileNotFoundError(f"mask folder {mask_dir} does not exist")
    listing = list_images(image_dir)
    missing = [rel for rel in listing.paths if find_mask_file(mask_dir, rel) is None]
    if missing:
        raise FileNotFoundError(
            f"{len(missing)} of {len(listing)} images under {image_dir} have no mask in {mask_dir} "
            f"(expected e.g. {mask_dir / PurePosixPath(missing[0]).with_suffix('.png')} for {missing[0]}: "
            f"the same relative path and stem, extension one of {', '.join(MASK_EXTENSIONS)})")
    for rel in listing.paths:
        mask_path = find_mask_file(mask_dir, rel)
        mask = read_binary_mask(mask_path)
        w, h = image_size(listing.root, rel)
        if mask.shape != (h, w):
            raise ValueError(f"mask {mask_path} is {mask.shape[1]}x{mask.shape[0]} but image "
                             f"{listing.abspath(rel)} is {w}x{h}: masks must have their image's size")
        yield GroundTruth(rel, w, h, mask, component_boxes(mask), listing.root)


def iter_ground_truth(gt: str | Path, image_root=None, include_crowd: bool = True) -> Iterator[GroundTruth]:
    """``gt`` is a COCO ``.json`` (images under ``image_root``) or a mask folder (images under ``image_root``)."""
    gt = Path(gt)
    if gt.is_file() and gt.suffix.lower() == ".json":
        return iter_coco(gt, image_root, include_crowd)
    if gt.is_dir():
        if image_root is None:
            raise ValueError(f"ground truth {gt} is a mask folder: also pass the image folder (image_root)")
        return iter_mask_folder(image_root, gt)
    raise FileNotFoundError(f"ground truth {gt} is neither a COCO .json file nor a mask folder")


__all__ = ["GroundTruth", "IMAGE_EXTENSIONS", "coco_boxes_xyxy", "component_boxes", "iter_coco",
           "iter_mask_folder", "iter_ground_truth", "find_mask_file", "read_binary_mask"]
