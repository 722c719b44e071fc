"""The torchvision v2 pipeline: OA-Crop + BG-Mixup, then the host's standard per-view transforms.

Geometry (the OA-Crop) runs jointly on ``tv_tensors.Image``, ``tv_tensors.Mask`` and
``tv_tensors.BoundingBoxes`` through one v2 transform; the mixing is a per-pixel ``torch.lerp``.
The decisions come from :mod:`occon_plugin.augment.semantics` (shared with the DALI pipeline).
"""
from __future__ import annotations

import contextlib
import random
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import cv2
import numpy as np
import torch
from PIL import Image
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from occon_plugin.augment.config import OcconConfig
from occon_plugin.augment.semantics import Partner, Rect, SamplePlan, mix_weights, per_view, plan_sample

ViewTransform = Callable[[Image.Image], torch.Tensor]


class CropToRect(v2.Transform):
    """Crop every tv_tensor of the input (image, mask, boxes) to one fixed pixel rectangle."""

    def __init__(self, rect: Rect):
        super().__init__()
        self.rect = rect

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        left, top, right, bottom = self.rect
        return self._call_kernel(F.crop, inpt, top=top, left=left, height=bottom - top, width=right - left)


@contextlib.contextmanager
def seeded_global_rngs(seed: int):
    """Seed torch's CPU RNG and Python's ``random`` (the host transforms draw from both) for one
    sample, restoring both afterwards so the caller's streams are untouched."""
    py_state, torch_state = random.getstate(), torch.get_rng_state()
    torch.default_generator.manual_seed(seed)  # CPU only: torch.manual_seed would also touch CUDA
    random.seed(seed)
    try:
        yield
    finally:
        random.setstate(py_state)
        torch.set_rng_state(torch_state)


@dataclass
class ObjectAwareInput:
    """The (possibly OA-cropped) image with its mask and boxes, as tv_tensors."""

    image: tv_tensors.Image                    # 3 x h x w uint8
    mask: tv_tensors.Mask | None               # h x w float32 in [0, 1]
    boxes: tv_tensors.BoundingBoxes | None     # XYXY pixels of the crop


def _torch_ready(array: np.ndarray, dtype=None) -> np.ndarray:
    """``array`` as torch.from_numpy takes it without a warning or an error: writable, no negative
    strides (a copy only when needed: a read-only ``np.asarray(PIL image)``, a flipped view)."""
    array = np.asarray(array, dtype=dtype)
    if not array.flags.writeable or any(s < 0 for s in array.strides):
        array = np.array(array, order="C", copy=True)
    return array


def to_tv_tensors(image: np.ndarray, mask: np.ndarray | None, boxes: Sequence[Sequence[float]]) -> ObjectAwareInput:
    """Wrap an ``H x W x 3`` uint8 image, its soft mask (``H x W``, any real dtype in [0, 1]) and
    normalized boxes; no pixel copy unless an array is read-only or has negative strides.

    Raises:
        ValueError: the mask's size differs from the image's (the image changed after localization).
    """
    image = _torch_ready(image)
    height, width = image.shape[:2]
    tv_image = tv_tensors.Image(torch.from_numpy(image).permute(2, 0, 1))
    tv_mask = None
    if mask is not None:
        if mask.shape != (height, width):  # the store keeps masks at image size; validation checked sizes
            raise ValueError(f"mask is {mask.shape[1]}x{mask.shape[0]} but the image is {width}x{height}: "
                             f"the image changed after localization; rebuild its store entry")
        tv_mask = tv_tensors.Mask(torch.from_numpy(_torch_ready(mask, np.float32)))
    tv_boxes = None
    if len(boxes) > 0:
        scale = torch.tensor([width, height, width, height], dtype=torch.float32)
        tv_boxes = tv_tensors.BoundingBoxes(torch.tensor(boxes, dtype=torch.float32) * scale,
                                            format=tv_tensors.BoundingBoxFormat.XYXY, canvas_size=(height, width))
    return ObjectAwareInput(tv_image, tv_mask, tv_boxes)


def oa_crop(data: ObjectAwareInput, rect: Rect | None) -> ObjectAwareInput:
    """OA-Crop: image, mask and boxes cropped together to ``rect`` (None: unchanged)."""
    if rect is None:
        return data
    image, mask, boxes = CropToRect(rect)((data.image, data.mask, data.boxes))
    return ObjectAwareInput(image, mask, boxes)


def bg_mix(image: np.ndarray, weights: np.ndarray, background: np.ndarray) -> np.ndarray:
    """``weights * image + (1 - weights) * background`` on h x w x 3 uint8 arrays, rounded to uint8.

    OpenCV's ``blendLinear`` does it in one pass (4x faster than the same in torch on one core).
    """
    weights = np.ascontiguousarray(weights, dtype=np.float32)
    return cv2.blendLinear(np.ascontiguousarray(image), np.ascontiguousarray(background), weights, 1.0 - weights)


