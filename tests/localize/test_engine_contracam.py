"""Iterative ContraCAM (paper Eq. 3) on real photos with the real EfficientNet-Lite0."""
import numpy as np
import pytest
import skimage.io
import torch
import torch.nn.functional as F

from occon_plugin.localize.engine import contracam
from occon_plugin.localize.score import contrastive_score

TAU = 0.2






def test_single_iteration_on_real_photos(photos, lite0):
    x = photos(224)
    result = contracam(lite0, x, iters=1)
    assert result.mask.shape == (3, 1, 224, 224) and result.mask.dtype == torch.float32
    assert torch.isfinite(result.mask).all() and result.mask.min() >= 0 and result.mask.max() <= 1
    assert torch.allclose(result.mask.flatten(1).amax(1), torch.ones(3))  # each CAM is min-max normalised
    assert result.iterations.tolist() == [1, 1, 1]
    # The mask is image-specific, not a centre prior: the three masks differ clearly.
    assert (result.mask[0] - result.mask[1]).abs().mean() > 0.05


def _reference_cam(model, activations, score, size):
    """Eq. (2) straight from the paper: autograd w.r.t. A through pooling and head (Algorithm 3)."""
    grad = torch.autograd.grad(score.sum(), activations)[0]
    alpha = grad.mean(dim=(2, 3)).clamp_min(0)
    cam = (alpha[:, :, None, None] * activations).sum(1, keepdim=True).clamp_min(0).detach()
    cam = F.interpolate(cam, size=size, mode="bilinear", align_corners=False)
    low, high = cam.amin((2, 3), keepdim=True), cam.amax((2, 3), keepdim=True)
    return (cam - low) / (high - low)


def _reference_two_iterations(model, x, own_masked_as_negative: bool):
    """Eq. (3) with explicit per-image negative sets, T=2, fill = the model's mean colour."""
    n = len(x)
    others = [[j for j in range(n) if j != i] for i in range(n)]
    with torch.enable_grad():
        a1 = model.features(x).detach().requires_grad_(True)
        z1 = model.head(model.pool(a1))
        key = z1.detach()  # the ORIGINAL images' keys are the positives in every iteration
        cam1 = _reference_cam(model, a1, contrastive_score(z1, key, torch.stack([key[o] for o in others]), TAU),
                              x.shape[-2:])
        fill = torch.tensor(model.mean).view(1, 3, 1, 1)
        x2 = (1 - cam1) * x + cam1 * fill
        a2 = model.features(x2).detach().requires_grad_(True)
        z2 = model.head(model.pool(a2))
        keys2 = z2.detach()
        # U_{l<=2} (B^l minus x^l): the other images' originals and their masked versions.
        negatives = [torch.cat([key[o], keys2[o]]) for o in others]
        if own_masked_as_negative:  # the reading we reject: the query's own masked copy as a negative too
            negatives = [torch.cat([neg, keys2[i:i + 1]]) for i, neg in enumerate(negatives)]
        cam2 = _reference_cam(model, a2, contrastive_score(z2, key, torch.stack(negatives), TAU), x.shape[-2:])
    return torch.maximum(cam1, cam2)


def test_two_iterations_match_eq3_with_explicit_negatives(photos, lite0):
    x = photos(64)
    got = contracam(lite0, x, iters=2, temperature=TAU).mask
    torch.testing.assert_close(got, _reference_two_iterations(lite0, x, own_masked_as_negative=False),
                               rtol=1e-4, atol=1e-4)
    # The check can tell the negative sets apart: with the query's own masked copy added the mask moves.
    other_reading = _reference_two_iterations(lite0, x, own_masked_as_negative=True)
    assert (got - other_reading).abs().max() > 1e-2


def test_early_exit_counts_and_tol_zero_equals_fixed_t(photos, lite0):
    x = photos(64, names=("astronaut", "chelsea", "coffee", "rocket"))
    fixed = contracam(lite0, x, iters=6)
    assert fixed.iterations.tolist() == [6, 6, 6, 6]
    exact = contracam(lite0, x, iters=6, early_exit_tol=0.0)
    assert ((exact.iterations >= 1) & (exact.iterations <= 6)).all()
    # On these photos some masks stop moving exactly, so the cache path is exercised, not skipped.
    assert exact.iterations.min() < 6, exact.iterations
    torch.testing.assert_close(exact.mask, fixed.mask, rtol=0, atol=1e-5)

    loose = contracam(lite0, x, iters=6, early_exit_tol=0.05)
    assert (loose.iterations <= exact.iterations).all() and loose.iterations.sum() < 24
    assert (loose.mask - fixed.mask).abs().mean() < 0.02
    never_again = contracam(lite0, x, iters=6, early_exit_tol=1.0)  # a mask never moves by more than 1
    assert never_again.iterations.tolist() == [1, 1, 1, 1]
    assert never_again.mask.min() >= 0 and never_again.mask.max() <= 1


