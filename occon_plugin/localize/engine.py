"""The CAM engine: one iteration driver, pluggable score and weight functions (paper Sec. 2.2, Algorithm 1).

``run_cam(model, images, score, weights, iters, ...)`` runs, for t = 1..T and every image x of the batch::

    x^1 = x,  x^t = (1 - M^{t-1}) * x + M^{t-1} * fill        (soft mask M^t = max_{l<=t} CAM^l)
    A^t = activations of x^t,  z^t = head(pooled(A^t))
    S^t = score(z^t, [z^1, ..., z^{t-1}])                      (per image, differentiable in z^t)
    CAM^t = Normalize(ReLU(sum_k weights(dS^t/dA^t, A^t)_k A^t_k))

* **score** (:data:`ScoreFn`): ``score(z, history) -> (B,)``. ``z`` (B,D) is this iteration's output and
  carries gradient; ``history`` holds the detached z of every earlier iteration (``history[0]`` = the
  original images). :class:`ContrastiveScore` is the paper's Eq. (1)/(3); :class:`ClassifierScore` is
  Grad-CAM of a class logit (the classifier-CAM baseline).
* **weights** (:data:`occon_plugin.localize.cam.WeightFn`): ``weights(dS/dA, A) -> (B,K)``; the paper's
  ReLU-mean (:func:`~occon_plugin.localize.cam.relu_mean_weights`) by default.
* **gradient**: when the model pools by global average (CNNs, ``model.pool_is_mean``) dS/dA comes in
  closed form from dS/dpooled (a backward through the head only); otherwise (ViT) by autograd through
  what lies after the activations (``model.pooled``) — never through the backbone before them.
* **fill**: Eq. (3) writes (1 - M) * x; Algorithm 1 fades to a mask colour. The default "mean" (the
  model's normalization mean) is (1 - M) * x applied to the normalized input; "black" is Eq. (3)
  literally in pixel space.
* **early exit** (``early_exit_tol``): an image is re-encoded only while its aggregated mask has moved by
  more than ``tol`` (max abs, per image) since the mask it was last encoded with; otherwise its cached
  activations stand in for the new masked image. Its CAM is still recomputed every iteration (cheap:
  head backward + weighted sum), against the growing history, and its cached z keeps entering the
  history, so the other images' scores match the fixed-T run. With tol=0 the cache is used only when
  the masked image is bit-identical, so the result equals the fixed-T one.

Cost: one forward up to the activations per iteration under no_grad, plus the (small) backward.
**precision** (:data:`PRECISIONS`): the backbone forward up to the activations may run under autocast
(``"bf16"`` / ``"fp16"``; measured: docs/benchmarks.md); the activations are cast
back to the images' dtype before the score, its gradient and the CAM, which stay in full precision.
:func:`contracam` is the paper's ContraCAM on this driver.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional

import torch
from torch import Tensor, nn

from occon_plugin.localize.cam import WeightFn, activation_gradient_from_pooled, cam_from_weights, weights_for
from occon_plugin.localize.score import contrastive_score
from occon_plugin.models.cam import Activations, CamModel

ScoreFn = Callable[[Tensor, List[Tensor]], Tensor]
"""``score(z (B,D) with grad, history: list of detached (B,D) from earlier iterations) -> (B,)``."""


@dataclass
class CamResult:
    mask: Tensor        # (B,1,H,W) float in [0,1], aggregated over iterations (max)
    iterations: Tensor  # (B,) int64: forwards actually run per image (<= iters)


ContraCamResult = CamResult  # the name earlier versions exported


# ------------------------------------------------------------------------------------------------
# Scores
# ------------------------------------------------------------------------------------------------
class ContrastiveScore:
    """Paper Eq. (1) with Eq. (3)'s negatives, for a batch localized together.

    Positive key of image b: its ORIGINAL image's z (``history[0]``; at t=1 its own z, detached).
    Negatives of b: every version (original and masked, of every iteration so far, the current one
    included) of the OTHER images; b's own masked versions never count (Eq. (3) removes x^l from B^l).
    Raises:
        ValueError: ``temperature`` <= 0 (the CLI checks ``cam.temperature`` first: ConfigError).
    """

    def __init__(self, temperature: float = 0.2):
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.temperature = float(temperature)

    def __call__(self, z: Tensor, history: List[Tensor]) -> Tensor:
        batch = z.shape[0]
        now = z.detach()
        key = history[0] if history else now
        bank = torch.cat([*history, now])
        not_self = ~torch.eye(batch, dtype=torch.bool, device=z.device)
        return contrastive_score(z, key, bank, self.temperature, not_self.repeat(1, len(history) + 1))


class ClassifierScore:
    """Grad-CAM score of a class logit: ``classifier(z)[b, c_b]``.

    ``classes`` (B,) fixes the class per image; None takes each image's top-1 class on the original image
    (``history[0]``, or z at t=1). The classes used are kept in ``self.used``.
    """

    def __init__(self, classifier: nn.Module, classes: Optional[Tensor] = None):
        self.classifier = classifier
        self.classes = classes
        self.used: Optional[Tensor] = None

    def __call__(self, z: Tensor, history: List[Tensor]) -> Tensor:
        logits = self.classifier(z)
        if self.used is None or not history:
            if self.classes is None:
                base = self.classifier(history[0]) if history else logits.detach()
                self.used = base.argmax(dim=1)
            else:
                self.used = torch.as_tensor(self.classes, device=logits.device).long().reshape(-1)
                if self.used.shape[0] != logits.shape[0]:
                    raise ValueError(f"{self.used.shape[0]} classes for a batch of {logits.shape[0]} images")
        return logits.gather(1, self.used[:, None]).squeeze(1)


def contrastive(cam: Any) -> ScoreFn:
    """``cam.score=contrastive``: the paper's Eq. (1)/(3) at ``cam.temperature`` (:class:`ContrastiveScore`)."""
    return ContrastiveScore(cam.temperature)


