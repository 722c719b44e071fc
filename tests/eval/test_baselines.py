"""Localization baselines: centred Gaussian prior, classifier Grad-CAM, whole-image boxes."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from occon_plugin.eval.baselines import (centered_gaussian, classifier_cam, classifier_gradcam,
                                         load_imagenet_classifier, whole_image_box_accuracy, whole_image_mask)

IMAGENET_CATS = range(281, 286)  # tabby, tiger cat, Persian, Siamese, Egyptian cat


@pytest.mark.parametrize("height,width,isotropic", [(7, 9, False), (8, 12, False), (101, 201, True), (50, 30, True)])
def test_gaussian_is_centred_symmetric_and_in_unit_range(height, width, isotropic):
    g = centered_gaussian(height, width, 0.25, isotropic)
    assert g.shape == (height, width) and g.dtype == np.float32
    assert g.min() > 0 and g.max() <= 1
    np.testing.assert_allclose(g, g[::-1, ::-1], rtol=1e-6)  # point-symmetric about the centre
    peak = np.argwhere(g == g.max())
    np.testing.assert_allclose(peak.mean(axis=0), [(height - 1) / 2, (width - 1) / 2])
    if height % 2 and width % 2:
        assert g[height // 2, width // 2] == 1.0


def test_gaussian_sigma_is_the_documented_fraction():
    g = centered_gaussian(101, 201, sigma_fraction=20 / 101, isotropic=True)  # sigma = 20 px on both axes
    assert g[50, 100 + 20] == pytest.approx(np.exp(-0.5), rel=1e-6)
    assert g[50 + 20, 100] == pytest.approx(np.exp(-0.5), rel=1e-6)
    aniso = centered_gaussian(81, 161, sigma_fraction=0.25)  # sigma_y ~ 20 px, sigma_x ~ 40 px
    assert aniso[40, 80 + 40] == pytest.approx(aniso[40 + 20, 80], rel=0.05)
    with pytest.raises(ValueError, match="sigma_fraction"):
        centered_gaussian(10, 10, 0.0)


def test_whole_image_mask():
    m = whole_image_mask(3, 5)
    assert m.shape == (3, 5) and (m == 1).all()


def test_gradcam_uses_relu_weights_of_the_chosen_class():
    # Channel 0 lights the top-left pixel, channel 1 the bottom-right one.
    acts = torch.zeros(1, 2, 2, 2)
    acts[0, 0, 0, 0] = 1.0
    acts[0, 1, 1, 1] = 1.0
    fc = nn.Linear(2, 2)
    with torch.no_grad():
        fc.weight.copy_(torch.tensor([[2.0, -3.0], [0.0, 1.0]]))
        fc.bias.zero_()
    cam, cls = classifier_gradcam(acts, fc)  # logits [-0.25, 0.25] -> top-1 = class 1 -> channel 1
    assert cls.tolist() == [1]
    assert cam[0, 0].tolist() == [[0.0, 0.0], [0.0, 1.0]]
    cam, cls = classifier_gradcam(acts, fc, classes=torch.tensor([0]))  # ReLU drops the -3 weight
    assert cls.tolist() == [0]
    assert cam[0, 0].tolist() == [[1.0, 0.0], [0.0, 0.0]]


def test_gradcam_of_constant_features_is_zero_not_nan():
    fc = load_imagenet_classifier()
    for acts in (torch.ones(2, 1280, 7, 7), torch.zeros(1, 1280, 7, 7)):
        cam, _ = classifier_gradcam(acts, fc, size=(20, 30))
        assert cam.shape == (acts.shape[0], 1, 20, 30)
        assert torch.isfinite(cam).all() and (cam == 0).all()
    with pytest.raises(ValueError, match="classes"):
        classifier_gradcam(torch.ones(2, 1280, 7, 7), fc, classes=torch.tensor([1, 2, 3]))


@pytest.fixture(scope="module")
def lite0():
    from occon_plugin.models import load_cam_model

    return load_cam_model("efficientnet-lite0"), load_imagenet_classifier()


def test_classifier_cam_on_a_cat_photo_peaks_on_the_cat(lite0):
    from skimage import data

    model, fc = lite0
    photo = data.chelsea()  # 300 x 451: the cat fills x < 370; the strip x >= 390 is background
    x = torch.from_numpy(photo).permute(2, 0, 1)[None].float() / 255
    x = F.interpolate(x, size=(224, 224), mode="bilinear", antialias=True, align_corners=False).clamp(0, 1)
    for expand in (False, True):
        cam, cls = classifier_cam(model, fc, x, expand=expand)
        assert int(cls) in IMAGENET_CATS
        cam = F.interpolate(cam, size=photo.shape[:2], mode="bilinear", align_corners=False)[0, 0].numpy()
        assert cam.shape == (300, 451) and 0 <= cam.min() and cam.max() <= 1
        cat, background = cam[:, :370], cam[:, 390:]
        assert cat.mean() > 2 * background.mean(), (expand, cat.mean(), background.mean())
        if not expand:  # the plain 7x7 map peaks on the face (eyes to nose: x 90..360, y 20..290)
            peak_y, peak_x = np.unravel_index(np.argmax(cam), cam.shape)
            assert 20 <= peak_y < 290 and 90 <= peak_x < 360, (peak_y, peak_x)


def test_whole_image_box_accuracy_by_hand():
    gts = [np.array([[0, 0, 49, 99]]),  # inclusive area 50 x 100 against the 100 x 100 frame: IoU 0.5
           np.array([[0, 0, 9, 9], [90, 90, 99, 99]])]  # IoU 0.01 each
    res = whole_image_box_accuracy(gts, [(100, 100), (100, 100)], deltas=(0.3, 0.5, 0.7), eval_size=None)
    assert res["box_acc"] == {0.3: 0.5, 0.5: 0.5, 0.7: 0.0}
    assert res["max_box_acc_v2"] == pytest.approx(1 / 3)
    assert res["corloc"] == 0.5 and res["n_images"] == 2
    # On the 224 frame the boxes scale with the image: same answer for a 200 x 100 image.
    res = whole_image_box_accuracy([np.array([[0, 0, 100, 100]])], [(200, 100)], deltas=(0.5,), eval_size=224)
    assert res["box_acc"][0.5] == 1.0
    with pytest.raises(ValueError, match="no ground-truth box"):
        whole_image_box_accuracy([np.zeros((0, 4))], [(10, 10)])
