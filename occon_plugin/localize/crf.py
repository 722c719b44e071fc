"""Dense CRF refinement of a soft foreground mask (pydensecrf defaults, as in the paper's App. B)."""
from __future__ import annotations

from concurrent.futures import Executor
from dataclasses import dataclass

import numpy as np


@dataclass
class CrfParams:
    """pydensecrf README defaults: Gaussian sxy=3 compat=3, bilateral sxy=80 srgb=13 compat=10."""

    iters: int = 5
    gauss_sxy: float = 3.0
    gauss_compat: float = 3.0
    bilateral_sxy: float = 80.0
    bilateral_srgb: float = 13.0
    bilateral_compat: float = 10.0
    clip: float = 1e-5  # probabilities are clipped to [clip, 1 - clip] before -log


def crf_refine(image_u8_hwc: np.ndarray, soft_mask: np.ndarray, params: CrfParams = CrfParams()) -> np.ndarray:
    """Foreground marginal of a 2-label dense CRF with unary ``-log p`` (bg = 1 - mask, fg = mask).

    ``image_u8_hwc`` is the RGB image and ``soft_mask`` an ``H x W`` map in [0, 1] of the same size.
    Returns a float32 ``H x W`` map in [0, 1].
    """
    import pydensecrf.densecrf as dcrf

    height, width = soft_mask.shape
    if image_u8_hwc.shape != (height, width, 3) or image_u8_hwc.dtype != np.uint8:
        raise ValueError(f"image must be uint8 {height}x{width}x3 to match the mask, "
                         f"got {image_u8_hwc.dtype} {image_u8_hwc.shape}")
    fg = np.clip(soft_mask.astype(np.float32), params.clip, 1.0 - params.clip)
    unary = -np.log(np.stack([1.0 - fg, fg]).reshape(2, -1))
    crf = dcrf.DenseCRF2D(width, height, 2)
    crf.setUnaryEnergy(np.ascontiguousarray(unary, dtype=np.float32))
    crf.addPairwiseGaussian(sxy=params.gauss_sxy, compat=params.gauss_compat)
    crf.addPairwiseBilateral(sxy=params.bilateral_sxy, srgb=params.bilateral_srgb,
                             rgbim=np.ascontiguousarray(image_u8_hwc), compat=params.bilateral_compat)
    q = np.asarray(crf.inference(params.iters), dtype=np.float32)
    return q[1].reshape(height, width)


def _refine_pair(args) -> np.ndarray:
    image, mask, params = args
    return crf_refine(image, mask, params)


def crf_refine_many(images: list[np.ndarray], masks: list[np.ndarray], params: CrfParams = CrfParams(),
                    executor: Executor | None = None, workers: int = 1) -> list[np.ndarray]:
    """``crf_refine`` over many images, in order. Pass a long-lived ``executor`` (e.g. from
    :func:`make_crf_executor`) to reuse worker processes; otherwise ``workers > 1`` starts a pool
    for this call and ``workers <= 1`` runs here."""
    if len(images) != len(masks):
        raise ValueError(f"{len(images)} images but {len(masks)} masks")
    jobs = [(img, m, params) for img, m in zip(images, masks)]
    if executor is not None:
        return list(executor.map(_refine_pair, jobs))
    if workers <= 1 or len(jobs) <= 1:
        return [_refine_pair(j) for j in jobs]
    with make_crf_executor(workers) as pool:
        return list(pool.map(_refine_pair, jobs))


def make_crf_executor(workers: int) -> Executor:
    """A process pool for CRF. 'spawn': forking a process that already runs torch threads can deadlock."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    return ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"))
