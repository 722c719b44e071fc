"""Background patches for BG-Mixup (paper Sec. 3.3): the largest empty rectangle, tiled."""
from __future__ import annotations

import numpy as np


def largest_empty_rectangle(mask_bin: np.ndarray) -> tuple[int, int, int, int] | None:
    """Exact largest axis-aligned rectangle of zeros in a binary ``H x W`` mask.

    Returns half-open pixel bounds ``(x1, y1, x2, y2)`` (``x2 - x1`` is the width), or None when
    there is no zero; among equal areas, the one whose bottom row comes first, then its left edge.
    Row-by-row maximal-rectangle dynamic programme, O(HW): for every column the run of zeros ending
    at this row (height) and the widest span [left, right) that whole run allows; the row scans are
    cumulative max/min, so each row is a few numpy calls. Runs of identical consecutive rows are one
    step (the heights grow by the run's length; within a run the area only grows, so only its last
    row can hold the best rectangle) and runs of identical consecutive columns one column of that
    width: an upsampled mask has 2-3x fewer distinct rows and columns than pixels, and the result is
    the same as the uncompressed programme's.

    Raises:
        ValueError: ``mask_bin`` is not 2-D.
    """
    free = ~np.asarray(mask_bin, dtype=bool)
    if free.ndim != 2:
        raise ValueError(f"mask must be H x W, got shape {free.shape}")
    n_rows, n_cols = free.shape
    if free.size == 0:
        return None
    # column groups: [edges[g], edges[g + 1]) are identical columns; row runs end at `ends`
    starts = np.flatnonzero(np.r_[True, (free[:, 1:] != free[:, :-1]).any(axis=0)])
    edges = np.r_[starts, n_cols]
    free = free[:, starts]
    ends = np.flatnonzero(np.r_[(free[1:] != free[:-1]).any(axis=1), True])
    runs = np.diff(np.r_[-1, ends])
    n_groups = free.shape[1]
    groups = np.arange(n_groups)
    height = np.zeros(n_groups, dtype=np.int64)
    left = np.zeros(n_groups, dtype=np.int64)
    right = np.full(n_groups, n_groups, dtype=np.int64)
    best_area, best = 0, None
    for row, run in zip(ends.tolist(), runs.tolist()):
        f = free[row]
        height = np.where(f, height + run, 0)
        # first free group after the last blocked one at or before j; first blocked group at or after j
        cur_left = np.maximum.accumulate(np.where(f, 0, groups + 1))
        cur_right = np.minimum.accumulate(np.where(f, n_groups, groups)[::-1])[::-1]
        left = np.where(f, np.maximum(left, cur_left), 0)
        right = np.where(f, np.minimum(right, cur_right), n_groups)
        area = (edges[right] - edges[left]) * height
        j = int(np.argmax(area))
        if area[j] > best_area:
            best_area = int(area[j])
            best = (int(edges[left[j]]), row - int(height[j]) + 1, int(edges[right[j]]), row + 1)
    return best


def background_image(image: np.ndarray, rect: tuple[int, int, int, int] | list[int],
                     size: tuple[int, int] | None = None) -> np.ndarray:
    """Tile the crop ``image[y1:y2, x1:x2]`` to fill ``size`` = ``(height, width)`` (default: the image's).

    Works for ``H x W`` and ``H x W x C`` arrays; ``rect`` is half-open, as stored in ``bg_rect``.

    Raises:
        ValueError: ``rect`` is empty or reaches outside the image.
    """
    x1, y1, x2, y2 = (int(v) for v in rect)
    if not (0 <= x1 < x2 <= image.shape[1] and 0 <= y1 < y2 <= image.shape[0]):
        raise ValueError(f"background rectangle {rect} is empty or outside the {image.shape[1]}x{image.shape[0]} image")
    out_h, out_w = size if size is not None else image.shape[:2]
    patch = image[y1:y2, x1:x2]
    reps = (-(-out_h // patch.shape[0]), -(-out_w // patch.shape[1])) + (1,) * (image.ndim - 2)
    return np.tile(patch, reps)[:out_h, :out_w]
