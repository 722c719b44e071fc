"""Weights & Biases: on by config; the user's own W&B environment wins; offline without an API key.

The one rule (:func:`wandb_mode`), for every command (``occon-pretrain``, ``occon-linear``,
``occon-localize ++wandb.enabled=true``, the ``occon-eval-*`` CLIs) and for the host's own
``main_pretrain.py`` running an object-aware method (:func:`honour_wandb_environment`):

1. ``WANDB_MODE=disabled`` or ``WANDB_DISABLED=true`` (any of true/1/yes/on): no W&B run, nothing
   written (the commands do not even import wandb's run machinery);
2. ``WANDB_MODE=offline`` (or ``dryrun``) / ``WANDB_MODE=online``: that mode;
3. otherwise the config's ``wandb.offline`` (``true``: offline; ``false``: online), and with it
   unset, online iff an API key is configured (``WANDB_API_KEY`` or ``wandb login``). Online without a
   key cannot work: such a run goes offline and says so in one line.

Each job's run is finished when the job ends (:func:`finish_wandb`), so under Hydra's multirun
(``-m``) every job gets its own run.
"""
from __future__ import annotations

import netrc
import os
import sys
from pathlib import Path
from typing import Any, List, Optional, Tuple

import numpy as np
from omegaconf import DictConfig, OmegaConf

_TRUE = ("1", "true", "yes", "on", "y", "t")
MODES = ("online", "offline", "disabled")


def wandb_api_key_configured() -> bool:
    """True when an API key is set in the environment or stored by ``wandb login`` (netrc)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


def environment_mode() -> Optional[str]:
    """The mode the user chose through W&B's environment (``WANDB_DISABLED``, ``WANDB_MODE``), or None."""
    if os.environ.get("WANDB_DISABLED", "").strip().lower() in _TRUE:
        return "disabled"
    mode = os.environ.get("WANDB_MODE", "").strip().lower()
    aliases = {"dryrun": "offline", "run": "online", "shared": "shared"}  # wandb's other names for its modes
    return aliases.get(mode, mode if mode in MODES else None)


def wandb_mode(cfg: Any, say: bool = True) -> str:
    """``"online"``, ``"offline"`` or ``"disabled"`` (or wandb's ``"shared"`` when the user set it) by the module's rule (``cfg.wandb.offline``: true /
    false / absent). ``say``: print the one line when an online run goes offline for want of a key."""
    chosen = environment_mode()
    if chosen is not None:
        return chosen
    explicit = OmegaConf.select(cfg, "wandb.offline", default=None) if OmegaConf.is_config(cfg) else None
    if explicit is not None and bool(explicit):
        return "offline"
    if wandb_api_key_configured():
        return "online"
    if explicit is not None and say:
        print("[occon] W&B: wandb.offline=false but no API key is configured (WANDB_API_KEY or `wandb login`): "
              "running offline; `wandb sync` uploads the run later", file=sys.stderr)
    return "offline"


def wandb_offline(cfg: DictConfig) -> bool:
    """Whether W&B runs offline (True also when disabled: nothing goes online)."""
    return wandb_mode(cfg, say=False) in ("offline", "disabled")


def wandb_wanted(cfg: Any) -> bool:
    """``wandb.enabled`` in ``cfg`` and not disabled by the user's W&B environment."""
    return bool(OmegaConf.select(cfg, "wandb.enabled", default=False)) and environment_mode() != "disabled"


def honour_wandb_environment(cfg: Any) -> Optional[str]:
    """For scripts that create their own ``WandbLogger`` (solo-learn's ``main_pretrain.py``, whose
    ``wandb.offline`` defaults to false): set ``WANDB_MODE`` to the mode of :func:`wandb_mode` when the
    user did not set it, so a run without an API key goes offline instead of failing in wandb's login,
    and ``WANDB_DISABLED=true`` disables it. Returns the mode set, or None (nothing changed)."""
    if not OmegaConf.select(cfg, "wandb.enabled", default=False) or os.environ.get("WANDB_MODE"):
        return None
    mode = wandb_mode(cfg)
    if mode == "online":
        return None
    os.environ["WANDB_MODE"] = mode
    return mode


