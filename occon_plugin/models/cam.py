"""A model split for class activation maps: spatial activations, the rest of the network, the head.

::

    acts = model.activations(x)     # Activations: maps A (B,K,h,w) (+ what the rest of the network needs)
    pooled = model.pooled(acts)     # (B,F): everything after A up to the pooled feature (differentiable in A)
    z = model.head(pooled)          # (B,D): projector (identity when the model has none)

Where A sits, per family:

* CNNs (ResNet, EfficientNet-Lite, other conv nets): the last convolutional stage's output; ``pooled``
  is global average pooling, so dS/dA = dS/dpooled / (h*w) exactly (``pool_is_mean``: the engine
  uses this closed form).
* ViT: the patch tokens entering the last block's attention (``blocks[-1].norm1`` output), as a
  (B,K,h,w) map on the patch grid. The pooled feature (CLS token or mean token, then the final norm)
  depends on the last block's *outputs* only through attention, so the map is taken where the
  pooled token still reads every patch: the same choice as pytorch-grad-cam's ViT recipe. ``pooled``
  runs the rest of that block, the final norm and timm's pooling; the engine differentiates it with
  autograd (no closed form exists).
"""
from __future__ import annotations

import contextlib
import warnings
from dataclasses import dataclass
from typing import Callable, Iterator, Optional, Tuple

import torch
from torch import Tensor, nn

from occon_plugin.models.spec import ModelSpec


@dataclass
class Activations:
    """Spatial activations of a batch: ``maps`` (B,K,h,w) and ``extra`` batch-first tensors the rest of
    the network needs besides the maps (ViT: the prefix tokens and the residual stream); all share B."""

    maps: Tensor
    extra: Tuple[Tensor, ...] = ()

    def __len__(self) -> int:
        return self.maps.shape[0]

    def index_select(self, index: Tensor) -> "Activations":
        return Activations(self.maps.index_select(0, index), tuple(e.index_select(0, index) for e in self.extra))

    def index_copy(self, index: Tensor, new: "Activations") -> "Activations":
        """A copy with rows ``index`` replaced by ``new`` (out of place)."""
        return Activations(self.maps.index_copy(0, index, new.maps),
                           tuple(e.index_copy(0, index, n) for e, n in zip(self.extra, new.extra)))

    def detach(self) -> "Activations":
        return Activations(self.maps.detach(), tuple(e.detach() for e in self.extra))

    def with_maps(self, maps: Tensor) -> "Activations":
        return Activations(maps, self.extra)


def global_average_pool(acts: Activations) -> Tensor:
    """(B,K,h,w) -> (B,K)."""
    return acts.maps.mean(dim=(2, 3))


