import numpy as np
import pytest
import torch

from occon_plugin.eval.masks import best_threshold_sweep, mask_iou, mask_miou


def test_mask_iou_hand_computed():
    pred = np.array([[0.9, 0.6, 0.1],
                     [0.4, 0.0, 0.0]])
    gt = np.array([[1, 0, 0],
                   [1, 0, 0]])
    # at 0.5: pred fg = {(0,0),(0,1)}, gt = {(0,0),(1,0)} -> inter 1, union 3
    assert mask_iou(pred, gt, 0.5) == pytest.approx(1 / 3)
    # at 0.3: pred fg = {(0,0),(0,1),(1,0)} -> inter 2, union 3
    assert mask_iou(pred, gt, 0.3) == pytest.approx(2 / 3)
    # at 0.95 the prediction is empty -> inter 0, union 2
    assert mask_iou(pred, gt, 0.95) == 0.0


def test_threshold_is_inclusive_and_uint8_is_scaled():
    gt = np.array([[1, 0]])
    assert mask_iou(np.array([[0.5, 0.49]]), gt, 0.5) == 1.0
    assert mask_iou(np.array([[255, 0]], dtype=np.uint8), gt, 0.5) == 1.0
    assert mask_iou(np.array([[100, 0]], dtype=np.uint8), gt, 0.5) == 0.0  # 100/255 < 0.5
    assert mask_iou(torch.tensor([[0.7, 0.2]]), torch.tensor([[True, False]]), 0.5) == 1.0


def test_both_empty_counts_as_one_and_pred_only_as_zero():
    z = np.zeros((4, 4))
    assert mask_iou(z, z.astype(bool), 0.5) == 1.0
    assert mask_iou(np.ones((4, 4)), z, 0.5) == 0.0


def test_miou_is_mean_over_images_not_pooled():
    big_gt = np.ones((10, 10), dtype=bool)
    small_gt = np.zeros((10, 10), dtype=bool)
    small_gt[0, 0] = True
    preds = [np.ones((10, 10)), np.zeros((10, 10))]  # perfect on image 1, IoU 0 on image 2
    assert mask_miou(preds, [big_gt, small_gt], 0.5) == pytest.approx(0.5)  # pooled would be 100/101


def test_sweep_matches_pointwise_and_picks_best():
    rng = np.random.default_rng(0)
    preds = [rng.random((16, 16)) for _ in range(5)]
    gts = [rng.random((16, 16)) > 0.6 for _ in range(5)]
    ts = [0.1, 0.3, 0.5, 0.7, 0.9]
    best_t, best_m, table = best_threshold_sweep(preds, gts, ts)
    for row in table:
        assert row["miou"] == pytest.approx(mask_miou(preds, gts, row["threshold"]))
    assert best_m == max(r["miou"] for r in table)
    assert best_t == max(table, key=lambda r: r["miou"])["threshold"]


def test_errors_name_the_problem():
    with pytest.raises(ValueError, match="shape"):
        mask_iou(np.zeros((2, 2)), np.zeros((3, 3)))
    with pytest.raises(ValueError, match="2 predictions but 1"):
        mask_miou([np.zeros((2, 2))] * 2, [np.zeros((2, 2))])
