"""From a batch of model inputs to the stored masks: ContraCAM (+ test-time flip), resize, refinement.

The runner (``occon_plugin.localize.runner``) and the quality benchmark (``bench/localize_quality.py``)
both go through these functions, so a benchmark row is exactly what ``occon-localize`` writes.

* :func:`cam_masks`: ContraCAM masks at the model input size (``image_size`` squared); with
  ``cam.flip`` also of the mirrored batch (its own negatives: the mirrored images), mirrored back and
  averaged with the plain masks (test-time augmentation).
* :func:`final_mask` / :func:`image_masks`: per image, the soft mask at the image's own size (bilinear,
  8-bit) and the final mask: the soft mask itself (``refine.method=none``), or the edge-aware refinement
  ``refine.method`` (:mod:`occon_plugin.localize.refiners`: dense CRF, guided filter, fast global smoother,
  or a chain of them), computed either on the model input (``refine.resolution=input``: the image resized to
  ``image_size`` squared and the mask at that size, as the authors' code runs its CRF; the result is then
  resized to the image) or at the image's own size (``refine.resolution=image``). Pixel-unit parameters
  (the CRF's ``sxy``, a filter's radius) mean different things at the two sizes; the paper's CRF defaults
  were used at 224x224.
"""
from __future__ import annotations

from concurrent.futures import Executor
from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from occon_plugin.errors import ConfigError
from occon_plugin.localize.cam import weights_for
from occon_plugin.localize.engine import SCORES, CamResult, run_cam
from occon_plugin.localize.refiners import RESOLUTIONS, RefineRun, refine
from occon_plugin.store import mask_to_u8


def cam_masks(model, images: Tensor, cam, sub_batch: Optional[int] = None, precision: str = "fp32") -> CamResult:
    """ContraCAM of images (B,3,S,S) float in [0,1] with a resolved :class:`CamSettings` ``cam`` (no None left):
    the score ``cam.score`` (:data:`~occon_plugin.localize.engine.SCORES`) explained with the channel weights
    ``cam.weights`` (:data:`~occon_plugin.localize.cam.WEIGHTS`, ReLU'd with ``cam.nsr``) on the batch's
    own negatives (B >= 2).

    Returns masks (B,1,S,S) float in [0,1] and the forwards run per image (int64 (B,); both passes counted
    with flip). ``sub_batch``: images per backbone forward (None: the engine's default for the device);
    ``precision``: the backbone forward's autocast (:data:`~occon_plugin.localize.engine.PRECISIONS`).

    Raises:
        ConfigError: an unknown ``cam.weights`` or ``cam.score``.
        ValueError: images not (B,3,S,S) float in [0,1], fewer than 2 images, or out-of-range settings
            (:func:`~occon_plugin.localize.engine.run_cam`).
    """
    if cam.score not in SCORES:
        raise ConfigError(f"cam.score={cam.score!r} is unknown: use one of {sorted(SCORES)}")
    weights = weights_for(bool(cam.nsr), cam.weights)
    kwargs = dict(iters=cam.iters, expand=cam.expand, dilate=bool(cam.dilate), early_exit_tol=cam.early_exit_tol,
                  fill=cam.fill, min_batch=2, sub_batch=sub_batch or "auto", precision=precision)
    result = run_cam(model, images, SCORES[cam.score](cam), weights, **kwargs)
    if not cam.flip:
        return result
    mirrored = run_cam(model, images.flip(-1), SCORES[cam.score](cam), weights, **kwargs)
    return CamResult(mask=(result.mask + mirrored.mask.flip(-1)) * 0.5,
                     iterations=result.iterations + mirrored.iterations)


def input_u8(images: Tensor) -> List[np.ndarray]:
    """Model inputs (B,3,S,S) in [0,1] -> uint8 HWC arrays (the guide at ``refine.resolution=input``)."""
    arr = (images.detach().float().cpu().clamp(0, 1) * 255.0).round_().to(torch.uint8)
    return [np.ascontiguousarray(a) for a in arr.permute(0, 2, 3, 1).numpy()]


