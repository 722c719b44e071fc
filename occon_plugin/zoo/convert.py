"""Read any supported checkpoint layout into one "occon checkpoint" dict, and write it.

The occon checkpoint (``format: occon-ckpt/1``)::

    {"format": "occon-ckpt/1",
     "arch": "resnet18",                 # torchvision ResNet name
     "backbone": {...},                  # torchvision-ResNet state_dict, no prefix, no ``fc``
     "projector": {...} | None,          # state_dict of nn.Sequential(Linear, ReLU, Linear)
     "projector_dims": [in, hidden, out] | None,
     "meta": {...}}                      # JSON-able facts about the source

Sources, recognised by key layout (never by file name):

* solo-learn 1.0.2 Lightning checkpoints: ``encoder.*``, ``projector.*``, ``momentum_encoder.*``;
* the paper authors' Lightning checkpoints (alinlab/object-aware-contrastive): ``encoder.*``,
  ``projector.*``, ``_encoder.*``, ``_projector.*``;
* facebookresearch/moco checkpoints: ``module.encoder_q.*`` (head ``encoder_q.fc.*``), ``encoder_k.*``;
* solo-learn main: ``backbone.*``, ``projector.*``, ``momentum_backbone.*``;
* a bare torchvision ResNet state_dict (``conv1.weight``, ``layer1.*``, ...);
* occon checkpoints themselves.

Lightning checkpoints pickle their hyper-parameters, which may name classes of modules that do
not exist here (the authors' code). Those are never imported: every global the checkpoint names
beyond torch's ``weights_only`` allow-list is replaced by an inert stand-in before loading.

Projectors of the form Linear-BatchNorm1d-ReLU-Linear (BYOL, the authors' MoCo) are stored with the
BatchNorm folded into the first Linear: exact in eval mode (running statistics, eps 1e-5), which is
how CAMs and features are computed. Other projector layouts are dropped (``meta.projector_dropped``).
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Dict, Optional

import torch

from occon_plugin.atomic import atomic_path
from occon_plugin.errors import CheckpointError  # noqa: F401  (re-exported)

# Layouts written by code outside solo-learn; solo-learn's own come from the host adapter.
EXTRA_LAYOUTS: Dict[str, Dict[str, str]] = {
    "authors-2021": {"backbone": "encoder.", "momentum_backbone": "_encoder.",
                     "projector": "projector.", "momentum_projector": "_projector."},
    # facebookresearch/moco (the paper's MoCov2 baseline): the MLP head is the ResNet's ``fc``
    "moco-official": {"backbone": "encoder_q.", "momentum_backbone": "encoder_k.",
                      "projector": "encoder_q.fc.", "momentum_projector": "encoder_k.fc."},
}


def checkpoint_layouts() -> Dict[str, Dict[str, str]]:
    """The host's solo-learn layouts first, then :data:`EXTRA_LAYOUTS` (name -> role -> key prefix).

    Imported on first use: the host adapter imports solo-learn and Lightning, which evaluation and
    localization never need otherwise.
    """
    from occon_plugin.host import CHECKPOINT_LAYOUTS

    return {**CHECKPOINT_LAYOUTS, **EXTRA_LAYOUTS}
BN_EPS = 1e-5  # BatchNorm1d default; eps is not part of a state_dict
FORMAT = "occon-ckpt/1"
# torchvision ResNet depth by (blocks in layer3, bottleneck?)
_RESNETS = {(2, False): "resnet18", (6, False): "resnet34", (6, True): "resnet50",
            (23, True): "resnet101", (36, True): "resnet152"}
_MLP_KEYS = {"0.weight", "0.bias", "2.weight", "2.bias"}  # Linear, ReLU, Linear
_BN_KEYS = {"1.weight", "1.bias", "1.running_mean", "1.running_var"}  # Linear, BN, ReLU, Linear


class _StandIn:
    """Takes the place of a pickled class from a module that must not be imported."""

    def __init__(self, *args, **kwargs):
        self.args, self.kwargs = args, kwargs

    def __setstate__(self, state):
        self.state = state


def _stand_in(qualified_name: str) -> type:
    return type(qualified_name.rsplit(".", 1)[-1], (_StandIn,), {"__module__": "occon_stand_in"})


def _torch_load(path: Path) -> Any:
    """``torch.load(weights_only=True)``, with inert stand-ins for unknown pickled globals."""
    try:
        unknown = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
    except Exception:  # legacy (non-zip) format: torch's own weights_only checks still apply
        unknown = []
    stand_ins = [(_stand_in(name), name) for name in unknown]
    try:
        with torch.serialization.safe_globals(stand_ins):
            return torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as err:
        raise CheckpointError(f"{path}: cannot be read as a torch checkpoint ({type(err).__name__}: {err})") from err


def _sub_dict(state: Dict[str, Any], prefix: str) -> Dict[str, torch.Tensor]:
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def infer_resnet_arch(backbone: Dict[str, torch.Tensor], where: str = "checkpoint") -> str:
    """The torchvision ResNet name of a backbone state_dict (from its block structure)."""
    if "conv1.weight" not in backbone or not any(k.startswith("layer4.") for k in backbone):
        raise CheckpointError(f"{where}: the backbone is not a ResNet (no conv1.weight / layer4.*); "
                              f"occon-ckpt/1 holds torchvision ResNets. First keys: {sorted(backbone)[:5]}")
    blocks = {int(m.group(1)) for k in backbone if (m := re.match(r"layer3\.(\d+)\.", k))}
    bottleneck = "layer1.0.conv3.weight" in backbone
    arch = _RESNETS.get((len(blocks), bottleneck))
    if arch is None:
        raise CheckpointError(f"{where}: unknown ResNet depth ({len(blocks)} blocks in layer3, "
                              f"bottleneck={bottleneck})")
    return arch


def fold_bn_projector(state: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Linear(-bias)-BN-ReLU-Linear(-bias) state -> the equal (in eval mode) Linear-ReLU-Linear state."""
    w0 = state["0.weight"].double()
    b0 = state.get("0.bias", torch.zeros(w0.shape[0], dtype=w0.dtype)).double()
    scale = state["1.weight"].double() / torch.sqrt(state["1.running_var"].double() + BN_EPS)
    shift = state["1.bias"].double() - scale * state["1.running_mean"].double()
    w3 = state["3.weight"]
    b3 = state.get("3.bias", torch.zeros(w3.shape[0], dtype=w3.dtype))
    dtype = state["0.weight"].dtype
    return {"0.weight": (scale[:, None] * w0).to(dtype), "0.bias": (scale * b0 + shift).to(dtype),
            "2.weight": w3.clone(), "2.bias": b3.clone()}


