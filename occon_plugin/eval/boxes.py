"""MaxBoxAccV2 (Choe et al., CVPR 2020, "Evaluating WSOL Right") and CorLoc.

Protocol, following the wsolevaluation reference (written anew here):

* each CAM is min-max normalized to [0, 1] (a constant or NaN map becomes all zeros) and quantized
  to uint8 (``cam * 255``);
* for every CAM threshold ``t`` in ``arange(0, 1, interval)`` the map is binarized with
  ``u8 > int(t * u8.max())`` (OpenCV ``THRESH_BINARY``, strict);
* boxes are the bounding rectangles of ALL contours (OpenCV ``findContours``, ``RETR_TREE``, so
  hole borders count too) as ``[x, y, min(x + w, W - 1), min(y + h, H - 1)]``; no contour gives the
  box ``[0, 0, 0, 0]``;
* box IoU uses inclusive integer pixel coordinates (areas ``(x1 - x0 + 1) * (y1 - y0 + 1)``);
* an image is correct at IoU ``delta`` if the best IoU between any of its boxes and any of its GT
  boxes is ``>= delta``; accuracy per CAM threshold; BoxAcc(delta) = max over thresholds;
  MaxBoxAccV2 = mean of BoxAcc over ``deltas`` (default 0.3, 0.5, 0.7).

CorLoc (defined here; papers vary): the fraction of images whose box from the LARGEST contour has
IoU >= 0.5 with at least one GT box, at the CAM threshold that maximizes this fraction (this is
MaxBoxAcc v1 of the same paper). All accuracies are fractions in [0, 1].

GT boxes are ``[x0, y0, x1, y1]`` pixel coordinates in the CAM's frame; :func:`resize_boxes`
maps boxes from the image size to the CAM size the way the reference does (``int()`` truncation).
"""
from __future__ import annotations

from typing import Iterable, Sequence

import cv2
import numpy as np

CORLOC_IOU = 0.5


def normalize_cam(cam) -> np.ndarray:
    """Min-max normalize a 2-D map to [0, 1]; a constant or NaN-containing map becomes zeros.

    Raises:
        ValueError: the CAM is not 2-D.
    """
    arr = cam.detach().cpu().numpy() if hasattr(cam, "detach") else np.asarray(cam)
    arr = np.asarray(arr, dtype=np.float64)
    if arr.ndim != 2:
        raise ValueError(f"a CAM must be 2-D (H, W); got shape {arr.shape}")
    if np.isnan(arr).any() or arr.max() == arr.min():
        return np.zeros_like(arr)
    arr = arr - arr.min()
    return arr / arr.max()


def cam_thresholds(interval: float = 0.01) -> np.ndarray:
    """The CAM thresholds of the MaxBoxAccV2 curve: ``arange(0, 1, interval)``.

    Raises:
        ValueError: ``interval`` outside (0, 1).
    """
    if not 0 < interval < 1:
        raise ValueError(f"cam_curve_interval must be in (0, 1); got {interval}")
    return np.arange(0, 1, interval)


def boxes_at_threshold(cam_u8: np.ndarray, threshold: float) -> tuple[np.ndarray, int]:
    """Boxes ``(K, 4)`` int ``x0y0x1y1`` of all contours of ``cam_u8 > int(threshold * max)``,
    and the row of the largest contour's box (by ``cv2.contourArea``)."""
    height, width = cam_u8.shape
    _, binary = cv2.threshold(cam_u8, int(threshold * cam_u8.max()), 255, cv2.THRESH_BINARY)
    contours = cv2.findContours(binary, cv2.RETR_TREE, cv2.CHAIN_APPROX_SIMPLE)[0]
    if len(contours) == 0:
        return np.zeros((1, 4), dtype=np.int64), 0
    boxes = []
    for contour in contours:
        x, y, w, h = cv2.boundingRect(contour)
        boxes.append([x, y, min(x + w, width - 1), min(y + h, height - 1)])
    largest = max(range(len(contours)), key=lambda k: cv2.contourArea(contours[k]))
    return np.asarray(boxes, dtype=np.int64), largest


def box_iou_inclusive(a, b) -> np.ndarray:
    """IoU matrix ``(len(a), len(b))`` of ``x0y0x1y1`` boxes with inclusive pixel coordinates."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    ix0 = np.maximum(a[:, None, 0], b[None, :, 0])
    iy0 = np.maximum(a[:, None, 1], b[None, :, 1])
    ix1 = np.minimum(a[:, None, 2], b[None, :, 2])
    iy1 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.maximum(0, ix1 - ix0 + 1) * np.maximum(0, iy1 - iy0 + 1)
    area_a = (a[:, 2] - a[:, 0] + 1) * (a[:, 3] - a[:, 1] + 1)
    area_b = (b[:, 2] - b[:, 0] + 1) * (b[:, 3] - b[:, 1] + 1)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def resize_boxes(boxes, image_size: tuple[int, int], target_size: tuple[int, int]) -> np.ndarray:
    """Scale ``x0y0x1y1`` boxes from ``image_size`` (W, H) to ``target_size`` (W, H), truncating to int."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    sx = target_size[0] / image_size[0]
    sy = target_size[1] / image_size[1]
    return (boxes * np.array([sx, sy, sx, sy])).astype(np.int64)


