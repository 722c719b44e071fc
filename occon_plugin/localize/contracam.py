"""Iterative ContraCAM (paper Sec. 2.2, Eq. 3, Algorithm 1).

Iteration t (1-based) for image x of the batch:
  x^1 = x,  x^t = (1 - M^{t-1}) * x + M^{t-1} * fill      (soft mask, M^t = max_{l<=t} CAM^l)
  s^t(x) = s_con(x^t; positive = x, negatives = U_{l<=t} (B^l minus x^l))
i.e. the positive key is always the ORIGINAL image's z, and the negatives are every version
(original and masked, of every iteration so far, the current one included) of the OTHER images.
The image's own masked versions are never its negatives: Eq. (3) removes x^l from each B^l.
Negatives are whatever the batch holds (the paper uses random batches of 64).
fill: Eq. (3) writes (1 - M) * x; Algorithm 1 fades to a mask colour. The default "mean" (the
model's normalisation mean) is (1 - M) * x applied to the normalised input; "black" is Eq. (3)
literally in pixel space.

Cost: one backbone forward per iteration under no_grad; the gradient comes from a backward
through the head only (see cam.py).

Early exit (``early_exit_tol``): an image is re-encoded only while its aggregated mask has moved by
more than ``tol`` (max abs, per image) since the mask it was last encoded with; otherwise its cached
activations stand in for the new masked image. Its CAM is still recomputed every iteration (cheap:
head backward + weighted sum), against the growing set of negatives, and its cached key keeps
entering the other images' negatives, so the denominators match the fixed-T run. With tol=0 the
cache is used only when the masked image is bit-identical, so the result equals the fixed-T one.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from torch import Tensor

from occon_plugin.localize.backbones import CamModel
from occon_plugin.localize.cam import cam_from_activations
from occon_plugin.localize.score import contrastive_score


@dataclass
class ContraCamResult:
    mask: Tensor        # (B,1,H,W) float in [0,1], aggregated over iterations
    iterations: Tensor  # (B,) int64: backbone forwards actually run per image (<= iters)


def resolve_fill(fill: str | tuple | list, model: CamModel, device: torch.device) -> Tensor:
    """Colour (in [0,1] RGB) that masked pixels fade to: "mean" = the model's normalisation mean
    (so masked pixels are zero after normalisation), "black", or an (r, g, b) tuple."""
    if isinstance(fill, str):
        if fill == "mean":
            rgb = model.mean
        elif fill in ("black", "zero"):
            rgb = (0.0, 0.0, 0.0)
        else:
            raise ValueError(f'fill must be "mean", "black" or an (r, g, b) tuple in [0,1]; got {fill!r}')
    else:
        rgb = tuple(float(v) for v in fill)
        if len(rgb) != 3 or not all(0.0 <= v <= 1.0 for v in rgb):
            raise ValueError(f"fill colour must be 3 values in [0,1] (RGB, unnormalised); got {fill!r}")
    return torch.tensor(rgb, device=device).view(1, 3, 1, 1)


def _check_inputs(images: Tensor, iters: int, temperature: float, early_exit_tol: float | None) -> None:
    if not isinstance(images, Tensor) or images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be a (B,3,H,W) tensor; got {getattr(images, 'shape', type(images))}")
    if not images.is_floating_point():
        raise ValueError(f"images must be float in [0,1]; got dtype {images.dtype} (divide uint8 by 255)")
    if images.shape[0] < 2:
        raise ValueError("ContraCAM needs at least 2 images in a batch: the other images are the negatives")
    low, high = float(images.min()), float(images.max())
    if low < -1e-6 or high > 1 + 1e-6:
        raise ValueError(f"images must be unnormalised in [0,1]; got values in [{low:.3g}, {high:.3g}]")
    if iters < 1:
        raise ValueError(f"iters must be >= 1, got {iters}")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if early_exit_tol is not None and early_exit_tol < 0:
        raise ValueError(f"early_exit_tol must be >= 0 or None, got {early_exit_tol}")


@contextlib.contextmanager
def _eval_mode(model: CamModel):
    """BatchNorm must use running stats: batch stats would mix the images' activations."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def _score_gradient(model: CamModel, pooled: Tensor, key: Tensor | None, earlier_keys: list[Tensor],
                    not_self: Tensor, temperature: float) -> tuple[Tensor, Tensor]:
    """(z of this iteration, detached; dS/dpooled) with autograd through the head only.

    Negatives: every earlier iteration's keys plus this iteration's, minus the query's own entries.
    key=None (first iteration): the positive is the query's own z, detached.
    """
    with torch.enable_grad():
        pooled = pooled.detach().requires_grad_(True)
        z = model.head(pooled)
        keys_now = z.detach()
        bank = torch.cat([*earlier_keys, keys_now])
        bank_mask = not_self.repeat(1, len(earlier_keys) + 1)
        score = contrastive_score(z, keys_now if key is None else key, bank, temperature, bank_mask)
        (grad,) = torch.autograd.grad(score.sum(), pooled)
    return keys_now, grad