def _projector(state: Dict[str, torch.Tensor], meta: Dict[str, Any]):
    if not state:
        return None, None
    keys = set(state) - {"1.num_batches_tracked"}
    if keys == _MLP_KEYS:
        state = dict(state)
    elif _BN_KEYS <= keys and {"0.weight", "3.weight"} <= keys and keys <= _BN_KEYS | {
            "0.weight", "0.bias", "3.weight", "3.bias"}:
        state = fold_bn_projector(state)
        meta["projector_bn_folded"] = True
    else:
        meta["projector_dropped"] = f"layout {sorted(state)} is neither Linear-ReLU-Linear nor Linear-BN-ReLU-Linear"
        return None, None
    w0, w2 = state["0.weight"], state["2.weight"]
    return state, [int(w0.shape[1]), int(w0.shape[0]), int(w2.shape[0])]


def _json_able(value: Any) -> bool:
    return isinstance(value, (str, int, float, bool)) or value is None


def _source_meta(ckpt: Dict[str, Any], path: Path) -> Dict[str, Any]:
    meta: Dict[str, Any] = {"source_file": path.name}
    for key in ("epoch", "global_step", "pytorch-lightning_version"):
        if _json_able(ckpt.get(key)) and key in ckpt:
            meta[key] = ckpt[key]
    hparams = ckpt.get("hyper_parameters")
    if isinstance(hparams, dict):
        for key in ("method", "encoder", "backbone", "max_epochs", "batch_size", "dataset"):
            if key in hparams and _json_able(hparams[key]):
                meta[f"hparams.{key}"] = hparams[key]
    return meta


def _detect_layout(state: Dict[str, Any], path: Path) -> tuple[str, str]:
    """(layout name, backbone prefix) of a flat state_dict: the layout whose prefixes cover most keys."""
    def covered(prefixes: Dict[str, str]) -> int:
        if not any(k.startswith(prefixes["backbone"]) for k in state):
            return 0
        return sum(any(k.startswith(p) for p in prefixes.values()) for k in state)

    layouts = checkpoint_layouts()
    scores = {name: covered(prefixes) for name, prefixes in layouts.items()}
    best = max(scores, key=scores.get)  # first of equals: the host's own layouts come first
    if scores[best] > 0:
        return best, layouts[best]["backbone"]
    if "conv1.weight" in state:
        return "torchvision", ""
    raise CheckpointError(
        f"{path}: no known key layout; expected keys starting with one of "
        f"{sorted({p['backbone'] for p in layouts.values()})} or a bare torchvision ResNet "
        f"(conv1.weight, layer1.*). First keys found: {sorted(state)[:8]}")