class CamModel(nn.Module):
    """Inference model split for CAM; images in [0,1] are normalized inside with the spec's constants.

    ``expansion()`` sets stride 1 in the last downsampling stage inside a with-block (the inference-only
    "expansion trick": 224 -> 14x14 activations instead of 7x7) and restores the strides on exit;
    on a model without such a stage (ViT) it warns and changes nothing.
    """

    def __init__(self, spec: ModelSpec, trunk: nn.Module, extract: Callable[[nn.Module, Tensor], Activations],
                 head: Optional[nn.Module], expansion_modules: Optional[list] = None,
                 tail: Optional[Callable[[nn.Module, Activations], Tensor]] = None,
                 tail_modules: Optional[nn.Module] = None):
        # ``extract(trunk, x)`` and ``tail(trunk, acts)`` receive the trunk as an argument (never a closure
        # over it), so ``copy.deepcopy(model)`` and ``model.to(...)`` of a copy run the copy's own weights.
        super().__init__()
        self.spec = spec
        self.trunk = trunk
        self._extract = extract
        self._tail = tail or (lambda trunk, acts: global_average_pool(acts))
        self.pool_is_mean = tail is None
        self.projector = head if head is not None else nn.Identity()
        self.tail_modules = tail_modules
        self.register_buffer("_mean", torch.tensor(spec.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("_std", torch.tensor(spec.std).view(1, 3, 1, 1), persistent=False)
        self._expansion_modules = expansion_modules

    # -- identity --------------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def family(self) -> str:
        return self.spec.family

    @property
    def mean(self) -> Tuple[float, float, float]:
        return self.spec.mean

    @property
    def std(self) -> Tuple[float, float, float]:
        return self.spec.std

    @property
    def supports_expansion(self) -> bool:
        return bool(self._expansion_modules)

    @property
    def expansion_modules(self) -> list:
        """The stride-2 layers the expansion trick sets to stride 1 (empty when there are none)."""
        return list(self._expansion_modules or [])

    # -- the split -------------------------------------------------------------------------------
    def normalize(self, x: Tensor) -> Tensor:
        """(B,3,H,W) in [0,1] -> the normalized input the weights expect.

        Raises:
            ValueError: ``x`` is not (B,3,H,W).
        """
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"{self.name}: expected images of shape (B,3,H,W), got {tuple(x.shape)}")
        return (x - self._mean) / self._std

    def activations(self, x: Tensor) -> Activations:
        """(B,3,H,W) in [0,1] -> :class:`Activations` (maps (B,K,h,w))."""
        return self._extract(self.trunk, self.normalize(x))

    def features(self, x: Tensor) -> Tensor:
        """(B,3,H,W) in [0,1] -> the activation maps A (B,K,h,w)."""
        return self.activations(x).maps

    def pooled(self, acts: Activations) -> Tensor:
        """Activations -> the pooled feature (B,F) the projector reads (differentiable in ``acts.maps``)."""
        return self._tail(self.trunk, acts)

    @staticmethod
    def pool(maps: Tensor) -> Tensor:
        """Global average pooling (B,K,h,w) -> (B,K) (what ``pooled`` is for CNNs)."""
        return maps.mean(dim=(2, 3))

    def head(self, pooled: Tensor) -> Tensor:
        """(B,F) -> z (B,D); identity when the model has no projector."""
        return self.projector(pooled)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.pooled(self.activations(x)))

    @contextlib.contextmanager
    def expansion(self, enabled: bool = True) -> Iterator["CamModel"]:
        """Stride 1 in the last downsampling stage while inside the block (no-op if not enabled)."""
        if not enabled:
            yield self
            return
        if not self._expansion_modules:
            warnings.warn(f"{self.name} ({self.family}) has no downsampling stage to expand: the expansion trick "
                          "is skipped (activations keep their resolution)", RuntimeWarning, stacklevel=3)
            yield self
            return
        saved = [module.stride for module in self._expansion_modules]
        try:
            for module in self._expansion_modules:
                module.stride = _unit_stride_like(module.stride)
            yield self
        finally:
            for module, stride in zip(self._expansion_modules, saved):
                module.stride = stride


def _unit_stride_like(stride):
    """Stride 1 in the same type the module stored (int, tuple or list)."""
    if isinstance(stride, int):
        return 1
    return type(stride)(1 for _ in stride)


def _has_stride_two(module: nn.Module) -> bool:
    stride = getattr(module, "stride", None)
    if stride is None or not isinstance(module, (nn.Conv2d, nn.AvgPool2d, nn.MaxPool2d)):
        return False
    return any(s == 2 for s in ((stride,) if isinstance(stride, int) else stride))


# ------------------------------------------------------------------------------------------------
# Splits per family
# ------------------------------------------------------------------------------------------------
def resnet_expansion_modules(resnet: nn.Module) -> list:
    """The stride-2 layers of the first block of layer4 (conv1 or conv2, and the downsample path).

    3x3 convs there have padding 1 and the shortcut is 1x1 (or an avg-pool in ResNet-D), so stride 1
    keeps both branches at the same size.

    Raises:
        ValueError: ``layer4[0]`` has no stride-2 layer.
    """
    modules = [m for m in resnet.layer4[0].modules() if _has_stride_two(m)]
    if not modules:
        raise ValueError("layer4[0] of this ResNet has no stride-2 layer: nothing to expand")
    return modules


def resnet_cam_model(spec: ModelSpec, resnet: nn.Module, head: Optional[nn.Module]) -> CamModel:
    """torchvision-style ResNet (conv1, bn1, relu, maxpool, layer1..4); maps = layer4 output."""
    return CamModel(spec, resnet, _resnet_extract, head, resnet_expansion_modules(resnet))