def test_expansion_and_nsr_switches_change_the_mask(photos, lite0):
    x = photos(128)
    base = contracam(lite0, x, iters=1).mask
    assert (contracam(lite0, x, iters=1, expand=True).mask - base).abs().max() > 0.05
    assert (contracam(lite0, x, iters=1, nsr=False).mask - base).abs().max() > 0.05
    # the expansion is undone afterwards
    with torch.no_grad():
        assert lite0.features(x).shape[-2:] == (4, 4)


def test_fill_colour_matters_only_from_the_second_iteration(photos, lite0):
    x = photos(64)
    black, mean = contracam(lite0, x, iters=1, fill="black").mask, contracam(lite0, x, iters=1).mask
    torch.testing.assert_close(black, mean)
    assert (contracam(lite0, x, iters=3, fill=(1.0, 1.0, 1.0)).mask - contracam(lite0, x, iters=3).mask).abs().max() > 0


@pytest.mark.parametrize("bad, message", [
    (lambda x: x * 255, r"\[0,1\]"),
    (lambda x: (x * 255).to(torch.uint8), "float"),
    (lambda x: x[:1], "at least 2"),
    (lambda x: x[:, :1], r"\(B,3,H,W\)"),
])
def test_bad_images_are_rejected_with_a_reason(photos, lite0, bad, message):
    with pytest.raises(ValueError, match=message):
        contracam(lite0, bad(photos(32)), iters=1)


def test_bad_fill_is_rejected(photos, lite0):
    with pytest.raises(ValueError, match="fill"):
        contracam(lite0, photos(32), iters=2, fill="grey")


@pytest.mark.shared_data
def test_masks_find_coco_objects_better_than_a_centre_prior(lite0, coco128):
    """Real multi-object photos: T=1 masks overlap the ground-truth objects more than a centred blob
    does, and negative-signal removal is what makes that work (paper Table 1, App. C.1)."""
    from pycocotools.coco import COCO

    coco = COCO(str(coco128 / "annotations" / "instances_train2017.json"))
    images, truths = [], []
    for image_id in sorted(coco.getImgIds())[:32]:
        info = coco.loadImgs(image_id)[0]
        photo = skimage.io.imread(coco128 / "images" / info["file_name"])
        photo = np.stack([photo] * 3, -1) if photo.ndim == 2 else photo[..., :3]
        truth = np.zeros(photo.shape[:2], bool)
        for ann in coco.loadAnns(coco.getAnnIds(imgIds=image_id)):
            truth |= coco.annToMask(ann).astype(bool)
        images.append(F.interpolate(torch.from_numpy(photo).permute(2, 0, 1)[None].float() / 255, size=(224, 224),
                                    mode="bilinear", antialias=True))
        truths.append(F.interpolate(torch.from_numpy(truth)[None, None].float(), size=(224, 224))[0, 0] > 0.5)
    x, truth = torch.cat(images).clamp(0, 1), torch.stack(truths)

    def miou(masks):
        hit = masks[:, 0] > 0.5
        return ((hit & truth).flatten(1).sum(1) / (hit | truth).flatten(1).sum(1).clamp_min(1)).mean().item()

    ys, xs = torch.meshgrid(torch.linspace(-1, 1, 224), torch.linspace(-1, 1, 224), indexing="ij")
    centre = torch.exp(-(xs ** 2 + ys ** 2) / 0.5).expand(len(x), 1, 224, 224)
    contra, no_nsr = miou(contracam(lite0, x, iters=1).mask), miou(contracam(lite0, x, iters=1, nsr=False).mask)
    assert contra > miou(centre) + 0.03, (contra, miou(centre))
    assert contra > no_nsr + 0.05, (contra, no_nsr)
