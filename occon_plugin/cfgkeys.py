"""Reading keys of a run's cfg (a DictConfig or a plain dict): the leaf helpers every layer uses, the host
adapter (:mod:`occon_plugin.host`) included. Imports nothing of the plugin, so no layer's import of it can close
an import circle; :mod:`occon_plugin.config` re-exports them."""
from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf


def select(cfg: DictConfig | dict, key: str, default: Any = None) -> Any:
    """``cfg.<key>`` (dotted, ``a[0].b`` too) of a DictConfig or plain dict; ``default`` if missing or null."""
    if isinstance(cfg, dict):
        cfg = OmegaConf.create(cfg)
    value = OmegaConf.select(cfg, key, default=default)
    return default if value is None else value


def num_devices(cfg: DictConfig) -> int:
    """Processes per node from ``devices`` (an int, a digit string or a list of device ids; anything else: 1)."""
    devices = select(cfg, "devices", 1)
    if isinstance(devices, int):
        return max(devices, 1)
    if isinstance(devices, str):
        return int(devices) if devices.isdigit() else 1
    return max(len(devices), 1)
