"""Class activation maps from activations and the score's gradient: the weight functions and the map.

Paper Eq. (2)::

    alpha_k = ReLU(mean_ij dS/dA_kij),   CAM = Normalize(ReLU(sum_k alpha_k A_k))

A *weight function* maps ``(grad, A)`` (both (B,K,h,w)) to channel weights (B,K). They are chosen by name
from :data:`WEIGHTS` (``cam.weights`` of ``occon-localize`` and of the presets); negative-signal removal
(``cam.nsr``, the paper's ReLU on alpha) is applied on top by :func:`weights_for`. The paper's is ``mean``
(:func:`mean_weights`; with the ReLU: :func:`relu_mean_weights`). A new CAM variant (Grad-CAM++, ...) is one
such function plus one line in :data:`WEIGHTS`.

When the pooled feature is the global average of A (CNNs), dS/dA_kij = dS/dp_k / (h*w) for every
(i, j) (:func:`activation_gradient_from_pooled`): the gradient w.r.t. the pooled vector (a backward
through the head only) gives the weights without any backward through the backbone.
"""
from __future__ import annotations

from typing import Callable, Dict

import torch
import torch.nn.functional as F
from torch import Tensor

from occon_plugin.errors import ConfigError

WeightFn = Callable[[Tensor, Tensor], Tensor]
"""``weights(grad (B,K,h,w), activations (B,K,h,w)) -> (B,K)`` channel weights of the CAM."""


def activation_gradient_from_pooled(grad_pooled: Tensor, spatial_size: tuple[int, int]) -> Tensor:
    """dS/dA (B,K,h,w) from dS/dp (B,K) under global average pooling: each position gets 1/(h*w) of it."""
    h, w = spatial_size
    return (grad_pooled / (h * w))[:, :, None, None].expand(-1, -1, h, w)


def relu_mean_weights(grad: Tensor, activations: Tensor) -> Tensor:
    """Paper Eq. (2): alpha_k = ReLU(mean_ij dS/dA_kij) (negative-signal removal). (B,K,h,w) -> (B,K)."""
    return grad.mean(dim=(2, 3)).clamp_min(0)


def mean_weights(grad: Tensor, activations: Tensor) -> Tensor:
    """Grad-CAM weights without negative-signal removal (the paper's ablation): mean_ij dS/dA_kij."""
    return grad.mean(dim=(2, 3))


def gradcam_plus_plus_weights(grad: Tensor, activations: Tensor, eps: float = 1e-6) -> Tensor:
    """Grad-CAM++ weights (Chattopadhay et al., WACV 2018, Eq. 19 with the exponential's higher derivatives
    taken as powers of the first, as pytorch-grad-cam's ``GradCAMPlusPlus``)::

        a_kij = g^2 / (2 g^2 + sum_ab A_kab * g^3 + eps),   w_k = sum_ij a_kij * ReLU(g_kij)

    with ``g = dS/dA`` (B,K,h,w) and ``A`` (B,K,h,w); returns (B,K). ``a`` is 0 where ``g`` is 0."""
    g2 = grad * grad
    total = activations.sum(dim=(2, 3), keepdim=True)
    alpha = g2 / (2 * g2 + total * g2 * grad + eps)
    alpha = torch.where(grad != 0, alpha, torch.zeros_like(alpha))
    return (alpha * grad.clamp_min(0)).sum(dim=(2, 3))


# name -> weight function (``cam.weights``). A new variant: its function and a line here.
WEIGHTS: Dict[str, WeightFn] = {
    "mean": mean_weights,  # Grad-CAM / the paper's Eq. (2) before its ReLU
    "gradcam++": gradcam_plus_plus_weights,
}


def weights_for(nsr: bool, name: str = "mean") -> WeightFn:
    """The weight function ``name`` of :data:`WEIGHTS`, with (``nsr=True``: ReLU on its output, the paper's
    negative-signal removal) or without it. ``weights_for(True)`` is the paper's Eq. (2).

    Raises:
        ConfigError: ``name`` is not in :data:`WEIGHTS` (the message lists the known names).
    """
    if name not in WEIGHTS:
        raise ConfigError(f"cam.weights={name!r} is unknown: use one of {sorted(WEIGHTS)}")
    fn = WEIGHTS[name]
    if not nsr:
        return fn
    if fn is mean_weights:
        return relu_mean_weights

    def relu_weights(grad: Tensor, activations: Tensor) -> Tensor:
        return fn(grad, activations).clamp_min(0)

    relu_weights.__name__ = f"relu_{getattr(fn, '__name__', name)}"
    return relu_weights


def normalize_per_image(maps: Tensor) -> Tensor:
    """Min-max each map of (B,1,H,W) to [0,1]; a constant map becomes zeros (never NaN).

    "Constant" allows a few ulps of spread: bilinear upsampling of a flat map is not bit-exact.
    """
    flat = maps.flatten(1)
    low, high = flat.min(dim=1).values, flat.max(dim=1).values
    span = high - low
    ulps = 8 * torch.finfo(maps.dtype).eps * torch.maximum(low.abs(), high.abs())
    varies = (span > ulps).view(-1, 1, 1, 1)
    safe_span = torch.where(varies, span.view(-1, 1, 1, 1), torch.ones_like(low).view(-1, 1, 1, 1))
    normalized = ((maps - low.view(-1, 1, 1, 1)) / safe_span).clamp(0, 1)
    return torch.where(varies, normalized, torch.zeros_like(maps))


def cam_from_weights(activations: Tensor, weights: Tensor, size: tuple[int, int] | None = None) -> Tensor:
    """CAM (B,1,H,W) in [0,1] = Normalize(ReLU(sum_k w_k A_k)), upsampled to ``size``.

    activations (B,K,h,w), weights (B,K). The map is upsampled bilinearly *before* min-max so the returned
    mask spans exactly [0,1] at the size it is used (bilinear upsampling never leaves the [min,max] range).

    Raises:
        ValueError: ``activations`` not 4-D or ``weights`` not ``activations.shape[:2]``.
    """
    if activations.dim() != 4 or weights.shape != activations.shape[:2]:
        raise ValueError(f"need activations (B,K,h,w) and weights (B,K); got {tuple(activations.shape)} "
                         f"and {tuple(weights.shape)}")
    h, w = activations.shape[-2:]
    cam = torch.einsum("bk,bkhw->bhw", weights.to(activations.dtype), activations).unsqueeze(1).clamp_min(0)
    if size is not None and tuple(size) != (h, w):
        cam = F.interpolate(cam, size=tuple(size), mode="bilinear", align_corners=False)
    return normalize_per_image(cam)


def cam_from_activations(A: Tensor, grad_pooled: Tensor, nsr: bool = True,
                         size: tuple[int, int] | None = None) -> Tensor:
    """CAM (B,1,H,W) in [0,1] from activations A (B,K,h,w) and dS/dpooled (B,K) under global average pooling.

    nsr: negative-signal removal (ReLU on alpha); off only for the ablation.

    Raises:
        ValueError: ``A`` not 4-D or ``grad_pooled`` not ``A.shape[:2]``.
    """
    if A.dim() != 4 or grad_pooled.shape != A.shape[:2]:
        raise ValueError(f"need A (B,K,h,w) and grad_pooled (B,K); got {tuple(A.shape)} and {tuple(grad_pooled.shape)}")
    grad = activation_gradient_from_pooled(grad_pooled, tuple(A.shape[-2:]))
    return cam_from_weights(A, weights_for(nsr)(grad, A), size)
