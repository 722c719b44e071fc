"""W&B of pretraining (``occon-pretrain``, ``occon-linear``, and the object-aware methods inside the host's own
``main_pretrain.py``): the host's ``WandbLogger`` under the plugin's one W&B rule
(:func:`occon_plugin.tracking.wandb_mode`), and the one picture grid ``occon/augmentations`` of what
OA-Crop / BG-Mixup did to a few samples.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, List, Optional, Tuple

import numpy as np
from omegaconf import DictConfig, OmegaConf

from occon_plugin import host
from occon_plugin.atomic import make_output_dir
from occon_plugin.augment.semantics import box_to_pixels, plan_sample, sample_seed
from occon_plugin.tracking import N_PICTURES, wandb_dir, wandb_mode, wandb_wanted


def make_wandb_logger(cfg: DictConfig, save_dir: Path, run_id: Optional[str] = None):
    """The host's ``WandbLogger`` writing its run files under ``save_dir`` (``WANDB_DIR`` instead when the user
    set it: :func:`~occon_plugin.tracking.wandb_dir`), or None when W&B is off (``wandb.enabled: false``,
    ``WANDB_MODE=disabled``, ``WANDB_DISABLED=true``: nothing is written)."""
    if not wandb_wanted(cfg):
        return None
    save_dir = wandb_dir(save_dir)
    make_output_dir(save_dir)
    mode = wandb_mode(cfg)
    # the mode goes to wandb.init itself: Lightning's ``offline=True`` would set WANDB_MODE=dryrun in
    # this process's environment (seen by the next job of a multirun), and wandb ignores it once a
    # run was set up in this process
    logger = host.WandbLogger(
        name=str(cfg.name),
        project=str(OmegaConf.select(cfg, "wandb.project", default="occon-plugin")),
        entity=OmegaConf.select(cfg, "wandb.entity", default=None),
        offline=False,
        save_dir=str(save_dir),
        id=run_id,
        resume="allow" if run_id else None,
        mode=mode,
    )
    logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
    return logger


CROP_COLOR = (255, 0, 0)      # red: the OA-Crop rectangle the sample drew
BOX_COLOR = (255, 255, 0)     # yellow: every store box of the image


def wandb_logger_of(trainer: Any):
    """The trainer's ``WandbLogger`` (either Lightning generation), or None."""
    loggers = list(getattr(trainer, "loggers", None) or [])
    if not loggers and getattr(trainer, "logger", None) is not None:
        loggers = [trainer.logger]
    return next((lg for lg in loggers if isinstance(lg, host.WandbLogger)), None)


def _view_to_uint8(view: Any, height: int) -> np.ndarray:
    """A normalized ``3 x S x S`` view tensor -> ``height x height x 3`` uint8 (min-max per view)."""
    import cv2

    array = view.detach().float().cpu().numpy().transpose(1, 2, 0)
    low, high = float(array.min()), float(array.max())
    array = (array - low) / (high - low) if high > low else np.zeros_like(array)
    array = (array * 255).round().astype(np.uint8)
    width = max(1, round(array.shape[1] * height / array.shape[0]))
    return cv2.resize(array, (width, height), interpolation=cv2.INTER_AREA)


def augmentation_examples(dataset: Any, n: int = N_PICTURES, height: int = 160) -> List[Tuple[np.ndarray, str]]:
    """``n`` samples of an :class:`~occon_plugin.augment.dataset.OcconPretrainDataset`, each as one
    picture (``height x W x 3`` uint8: the image with its store boxes (yellow) and the OA-Crop
    rectangle it drew (red), then every view as the model gets it, BG-mixed views framed in red)
    and a caption with the flags (``oa_crop``, ``mixed`` per view). Samples with store boxes first;
    each sample's decisions come from :func:`~occon_plugin.augment.semantics.sample_seed` of the run seed."""
    import cv2

    with_boxes = [i for i, e in enumerate(dataset.entries) if e is not None and e.ok and e.boxes]
    others = [i for i in range(len(dataset)) if i not in set(with_boxes)]
    picks = (with_boxes + others)[:n]
    out = []
    for i in picks:
        seed = sample_seed(dataset.seed, i)
        used, views, _, info = dataset[(i, seed)]
        image = dataset._load(used)
        if image is None:
            continue
        h, w = image.shape[:2]
        entry = dataset.entries[used]
        boxes = list(entry.boxes) if entry is not None else []
        plan = plan_sample(seed, dataset.cfg, len(views), w, h, boxes=boxes)  # the box draw comes first
        canvas = np.ascontiguousarray(image)
        thick = max(2, round(max(h, w) / 200))
        for box in boxes:
            x1, y1, x2, y2 = box_to_pixels(box, w, h)
            cv2.rectangle(canvas, (x1, y1), (x2 - 1, y2 - 1), BOX_COLOR, thick)
        if bool(info["oa_crop"]) and plan.crop_rect is not None:
            x1, y1, x2, y2 = plan.crop_rect
            cv2.rectangle(canvas, (x1, y1), (x2 - 1, y2 - 1), CROP_COLOR, 2 * thick)
        scale = height / h
        panels = [cv2.resize(canvas, (max(1, round(w * scale)), height), interpolation=cv2.INTER_AREA)]
        mixed = [bool(m) for m in info["mixed"].reshape(-1).tolist()]
        for k, view in enumerate(views):
            panel = _view_to_uint8(view, height)
            if k < len(mixed) and mixed[k]:
                cv2.rectangle(panel, (0, 0), (panel.shape[1] - 1, panel.shape[0] - 1), CROP_COLOR, 6)
            panels.append(panel)
        gap = np.full((height, 4, 3), 255, np.uint8)
        row = np.concatenate([p for panel in panels for p in (panel, gap)][:-1], axis=1)
        flags = ", ".join(f"view {k}: {'BG-mixed' if m else 'plain'}" for k, m in enumerate(mixed))
        caption = (f"{dataset.paths[used]} | OA-Crop: {'box ' + str(plan.box_index) if bool(info['oa_crop']) else 'full image'}"
                   f" | {flags}")
        out.append((row, caption))
    return out


def log_augmentation_examples(logger: Any, dataset: Any, n: int = N_PICTURES) -> int:
    """Log :func:`augmentation_examples` once under ``occon/augmentations``; returns how many."""
    examples = augmentation_examples(dataset, n)
    if examples:
        logger.log_image(key="occon/augmentations", images=[img for img, _ in examples],
                         caption=[cap for _, cap in examples])
    return len(examples)


def log_run_pictures(trainer: Any, datasets: list, cfg: Optional[DictConfig], occon: Any) -> bool:
    """The ``occon/augmentations`` grid of a run, when the trainer has a ``WandbLogger``: drawn from the
    object-aware dataset behind ``datasets`` (the torchvision pipeline, the host's dataset), else (the
    plugin's DALI pipeline: the same decisions) from a torchvision dataset built from ``cfg`` with the run's
    parsed ``occon``. Returns whether pictures were logged (False: no W&B logger, or no cfg to draw from)."""
    logger = wandb_logger_of(trainer)
    if logger is None:
        return False
    from occon_plugin.train.host_data import occon_dataset_of

    occon_dataset = next((d for d in map(occon_dataset_of, datasets) if d is not None), None)
    if occon_dataset is None:
        if cfg is None:
            return False
        from occon_plugin.augment.dataset import build_dataset, build_view_transforms

        occon_dataset = build_dataset(cfg, build_view_transforms(OmegaConf.select(cfg, "augmentations")), occon=occon)
    log_augmentation_examples(logger, occon_dataset)
    return True
