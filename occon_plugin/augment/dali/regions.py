"""Paste regions for ``fn.multi_paste`` that tile a background patch over a canvas.

Same tiling as ``semantics.tile_background``: the patch repeats from the canvas' top-left
corner and is cut at the right and bottom edges. DALI builds it in two passes
(``pipeline._tiled_background``): a strip of ``ceil(W / pw)`` copies of the patch, then
``ceil(H / ph)`` copies of that strip: ``n_cols + n_rows`` regions instead of their product.
Region arrays are int32 in (y, x) order, as DALI's HWC layout wants.
"""
from __future__ import annotations

import numpy as np

_NO_REGIONS = np.zeros((0, 2), np.int32)
# Unmixed views: nothing pasted onto a 1x1 canvas.
EMPTY_REGIONS = (np.zeros((0,), np.int32), _NO_REGIONS, _NO_REGIONS, _NO_REGIONS, np.array([1, 1], np.int32))


def _tiles(length: int, step: int) -> tuple[np.ndarray, np.ndarray]:
    starts = np.arange(0, length, step, dtype=np.int32)
    return starts, np.minimum(step, length - starts).astype(np.int32)


def background_regions(own: int, patch_rect, canvas_hw: tuple[int, int]):
    """(ids, in_anchors, shapes, out_anchors, output_size) of both passes for batch sample ``own``,
    whose background patch (decoded from ``patch_rect`` = half-open (x1, y1, x2, y2)) sits at
    index ``own`` of the patch batch and whose strip sits at ``own`` of the strip batch.

    Raises:
        ValueError: an empty background rectangle (the store contract forbids it).
    """
    x1, y1, x2, y2 = (int(v) for v in patch_rect)
    if x2 <= x1 or y2 <= y1:
        raise ValueError(f"empty background rectangle {list(patch_rect)}")
    height, width = canvas_hw
    strip_h = min(y2 - y1, height)
    xs, ws = _tiles(width, x2 - x1)
    n = len(xs)
    strip = (np.full(n, own, np.int32), np.zeros((n, 2), np.int32),
             np.stack([np.full(n, strip_h, np.int32), ws], axis=1),
             np.stack([np.zeros(n, np.int32), xs], axis=1), np.array([strip_h, width], np.int32))
    ys, hs = _tiles(height, strip_h)
    m = len(ys)
    full = (np.full(m, own, np.int32), np.zeros((m, 2), np.int32),
            np.stack([hs, np.full(m, width, np.int32)], axis=1),
            np.stack([ys, np.zeros(m, np.int32)], axis=1), np.array([height, width], np.int32))
    return strip, full
