"""From a batch of model inputs to the stored masks: ContraCAM (+ test-time flip), resize, dense CRF.

The runner (``occon_plugin.localize.runner``) and the quality benchmark (``bench/localize_quality.py``)
both go through these two functions, so a benchmark row is exactly what ``occon-localize`` writes.

* :func:`cam_masks`: ContraCAM masks at the model input size (``image_size`` squared); with
  ``cam.flip`` also of the mirrored batch (its own negatives: the mirrored images), mirrored back and
  averaged with the plain masks (test-time augmentation).
* :func:`image_masks`: per image, the soft mask at the image's own size (bilinear, 8-bit) and the final
  mask: the soft mask itself, or the dense CRF's foreground marginal, computed either on the model input
  (``crf.resolution=input``: the image resized to ``image_size`` squared and the mask at that size, as
  the authors' code does; the marginal is then resized to the image) or at the image's own size
  (``crf.resolution=image``). The CRF's pixel-unit parameters (``sxy``) mean different things at the two
  sizes; the paper's defaults were used at 224x224.
"""
from __future__ import annotations

from concurrent.futures import Executor
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from occon_plugin.localize.crf import CrfParams, crf_refine
from occon_plugin.localize.engine import CamResult, contracam
from occon_plugin.store import mask_to_u8


def cam_masks(model, images: Tensor, cam, sub_batch: Optional[int] = None) -> CamResult:
    """ContraCAM of images (B,3,S,S) in [0,1] with resolved :class:`CamSettings` ``cam``.

    Returns masks (B,1,S,S) in [0,1] and the forwards run per image (both passes counted with flip).
    ``sub_batch``: images per backbone forward (None: the engine's default for the device).
    """
    kwargs = dict(iters=cam.iters, nsr=cam.nsr, temperature=cam.temperature, expand=cam.expand,
                  dilate=bool(cam.dilate), early_exit_tol=cam.early_exit_tol, fill=cam.fill,
                  sub_batch=sub_batch or "auto")
    result = contracam(model, images, **kwargs)
    if not cam.flip:
        return result
    mirrored = contracam(model, images.flip(-1), **kwargs)
    return CamResult(mask=(result.mask + mirrored.mask.flip(-1)) * 0.5,
                     iterations=result.iterations + mirrored.iterations)


def input_u8(images: Tensor) -> List[np.ndarray]:
    """Model inputs (B,3,S,S) in [0,1] -> uint8 HWC arrays (what the CRF sees at ``resolution=input``)."""
    arr = (images.detach().float().cpu().clamp(0, 1) * 255.0).round_().to(torch.uint8)
    return [np.ascontiguousarray(a) for a in arr.permute(0, 2, 3, 1).numpy()]


def _resize(mask: Tensor | np.ndarray, height: int, width: int) -> np.ndarray:
    m = torch.as_tensor(np.asarray(mask, dtype=np.float32) if isinstance(mask, np.ndarray) else mask.float())
    up = F.interpolate(m.reshape(1, 1, *m.shape[-2:]), size=(height, width), mode="bilinear", align_corners=False)
    return mask_to_u8(up[0, 0].clamp_(0.0, 1.0).numpy())


def final_mask(cam, height: int, width: int, crf_rgb: Optional[np.ndarray], crf,
               params: CrfParams) -> Tuple[np.ndarray, np.ndarray]:
    """(soft, final) uint8 ``height x width`` masks of one image from its mask ``cam`` (S,S) in [0,1]
    (float tensor or array) at the model input size.

    soft: ``cam`` resized bilinearly to the image; final: soft itself without CRF, else the dense CRF's
    foreground marginal — on ``crf_rgb`` = the S x S x 3 uint8 model input with ``cam`` 8-bit quantized
    (``crf.resolution=input``, the authors'), then resized to the image; or on ``crf_rgb`` = the image
    with the soft mask (``crf.resolution=image``). ``crf``: ``enabled``, ``resolution``; ``params``: the
    CRF's parameters. Raises ValueError for an unknown resolution or a missing ``crf_rgb``.
    """
    cam = torch.as_tensor(np.asarray(cam, dtype=np.float32) if isinstance(cam, np.ndarray) else cam).float()
    soft = _resize(cam, height, width)
    if not crf.enabled:
        return soft, soft
    if crf.resolution not in ("input", "image"):
        raise ValueError(f"crf.resolution must be input or image, got {crf.resolution!r}")
    if crf_rgb is None:
        raise ValueError(f"crf.resolution={crf.resolution} needs the picture the CRF runs on")
    if crf.resolution == "image":
        return soft, mask_to_u8(crf_refine(crf_rgb, soft / np.float32(255.0), params))
    small = mask_to_u8(cam.clamp(0, 1).numpy()) / np.float32(255.0)
    return soft, _resize(crf_refine(crf_rgb, small, params), height, width)


def _final_mask_job(args) -> Tuple[np.ndarray, np.ndarray]:
    return final_mask(*args)


def image_masks(masks: Tensor, images: Sequence[np.ndarray], inputs: Optional[Tensor], crf,
                params: CrfParams, executor: Optional[Executor] = None) -> Tuple[List[np.ndarray], List[np.ndarray]]:
    """(soft, final) uint8 masks at each image's size for masks (N,1,S,S) and images (N of HxWx3 uint8):
    :func:`final_mask` per image (in ``executor`` when given).

    ``inputs``: the (N,3,S,S) model inputs (needed for ``crf.resolution=input``); ``crf``: resolved
    CrfSettings (``enabled``, ``resolution``); ``params``: the CRF's parameters. Without the CRF, final is soft.
    """
    masks = masks.detach().float().cpu()
    if crf.enabled and crf.resolution not in ("input", "image"):
        raise ValueError(f"crf.resolution must be input or image, got {crf.resolution!r}")
    if crf.enabled and crf.resolution == "input" and inputs is None:
        raise ValueError("crf.resolution=input needs the model inputs")
    if not crf.enabled:
        rgbs = [None] * len(images)
    else:
        rgbs = list(images) if crf.resolution == "image" else input_u8(inputs)
    jobs = [(masks[k, 0], *img.shape[:2], rgb, crf, params) for k, (img, rgb) in enumerate(zip(images, rgbs))]
    pairs = list(executor.map(_final_mask_job, jobs)) if executor is not None else [final_mask(*j) for j in jobs]
    return [p[0] for p in pairs], [p[1] for p in pairs]