def _resnet_extract(resnet: nn.Module, x: Tensor) -> Activations:
    x = resnet.maxpool(resnet.relu(resnet.bn1(resnet.conv1(x))))
    return Activations(resnet.layer4(resnet.layer3(resnet.layer2(resnet.layer1(x)))))


def efficientnet_lite_cam_model(spec: ModelSpec, net: nn.Module, head: Optional[nn.Module]) -> CamModel:
    """efficientnet-lite-pytorch EfficientNet; maps = ``extract_features`` (head conv output).

    Expansion: the depthwise conv of the last stride-2 MBConv block (built with dynamic 'same' padding, so
    the padding follows the stride; the block has no skip connection since its channels change).
    """
    strided = [block._depthwise_conv for block in net._blocks if _has_stride_two(block._depthwise_conv)]
    return CamModel(spec, net, lambda trunk, x: Activations(trunk.extract_features(x)), head, strided[-1:])


def conv_features_cam_model(spec: ModelSpec, net: nn.Module, features: Optional[str],
                            head: Optional[nn.Module], expansion: Optional[list] = None) -> CamModel:
    """Any CNN whose spatial maps (B,K,h,w) are ``net(x)`` (``features=None``) or ``getattr(net, features)(x)``
    (e.g. ``"features"`` for torchvision's VGG/MobileNet/EfficientNet); pooled = global average pooling."""
    if features is None:
        return CamModel(spec, net, lambda trunk, x: Activations(trunk(x)), head, expansion)
    return CamModel(spec, net, lambda trunk, x: Activations(getattr(trunk, features)(x)), head, expansion)


def vit_cam_model(spec: ModelSpec, vit: nn.Module, head: Optional[nn.Module]) -> CamModel:
    """timm VisionTransformer; maps = patch tokens of ``blocks[-1].norm1`` on the patch grid (see module doc).

    ``extra`` = (prefix tokens of that norm's output (B,P,K), the residual stream entering the block (B,P+N,K)).
    """
    def extract(vit: nn.Module, x: Tensor) -> Activations:
        last, n_prefix = vit.blocks[-1], int(vit.num_prefix_tokens)
        tokens = vit.patch_embed(x)
        if tokens.dim() == 4:  # dynamic_img_size: (B,h,w,K)
            h, w = tokens.shape[1:3]
        else:
            h, w = vit.patch_embed.grid_size
        tokens = vit.norm_pre(vit.patch_drop(vit._pos_embed(tokens)))
        for block in vit.blocks[:-1]:
            tokens = block(tokens)
        normed = last.norm1(tokens)
        patches = normed[:, n_prefix:]
        maps = patches.transpose(1, 2).reshape(patches.shape[0], patches.shape[2], h, w)
        return Activations(maps, (normed[:, :n_prefix], tokens))

    def tail(vit: nn.Module, acts: Activations) -> Tensor:
        last = vit.blocks[-1]
        prefix, residual = acts.extra
        normed = torch.cat([prefix, acts.maps.flatten(2).transpose(1, 2)], dim=1)
        tokens = residual + last.drop_path1(last.ls1(last.attn(normed)))
        tokens = tokens + last.drop_path2(last.ls2(last.mlp(last.norm2(tokens))))
        return vit.forward_head(vit.norm(tokens), pre_logits=True)

    return CamModel(spec, vit, extract, head, None, tail=tail)


def timm_features_cam_model(spec: ModelSpec, net: nn.Module, head: Optional[nn.Module],
                            expansion: Optional[list] = None) -> CamModel:
    """A timm model with a spatial ``forward_features`` (CNNs, ConvNeXt, Swin): maps = that output (NCHW;
    NHWC outputs are permuted), ``pooled`` = timm's own ``forward_head(pre_logits=True)`` (pooling, and the
    norm some models apply after it), differentiated by autograd."""
    nhwc = getattr(net, "output_fmt", "NCHW") == "NHWC"

    def extract(trunk: nn.Module, x: Tensor) -> Activations:
        out = trunk.forward_features(x)
        return Activations(out.permute(0, 3, 1, 2) if nhwc else out)

    def tail(trunk: nn.Module, acts: Activations) -> Tensor:
        return trunk.forward_head(acts.maps.permute(0, 2, 3, 1) if nhwc else acts.maps, pre_logits=True)

    return CamModel(spec, net, extract, head, expansion, tail=tail)