def validate_occon_checkpoint(d: Any, where: str = "checkpoint") -> Dict[str, Any]:
    """Raise :class:`CheckpointError` naming the problem unless ``d`` is a well-formed occon dict."""
    if not isinstance(d, dict) or d.get("format") != FORMAT:
        raise CheckpointError(f"{where}: not an occon checkpoint (format must be {FORMAT!r})")
    for key in ("arch", "backbone", "projector", "projector_dims", "meta"):
        if key not in d:
            raise CheckpointError(f"{where}: occon checkpoint lacks the key {key!r}")
    if not isinstance(d["backbone"], dict) or not d["backbone"]:
        raise CheckpointError(f"{where}: 'backbone' must be a non-empty state_dict")
    if (d["projector"] is None) != (d["projector_dims"] is None):
        raise CheckpointError(f"{where}: 'projector' and 'projector_dims' must both be set or both be None")
    return d


def load_checkpoint(path, use_momentum: bool = False) -> Dict[str, Any]:
    """Load ``path`` (any supported layout) as an occon checkpoint dict.

    ``use_momentum=True`` takes the momentum (key) encoder and projector instead of the online ones.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    ckpt = _torch_load(path)
    if isinstance(ckpt, dict) and ckpt.get("format") == FORMAT:
        return validate_occon_checkpoint(ckpt, str(path))
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"{path}: expected a dict (a state_dict or a Lightning checkpoint), "
                              f"found {type(ckpt).__name__}")
    state = ckpt["state_dict"] if isinstance(ckpt.get("state_dict"), dict) else ckpt
    state = {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}  # DDP
    layout, prefix = _detect_layout(state, path)
    meta = {"source_layout": layout, **_source_meta(ckpt, path)}
    if layout == "torchvision":
        backbone = {k: v for k, v in state.items() if not k.startswith("fc.")}
        projector_state: Dict[str, torch.Tensor] = {}
    else:
        prefixes = checkpoint_layouts()[layout]
        which = "momentum_" if use_momentum else ""
        backbone = _sub_dict(state, prefixes[which + "backbone"])
        if not backbone:
            raise CheckpointError(f"{path}: no {prefixes[which + 'backbone']}* keys (use_momentum={use_momentum})")
        backbone = {k: v for k, v in backbone.items() if not k.startswith("fc.")}
        projector_state = _sub_dict(state, prefixes[which + "projector"])
        meta["backbone_source"] = "momentum" if use_momentum else "online"
    arch = infer_resnet_arch(backbone, str(path))
    meta["cifar_stem"] = tuple(backbone["conv1.weight"].shape[-2:]) == (3, 3)
    if meta["cifar_stem"]:  # a 3x3 stem's padding is not in the weights: solo-learn uses 2, the authors 1
        meta["stem_padding"] = 1 if layout == "authors-2021" else 2
    projector, dims = _projector(projector_state, meta)
    return {"format": FORMAT, "arch": arch, "backbone": backbone, "projector": projector,
            "projector_dims": dims, "meta": meta}


def save_occon_checkpoint(d: Dict[str, Any], path) -> Path:
    """Validate and write an occon checkpoint atomically (temp file in the same folder + rename)."""
    path = Path(path)
    validate_occon_checkpoint(d, "save_occon_checkpoint")
    with atomic_path(path) as tmp:
        torch.save(d, tmp)
    return path


def build_backbone(d: Dict[str, Any]) -> torch.nn.Module:
    """A torchvision ResNet (``fc`` = Identity) with the checkpoint's backbone weights loaded strictly."""
    import torchvision

    validate_occon_checkpoint(d)
    model = getattr(torchvision.models, d["arch"])(weights=None)
    if d["meta"].get("cifar_stem"):
        model.conv1 = torch.nn.Conv2d(3, 64, kernel_size=3, stride=1,
                                      padding=int(d["meta"].get("stem_padding", 2)), bias=False)
        model.maxpool = torch.nn.Identity()
    model.fc = torch.nn.Identity()
    model.load_state_dict(d["backbone"], strict=True)
    return model


def build_projector(d: Dict[str, Any]) -> Optional[torch.nn.Module]:
    """The ``nn.Sequential(Linear, ReLU, Linear)`` projector, or None when the checkpoint has none."""
    validate_occon_checkpoint(d)
    if d["projector"] is None:
        return None
    n_in, hidden, out = d["projector_dims"]
    head = torch.nn.Sequential(torch.nn.Linear(n_in, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, out))
    head.load_state_dict(d["projector"], strict=True)
    return head
