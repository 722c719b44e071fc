"""``occon-localize``: localize a dataset into a mask store (Hydra CLI).

    occon-localize data.path=<image folder or COCO json> output_dir=<store> [key=value ...]
    torchrun --nproc_per_node=N -m occon_plugin.cli.localize ...   # ranks split whole batches
"""
from __future__ import annotations

import os
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from occon_plugin.cli._hydra import exit_on_bad_input
from occon_plugin.errors import ConfigError
from occon_plugin.localize.runner import LocalizeSettings, check_settings, run_localize

CONFIG_DIR = str(Path(__file__).resolve().parents[1] / "configs")


def settings_from_config(cfg: DictConfig) -> LocalizeSettings:
    """Type-check ``cfg`` against :class:`LocalizeSettings`; errors name the offending key."""
    cfg = OmegaConf.masked_copy(cfg, [k for k in cfg.keys() if k != "hydra"]) if "hydra" in cfg else cfg
    try:
        merged = OmegaConf.merge(OmegaConf.structured(LocalizeSettings), cfg)
        settings = OmegaConf.to_object(merged)
    except OmegaConfBaseException as err:
        key = getattr(err, "full_key", None)
        raise ConfigError(f"bad localize config{f' key {key!r}' if key else ''}: {getattr(err, 'msg', err)}") from None
    check_settings(settings)
    return settings


def _init_distributed(settings: LocalizeSettings) -> None:
    """Under torchrun (WORLD_SIZE > 1): join the process group; one GPU per local rank if any."""
    import torch
    import torch.distributed as dist

    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or dist.is_initialized():
        return
    use_cuda = settings.device != "cpu" and torch.cuda.is_available()
    if use_cuda:
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local_rank)
        settings.device = f"cuda:{local_rank}"
    dist.init_process_group("nccl" if use_cuda else "gloo")


def _report(summary: dict) -> None:
    out = Path(summary["store"])
    counts = summary["manifest"]["counts"]
    print(f"occon-localize: store {out} has {counts['ok']} masks and {counts['skipped']} skipped images "
          f"of {summary['listed']} listed ({summary['written_ok'] + summary['written_bad']} written now, "
          f"{summary['already_done']} from before, {summary['seconds']} s)")
    print(f"  masks:    {out / 'masks'}\n  index:    {out / 'index.jsonl'}\n  manifest: {out / 'manifest.json'}")
    if (out / "overlays").is_dir():
        print(f"  overlays: {out / 'overlays'}")
    if counts["skipped"]:
        print(f"  skipped images (unreadable) are listed in {out / 'manifest.json'} under skipped_images")


@hydra.main(config_path=CONFIG_DIR, config_name="localize", version_base="1.2")
@exit_on_bad_input
def main(cfg: DictConfig) -> None:
    settings = settings_from_config(cfg)
    _init_distributed(settings)
    try:
        summary = run_localize(settings)
    finally:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
    if summary["rank"] == 0:
        _report(summary)


if __name__ == "__main__":
    main()
