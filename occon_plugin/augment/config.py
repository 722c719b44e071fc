"""The ``occon`` config section: one structured schema (:class:`OcconSettings`, OmegaConf, as
:class:`occon_plugin.localize.runner.LocalizeSettings`), parsed once into the runtime
:class:`OcconConfig` the pipelines use; every error names the key (``occon.<key>``) and what to do.

```yaml
occon:
  enabled: true             # false: the host baseline whatever the rest says
  store: <store>            # written by occon-localize; required when an augmentation is on
  missing: error            # error | skip | full_image: images without a usable store entry
  allow_v1_store: false     # true: train on a store from before fingerprints (schema v1), sizes checked only
  oa_crop: {enabled: true}  # (shorthand: oa_crop: true)
  bg_mixup: {enabled: true, p_mix: 0.4, hard: false, hard_threshold: 0.2, views: null}  # views: null = every view
  refresh:                  # one-stage training: the store is made during the run from the model being trained
    enabled: false          # true: no occon.store; epochs < warmup_epochs train without OA-Crop / BG-Mixup
    warmup_epochs: 1        # the first refresh runs at the end of epoch warmup_epochs - 1
    every_epochs: 1         # then one refresh every every_epochs epochs
    preset: bg_mixup        # the occon-localize preset of the refresh (bg_mixup: T=1, no refinement)
    image_size: null        # null: occon-localize's default
    batch_size: null        # null: occon-localize's default
    fraction: 1.0           # (0, 1]: a later refresh localizes this share of the batches, keeps the rest's masks
    reuse_iou: null         # (0, 1]: keep the masks that moved less than this between the two refreshes before
    precision: fp32         # the refresh's backbone forward: fp32 | bf16 | fp16 (occon-localize precision=)
```
"""
from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, List, Mapping, Optional

from occon_plugin.cfgkeys import CAM_IMAGE_SIZE
from occon_plugin.errors import ConfigError
from occon_plugin.store import POLICIES

# Paper §3.3 / App. E.2: p_mix = 0.4 for MoCo v2 (0.3 for BYOL); App. B.3: masks binarized at 0.2.
DEFAULT_P_MIX = 0.4
DEFAULT_HARD_THRESHOLD = 0.2

# occon.missing: what happens to an image without a usable store entry (occon_plugin.store.POLICIES)
MissingPolicy = enum.Enum("MissingPolicy", {policy: policy for policy in POLICIES})


@dataclass
class OaCropSettings:
    enabled: bool = False


@dataclass
class BgMixupSettings:
    enabled: bool = False
    p_mix: float = DEFAULT_P_MIX                 # probability that a view is mixed, in [0, 1]
    hard: bool = False                           # BG-HardMix: binarize the mask (copy-and-paste)
    hard_threshold: float = DEFAULT_HARD_THRESHOLD
    views: Optional[List[int]] = None            # view indexes that may be mixed; None: every view