def contracam(model: CamModel, images: Tensor, iters: int = 10, nsr: bool = True, temperature: float = 0.2,
              expand: bool = False, early_exit_tol: float | None = None,
              fill: str | tuple = "mean") -> ContraCamResult:
    """Iterative ContraCAM masks for a batch of images (B,3,H,W) in [0,1]; masks come at the input size.

    iters: T (10 for boxes/segmentation, 1 for BG-Mixup masks); nsr: negative-signal removal;
    expand: stride-1 last stage (inference-only expansion trick); early_exit_tol: see module doc.
    """
    _check_inputs(images, iters, temperature, early_exit_tol)
    batch, _, height, width = images.shape
    device = images.device
    weight = next(model.parameters(), None)
    if weight is not None and weight.device != device:
        raise ValueError(f"images are on {device} but the model is on {weight.device}: move one of them")
    images = images.to(weight.dtype if weight is not None else images.dtype)
    fill_rgb = resolve_fill(fill, model, device).to(images.dtype)
    # Query b never counts its own entries (any iteration) among its negatives.
    not_self = ~torch.eye(batch, dtype=torch.bool, device=device)

    with torch.no_grad(), _eval_mode(model), model.expansion(expand):
        mask = torch.zeros(batch, 1, height, width, device=device, dtype=images.dtype)
        encoded_with = mask.clone()  # the mask each cached activation was computed from
        iterations = torch.zeros(batch, dtype=torch.long, device=device)
        activations = pooled = key = None
        earlier_keys: list[Tensor] = []
        for t in range(iters):
            if t == 0 or early_exit_tol is None:
                todo = torch.ones(batch, dtype=torch.bool, device=device)
            else:
                todo = (mask - encoded_with).abs().flatten(1).amax(1) > early_exit_tol
            if bool(todo.all()):
                masked = images if t == 0 else images * (1 - mask) + fill_rgb * mask
                activations = model.features(masked)
                pooled = model.pool(activations)
                encoded_with = mask.clone()
            elif bool(todo.any()):
                idx = todo.nonzero().squeeze(1)
                part = mask[idx]
                new = model.features(images[idx] * (1 - part) + fill_rgb * part)
                # Out of place: with an identity head the stored keys share memory with `pooled`.
                activations = activations.index_copy(0, idx, new)
                pooled = pooled.index_copy(0, idx, model.pool(new))
                encoded_with = encoded_with.index_copy(0, idx, part)
            iterations += todo.long()

            keys_now, grad = _score_gradient(model, pooled, key, earlier_keys, not_self, temperature)
            if t == 0:
                key = keys_now  # positive = the original image, for every iteration
            earlier_keys.append(keys_now)
            cam = cam_from_activations(activations, grad, nsr=nsr, size=(height, width))
            mask = cam if t == 0 else torch.maximum(mask, cam)
    return ContraCamResult(mask=mask, iterations=iterations)
