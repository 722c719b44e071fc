"""Feature extractors from a model spec: a zoo name, a checkpoint file, or ``random:<resnet>``.

Every extractor maps normalized images ``(B, 3, H, W)`` to pooled features ``(B, D)``.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from occon_plugin.zoo.convert import build_backbone, load_checkpoint
from occon_plugin.zoo.registry import ZooError, fetch, load_manifest


class EfficientNetFeatures(nn.Module):
    """EfficientNet(-Lite) trunk + global average pooling (the classifier ``_fc`` is not used)."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.extract_features(x).mean(dim=(2, 3))


def _efficientnet_lite0(weights_path: Path) -> nn.Module:
    from efficientnet_lite_pytorch import EfficientNet

    return EfficientNetFeatures(EfficientNet.from_pretrained("efficientnet-lite0", weights_path=str(weights_path)))


def load_feature_model(spec: str, manifest=None, cache=None, use_momentum: bool = False) -> tuple[nn.Module, dict]:
    """``(model, info)`` for ``spec``: a zoo entry name, a checkpoint path (any layout ``load_checkpoint``
    reads), or ``random:resnet18`` (random init, for smoke runs only)."""
    if spec.startswith("random:"):
        import torchvision

        arch = spec.split(":", 1)[1]
        if not hasattr(torchvision.models, arch):
            raise ValueError(f"model={spec}: torchvision has no architecture {arch!r}")
        model = getattr(torchvision.models, arch)(weights=None)
        model.fc = nn.Identity()
        return model, {"model": spec, "arch": arch, "weights": "random init (smoke runs only)"}
    entries = load_manifest(manifest)
    if spec in entries:
        entry = entries[spec]
        path = fetch(entry, cache)
        if entry.architecture == "efficientnet-lite0":
            return _efficientnet_lite0(path), {"model": spec, "arch": entry.architecture, "weights": path.name}
        d = load_checkpoint(path, use_momentum=use_momentum)
        return build_backbone(d), {"model": spec, "arch": d["arch"], "weights": path.name}
    path = Path(spec).expanduser()
    if not path.is_file():
        raise ZooError(f"model={spec!r} is neither a zoo entry ({', '.join(sorted(entries))}), a checkpoint file, "
                       "nor random:<torchvision resnet>")
    d = load_checkpoint(path, use_momentum=use_momentum)
    return build_backbone(d), {"model": path.name, "arch": d["arch"], "weights": path.name, **{
        f"meta.{k}": v for k, v in d["meta"].items()}}
