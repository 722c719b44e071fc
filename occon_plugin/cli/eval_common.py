"""Shared plumbing of the evaluation CLIs: device/threads, results on disk, W&B, console summary."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List, Optional

from omegaconf import DictConfig, OmegaConf

from occon_plugin.config import SEED_RANGE, ConfigError, Range, check_ranges
from occon_plugin.eval.report import format_table, init_wandb, write_results

CONFIG_DIR = str(Path(__file__).resolve().parents[1] / "configs")


def plain_config(cfg: DictConfig) -> DictConfig:
    """The config without Hydra's own node."""
    return OmegaConf.masked_copy(cfg, [k for k in cfg.keys() if k != "hydra"]) if "hydra" in cfg else cfg


# The numeric settings of the linear evaluations (occon-eval-linear, occon-eval-bgchallenge): one table.
LINEAR_EVAL_RANGES = {
    "batch_size": Range(1, integer=True),
    "num_workers": Range(0, integer=True, hint="0: load in the main process"),
    "resize": Range(1, integer=True),
    "crop": Range(1, integer=True),
    "threads": Range(1, integer=True, nullable=True),
    "val_fraction": Range(0, 1, low_open=True, high_open=True, hint="the share of train_dir held out to choose l2"),
    "l2_values": Range(0, low_open=True, nullable=True, hint="l2 penalties; null: the paper's grid"),
    "seed": SEED_RANGE,
}


def check_linear_eval_settings(cfg: DictConfig) -> None:
    """Range checks of the linear evaluations' settings (one line naming the key, exit 2), before any
    model or image is loaded. A crop larger than the resized shorter side would pad the images with
    black (torchvision's ``CenterCrop``): refused.
    Raises :class:`~occon_plugin.errors.ConfigError`."""
    check_ranges(cfg, LINEAR_EVAL_RANGES)
    if int(cfg.crop) > int(cfg.resize):
        raise ConfigError(f"crop={cfg.crop} is larger than resize={cfg.resize} (the shorter side after resizing): "
                          f"the images would be padded with black; use crop <= resize")


def setup_torch(cfg: DictConfig) -> str:
    """Apply ``threads`` and resolve ``device: auto``; returns the device string."""
    import torch

    if cfg.get("threads"):
        torch.set_num_threads(int(cfg.threads))
    device = str(cfg.get("device", "auto"))
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return device


def finish(cfg: DictConfig, name: str, rows: List[Dict[str, Any]], details: Dict[str, Any],
           summary: Dict[str, Any], wandb_extra=None) -> Dict[str, Any]:
    """Write ``<output_dir>/<name>.csv/.json``, log to W&B, print the table and a one-line JSON summary."""
    out = Path(cfg.output_dir)
    csv_path, json_path = write_results(out, name, rows, {"summary": summary, **details,
                                                          "config": OmegaConf.to_container(plain_config(cfg))})
    run = init_wandb(plain_config(cfg), out, job_type=name)
    if run is not None:
        import wandb

        run.summary.update({k: v for k, v in summary.items() if isinstance(v, (int, float, str))})
        table = wandb.Table(columns=list(rows[0]), data=[[r.get(c) for c in rows[0]] for r in rows])
        run.log({f"{name}/table": table, **({} if wandb_extra is None else wandb_extra(wandb))})
        run.finish()
    print(format_table(rows))
    print(f"results: {csv_path} and {json_path}" + (f"; W&B run in {out / 'wandb'}" if run is not None else ""))
    print(f"[occon] {name} done: " + json.dumps(summary, default=str))
    return summary


def as_list(value) -> Optional[list]:
    return None if value is None else list(OmegaConf.to_container(value) if OmegaConf.is_config(value) else value)
