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
from occon_plugin.images import BadImageError, load_image


def _overlay(gt: GroundTruth, pred: np.ndarray, threshold: float, path: Path) -> Optional[Path]:
    try:
        image = load_image(gt.root, gt.path)
    except BadImageError:
        return None
    cam = normalize_cam(pred)
    boxes, largest = boxes_at_threshold((cam * 255).astype(np.uint8), threshold)
    return save_png(render_overlay(image, cam, boxes[largest:largest + 1], gt.boxes), path)


def evaluate_localization(predictions, ground_truth: Iterable[GroundTruth], threshold: float = 0.5,
                          sweep: Sequence[float] = DEFAULT_SWEEP, boxes: bool = True,
                          deltas: Sequence[float] = (0.3, 0.5, 0.7), interval: float = 0.01,
                          eval_size: Optional[int] = 224, limit: Optional[int] = None,
                          overlay_dir=None, overlay_count: int = 0, progress: bool = True) -> dict:
    """Stream over ``ground_truth``; images without a prediction are skipped and counted.

    Mask mIoU is computed at image size; boxes on maps and GT boxes resized to ``eval_size`` squared
    (wsolevaluation's 224) or at image size when ``eval_size`` is None. Images without a GT box are
    left out of the box metrics (counted).
    """
    from tqdm import tqdm

    masks = MaskMIoUAccumulator(threshold, sweep)
    box_acc = MaxBoxAccV2Accumulator(deltas, interval) if boxes else None
    per_image, missing, no_box, overlays = [], [], 0, []
    for gt in tqdm(ground_truth, desc="localization", disable=not progress):
        if limit is not None and len(per_image) + len(missing) >= limit:
            break
        pred = predictions.load(gt.path, gt.width, gt.height)
        if pred is None:
            missing.append(gt.path)
            continue
        row = {"path": gt.path, f"iou@{threshold:g}": masks.add(pred, gt.mask), "n_gt_boxes": int(len(gt.boxes))}
        per_image.append(row)
        if box_acc is not None:
            if len(gt.boxes) == 0:
                no_box += 1
            elif eval_size:
                box_acc.add(resize_map(pred, eval_size, eval_size),
                            resize_boxes(gt.boxes, (gt.width, gt.height), (eval_size, eval_size)))
            else:
                box_acc.add(pred, gt.boxes)
        if overlay_dir is not None and len(overlays) < overlay_count and gt.root is not None:
            target = Path(overlay_dir) / PurePosixPath(gt.path).with_suffix(".png")
            if _overlay(gt, pred, threshold, target) is not None:
                overlays.append(target)
    if not per_image:
        raise ValueError(f"no image had a prediction ({len(missing)} ground-truth images without one, e.g. "
                         f"{missing[:3]}): do the prediction keys match the ground truth's relative paths?")
    out = {"mask": masks.result(), "per_image": per_image, "missing": missing, "n_missing": len(missing),
           "overlays": [str(p) for p in overlays]}
    if box_acc is not None:
        out["boxes"] = box_acc.result() if box_acc.count else None
        out["n_without_gt_box"] = no_box
    return out
