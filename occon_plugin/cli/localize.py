"""``occon-localize``: localize a dataset into a mask store (Hydra CLI).

    occon-localize data.path=<image folder or COCO json> output_dir=<store> [key=value ...]
    torchrun --nproc_per_node=N -m occon_plugin.cli.localize ...   # ranks split whole batches
"""
from __future__ import annotations

import os
from pathlib import Path

import hydra
from omegaconf import DictConfig

from occon_plugin.cli._hydra import exit_on_bad_input
from occon_plugin.cli.overrides import exit_on_bad_overrides
from occon_plugin.config import typed_settings
from occon_plugin.errors import ConfigError, DataError
from occon_plugin.localize.runner import run_localize
from occon_plugin.localize.settings import LocalizeSettings, check_settings
from occon_plugin.tracking import log_localize_run, split_wandb_settings

CONFIG_DIR = str(Path(__file__).resolve().parents[1] / "configs")


def settings_from_config(cfg: DictConfig) -> LocalizeSettings:
    """``cfg`` (the composed ``localize.yaml``) merged into :class:`LocalizeSettings` and range-checked: the one
    place the command's settings are parsed.

    Raises:
        ConfigError: a key of the wrong type or out of range (one line naming the key).
    """
    settings = typed_settings(LocalizeSettings, cfg)
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


SHOW_BAD = 5


def _report(summary: dict) -> None:
    """Print where everything is, the first few bad images with their reasons (the rest: in the
    manifest), what the listing skipped on purpose; raise :class:`DataError` (exit 2) when not one
    image could be localized."""
    out = Path(summary["store"])
    manifest = summary["manifest"]
    counts = manifest["counts"]
    print(f"occon-localize: store {out} has {counts['ok']} masks and {counts['skipped']} skipped images "
          f"of {summary['listed']} listed ({summary['written_ok'] + summary['written_bad']} written now, "
          f"{summary['already_done']} from before, {summary['seconds']} s)")
    print(f"  masks:    {out / 'masks'}\n  index:    {out / 'index.jsonl'}\n  manifest: {out / 'manifest.json'}")
    if (out / "overlays").is_dir():
        print(f"  overlays: {out / 'overlays'}")
    skipped = manifest.get("skipped_images") or []
    if skipped:
        print(f"  {len(skipped)} unreadable image(s) skipped, first {min(SHOW_BAD, len(skipped))}:")
        for item in skipped[:SHOW_BAD]:
            print(f"    {item['path']}: {item['status']}")
        if len(skipped) > SHOW_BAD:
            print(f"    ... all {len(skipped)} with reasons in {out / 'manifest.json'} under skipped_images")
    repaired = summary.get("redone_damaged") or {}
    if repaired:
        shown = [f"{p} ({why})" for p, why in list(repaired.items())[:SHOW_BAD]]
        print(f"  {len(repaired)} damaged store entr{'y' if len(repaired) == 1 else 'ies'} localized again: "
              f"{'; '.join(shown)}{' ...' if len(repaired) > SHOW_BAD else ''}")
    changed = summary.get("changed_during_run") or []
    if changed:
        print(f"  {len(changed)} image(s) changed while being localized (replaced or still being written) and are "
              f"not in the store: {', '.join(changed[:SHOW_BAD])}{' ...' if len(changed) > SHOW_BAD else ''}; run the "
              f"same command again once they stay as they are (it adds them)")
    not_listed = summary.get("not_listed") or {}
    if not_listed:
        from occon_plugin.images import ImageList

        note = ImageList(Path(str(manifest.get("data", ""))), [], skipped=not_listed).skipped_summary()
        print(f"  {note}")
    if counts["ok"] == 0:
        first = "; ".join(f"{i['path']}: {i['status']}" for i in skipped[:3])
        raise DataError(f"none of the {summary['listed']} images under {manifest.get('data')} could be read, so the "
                        f"store {out} has no mask (first: {first}); check data.path")


def main() -> None:
    """The console command: overrides checked against localize.yaml (one line, exit 2), then Hydra."""
    exit_on_bad_overrides(Path(CONFIG_DIR) / "localize.yaml")
    _hydra_main()


@hydra.main(config_path=CONFIG_DIR, config_name="localize", version_base="1.2")
@exit_on_bad_input(inputs=("data.path", "data.image_root"), specs=("model",), outputs=("output_dir",),
                   batch_key="batch_size", resumes=True)
def _hydra_main(cfg: DictConfig) -> None:
    cfg, wandb_cfg = split_wandb_settings(cfg)  # ++wandb.enabled=true: counts + overlays on W&B
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
        log_localize_run(wandb_cfg, summary, settings.data)


if __name__ == "__main__":
    main()
