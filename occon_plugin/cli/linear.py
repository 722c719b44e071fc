"""Linear evaluation with the host's ``LinearModel`` (``occon-linear`` / ``scripts/linear/main_linear.py``).

Loads the backbone of a checkpoint written by ``scripts/pretrain/main_pretrain.py`` (either host
generation's key layout, or anything :func:`occon_plugin.zoo.convert.load_checkpoint` reads),
freezes it and trains the host's linear classifier on an image folder with class sub-folders::

    python scripts/linear/main_linear.py --config-path scripts/linear/custom --config-name linear.yaml \
        ++pretrained_feature_extractor=trained_models/mocov2_occon/<name>/final.ckpt \
        ++data.train_path=<folder> ++data.val_path=<folder>

(For the paper's L-BFGS protocol on frozen features see ``occon_plugin.eval``.)
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader
from torchvision import datasets
from torchvision.transforms import v2 as T

from occon_plugin import host
from occon_plugin.cli._hydra import solo_style_main
from occon_plugin.config import ConfigError, check_existing_path, require, set_default
from occon_plugin.tracking import make_wandb_logger

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.228, 0.224, 0.225)


def linear_transforms(crop_size: int):
    train = T.Compose([T.RandomResizedCrop(crop_size), T.RandomHorizontalFlip(), T.ToImage(),
                       T.ToDtype(torch.float32, scale=True), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
    val = T.Compose([T.Resize(int(crop_size * 256 / 224)), T.CenterCrop(crop_size), T.ToImage(),
                     T.ToDtype(torch.float32, scale=True), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
    return train, val


def load_backbone(cfg: DictConfig) -> torch.nn.Module:
    """A torchvision ResNet (fc removed) with the checkpoint's backbone weights."""
    import torchvision

    from occon_plugin.zoo.convert import load_checkpoint

    ckpt = load_checkpoint(str(cfg.pretrained_feature_extractor))
    arch = str(OmegaConf.select(cfg, "backbone.name", default=None) or ckpt["arch"])
    if not hasattr(torchvision.models, arch):
        raise ConfigError(f"`backbone.name={arch}` is not a torchvision model")
    backbone = getattr(torchvision.models, arch)()
    backbone.fc = torch.nn.Identity()
    missing, unexpected = backbone.load_state_dict(ckpt["backbone"], strict=False)
    missing = [k for k in missing if not k.startswith("fc.")]
    if missing or unexpected:
        raise ConfigError(
            f"`pretrained_feature_extractor={cfg.pretrained_feature_extractor}` does not fit {arch}: "
            f"missing {missing[:5]}, unexpected {unexpected[:5]}"
        )
    return backbone


def complete_linear_cfg(cfg: DictConfig) -> DictConfig:
    OmegaConf.set_struct(cfg, False)
    check_existing_path(cfg, "pretrained_feature_extractor", "a checkpoint written by main_pretrain.py")
    check_existing_path(cfg, "data.train_path", "an image folder with one sub-folder per class")
    if OmegaConf.select(cfg, "data.val_path", default=None):
        check_existing_path(cfg, "data.val_path", "an image folder with one sub-folder per class")
    for key in ("optimizer.name", "optimizer.batch_size", "optimizer.lr", "scheduler.name"):
        require(cfg, key)
    set_default(cfg, "name", "linear")
    set_default(cfg, "seed", 5)
    set_default(cfg, "max_epochs", 100)
    set_default(cfg, "crop_size", 224)
    set_default(cfg, "data.num_workers", 2)
    set_default(cfg, "data.num_large_crops", 1)
    set_default(cfg, "data.num_small_crops", 0)
    set_default(cfg, "optimizer.weight_decay", 0.0)
    set_default(cfg, "optimizer.kwargs", {})
    set_default(cfg, "output_dir", "trained_models/linear")
    set_default(cfg, "wandb.enabled", False)
    set_default(cfg, "accelerator", "auto")
    set_default(cfg, "devices", 1)
    set_default(cfg, "strategy", "auto")
    set_default(cfg, "backbone.name", None)
    return cfg


def linear_eval(cfg: DictConfig) -> dict:
    cfg = complete_linear_cfg(cfg)
    host.seed_everything(int(cfg.seed))
    train_tf, val_tf = linear_transforms(int(cfg.crop_size))
    train_set = datasets.ImageFolder(str(cfg.data.train_path), transform=train_tf)
    val_path = OmegaConf.select(cfg, "data.val_path", default=None)
    val_set = datasets.ImageFolder(str(val_path), transform=val_tf) if val_path else None
    if val_set is not None and val_set.classes != train_set.classes:
        raise ConfigError(f"`data.val_path` classes {val_set.classes} differ from `data.train_path` "
                          f"classes {train_set.classes}")
    cfg.data.num_classes = len(train_set.classes)

    backbone = load_backbone(cfg)
    if cfg.backbone.name is None:
        cfg.backbone.name = type(backbone).__name__.lower()
    model = host.build_linear_model(backbone, cfg)

    bs, nw = int(cfg.optimizer.batch_size), int(cfg.data.num_workers)
    train_loader = DataLoader(train_set, batch_size=bs, shuffle=True, num_workers=nw, drop_last=len(train_set) > bs)
    val_loader = DataLoader(val_set, batch_size=bs, num_workers=nw) if val_set is not None else None

    out_dir = Path(cfg.output_dir) / str(cfg.name)
    logger = make_wandb_logger(cfg, out_dir)
    trainer = host.make_trainer(cfg, logger=logger if logger is not None else False,
                                enable_checkpointing=False, default_root_dir=str(out_dir))
    trainer.fit(model, train_loader, val_loader)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    result = {"global_step": int(trainer.global_step), "classes": train_set.classes, "metrics": metrics}
    print("[occon] linear evaluation done: " + json.dumps(result))
    return result


main = solo_style_main(linear_eval)


if __name__ == "__main__":
    main()