# name -> score factory (``cam.score``): ``factory(cam settings) -> ScoreFn``, called once per batch (and per
# flipped pass). A new variant: its factory and a line here. Every score here is computed within a batch
# (``occon-localize`` needs >= 2 images per batch).
SCORES: Dict[str, Callable[[Any], ScoreFn]] = {
    "contrastive": contrastive,
}


# ------------------------------------------------------------------------------------------------
# One step: score gradient -> CAM
# ------------------------------------------------------------------------------------------------
def score_gradient(model: CamModel, acts: Activations, score: ScoreFn, history: List[Tensor],
                   closed_form: Optional[bool] = None) -> tuple[Tensor, Tensor]:
    """(z of these activations, detached (B,D); dS/dA (B,K,h,w)) for ``S = score(z, history)``.

    ``closed_form`` None: use it exactly when ``model.pool_is_mean``; False forces autograd through
    ``model.pooled`` (equal for average-pooled models: tests compare the two).

    Raises:
        ValueError: ``closed_form=True`` for a model that does not pool by global average.
    """
    if closed_form is None:
        closed_form = model.pool_is_mean
    if closed_form and not model.pool_is_mean:
        raise ValueError(f"{model.name}: the closed-form gradient needs global average pooling")
    with torch.enable_grad():
        if closed_form:
            pooled = model.pool(acts.maps.detach()).requires_grad_(True)
            z = model.head(pooled)
            (grad_pooled,) = torch.autograd.grad(score(z, history).sum(), pooled)
            grad = activation_gradient_from_pooled(grad_pooled, tuple(acts.maps.shape[-2:]))
        else:
            maps = acts.maps.detach().requires_grad_(True)
            z = model.head(model.pooled(acts.detach().with_maps(maps)))
            (grad,) = torch.autograd.grad(score(z, history).sum(), maps)
    return z.detach(), grad


def resolve_fill(fill: str | tuple | list, model: CamModel, device: torch.device) -> Tensor:
    """Colour (in [0,1] RGB) that masked pixels fade to: "mean" = the model's normalization mean
    (so masked pixels are zero after normalization), "black", or an (r, g, b) tuple.

    Returns a float tensor (1,3,1,1) on ``device``.

    Raises:
        ValueError: an unknown fill name, or a tuple that is not 3 values in [0, 1].
    """
    if isinstance(fill, str):
        if fill == "mean":
            rgb = model.mean
        elif fill in ("black", "zero"):
            rgb = (0.0, 0.0, 0.0)
        else:
            raise ValueError(f'fill must be "mean", "black" or an (r, g, b) tuple in [0,1]; got {fill!r}')
    else:
        rgb = tuple(float(v) for v in fill)
        if len(rgb) != 3 or not all(0.0 <= v <= 1.0 for v in rgb):
            raise ValueError(f"fill colour must be 3 values in [0,1] (RGB, unnormalized); got {fill!r}")
    return torch.tensor(rgb, device=device).view(1, 3, 1, 1)


def _check_inputs(images: Tensor, iters: int, early_exit_tol: float | None, min_batch: int) -> None:
    if not isinstance(images, Tensor) or images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be a (B,3,H,W) tensor; got {getattr(images, 'shape', type(images))}")
    if not images.is_floating_point():
        raise ValueError(f"images must be float in [0,1]; got dtype {images.dtype} (divide uint8 by 255)")
    if images.shape[0] < min_batch:
        raise ValueError("ContraCAM needs at least 2 images in a batch: the other images are the negatives")
    low, high = float(images.min()), float(images.max())
    if low < -1e-6 or high > 1 + 1e-6:
        raise ValueError(f"images must be unnormalized in [0,1]; got values in [{low:.3g}, {high:.3g}]")
    if iters < 1:
        raise ValueError(f"iters must be >= 1, got {iters}")
    if early_exit_tol is not None and early_exit_tol < 0:
        raise ValueError(f"early_exit_tol must be >= 0 or None, got {early_exit_tol}")


