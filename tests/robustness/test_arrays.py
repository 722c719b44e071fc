"""Item 8: public array functions accept the layouts their docstrings promise (read-only arrays as
``np.asarray(PIL image)`` returns, Fortran order, strided and flipped views) with identical results."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from occon_plugin.augment.semantics import mix_weights
from occon_plugin.augment.torchvision_pipeline import bg_mix, to_tv_tensors
from occon_plugin.eval.boxes import best_ious_per_threshold, boxes_at_threshold, normalize_cam
from occon_plugin.eval.masks import iou_curve, mask_iou
from occon_plugin.localize.background import background_image, largest_empty_rectangle
from occon_plugin.localize.boxes import mask_to_boxes
from occon_plugin.localize.crf import CrfParams
from occon_plugin.localize.refiners import refine
from occon_plugin.store.format import encode_mask_png, mask_to_u8

from robustness_helpers import photo

IMAGE = photo("chelsea", (30, 20))
MASK = np.zeros((20, 30), np.float32)
MASK[5:15, 8:20] = 0.9
MASK_U8 = mask_to_u8(MASK)


def layouts(array: np.ndarray):
    """The same values as a read-only array, Fortran order, a strided view, a negative-stride view."""
    read_only = np.asarray(Image.fromarray(array)) if array.dtype == np.uint8 else array.copy()
    read_only.flags.writeable = False
    yield "read-only", read_only
    yield "fortran", np.asfortranarray(array)
    padded = np.zeros((array.shape[0] * 2,) + array.shape[1:], array.dtype)
    padded[::2] = array
    yield "strided", padded[::2]
    yield "flipped", np.ascontiguousarray(array[::-1])[::-1]


def as_arrays(value):
    if isinstance(value, tuple):
        return [np.asarray(v) for v in value]
    if isinstance(value, torch.Tensor):
        return [value.numpy()]
    return [np.asarray(value, dtype=object if isinstance(value, list) else None)]


CASES = {
    "refine crf image": (IMAGE, lambda x: refine(x, MASK, "crf", {"crf": CrfParams(iters=2)})),
    "refine crf mask": (MASK, lambda x: refine(IMAGE, x, "crf", {"crf": CrfParams(iters=2)})),
    "refine guided+fgs image": (IMAGE, lambda x: refine(x, MASK, "guided+fgs", {})),
    "refine guided+fgs mask": (MASK, lambda x: refine(IMAGE, x, "guided+fgs", {})),
    "mask_to_boxes": (MASK, lambda x: mask_to_boxes(x, 0.5)),
    "largest_empty_rectangle": (MASK, lambda x: largest_empty_rectangle(x >= 0.2)),
    "background_image": (IMAGE, lambda x: background_image(x, (2, 3, 9, 8))),
    "mask_to_u8": (MASK, mask_to_u8),
    "encode_mask_png": (MASK_U8, encode_mask_png),
    "mask_iou": (MASK, lambda x: mask_iou(x, MASK > 0.5)),
    "iou_curve gt": (MASK > 0.5, lambda x: iou_curve(MASK, x, [0.3, 0.6])),
    "normalize_cam": (MASK, normalize_cam),
    "boxes_at_threshold": (MASK_U8, lambda x: boxes_at_threshold(x, 0.5)),
    "best_ious_per_threshold": (MASK, lambda x: best_ious_per_threshold(x, [[8, 5, 19, 14]], [0.1, 0.5])),
    "to_tv_tensors image": (IMAGE, lambda x: to_tv_tensors(x, MASK, [[0.1, 0.1, 0.5, 0.5]]).image),
    "to_tv_tensors mask": (MASK, lambda x: to_tv_tensors(IMAGE, x, []).mask),
    "bg_mix": (IMAGE, lambda x: bg_mix(x, MASK, IMAGE[::-1])),
    "mix_weights": (MASK, lambda x: mix_weights(x, True, 0.5)),
}


@pytest.mark.kind("array.layouts")
@pytest.mark.parametrize("name", list(CASES))
def test_public_array_functions_accept_every_layout(name):
    base, fn = CASES[name]
    want = as_arrays(fn(np.ascontiguousarray(base)))
    for layout, array in layouts(base):
        np.testing.assert_array_equal(array, base)
        got = as_arrays(fn(array))
        assert len(got) == len(want), (name, layout)
        for g, w in zip(got, want):
            np.testing.assert_array_equal(g, w, err_msg=f"{name} with a {layout} input")
