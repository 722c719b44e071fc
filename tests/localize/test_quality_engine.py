"""Tests that pin the CAM engine (issue 9 item 7) and the speed options that must not change masks.

* an explicit, independently written reference of Iterative ContraCAM at T=3 (autograd through the
  activations, Eq. (1)-(3) written out; the input of iteration t is masked with the *aggregated* mask);
* a projector head with BatchNorm and a model left in train mode: the engine forces eval mode (and restores);
* early exit: images whose masks stopped moving keep cached activations, yet their CAMs are recomputed
  against the growing negatives every iteration;
* sub-batched forwards give the same masks as one forward of the batch (float tolerance);
* on a bundled photo (no ../shared data needed) ContraCAM with the default preset lands on the object.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from occon_plugin.localize.engine import contracam
from occon_plugin.models import IMAGENET, ModelSpec
from occon_plugin.models.cam import conv_features_cam_model


def tiny_model(seed: int = 0):
    """A small random CNN (8x8 maps at 64 px) with a BatchNorm projector head; BN running stats set away
    from (0, 1) so that batch statistics (train mode) would give visibly different scores."""
    torch.manual_seed(seed)
    trunk = nn.Sequential(nn.Conv2d(3, 16, 3, stride=2, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                          nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
                          nn.Conv2d(32, 24, 3, stride=2, padding=1), nn.ReLU())
    head = nn.Sequential(nn.Linear(24, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Linear(32, 8))
    for bn in (trunk[1], trunk[4], head[1]):
        bn.running_mean.uniform_(-0.5, 0.5)
        bn.running_var.uniform_(0.5, 2.0)
    spec = ModelSpec(name="tiny", family="cnn", normalization=IMAGENET)
    return conv_features_cam_model(spec, trunk, None, head).requires_grad_(False)


def reference_contracam(model, x: torch.Tensor, iters: int, tau: float, aggregated: bool = True) -> torch.Tensor:
    """Iterative ContraCAM written out: autograd through A, explicit loops over negatives.

    s^t(b) = log e^{c(z_b^t, k_b)/tau} / (e^{c(z_b^t, k_b)/tau} + sum_{l<=t} sum_{n != b} e^{c(z_b^t, z_n^l)/tau})
    with k_b = z_b^1 (the original image), c = cosine similarity. alpha = ReLU(mean_ij dS/dA),
    CAM = Normalize(ReLU(sum_k alpha_k A_k)) upsampled bilinearly, M^t = max_{l<=t} CAM^l,
    x^{t+1} = x * (1 - M^t) + mean_colour * M^t  (``aggregated=False``: CAM^t instead of M^t, a wrong variant).
    """
    model.eval()
    batch, _, h, w = x.shape
    mean = torch.tensor(model.mean).view(1, 3, 1, 1)
    zs, mask, cam_t = [], None, None
    for t in range(iters):
        cover = mask if aggregated else cam_t
        xt = x if t == 0 else x * (1 - cover) + mean * cover
        with torch.no_grad():
            a = model.features(xt)
        a = a.clone().requires_grad_(True)
        z = model.head(a.mean(dim=(2, 3)))
        zs.append(z.detach())
        key = zs[0]
        total = 0.0
        for b in range(batch):
            pos = F.cosine_similarity(z[b], key[b], dim=0) / tau
            terms = [pos]
            for l in range(t + 1):
                for n in range(batch):
                    if n != b:
                        terms.append(F.cosine_similarity(z[b], zs[l][n], dim=0) / tau)
            total = total + pos - torch.logsumexp(torch.stack(terms), dim=0)
        (grad,) = torch.autograd.grad(total, a)
        alpha = grad.mean(dim=(2, 3)).clamp_min(0)
        cam = (alpha[:, :, None, None] * a.detach()).sum(1, keepdim=True).clamp_min(0)
        cam = F.interpolate(cam, size=(h, w), mode="bilinear", align_corners=False)
        low = cam.flatten(1).min(1).values.view(-1, 1, 1, 1)
        high = cam.flatten(1).max(1).values.view(-1, 1, 1, 1)
        cam_t = (cam - low) / (high - low)
        mask = cam_t if t == 0 else torch.maximum(mask, cam_t)
    return mask


@pytest.fixture(scope="module")
def batch(photos):
    return photos(64, names=("astronaut", "chelsea", "coffee", "rocket"))


def test_engine_matches_an_explicit_reference_at_t3_and_forces_eval_mode(batch):
    model = tiny_model()
    model.train()  # left in train mode by the caller: BatchNorm must still use running statistics
    got = contracam(model, batch, iters=3, temperature=0.2).mask
    assert model.training  # restored
    ref = reference_contracam(model, batch, iters=3, tau=0.2)
    torch.testing.assert_close(got, ref, atol=2e-5, rtol=0)
    wrong = reference_contracam(model, batch, iters=3, tau=0.2, aggregated=False)
    assert (wrong - ref).abs().max() > 1e-3  # the test can tell the aggregated mask from the last CAM
    model.train()
    with torch.no_grad():  # and train-mode BatchNorm would have given other masks
        assert not torch.allclose(model(batch), model.eval()(batch), atol=1e-4)


def test_early_exit_recomputes_the_cams_of_cached_images(batch):
    model = tiny_model(1)
    # tol >= 1: no image is ever re-encoded after iteration 1 (a mask moves by at most 1)
    got = contracam(model, batch, iters=3, temperature=0.2, early_exit_tol=1.0)
    assert got.iterations.tolist() == [1, 1, 1, 1]
    # reference: the activations of the originals every iteration, scores against the growing negatives
    model.eval()
    with torch.no_grad():
        a = model.features(batch)
    zs, mask = [], None
    for t in range(3):
        pooled = a.mean(dim=(2, 3)).clone().requires_grad_(True)
        z = model.head(pooled)
        key = zs[0] if zs else z.detach()
        bank = torch.cat([*zs, z.detach()])
        zn, kn, bn = F.normalize(z, dim=1), F.normalize(key, dim=1), F.normalize(bank, dim=1)
        pos = (zn * kn).sum(1, keepdim=True) / 0.2
        neg = (zn @ bn.T / 0.2).masked_fill(torch.eye(4, dtype=torch.bool).repeat(1, t + 1), float("-inf"))
        score = (pos[:, 0] - torch.logsumexp(torch.cat([pos, neg], 1), 1)).sum()
        (g,) = torch.autograd.grad(score, pooled)
        zs.append(z.detach())
        cam = ((g.clamp_min(0) / 64)[:, :, None, None] * a).sum(1, keepdim=True).clamp_min(0)
        cam = F.interpolate(cam, size=(64, 64), mode="bilinear", align_corners=False)
        lo, hi = cam.flatten(1).min(1).values.view(-1, 1, 1, 1), cam.flatten(1).max(1).values.view(-1, 1, 1, 1)
        cam = (cam - lo) / (hi - lo)
        mask = cam if t == 0 else torch.maximum(mask, cam)
    torch.testing.assert_close(got.mask, mask, atol=2e-5, rtol=0)

    # every iteration scores every image (cached or not) against all earlier keys
    from occon_plugin.localize.cam import relu_mean_weights
    from occon_plugin.localize.engine import ContrastiveScore, run_cam

    class Spy(ContrastiveScore):
        calls = []

        def __call__(self, z, history):
            self.calls.append((z.shape[0], len(history)))
            return super().__call__(z, history)

    spy = Spy(0.2)
    again = run_cam(model, batch, spy, relu_mean_weights, iters=3, early_exit_tol=1.0, min_batch=2)
    assert spy.calls == [(4, 0), (4, 1), (4, 2)]
    torch.testing.assert_close(again.mask, got.mask, atol=0, rtol=0)


def test_sub_batched_forwards_give_the_same_masks(batch, lite0):
    whole = contracam(lite0, batch, iters=2, sub_batch=None).mask
    for sub in (1, 3):
        torch.testing.assert_close(contracam(lite0, batch, iters=2, sub_batch=sub).mask, whole, atol=1e-4, rtol=0)
    with pytest.raises(ValueError, match="sub_batch"):
        contracam(lite0, batch, iters=1, sub_batch=0)


def test_bf16_autocast_runs_the_backbone_in_bf16_and_keeps_the_cam_in_fp32(batch, lite0):
    """``precision=bf16``: the convolutions run in bfloat16 (a hook sees their outputs), the masks come back
    float32 in [0,1], close to the fp32 masks but not equal to them (the option really changes the forward)."""
    seen = []
    conv = next(m for m in lite0.modules() if isinstance(m, nn.Conv2d))
    hook = conv.register_forward_hook(lambda mod, inp, out: seen.append(out.dtype))
    try:
        full = contracam(lite0, batch, iters=2, precision="fp32").mask
        assert set(seen) == {torch.float32}
        seen.clear()
        half = contracam(lite0, batch, iters=2, precision="bf16").mask
        assert set(seen) == {torch.bfloat16}
    finally:
        hook.remove()
    assert half.dtype == torch.float32 and float(half.min()) >= 0.0 and float(half.max()) <= 1.0
    diff = (half - full).abs()
    assert 0.0 < float(diff.max()) and float(diff.mean()) < 0.05
    with pytest.raises(ValueError, match="precision"):
        contracam(lite0, batch, iters=1, precision="fp64")


def test_precision_is_recorded_only_when_it_changes_the_forward():
    """A store written with bf16 records it (a resume with another precision is refused like any changed
    setting); fp32 stores keep the settings record of older stores, which therefore still resume."""
    from occon_plugin.localize.runner import result_settings
    from occon_plugin.localize.settings import LocalizeSettings

    assert "precision" not in result_settings(LocalizeSettings(output_dir="x"))
    assert result_settings(LocalizeSettings(output_dir="x", precision="bf16"))["precision"] == "bf16"


def test_default_preset_lands_on_the_object_of_bundled_photos(lite0):
    """No ../shared data: scikit-image's photos with hand-drawn object boxes (fractions of width/height)."""
    import skimage.data

    from occon_plugin.localize.presets import PRESETS, model_preset_name
    from occon_plugin.localize.refine import cam_masks
    from occon_plugin.localize.runner import to_model_input

    boxes = {"coffee": (0.10, 0.05, 0.85, 0.85),     # cup and saucer
             "chelsea": (0.10, 0.0, 0.95, 1.0),      # the cat
             "astronaut": (0.05, 0.05, 0.70, 1.0)}   # the astronaut
    names = ["coffee", "chelsea", "astronaut", "rocket", "camera", "hubble_deep_field", "immunohistochemistry"]
    images = []
    for n in names:
        img = np.asarray(getattr(skimage.data, n)())
        images.append(np.stack([img] * 3, -1) if img.ndim == 2 else img[..., :3])
    x = torch.stack([to_model_input(np.ascontiguousarray(im), 224) for im in images])
    cam = PRESETS[model_preset_name(lite0.spec)].cam
    masks = cam_masks(lite0, x, cam).mask[:, 0]
    for k, (name, (x0, y0, x1, y1)) in enumerate(boxes.items()):
        inside = torch.zeros(224, 224, dtype=torch.bool)
        inside[int(y0 * 224):int(y1 * 224), int(x0 * 224):int(x1 * 224)] = True
        m = masks[k]
        assert m[inside].mean() > 1.5 * m[~inside].mean(), name
        assert (m[inside] >= 0.5).float().mean() > 0.3, name
        assert (m[inside] >= 0.5).float().mean() > 2 * (m[~inside] >= 0.5).float().mean(), name
