"""Mask mIoU as in Mo et al. (NeurIPS 2021), Table 1.

Per image: binarize the soft mask at a threshold (``pred >= threshold``) and take the IoU with the
ground-truth binary mask; the mIoU is the mean over images. An image where both the prediction and
the ground truth are empty counts as IoU 1 (nothing to find, nothing found).

Soft masks may be float arrays in [0, 1] or uint8 arrays in [0, 255] (the store's 8-bit PNGs);
uint8 is divided by 255 so one threshold means the same thing for both. Pixels a ground truth marks
as void (``ignore``) count in neither the intersection nor the union.
"""
from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np

DEFAULT_SWEEP = tuple(np.round(np.arange(0.05, 1.0, 0.05), 2).tolist())


def _as_2d(x, what: str) -> np.ndarray:
    arr = x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)
    if arr.ndim == 3 and 1 in (arr.shape[0], arr.shape[-1]):  # (1, H, W) or (H, W, 1)
        arr = arr.reshape(arr.shape[1:] if arr.shape[0] == 1 else arr.shape[:-1])
    if arr.ndim != 2:
        raise ValueError(f"{what} must be 2-D (H, W); got shape {arr.shape}")
    return arr


def to_soft(pred) -> np.ndarray:
    """A 2-D float64 array in [0, 1] from a float [0, 1] / uint8 [0, 255] array or a torch tensor.

    Raises:
        ValueError: the mask holds NaN.
    """
    arr = _as_2d(pred, "a soft mask")
    if arr.dtype == np.uint8:
        return arr.astype(np.float64) / 255.0
    if arr.dtype == bool:
        return arr.astype(np.float64)
    arr = arr.astype(np.float64)
    if np.isnan(arr).any():
        raise ValueError("a soft mask contains NaN values")
    return arr


def to_binary(gt) -> np.ndarray:
    """A 2-D bool array from a {0,1} / {0,255} / bool mask."""
    return _as_2d(gt, "a ground-truth mask") > 0


def iou_curve(pred_soft, gt_bin, thresholds: Sequence[float], ignore=None) -> np.ndarray:
    """IoU of ``pred >= t`` with the ground truth, for every ``t`` in ``thresholds`` (exact).

    ``ignore`` (bool (H, W) or None): pixels left out of both the intersection and the union (a ground
    truth's void label): what the prediction says there never counts. Sorting once makes a whole
    threshold sweep cost one ``searchsorted`` per image.

    Raises:
        ValueError: the prediction's (or ignore mask's) shape differs from the ground truth's.
    """
    pred = to_soft(pred_soft)
    gt = to_binary(gt_bin)
    if pred.shape != gt.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from ground-truth shape {gt.shape}; "
                         "resize the prediction to the image size first")
    if ignore is not None:
        keep = ~_as_2d(ignore, "an ignore mask").astype(bool)
        if keep.shape != gt.shape:
            raise ValueError(f"ignore mask shape {keep.shape} differs from ground-truth shape {gt.shape}")
        pred, gt = pred[keep], gt[keep]
    t = np.asarray(thresholds, dtype=np.float64)
    all_sorted = np.sort(pred, axis=None)
    fg_sorted = np.sort(pred[gt], axis=None)
    n_pred = all_sorted.size - np.searchsorted(all_sorted, t, side="left")  # count(pred >= t)
    inter = fg_sorted.size - np.searchsorted(fg_sorted, t, side="left")  # count(pred >= t and gt)
    union = n_pred + fg_sorted.size - inter
    return np.where(union > 0, inter / np.maximum(union, 1), 1.0)


def mask_iou(pred_soft, gt_bin, threshold: float = 0.5, ignore=None) -> float:
    """IoU of one soft mask binarized at ``threshold`` with a binary ground-truth mask (both empty = 1);
    ``ignore``: pixels left out (see :func:`iou_curve`)."""
    return float(iou_curve(pred_soft, gt_bin, [threshold], ignore)[0])


def _check_pairs(preds, gts) -> tuple[list, list]:
    preds, gts = list(preds), list(gts)
    if len(preds) != len(gts):
        raise ValueError(f"{len(preds)} predictions but {len(gts)} ground-truth masks")
    if not preds:
        raise ValueError("no masks to evaluate")
    return preds, gts


def mask_miou(preds: Iterable, gts: Iterable, threshold: float = 0.5) -> float:
    """Mean over images of :func:`mask_iou` at one threshold."""
    preds, gts = _check_pairs(preds, gts)
    return float(np.mean([mask_iou(p, g, threshold) for p, g in zip(preds, gts)]))


class MaskMIoUAccumulator:
    """Streaming mask mIoU at a fixed threshold and over a sweep: ``add`` per image, then ``result``."""

    def __init__(self, threshold: float = 0.5, sweep: Sequence[float] = DEFAULT_SWEEP):
        self.threshold = float(threshold)
        self.sweep = [float(t) for t in sweep]
        self._thresholds = [self.threshold, *self.sweep]
        self.ious: list[np.ndarray] = []  # per image: IoU at [threshold, *sweep]

    def add(self, pred_soft, gt_bin, ignore=None) -> float:
        """Add one image (``ignore``: its pixels left out, see :func:`iou_curve`); returns its IoU at the
        fixed threshold."""
        curve = iou_curve(pred_soft, gt_bin, self._thresholds, ignore)
        self.ious.append(curve)
        return float(curve[0])

    def result(self) -> dict:
        """``{"miou", "threshold", "n_images", "best_threshold", "best_miou", "sweep": [{threshold, miou}]}``.

        Raises:
            ValueError: nothing was accumulated.
        """
        if not self.ious:
            raise ValueError("no masks to evaluate")
        means = np.stack(self.ious).mean(axis=0)
        out = {"miou": float(means[0]), "threshold": self.threshold, "n_images": len(self.ious)}
        if self.sweep:
            sweep = means[1:]
            best = int(np.argmax(sweep))  # first maximum: the lowest threshold among ties
            out.update(best_threshold=self.sweep[best], best_miou=float(sweep[best]),
                       sweep=[{"threshold": t, "miou": float(m)} for t, m in zip(self.sweep, sweep)])
        return out


def best_threshold_sweep(preds: Iterable, gts: Iterable, thresholds: Sequence[float] = DEFAULT_SWEEP
                         ) -> tuple[float, float, list[dict]]:
    """mIoU at each threshold; returns ``(best_threshold, best_miou, [{"threshold", "miou"}, ...])``.

    The best threshold is chosen on the evaluated set itself (an oracle), so report it apart from
    the mIoU at the fixed threshold.

    Raises:
        ValueError: an empty sweep.
    """
    preds, gts = _check_pairs(preds, gts)
    if len(thresholds) == 0:
        raise ValueError("the threshold sweep is empty")
    acc = MaskMIoUAccumulator(thresholds[0], thresholds)
    for p, g in zip(preds, gts):
        acc.add(p, g)
    res = acc.result()
    return res["best_threshold"], res["best_miou"], res["sweep"]
