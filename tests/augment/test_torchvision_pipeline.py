"""torchvision-path specifics: the joint v2 crop of image, mask and boxes; input checks."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torchvision import tv_tensors

from occon_plugin.augment.torchvision_pipeline import oa_crop, seeded_global_rngs, to_tv_tensors


def test_oa_crop_moves_image_mask_and_boxes_together():
    image = np.arange(20 * 30 * 3, dtype=np.int64).reshape(20, 30, 3).astype(np.uint8)
    mask = np.random.default_rng(0).random((20, 30)).astype(np.float32)
    data = to_tv_tensors(image, mask, [[0.2, 0.25, 0.6, 0.75], [0.0, 0.0, 0.1, 0.1]])
    out = oa_crop(data, (6, 5, 18, 15))  # left, top, right, bottom
    assert isinstance(out.image, tv_tensors.Image) and isinstance(out.mask, tv_tensors.Mask)
    assert torch.equal(out.image.permute(1, 2, 0), torch.from_numpy(image[5:15, 6:18]))
    assert torch.equal(out.mask, torch.from_numpy(mask[5:15, 6:18]))
    assert out.boxes.canvas_size == (10, 12)
    # box 1: pixels (6, 5, 18, 15) -> the whole crop; box 2 (0, 0, 3, 2) lies left of the crop: clamped to x=0
    torch.testing.assert_close(out.boxes[0], torch.tensor([0.0, 0.0, 12.0, 10.0]))
    assert out.boxes[1, 0] == out.boxes[1, 2] == 0


def test_mask_of_another_size_is_refused():
    with pytest.raises(ValueError, match="mask is 10x8 but the image is 30x20"):
        to_tv_tensors(np.zeros((20, 30, 3), np.uint8), np.zeros((8, 10), np.float32), [])


def test_seeded_global_rngs_restores_the_callers_streams():
    import random

    torch.manual_seed(1)
    random.seed(1)
    expected = torch.rand(3), random.random()
    torch.manual_seed(1)
    random.seed(1)
    with seeded_global_rngs(99):
        inside = torch.rand(3), random.random()
    assert torch.equal(torch.rand(3), expected[0]) and random.random() == expected[1]
    with seeded_global_rngs(99):
        assert torch.equal(torch.rand(3), inside[0]) and random.random() == inside[1]
