"""Linear evaluation with the host's ``LinearModel`` (``occon-linear`` / ``scripts/linear/main_linear.py``).

Loads the backbone of a checkpoint written by ``scripts/pretrain/main_pretrain.py`` (either host
generation's key layout, or anything :func:`occon_plugin.models.load_model` reads),
freezes it and trains the host's linear classifier on an image folder with class sub-folders::

    python scripts/linear/main_linear.py --config-path scripts/linear/custom --config-name linear.yaml \
        ++pretrained_feature_extractor=trained_models/mocov2_occon/<name>/final.ckpt \
        ++data.train_path=<folder> ++data.val_path=<folder>
    occon-linear --config-name custom/linear ...          # the YAML shipped with the package

The YAML is solo-learn main's ``main_linear.py`` schema (the host's script accepts it too); any
number of classes >= 2 works (top-k accuracies are capped at the class count on both host generations).

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

from occon_plugin.cli._hydra import solo_style_main
from occon_plugin.config import ConfigError, complete_linear_cfg
from occon_plugin.errors import DataError
from occon_plugin.images import check_images, examples, is_listable_file, list_images, load_pil_image
from occon_plugin.models.normalization import IMAGENET, Normalization


def linear_transforms(crop_size: int, normalization: Normalization = IMAGENET):
    """Train / val transforms, normalized with the constants the backbone was trained with."""
    mean, std = normalization.mean, normalization.std
    train = T.Compose([T.RandomResizedCrop(crop_size), T.RandomHorizontalFlip(), T.ToImage(),
                       T.ToDtype(torch.float32, scale=True), T.Normalize(mean, std)])
    val = T.Compose([T.Resize(int(crop_size * 256 / 224)), T.CenterCrop(crop_size), T.ToImage(),
                     T.ToDtype(torch.float32, scale=True), T.Normalize(mean, std)])
    return train, val


def load_backbone(cfg: DictConfig) -> tuple[torch.nn.Module, Normalization]:
    """The checkpoint's backbone (normalized images -> pooled features; ResNet incl. CIFAR stem, ViT) and
    the normalization it was trained with, from the plugin's one model loader (:mod:`occon_plugin.models`).

    Raises:
        ConfigError: ``backbone.name`` disagrees with the checkpoint's; any ``CheckpointError`` of the loader.
    """
    from occon_plugin.models import load_model

    loaded = load_model(str(cfg.pretrained_feature_extractor))
    arch = OmegaConf.select(cfg, "backbone.name", default=None)
    if arch and str(arch) != loaded.spec.name:
        raise ConfigError(f"`backbone.name={arch}` but `pretrained_feature_extractor="
                          f"{cfg.pretrained_feature_extractor}` holds a {loaded.spec.name}; drop backbone.name or fix it")
    return loaded.backbone, loaded.spec.normalization


def image_folder(cfg: DictConfig, key: str, transform, **kwargs) -> datasets.ImageFolder:
    """torchvision's ImageFolder of ``cfg.<key>``; its complaints become a DataError naming the key.
    Images the shared decode rule cannot read are dropped before training (counted, the first named),
    as pretraining does, instead of stopping the run when a batch draws one.

    Raises:
        DataError: not an image folder with one sub-folder per class, or none of its images can be read.
    """
    path = OmegaConf.select(cfg, key)
    try:
        folder = datasets.ImageFolder(str(path), transform=transform, **kwargs)
    except OSError as exc:  # FileNotFoundError: no class folder, or a class without images
        raise DataError(f"`{key}={path}` is not an image folder with one sub-folder of images per class: {exc}") \
            from None
    root = Path(folder.root)
    # the plugin's listing (as pretraining and occon-eval-linear list): an occon store inside the folder is
    # not a class of photos
    listing = list_images(root)
    if listing.classes is not None and listing.classes != folder.classes:
        folder.classes = list(listing.classes)
        folder.class_to_idx = {c: i for i, c in enumerate(folder.classes)}
        folder.samples = [(str(root / p), label) for p, label in zip(listing.paths, listing.labels)]
        folder.imgs, folder.targets = folder.samples, [t for _, t in folder.samples]
        print(f"[occon] {key}: {listing.skipped_summary()}", flush=True)
    rels = [Path(p).relative_to(root).as_posix() for p, _ in folder.samples]
    bad = check_images(root, rels, decode=True).bad
    if bad:
        folder.samples = [s for s, rel in zip(folder.samples, rels) if rel not in bad]
        folder.imgs, folder.targets = folder.samples, [t for _, t in folder.samples]
        if not folder.samples:
            raise DataError(f"`{key}={path}`: none of its {len(rels)} images can be read, e.g. "
                            + examples([f"{p} ({r})" for p, r in bad.items()], show=2))
        print(f"[occon] {key}: {len(bad)} unreadable image(s) skipped: "
              + examples([f"{p} ({r})" for p, r in bad.items()], show=3), flush=True)
    return folder


def _classes_with_images(folder: datasets.ImageFolder) -> list[str]:
    have = {label for _, label in folder.samples}
    return [c for i, c in enumerate(folder.classes) if i in have]


def linear_eval(cfg: DictConfig) -> dict:
    """Train the host's linear classifier on the frozen backbone of ``pretrained_feature_extractor``; returns the final checkpoint.

    Raises:
        ConfigError: fewer than 2 readable classes, or ``data.val_path`` classes that differ from ``data.train_path``'s.
    """
    from occon_plugin import host  # raises a one-line HostMissingError without solo-learn
    from occon_plugin.tracking import finish_wandb
    from occon_plugin.train.tracking import make_wandb_logger

    cfg = complete_linear_cfg(cfg)
    host.seed_everything(int(cfg.seed))
    backbone, normalization = load_backbone(cfg)
    train_tf, val_tf = linear_transforms(int(cfg.data.augmentations.crop_size), normalization)
    # the plugin's decode rule (16-bit, modes, EXIF) and listing (hidden files, dangling links) for the host's ImageFolder
    folder_kw = {"loader": load_pil_image, "is_valid_file": is_listable_file}
    train_set = image_folder(cfg, "data.train_path", train_tf, **folder_kw)
    trained = _classes_with_images(train_set)
    if len(train_set.classes) < 2 or len(trained) < 2:
        raise ConfigError(f"`data.train_path={cfg.data.train_path}` has readable images of {len(trained)} class(es) "
                          f"({', '.join(trained)}; {len(train_set.classes)} class sub-folder(s)): linear evaluation "
                          f"needs at least 2 (a one-class classifier scores 100 % whatever the features)")
    val_path = OmegaConf.select(cfg, "data.val_path", default=None)
    val_set = image_folder(cfg, "data.val_path", val_tf, **folder_kw) if val_path else None
    if val_set is not None and val_set.classes != train_set.classes:
        raise ConfigError(f"`data.val_path` classes {val_set.classes} differ from `data.train_path` "
                          f"classes {train_set.classes}")
    never = [c for c in (_classes_with_images(val_set) if val_set is not None else []) if c not in trained]
    if never:
        raise ConfigError(f"`data.val_path={val_path}` has images of {never} but `data.train_path` has no readable "
                          f"image of them: they can never be predicted; add training images or remove them")
    cfg.data.num_classes = len(train_set.classes)  # top-k metrics are capped at it (host.py)

    if cfg.backbone.name is None:
        cfg.backbone.name = type(backbone).__name__.lower()
    model = host.build_linear_model(backbone, cfg)

    bs, nw = int(cfg.optimizer.batch_size), int(cfg.data.num_workers)
    train_loader = DataLoader(train_set, batch_size=bs, shuffle=True, num_workers=nw, drop_last=len(train_set) > bs)
    val_loader = DataLoader(val_set, batch_size=bs, num_workers=nw) if val_set is not None else None

    out_dir = Path(cfg.checkpoint.dir) / "linear" / str(cfg.name)
    logger = make_wandb_logger(cfg, out_dir)
    trainer = host.make_trainer(cfg, logger=logger if logger is not None else False,
                                enable_checkpointing=False, default_root_dir=str(out_dir))
    try:
        trainer.fit(model, train_loader, val_loader)
    finally:
        finish_wandb(logger)  # one W&B run per job (Hydra multirun: the next job starts its own)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    result = {"global_step": int(trainer.global_step), "classes": train_set.classes, "metrics": metrics}
    print("[occon] linear evaluation done: " + json.dumps(result))
    return result


main = solo_style_main(linear_eval, kind="linear", inputs=("data.train_path", "data.val_path"),
                       specs=("pretrained_feature_extractor",), outputs=("checkpoint.dir",),
                       batch_key="optimizer.batch_size")


if __name__ == "__main__":
    main()
