"""What every object-aware method adds to its host parent: :class:`OcconMethodMixin`.

The object-aware augmentations (OA-Crop, BG-Mixup; paper §2.3) happen in the data pipeline, before
the standard augmentations of every view. A pipeline that ran them appends a fourth batch element
with what it did to each sample; the methods log it (``occon/*_frac``) and hand the usual
``[indexes, views, targets]`` to the host's training step.

Three ways data reaches a method, one rule — *a method whose ``occon`` section enables an
augmentation never trains without it*:

* the plugin's own pipelines (``occon-pretrain``: torchvision v2 or DALI) already yield the 4-element
  batches;
* solo-learn's own ``main_pretrain.py`` (main, ``data.format=image_folder``, labelled or
  ``no_labels``): :meth:`OcconMethodMixin.setup` (Lightning's first hook of ``trainer.fit``) reaches
  the loader given to ``trainer.fit`` and makes its dataset object-aware in place
  (:mod:`occon_plugin.train.host_data`; the store keyed by the dataset's own paths). It must be
  this hook: Lightning 2.x creates the loader's iterator -- forking the worker processes, each with
  its own copy of the dataset -- in ``fit_loop.setup_data``, which the host's
  ``configure_optimizers`` already triggers (``trainer.estimated_stepping_batches`` for its
  warmup-cosine schedule), before ``on_fit_start`` and ``on_train_start``.
  :meth:`OcconMethodMixin.on_train_start` then checks, on the loader Lightning really iterates
  (``self.trainer.train_dataloader``, as the host's SwAV / DeepClusterV2 read it), that the change
  is there, and logs the W&B pictures;
* where the host cannot carry them — its DALI data module, solo-learn 1.0.2's argparse
  ``main_pretrain.py`` (no ``occon`` section), a dataset without image files — the run stops before
  the first step with one line naming ``occon-pretrain`` (same YAML).

With ``occon`` absent (or ``occon.enabled: false``, or both augmentations off) the method is exactly
its parent: nothing above runs and 3-element batches go straight to the host's training step.
"""
from __future__ import annotations

import contextlib
import logging
from typing import Any, Dict, Optional, Sequence, Tuple

import torch

from occon_plugin import host
from occon_plugin.augment.config import OcconConfig, parse_occon_config, refuse_null_section
from occon_plugin.config import select
from occon_plugin.errors import ConfigError, OcconError
from occon_plugin.train import checks
from occon_plugin.train.process import current_plugin_command, in_foreign_hydra_app, stop_run

log = logging.getLogger(__name__)

# Per-sample record of the object-aware pipelines: ``oa_crop`` (B,) a box was used,
# ``mixed`` (B, n_views) the view was BG-mixed, plus counters such as ``replaced`` (bad image
# swapped for another) or ``no_entry`` (no store entry). Each is logged as a fraction.
OCCON_INFO_KEYS = ("oa_crop", "mixed")
_ABSENT = object()


def split_occon_batch(batch: Sequence[Any]) -> Tuple[list, Optional[Dict[str, torch.Tensor]]]:
    """``[idx, views, targets(, info)]`` -> (``[idx, views, targets]``, info or None).

    Raises:
        ValueError: a batch that is neither 3 nor 4 elements (with the record last).
        KeyError: the record lacks :data:`OCCON_INFO_KEYS`.
    """
    if len(batch) == 3:
        return list(batch), None
    if len(batch) == 4 and isinstance(batch[3], dict):
        missing = set(OCCON_INFO_KEYS) - set(batch[3])
        if missing:
            raise KeyError(f"object-aware batch record lacks {sorted(missing)}; it must hold {OCCON_INFO_KEYS}")
        return list(batch[:3]), batch[3]
    raise ValueError(
        "expected a batch [indexes, views, targets] or [indexes, views, targets, occon_info], "
        f"got {len(batch)} elements"
    )


def view_count(cfg: Any) -> int:
    """Views per sample: ``data.num_large_crops + data.num_small_crops`` (set by the host's and the
    plugin's ``parse_cfg``), else the ``num_crops`` of ``augmentations`` summed, else 2."""
    large = select(cfg, "data.num_large_crops")
    if large is not None:
        return int(large) + int(select(cfg, "data.num_small_crops", 0))
    augs = select(cfg, "augmentations")
    if augs:
        return sum(int(select(a, "num_crops", 1)) for a in augs)
    return 2


