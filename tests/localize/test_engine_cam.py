"""CAM of paper Eq. (2): closed-form dS/dA, negative-signal removal, normalisation."""
import torch
from torch import nn

from occon_plugin.models import Activations, CamModel, ModelSpec, Normalization
from occon_plugin.localize.cam import activation_gradient_from_pooled, cam_from_activations
from occon_plugin.localize.score import contrastive_score


def tiny_cam_model() -> CamModel:
    torch.manual_seed(0)
    trunk = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 6, 3, stride=2, padding=1), nn.ReLU())
    head = nn.Sequential(nn.Linear(6, 10), nn.ReLU(), nn.Linear(10, 4))
    spec = ModelSpec("tiny", "cnn", Normalization((0.5, 0.5, 0.5), (0.25, 0.25, 0.25)))
    return CamModel(spec, trunk, lambda t, x: Activations(t(x)), head).eval()


def _batch_score(model, activations):
    z = model.head(model.pool(activations))
    keys = z.detach()
    negatives = torch.stack([keys[[j for j in range(len(keys)) if j != i]] for i in range(len(keys))])
    return contrastive_score(z, keys, negatives, 0.2)


def test_closed_form_gradient_equals_autograd_through_the_whole_model():
    model = tiny_cam_model()
    x = torch.rand(3, 3, 12, 10)
    activations = model.features(x)  # graph from the input: backprop through everything
    full = torch.autograd.grad(_batch_score(model, activations).sum(), activations)[0]

    pooled = model.pool(activations.detach()).requires_grad_(True)
    z = model.head(pooled)
    keys = z.detach()
    negatives = torch.stack([keys[[j for j in range(3) if j != i]] for i in range(3)])
    grad_pooled = torch.autograd.grad(contrastive_score(z, keys, negatives, 0.2).sum(), pooled)[0]
    closed = activation_gradient_from_pooled(grad_pooled, activations.shape[-2:])
    assert full.abs().max() > 0  # the check below is not 0 == 0
    torch.testing.assert_close(closed, full, rtol=1e-5, atol=1e-8)

    # And the CAM built from it is Eq. (2) with the full gradient (paper Algorithm 3).
    alpha = full.mean(dim=(2, 3)).clamp_min(0)
    cam = (alpha[:, :, None, None] * activations).sum(1, keepdim=True).clamp_min(0).detach()
    cam = (cam - cam.amin((2, 3), keepdim=True)) / (cam.amax((2, 3), keepdim=True) - cam.amin((2, 3), keepdim=True))
    torch.testing.assert_close(cam_from_activations(activations.detach(), grad_pooled), cam)


def test_negative_signal_removal_drops_negative_weights():
    # Channel 0 marks the object (left column), channel 1 is a distractor with a NEGATIVE weight.
    A = torch.zeros(1, 2, 2, 2)
    A[0, 0, :, 0] = 1.0
    A[0, 1, 0, :] = 1.0
    grad_pooled = torch.tensor([[4.0, -2.0]])
    with_nsr = cam_from_activations(A, grad_pooled, nsr=True)
    without = cam_from_activations(A, grad_pooled, nsr=False)
    # alpha = grad/(h*w) = (1, -0.5). With NSR: CAM = A_0 -> [[1, 0], [1, 0]].
    assert with_nsr[0, 0].tolist() == [[1.0, 0.0], [1.0, 0.0]]
    # Without: A_0 - 0.5 A_1 = [[0.5, -0.5], [1, 0]] -> ReLU -> [[0.5, 0], [1, 0]] -> already in [0,1].
    assert without[0, 0].tolist() == [[0.5, 0.0], [1.0, 0.0]]


def test_constant_activations_give_zeros_not_nan():
    A = torch.full((2, 3, 4, 4), 0.7)
    cam = cam_from_activations(A, torch.randn(2, 3), size=(16, 16))
    assert cam.shape == (2, 1, 16, 16)
    assert torch.isfinite(cam).all() and (cam == 0).all()
    # All-negative weights: ReLU(sum) is 0 everywhere -> zeros too.
    assert (cam_from_activations(torch.rand(1, 3, 4, 4), -torch.ones(1, 3), nsr=False) == 0).all()


def test_upsampled_cam_spans_exactly_zero_to_one():
    torch.manual_seed(1)
    cam = cam_from_activations(torch.rand(3, 5, 7, 7), torch.rand(3, 5), size=(224, 200))
    assert cam.shape == (3, 1, 224, 200)
    flat = cam.flatten(1)
    torch.testing.assert_close(flat.min(1).values, torch.zeros(3))
    torch.testing.assert_close(flat.max(1).values, torch.ones(3))