def _resize(mask: Tensor | np.ndarray, height: int, width: int) -> np.ndarray:
    m = torch.as_tensor(np.asarray(mask, dtype=np.float32) if isinstance(mask, np.ndarray) else mask.float())
    up = F.interpolate(m.reshape(1, 1, *m.shape[-2:]), size=(height, width), mode="bilinear", align_corners=False)
    return mask_to_u8(up[0, 0].clamp_(0.0, 1.0).numpy())


def _check(run: RefineRun, guide) -> None:
    if run.resolution not in RESOLUTIONS:
        raise ValueError(f"refine.resolution must be input or image, got {run.resolution!r}")
    if guide is None:
        raise ValueError(f"refine.method={run.method} at refine.resolution={run.resolution} needs the picture it runs on")


def final_mask(cam, height: int, width: int, guide: Optional[np.ndarray], run: RefineRun, soft: bool = True,
               lap: Optional[Callable[[str], None]] = None) -> Tuple[Optional[np.ndarray], np.ndarray]:
    """(soft, final) uint8 ``height x width`` masks of one image from its mask ``cam`` (S,S) in [0,1]
    (float tensor or array) at the model input size.

    soft: ``cam`` resized bilinearly to the image (None when ``soft`` is false and the final mask does not
    need it); final: soft itself without refinement, else ``run``'s refinement — on ``guide`` = the S x S x 3
    uint8 model input with ``cam`` 8-bit quantized (``refine.resolution=input``), then resized to the image;
    or on ``guide`` = the image with the soft mask (``refine.resolution=image``). ``lap(stage)`` (optional) is
    called after each resize (``"resize"``) and after the refinement (``"refine"``), for timing. Raises
    ValueError for an unknown resolution or a missing ``guide``.
    """
    lap = lap or (lambda stage: None)
    cam = torch.as_tensor(np.asarray(cam, dtype=np.float32) if isinstance(cam, np.ndarray) else cam).float()
    if not run.enabled:
        out = _resize(cam, height, width)
        lap("resize")
        return out, out
    _check(run, guide)
    if run.resolution == "image":
        out = _resize(cam, height, width)
        lap("resize")
        refined = refine(guide, out / np.float32(255.0), run.method, run.params_map())
        lap("refine")
        final = mask_to_u8(refined)
        lap("resize")
        return out, final
    small = mask_to_u8(cam.clamp(0, 1).numpy()) / np.float32(255.0)
    refined = refine(guide, small, run.method, run.params_map())
    lap("refine")
    final = _resize(refined, height, width)
    out = _resize(cam, height, width) if soft else None
    lap("resize")
    return out, final


def _final_mask_job(args) -> Tuple[np.ndarray, np.ndarray]:
    return final_mask(*args)


def image_masks(masks: Tensor, images: Sequence[np.ndarray], inputs: Optional[Tensor], run: RefineRun,
                executor: Optional[Executor] = None) -> Tuple[List[np.ndarray], List[np.ndarray]]:
    """(soft, final) uint8 masks at each image's size for masks (N,1,S,S) and images (N of HxWx3 uint8):
    :func:`final_mask` per image (in ``executor`` when given).

    ``inputs``: the (N,3,S,S) model inputs (needed for ``refine.resolution=input``); ``run``: the resolved
    refinement. Without refinement, final is soft.

    Raises:
        ValueError: an unknown ``run.resolution``, or ``refine.resolution=input`` without ``inputs``.
    """
    masks = masks.detach().float().cpu()
    if run.enabled and run.resolution not in RESOLUTIONS:
        raise ValueError(f"refine.resolution must be input or image, got {run.resolution!r}")
    if run.enabled and run.resolution == "input" and inputs is None:
        raise ValueError("refine.resolution=input needs the model inputs")
    if not run.enabled:
        guides = [None] * len(images)
    else:
        guides = list(images) if run.resolution == "image" else input_u8(inputs)
    jobs = [(masks[k, 0], *img.shape[:2], g, run) for k, (img, g) in enumerate(zip(images, guides))]
    pairs = list(executor.map(_final_mask_job, jobs)) if executor is not None else [final_mask(*j) for j in jobs]
    return [p[0] for p in pairs], [p[1] for p in pairs]