@dataclass
class RefreshSettings:
    """``occon.refresh``: the store recomputed during the run (:mod:`occon_plugin.train.refresh`)."""

    enabled: bool = False
    warmup_epochs: int = 1                 # epochs trained without the object-aware augmentations, >= 1
    every_epochs: int = 1                  # epochs between two refreshes, >= 1
    preset: str = "bg_mixup"               # an occon-localize preset (occon_plugin.localize.presets.PRESETS) or auto
    image_size: Optional[int] = None       # the refresh's ContraCAM input size (None: occon-localize's default)
    batch_size: Optional[int] = None       # the refresh's localization batch (None: occon-localize's default)
    fraction: float = 1.0                  # (0, 1]: share of the batches a later refresh localizes again
    reuse_iou: Optional[float] = None      # (0, 1] or None: masks that barely moved are kept (docs/refresh.md)
    precision: str = "fp32"                # the refresh's backbone forward (occon-localize ``precision``)

    def problems(self) -> List[tuple]:
        """``(key, value, what)`` for every field out of range (keys relative to ``occon.refresh``)."""
        out = []
        for key in ("warmup_epochs", "every_epochs"):
            if getattr(self, key) < 1:
                out.append((key, getattr(self, key), "must be an integer >= 1"))
        # the preset's and the precision's names are checked against the localizer's tables where the run starts
        # (occon_plugin.train.refresh.check_preset: importing the localizer here would close an import circle)
        if not (isinstance(self.preset, str) and self.preset):
            out.append(("preset", self.preset, "use auto or a preset name of occon-localize"))
        if self.image_size is not None and not CAM_IMAGE_SIZE.accepts(self.image_size):
            out.append(("image_size", self.image_size, f"{CAM_IMAGE_SIZE.describe()} or null (occon-localize's "
                                                       "default)"))
        if self.batch_size is not None and self.batch_size < 2:
            out.append(("batch_size", self.batch_size, "must be >= 2 (the other images of a batch are the "
                                                       "negatives) or null (occon-localize's default)"))
        if not 0.0 < self.fraction <= 1.0:
            out.append(("fraction", self.fraction, "must be in (0, 1] (1: every refresh localizes every image)"))
        if self.reuse_iou is not None and not 0.0 < self.reuse_iou <= 1.0:
            out.append(("reuse_iou", self.reuse_iou, "must be in (0, 1] (the IoU above which a mask counts as "
                                                     "settled) or null (every refresh localizes every image)"))
        if self.reuse_iou is not None and self.fraction < 1.0:
            out.append(("reuse_iou", self.reuse_iou, f"set together with occon.refresh.fraction={self.fraction}; both "
                                                     f"choose which images a refresh keeps: set one of them "
                                                     f"(fraction=1.0 or reuse_iou=null)"))
        return out


@dataclass
class OcconSettings:
    """The ``occon`` section as written in a YAML (schema; unknown keys are errors)."""

    enabled: bool = True
    store: Optional[str] = None
    missing: MissingPolicy = MissingPolicy.error  # type: ignore[valid-type]
    allow_v1_store: bool = False                  # a schema-v1 store (no image fingerprints): refused unless true
    oa_crop: OaCropSettings = field(default_factory=OaCropSettings)
    bg_mixup: BgMixupSettings = field(default_factory=BgMixupSettings)
    refresh: RefreshSettings = field(default_factory=RefreshSettings)


class OcconConfigError(ConfigError):
    """An ``occon.*`` value that cannot be used; the message names the key and what to do."""


@dataclass(frozen=True)
class BgMixupConfig:
    enabled: bool = False
    p_mix: float = DEFAULT_P_MIX
    hard: bool = False                 # BG-HardMix: binarize the mask (copy-and-paste)
    hard_threshold: float = DEFAULT_HARD_THRESHOLD
    views: tuple[int, ...] = (0, 1)    # which views may be mixed (each with probability p_mix); parsed default: all


@dataclass(frozen=True)
class RefreshConfig:
    """Parsed ``occon.refresh`` (only when enabled; see :class:`RefreshSettings`)."""

    warmup_epochs: int = 1
    every_epochs: int = 1
    preset: str = "bg_mixup"
    image_size: Optional[int] = None
    batch_size: Optional[int] = None
    fraction: float = 1.0
    reuse_iou: Optional[float] = None
    precision: str = "fp32"

    @property
    def groups(self) -> int:
        """The localization batches are dealt into ``ceil(1 / fraction)`` groups (``b % groups``); the first
        refresh localizes every batch, each later one the next group, keeping the other batches' entries
        from the store version before (so every image is localized again every ``groups`` refreshes)."""
        return max(1, math.ceil(1.0 / self.fraction - 1e-9))

    def check_schedule(self, max_epochs: int | None) -> "RefreshConfig":
        """At least one epoch trains object-aware: the first refresh is at the end of epoch ``warmup_epochs - 1``
        and none follows the last epoch. Returns ``self``.

        Raises:
            OcconConfigError: ``warmup_epochs >= max_epochs`` (one line naming both keys).
        """
        if max_epochs is not None and int(max_epochs) >= 1 and self.warmup_epochs >= int(max_epochs):
            raise OcconConfigError(
                f"occon.refresh.warmup_epochs={self.warmup_epochs} >= max_epochs={int(max_epochs)}: no epoch would "
                f"train with OA-Crop / BG-Mixup (the first refresh runs after epoch warmup_epochs - 1, none after "
                f"the last epoch); set occon.refresh.warmup_epochs below max_epochs")
        if self.reuse_iou is not None and max_epochs is not None and int(max_epochs) >= 1:
            refreshes = sum(self.refreshes_after(e) for e in range(int(max_epochs) - 1))
            if refreshes < 3:  # said, not silently ignored
                import sys

                print(f"[occon] note: occon.refresh.reuse_iou={self.reuse_iou:g} keeps masks from the third refresh on; "
                      f"this run refreshes {refreshes} time(s) (max_epochs={int(max_epochs)}, warmup_epochs="
                      f"{self.warmup_epochs}, every_epochs={self.every_epochs}), so every refresh localizes every image",
                      file=sys.stderr, flush=True)
        return self

    def refreshes_after(self, epoch: int) -> bool:
        """Is a refresh due at the end of ``epoch`` (0-based)? At ``warmup_epochs - 1``, then every ``every_epochs``."""
        since = epoch - (self.warmup_epochs - 1)
        return since >= 0 and since % self.every_epochs == 0


