"""Evaluate localization predictions against ground truth: mask mIoU (+ sweep), MaxBoxAccV2, CorLoc."""
from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import Iterable, Optional, Sequence

import numpy as np

from occon_plugin.eval.boxes import MaxBoxAccV2Accumulator, boxes_at_threshold, normalize_cam, resize_boxes
from occon_plugin.eval.groundtruth import GroundTruth
from occon_plugin.eval.masks import DEFAULT_SWEEP, MaskMIoUAccumulator
from occon_plugin.eval.overlay import render_overlay, save_png
from occon_plugin.eval.predictions import resize_map
from occon_plugin.errors import ConfigError, DataError, examples
from occon_plugin.images import BadImageError, inspect_image, load_image


def _overlay(gt: GroundTruth, pred: np.ndarray, threshold: float, path: Path) -> Optional[Path]:
    try:
        image = load_image(gt.root, gt.path)
    except BadImageError:
        return None
    cam = normalize_cam(pred)
    boxes, largest = boxes_at_threshold((cam * 255).astype(np.uint8), threshold)
    return save_png(render_overlay(image, cam, boxes[largest:largest + 1], gt.boxes), path)


def without_ignored(pred: np.ndarray, ignore: Optional[np.ndarray]) -> np.ndarray:
    """``pred`` with the ground truth's ignored (void) pixels set to the lowest value elsewhere, so they
    neither make nor grow a box of the box metrics (what a prediction says there never counts, as in
    the mask mIoU). A map whose pixels are all ignored is returned as it is."""
    if ignore is None or not ignore.any() or ignore.all():
        return pred
    out = np.array(pred, dtype=np.float32, copy=True)
    out[ignore] = out[~ignore].min()
    return out


POLICIES = ("error", "skip")
_SHOW = 5


class EvaluationMismatchError(DataError, ValueError):
    """Ground truth, predictions and images disagree (or predictions are missing); names the images."""


def _listed(items: list[str], what: str) -> str:
    return f"{len(items)} {what}: " + examples(items, show=_SHOW, sep="; ")


def image_mismatch(gt: GroundTruth) -> Optional[str]:
    """Why the image file of ``gt`` does not have the ground truth's size (after EXIF orientation,
    the frame every store mask is in), or None (also when the image file is absent)."""
    if gt.root is None:
        return None
    try:
        info = inspect_image(gt.root, gt.path)
    except BadImageError:
        return None
    if (info.width, info.height) == (gt.width, gt.height):
        return None
    if (info.height, info.width) == (gt.width, gt.height) and info.orientation != 1:
        return (f"ground truth is {gt.width}x{gt.height} = the file's stored pixels, but its EXIF orientation "
                f"{info.orientation} shows it as {info.width}x{info.height} (the frame masks are made in)")
    return f"ground truth says {gt.width}x{gt.height}, the image is {info.width}x{info.height}"


