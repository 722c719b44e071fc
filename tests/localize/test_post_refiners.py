"""Refinement methods (occon_plugin.localize.refiners): each improves a noisy, shifted guess of an object's mask
on a synthetic photo; chains run in order; names, parameters and missing libraries give clear errors; huge
inputs are refined at a bounded working size."""
import numpy as np
import pytest

from occon_plugin.errors import ConfigError, MissingDependencyError
from occon_plugin.localize.crf import CrfParams
from occon_plugin.localize.refiners import (REFINERS, FgsParams, GuidedParams, parse_method, refine, refine_step,
                                            working_size)


def _iou(a, b):
    return (a & b).sum() / (a | b).sum()


def _scene(seed, h=96, w=128):
    """A bright disc on a dark textured background, and a noisy, blurry guess of its mask."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:h, :w]
    cy, cx, r = rng.integers(35, 60), rng.integers(45, 80), rng.integers(18, 28)
    gt = (yy - cy) ** 2 + (xx - cx) ** 2 < r ** 2
    image = np.where(gt[..., None], [200, 60, 50], [40, 90, 40]) + rng.normal(0, 8, (h, w, 3))
    image = np.clip(image, 0, 255).astype(np.uint8)
    dist = np.sqrt((yy - cy - 6) ** 2 + (xx - cx + 5) ** 2)  # a shifted, too-soft blob
    guess = np.clip(1.2 - dist / (1.6 * r), 0, 1) + rng.normal(0, 0.25, (h, w))
    return image, np.clip(guess, 0, 1).astype(np.float32), gt


# the IoU each method must reach from the guess's 0.42-0.46: the CRF and the chain find the disc (0.98-1.0); the
# filters, with their default (short) reach, remove the noise and move the edge part of the way (0.63-0.83)
@pytest.mark.parametrize("method,least", [("crf", 0.95), ("crf+fgs", 0.95), ("guided", 0.6), ("fgs", 0.75)])
def test_each_method_improves_a_noisy_mask(method, least):
    for seed in range(3):
        image, guess, gt = _scene(seed)
        refined = refine(image, guess, method, {})
        assert refined.shape == gt.shape and refined.dtype == np.float32
        assert 0.0 <= refined.min() and refined.max() <= 1.0
        before, after = _iou(guess >= 0.5, gt), _iou(refined >= 0.5, gt)
        assert after > before + 0.15, (seed, before, after)
        assert after > least, (seed, after)


def test_none_is_the_mask_and_a_chain_runs_in_order():
    image, guess, _ = _scene(0)
    np.testing.assert_array_equal(refine(image, guess, "none", {}), guess)
    params = {"crf": CrfParams(iters=3), "fgs": FgsParams(lam=50.0)}
    chained = refine(image, guess, "crf+fgs", params)
    by_hand = refine(image, refine(image, guess, "crf", params), "fgs", params)
    np.testing.assert_array_equal(chained, by_hand)
    assert not np.array_equal(chained, refine(image, guess, "crf", params))


def test_method_names_and_shapes_are_checked():
    assert parse_method("none") == () and parse_method("crf+fgs") == ("crf", "fgs")
    for bad in ("crf+", "cfr", "none+crf", ""):
        with pytest.raises(ConfigError, match="refine.method"):
            parse_method(bad)
    image, guess, _ = _scene(0)
    with pytest.raises(ValueError, match="guide must be uint8"):
        refine(image[:-1], guess, "fgs", {})
    with pytest.raises(ValueError, match="guide must be uint8"):
        refine(image.astype(np.float32), guess, "fgs", {})


def test_parameters_are_range_checked():
    assert CrfParams().problems() == [] and GuidedParams().problems() == [] and FgsParams().problems() == []
    assert CrfParams(iters=0).problems() == [("iters", 0, "must be >= 1")]
    assert GuidedParams(eps=0.0).problems() == [("eps", 0.0, "must be > 0")]
    assert FgsParams(lambda_attenuation=2.0).problems() == [("lambda_attenuation", 2.0, "must be in [0, 1]")]
    assert [k for k, _, _ in FgsParams(lam=float("nan")).problems()] == ["lam"]


def test_a_missing_opencv_contrib_names_the_package(monkeypatch):
    import cv2

    monkeypatch.delattr(cv2, "ximgproc")
    image, guess, _ = _scene(0)
    with pytest.raises(MissingDependencyError, match="opencv-contrib-python-headless"):
        refine(image, guess, "fgs", {})


def test_working_size_bounds_the_pixels_and_scales_the_widths():
    assert working_size(100, 200, 0) == (100, 200, 1.0) and working_size(100, 200, 20_000) == (100, 200, 1.0)
    h, w, scale = working_size(1000, 2000, 20_000)
    assert (h, w) == (100, 200) and scale == pytest.approx(0.1)
    calls = []

    def spy(guide, fg, params, scale):  # what a step sees at the bounded size
        calls.append((guide.shape, fg.shape, scale))
        return np.ones_like(fg)

    monkeypatch = pytest.MonkeyPatch()
    monkeypatch.setitem(REFINERS, "spy", REFINERS["guided"].__class__(spy, GuidedParams))
    try:
        image, guess, _ = _scene(0, h=400, w=600)
        out = refine_step("spy", image, guess, GuidedParams(max_pixels=6_000))
    finally:
        monkeypatch.undo()
    assert out.shape == (400, 600) and (out == 1).all()
    assert calls == [((63, 94, 3), (63, 94), pytest.approx(np.sqrt(6_000 / 240_000)))]
