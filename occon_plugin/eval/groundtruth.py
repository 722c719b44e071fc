"""Ground truth for localization: COCO json (union of instance masks + instance boxes) or a mask folder.

Both yield :class:`GroundTruth` records one image at a time, keyed by the image's relative path
(the same key the store and CAM folders use).
"""
from __future__ import annotations

import contextlib
import io
import math
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
    ignore: Optional[np.ndarray] = None  # bool (H, W): pixels no metric counts (a mask file's void label)
    encoding: Optional[str] = None  # a mask file that is not plain binary: what was assumed (read_gt_mask)


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


MAX_LABELS = 32                # a lossless mask with more distinct values is graded (antialiased), not a label map
VOC_VOID_COLOUR = (224, 224, 192)  # PASCAL VOC's colour of the void (ignore) label in its colour-coded masks
LOSSY_FORMATS = ("JPEG", "MPO")


@dataclass
class GtMask:
    """A ground-truth mask file read by :func:`read_gt_mask`: ``object`` bool (H, W); ``ignore`` bool (H, W)
    or None: pixels no metric counts (VOC void); ``encoding``: None for a plain binary mask (0/1 or
    0/full scale), else what was assumed (one short sentence, printed once per kind by the CLI)."""

    object: np.ndarray
    ignore: Optional[np.ndarray] = None
    encoding: Optional[str] = None


def _full_scale(path: Path, mode: str, values: np.ndarray) -> float:
    if mode == "1":
        return 1.0
    if mode.startswith("I;16"):
        return 65535.0
    if mode == "I":
        if values.min() < 0 or values.max() > 65535:
            raise GroundTruthError(f"ground-truth mask {path} holds 32-bit values outside 0..65535 (min {values.min()}, "
                                   f"max {values.max()}); save it as an 8- or 16-bit PNG")
        return 65535.0
    if mode == "F":
        if not np.isfinite(values).all():
            raise GroundTruthError(f"ground-truth mask {path} holds NaN or infinite values; fix it")
        if values.min() >= 0 and values.max() <= 1:
            return 1.0
        if values.min() >= 0 and values.max() <= 255:
            return 255.0
        raise GroundTruthError(f"ground-truth mask {path} holds float values outside [0, 1] and [0, 255] (min "
                               f"{values.min()}, max {values.max()}); save it as an 8-bit PNG")
    return 255.0


def _value_rule(path: Path, values: np.ndarray, scale: float, lossy: bool, labels: bool = False,
                what: str = "", say_binary: bool = False) -> GtMask:
    """One channel of values (0 = background) -> object / ignore, by the rule of :func:`read_gt_mask`.
    ``what`` prefixes the encoding note; a binary mask gets none unless ``say_binary``."""
    distinct = np.unique(values)
    top = f"{scale:g}"
    if distinct.max() == 0:
        return GtMask(values > 0, None, None)  # no object (also in a JPEG: zero stays zero)
    if not lossy and (set(distinct.tolist()) <= {0, 1} or set(distinct.tolist()) <= {0, scale}):
        return GtMask(values > 0, None, f"{what}binary" if say_binary else None)
    if not labels and (lossy or len(distinct) > MAX_LABELS):
        if distinct.max() < scale / 2:
            raise GroundTruthError(
                f"ground-truth mask {path} looks {'lossy' if lossy else 'graded'} ({len(distinct)} distinct values) "
                f"but no pixel reaches half of its 0..{top} range (max {distinct.max():g}): object pixels cannot be "
                f"told from compression noise; save the masks losslessly (PNG) with 0 = background")
        kind = "lossy (JPEG)" if lossy else f"graded ({len(distinct)} values)"
        half = f"{math.ceil(scale / 2)}" if values.dtype.kind in "iub" else f"{scale / 2:g}"  # integers: >= 128
        return GtMask(values >= scale / 2, None, f"{what}{kind}: object = value >= {half} of {top}")
    void = scale in distinct and len(set(distinct.tolist()) - {0, scale}) > 0
    ignore = values == scale if void else None
    obj = (values > 0) & ~ignore if void else values > 0
    rule = (f"label map: 0 = background, {top} = void (ignored), other values = object" if void
            else "label map: 0 = background, other values = object")
    return GtMask(obj, ignore, f"{what}{rule}")


