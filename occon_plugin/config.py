"""Defaults and fail-fast checks for the pretraining config (solo-learn main's schema).

Errors are :class:`ConfigError` and always name the offending key and what to do.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from occon_plugin.errors import ConfigError  # noqa: F401  (re-exported)


def select(cfg: DictConfig | dict, key: str, default: Any = None) -> Any:
    """``cfg.<key>`` (dotted, ``a[0].b`` too) of a DictConfig or plain dict; ``default`` if missing or null."""
    if isinstance(cfg, dict):
        cfg = OmegaConf.create(cfg)
    value = OmegaConf.select(cfg, key, default=default)
    return default if value is None else value


def set_default(cfg: DictConfig, key: str, value: Any) -> None:
    if OmegaConf.select(cfg, key, default=None) is None:
        OmegaConf.update(cfg, key, value, force_add=True)


def require(cfg: DictConfig, key: str, hint: str = "") -> Any:
    value = OmegaConf.select(cfg, key, default=None)
    if value is None or value == "":
        raise ConfigError(f"missing config key `{key}`" + (f": {hint}" if hint else ""))
    return value


def check_probability(cfg: DictConfig, key: str) -> None:
    value = OmegaConf.select(cfg, key, default=None)
    if value is None:
        return
    if not isinstance(value, (int, float)) or not 0.0 <= float(value) <= 1.0:
        raise ConfigError(f"`{key}={value}` must be a probability in [0, 1]")


def check_existing_path(cfg: DictConfig, key: str, what: str) -> Path:
    value = require(cfg, key, f"set it to {what}, e.g. ++{key}=/path/to/data")
    path = Path(os.path.expanduser(str(value)))
    if not path.exists():
        raise ConfigError(f"`{key}={value}` does not exist: it must point to {what}")
    return path


def complete_pretrain_cfg(cfg: DictConfig, known_methods) -> DictConfig:
    """Fill the defaults solo-learn main's ``parse_cfg`` would, then validate. Mutates ``cfg``."""
    OmegaConf.set_struct(cfg, False)
    method = require(cfg, "method", "e.g. method=mocov2_occon")
    if method not in known_methods:
        raise ConfigError(f"`method={method}` is unknown; choose one of {sorted(known_methods)}")
    require(cfg, "backbone.name", "e.g. backbone.name=resnet18")
    check_existing_path(cfg, "data.train_path", "a folder of images or a COCO json")
    for key in ("optimizer.name", "optimizer.batch_size", "optimizer.lr", "scheduler.name"):
        require(cfg, key)
    if int(cfg.optimizer.batch_size) < 2:
        raise ConfigError(f"`optimizer.batch_size={cfg.optimizer.batch_size}` must be >= 2 (contrastive batches)")

    set_default(cfg, "name", f"{method}")
    set_default(cfg, "seed", 5)
    set_default(cfg, "max_epochs", 1)
    set_default(cfg, "data.dataset", "custom")
    set_default(cfg, "data.format", "image_folder")
    set_default(cfg, "data.num_workers", 2)
    set_default(cfg, "data.num_classes", 1)
    set_default(cfg, "data.num_large_crops", 2)
    set_default(cfg, "data.num_small_crops", 0)
    set_default(cfg, "data.fraction", -1)
    set_default(cfg, "optimizer.classifier_lr", float(cfg.optimizer.lr))
    set_default(cfg, "optimizer.weight_decay", 1e-4)
    set_default(cfg, "optimizer.kwargs", {})
    set_default(cfg, "scheduler.warmup_epochs", 0)
    set_default(cfg, "checkpoint.enabled", True)
    set_default(cfg, "checkpoint.dir", "trained_models")
    set_default(cfg, "checkpoint.frequency", 1)
    set_default(cfg, "auto_resume.enabled", False)
    set_default(cfg, "wandb.enabled", False)
    set_default(cfg, "wandb.project", "occon-plugin")
    set_default(cfg, "dali.device", "gpu")       # "cpu" runs the DALI pipeline without a GPU
    set_default(cfg, "dali.py_workers", 0)       # processes for the external source (0: in process)
    set_default(cfg, "accelerator", "auto")
    set_default(cfg, "devices", 1)
    set_default(cfg, "strategy", "auto")
    set_default(cfg, "precision", 32)

    if cfg.data.format not in ("image_folder", "dali"):
        raise ConfigError(f"`data.format={cfg.data.format}` must be one of image_folder, dali")
    if cfg.data.num_large_crops != 2:
        raise ConfigError(f"`data.num_large_crops={cfg.data.num_large_crops}`: MoCo v2 / BYOL need exactly 2")
    augs = select(cfg, "augmentations")
    if augs is None or len(augs) == 0:
        raise ConfigError("missing config key `augmentations` (a list of view pipelines, solo-learn main's schema)")
    n_views = sum(int(select(a, "num_crops", 1)) for a in augs)
    if n_views != 2:
        raise ConfigError(f"`augmentations` must produce 2 views in total (num_crops sum to {n_views})")
    for i in range(len(augs)):
        for key in ("color_jitter.prob", "grayscale.prob", "gaussian_blur.prob", "solarization.prob",
                    "horizontal_flip.prob"):
            check_probability(cfg, f"augmentations[{i}].{key}")
    check_probability(cfg, "occon.bg_mixup.p_mix")
    queue = select(cfg, "method_kwargs.queue_size")
    if queue is not None and int(queue) % int(cfg.optimizer.batch_size) != 0:
        raise ConfigError(f"`method_kwargs.queue_size={queue}` must be a multiple of "
                          f"`optimizer.batch_size={cfg.optimizer.batch_size}`")
    scale_lr(cfg)
    return cfg


def num_devices(cfg: DictConfig) -> int:
    devices = select(cfg, "devices", 1)
    if isinstance(devices, int):
        return max(devices, 1)
    if isinstance(devices, str):
        return int(devices) if devices.isdigit() else 1
    return max(len(devices), 1)


def scale_lr(cfg: DictConfig) -> None:
    """Linear scaling rule, as solo-learn: ``optimizer.lr`` is the rate for a total batch of 256."""
    if select(cfg, "optimizer.base_lr") is not None:  # already scaled (e.g. a resumed config)
        return
    total = int(cfg.optimizer.batch_size) * num_devices(cfg) * int(select(cfg, "num_nodes", 1))
    factor = total / 256
    cfg.optimizer.base_lr = float(cfg.optimizer.lr)
    cfg.optimizer.lr = float(cfg.optimizer.lr) * factor
    cfg.optimizer.classifier_lr = float(cfg.optimizer.classifier_lr) * factor
