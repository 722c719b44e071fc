"""From model masks to stored masks (occon_plugin.localize.refine): resize, refinement at either resolution, flip TTA,
dilated expansion, and the box-area rule — each against a hand-written or direct computation."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from occon_plugin.localize.boxes import mask_to_boxes
from occon_plugin.localize.crf import CrfParams
from occon_plugin.localize.engine import contracam, dilated_convs, expansion
from occon_plugin.localize.refine import cam_masks, image_masks, input_u8
from occon_plugin.localize.refiners import REFINERS, RefineRun, parse_method, refine
from occon_plugin.localize.runner import CamSettings, to_model_input
from occon_plugin.store import mask_to_u8


@pytest.fixture(scope="module")
def scene():
    """Two real photos of different sizes, their 64x64 model inputs and a smooth synthetic mask."""
    import skimage.data

    images = [np.ascontiguousarray(skimage.data.astronaut()[::4, ::3]), np.ascontiguousarray(skimage.data.coffee()[::5, ::4])]
    x = torch.stack([to_model_input(im, 64) for im in images])
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, 64), torch.linspace(-1, 1, 64), indexing="ij")
    blob = torch.exp(-((xx - 0.2) ** 2 + yy ** 2) / 0.3)
    masks = torch.stack([blob, blob.flip(-1)])[:, None]
    return images, x, masks


def _resize_u8(m, h, w):
    up = F.interpolate(torch.as_tensor(m, dtype=torch.float32)[None, None], size=(h, w), mode="bilinear",
                       align_corners=False)
    return mask_to_u8(up[0, 0].clamp(0, 1).numpy())


def test_without_refinement_the_final_mask_is_the_resized_soft_mask(scene):
    images, x, masks = scene
    soft, final = image_masks(masks, images, x, RefineRun("none", "input"))
    for k, im in enumerate(images):
        assert soft[k].shape == im.shape[:2] and soft[k].dtype == np.uint8
        np.testing.assert_array_equal(soft[k], _resize_u8(masks[k, 0], *im.shape[:2]))
        assert final[k] is soft[k]


@pytest.mark.parametrize("method", ["crf", "crf+fgs", "guided"])
def test_refinement_on_the_model_input_and_at_image_size(scene, method):
    images, x, masks = scene
    params = {"crf": CrfParams(bilateral_srgb=8.0, bilateral_compat=7.0, max_pixels=1600)}
    steps = tuple((name, params.get(name) or REFINERS[name].params()) for name in parse_method(method))
    soft, small = image_masks(masks, images, x, RefineRun(method, "input", steps))
    _, large = image_masks(masks, images, x, RefineRun(method, "image", steps))
    inputs = input_u8(x)
    for k, im in enumerate(images):
        assert inputs[k].shape == (64, 64, 3)
        direct = refine(inputs[k], mask_to_u8(masks[k, 0].numpy()) / np.float32(255), method, params)
        np.testing.assert_array_equal(small[k], _resize_u8(direct, *im.shape[:2]))
        np.testing.assert_array_equal(large[k], mask_to_u8(refine(im, soft[k] / np.float32(255), method, params)))
        assert (small[k] != soft[k]).any() and (small[k] != large[k]).any()
    with pytest.raises(ValueError, match="resolution"):
        image_masks(masks, images, x, RefineRun(method, "full", steps))


def test_flip_tta_is_the_mean_of_the_image_and_its_mirror(photos, lite0):
    x = photos(64, names=("astronaut", "chelsea", "coffee"))
    cam = CamSettings(iters=2, nsr=True, expand=False, dilate=False, temperature=0.2, early_exit_tol=0.0,
                      fill="mean", flip=True, weights="mean", score="contrastive")
    got = cam_masks(lite0, x, cam)
    plain = contracam(lite0, x, iters=2, expand=False).mask
    mirrored = contracam(lite0, x.flip(-1), iters=2, expand=False).mask.flip(-1)
    torch.testing.assert_close(got.mask, (plain + mirrored) / 2, atol=1e-6, rtol=0)
    assert got.iterations.tolist() == [4, 4, 4]


def test_dilated_expansion_doubles_the_map_and_restores_the_model(lite0):
    convs = dilated_convs(lite0)
    assert len(convs) == 4 and all(c.dilation == (1, 1) for c in convs)  # EfficientNet-Lite0: blocks 12-15
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        plain = lite0.features(x)
        with expansion(lite0, True, dilate=True):
            assert all(c.dilation == (2, 2) for c in convs)
            dilated = lite0.features(x)
        with expansion(lite0, True):
            strided = lite0.features(x)
    assert plain.shape[-1] * 2 == dilated.shape[-1] == strided.shape[-1]
    assert not torch.allclose(dilated, strided)
    assert all(c.dilation == (1, 1) for c in convs) and lite0.features(x).shape == plain.shape


def test_dilated_expansion_of_a_resnet_keeps_its_size():
    from occon_plugin.models import load_cam_model

    resnet = load_cam_model("torchvision:resnet50")
    names = [n for n, m in resnet.trunk.named_modules() if any(m is c for c in dilated_convs(resnet))]
    assert names == ["layer4.1.conv2", "layer4.2.conv2"]  # torchvision's replace_stride_with_dilation
    with torch.no_grad(), expansion(resnet, True, dilate=True):
        assert resnet.features(torch.rand(1, 3, 64, 64)).shape[-2:] == (4, 4)
        assert [resnet.trunk.layer4[1].conv2.padding, resnet.trunk.layer4[1].conv2.dilation] == [(2, 2), (2, 2)]
    assert resnet.trunk.layer4[1].conv2.padding == (1, 1)


def test_min_box_area_before_or_after_the_margin():
    mask = np.zeros((100, 100), np.float32)
    mask[40:49, 40:49] = 1.0  # 9x9 = 81 px < 1 % of the image; with 20 % margins 12.6^2 = 159 px > 1 %
    assert len(mask_to_boxes(mask, 0.5, margin=0.2, min_area_frac=0.01)) == 1
    assert mask_to_boxes(mask, 0.5, margin=0.2, min_area_frac=0.01, min_area_before_margin=True) == []
    mask[10:21, 10:21] = 1.0  # 11x11 = 121 px: kept either way
    assert len(mask_to_boxes(mask, 0.5, 0.2, 0.01, min_area_before_margin=True)) == 1
