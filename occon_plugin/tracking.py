"""Weights & Biases: on by config, offline automatically when no API key is configured."""
from __future__ import annotations

import netrc
import os
from pathlib import Path
from typing import Optional

from omegaconf import DictConfig, OmegaConf


def wandb_api_key_configured() -> bool:
    """True when an API key is set in the environment or stored by ``wandb login`` (netrc)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


def wandb_offline(cfg: DictConfig) -> bool:
    explicit = OmegaConf.select(cfg, "wandb.offline", default=None)
    if explicit is not None:
        return bool(explicit)
    return not wandb_api_key_configured()


def make_wandb_logger(cfg: DictConfig, save_dir: Path, run_id: Optional[str] = None):
    """The host's ``WandbLogger`` writing its run files under ``save_dir``, or None if disabled."""
    if not OmegaConf.select(cfg, "wandb.enabled", default=False):
        return None
    from occon_plugin import host

    save_dir.mkdir(parents=True, exist_ok=True)
    offline = wandb_offline(cfg)
    # Lightning only sets WANDB_MODE for offline runs, which wandb ignores once a run was set up
    # in this process; an explicit mode always wins.
    extra = {"mode": "offline"} if offline else {}
    logger = host.WandbLogger(
        name=str(cfg.name),
        project=str(OmegaConf.select(cfg, "wandb.project", default="occon-plugin")),
        entity=OmegaConf.select(cfg, "wandb.entity", default=None),
        offline=offline,
        save_dir=str(save_dir),
        id=run_id,
        resume="allow" if run_id else None,
        **extra,
    )
    logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
    return logger
