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

from occon_plugin.localize.crf import CrfParams, crf_refine_many
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


def image_masks(masks: Tensor, images: Sequence[np.ndarray], inputs: Optional[Tensor], crf,
                params: CrfParams, executor: Optional[Executor] = None) -> Tuple[List[np.ndarray], List[np.ndarray]]:
    """(soft, final) uint8 masks at each image's size for masks (N,1,S,S) and images (N of HxWx3 uint8).

    ``inputs``: the (N,3,S,S) model inputs (needed for ``crf.resolution=input``); ``crf``: resolved
    CrfSettings (``enabled``, ``resolution``); ``params``: the CRF's parameters. Without the CRF, final is soft.
    """
    masks = masks.detach().float().cpu()
    soft = [_resize(masks[k, 0], *img.shape[:2]) for k, img in enumerate(images)]
    if not crf.enabled:
        return soft, soft
    if crf.resolution == "image":
        refined = crf_refine_many(list(images), [m / np.float32(255.0) for m in soft], params, executor=executor)
        return soft, [mask_to_u8(r) for r in refined]
    if crf.resolution != "input":
        raise ValueError(f"crf.resolution must be input or image, got {crf.resolution!r}")
    if inputs is None:
        raise ValueError("crf.resolution=input needs the model inputs")
    small = [mask_to_u8(m[0].clamp(0, 1).numpy()) / np.float32(255.0) for m in masks]
    refined = crf_refine_many(input_u8(inputs), small, params, executor=executor)
    return soft, [_resize(r, *img.shape[:2]) for r, img in zip(refined, images)]
