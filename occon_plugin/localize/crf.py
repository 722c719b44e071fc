"""Dense CRF refinement of a soft foreground mask (pydensecrf defaults, as in the paper's App. B)."""
from __future__ import annotations

import math
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Optional

import numpy as np


@dataclass
class CrfParams:
    """pydensecrf README defaults: Gaussian sxy=3 compat=3, bilateral sxy=80 srgb=13 compat=10.

    ``max_pixels`` bounds the CRF's working resolution (and so its memory, ~200 bytes per pixel
    with two labels): a larger image is refined at ``sqrt(max_pixels / (H * W))`` of its size with
    the spatial widths (``*_sxy``, in pixels) scaled by the same factor, and the marginal is
    resized back bilinearly. 0 or None: always at full size."""

    iters: int = 5
    gauss_sxy: float = 3.0
    gauss_compat: float = 3.0
    bilateral_sxy: float = 80.0
    bilateral_srgb: float = 13.0
    bilateral_compat: float = 10.0
    clip: float = 1e-5  # probabilities are clipped to [clip, 1 - clip] before -log
    max_pixels: Optional[int] = 4_000_000

    def problems(self) -> list[tuple[str, object, str]]:
        """``(key, value, what it must be)`` for every parameter out of range (None: left to a preset,
        not checked). A spatial or colour width of 0 crashes pydensecrf (segmentation fault); a clip
        >= 0.5 makes the unary meaningless; negative weights turn the smoothness terms around."""
        out = []
        for key in ("gauss_sxy", "bilateral_sxy", "bilateral_srgb", "bilateral_compat"):
            value = getattr(self, key)
            if value is not None and not (math.isfinite(value) and value > 0):
                out.append((key, value, "must be > 0"))
        if not (math.isfinite(self.gauss_compat) and self.gauss_compat >= 0):
            out.append(("gauss_compat", self.gauss_compat, "must be >= 0 (0: no smoothness term)"))
        if not 0.0 < self.clip < 0.5:
            out.append(("clip", self.clip, "must be in (0, 0.5): probabilities are clipped to [clip, 1 - clip] "
                                           "before -log"))
        if self.iters < 1:
            out.append(("iters", self.iters, "must be >= 1"))
        if self.max_pixels is not None and self.max_pixels < 0:
            out.append(("max_pixels", self.max_pixels, "must be >= 0 (0 or null: always at the full image size)"))
        return out


def working_size(height: int, width: int, max_pixels: int | None) -> tuple[int, int, float]:
    """``(h, w, scale)`` the CRF runs at for an ``height x width`` image (scale 1: full size)."""
    if not max_pixels or height * width <= max_pixels:
        return height, width, 1.0
    scale = math.sqrt(max_pixels / float(height * width))
    return max(1, int(height * scale)), max(1, int(width * scale)), scale


def _dense_crf(image: np.ndarray, fg: np.ndarray, params: CrfParams, scale: float) -> np.ndarray:
    import pydensecrf.densecrf as dcrf

    height, width = fg.shape
    unary = -np.log(np.stack([1.0 - fg, fg]).reshape(2, -1))
    crf = dcrf.DenseCRF2D(width, height, 2)
    crf.setUnaryEnergy(np.ascontiguousarray(unary, dtype=np.float32))
    crf.addPairwiseGaussian(sxy=params.gauss_sxy * scale, compat=params.gauss_compat)
    # pydensecrf needs a writable C-contiguous uint8 buffer (np.asarray(PIL image) is read-only)
    rgb = np.require(image, dtype=np.uint8, requirements=["C", "W"])
    crf.addPairwiseBilateral(sxy=params.bilateral_sxy * scale, srgb=params.bilateral_srgb, rgbim=rgb,
                             compat=params.bilateral_compat)
    q = np.asarray(crf.inference(params.iters), dtype=np.float32)
    return q[1].reshape(height, width)


def crf_refine(image_u8_hwc: np.ndarray, soft_mask: np.ndarray, params: CrfParams = CrfParams()) -> np.ndarray:
    """Foreground marginal of a 2-label dense CRF with unary ``-log p`` (bg = 1 - mask, fg = mask).

    ``image_u8_hwc``: the RGB image, uint8 ``H x W x 3``; ``soft_mask``: an ``H x W`` map in [0, 1]
    of the same size, any real dtype. Either may be read-only or non-contiguous (a view, a
    ``np.asarray`` of a PIL image). Images above ``params.max_pixels`` are refined at a bounded
    working size (see :class:`CrfParams`). Returns a new float32 ``H x W`` map in [0, 1].
    Raises ValueError for mismatched shapes, a non-uint8 image or parameters out of range
    (:meth:`CrfParams.problems`).
    """
    bad = params.problems()
    if bad:
        raise ValueError("; ".join(f"CrfParams.{key}={value!r} {what}" for key, value, what in bad))
    mask = np.asarray(soft_mask)
    if mask.ndim != 2:
        raise ValueError(f"soft_mask must be H x W, got shape {mask.shape}")
    height, width = mask.shape
    image = np.asarray(image_u8_hwc)
    if image.shape != (height, width, 3) or image.dtype != np.uint8:
        raise ValueError(f"image must be uint8 {height}x{width}x3 to match the mask, "
                         f"got {image.dtype} {image.shape}")
    fg = np.clip(mask.astype(np.float32), params.clip, 1.0 - params.clip)
    h, w, scale = working_size(height, width, params.max_pixels)
    if scale == 1.0:
        return _dense_crf(image, fg, params, 1.0)
    import cv2

    small = cv2.resize(np.ascontiguousarray(image), (w, h), interpolation=cv2.INTER_AREA)
    small_fg = cv2.resize(np.ascontiguousarray(fg), (w, h), interpolation=cv2.INTER_AREA)
    q = _dense_crf(small, np.clip(small_fg, params.clip, 1.0 - params.clip), params, scale)
    return np.clip(cv2.resize(q, (width, height), interpolation=cv2.INTER_LINEAR), 0.0, 1.0)


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
    """A process pool for CRF, started the way occon-localize starts its post-processing workers
    (:func:`occon_plugin.localize.finish.process_context`: the fork server, not a fork of this process)."""
    from concurrent.futures import ProcessPoolExecutor

    from occon_plugin.localize.finish import process_context

    return ProcessPoolExecutor(max_workers=workers, mp_context=process_context())