@contextlib.contextmanager
def _eval_mode(model: CamModel):
    """BatchNorm must use running stats: batch stats would mix the images' activations."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def default_sub_batch(device: torch.device) -> Optional[int]:
    """Images per backbone forward when none is given: 8 on CPU (the large early activations of a chunk
    stay in the allocator's reused memory instead of being mapped and returned to the OS on every
    forward: 2-4x less time on CPU, see docs/benchmarks.md), the whole batch on a GPU."""
    return None if device.type == "cuda" else 8


# name -> autocast dtype of the backbone forward (``precision``; None: none). A new one: a line here.
PRECISIONS: Dict[str, Optional[torch.dtype]] = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def check_precision(precision: str) -> Optional[torch.dtype]:
    """The autocast dtype of a :data:`PRECISIONS` name.

    Raises:
        ValueError: an unknown name (the message lists the known ones).
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {sorted(PRECISIONS)}; got {precision!r}")
    return PRECISIONS[precision]


def _activations(model: CamModel, images: Tensor, autocast: Optional[torch.dtype]) -> Activations:
    if autocast is None:
        return model.activations(images)
    with torch.autocast(images.device.type, dtype=autocast):
        acts = model.activations(images)
    return Activations(acts.maps.to(images.dtype),
                       tuple(e.to(images.dtype) if e.is_floating_point() else e for e in acts.extra))


def batched_activations(model: CamModel, images: Tensor, sub_batch: Optional[int],
                        autocast: Optional[torch.dtype] = None) -> Activations:
    """``model.activations`` of ``images`` in chunks of ``sub_batch`` images (None or 0: all at once).

    Every image's activations depend on that image only (eval mode), so chunking changes nothing but
    the memory the forward touches at a time; the scores still see the whole batch. ``autocast``: a dtype
    (:data:`PRECISIONS`) the forward runs in under ``torch.autocast``; the activations come back in the
    images' dtype.
    """
    if not sub_batch or images.shape[0] <= sub_batch:
        return _activations(model, images, autocast)
    parts = [_activations(model, images[i:i + sub_batch], autocast) for i in range(0, images.shape[0], sub_batch)]
    return Activations(torch.cat([p.maps for p in parts]),
                       tuple(torch.cat(list(e)) for e in zip(*(p.extra for p in parts))))


def dilated_convs(model: CamModel) -> list[nn.Conv2d]:
    """The convolutions (kernel > 1) of ``model.trunk`` that come after its last expansion module in
    module order: the ones a dilated expansion gives dilation 2 (for torchvision ResNets, exactly what
    ``replace_stride_with_dilation`` dilates in layer4; for EfficientNet-Lite the later depthwise convs)."""
    anchors = {id(m) for m in model.expansion_modules}
    if not anchors:
        return []
    convs, seen_last, remaining = [], False, len(anchors)
    for module in model.trunk.modules():
        if id(module) in anchors:
            remaining -= 1
            seen_last = remaining == 0
            continue
        if seen_last and isinstance(module, nn.Conv2d) and max(module.kernel_size) > 1:
            convs.append(module)
    return convs