def make_wandb_logger(cfg: DictConfig, save_dir: Path, run_id: Optional[str] = None):
    """The host's ``WandbLogger`` writing its run files under ``save_dir``, or None when W&B is off
    (``wandb.enabled: false``, ``WANDB_MODE=disabled``, ``WANDB_DISABLED=true``: nothing is written)."""
    if not wandb_wanted(cfg):
        return None
    from occon_plugin import host

    save_dir.mkdir(parents=True, exist_ok=True)
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


def finish_wandb(logger: Any = None) -> None:
    """End the W&B run of this job (``logger``'s, or the process's current run): under Hydra's
    multirun the next job starts its own run instead of writing into this one (Lightning's
    ``WandbLogger`` reuses a run still open in the process)."""
    if "wandb" not in sys.modules:
        return
    import wandb

    experiment = getattr(logger, "_experiment", None) if logger is not None else None
    if experiment is not None and hasattr(experiment, "finish"):
        experiment.finish()
    if wandb.run is not None:
        wandb.finish()


# --------------------------------------------------------------------------------------------
# Pictures of what the object-aware augmentations and the localizer did (W&B only).
# --------------------------------------------------------------------------------------------
N_PICTURES = 4
CROP_COLOR = (255, 0, 0)      # red: the OA-Crop rectangle the sample drew
BOX_COLOR = (255, 255, 0)     # yellow: every store box of the image


def wandb_logger_of(trainer: Any):
    """The trainer's ``WandbLogger`` (either Lightning generation), or None."""
    from occon_plugin import host

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

    from occon_plugin.augment.semantics import box_to_pixels, plan_sample, sample_seed

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


def split_wandb_settings(cfg: DictConfig) -> Tuple[DictConfig, Optional[DictConfig]]:
    """(``cfg`` without its ``wandb`` section, that section or None), for CLIs whose structured
    settings do not know W&B (``occon-localize``: ``++wandb.enabled=true [++wandb.project=...]``)."""
    if "wandb" not in cfg:
        return cfg, None
    section = cfg.wandb
    rest = OmegaConf.masked_copy(cfg, [k for k in cfg.keys() if k != "wandb"])
    return rest, OmegaConf.create({"wandb": OmegaConf.to_container(section, resolve=True), "name": "localize"})


def log_localize_run(wandb_cfg: Optional[DictConfig], summary: dict, data: Any, n: int = N_PICTURES) -> Optional[Path]:
    """When W&B is on: one run (:func:`wandb_mode`, files under the store's
    ``wandb/``) with the localizer's counts (``localize/<count>``) and ``n`` overlays (stored soft mask
    + boxes, ``localize/overlays``) of the store. ``summary``: what ``run_localize`` returned;
    ``data``: its ``data`` settings (``path``, ``image_root``). Returns the run folder or None."""
    if wandb_cfg is None or not wandb_wanted(wandb_cfg):
        return None
    import wandb

    from occon_plugin.eval.overlay import render_overlay
    from occon_plugin.images import list_images, load_image
    from occon_plugin.store import Store

    store = Store.open(summary["store"], allow_incomplete=True)
    counts = summary["manifest"]["counts"]
    mode = wandb_mode(wandb_cfg)
    run = wandb.init(project=str(OmegaConf.select(wandb_cfg, "wandb.project", default="occon-plugin")),
                     entity=OmegaConf.select(wandb_cfg, "wandb.entity", default=None),
                     name=str(OmegaConf.select(wandb_cfg, "wandb.name", default=None) or f"localize-{Path(store.root).name}"),
                     dir=str(store.root), mode=mode, job_type="localize",
                     config={"store": str(store.root), "listed": summary.get("listed")}, reinit=True)
    try:
        run.log({f"localize/{k}": v for k, v in counts.items() if isinstance(v, (int, float))}
                | {"localize/seconds": summary.get("seconds", 0)})
        images, root = [], list_images(data.path, getattr(data, "image_root", None)).root
        for entry in [e for e in store.entries.values() if e.ok][:n]:
            try:
                image = load_image(root, entry.path)
                mask = store.load_mask(entry.path)
            except Exception:  # noqa: BLE001 - a picture is not worth failing the run
                continue
            h, w = image.shape[:2]
            boxes = [[b[0] * w, b[1] * h, b[2] * w, b[3] * h] for b in entry.boxes]
            images.append(wandb.Image(render_overlay(image, mask, pred_boxes=boxes), caption=entry.path))
        if images:
            run.log({"localize/overlays": images})
        return Path(run.dir).parent
    finally:
        run.finish()
