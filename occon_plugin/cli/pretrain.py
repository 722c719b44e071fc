"""Pretraining entry point (``occon-pretrain`` / ``scripts/pretrain/main_pretrain.py``).

Same YAML schema and command line as solo-learn main's ``main_pretrain.py``::

    occon-pretrain --config-path scripts/pretrain/coco --config-name mocov2_occon.yaml \
        ++data.train_path=... ++occon.store=...
    occon-pretrain --config-name coco/mocov2_occon ++data.train_path=... ++occon.store=...   # shipped YAML

It trains with the installed solo-learn (1.0.2 or main) through the plugin's own object-aware
pipelines (``data.format=image_folder``: torchvision v2; ``data.format=dali``: DALI) and writes the
run folder ``<checkpoint.dir>/<method>/<name>/``: ``config.yaml``, ``args.json`` (solo-learn's
layout, read by the host's ``main_knn.py`` / ``main_umap.py``), ``last.ckpt``, ``final.ckpt``.
"""
from __future__ import annotations

import json
import signal
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from occon_plugin.atomic import atomic_path, make_output_dir
from occon_plugin.cli._hydra import solo_style_main
from occon_plugin.config import PretrainRun, parse_pretrain_cfg
from occon_plugin.errors import ConfigError
from occon_plugin.train.process import Terminated
from occon_plugin.train.runs import save_final_checkpoint  # noqa: F401  (also the CLI module's API)


# relative paths given on the command line are read from the launch folder (hydra.job.chdir=true moves the process)
PATH_INPUTS = ("data.train_path", "data.val_path", "data.image_root", "occon.store")


def run_dir(cfg: DictConfig) -> Path:
    return Path(cfg.checkpoint.dir) / str(cfg.method) / str(cfg.name)


def build_train_data(run: PretrainRun, world: int = 1, with_info: bool = True):
    """(train_dataloader, datamodule): exactly one is not None; both pipelines get ``run.occon`` (parsed
    once). ``world``: the number of training processes (the DALI data module reads it from the trainer).
    ``with_info``: batches carry the object-aware record (the ``*_occon`` methods); False: the host's
    three-element batches. Raises :class:`ConfigError` / ``DataError`` for data the run cannot use."""
    if run.cfg.data.format == "dali":
        from occon_plugin.augment.dali import build_dali_datamodule

        return None, build_dali_datamodule(run.cfg, with_info=with_info, occon=run.occon)
    from occon_plugin.augment.dataset import build_pretrain_dataloader

    return build_pretrain_dataloader(run.cfg, world=world, with_info=with_info, occon=run.occon), None


def is_object_aware_method(run: PretrainRun, methods) -> bool:
    """Is ``cfg.method`` one of the plugin's ``*_occon`` methods? A plain host method (``mocov2plus``,
    the paper's baseline) trains on the same pipeline with its own three-element batches; with an
    object-aware augmentation switched on it is refused (it would silently train without it).
    Raises :class:`ConfigError` for that case."""
    from occon_plugin.methods import OcconMethodMixin, table

    cfg = run.cfg
    if issubclass(methods[cfg.method], OcconMethodMixin):
        return True
    if run.occon.active:
        occon_name = next((name for name, parent in table.parents().items() if parent == cfg.method), None)
        use = f"method={occon_name}" if occon_name else "an object-aware method (occon-pretrain lists them)"
        raise ConfigError(f"method={cfg.method} is solo-learn's own method: it cannot run the `occon` "
                          f"augmentations (OA-Crop / BG-Mixup) this config switches on; use {use}, or "
                          f"occon.enabled=false for the plain baseline")
    return False