@contextlib.contextmanager
def expansion(model: CamModel, enabled: bool, dilate: bool = False):
    """``model.expansion(enabled)`` (stride 1 in the last downsampling stage: 2x the activation resolution);
    ``dilate`` also gives every later convolution dilation 2 (DeepLab-style "atrous" expansion), so those
    layers see the receptive field they were trained with instead of a twice smaller one. Convolutions with
    explicit symmetric padding get padding ``dilation * (k - 1) / 2``; ones that pad themselves ("same"
    padding computed in forward, e.g. EfficientNet-Lite's) are left to do so. Restored on exit."""
    with model.expansion(enabled):
        if not (enabled and dilate and model.supports_expansion):
            yield model
            return
        convs = dilated_convs(model)
        saved = [(c.dilation, c.padding) for c in convs]
        try:
            for c in convs:
                c.dilation = tuple(2 * d for d in c.dilation)
                if isinstance(c.padding, tuple) and any(c.padding):  # explicit padding: keep the output size
                    c.padding = tuple((k - 1) * d // 2 for k, d in zip(c.kernel_size, c.dilation))
            yield model
        finally:
            for c, (d, p) in zip(convs, saved):
                c.dilation, c.padding = d, p


# ------------------------------------------------------------------------------------------------
# The driver
# ------------------------------------------------------------------------------------------------
def run_cam(model: CamModel, images: Tensor, score: ScoreFn, weights: WeightFn = weights_for(True),
            iters: int = 1, expand: bool = False, early_exit_tol: float | None = None,
            fill: str | tuple = "mean", min_batch: int = 1, closed_form: Optional[bool] = None,
            sub_batch: Optional[int] | str = "auto", dilate: bool = False, precision: str = "fp32") -> CamResult:
    """Iterative CAM masks (B,1,H,W) in [0,1] for images (B,3,H,W) in [0,1]; masks come at the input size.

    score / weights: see the module doc; iters: T; expand: stride-1 last stage (inference-only expansion
    trick); early_exit_tol / fill: see the module doc; min_batch: the smallest batch the score makes
    sense for (2 for contrastive scores); dilate: with ``expand``, dilate the later convolutions
    (:func:`expansion`); sub_batch: images per backbone forward ("auto":
    :func:`default_sub_batch`; None: the whole batch) — the negatives are always the whole batch;
    precision: the backbone forward's autocast (:data:`PRECISIONS`; the CAM itself stays in the images' dtype).
    Raises ValueError for bad inputs (an unknown ``precision`` included).
    """
    _check_inputs(images, iters, early_exit_tol, min_batch)
    autocast = check_precision(precision)
    batch, _, height, width = images.shape
    device = images.device
    weight = next(model.parameters(), None)
    if weight is not None and weight.device != device:
        raise ValueError(f"images are on {device} but the model is on {weight.device}: move one of them")
    images = images.to(weight.dtype if weight is not None else images.dtype)
    fill_rgb = resolve_fill(fill, model, device).to(images.dtype)
    if sub_batch == "auto":
        sub_batch = default_sub_batch(device)
    elif sub_batch is not None and (not isinstance(sub_batch, int) or sub_batch < 1):
        raise ValueError(f'sub_batch must be a positive int, None or "auto"; got {sub_batch!r}')

    with torch.no_grad(), _eval_mode(model), expansion(model, expand, dilate):
        mask = torch.zeros(batch, 1, height, width, device=device, dtype=images.dtype)
        encoded_with = mask.clone()  # the mask each cached activation was computed from
        iterations = torch.zeros(batch, dtype=torch.long, device=device)
        acts: Optional[Activations] = None
        history: List[Tensor] = []
        for t in range(iters):
            if t == 0 or early_exit_tol is None:
                todo = torch.ones(batch, dtype=torch.bool, device=device)
            else:
                todo = (mask - encoded_with).abs().flatten(1).amax(1) > early_exit_tol
            if bool(todo.all()):
                masked = images if t == 0 else images * (1 - mask) + fill_rgb * mask
                acts = batched_activations(model, masked, sub_batch, autocast)
                encoded_with = mask.clone()
            elif bool(todo.any()):
                idx = todo.nonzero().squeeze(1)
                part = mask[idx]
                new = batched_activations(model, images[idx] * (1 - part) + fill_rgb * part, sub_batch, autocast)
                acts = acts.index_copy(idx, new)  # out of place: history entries may share memory
                encoded_with = encoded_with.index_copy(0, idx, part)
            iterations += todo.long()

            z, grad = score_gradient(model, acts, score, history, closed_form)
            history.append(z)
            cam = cam_from_weights(acts.maps, weights(grad, acts.maps), size=(height, width))
            mask = cam if t == 0 else torch.maximum(mask, cam)
    return CamResult(mask=mask, iterations=iterations)


def contracam(model: CamModel, images: Tensor, iters: int = 10, nsr: bool = True, temperature: float = 0.2,
              expand: bool = False, early_exit_tol: float | None = None,
              fill: str | tuple = "mean", sub_batch: Optional[int] | str = "auto", dilate: bool = False,
              precision: str = "fp32") -> CamResult:
    """ContraCAM (paper Sec. 2.2): :func:`run_cam` with the contrastive score (Eq. 1/3, temperature tau)
    and ReLU-mean weights (``nsr=False``: plain mean, the ablation). Needs >= 2 images (the negatives).

    iters: T (10 for boxes/segmentation, 1 for BG-Mixup masks); precision: the backbone forward's autocast
    (:data:`PRECISIONS`).

    Returns :class:`CamResult`: masks (B,1,H,W) float in [0,1] at the input size, forwards per image.

    Raises:
        ValueError: ``temperature <= 0``, or the inputs :func:`run_cam` refuses (not (B,3,H,W) float in [0,1],
            fewer than 2 images, ``iters < 1``).
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    return run_cam(model, images, ContrastiveScore(temperature), weights_for(nsr), iters=iters, expand=expand,
                   early_exit_tol=early_exit_tol, fill=fill, min_batch=2, sub_batch=sub_batch, dilate=dilate,
                   precision=precision)
