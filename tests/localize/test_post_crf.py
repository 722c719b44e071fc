import numpy as np

from occon_plugin.localize.crf import CrfParams, crf_refine, crf_refine_many


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


def test_crf_improves_noisy_mask_iou():
    for seed in range(3):
        image, guess, gt = _scene(seed)
        refined = crf_refine(image, guess)
        assert refined.shape == gt.shape and refined.dtype == np.float32
        assert 0.0 <= refined.min() and refined.max() <= 1.0
        before, after = _iou(guess >= 0.5, gt), _iou(refined >= 0.5, gt)
        assert after > before + 0.1, (seed, before, after)
        assert after > 0.85


def test_parallel_equals_sequential():
    scenes = [_scene(s) for s in range(3)]
    images, masks = [s[0] for s in scenes], [s[1] for s in scenes]
    params = CrfParams(iters=3)
    seq = crf_refine_many(images, masks, params, workers=1)
    par = crf_refine_many(images, masks, params, workers=2)
    for a, b in zip(seq, par):
        np.testing.assert_array_equal(a, b)
