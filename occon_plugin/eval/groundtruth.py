"""Ground truth for localization: COCO json (union of instance masks + instance boxes) or a mask folder.

Both yield :class:`GroundTruth` records one image at a time, keyed by the image's relative path
(the same key the store and CAM folders use).
"""
from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Iterator, Optional

import numpy as np
from PIL import Image
from scipy import ndimage

from occon_plugin.errors import DataError
from occon_plugin.images import IMAGE_EXTENSIONS, BadImageError, image_size, list_images

MASK_EXTENSIONS = (".png", ".bmp", ".tif", ".tiff", ".jpg", ".jpeg")


@dataclass
class GroundTruth:
    path: str  # image path relative to the image root (POSIX)
    width: int
    height: int
    mask: Optional[np.ndarray]  # bool (H, W): union of all objects; None: box-only annotations (no mask known)
    boxes: np.ndarray  # float (K, 4) pixel x0y0x1y1 (x1 = x0 + w), K may be 0
    root: Optional[Path] = None  # image folder: the image is root / path
    problems: list[str] = field(default_factory=list)  # annotations left out, and why (named by id)


class GroundTruthError(DataError, ValueError):
    """Ground truth that cannot be scored as it is; the message names the image / annotation."""


class GroundTruthNotFound(DataError, FileNotFoundError):
    """A ground-truth file or folder that does not exist (or an image without its mask)."""


def coco_boxes_xyxy(anns: list[dict]) -> np.ndarray:
    """COCO ``[x, y, w, h]`` boxes as ``[x0, y0, x0 + w, y0 + h]``."""
    if not anns:
        return np.zeros((0, 4))
    xywh = np.array([a["bbox"] for a in anns], dtype=np.float64).reshape(-1, 4)
    return np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)


def _valid_bbox(ann: dict, width: int, height: int) -> Optional[str]:
    """Why ``ann["bbox"]`` cannot be used, or None. Boxes may overhang the image by a pixel (COCO
    rounding); farther out, empty, NaN or malformed boxes are left out."""
    box = ann.get("bbox")
    try:
        x, y, w, h = (float(v) for v in box)
    except (TypeError, ValueError):
        return f"bbox {box!r} is not [x, y, w, h]"
    if not all(np.isfinite([x, y, w, h])):
        return f"bbox {box} is not finite"
    if w <= 0 or h <= 0:
        return f"bbox {box} is empty or inverted"
    if x < -1 or y < -1 or x + w > width + 1 or y + h > height + 1:
        return f"bbox {box} lies outside the {width}x{height} image"
    return None


def _usable_segmentation(ann: dict, width: int, height: int) -> tuple[Optional[object], Optional[str]]:
    """``(segmentation to rasterize or None, why parts were left out or None)``.

    Polygons need 3+ points (6+ finite numbers); an empty list (box-only annotation) gives None; an
    RLE must have the image's size."""
    seg = ann.get("segmentation")
    if seg is None or (isinstance(seg, list) and len(seg) == 0):
        return None, None  # box-only: no mask, not a fault
    if isinstance(seg, dict):
        size = seg.get("size")
        if not isinstance(size, (list, tuple)) or [int(v) for v in size] != [height, width] or "counts" not in seg:
            return None, f"RLE segmentation of size {size} does not match the {width}x{height} image"
        return seg, None
    if not isinstance(seg, list):
        return None, f"segmentation of type {type(seg).__name__} is neither polygons nor RLE"
    polys, dropped = [], 0
    for poly in seg:
        try:
            coords = [float(v) for v in poly]
        except (TypeError, ValueError):
            dropped += 1
            continue
        if len(coords) >= 6 and len(coords) % 2 == 0 and np.isfinite(coords).all():
            polys.append(coords)
        else:
            dropped += 1
    why = f"{dropped} degenerate polygon(s) (fewer than 3 points, odd or non-finite coordinates) left out" \
        if dropped else None
    return (polys or None), why