def set_num_classes(cfg: DictConfig) -> None:
    """The host's online classifier is sized by the data: class sub-folders, or one dummy class.
    Also checks, before anything is built, that a batch fits in the data.

    Raises:
        ConfigError: fewer images than ``optimizer.batch_size``.
    """
    from occon_plugin.images import list_images

    images = list_images(cfg.data.train_path, OmegaConf.select(cfg, "data.image_root", default=None))
    if len(images) < int(cfg.optimizer.batch_size):
        raise ConfigError(f"optimizer.batch_size={cfg.optimizer.batch_size} is larger than the {len(images)} images "
                          f"under data.train_path={cfg.data.train_path}: no batch would be trained; lower it")
    num_classes = len(images.classes) if images.labels is not None else 1
    if int(cfg.data.num_classes) != num_classes:
        print(f"[occon] data.num_classes={cfg.data.num_classes} -> {num_classes} (classes under data.train_path)")
        cfg.data.num_classes = num_classes


def write_run_config(cfg: DictConfig, out_dir: Path, wandb_run_id=None) -> None:
    """``config.yaml`` (the plugin's) and ``args.json`` (solo-learn's Checkpointer layout: the cfg +
    ``wandb_run_id``; the host's ``main_knn.py`` / ``main_umap.py`` rebuild the method from it)."""
    with atomic_path(out_dir / "config.yaml") as tmp:
        OmegaConf.save(cfg, tmp)
    args = OmegaConf.to_container(cfg, resolve=True)
    args["wandb_run_id"] = wandb_run_id
    with atomic_path(out_dir / "args.json") as tmp:
        Path(tmp).write_text(json.dumps(args, indent=2, default=str))