def _check_gt(boxes, index: int) -> np.ndarray:
    gt = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    if gt.shape[0] == 0:
        raise ValueError(f"image #{index} has no ground-truth box; leave such images out of box evaluation")
    if (gt[:, 2] < gt[:, 0]).any() or (gt[:, 3] < gt[:, 1]).any():
        raise ValueError(f"image #{index}: ground-truth boxes must be x0y0x1y1 with x1 >= x0, y1 >= y0; got {gt}")
    return gt


def best_ious_per_threshold(cam, gt_boxes, thresholds: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """For one image and each CAM threshold: the best IoU of any estimated box with any GT box, and
    the best IoU of the largest contour's box with any GT box."""
    cam_u8 = (normalize_cam(cam) * 255).astype(np.uint8)
    gt = np.asarray(gt_boxes, dtype=np.float64).reshape(-1, 4)
    any_box, largest_box = np.empty(len(thresholds)), np.empty(len(thresholds))
    for j, t in enumerate(thresholds):
        boxes, largest = boxes_at_threshold(cam_u8, t)
        best_per_box = box_iou_inclusive(boxes, gt).max(axis=1)
        any_box[j], largest_box[j] = best_per_box.max(), best_per_box[largest]
    return any_box, largest_box


class MaxBoxAccV2Accumulator:
    """Streaming MaxBoxAccV2 / CorLoc: ``add`` one image at a time, then ``result``.

    Raises:
        ValueError: ``deltas`` is empty."""

    def __init__(self, deltas: Sequence[float] = (0.3, 0.5, 0.7), interval: float = 0.01):
        self.deltas = tuple(float(d) for d in deltas)
        if not self.deltas:
            raise ValueError("deltas is empty")
        self.thresholds = cam_thresholds(interval)
        self.correct = {d: np.zeros(len(self.thresholds), dtype=np.int64) for d in self.deltas}
        self.corloc_correct = np.zeros(len(self.thresholds), dtype=np.int64)
        self.count = 0

    def add(self, cam, gt_boxes) -> None:
        gt = _check_gt(gt_boxes, self.count)
        any_box, largest_box = best_ious_per_threshold(cam, gt, self.thresholds)
        for d in self.deltas:
            self.correct[d] += any_box >= d
        self.corloc_correct += largest_box >= CORLOC_IOU
        self.count += 1

    def result(self) -> dict:
        """``{"max_box_acc_v2", "box_acc": {delta: acc}, "best_threshold": {delta: t}, "corloc",
        "corloc_threshold", "n_images", "thresholds", "accuracy_curves": {delta: [acc per t]}}``.

        Raises:
            ValueError: nothing was accumulated.
        """
        if self.count == 0:
            raise ValueError("no CAMs to evaluate")
        curves = {d: c / self.count for d, c in self.correct.items()}
        box_acc = {d: float(c.max()) for d, c in curves.items()}
        corloc_curve = self.corloc_correct / self.count
        return {
            "max_box_acc_v2": float(np.mean(list(box_acc.values()))),
            "box_acc": box_acc,
            "best_threshold": {d: float(self.thresholds[int(np.argmax(c))]) for d, c in curves.items()},
            "corloc": float(corloc_curve.max()),
            "corloc_threshold": float(self.thresholds[int(np.argmax(corloc_curve))]),
            "n_images": self.count,
            "thresholds": self.thresholds.tolist(),
            "accuracy_curves": {d: c.tolist() for d, c in curves.items()},
        }


def max_box_acc_v2(cams: Iterable, gt_boxes: Iterable, deltas: Sequence[float] = (0.3, 0.5, 0.7),
                   interval: float = 0.01) -> dict:
    """MaxBoxAccV2 over ``deltas`` plus CorLoc for lists of CAMs and GT boxes (see the module docstring);
    the result is :meth:`MaxBoxAccV2Accumulator.result`.

    Raises:
        ValueError: ``cams`` and ``gt_boxes`` differ in length.
    """
    cams, gt_boxes = list(cams), list(gt_boxes)
    if len(cams) != len(gt_boxes):
        raise ValueError(f"{len(cams)} CAMs but {len(gt_boxes)} ground-truth box lists")
    acc = MaxBoxAccV2Accumulator(deltas, interval)
    for cam, boxes in zip(cams, gt_boxes):
        acc.add(cam, boxes)
    return acc.result()
