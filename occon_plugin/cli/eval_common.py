"""Shared plumbing of the evaluation CLIs: their typed settings (one closed schema per command, the
YAML's keys; checks next to them), device/threads, results on disk, W&B, console summary."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

from omegaconf import MISSING, DictConfig, OmegaConf

from occon_plugin.config import SEED_RANGE, ConfigError, Range, check_ranges, typed_settings
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


def check_linear_eval_settings(cfg: Any) -> None:
    """Range checks of the linear evaluations' settings (one line naming the key, exit 2), before any
    model or image is loaded. A crop larger than the resized shorter side would pad the images with
    black (torchvision's ``CenterCrop``): refused. ``cfg``: a DictConfig or the typed settings.
    Raises :class:`~occon_plugin.errors.ConfigError`."""
    if OmegaConf.is_config(cfg):
        check_ranges(cfg, LINEAR_EVAL_RANGES)
    if int(cfg.crop) > int(cfg.resize):
        raise ConfigError(f"crop={cfg.crop} is larger than resize={cfg.resize} (the shorter side after resizing): "
                          f"the images would be padded with black; use crop <= resize")


# ------------------------------------------------------------------------------------------------
# Typed settings (the YAMLs in occon_plugin/configs/ are the defaults users see; these schemas name the
# same keys with their types: a key the YAML lacks or a value of the wrong type is one line, exit 2).
# ------------------------------------------------------------------------------------------------
@dataclass
class EvalWandbSettings:
    enabled: bool = True
    offline: Optional[bool] = True      # false: online (needs an API key); null: online iff a key is configured
    project: str = "occon-eval"
    entity: Optional[str] = None
    name: Optional[str] = None


@dataclass
class LinearProbeSettings:
    """What both linear evaluations share (the frozen backbone, feature extraction, the L-BFGS probe)."""

    model: str = MISSING                # zoo name, checkpoint, or random:<arch>
    use_momentum: bool = False
    output_dir: str = MISSING
    resize: int = 256                   # shorter side, then a centre crop
    crop: int = 224
    batch_size: int = 64
    num_workers: int = 2
    device: str = "auto"                # auto, cpu, cuda, cuda:N
    threads: Optional[int] = None
    fast: bool = False
    l2_values: Optional[List[float]] = None  # null: the paper's grid
    val_fraction: float = 0.2
    seed: int = 0
    progress: bool = True
    wandb: EvalWandbSettings = field(default_factory=EvalWandbSettings)


@dataclass
class EvalLinearSettings(LinearProbeSettings):
    """``occon-eval-linear`` (occon_plugin/configs/eval_linear.yaml)."""

    train_dir: str = MISSING
    test_dir: str = MISSING
    output_dir: str = "outputs/eval_linear"
    val_group_regex: Optional[str] = None


@dataclass
class BgChallengeSettings(LinearProbeSettings):
    """``occon-eval-bgchallenge`` (occon_plugin/configs/eval_bgchallenge.yaml)."""

    root: str = MISSING
    variants: Optional[List[str]] = field(default_factory=lambda: [
        "original", "only_bg_b", "only_bg_t", "only_fg", "mixed_same", "mixed_rand", "mixed_next"])
    shift_sets: Optional[Dict[str, str]] = field(default_factory=dict)
    output_dir: str = "outputs/eval_bgchallenge"


def linear_probe_settings(schema: type, cfg: Any) -> Any:
    """``cfg`` as ``schema`` (:class:`EvalLinearSettings` / :class:`BgChallengeSettings`), ranges checked
    (:data:`LINEAR_EVAL_RANGES`, crop <= resize). Raises :class:`ConfigError` naming the key."""
    settings = typed_settings(schema, cfg, LINEAR_EVAL_RANGES)
    check_linear_eval_settings(settings)
    regex = getattr(settings, "val_group_regex", None)
    if regex:  # a bad pattern was a re.error traceback once the features were computed
        import re

        try:
            re.compile(regex)
        except re.error as err:
            raise ConfigError(f"val_group_regex={regex!r} is not a regular expression ({err}); quote it on the "
                              f"command line, e.g. \"val_group_regex='^(.*)_[0-9]+$'\"") from None
    return settings


def setup_torch(cfg: Any) -> str:
    """Apply ``threads`` and resolve ``device: auto``; returns the device string (``cfg``: typed settings or
    a DictConfig with ``threads`` / ``device``).

    Raises:
        ConfigError: a device other than auto, cpu, cuda, cuda:N, or CUDA asked for where it is not available
            (both were a torch RuntimeError traceback at the first tensor moved).
    """
    import torch

    threads, device = getattr(cfg, "threads", None), getattr(cfg, "device", None) or "auto"
    if threads:
        torch.set_num_threads(int(threads))
    device = str(device)
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if not (device == "cpu" or device == "cuda" or (device.startswith("cuda:") and device[5:].isdigit())):
        raise ConfigError(f"device={device!r} is invalid: use auto, cpu, cuda or cuda:N")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device={device!r} but CUDA is not available here; use device=cpu or device=auto")
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
    print(f"results: {csv_path} and {json_path}" + (f"; W&B run in {Path(run.dir).parent}" if run is not None else ""))
    print(f"[occon] {name} done: " + json.dumps(summary, default=str))
    return summary


def as_list(value) -> Optional[list]:
    return None if value is None else list(OmegaConf.to_container(value) if OmegaConf.is_config(value) else value)