def evaluate_localization(predictions, ground_truth: Iterable[GroundTruth], threshold: float = 0.5,
                          sweep: Sequence[float] = DEFAULT_SWEEP, boxes: bool = True,
                          deltas: Sequence[float] = (0.3, 0.5, 0.7), interval: float = 0.01,
                          eval_size: Optional[int] = 224, limit: Optional[int] = None,
                          overlay_dir=None, overlay_count: int = 0, progress: bool = True,
                          missing: str = "skip", mismatch: str = "error") -> dict:
    """Stream over ``ground_truth`` and score every image that has a prediction.

    Per image, before scoring: the prediction's status (``missing``: no prediction; ``failed``: the
    store marks the image unreadable at localization - skipped and counted), then any disagreement
    between ground truth, image file (size after EXIF orientation) and store mask (size, the
    fingerprint of the file it was computed from) - never resolved by resizing a store mask.
    ``missing`` / ``mismatch`` = ``"error"`` raise :class:`EvaluationMismatchError` after the pass,
    naming the first images and the count; ``"skip"`` leaves them out, counted and listed in the
    result. Mask mIoU is computed at image size on images whose ground truth has a mask (box-only
    annotations count in ``n_without_gt_mask``); boxes on maps and GT boxes resized to ``eval_size``
    squared (wsolevaluation's 224) or at image size when ``eval_size`` is None. Images without a GT
    box are left out of the box metrics (counted). Annotations the ground truth left out (degenerate
    polygons, bad boxes) are listed in ``gt_problems``. Ground-truth pixels marked void (``GroundTruth.ignore``)
    count in no metric (:func:`without_ignored`); mask files that are not plain binary are listed by the
    encoding assumed in ``gt_encodings`` (:func:`occon_plugin.eval.groundtruth.read_gt_mask`).
    Predictions that are one positive value everywhere are listed in ``constant_maps``: min-max
    normalization (wsolevaluation) gives them no box, and a CAM folder's no mask either (a whole-image
    baseline is scored by ``occon_plugin.eval.baselines.whole_image_box_accuracy`` and an all-ones mask).
    """
    from tqdm import tqdm

    for name, value in (("missing", missing), ("mismatch", mismatch)):
        if value not in POLICIES:
            raise ConfigError(f"{name}={value!r} must be one of {', '.join(POLICIES)}")
    masks = MaskMIoUAccumulator(threshold, sweep)
    box_acc = MaxBoxAccV2Accumulator(deltas, interval) if boxes else None
    per_image, missed, failed, mismatched, gt_problems, overlays = [], [], [], [], [], []
    encodings: dict[str, list[str]] = {}  # ground-truth mask encoding assumed -> images (read_gt_mask)
    # predictions: .load(rel, w, h) -> map or None; optional .status(rel) and .mismatch(rel, w, h, root)
    status_of, mismatch_of = getattr(predictions, "status", None), getattr(predictions, "mismatch", None)
    no_box = no_mask = 0
    constant: list[str] = []  # constant positive maps: no ranking, so no box (and no mask for a CAM folder)
    nonfinite: list[str] = []  # CAM files with NaN/Inf: zeros (wsolevaluation's normalize_scoremap)
    for gt in tqdm(ground_truth, desc="localization", disable=not progress):
        if limit is not None and len(per_image) + len(missed) + len(failed) + len(mismatched) >= limit:
            break
        gt_problems += gt.problems
        status = status_of(gt.path) if status_of is not None else "ok"
        if status == "failed":
            failed.append(gt.path)
            continue
        if status != "ok":
            missed.append(gt.path)
            continue
        reason = image_mismatch(gt) or (mismatch_of(gt.path, gt.width, gt.height, gt.root) if mismatch_of else None)
        if reason:
            mismatched.append(f"{gt.path} ({reason})")
            continue
        pred = predictions.load(gt.path, gt.width, gt.height)
        if pred is None:
            missed.append(gt.path)
            continue
        if getattr(predictions, "last_constant", False) or (pred.size and pred.min() == pred.max() > 0):
            constant.append(gt.path)
        if getattr(predictions, "last_nonfinite", False):
            nonfinite.append(gt.path)
        row = {"path": gt.path, f"iou@{threshold:g}": None, "n_gt_boxes": int(len(gt.boxes))}
        if gt.encoding:
            encodings.setdefault(gt.encoding, []).append(gt.path)
        if gt.mask is None:
            no_mask += 1
        else:
            row[f"iou@{threshold:g}"] = masks.add(pred, gt.mask, gt.ignore)
        per_image.append(row)
        if box_acc is not None:
            box_pred = without_ignored(pred, gt.ignore)
            if len(gt.boxes) == 0:
                no_box += 1
            elif eval_size:
                box_acc.add(resize_map(box_pred, eval_size, eval_size),
                            resize_boxes(gt.boxes, (gt.width, gt.height), (eval_size, eval_size)))
            else:
                box_acc.add(box_pred, gt.boxes)
        if overlay_dir is not None and len(overlays) < overlay_count and gt.root is not None:
            target = Path(overlay_dir) / PurePosixPath(gt.path).with_suffix(".png")
            if _overlay(gt, pred, threshold, target) is not None:
                overlays.append(target)
    if mismatched and mismatch == "error":
        raise EvaluationMismatchError(
            _listed(mismatched, "image(s) where ground truth, image and prediction disagree") + ". Nothing is "
            "resized: fix the data (or localize these images again), or pass mismatch=skip to score the rest")
    if not per_image:
        raise EvaluationMismatchError(
            f"no image had a prediction ({len(missed)} ground-truth images without one, e.g. {missed[:3]}; "
            f"{len(failed)} unreadable at localization): do the prediction keys match the ground truth's "
            f"relative paths?")
    if missed and missing == "error":
        raise EvaluationMismatchError(
            _listed(missed, "ground-truth image(s) have no prediction") + ". Localize them (occon-localize "
            "resume=true adds missing images) or pass missing=skip to score the rest")
    out = {"mask": masks.result() if masks.ious else None, "per_image": per_image, "missing": missed,
           "n_missing": len(missed), "failed": failed, "n_failed": len(failed),
           "mismatched": mismatched, "n_mismatched": len(mismatched), "n_without_gt_mask": no_mask,
           "gt_problems": gt_problems, "gt_encodings": encodings, "overlays": [str(p) for p in overlays],
           "constant_maps": constant, "nonfinite_maps": nonfinite}
    if box_acc is not None:
        out["boxes"] = box_acc.result() if box_acc.count else None
        out["n_without_gt_box"] = no_box
    return out