def pretrain(cfg: DictConfig) -> Path:
    """Train and return the path of the final checkpoint.

    Stops (one line from the CLI): bad input (exit 2), a non-finite loss (exit 3, before the weights
    change; ``occon_plugin.finite``), out of memory (exit 2 naming ``optimizer.batch_size``), a full
    disk while saving (exit 2 naming the folder; the previous checkpoint intact), SIGTERM / Ctrl-C (exit
    143 / 130 after saving a resumable ``last.ckpt``; a second signal stops at once, without
    ``final.ckpt``), another run training in the same folder (exit 2).

    Raises:
        KeyboardInterrupt: a second Ctrl-C that Lightning swallowed (no ``final.ckpt``); every bad input raises from
        :class:`~occon_plugin.errors.OcconError` (the CLI prints one line).
    """
    from occon_plugin import host, register  # raises a one-line HostMissingError without solo-learn
    from occon_plugin.cli._hydra import stop_signals_taken_by
    from occon_plugin.finite import finite_loss_callback
    from occon_plugin.tracking import finish_wandb
    from occon_plugin.train import runs
    from occon_plugin.train.tracking import make_wandb_logger

    register()
    run = parse_pretrain_cfg(cfg, host.METHODS, check_store=True)  # the one parse of the run's settings
    cfg = run.cfg
    if run.occon.refresh is not None:
        from occon_plugin.train.refresh import check_preset

        check_preset(run.occon.refresh)
    set_num_classes(cfg)
    host.seed_everything(int(cfg.seed))

    # resume only a run with the same settings; never overwrite another run; one run per folder at a time
    plan, locks = runs.lock_and_plan(cfg)
    logger = None
    try:
        rank0 = runs.launched_rank() == 0
        for note in plan.notes if rank0 else ():
            print(f"[occon] {note}")
        out_dir, ckpt_path = plan.out_dir, plan.ckpt_path
        make_output_dir(out_dir)

        # an object-aware method gets the same parsed `occon` as the pipeline; a plain host method none
        object_aware = is_object_aware_method(run, host.METHODS)
        model = host.build_method(cfg.method, cfg, **({"occon": run.occon} if object_aware else {}))

        # momentum tau + RNGs, which checkpoints do not restore; a non-finite loss stops before backward;
        # SIGTERM: a resumable last.ckpt at the next step boundary, exit 143
        resume_state = runs.resume_state_callback()
        stop = runs.stop_on_signal_callback(out_dir, resume_state)
        callbacks = [resume_state, finite_loss_callback(), stop]
        refresh = None
        if object_aware and run.occon.refresh is not None:
            # it refreshes after an epoch's last step, before the epoch-end hooks: last.ckpt names the new store
            from occon_plugin.train.refresh import refresh_callback

            refresh = refresh_callback(cfg, run.occon.refresh, out_dir,
                                       lambda module, trainer, path: save_final_checkpoint(module, trainer, cfg, path))
            callbacks.append(refresh)
        if cfg.checkpoint.enabled:
            callbacks.append(
                host.ModelCheckpoint(
                    dirpath=str(out_dir),
                    filename="epoch{epoch}",
                    save_last=True,
                    save_top_k=0,
                    every_n_epochs=int(cfg.checkpoint.frequency),
                )
            )
        run_id_file = out_dir / "wandb_run_id"
        run_id = run_id_file.read_text().strip() if (ckpt_path and run_id_file.is_file()) else None
        logger = make_wandb_logger(cfg, out_dir, run_id=run_id)
        if logger is not None:
            callbacks.append(host.LearningRateMonitor(logging_interval="step"))
        if rank0:
            if logger is not None:
                run_id_file.write_text(str(logger.version))
            write_run_config(cfg, out_dir, logger.version if logger is not None else None)
            runs.record_store(cfg, out_dir)  # a resume then refuses a store rebuilt in place

        trainer = host.make_trainer(
            cfg,
            logger=logger if logger is not None else False,
            callbacks=callbacks,
            enable_checkpointing=bool(cfg.checkpoint.enabled),
            default_root_dir=str(out_dir),
            # atomic (kill -9 while saving never leaves a torn last.ckpt), finite weights only, one line on a full disk
            plugins=[runs.atomic_checkpoint_io()],
            **host.KEEP_SAMPLER,  # the pipelines shard per rank themselves (same samples for any world size)
        )
        train_loader, datamodule = build_train_data(run, world=int(trainer.world_size),
                                                    with_info=object_aware)
        if refresh is not None and train_loader is not None:
            refresh.dataset = train_loader.dataset  # switched in place to each refreshed store version
        # (DALI: the data module's loader, built in the module's setup, is found by the callback's setup)
        runs.share_plan(cfg, plan)  # the DDP processes Lightning starts use this folder and checkpoint
        with stop_signals_taken_by(stop.take):  # SIGTERM / Ctrl-C: resumable last.ckpt, then 143 / 130
            try:
                if datamodule is not None:
                    trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path)
                else:
                    trainer.fit(model, train_dataloaders=train_loader, ckpt_path=ckpt_path)
            except host.LightningSigterm:  # Lightning 2.x stopped fit itself (SIGTERM in a hook the callback misses)
                raise Terminated(signal.SIGTERM, "Lightning ended the run before a resumable checkpoint of this step "
                                 "could be saved; run the same command again to resume from the last checkpoint")
        if trainer.interrupted:  # Lightning swallows a KeyboardInterrupt (a second Ctrl-C): no final.ckpt, exit 130
            raise KeyboardInterrupt

        final = out_dir / "final.ckpt"
        if trainer.is_global_zero:
            save_final_checkpoint(model, trainer, cfg, final)
        summary = {"checkpoint": str(final), "global_step": int(trainer.global_step), "host": host.describe()}
        if trainer.is_global_zero:
            print("[occon] pretraining done: " + json.dumps(summary))
        if stop.signum is not None:
            print(f"[occon] {runs.signal_name(stop.signum)} arrived after the last step: the run is complete")
        return final
    finally:
        runs.unshare_plan()
        finish_wandb(logger)  # one W&B run per job (Hydra multirun: the next job starts its own)
        for lock in locks:
            lock.release()


main = solo_style_main(pretrain, kind="pretrain", inputs=PATH_INPUTS, outputs=("checkpoint.dir",),
                       batch_key="optimizer.batch_size", resumes=True)


if __name__ == "__main__":
    main()