class TorchvisionObjectAware:
    """``sample_views(image, entry, mask, partners, seed) -> (views, info)`` with torchvision v2.

    ``view_transforms[k]`` is the standard augmentation of view k (PIL -> tensor), normally the
    host's ``build_view_transform``. With OA-Crop and BG-Mixup off this is exactly the host baseline.
    ``partners``: view k's background donor (``Partner``) or None, one per view (one ``Partner``:
    the same donor for every view; see ``semantics.per_view``).
    """

    def __init__(self, cfg: OcconConfig, view_transforms: Sequence[ViewTransform]):
        self.cfg = cfg
        self.view_transforms = list(view_transforms)

    @property
    def n_views(self) -> int:
        return len(self.view_transforms)

    def plan(self, width: int, height: int, entry: Any, has_mask: bool, partners, seed: int) -> SamplePlan:
        """The shared object-aware decisions (no pixels needed: the dataset reads a mask only if used)."""
        return plan_sample(seed, self.cfg, self.n_views, width, height,
                           boxes=entry.boxes if entry is not None else (),
                           has_mask=has_mask,
                           has_background=[p is not None and p.has_background
                                           for p in per_view(partners, self.n_views)])

    def sample_views(self, image: np.ndarray, entry: Any, mask: np.ndarray | None, partners,
                     seed: int) -> tuple[list[torch.Tensor], dict[str, torch.Tensor]]:
        """``image``: H x W x 3 uint8; ``entry``: its StoreEntry (``.boxes`` normalized) or None;
        ``mask``: H x W float32 soft mask or None; ``partners``: the background donors (see the class)."""
        plan = self.plan(image.shape[1], image.shape[0], entry, mask is not None, partners, seed)
        return self.render(image, entry, mask, partners, plan)

    def render(self, image: np.ndarray, entry: Any, mask: np.ndarray | None, partners,
               plan: SamplePlan) -> tuple[list[torch.Tensor], dict[str, torch.Tensor]]:
        """Execute ``plan``: OA-Crop, per-view BG-Mixup (each mixed view with its own donor's
        background), then the standard view transforms. A donor whose image or rectangle turns out
        unusable leaves its view unmixed (``mix_skipped``).

        Raises:
            ValueError: the plan mixes a view but no mask was given (a programming error: plans come from the same store).
        """
        if any(plan.mixed) and mask is None:
            raise ValueError("the plan mixes a view but no mask was given")
        data = to_tv_tensors(image, mask, entry.boxes if (entry is not None and plan.oa_crop) else ())
        data = oa_crop(data, plan.crop_rect)

        image_hwc = data.image.as_subclass(torch.Tensor).permute(1, 2, 0).numpy()  # a view, no copy
        mixed_pil: dict[int, Image.Image] = {}  # view -> its mixed image
        if any(plan.mixed):
            height, width = image_hwc.shape[:2]
            weights = mix_weights(data.mask.as_subclass(torch.Tensor).numpy(), self.cfg.bg_mixup.hard,
                                  self.cfg.bg_mixup.hard_threshold)
            by_donor: dict[int, Image.Image | None] = {}  # two views with one donor: mix once
            for k, partner in enumerate(per_view(partners, self.n_views)):
                if not plan.mixed[k]:
                    continue
                key = id(partner)
                if key not in by_donor:
                    background = partner.background(height, width)
                    by_donor[key] = None if background is None else Image.fromarray(
                        bg_mix(image_hwc, weights, background))
                if by_donor[key] is not None:
                    mixed_pil[k] = by_donor[key]
            unusable = [k for k, m in enumerate(plan.mixed) if m and k not in mixed_pil]
            if unusable:  # the donor's image could not be read, or its rectangle is empty
                plan = plan.without_mixing(unusable)

        plain_pil = None
        views = []
        with seeded_global_rngs(plan.transform_seed):
            for k, transform in enumerate(self.view_transforms):
                if plan.mixed[k]:
                    pil = mixed_pil[k]
                else:
                    if plain_pil is None:
                        plain_pil = Image.fromarray(np.ascontiguousarray(image_hwc))
                    pil = plain_pil
                views.append(transform(pil))
        return views, plan_info(plan)


def plan_info(plan: SamplePlan) -> dict[str, torch.Tensor]:
    """What the methods log per sample (collates to ``(B,)`` / ``(B, n_views)``)."""
    return {"oa_crop": torch.tensor(plan.oa_crop),
            "mixed": torch.tensor(plan.mixed, dtype=torch.bool),
            "mix_skipped": torch.tensor(plan.mix_skipped, dtype=torch.bool)}