@dataclass(frozen=True)
class OcconConfig:
    """What the pipelines use (parsed, checked :class:`OcconSettings`)."""

    store: Path | None = None
    missing: str = "error"             # error | skip | full_image (occon_plugin.store.POLICIES)
    allow_v1_store: bool = False       # train on a schema-v1 store (sizes checked only)
    oa_crop: bool = False
    bg_mixup: BgMixupConfig = BgMixupConfig()
    refresh: Optional[RefreshConfig] = None  # occon.refresh.enabled: the store is made during the run

    @property
    def active(self) -> bool:
        """Does any object-aware augmentation run (and so the store get read)?"""
        return self.oa_crop or self.bg_mixup.enabled

    def require_store(self) -> "OcconConfig":
        """With an augmentation on, ``occon.store`` must name an existing folder (its contents are checked
        where a pipeline opens it). Returns ``self``. Raises :class:`OcconConfigError` naming the key."""
        if not self.active or self.refresh is not None:  # a refresh writes its own store versions
            return self
        if self.store is None:
            raise OcconConfigError("occon.store is required when occon.oa_crop or occon.bg_mixup is enabled: "
                                   "set it to the folder written by occon-localize")
        if not self.store.is_dir():
            raise OcconConfigError(f"occon.store={self.store} does not exist (or is not a folder): "
                                   f"build it with occon-localize or fix the path")
        return self

    def check_views(self, n_views: int) -> "OcconConfig":
        """``bg_mixup.views`` are distinct view indexes in ``[0, n_views)`` (the parsed default is every view of
        the ``n_views`` it was parsed for). Returns ``self``. Raises :class:`OcconConfigError` naming the key."""
        views = self.bg_mixup.views
        bad = [v for v in views if not 0 <= v < n_views]
        if bad or len(set(views)) != len(views):
            raise OcconConfigError(f"occon.bg_mixup.views={list(views)} must be distinct indexes in [0, {n_views - 1}] "
                                   f"(the augmentations produce {n_views} views)")
        return self


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


_BOOL_KEYS = ("enabled", "allow_v1_store", "oa_crop.enabled", "bg_mixup.enabled", "bg_mixup.hard", "refresh.enabled")
_INT_KEYS = ("refresh.warmup_epochs", "refresh.every_epochs", "refresh.image_size", "refresh.batch_size")
_UNIT_KEYS = ("bg_mixup.p_mix", "bg_mixup.hard_threshold", "refresh.fraction", "refresh.reuse_iou")
_OPEN_AT_ZERO = ("refresh.fraction", "refresh.reuse_iou")