class OcconMethodMixin:
    """Mixed in before a host method class (``class X(OcconMethodMixin, MoCoV2Plus)``)."""

    # host.build_method: construct with the cfg on both host generations.
    occon_accepts_cfg = True
    # stops at a step with a non-finite loss and gradients (occon_plugin.finite); the plugin's callback skips us
    occon_checks_loss = True

    def __init__(self, cfg=None, **kwargs):
        """solo-learn main's scripts call ``Method(cfg)`` (the ``occon`` section is parsed here, once);
        ``occon-pretrain`` calls ``Method(cfg, occon=<OcconConfig>)`` with the section it parsed for its
        pipeline (used as is); solo-learn 1.0.2's own scripts call ``Method(**kwargs)`` (no ``occon``: stops).
        Bad ``occon`` values stop the run with one line (:func:`~occon_plugin.train.process.stop_run`)."""
        occon_raw = kwargs.pop("occon", _ABSENT)
        if cfg is not None:
            args, kwargs = host.parent_init_args(cfg)
            if occon_raw is _ABSENT:
                occon_raw = select(cfg, "occon")
            n_views, seed = view_count(cfg), int(select(cfg, "seed", 5))
        else:
            args = ()
            if occon_raw is _ABSENT:
                stop_run(ConfigError(
                    f"solo-learn {host.SOLO_VERSION}'s argparse main_pretrain.py builds "
                    f"`{getattr(self, 'occon_name', type(self).__name__)}` from command-line arguments, which "
                    f"cannot carry the `occon` section (store, OA-Crop, BG-Mixup): run the plugin's script "
                    f"with a YAML instead: {current_plugin_command()}"))
            n_views = int(kwargs.get("num_large_crops", 2)) + int(kwargs.get("num_small_crops", 0))
            seed = 5
        try:
            if cfg is not None and in_foreign_hydra_app():  # the host's own script: its cfg as the user gave it
                refuse_null_section(cfg)
            occon = occon_raw.check_views(n_views) if isinstance(occon_raw, OcconConfig) else \
                parse_occon_config(occon_raw, n_views=n_views, check_store=False)
            if occon.refresh is not None:
                from occon_plugin.train.refresh import check_preset

                check_preset(occon.refresh)
                occon.refresh.check_schedule(select(cfg, "max_epochs") if cfg is not None else None)
        except OcconError as err:
            stop_run(err)
        if occon.active and cfg is not None and select(cfg, "data.format") == "dali" and in_foreign_hydra_app():
            # solo-learn's own main_pretrain.py with data.format=dali: its DALI data module builds the
            # batches; stop now (its setup() runs before any hook of ours, and needs a GPU)
            stop_run(ConfigError(checks.foreign_datamodule_message("PretrainDALIDataModule")))
        if cfg is not None and in_foreign_hydra_app():
            # the host's script creates its WandbLogger after the method with wandb.offline (default false):
            # without an API key that would fail in wandb's login; the plugin's W&B rule decides instead
            from occon_plugin.tracking import honour_wandb_environment

            honour_wandb_environment(cfg)
        with _as_parent_method(cfg, getattr(type(self), "occon_parent", None)):
            super().__init__(*args, **kwargs)
        self.occon: OcconConfig = occon  # parsed once; the pipeline got the same object (occon-pretrain)
        self._occon_cfg = cfg  # the run's cfg (None under 1.0.2's kwargs): W&B pictures, finite-loss hints
        self._occon_n_views = n_views
        self._occon_seed = seed
        self._occon_pictures_logged = False

    # ---------------------------------------------------------------- Lightning hooks
    def configure_callbacks(self):
        """``occon.refresh`` in a trainer that has no refresh step (solo-learn's own ``main_pretrain.py``, a
        trainer built by hand): the method brings it (``occon-pretrain`` gives its own, kept as is)."""
        parent = getattr(super(), "configure_callbacks", None)
        callbacks = list(parent() or []) if parent is not None else []
        trainer = getattr(self, "_trainer", None)
        if self.occon.refresh is None or self._occon_cfg is None or (
                trainer is not None and any(getattr(c, "occon_refresh", False) for c in trainer.callbacks)):
            return callbacks
        from occon_plugin.train.refresh import refresh_callback

        return callbacks + [refresh_callback(self._occon_cfg, self.occon.refresh)]

    def setup(self, stage: Optional[str] = None):
        """Lightning's first hook of ``trainer.fit`` (before ``configure_optimizers``, whose
        ``estimated_stepping_batches`` already iterates the training loader in Lightning 2.x)."""
        parent = getattr(super(), "setup", None)
        if parent is not None:
            parent(stage)
        if not self.occon.active or stage != "fit":  # TrainerFn.FITTING is a str enum: == "fit"
            return
        try:
            self._occon_check_fit()
            # before Lightning creates the loader's iterator (and so forks its worker processes)
            self._occon_attach_to_host_data(host.pending_train_dataloaders(self.trainer))
        except OcconError as err:
            stop_run(err)

    def on_train_start(self):
        parent = getattr(super(), "on_train_start", None)
        if parent is not None:
            parent()
        if self.occon.active:
            try:
                datasets = self._occon_check_object_aware(host.train_dataloaders(self.trainer))
            except OcconError as err:
                stop_run(err)
            self._occon_log_pictures(datasets)

    def on_save_checkpoint(self, checkpoint: Dict[str, Any]) -> None:
        parent = getattr(super(), "on_save_checkpoint", None)
        if parent is not None:
            parent(checkpoint)
        # a resumed run continues the same W&B run: its pictures were logged once already
        checkpoint["occon_pictures_logged"] = bool(self._occon_pictures_logged)

    def on_load_checkpoint(self, checkpoint: Dict[str, Any]) -> None:
        parent = getattr(super(), "on_load_checkpoint", None)
        if parent is not None:
            parent(checkpoint)
        self._occon_pictures_logged = bool(checkpoint.get("occon_pictures_logged", self._occon_pictures_logged))

    def on_before_backward(self, loss) -> None:
        parent = getattr(super(), "on_before_backward", None)
        if parent is not None:
            parent(loss)
        from occon_plugin.finite import note_loss

        note_loss(self, loss)

    def on_before_optimizer_step(self, optimizer, *args) -> None:
        """Stop before a step whose loss is NaN/Inf and whose gradients are not finite (in any script, the
        host's own ``main_pretrain.py`` included): one line naming the step, the loss and the likely key
        (``occon_plugin.finite``; a NaN loss with finite gradients, as DeepClusterV2's first epoch, goes on)."""
        parent = getattr(super(), "on_before_optimizer_step", None)
        if parent is not None:
            parent(optimizer, *args)
        from occon_plugin.finite import check_step

        try:
            check_step(self.trainer, self, optimizer)
        except OcconError as err:
            stop_run(err)

    def training_step(self, batch: Sequence[Any], batch_idx: int):
        batch, info = split_occon_batch(batch)
        if info is not None:
            self._log_occon_info(info)
        elif self.occon.active:
            stop_run(ConfigError(
                "the `occon` section enables "
                f"{' and '.join(n for n, on in (('OA-Crop', self.occon.oa_crop), ('BG-Mixup', self.occon.bg_mixup.enabled)) if on)}"
                " but the training batches come without the object-aware record (3 elements): the data "
                f"pipeline did not run them; use the plugin's pipeline: {current_plugin_command()}"))
        return super().training_step(batch, batch_idx)

    # ---------------------------------------------------------------- helpers (occon_plugin.train.checks)
    def _occon_check_fit(self) -> None:
        """Before anything runs: the store exists, and the data comes from a pipeline that can run
        the object-aware augmentations."""
        self.occon.require_store()
        checks.check_datamodule(getattr(self.trainer, "datamodule", None))
        if self.occon.refresh is not None and not any(getattr(c, "occon_refresh", False)
                                                      for c in getattr(self.trainer, "callbacks", ())):
            raise ConfigError("occon.refresh.enabled=true but this trainer has no refresh step (it would train "
                              f"without OA-Crop / BG-Mixup all along): run {current_plugin_command()}")

    def _occon_attach_to_host_data(self, loaders: list) -> None:
        checks.attach_to_host_data(loaders, self.occon, self._occon_n_views, self._occon_seed)

    def _occon_check_object_aware(self, loaders: list) -> list:
        return checks.check_object_aware(self.trainer, loaders, self.occon, self._occon_n_views, self._occon_seed)

    def _occon_log_pictures(self, datasets: list) -> None:
        """Once per run, on W&B: a few samples' views with OA-Crop boxes and BG-Mixup flags (the flag travels
        in the checkpoints, so a resumed run, which continues its W&B run, does not log them again)."""
        if self._occon_pictures_logged or getattr(self.trainer, "global_rank", 0) != 0:
            return
        from occon_plugin.train import tracking

        if tracking.log_run_pictures(self.trainer, datasets, self._occon_cfg, self.occon):
            self._occon_pictures_logged = True

    def _log_occon_info(self, info: Dict[str, torch.Tensor]) -> None:
        names = {"oa_crop": "oa_crop_frac", "mixed": "bg_mixed_frac"}
        stats = {f"occon/{names.get(k, k + '_frac')}": v.float().mean()
                 for k, v in info.items() if torch.is_tensor(v)}
        self.log_dict(stats, on_epoch=True, sync_dist=True)


@contextlib.contextmanager
def _as_parent_method(cfg: Any, parent: Optional[str]):
    """``cfg.method`` reads as the parent's name while the parent's ``__init__`` runs: solo-learn
    main picks the backbone constructor by it (``vit_*`` for ``mae`` / ``mocov3`` are their own
    ViTs), so ``mae_occon`` must build what ``mae`` builds. The same cfg object (the host fills its
    defaults in place, as for the parent); ``method`` is restored afterwards."""
    method = select(cfg, "method") if cfg is not None else None
    if parent is None or method is None or method == parent:
        yield
        return
    cfg.method = parent
    try:
        yield
    finally:
        cfg.method = method
