"""Read any supported checkpoint into one "occon checkpoint" record, and write it.

The record (``format: occon-ckpt/2``)::

    {"format": "occon-ckpt/2",
     "family": "resnet" | "vit" | "swin" | "convnext",
     "arch": "resnet18" | "resnet50" | "vit_small" | "swin_tiny" | ...,
     "arch_kwargs": {...},               # resnet: cifar_stem, stem_padding; vit: patch_size, embed_dim, depth, ...
     "backbone": {...},                  # state_dict of the backbone (torchvision ResNet / timm names), no classifier
     "projector": {...} | None,          # state_dict of an nn.Sequential MLP (Linear / BatchNorm1d / activation)
     "projector_activation": "relu" | "gelu",
     "predictor": {...} | None,          # BYOL-style predictor (same MLP form), online weights only
     "normalization": {"mean": [...], "std": [...], "source": "..."},
     "meta": {...}}                      # JSON-able facts about the source

``occon-ckpt/1`` files (ResNet + Linear-ReLU-Linear projector, written by earlier versions) are read too.
Families: ``resnet``, ``vit``, ``swin``, ``convnext`` (see ``docs/zoo.md``).

Sources, recognised by key layout (never by file name; table in :mod:`occon_plugin.models.layouts`):
solo-learn 1.0.2 (``encoder.*``) and main (``backbone.*``) Lightning checkpoints and the plugin's own
``final.ckpt``; the paper authors' (``encoder.*``, ``_encoder.*``); facebookresearch/moco
(``encoder_q.*``); a bare torchvision ResNet or timm ViT / Swin / ConvNeXt state_dict. Wrapper prefixes ``module.`` (DDP)
and ``_orig_mod.`` (``torch.compile``) are removed first, wherever they sit in a key.

Lightning checkpoints pickle their hyper-parameters, which may name classes of modules that are not
installed (the authors' code, solo-learn itself when it is absent). Those are never imported: every
global beyond torch's ``weights_only`` allow-list is replaced by an inert stand-in before loading.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import torch

from occon_plugin.atomic import atomic_torch_save
from occon_plugin.errors import CheckpointError
from occon_plugin.models.layouts import (ALTERNATIVE_PROJECTORS, CHECKPOINT_LAYOUTS, strip_wrapper_prefixes)
from occon_plugin.models.normalization import (IMAGENET, IMAGENET_SOLO_1_0_2, Normalization,
                                               normalization_for_dataset, plugin_pretrain_normalization)

FORMAT = "occon-ckpt/2"
FORMAT_V1 = "occon-ckpt/1"
SUPPORTED_ARCHITECTURES = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "wide_resnet50_2",
                           "wide_resnet101_2", "vit_tiny", "vit_small", "vit_base", "vit_large", "swin_tiny",
                           "swin_small", "swin_base", "swin_large", "convnext_tiny", "convnext_small",
                           "convnext_base", "convnext_large")
SUPPORTED_TEXT = ("ResNet-18/34/50/101/152 and Wide-ResNet-50/101-2 (torchvision names, ImageNet or CIFAR stem), "
                  "ViT (timm VisionTransformer: solo-learn's vit_tiny/small/base/large), Swin and ConvNeXt "
                  "(timm: solo-learn's swin_* / convnext_*)")
# torchvision ResNet by (blocks per stage, bottleneck, layer1 width multiplier)
_RESNETS = {((2, 2, 2, 2), False, 1): "resnet18", ((3, 4, 6, 3), False, 1): "resnet34",
            ((3, 4, 6, 3), True, 1): "resnet50", ((3, 4, 23, 3), True, 1): "resnet101",
            ((3, 8, 36, 3), True, 1): "resnet152", ((3, 4, 6, 3), True, 2): "wide_resnet50_2",
            ((3, 4, 23, 3), True, 2): "wide_resnet101_2"}
# solo-learn's ViT names by width (all use 64-dim heads)
_VITS = {192: "vit_tiny", 384: "vit_small", 768: "vit_base", 1024: "vit_large"}
_VIT_HEADS = {"vit_tiny": 3, "vit_small": 6, "vit_base": 12, "vit_large": 16}
# solo-learn main builds MoCo v3's and MAE's ViTs with their own head counts (solo/backbones/vit/vit_mocov3.py,
# vit_mae.py: 12 heads up to vit_base, 16 for vit_large); 1.0.2 uses the default ViTs for every method.
_VIT_HEADS_MAIN_VARIANTS = {"mocov3": {"vit_tiny": 12, "vit_small": 12, "vit_base": 12, "vit_large": 16},
                            "mae": {"vit_tiny": 12, "vit_small": 12, "vit_base": 12, "vit_large": 16}}
# solo-learn's Swin / ConvNeXt names by (width, blocks per stage)
_SWINS = {(96, (2, 2, 6, 2)): "swin_tiny", (96, (2, 2, 18, 2)): "swin_small", (128, (2, 2, 18, 2)): "swin_base",
          (192, (2, 2, 18, 2)): "swin_large"}
_CONVNEXTS = {(96, (3, 3, 9, 3)): "convnext_tiny", (96, (3, 3, 27, 3)): "convnext_small",
              (128, (3, 3, 27, 3)): "convnext_base", (192, (3, 3, 27, 3)): "convnext_large"}
# Heads with GELU between their layers (solo-learn's DINO head); every other solo-learn MLP uses ReLU.
_GELU_METHODS = ("dino",)
_GELU_HEADS = ("head.mlp", "momentum_head.mlp")  # where DINO keeps its MLP (ALTERNATIVE_PROJECTORS)


# ------------------------------------------------------------------------------------------------
# Loading without importing foreign code
# ------------------------------------------------------------------------------------------------
class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
    """No checkpoint file at the given path (bad input: one line, exit 2 in the CLIs)."""


class _StandIn:
    """Takes the place of a pickled class from a module that must not be imported."""

    def __init__(self, *args, **kwargs):
        self.args, self.kwargs = args, kwargs

    def __setstate__(self, state):
        self.state = state


def _stand_in(qualified_name: str) -> type:
    return type(qualified_name.rsplit(".", 1)[-1], (_StandIn,), {"__module__": "occon_stand_in"})


def torch_load(path: Path) -> Any:
    """``torch.load(weights_only=True)``, with inert stand-ins for unknown pickled globals.

    Raises:
        CheckpointError: the file is missing, a folder, or not readable as a torch checkpoint (one line).
    """
    try:
        unknown = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
    except Exception:  # legacy (non-zip) format: torch's own weights_only checks still apply
        unknown = []
    stand_ins = [(_stand_in(name), name) for name in unknown]
    try:
        with torch.serialization.safe_globals(stand_ins):
            return torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as err:
        kind = _file_kind(path)
        if kind is not None:  # torch's own message would be about weights_only and pickle opcodes
            raise CheckpointError(f"{path}: is not a torch checkpoint ({kind}): give the .ckpt file training "
                                  f"wrote (final.ckpt / last.ckpt) or a torch .pt/.pth file") from err
        first = str(err).strip().split(". ")[0].split("\n")[0][:300]  # the cause, not torch's advice to unpickle
        raise CheckpointError(f"{path}: cannot be read as a torch checkpoint ({type(err).__name__}: {first})") from err


# the first bytes of files a checkpoint path is mistaken for: what the one-line error names
_MAGIC = ((b"\xff\xd8\xff", "a JPEG image"), (b"\x89PNG", "a PNG image"), (b"GIF8", "a GIF image"),
          (b"\x89HDF", "an HDF5 file (Keras?)"), (b"\x1f\x8b", "a gzip archive"))


def _file_kind(path: Path) -> Optional[str]:
    """What ``path`` holds when it is not in a torch format (zip archive or pickle), else None."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(512)
    except OSError:
        return None
    if head.startswith(b"PK\x03\x04") or head[:1] == b"\x80":  # torch's zip format / a pickle: torch's error
        return None
    if not head:
        return "an empty file"
    for magic, kind in _MAGIC:
        if head.startswith(magic):
            return kind
    if len(head) >= 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < 1 << 30:
        return "a safetensors file: load it with safetensors and save its state dict with torch.save"
    try:
        head.decode("utf-8")
        return "text"
    except UnicodeDecodeError:
        return "unknown data"


