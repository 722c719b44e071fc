"""Pretraining entry point (``occon-pretrain`` / ``scripts/pretrain/main_pretrain.py``).

Same YAML schema and command line as solo-learn main's ``main_pretrain.py``::

    python scripts/pretrain/main_pretrain.py --config-path scripts/pretrain/coco --config-name mocov2_occon.yaml \
        ++data.train_path=... ++occon.store=...

It registers the plugin's methods, trains with the installed solo-learn (1.0.2 or main) and
writes ``<checkpoint.dir>/<method>/<name>/{last.ckpt,final.ckpt,config.yaml}``.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from occon_plugin import host, register
from occon_plugin.atomic import atomic_path
from occon_plugin.cli._hydra import solo_style_main
from occon_plugin.config import complete_pretrain_cfg
from occon_plugin.images import list_images
from occon_plugin.tracking import make_wandb_logger


def run_dir(cfg: DictConfig) -> Path:
    return Path(cfg.checkpoint.dir) / str(cfg.method) / str(cfg.name)


def build_train_data(cfg: DictConfig):
    """(train_dataloader, datamodule): exactly one is not None."""
    if cfg.data.format == "dali":
        from occon_plugin.augment.dali import build_dali_datamodule

        return None, build_dali_datamodule(cfg)
    from occon_plugin.augment.dataset import build_pretrain_dataloader

    return build_pretrain_dataloader(cfg), None


def pretrain(cfg: DictConfig) -> Path:
    """Train and return the path of the final checkpoint."""
    register()
    cfg = complete_pretrain_cfg(cfg, host.METHODS)
    host.seed_everything(int(cfg.seed))

    out_dir = run_dir(cfg)
    out_dir.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(cfg, out_dir / "config.yaml")

    train_loader, datamodule = build_train_data(cfg)
    # The host's online classifier is sized by the data: class sub-folders, or one dummy class.
    images = list_images(cfg.data.train_path, OmegaConf.select(cfg, "data.image_root", default=None))
    num_classes = len(images.classes) if images.labels is not None else 1
    if int(cfg.data.num_classes) != num_classes:
        print(f"[occon] data.num_classes={cfg.data.num_classes} -> {num_classes} (classes under data.train_path)")
        cfg.data.num_classes = num_classes
    model = host.build_method(cfg.method, cfg)

    ckpt_path = None
    last = out_dir / "last.ckpt"
    if cfg.auto_resume.enabled and last.is_file():
        ckpt_path = str(last)
        print(f"[occon] resuming from {last}")

    callbacks = []
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
        run_id_file.write_text(str(logger.version))
        callbacks.append(host.LearningRateMonitor(logging_interval="step"))

    trainer = host.make_trainer(
        cfg,
        logger=logger if logger is not None else False,
        callbacks=callbacks,
        enable_checkpointing=bool(cfg.checkpoint.enabled),
        default_root_dir=str(out_dir),
        **host.KEEP_SAMPLER,  # the pipelines shard per rank themselves (same samples for any world size)
    )
    if datamodule is not None:
        trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path)
    else:
        trainer.fit(model, train_dataloaders=train_loader, ckpt_path=ckpt_path)

    final = out_dir / "final.ckpt"
    checkpoint = {
        "state_dict": model.state_dict(),
        "global_step": trainer.global_step,
        "epoch": trainer.current_epoch,
        "occon": {
            "method": str(cfg.method),
            "backbone": str(cfg.backbone.name),
            "host_generation": host.GENERATION,
            "checkpoint_layout": host.CHECKPOINT_LAYOUT,
            "cfg": OmegaConf.to_container(cfg, resolve=True),
        },
    }
    with atomic_path(final) as tmp:
        torch.save(checkpoint, tmp)
    summary = {"checkpoint": str(final), "global_step": int(trainer.global_step), "host": host.describe()}
    print("[occon] pretraining done: " + json.dumps(summary))
    return final


main = solo_style_main(pretrain)


if __name__ == "__main__":
    main()