def _shown(value: Any) -> str:
    """A value as the user wrote it on the command line / in YAML: ``null``, ``true``, ``'text'``, ``[1]``."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    return repr(value)


def _lookup(raw: dict, dotted: str, default: Any = None) -> Any:
    node: Any = raw
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return default
        node = node[part]
    return node


def _normalize(raw: dict) -> dict:
    """``oa_crop: true`` shorthand -> ``{enabled: true}``; sections must be mappings; strict booleans
    (a YAML ``yes`` is already True; a string ``'yes'`` from the command line is refused)."""
    raw = dict(raw)
    refresh = raw.get("refresh")
    if refresh is not None and not isinstance(refresh, dict):
        raise OcconConfigError(f"occon.refresh must be a mapping like {{enabled: true, warmup_epochs: 1}}, got {refresh!r}")
    for name in ("oa_crop", "bg_mixup"):
        section = raw.get(name)
        if section is None and name in raw:  # an explicit null would train with the augmentation silently off
            raise OcconConfigError(f"occon.{name}=null is invalid: give occon.{name}.enabled=true or false, or drop "
                                   f"the key for its default (off)")
        if section is None:
            raw.pop(name, None)
        elif isinstance(section, bool):
            raw[name] = {"enabled": section}
        elif not isinstance(section, dict):
            raise OcconConfigError(f"occon.{name} must be a mapping like {{enabled: true}}, got {section!r}")
    for key in _BOOL_KEYS:
        value = _lookup(raw, key, False)
        if not isinstance(value, bool):
            raise OcconConfigError(f"occon.{key}={_shown(value)} must be true or false")
    for key in _INT_KEYS:  # strict: 1.5, true or '2' would be coerced or truncated by the schema
        value = _lookup(raw, key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            what = f"{CAM_IMAGE_SIZE.describe()} or null" if key == "refresh.image_size" else "must be an integer"
            raise OcconConfigError(f"occon.{key}={_shown(value)} {what}")
    for key in _UNIT_KEYS:
        value = _lookup(raw, key)
        if value is None:
            continue
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise OcconConfigError(f"occon.{key}={value!r} must be a number in [0, 1]") from None
        low_open = key in _OPEN_AT_ZERO  # 0 is no share / no overlap: refused by its own rule below
        if isinstance(value, bool) or not (0.0 < number if low_open else 0.0 <= number) or not number <= 1.0:
            raise OcconConfigError(f"occon.{key}={value!r} must be in {'(0, 1]' if low_open else '[0, 1]'}"
                                   + (" or null" if key == "refresh.reuse_iou" else ""))
    return raw


def occon_settings(cfg: Any) -> OcconSettings:
    """Validate the raw ``occon`` section against :class:`OcconSettings` (unknown keys, types, the
    ``missing`` policy); raises :class:`OcconConfigError` naming ``occon.<key>``."""
    from omegaconf import OmegaConf
    from omegaconf.errors import ConfigKeyError, OmegaConfBaseException

    raw = _normalize(_plain(cfg))
    try:
        return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(OcconSettings), raw))
    except OmegaConfBaseException as err:
        key = str(getattr(err, "full_key", "") or "")
        parent = key.rsplit(".", 1)[0] if "." in key else ""
        if isinstance(err, ConfigKeyError) or "not in" in str(getattr(err, "msg", "")):
            schema = {"": OcconSettings, "oa_crop": OaCropSettings, "bg_mixup": BgMixupSettings,
                      "refresh": RefreshSettings}.get(parent)
            allowed = ", ".join(f"occon.{parent + '.' if parent else ''}{k}" for k in schema.__dataclass_fields__) \
                if schema else "see docs"
            raise OcconConfigError(f"unknown key occon.{key}; allowed: {allowed}") from None
        value = _lookup(raw, key)
        if key == "missing":
            raise OcconConfigError(f"occon.missing={_shown(value)} must be one of {', '.join(POLICIES)} (default "
                                   f"error)") from None
        default = OmegaConf.select(OmegaConf.structured(OcconSettings), key, default=None)
        default = default.value if isinstance(default, enum.Enum) else default
        if value is None:  # a null where the schema has no null: one line, not OmegaConf's four
            raise OcconConfigError(f"occon.{key}=null is invalid: give a value, or drop the key for its default "
                                   f"({default!r})") from None
        kind = "a string" if isinstance(default, str) else f"a {type(default).__name__}" if default is not None \
            else "a value"
        raise OcconConfigError(f"occon.{key}={_shown(value)} is invalid: give {kind} (default {default!r})") from None


def refuse_null_section(cfg: Any) -> None:
    """A run config of an object-aware method whose ``occon`` key is there but null (``++occon=null``, a YAML
    ``occon:`` with nothing below) would train the host's baseline without a word: refused (an absent section is
    the documented "everything off", as ``occon.enabled: false``). ``cfg``: the config as the user gave it,
    before a schema fills the key in. Raises :class:`OcconConfigError`."""
    from omegaconf import OmegaConf

    if OmegaConf.is_dict(cfg) and "occon" in cfg and cfg.get("occon") is None:
        raise OcconConfigError("occon=null is invalid: give the occon section (store, oa_crop, bg_mixup, refresh), "
                               "or occon.enabled=false to train the host's baseline")


def parse_occon_config(cfg: Any, n_views: int = 2, check_store: bool = True) -> OcconConfig:
    """Validate ``cfg.occon`` (None/absent = everything off) into the runtime :class:`OcconConfig`.

    The one parser of the section: a pretraining run calls it once (``occon-pretrain``: in
    :func:`occon_plugin.config.parse_pretrain_cfg`; solo-learn's own script: in the object-aware method's
    constructor) and hands the frozen result to the data pipeline and the method.

    ``n_views``: views per sample (bounds ``bg_mixup.views``, whose default is every view);
    ``check_store``: require ``occon.store`` to be an existing folder when an augmentation is on.
    Raises :class:`OcconConfigError` (a :class:`~occon_plugin.errors.ConfigError`) naming the key.
    """
    raw = _plain(cfg)
    views_raw = _lookup(raw, "bg_mixup.views")
    if views_raw is not None and (not isinstance(views_raw, (list, tuple)) or not all(
            isinstance(v, int) and not isinstance(v, bool) for v in views_raw)):
        raise OcconConfigError(f"occon.bg_mixup.views={views_raw!r} must be a list of view indexes, e.g. [0, 1]")
    settings = occon_settings(raw)
    if not settings.enabled:  # a global switch: `occon: {enabled: false}` = host baseline
        return OcconConfig()
    bg = settings.bg_mixup
    views = tuple(bg.views) if bg.views is not None else tuple(range(n_views))  # multi-crop: small crops too
    if bg.enabled and not views:  # enabled, yet no view may be mixed: BG-Mixup would silently never run
        raise OcconConfigError("occon.bg_mixup.views=[] mixes no view although occon.bg_mixup.enabled=true: give the "
                               "view indexes to mix, null (every view), or occon.bg_mixup.enabled=false")
    problems = settings.refresh.problems()  # its ranges even while off: a typo surfaces now, not when switched on
    if problems:
        key, value, what = problems[0]
        raise OcconConfigError(f"occon.refresh.{key}={_shown(value)}: {what}")
    refresh = None
    if settings.refresh.enabled:
        if settings.store:
            raise OcconConfigError(f"occon.store={settings.store} and occon.refresh.enabled=true: the refresh writes "
                                   f"its own store versions under <run folder>/refresh; drop occon.store (or set "
                                   f"occon.refresh.enabled=false to train on that store)")
        if not (settings.oa_crop.enabled or settings.bg_mixup.enabled):
            raise OcconConfigError("occon.refresh.enabled=true but neither occon.oa_crop nor occon.bg_mixup is "
                                   "enabled: the refreshed store would never be used; enable one of them")
        r = settings.refresh
        refresh = RefreshConfig(warmup_epochs=r.warmup_epochs, every_epochs=r.every_epochs, preset=r.preset,
                                image_size=r.image_size, batch_size=r.batch_size, fraction=float(r.fraction),
                                reuse_iou=None if r.reuse_iou is None else float(r.reuse_iou),
                                precision=r.precision)
    out = OcconConfig(
        store=Path(settings.store).expanduser() if settings.store else None,
        missing=settings.missing.name,
        allow_v1_store=settings.allow_v1_store,
        oa_crop=settings.oa_crop.enabled,
        bg_mixup=BgMixupConfig(enabled=bg.enabled, p_mix=float(bg.p_mix), hard=bg.hard,
                               hard_threshold=float(bg.hard_threshold), views=views),
        refresh=refresh,
    )
    out.check_views(n_views)
    return out.require_store() if check_store else out
