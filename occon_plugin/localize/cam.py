"""Class activation map of paper Eq. (2) from spatial activations and the score's gradient.

    alpha_k = ReLU(mean_ij dS/dA_kij),   CAM = Normalize(ReLU(sum_k alpha_k A_k))

z depends on A only through global average pooling p_k = mean_ij A_kij, so
dS/dA_kij = dS/dp_k / (h*w) for every (i, j): the gradient w.r.t. the pooled vector (a backward
through the head only) gives alpha without any backward through the backbone.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def activation_gradient_from_pooled(grad_pooled: Tensor, spatial_size: tuple[int, int]) -> Tensor:
    """dS/dA (B,K,h,w) from dS/dp (B,K): each position receives 1/(h*w) of the pooled gradient."""
    h, w = spatial_size
    return (grad_pooled / (h * w))[:, :, None, None].expand(-1, -1, h, w)


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


def cam_from_activations(A: Tensor, grad_pooled: Tensor, nsr: bool = True,
                         size: tuple[int, int] | None = None) -> Tensor:
    """CAM (B,1,H,W) in [0,1] from activations A (B,K,h,w) and dS/dpooled (B,K).

    nsr: negative-signal removal (ReLU on alpha); off only for the ablation.
    size: output (H,W); the map is upsampled bilinearly *before* min-max so the returned mask spans
    exactly [0,1] at the size it is used (bilinear upsampling never leaves the [min,max] range).
    """
    if A.dim() != 4 or grad_pooled.shape != A.shape[:2]:
        raise ValueError(f"need A (B,K,h,w) and grad_pooled (B,K); got {tuple(A.shape)} and {tuple(grad_pooled.shape)}")
    h, w = A.shape[-2:]
    alpha = grad_pooled / (h * w)  # mean_ij dS/dA_kij
    if nsr:
        alpha = alpha.clamp_min(0)
    cam = torch.einsum("bk,bkhw->bhw", alpha.to(A.dtype), A).unsqueeze(1).clamp_min(0)
    if size is not None and tuple(size) != (h, w):
        cam = F.interpolate(cam, size=tuple(size), mode="bilinear", align_corners=False)
    return normalize_per_image(cam)
