"""What OA-Crop and BG-Mixup do, independent of the pipeline that executes it.

Both pipelines (torchvision v2 here, DALI in ``occon_plugin.augment.dali``) import these functions,
so for the same seed they make the same object-aware decisions (which box, which views are mixed,
which partner); only the standard augmentations that follow differ in their random streams.

Paper (Mo et al. 2021) §2.3, App. B.3, E:

* OA-Crop: one box of the image, uniformly at random; BOTH views are produced from that crop.
  No boxes -> the full image.
* BG-Mixup: ``x = m * x1 + (1 - m) * bg(x2)``; ``m`` = soft ContraCAM mask of ``x1``, ``bg(x2)`` =
  the store's background rectangle of another image ``x2`` tiled to the size of ``x1`` (after
  OA-Crop, when both are on). Each view in ``bg_mixup.views`` is mixed independently with
  probability ``p_mix``. BG-HardMix: ``m`` binarized (``m >= hard_threshold`` -> 1, the comparison
  of the authors' code).
* x2 is one random OTHER sample per VIEW (:func:`choose_partner` with the view's number), so when
  both views of a positive pair are mixed they carry different backgrounds: the pair shares the
  object, not the background (a donor shared by the two views would give the pair a common
  background again, the shortcut BG-Mixup exists to remove). The authors' released code mixes only
  the first view (``bg_mixup.views: [0]`` reproduces that); the default, every view (multi-crop: the
  small crops too), follows the paper's text ("independently applied on the patches").
* A view that draws a mix but has no mask (x1 failed localization) or whose donor has no usable
  background stays unmixed and is reported as ``mix_skipped``.
* Both run before the standard augmentations (RandomResizedCrop, flip, colour, blur ...).

Random streams (numpy ``Generator``s, fixed draw order so a seed means the same decisions):
``plan_sample(seed)`` draws box index, one coin per view, then the seed of the standard transforms;
``choose_partner(seed, view=v)`` uses an independent stream per view: ``[seed, 1]`` for view 0,
``[seed, 1, v]`` for view ``v > 0``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Callable, Sequence

import numpy as np

from occon_plugin.augment.config import OcconConfig
from occon_plugin.localize.background import background_image  # the one tiling implementation

Rect = tuple[int, int, int, int]  # half-open pixel rectangle (left, top, right, bottom)
_PARTNER_STREAM = 1
# How BG-Mixup draws x2, for reports that must say which rule their runs used (before 2026-12-06: one per sample)
DONOR_RULE = "one donor per mixed view"
_REPLACE_STREAM = 2
_SEED_BOUND = 2**62


def box_to_pixels(box: Sequence[float], width: int, height: int) -> Rect:
    """Normalized ``[x1, y1, x2, y2]`` -> the smallest pixel rectangle covering it, clipped to the
    image and at least one pixel wide/high (a degenerate store box still yields a valid crop)."""
    x1, y1, x2, y2 = (float(v) for v in box)
    left = min(max(int(math.floor(x1 * width)), 0), width - 1)
    top = min(max(int(math.floor(y1 * height)), 0), height - 1)
    right = max(min(int(math.ceil(x2 * width)), width), left + 1)
    bottom = max(min(int(math.ceil(y2 * height)), height), top + 1)
    return left, top, right, bottom


def clip_rect(rect: Sequence[int], width: int, height: int) -> Rect | None:
    """A store pixel rectangle clipped to an image; None when nothing is left."""
    left, top, right, bottom = (int(v) for v in rect)
    left, top = max(left, 0), max(top, 0)
    right, bottom = min(right, width), min(bottom, height)
    if right <= left or bottom <= top:
        return None
    return left, top, right, bottom


@dataclass(frozen=True)
class SamplePlan:
    """The object-aware decisions for one sample (both views)."""

    crop_rect: Rect | None           # OA-Crop pixel rectangle of the image; None = full image
    box_index: int | None            # which store box it came from
    drawn: tuple[bool, ...]          # view k won its p_mix coin
    mixed: tuple[bool, ...]          # view k is mixed (drawn, and a mask and view k's donor background exist)
    transform_seed: int              # seeds the standard per-view augmentations

    @property
    def oa_crop(self) -> bool:
        return self.crop_rect is not None

    def without_mixing(self, views: Sequence[int] | None = None) -> "SamplePlan":
        """The same plan with ``views`` (default: every view) unmixed: the mask or a donor's
        background turned out unusable when it was read."""
        drop = range(len(self.mixed)) if views is None else set(views)
        return replace(self, mixed=tuple(m and k not in drop for k, m in enumerate(self.mixed)))

    @property
    def mix_skipped(self) -> tuple[bool, ...]:
        """Views that drew a mix but stayed unmixed (no mask for x1, or no background for x2)."""
        return tuple(d and not m for d, m in zip(self.drawn, self.mixed))


def plan_sample(seed: int, cfg: OcconConfig, n_views: int, width: int, height: int,
                boxes: Sequence[Sequence[float]] = (), has_mask: bool = False,
                has_background: bool | Sequence[bool] = False) -> SamplePlan:
    """Draw the object-aware decisions of one sample from ``seed``.

    ``boxes``: the store's normalized boxes of the image; ``has_mask``: its soft mask exists;
    ``has_background``: per view, that view's donor offers a background rectangle (one bool: the
    same for every view).
    """
    rng = np.random.default_rng(seed)
    box_index = crop_rect = None
    if cfg.oa_crop and len(boxes) > 0:
        box_index = int(rng.integers(len(boxes)))
        crop_rect = box_to_pixels(boxes[box_index], width, height)
    coins = rng.random(n_views)  # always drawn: the stream stays aligned whatever is enabled
    mix_cfg = cfg.bg_mixup
    drawn = tuple(bool(mix_cfg.enabled and k in mix_cfg.views and coins[k] < mix_cfg.p_mix) for k in range(n_views))
    backgrounds = ((bool(has_background),) * n_views if isinstance(has_background, (bool, np.bool_))
                   else tuple(bool(b) for b in has_background))
    mixed = tuple(d and has_mask and b for d, b in zip(drawn, backgrounds))
    transform_seed = int(rng.integers(_SEED_BOUND))
    return SamplePlan(crop_rect=crop_rect, box_index=box_index, drawn=drawn, mixed=mixed,
                      transform_seed=transform_seed)


def choose_partner(seed: int, index: int, candidates: np.ndarray, view: int = 0) -> int | None:
    """The background donor x2 of view ``view`` of sample ``index``.

    The paper takes x2 from the same batch; in a map-style dataset the equivalent is a uniformly
    random OTHER sample, drawn from the sample's own seed, independently per view (stream
    ``[seed, 1]`` for view 0, ``[seed, 1, view]`` after), so two mixed views of a positive pair get
    independent backgrounds. ``candidates`` (sorted dataset indexes whose store entry has a
    background rectangle) makes this "draw again until the partner has a background" in one step.
    None when no other sample has one (the view stays unmixed).

    Raises:
        ValueError: ``view`` is negative (a caller's bug).
    """
    if view < 0:
        raise ValueError(f"view must be >= 0, got {view}")
    n = len(candidates)
    pos = int(np.searchsorted(candidates, index))
    contains_self = pos < n and int(candidates[pos]) == index
    pool = n - int(contains_self)
    if pool <= 0:
        return None
    stream = [seed, _PARTNER_STREAM] if view == 0 else [seed, _PARTNER_STREAM, view]
    pick = int(np.random.default_rng(stream).integers(pool))
    if contains_self and pick >= pos:
        pick += 1
    return int(candidates[pick])


def replacement_index(seed: int, attempt: int, n: int) -> int:
    """The dataset index that stands in for a sample whose image became unreadable during training
    (``attempt`` = 1, 2, ...), drawn from the sample's seed: both pipelines pick the same one."""
    return int(np.random.default_rng([seed, _REPLACE_STREAM, attempt]).integers(n))


def sample_seed(seed: int, index: int, epoch: int = 0) -> int:
    """A per-sample seed from the run seed (used when a sampler does not hand one out)."""
    state = np.random.SeedSequence([int(seed) & (2**63 - 1), int(index), int(epoch)]).generate_state(1, np.uint64)
    return int(state[0] % _SEED_BOUND)


def mix_weights(mask: np.ndarray, hard: bool, threshold: float) -> np.ndarray:
    """Blend weight of x1: the soft mask (BG-Mixup) or its binarization (BG-HardMix)."""
    if hard:
        return (mask >= threshold).astype(np.float32)
    return mask.astype(np.float32, copy=False)


@dataclass
class Partner:
    """The background donor x2: its store background rectangle and a (lazy) loader of its image.

    The image is read only when a view is actually mixed (``background``).
    """

    bg_rect: Sequence[int] | None
    load_image: Callable[[], np.ndarray | None]  # None: the image could not be read
    index: int = -1

    @classmethod
    def from_image(cls, image: np.ndarray, bg_rect: Sequence[int] | None, index: int = -1) -> "Partner":
        return cls(bg_rect=bg_rect, load_image=lambda: image, index=index)

    @property
    def has_background(self) -> bool:
        return self.bg_rect is not None

    def background(self, height: int, width: int) -> np.ndarray | None:
        """bg(x2): x2's background rectangle tiled from the top-left corner to ``height x width``
        (uint8 ``H x W x 3``); None if x2 has no rectangle, it lies outside x2, or x2 is unreadable."""
        if self.bg_rect is None:
            return None
        image = self.load_image()
        if image is None:
            return None
        rect = clip_rect(self.bg_rect, image.shape[1], image.shape[0])
        if rect is None:
            return None
        return background_image(image, rect, (height, width))


def per_view(donors, n_views: int) -> tuple:
    """Donors as one entry per view: ``None`` -> none for any view; a single donor -> the same donor
    for every view (tests that pin one background); a sequence -> itself (``len == n_views``).

    Raises:
        ValueError: a sequence whose length is not ``n_views`` (a caller's bug).
    """
    if donors is None or not isinstance(donors, (tuple, list)):
        return (donors,) * n_views
    if len(donors) != n_views:
        raise ValueError(f"{len(donors)} donors for {n_views} views")
    return tuple(donors)