def iter_coco(json_path, image_root=None, include_crowd: bool = True) -> Iterator[GroundTruth]:
    """GT of every image of a COCO instances json: mask = union of the annotations' segmentations.

    Each annotation is validated: degenerate polygons and malformed/outside boxes are left out and
    recorded in ``GroundTruth.problems`` (image and annotation id named). An image with any
    annotation that has no usable segmentation (box-only data, ``"segmentation": []``) gets
    ``mask=None``: it is scored for boxes (MaxBoxAccV2, CorLoc) but not for mask mIoU, whose union
    would be incomplete. A json image without a positive width/height raises :class:`GroundTruthError`.
    """
    from pycocotools import mask as mask_utils
    from pycocotools.coco import COCO

    listing = list_images(json_path, image_root)
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
        coco = COCO(str(json_path))
    for rel, image_id in zip(listing.paths, listing.image_ids):
        info = coco.imgs[image_id]
        try:
            h, w = int(info["height"]), int(info["width"])
        except (KeyError, TypeError, ValueError):
            h = w = 0
        if h < 1 or w < 1:
            raise GroundTruthError(f"{json_path}: image {rel} (id {image_id}) has no valid width/height "
                                   f"({info.get('width')!r} x {info.get('height')!r}); fix the json")
        anns = coco.loadAnns(coco.getAnnIds(imgIds=[image_id], iscrowd=None if include_crowd else False))
        mask = np.zeros((h, w), dtype=bool)
        mask_known, boxes, problems = True, [], []
        for ann in anns:
            why = _valid_bbox(ann, w, h)
            if why:
                problems.append(f"{rel} annotation {ann.get('id')}: {why}")
            else:
                x, y, bw, bh = (float(v) for v in ann["bbox"])
                boxes.append([max(x, 0.0), max(y, 0.0), min(x + bw, w), min(y + bh, h)])
            seg, why = _usable_segmentation(ann, w, h)
            if why:
                problems.append(f"{rel} annotation {ann.get('id')}: {why}")
            if seg is None:
                mask_known = False
                continue
            rle = mask_utils.merge(mask_utils.frPyObjects(seg, h, w)) if isinstance(seg, list) else (
                mask_utils.frPyObjects(seg, h, w) if isinstance(seg.get("counts"), list) else seg)
            mask |= mask_utils.decode(rle).astype(bool)
        yield GroundTruth(rel, w, h, mask if mask_known else None,
                          np.asarray(boxes, dtype=np.float64).reshape(-1, 4), listing.root, problems)


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
        raise GroundTruthNotFound(f"mask folder {mask_dir} does not exist")
    listing = list_images(image_dir)
    missing = [rel for rel in listing.paths if find_mask_file(mask_dir, rel) is None]
    if missing:
        raise GroundTruthNotFound(
            f"{len(missing)} of {len(listing)} images under {image_dir} have no mask in {mask_dir} "
            f"(expected e.g. {mask_dir / PurePosixPath(missing[0]).with_suffix('.png')} for {missing[0]}: "
            f"the same relative path and stem, extension one of {', '.join(MASK_EXTENSIONS)})")
    for rel in listing.paths:
        mask_path = find_mask_file(mask_dir, rel)
        try:
            mask = read_binary_mask(mask_path)
        except (OSError, ValueError, SyntaxError) as exc:
            raise GroundTruthError(f"ground-truth mask {mask_path} cannot be read ({type(exc).__name__}: {exc}); "
                                   f"fix or remove it") from exc
        try:
            w, h = image_size(listing.root, rel)
        except BadImageError as exc:
            raise GroundTruthError(f"{exc}: its ground-truth mask {mask_path} cannot be checked; fix or remove "
                                   f"the image") from exc
        if mask.shape != (h, w):
            raise GroundTruthError(f"mask {mask_path} is {mask.shape[1]}x{mask.shape[0]} but image "
                                   f"{listing.abspath(rel)} is {w}x{h}: masks must have their image's size "
                                   f"(after EXIF orientation); nothing is resized")
        yield GroundTruth(rel, w, h, mask, component_boxes(mask), listing.root)


def iter_ground_truth(gt: str | Path, image_root=None, include_crowd: bool = True) -> Iterator[GroundTruth]:
    """``gt`` is a COCO ``.json`` (images under ``image_root``) or a mask folder (images under ``image_root``)."""
    gt = Path(gt)
    if gt.is_file() and gt.suffix.lower() == ".json":
        return iter_coco(gt, image_root, include_crowd)
    if gt.is_dir():
        if image_root is None:
            raise GroundTruthError(f"ground truth {gt} is a mask folder: also pass the image folder (image_root)")
        return iter_mask_folder(image_root, gt)
    raise GroundTruthNotFound(f"ground truth {gt} is neither a COCO .json file nor a mask folder")


__all__ = ["GroundTruth", "GroundTruthError", "GroundTruthNotFound", "IMAGE_EXTENSIONS", "coco_boxes_xyxy", "component_boxes", "iter_coco",
           "iter_mask_folder", "iter_ground_truth", "find_mask_file", "read_binary_mask"]