def _plain(value: Any, depth: int = 0) -> Any:
    """Dicts / DictConfigs / Namespaces (or inert stand-ins of them) as plain nested values; None if unknown."""
    if depth > 12:
        return None
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, dict):
        return {str(k): _plain(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v, depth + 1) for v in value]
    if isinstance(value, _StandIn):  # an unpickled-inertly OmegaConf node or argparse Namespace
        state = getattr(value, "state", None)
        if isinstance(state, dict):
            for inner in ("_content", "_val"):  # OmegaConf containers / value nodes
                if inner in state:
                    return _plain(state[inner], depth + 1)
            return _plain(state, depth + 1)
        return None
    if type(value).__name__ in ("DictConfig", "ListConfig"):
        try:
            from omegaconf import OmegaConf

            return OmegaConf.to_container(value, resolve=False)
        except Exception:
            return None
    if hasattr(value, "__dict__") and not isinstance(value, torch.Tensor):  # argparse.Namespace
        return {str(k): _plain(v, depth + 1) for k, v in vars(value).items()}
    return None


def _get(d: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(d, dict) or part not in d:
            return None
        d = d[part]
    return d


def checkpoint_hints(ckpt: Dict[str, Any]) -> Dict[str, Any]:
    """What a checkpoint says about itself: method, backbone name, dataset, CIFAR stem, normalization.

    Read from the plugin's ``occon`` record (``final.ckpt``), solo-learn main's ``hyper_parameters``
    (its Hydra cfg) or 1.0.2's (flat argparse keys). Missing facts are None.
    """
    hints: Dict[str, Any] = {}
    occon = _plain(ckpt.get("occon")) if isinstance(ckpt.get("occon"), dict) else None
    cfg = _get(occon, "cfg") if occon else None
    hp = _plain(ckpt.get("hyper_parameters"))
    if isinstance(hp, dict) and isinstance(hp.get("cfg"), dict):
        hp = hp["cfg"]
    for source in (cfg, hp):
        if not isinstance(source, dict):
            continue
        hints.setdefault("method", source.get("method"))
        backbone = source.get("backbone")
        name = backbone.get("name") if isinstance(backbone, dict) else (backbone or source.get("encoder"))
        hints.setdefault("backbone", name if isinstance(name, str) else None)
        kwargs = (backbone.get("kwargs") if isinstance(backbone, dict) else None) or source.get("backbone_args")
        hints.setdefault("backbone_kwargs", kwargs if isinstance(kwargs, dict) else {})
        data = source.get("data")
        dataset = data.get("dataset") if isinstance(data, dict) else source.get("dataset")
        hints.setdefault("dataset", dataset if isinstance(dataset, str) else None)
        mean, std = source.get("mean"), source.get("std")
        for aug in (source.get("augmentations") or []) if isinstance(source.get("augmentations"), list) else []:
            if isinstance(aug, dict) and aug.get("mean") is not None:
                mean, std = aug.get("mean"), aug.get("std")
        if isinstance(mean, list) and isinstance(std, list) and len(mean) == 3 and len(std) == 3:
            hints.setdefault("mean", mean)
            hints.setdefault("std", std)
    if occon:
        hints["method"] = occon.get("method") or hints.get("method")
        hints["backbone"] = occon.get("backbone") or hints.get("backbone")
        hints["written_by"] = "occon-plugin"
        if isinstance(occon.get("normalization"), dict):
            hints["normalization"] = occon["normalization"]
    return {k: v for k, v in hints.items() if v is not None}


def run_folder_hints(path: Path) -> Dict[str, Any]:
    """Hints from the ``args.json`` solo-learn's checkpointer (and the plugin) writes beside a checkpoint.

    solo-learn saves no hyper-parameters inside its checkpoints: the run's config (dataset, hence the
    normalization it trained with) is only there. A run of the plugin's own pipelines (its config has an
    ``occon`` section) normalized with :func:`~occon_plugin.models.normalization.plugin_pretrain_normalization`.
    """
    import json

    args = path.parent / "args.json"
    try:
        cfg = json.loads(args.read_text()) if args.is_file() else None
    except (OSError, ValueError):
        return {}
    if not isinstance(cfg, dict):
        return {}
    hints = checkpoint_hints({"hyper_parameters": cfg})
    if "occon" in cfg:
        hints["written_by"] = "occon-plugin"
        hints["normalization"] = plugin_pretrain_normalization(cfg).as_dict()
    hints["hints_from"] = args.name
    return hints


# ------------------------------------------------------------------------------------------------
# Layouts and architectures
# ------------------------------------------------------------------------------------------------
def _sub_dict(state: Dict[str, Any], prefix: str) -> Dict[str, torch.Tensor]:
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def _looks_like_backbone(state: Dict[str, Any]) -> bool:
    return ("conv1.weight" in state and any(k.startswith("layer4.") for k in state)) or (
        "patch_embed.proj.weight" in state and any(k.startswith(("blocks.", "layers.")) for k in state)) or (
        "stem.0.weight" in state and any(k.startswith("stages.") for k in state))


def detect_layout(state: Dict[str, Any], where: str) -> Tuple[str, Dict[str, str]]:
    """(layout name, role -> prefix) of a flat state_dict: the layout whose prefixes cover most keys.

    Raises:
        CheckpointError: no known layout matches (the message lists the supported ones).
    """
    def covered(prefixes: Dict[str, str]) -> int:
        if not any(k.startswith(prefixes["backbone"]) for k in state):
            return 0
        return sum(any(k.startswith(p) for p in prefixes.values()) for k in state)

    scores = {name: covered(prefixes) for name, prefixes in CHECKPOINT_LAYOUTS.items()}
    best = max(scores, key=scores.get)  # first of equals: solo-learn's own layouts come first
    if scores[best] > 0:
        return best, CHECKPOINT_LAYOUTS[best]
    if _looks_like_backbone(state):  # a bare backbone state_dict
        return ("torchvision" if "conv1.weight" in state else "timm"), {"backbone": ""}
    raise CheckpointError(
        f"{where}: no known key layout; expected keys starting with one of "
        f"{sorted({p['backbone'] for p in CHECKPOINT_LAYOUTS.values()})} or a bare torchvision ResNet "
        f"(conv1.weight, layer1.*) / timm ViT (patch_embed.*, blocks.*) state_dict. "
        f"First keys found: {sorted(state)[:8]}")


def infer_resnet(backbone: Dict[str, torch.Tensor], where: str) -> Tuple[str, Dict[str, Any]]:
    """``(arch, arch_kwargs)`` of a torchvision ResNet backbone state_dict (depth from its blocks, CIFAR stem).

    Raises:
        CheckpointError: the state_dict is not a ResNet this module can rebuild.
    """
    blocks = tuple(len({int(m.group(1)) for k in backbone if (m := re.match(rf"layer{i}\.(\d+)\.", k))})
                   for i in range(1, 5))
    bottleneck = "layer1.0.conv3.weight" in backbone
    width = 1
    if bottleneck:
        width = int(backbone["layer1.0.conv1.weight"].shape[0]) // 64
    arch = _RESNETS.get((blocks, bottleneck, width))
    if arch is None:
        raise CheckpointError(f"{where}: a ResNet with blocks per stage {blocks} (bottleneck={bottleneck}, "
                              f"width x{width}) is not a torchvision ResNet; supported: {SUPPORTED_TEXT}")
    cifar = tuple(backbone["conv1.weight"].shape[-2:]) == (3, 3)
    return arch, {"cifar_stem": cifar}


def infer_vit(backbone: Dict[str, torch.Tensor], where: str, name_hint: Optional[str],
              method: Optional[str] = None, layout: Optional[str] = None) -> Tuple[str, Dict[str, Any]]:
    """``(arch, arch_kwargs)`` of a timm VisionTransformer backbone state_dict (sizes from its shapes).

    Raises:
        CheckpointError: the state_dict is not a ViT this module can rebuild.
    """
    proj = backbone["patch_embed.proj.weight"]  # (D, 3, p, p)
    embed_dim, patch = int(proj.shape[0]), int(proj.shape[-1])
    depth = len({int(m.group(1)) for k in backbone if (m := re.match(r"blocks\.(\d+)\.", k))})
    class_token = "cls_token" in backbone
    reg_tokens = int(backbone["reg_token"].shape[1]) if "reg_token" in backbone else 0
    prefix = int(class_token) + reg_tokens
    pos = backbone.get("pos_embed")
    if pos is None:
        raise CheckpointError(f"{where}: a ViT without a learned pos_embed is not supported; supported: {SUPPORTED_TEXT}")
    n_pos = int(pos.shape[1])
    no_embed_class = False
    grid = n_pos - prefix
    side = int(round(grid ** 0.5))
    if side * side != grid:  # position embeddings for patches only (timm no_embed_class)
        side, no_embed_class = int(round(n_pos ** 0.5)), True
        if side * side != n_pos:
            raise CheckpointError(f"{where}: pos_embed with {n_pos} positions is not a square patch grid")
    arch = name_hint if name_hint in _VIT_HEADS else _VITS.get(embed_dim, f"vit_d{embed_dim}")
    # The head count is not in a state_dict: solo-learn's vit_* names (and, on main, the method) fix it;
    # other widths assume 64-dim heads.
    variant = str(method or "").lower().replace("_occon", "")
    table = _VIT_HEADS_MAIN_VARIANTS.get(variant, _VIT_HEADS) if layout == "solo-main" else _VIT_HEADS
    heads = table.get(arch, max(1, embed_dim // 64))
    kwargs = {"patch_size": patch, "embed_dim": embed_dim, "depth": depth, "num_heads": heads,
              "img_size": side * patch, "class_token": class_token, "reg_tokens": reg_tokens,
              "no_embed_class": no_embed_class,
              "global_pool": "avg" if "fc_norm.weight" in backbone or not class_token else "token",
              "fc_norm": "fc_norm.weight" in backbone,
              "final_norm": "norm.weight" in backbone or "fc_norm.weight" in backbone,
              "pre_norm": "norm_pre.weight" in backbone,
              "qkv_bias": "blocks.0.attn.qkv.bias" in backbone,
              "qk_norm": "blocks.0.attn.q_norm.weight" in backbone,
              "init_values": 1e-5 if "blocks.0.ls1.gamma" in backbone else None,
              "mlp_ratio": float(backbone["blocks.0.mlp.fc1.weight"].shape[0]) / embed_dim}
    if arch not in _VIT_HEADS:
        kwargs["num_heads_assumed"] = True
    return arch, kwargs


def _blocks_per_stage(backbone: Dict[str, torch.Tensor], stage: str) -> Tuple[int, ...]:
    counts: Dict[int, set] = {}
    for key in backbone:
        m = re.match(rf"{stage}\.(\d+)\.blocks\.(\d+)\.", key)
        if m:
            counts.setdefault(int(m.group(1)), set()).add(int(m.group(2)))
    return tuple(len(counts[i]) for i in sorted(counts))


def infer_swin(backbone: Dict[str, torch.Tensor], where: str) -> Tuple[str, Dict[str, Any]]:
    """timm SwinTransformer (solo-learn's ``swin_*``) from its weights; any input size (timm pads windows)."""
    depths = _blocks_per_stage(backbone, "layers")
    proj = backbone["patch_embed.proj.weight"]
    embed_dim, patch = int(proj.shape[0]), int(proj.shape[-1])
    tables = [backbone[f"layers.{i}.blocks.0.attn.relative_position_bias_table"] for i in range(len(depths))]
    windows = [(int(round(t.shape[0] ** 0.5)) + 1) // 2 for t in tables]
    window = max(windows)
    # timm shrinks a stage's window to its grid when the grid is smaller (a 32-pixel CIFAR Swin): the first
    # shrunk stage gives the training resolution; otherwise any size whose last grid holds a window does.
    shrunk = [i for i, w in enumerate(windows) if w < window]
    if shrunk:
        img_size = windows[shrunk[0]] * patch * 2 ** shrunk[0]
    else:
        img_size = max(224, window * patch * 2 ** (len(depths) - 1))
    kwargs = {"img_size": img_size, "patch_size": patch, "embed_dim": embed_dim, "depths": depths,
              "num_heads": tuple(int(t.shape[1]) for t in tables), "window_size": window,
              "mlp_ratio": float(backbone["layers.0.blocks.0.mlp.fc1.weight"].shape[0]) / embed_dim,
              "qkv_bias": "layers.0.blocks.0.attn.qkv.bias" in backbone}
    return _SWINS.get((embed_dim, depths), f"swin_d{embed_dim}"), kwargs


def infer_convnext(backbone: Dict[str, torch.Tensor], where: str) -> Tuple[str, Dict[str, Any]]:
    """timm ConvNeXt (solo-learn's ``convnext_*``) from its weights."""
    depths = _blocks_per_stage(backbone, "stages")
    dims = tuple(int(backbone[f"stages.{i}.blocks.0.conv_dw.weight"].shape[0]) for i in range(len(depths)))
    fc1 = backbone["stages.0.blocks.0.mlp.fc1.weight"]
    kwargs = {"depths": depths, "dims": dims, "patch_size": int(backbone["stem.0.weight"].shape[-1]),
              "kernel_sizes": int(backbone["stages.0.blocks.0.conv_dw.weight"].shape[-1]),
              "ls_init_value": 1e-6 if "stages.0.blocks.0.gamma" in backbone else None,
              "conv_mlp": fc1.dim() == 4, "use_grn": "stages.0.blocks.0.mlp.grn.weight" in backbone,
              "conv_bias": "stages.0.blocks.0.conv_dw.bias" in backbone,
              "head_norm_first": "norm_pre.weight" in backbone,
              "head_hidden_size": int(backbone["head.pre_logits.fc.weight"].shape[0])
              if "head.pre_logits.fc.weight" in backbone else None}
    return _CONVNEXTS.get((dims[0], depths), f"convnext_d{dims[0]}"), kwargs


def infer_architecture(backbone: Dict[str, torch.Tensor], where: str,
                       hints: Optional[Dict[str, Any]] = None) -> Tuple[str, str, Dict[str, Any]]:
    """(family, arch, arch_kwargs) of a backbone state_dict (from its key structure and shapes).

    Raises:
        CheckpointError: the backbone's keys and shapes match no supported architecture.
    """
    hints = hints or {}
    if "conv1.weight" in backbone and any(k.startswith("layer4.") for k in backbone):
        arch, kwargs = infer_resnet(backbone, where)
        return "resnet", arch, kwargs
    if "patch_embed.proj.weight" in backbone and any(k.startswith("blocks.") for k in backbone):
        arch, kwargs = infer_vit(backbone, where, hints.get("backbone"), hints.get("method"), hints.get("layout"))
        return "vit", arch, kwargs
    if "patch_embed.proj.weight" in backbone and any(k.startswith("layers.") for k in backbone):
        arch, kwargs = infer_swin(backbone, where)
        return "swin", arch, kwargs
    if "stem.0.weight" in backbone and any(k.startswith("stages.") for k in backbone):
        arch, kwargs = infer_convnext(backbone, where)
        return "convnext", arch, kwargs
    named = hints.get("backbone")
    what = f"the backbone {named!r}" if named else "this backbone"
    raise CheckpointError(f"{where}: {what} is not supported for localization and evaluation (first keys: "
                          f"{sorted(backbone)[:4]}); supported: {SUPPORTED_TEXT}. PoolFormer and solo-learn's "
                          "own Wide-ResNet (wide_resnet28w2/w8) are not supported yet")


# ------------------------------------------------------------------------------------------------
# MLP heads (projector / predictor): nn.Sequential of Linear, BatchNorm1d and activations
# ------------------------------------------------------------------------------------------------
def mlp_layers(state: Dict[str, torch.Tensor]) -> Optional[List[Tuple]]:
    """Layer list of an ``nn.Sequential`` MLP state_dict, or None if it is not one.

    Each entry: ``("linear", in, out, bias)``, ``("bn", features, affine)`` or ``("act",)`` for an index
    without parameters (an activation; which one is not in a state_dict).
    """
    groups: Dict[int, Dict[str, torch.Tensor]] = {}
    for key, value in state.items():
        m = re.fullmatch(r"(\d+)\.(weight|bias|running_mean|running_var|num_batches_tracked)", key)
        if m is None:
            return None
        groups.setdefault(int(m.group(1)), {})[m.group(2)] = value
    if not groups:
        return None
    layers: List[Tuple] = []
    for i in range(max(groups) + 1):
        g = groups.get(i)
        if g is None:
            layers.append(("act",))
        elif "running_mean" in g:
            layers.append(("bn", int(g["running_mean"].shape[0]), "weight" in g))
        elif "weight" in g and g["weight"].dim() == 2:
            layers.append(("linear", int(g["weight"].shape[1]), int(g["weight"].shape[0]), "bias" in g))
        else:
            return None
    if layers[0][0] != "linear":
        return None
    return layers


def build_mlp(state: Dict[str, torch.Tensor], activation: str = "relu") -> torch.nn.Sequential:
    """The ``nn.Sequential`` MLP of ``state`` with its weights loaded strictly (raises CheckpointError)."""
    layers = mlp_layers(state)
    if layers is None:
        raise CheckpointError(f"head keys {sorted(state)[:6]} are not an nn.Sequential of Linear/BatchNorm1d layers")
    act = {"relu": torch.nn.ReLU, "gelu": torch.nn.GELU}[activation]
    modules: List[torch.nn.Module] = []
    for layer in layers:
        if layer[0] == "linear":
            modules.append(torch.nn.Linear(layer[1], layer[2], bias=layer[3]))
        elif layer[0] == "bn":
            modules.append(torch.nn.BatchNorm1d(layer[1], affine=layer[2]))
        else:
            modules.append(act())
    head = torch.nn.Sequential(*modules)
    try:
        head.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise CheckpointError(f"head weights do not fit the MLP they describe: {err}") from None
    return head.eval()


def _head(state: Dict[str, torch.Tensor], meta: Dict[str, Any], role: str) -> Optional[Dict[str, torch.Tensor]]:
    if not state:
        return None
    if mlp_layers(state) is None:
        meta[f"{role}_dropped"] = f"layout {sorted(state)[:6]} is not an nn.Sequential of Linear/BatchNorm1d layers"
        return None
    return dict(state)


def _json_able(value: Any) -> bool:
    return isinstance(value, (str, int, float, bool)) or value is None


def _source_meta(ckpt: Dict[str, Any], path: Path, hints: Dict[str, Any]) -> Dict[str, Any]:
    meta: Dict[str, Any] = {"source_file": path.name}
    for key in ("epoch", "global_step", "pytorch-lightning_version"):
        if key in ckpt and _json_able(ckpt.get(key)):
            meta[key] = ckpt[key]
    for key in ("method", "backbone", "dataset", "written_by", "hints_from"):
        if key in hints and _json_able(hints[key]):
            meta[f"hparams.{key}"] = hints[key]
    return meta


def _normalization(layout: str, hints: Dict[str, Any]) -> Normalization:
    if isinstance(hints.get("normalization"), dict):
        return Normalization.from_dict(hints["normalization"])
    if hints.get("written_by") == "occon-plugin":  # the plugin's pipelines, before it recorded them
        return plugin_pretrain_normalization()
    if hints.get("mean") is not None or hints.get("dataset") not in (None, "custom", "imagenet", "imagenet100"):
        return normalization_for_dataset(hints.get("dataset"), hints.get("mean"), hints.get("std"))
    if layout == "solo-1.0.2" and hints.get("written_by") != "occon-plugin":
        return IMAGENET_SOLO_1_0_2
    return IMAGENET


# ------------------------------------------------------------------------------------------------
# The record
# ------------------------------------------------------------------------------------------------
def validate_record(d: Any, where: str = "checkpoint") -> Dict[str, Any]:
    """Raise :class:`CheckpointError` naming the problem unless ``d`` is a well-formed occon record."""
    if not isinstance(d, dict) or d.get("format") not in (FORMAT, FORMAT_V1):
        raise CheckpointError(f"{where}: not an occon checkpoint (format must be {FORMAT!r})")
    keys = ("arch", "backbone", "projector", "meta") + (
        ("projector_dims",) if d["format"] == FORMAT_V1 else ("family", "arch_kwargs", "normalization"))
    for key in keys:
        if key not in d:
            raise CheckpointError(f"{where}: occon checkpoint lacks the key {key!r}")
    if not isinstance(d["backbone"], dict) or not d["backbone"]:
        raise CheckpointError(f"{where}: 'backbone' must be a non-empty state_dict")
    if d["format"] == FORMAT_V1 and (d["projector"] is None) != (d["projector_dims"] is None):
        raise CheckpointError(f"{where}: 'projector' and 'projector_dims' must both be set or both be None")
    return d


def _upgrade_v1(d: Dict[str, Any], where: str) -> Dict[str, Any]:
    """occon-ckpt/1 (ResNet, Linear-ReLU-Linear projector, stem facts in meta) -> the /2 record."""
    validate_record(d, where)
    meta = dict(d["meta"])
    conv1 = d["backbone"].get("conv1.weight")
    kwargs = {"cifar_stem": conv1 is not None and conv1.dim() == 4 and tuple(conv1.shape[-2:]) == (3, 3)}
    if kwargs.get("cifar_stem"):
        kwargs["stem_padding"] = int(meta.get("stem_padding", 2))
    return {"format": FORMAT, "family": "resnet", "arch": d["arch"], "arch_kwargs": kwargs,
            "backbone": d["backbone"], "projector": d["projector"], "projector_activation": "relu",
            "predictor": None, "normalization": IMAGENET.as_dict(), "meta": meta}


def as_record(d: Any, where: str = "checkpoint") -> Dict[str, Any]:
    """An occon record of either format version, as a /2 record."""
    validate_record(d, where)
    return _upgrade_v1(d, where) if d["format"] == FORMAT_V1 else d


def read_checkpoint(path, use_momentum: bool = False) -> Dict[str, Any]:
    """Load ``path`` (any supported layout) as an occon record (``occon-ckpt/2``).

    ``use_momentum=True`` takes the momentum (key) encoder and projector instead of the online ones; a
    checkpoint with one encoder only (a plain state_dict, an ``occon-ckpt`` record converted without
    ``--momentum``) is then refused, never read as the online one.
    Raises :class:`CheckpointNotFoundError` (no such file; also a FileNotFoundError) or
    :class:`CheckpointError` (naming the file and what was expected).
    """
    path = Path(path)
    if not path.is_file():
        what = "is a folder, not a checkpoint file" if path.is_dir() else "does not exist"
        raise CheckpointNotFoundError(f"checkpoint not found: {path} {what}; give the path of a checkpoint file")
    ckpt = torch_load(path)
    if isinstance(ckpt, dict) and ckpt.get("format") in (FORMAT, FORMAT_V1):
        record = as_record(ckpt, str(path))
        source = (record.get("meta") or {}).get("backbone_source", "online")
        if use_momentum and source != "momentum":  # a converted record holds one encoder: never the other silently
            raise CheckpointError(f"{path}: use_momentum=true, but this {record['format']} checkpoint holds only the "
                                  f"{source} encoder; give the original training checkpoint, or convert it with "
                                  f"`occon-zoo convert --momentum`")
        return record
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"{path}: expected a dict (a state_dict or a Lightning checkpoint), "
                              f"found {type(ckpt).__name__}")
    state = ckpt["state_dict"] if isinstance(ckpt.get("state_dict"), dict) else ckpt
    state = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
    try:
        state, stripped = strip_wrapper_prefixes(state)
    except ValueError as err:
        raise CheckpointError(f"{path}: {err}") from None
    hints = checkpoint_hints(ckpt) or run_folder_hints(path)
    layout, prefixes = detect_layout(state, str(path))
    meta = {"source_layout": layout, **_source_meta(ckpt, path, hints)}
    if stripped:
        meta["stripped_prefixes"] = stripped
    which = "momentum_" if use_momentum else ""
    if prefixes["backbone"] == "":
        if use_momentum:
            raise CheckpointError(f"{path}: use_momentum=true, but this is a plain backbone state_dict ({layout}) "
                                  f"with one encoder and no momentum encoder; use use_momentum=false")
        backbone = dict(state)
        projector_state: Dict[str, torch.Tensor] = {}
        predictor_state: Dict[str, torch.Tensor] = {}
    else:
        backbone = _sub_dict(state, prefixes[which + "backbone"])
        if not backbone:
            raise CheckpointError(f"{path}: no {prefixes[which + 'backbone']}* keys (use_momentum={use_momentum})")
        projector_state = _sub_dict(state, prefixes[which + "projector"])
        predictor_state = {} if use_momentum or "predictor" not in prefixes else _sub_dict(state, prefixes["predictor"])
        if not projector_state:
            for online, momentum in ALTERNATIVE_PROJECTORS:
                projector_state = _sub_dict(state, momentum if use_momentum else online)
                if projector_state:
                    meta["projector_source"] = (momentum if use_momentum else online).rstrip(".")
                    break
        meta["backbone_source"] = "momentum" if use_momentum else "online"
    # classifier layers (torchvision ``fc``, timm ``head`` / ``head.fc``); timm's ``head.norm`` is the backbone's
    heads = [k for k in backbone if k.startswith(("fc.", "head.fc.")) or k in ("head.weight", "head.bias")]
    backbone = {k: v for k, v in backbone.items() if k not in heads}
    if heads:
        meta["backbone_head_dropped"] = sorted({k.split(".")[0] for k in heads})
    family, arch, arch_kwargs = infer_architecture(backbone, str(path), {**hints, "layout": layout})
    if arch_kwargs.get("cifar_stem"):  # a 3x3 stem's padding is not in the weights: solo-learn uses 2, the authors 1
        arch_kwargs["stem_padding"] = 1 if layout == "authors-2021" else 2
    gelu_head = meta.get("projector_source") in _GELU_HEADS or str(hints.get("method", "")).split("_")[0] in _GELU_METHODS
    activation = "gelu" if gelu_head else "relu"
    return {"format": FORMAT, "family": family, "arch": arch, "arch_kwargs": arch_kwargs, "backbone": backbone,
            "projector": _head(projector_state, meta, "projector"), "projector_activation": activation,
            "predictor": _head(predictor_state, meta, "predictor"),
            "normalization": _normalization(layout, hints).as_dict(), "meta": meta,
            **({"method": hints["method"]} if isinstance(hints.get("method"), str) else {})}


def save_record(d: Dict[str, Any], path) -> Path:
    """Validate and write an occon record atomically (temp file in the same folder + rename)."""
    path = Path(path)
    validate_record(d, "save_occon_checkpoint")
    return atomic_torch_save(d, path)


def convert_checkpoint(src, dst, use_momentum: bool = False) -> Dict[str, Any]:
    """``occon-zoo convert``: read ``src`` (any layout :func:`read_checkpoint` reads) and write it to ``dst`` as
    an occon record (``occon-ckpt/2``, atomically); returns the record.

    Raises:
        CheckpointError: ``src`` missing or not a supported checkpoint, ``dst`` a folder, or the record
            malformed; ``use_momentum`` with a one-encoder checkpoint.
    """
    record = read_checkpoint(src, use_momentum=use_momentum)
    save_record(record, Path(dst))
    return record
