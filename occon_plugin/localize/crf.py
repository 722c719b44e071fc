"""Dense CRF refinement of a soft foreground mask (pydensecrf defaults, as in the paper's App. B).

The ``crf`` step of :data:`occon_plugin.localize.refiners.REFINERS`; call it through
:func:`occon_plugin.localize.refiners.refine` (``refine(image, mask, "crf", {"crf": CrfParams()})``), which
checks the inputs and bounds the working size (``max_pixels``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import numpy as np


@dataclass
class CrfParams:
    """pydensecrf README defaults: Gaussian sxy=3 compat=3, bilateral sxy=80 srgb=13 compat=10, 5 iterations.

    ``max_pixels`` bounds the CRF's working size (and so its memory, ~200 bytes per pixel with two labels, and
    its time): a larger input is refined at ``sqrt(max_pixels / (H * W))`` of its size with the spatial widths
    (``*_sxy``, in pixels) scaled by the same factor, and the marginal is resized back bilinearly. 0: always at
    full size."""

    iters: int = 5
    gauss_sxy: float = 3.0
    gauss_compat: float = 3.0
    bilateral_sxy: float = 80.0
    bilateral_srgb: float = 13.0
    bilateral_compat: float = 10.0
    clip: float = 1e-5  # probabilities are clipped to [clip, 1 - clip] before -log
    max_pixels: Optional[int] = 4_000_000

    def problems(self) -> list[tuple[str, object, str]]:
        """``(key, value, what it must be)`` for every parameter out of range (empty: fine). A spatial or colour
        width of 0 crashes pydensecrf (segmentation fault); a clip >= 0.5 makes the unary meaningless; negative
        weights turn the smoothness terms around."""
        out = []
        for key in ("gauss_sxy", "bilateral_sxy", "bilateral_srgb"):
            value = getattr(self, key)
            if not (math.isfinite(value) and value > 0):
                out.append((key, value, "must be > 0"))
        for key in ("gauss_compat", "bilateral_compat"):
            value = getattr(self, key)
            if not (math.isfinite(value) and value >= 0):
                out.append((key, value, "must be >= 0 (0: no smoothness term)"))
        if not 0.0 < self.clip < 0.5:
            out.append(("clip", self.clip, "must be in (0, 0.5): probabilities are clipped to [clip, 1 - clip] "
                                           "before -log"))
        if self.iters < 1:
            out.append(("iters", self.iters, "must be >= 1"))
        return out


def dense_crf(image: np.ndarray, fg: np.ndarray, params: CrfParams, scale: float = 1.0) -> np.ndarray:
    """Foreground marginal (float32 ``H x W``) of a 2-label dense CRF with unary ``-log p`` (bg = 1 - fg), the
    mask clipped to ``[clip, 1 - clip]``; ``image``: writable C-contiguous uint8 RGB ``H x W x 3``; the spatial
    widths are multiplied by ``scale`` (the working size over the full size).

    Raises:
        MissingDependencyError: pydensecrf2 is not installed (one line naming the install).
    """
    try:
        import pydensecrf.densecrf as dcrf
    except ImportError:
        from occon_plugin.errors import MissingDependencyError

        raise MissingDependencyError("refine.method=crf needs the dense CRF package pydensecrf2, which is not "
                                     "installed: pip install 'occon-plugin[crf]' (or pydensecrf2), or choose a "
                                     "refine.method without crf") from None

    height, width = fg.shape
    fg = np.clip(fg, params.clip, 1.0 - params.clip)
    unary = -np.log(np.stack([1.0 - fg, fg]).reshape(2, -1))
    crf = dcrf.DenseCRF2D(width, height, 2)
    crf.setUnaryEnergy(np.ascontiguousarray(unary, dtype=np.float32))
    # a kernel of weight 0 adds exactly nothing to the mean-field messages: it is left out (its lattice costs time)
    if params.gauss_compat:
        crf.addPairwiseGaussian(sxy=params.gauss_sxy * scale, compat=params.gauss_compat)
    if params.bilateral_compat:
        crf.addPairwiseBilateral(sxy=params.bilateral_sxy * scale, srgb=params.bilateral_srgb, rgbim=image,
                                 compat=params.bilateral_compat)
    q = np.asarray(crf.inference(params.iters), dtype=np.float32)
    return q[1].reshape(height, width)
