"""The ``occon`` config section: parsed once, validated with errors that name the key."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from occon_plugin.errors import ConfigError
from occon_plugin.store import POLICIES

# Paper §3.3 / App. E.2: p_mix = 0.4 for MoCo v2 (0.3 for BYOL); App. B.3: masks binarized at 0.2.
DEFAULT_P_MIX = 0.4
DEFAULT_HARD_THRESHOLD = 0.2

_TOP_KEYS = {"store", "missing", "oa_crop", "bg_mixup", "enabled"}
_OA_CROP_KEYS = {"enabled"}
_BG_MIXUP_KEYS = {"enabled", "p_mix", "hard", "hard_threshold", "views"}


class OcconConfigError(ConfigError):
    """An ``occon.*`` value that cannot be used; the message names the key and what to do."""


@dataclass(frozen=True)
class BgMixupConfig:
    enabled: bool = False
    p_mix: float = DEFAULT_P_MIX
    hard: bool = False                 # BG-HardMix: binarize the mask (copy-and-paste)
    hard_threshold: float = DEFAULT_HARD_THRESHOLD
    views: tuple[int, ...] = (0, 1)    # which views may be mixed (each with probability p_mix)


@dataclass(frozen=True)
class OcconConfig:
    store: Path | None = None
    missing: str = "error"             # error | skip | full_image (occon_plugin.store.POLICIES)
    oa_crop: bool = False
    bg_mixup: BgMixupConfig = BgMixupConfig()

    @property
    def active(self) -> bool:
        """Does any object-aware augmentation run (and so the store get read)?"""
        return self.oa_crop or self.bg_mixup.enabled


def _plain(cfg: Any) -> dict:
    """DictConfig / Mapping / None -> plain dict (no OmegaConf import needed by callers)."""
    if cfg is None:
        return {}
    try:
        from omegaconf import DictConfig, OmegaConf

        if isinstance(cfg, DictConfig):
            return OmegaConf.to_container(cfg, resolve=True)
    except ImportError:  # pragma: no cover - omegaconf is a dependency
        pass
    if not isinstance(cfg, Mapping):
        raise OcconConfigError(f"occon must be a mapping of settings, got {type(cfg).__name__}")
    return dict(cfg)


def _check_keys(section: dict, allowed: set[str], prefix: str) -> None:
    unknown = sorted(set(section) - allowed)
    if unknown:
        raise OcconConfigError(f"unknown key(s) {', '.join(prefix + k for k in unknown)}; "
                               f"allowed: {', '.join(prefix + k for k in sorted(allowed))}")


def _bool(value: Any, key: str) -> bool:
    if isinstance(value, bool):
        return value
    raise OcconConfigError(f"{key}={value!r} must be true or false")


def _unit(value: Any, key: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise OcconConfigError(f"{key}={value!r} must be a number in [0, 1]") from None
    if not 0.0 <= number <= 1.0:
        raise OcconConfigError(f"{key}={value!r} must be in [0, 1]")
    return number


def _section(raw: dict, name: str, allowed: set[str]) -> dict:
    section = raw.get(name) or {}
    if isinstance(section, bool):  # `oa_crop: true` shorthand
        section = {"enabled": section}
    if not isinstance(section, dict):
        raise OcconConfigError(f"occon.{name} must be a mapping like {{enabled: true}}, got {section!r}")
    _check_keys(section, allowed, f"occon.{name}.")
    return section


def parse_occon_config(cfg: Any, n_views: int = 2, check_store: bool = True) -> OcconConfig:
    """Validate ``cfg.occon`` (None/absent = everything off). ``n_views`` bounds ``bg_mixup.views``;
    ``check_store`` requires ``occon.store`` to be an existing folder when an augmentation is on."""
    raw = _plain(cfg)
    _check_keys(raw, _TOP_KEYS, "occon.")
    if raw.get("enabled") is False:  # a global switch: `occon: {enabled: false}` = host baseline
        return OcconConfig()
    oa = _section(raw, "oa_crop", _OA_CROP_KEYS)
    bg = _section(raw, "bg_mixup", _BG_MIXUP_KEYS)

    views_raw = bg.get("views", [0, 1])
    if isinstance(views_raw, int) or not all(isinstance(v, int) and not isinstance(v, bool) for v in views_raw):
        raise OcconConfigError(f"occon.bg_mixup.views={views_raw!r} must be a list of view indexes, e.g. [0, 1]")
    views = tuple(views_raw)
    bad = [v for v in views if not 0 <= v < n_views]
    if bad or len(set(views)) != len(views):
        raise OcconConfigError(f"occon.bg_mixup.views={list(views)} must be distinct indexes in [0, {n_views - 1}] "
                               f"(the augmentations produce {n_views} views)")
    bg_cfg = BgMixupConfig(
        enabled=_bool(bg.get("enabled", False), "occon.bg_mixup.enabled"),
        p_mix=_unit(bg.get("p_mix", DEFAULT_P_MIX), "occon.bg_mixup.p_mix"),
        hard=_bool(bg.get("hard", False), "occon.bg_mixup.hard"),
        hard_threshold=_unit(bg.get("hard_threshold", DEFAULT_HARD_THRESHOLD), "occon.bg_mixup.hard_threshold"),
        views=views,
    )
    missing = raw.get("missing", "error")
    if missing not in POLICIES:
        raise OcconConfigError(f"occon.missing={missing!r} must be one of {', '.join(POLICIES)}")
    store = raw.get("store")
    out = OcconConfig(store=Path(store).expanduser() if store else None, missing=missing,
                      oa_crop=_bool(oa.get("enabled", False), "occon.oa_crop.enabled"), bg_mixup=bg_cfg)
    if out.active and check_store:
        if out.store is None:
            raise OcconConfigError("occon.store is required when occon.oa_crop or occon.bg_mixup is enabled: "
                                   "set it to the folder written by occon-localize")
        if not out.store.is_dir():
            raise OcconConfigError(f"occon.store={out.store} does not exist (or is not a folder): "
                                   f"build it with occon-localize or fix the path")
    return out