def read_gt_mask(path: Path) -> GtMask:
    """Read a ground-truth mask file of any mode or encoding by ONE rule (docs/eval.md, "Ground-truth masks").

    1. **Alpha** (``LA``, ``RGBA``, ``PA``, or a ``transparency`` entry): when the alpha channel varies it
       IS the mask (a cut-out: transparent = background), read by rule 4 on its values; a constant
       alpha (e.g. all opaque) is dropped and the colour decides.
    2. **Palette** (``P``): the palette *indices* are a label map (PASCAL VOC's convention): 0 =
       background, 255 = void (ignored by every metric) when other labels are present, every other index
       = object.
    3. **Colour** (``RGB`` and other colour modes): a grey picture (R = G = B) is read as grey (rule 4).
       Otherwise, lossy (JPEG) or with more than ``MAX_LABELS`` colours: object = brightest channel >=
       128; else a colour-coded label map: black = background, VOC's void colour (224, 224, 192) =
       ignored, every other colour = object.
    4. **Grey values** (``1``, ``L``, 16-bit ``I;16``, 32-bit ``I`` within 0..65535, float ``F`` within
       [0, 1] or [0, 255]) with the mode's full scale S (1, 255, 65535, 1.0 / 255): a lossy file (JPEG:
       compression ringing) or more than ``MAX_LABELS`` distinct values (antialiased) is graded: object =
       value >= S/2 (refused, naming the file, when no pixel reaches S/2 - e.g. a 0/1 mask saved as JPEG:
       object and noise cannot be told apart); otherwise values within {0, 1} or {0, S} are binary
       (non-zero = object), and anything else is a label map as in rule 2 (S = void when other labels
       are present, e.g. VOC's 255 in an ``L`` PNG).

    Raises :class:`GroundTruthError` naming the file (unreadable, values out of range).
    """
    with Image.open(path) as img:
        img.seek(0)
        img.load()
        mode, lossy = img.mode, img.format in LOSSY_FORMATS
        alpha = None
        if mode in ("LA", "La", "PA", "RGBA", "RGBa") or "transparency" in img.info:
            alpha = np.asarray(img.convert("RGBA"))[..., 3]
            if alpha.min() == alpha.max():
                alpha = None  # constant (e.g. all opaque): dropped, the colour decides
        if alpha is not None:
            return _value_rule(path, alpha.astype(np.int64), 255.0, lossy, say_binary=True,
                               what="alpha channel used as the mask (transparent = background), ")
        if mode in ("P", "PA"):
            indices = np.asarray(img)
            indices = indices[..., 0] if indices.ndim == 3 else indices
            return _value_rule(path, indices.astype(np.int64), 255.0, False, labels=True, what="palette indices, ")
        if mode in ("1", "L", "I", "F") or mode.startswith("I;16"):
            values = np.asarray(img)
            values = values.astype(np.float64) if mode == "F" else values.astype(np.int64)
            return _value_rule(path, values, _full_scale(path, mode, values), lossy)
        rgb = np.asarray(img.convert("RGB"))
    if (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all():
        return _value_rule(path, rgb[..., 0].astype(np.int64), 255.0, lossy)
    brightest = rgb.max(axis=2)
    colours = np.unique(rgb.reshape(-1, 3), axis=0)
    if lossy or len(colours) > MAX_LABELS:
        kind = "lossy (JPEG)" if lossy else f"graded ({len(colours)} colours)"
        return GtMask(brightest >= 128, None, f"colour, {kind}: object = brightest channel >= 128")
    void = (rgb == np.array(VOC_VOID_COLOUR, dtype=rgb.dtype)).all(axis=2)
    if void.any():
        return GtMask((brightest > 0) & ~void, void,
                      "colour label map: black = background, (224, 224, 192) = VOC void (ignored), other colours = object")
    return GtMask(brightest > 0, None, "colour label map: black = background, other colours = object")


def read_binary_mask(path: Path) -> np.ndarray:
    """The object pixels of a GT mask file as bool (H, W), by :func:`read_gt_mask`'s rule (ignored pixels
    are not object)."""
    return read_gt_mask(path).object


def iter_mask_folder(image_dir, mask_dir) -> Iterator[GroundTruth]:
    """GT from ``mask_dir/<rel stem>.png`` for every image ``image_dir/<rel>`` (boxes: the components of the
    object pixels), each file read by :func:`read_gt_mask` (its ignored pixels and assumed encoding kept).

    Every image must have a mask of its own size: the first mismatch is an error naming both folders.

    Raises:
        GroundTruthNotFound: the mask folder is missing, or images have no mask.
        GroundTruthError: a mask that cannot be read or whose size differs from its image.
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
            gt_mask = read_gt_mask(mask_path)
        except GroundTruthError:
            raise
        except (OSError, ValueError, SyntaxError, EOFError) as exc:
            raise GroundTruthError(f"ground-truth mask {mask_path} cannot be read ({type(exc).__name__}: {exc}); "
                                   f"fix or remove it") from exc
        try:
            w, h = image_size(listing.root, rel)
        except BadImageError as exc:
            raise GroundTruthError(f"{exc}: its ground-truth mask {mask_path} cannot be checked; fix or remove "
                                   f"the image") from exc
        mask = gt_mask.object
        if mask.shape != (h, w):
            raise GroundTruthError(f"mask {mask_path} is {mask.shape[1]}x{mask.shape[0]} but image "
                                   f"{listing.abspath(rel)} is {w}x{h}: masks must have their image's size "
                                   f"(after EXIF orientation); nothing is resized")
        yield GroundTruth(rel, w, h, mask, component_boxes(mask), listing.root, ignore=gt_mask.ignore,
                          encoding=gt_mask.encoding)


def iter_ground_truth(gt: str | Path, image_root=None, include_crowd: bool = True) -> Iterator[GroundTruth]:
    """``gt`` is a COCO ``.json`` (images under ``image_root``) or a mask folder (images under ``image_root``).

    Raises:
        GroundTruthNotFound: ``gt`` is neither a COCO json nor a folder.
        GroundTruthError: a mask folder without ``image_root``; any error of the readers.
    """
    gt = Path(gt)
    if gt.is_file() and gt.suffix.lower() == ".json":
        return iter_coco(gt, image_root, include_crowd)
    if gt.is_dir():
        if image_root is None:
            raise GroundTruthError(f"ground truth {gt} is a mask folder: also pass the image folder (image_root)")
        return iter_mask_folder(image_root, gt)
    raise GroundTruthNotFound(f"ground truth {gt} is neither a COCO .json file nor a mask folder")


__all__ = ["GroundTruth", "GroundTruthError", "GroundTruthNotFound", "GtMask", "IMAGE_EXTENSIONS", "coco_boxes_xyxy",
           "component_boxes", "iter_coco", "iter_mask_folder", "iter_ground_truth", "find_mask_file", "read_binary_mask",
           "read_gt_mask"]
