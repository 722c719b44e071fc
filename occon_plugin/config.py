"""The pretraining and linear-evaluation settings (solo-learn main's YAML schema): one structured
schema each (dataclasses + ``OmegaConf.structured``, as
:class:`occon_plugin.localize.runner.LocalizeSettings`), defaults, and fail-fast checks.

The schemas type-check the keys the plugin reads (``optimizer.batch_size=abc`` is an error naming
the key) and fill the defaults solo-learn main's ``parse_cfg`` would; every other key of the host's
schema (``method_kwargs``, ``knn_eval``, Lightning's ``limit_train_batches`` ...) passes through
untouched, so the same YAML runs with the host's own scripts. The ``occon`` section has its own
closed schema (:class:`occon_plugin.augment.config.OcconSettings`: unknown keys are errors).
Errors are :class:`ConfigError` and always name the offending key and what to do.
"""
from __future__ import annotations

import enum
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

from omegaconf import MISSING, DictConfig, OmegaConf

from occon_plugin.cfgkeys import CAM_IMAGE_SIZE, Range, num_devices, select  # noqa: F401  (re-exported: the plugin's cfg readers)
from occon_plugin.errors import ConfigError  # noqa: F401  (re-exported)


def set_default(cfg: DictConfig, key: str, value: Any) -> None:
    if OmegaConf.select(cfg, key, default=None) is None:
        OmegaConf.update(cfg, key, value, force_add=True)


def require(cfg: DictConfig, key: str, hint: str = "") -> Any:
    """``cfg.<key>``, which must be set (not null, not empty).

    Raises:
        ConfigError: ``key`` is missing, null or empty (``hint`` says what to set).
    """
    value = OmegaConf.select(cfg, key, default=None)
    if value is None or value == "":
        raise ConfigError(f"missing config key `{key}`" + (f": {hint}" if hint else ""))
    return value


def check_probability(cfg: DictConfig, key: str) -> None:
    """``cfg.<key>``, if set, is a number in [0, 1].

    Raises:
        ConfigError: the value is not a number in [0, 1].
    """
    value = OmegaConf.select(cfg, key, default=None)
    if value is None:
        return
    if not isinstance(value, (int, float)) or not 0.0 <= float(value) <= 1.0:
        raise ConfigError(f"`{key}={value}` must be a probability in [0, 1]")


def check_ranges(cfg: DictConfig | dict, ranges: Dict[str, Range]) -> None:
    """The one range check of numeric settings, for every command (the types are checked by the schema
    or by Hydra; this catches what types cannot: ``lr=-1``, ``val_fraction=1.5``, ``threshold=2``, NaN).
    A key absent from ``cfg`` is skipped; a list value (``l2_values``, ``sweep``) is checked element by
    element. Raises :class:`ConfigError` naming the key, the value and the values it may take."""
    node = OmegaConf.create(cfg) if isinstance(cfg, dict) else cfg
    absent = object()
    for key, rule in ranges.items():
        value = OmegaConf.select(node, key, default=absent)
        if value is absent:
            continue  # not in this config
        if OmegaConf.is_list(value) or isinstance(value, (list, tuple)):
            items = list(value)
            if not items and not rule.allow_empty:
                raise ConfigError(f"{key}=[] is invalid: give at least one value ({rule.describe()})")
            element = Range(**{**rule.__dict__, "nullable": False})
            for i, item in enumerate(items):
                if not element.accepts(item):
                    raise ConfigError(f"{key}[{i}]={item!r} is invalid: {element.describe()}")
        elif not rule.accepts(value):
            raise ConfigError(f"{key}={value!r} is invalid: {rule.describe()}")


SEED_RANGE = Range(0, 2 ** 32 - 1, integer=True, hint="numpy's and Lightning's seeds")


def check_existing_path(cfg: DictConfig, key: str, what: str) -> Path:
    """``cfg.<key>`` as an existing path (``~`` expanded); ``what`` names it in the message.

    Raises:
        ConfigError: ``key`` is missing or names no existing path.
    """
    value = require(cfg, key, f"set it to {what}, e.g. ++{key}=/path/to/data")
    path = Path(os.path.expanduser(str(value)))
    if not path.exists():
        raise ConfigError(f"`{key}={value}` does not exist: it must point to {what}")
    return path


def check_dataset_path(cfg: DictConfig, key: str) -> Path:
    """``key`` names an existing image folder or a COCO ``.json`` (not a single image, not a store).

    Raises:
        ConfigError: missing, not existing, or a file other than a COCO ``.json``.
    """
    path = check_existing_path(cfg, key, "a folder of images or a COCO json")
    if path.is_file() and path.suffix.lower() != ".json":
        raise ConfigError(f"`{key}={path}` is a file, not a folder of images (or a COCO .json): "
                          f"point it to the folder that holds the images")
    return path


# ------------------------------------------------------------------------------------------------
# Schemas. Sections are open (the host's other keys pass), typed where the plugin reads them.
# ------------------------------------------------------------------------------------------------
DataFormat = enum.Enum("DataFormat", {"image_folder": "image_folder", "dali": "dali"})


@dataclass
class BackboneSettings:
    name: str = MISSING                     # solo-learn backbone, e.g. resnet18
    kwargs: Dict[str, Any] = field(default_factory=dict)


@dataclass
class PretrainDataSettings:
    train_path: str = MISSING               # image folder (class sub-folders or flat) or COCO json
    dataset: str = "custom"
    format: DataFormat = DataFormat.image_folder  # type: ignore[valid-type]
    num_workers: int = 2
    no_labels: bool = False
    fraction: float = -1.0
    val_path: Optional[str] = None
    image_root: Optional[str] = None        # COCO json: the folder of its file_names
    num_classes: int = 1                    # set from the data (class sub-folders, else 1)
    num_large_crops: Optional[int] = None   # counted from `augmentations` (host's parse_cfg rule)
    num_small_crops: Optional[int] = None


@dataclass
class OptimizerSettings:
    name: str = MISSING                     # sgd | lars | adamw ...
    batch_size: int = MISSING               # per device
    lr: float = MISSING                     # for a total batch of 256 (scaled linearly, as solo-learn)
    classifier_lr: Optional[float] = None   # default: lr
    weight_decay: float = 1e-4
    kwargs: Dict[str, Any] = field(default_factory=dict)


@dataclass
class SchedulerSettings:
    name: str = MISSING                     # warmup_cosine | step | none (both host generations)
    warmup_epochs: float = 0.0


@dataclass
class CheckpointSettings:
    enabled: bool = True
    dir: str = "trained_models"             # runs go to <dir>/<method>/<name>/
    frequency: int = 1


@dataclass
class AutoResumeSettings:
    enabled: bool = False


@dataclass
class WandbSettings:
    enabled: bool = False
    project: str = "occon-plugin"
    entity: Optional[str] = None
    offline: Optional[bool] = None          # None: offline unless an API key is configured


@dataclass
class DaliSettings:
    device: str = "gpu"                     # "cpu" runs the plugin's DALI pipeline without a GPU
    py_workers: int = 0                     # processes for the external source (0: in process)


@dataclass
class PretrainSettings:
    """``occon-pretrain`` / solo-learn main's ``main_pretrain.py`` YAML (the keys the plugin reads)."""

    method: str = MISSING
    name: Optional[str] = None              # default: the method
    seed: int = 5
    backbone: BackboneSettings = field(default_factory=BackboneSettings)
    method_kwargs: Dict[str, Any] = field(default_factory=dict)
    data: PretrainDataSettings = field(default_factory=PretrainDataSettings)
    augmentations: List[Any] = MISSING      # solo-learn main's list of view pipelines
    optimizer: OptimizerSettings = field(default_factory=OptimizerSettings)
    scheduler: SchedulerSettings = field(default_factory=SchedulerSettings)
    checkpoint: CheckpointSettings = field(default_factory=CheckpointSettings)
    auto_resume: AutoResumeSettings = field(default_factory=AutoResumeSettings)
    wandb: WandbSettings = field(default_factory=WandbSettings)
    dali: DaliSettings = field(default_factory=DaliSettings)
    occon: Optional[Dict[str, Any]] = None  # OcconSettings (occon_plugin.augment.config)
    max_epochs: int = 1
    max_steps: int = -1
    accelerator: str = "auto"
    devices: Any = 1                        # the YAMLs say "1": a sequence for the host's parse_cfg
    strategy: Any = "auto"
    precision: Any = 32


@dataclass
class LinearDataSettings:
    train_path: str = MISSING               # image folder, one sub-folder per class
    val_path: Optional[str] = None
    dataset: str = "custom"
    format: DataFormat = DataFormat.image_folder  # type: ignore[valid-type]
    num_workers: int = 2
    num_classes: int = 2                    # set from the class sub-folders
    num_large_crops: int = 1
    num_small_crops: int = 0
    augmentations: Dict[str, Any] = field(default_factory=lambda: {"crop_size": 224})


@dataclass
class LinearOptimizerSettings:
    name: str = MISSING
    batch_size: int = MISSING
    lr: float = MISSING
    weight_decay: float = 0.0
    kwargs: Dict[str, Any] = field(default_factory=dict)


@dataclass
class LinearSettings:
    """``occon-linear`` / solo-learn main's ``main_linear.py`` YAML (the keys the plugin reads)."""

    pretrained_feature_extractor: str = MISSING  # a checkpoint of either host generation
    name: str = "linear"
    seed: int = 5
    backbone: Dict[str, Any] = field(default_factory=lambda: {"name": None, "kwargs": {}})
    pretrain_method: Optional[str] = None
    data: LinearDataSettings = field(default_factory=LinearDataSettings)
    optimizer: LinearOptimizerSettings = field(default_factory=LinearOptimizerSettings)
    scheduler: SchedulerSettings = field(default_factory=SchedulerSettings)
    checkpoint: CheckpointSettings = field(default_factory=CheckpointSettings)  # runs: <dir>/linear/<name>/
    wandb: WandbSettings = field(default_factory=WandbSettings)
    max_epochs: int = 100
    max_steps: int = -1
    accelerator: str = "auto"
    devices: Any = 1
    strategy: Any = "auto"
    precision: Any = 32


def _open(node: DictConfig) -> DictConfig:
    """Let every section of a structured config take keys it does not declare (the host's)."""
    OmegaConf.set_struct(node, False)
    for key in node:
        child = node._get_node(key)
        if isinstance(child, DictConfig):
            _open(child)
    return node


def structured_cfg(schema: type, cfg: Any) -> DictConfig:
    """``cfg`` merged into ``schema``: types checked and converted, defaults filled, undeclared keys
    kept; returned as a plain (untyped) DictConfig, so the host can keep adding its own keys.
    Raises :class:`ConfigError` naming the key (``optimizer.batch_size='abc'``, a missing
    ``data.train_path``)."""
    from omegaconf.errors import MissingMandatoryValue, OmegaConfBaseException

    if OmegaConf.is_config(cfg) and "hydra" in cfg:
        cfg = OmegaConf.masked_copy(cfg, [k for k in cfg.keys() if k != "hydra"])
    try:
        merged = OmegaConf.merge(_open(OmegaConf.structured(schema)), cfg)
        plain = OmegaConf.to_container(merged, resolve=True, throw_on_missing=True, enum_to_str=True)
    except MissingMandatoryValue as err:
        raise ConfigError(f"missing config key `{err.full_key}`: set it in the YAML or with ++{err.full_key}=...") \
            from None
    except OmegaConfBaseException as err:
        key = str(getattr(err, "full_key", "") or "")
        value = OmegaConf.select(cfg, key, default=None) if (key and OmegaConf.is_config(cfg)) else None
        what = getattr(err, "msg", str(err)).split("\n")[0]
        if key.endswith("format") and key.startswith("data"):
            what = "must be one of image_folder, dali"
        raise ConfigError(f"`{key}={value}`: {what}" if key else f"bad config: {what}") from None
    out = OmegaConf.create(plain)
    OmegaConf.set_struct(out, False)
    return out


def typed_settings(schema: type, cfg: Any, ranges: Optional[Dict[str, "Range"]] = None) -> Any:
    """``cfg`` (Hydra's DictConfig, a dict) as an instance of the dataclass ``schema`` (a closed schema, as
    :class:`occon_plugin.localize.runner.LocalizeSettings`): unknown keys, wrong types and missing values
    are errors naming the key; then ``ranges`` (:func:`check_ranges`) on the typed values. Hydra's own
    ``hydra`` node is dropped. Raises :class:`ConfigError`."""
    from omegaconf.errors import ConfigKeyError, MissingMandatoryValue, OmegaConfBaseException

    if OmegaConf.is_config(cfg) and "hydra" in cfg:
        cfg = OmegaConf.masked_copy(cfg, [k for k in cfg.keys() if k != "hydra"])
    try:
        merged = OmegaConf.merge(OmegaConf.structured(schema), cfg)
        if ranges:
            check_ranges(merged, ranges)
        return OmegaConf.to_object(merged)
    except MissingMandatoryValue as err:
        raise ConfigError(f"missing config key `{err.full_key}`: give {err.full_key}=...") from None
    except ConfigKeyError as err:
        raise ConfigError(f"unknown config key `{err.full_key}`: see the command's YAML for the keys") from None
    except OmegaConfBaseException as err:
        key = str(getattr(err, "full_key", "") or "")
        value = OmegaConf.select(cfg, key, default=None) if (key and OmegaConf.is_config(cfg)) else None
        default = OmegaConf.select(OmegaConf.structured(schema), key, default=None) if key else None
        if key and value is None:  # a null where the schema takes a value
            raise ConfigError(f"`{key}=null` is invalid: give a value, or drop the key for its default "
                              f"({default!r})") from None
        what = getattr(err, "msg", str(err)).split("\n")[0]
        raise ConfigError(f"`{key}={value}`: {what}" if key else f"bad config: {what}") from None


# The numeric keys of solo-learn's YAML the plugin's commands check before anything starts (the host and
# torch would stop later with a traceback, or Lightning would train nothing: max_epochs=0).
TRAINING_RANGES = {
    "optimizer.lr": Range(0, low_open=True, hint="the learning rate for a total batch of 256"),
    "optimizer.classifier_lr": Range(0, low_open=True, nullable=True, hint="null: optimizer.lr"),
    "optimizer.weight_decay": Range(0),
    "data.num_workers": Range(0, integer=True, hint="0: load in the main process"),
    "data.fraction": Range(0, 1, low_open=True, integer=False, also=(-1,), hint="-1: all the data"),
    # not Lightning's -1 (no limit): the host's learning-rate and momentum schedules are computed from max_epochs
    # (a schedule over -1 epochs trains on silently wrong rates); max_steps stops a run earlier
    "max_epochs": Range(1, integer=True, hint="the host's schedules end at max_epochs; max_steps stops earlier"),
    "max_steps": Range(1, integer=True, also=(-1,), hint="-1: no limit"),
    "checkpoint.frequency": Range(1, integer=True, hint="epochs between checkpoints"),
    "scheduler.warmup_epochs": Range(0),
    "dali.py_workers": Range(0, integer=True),
    "seed": SEED_RANGE,
}


@dataclass(frozen=True)
class PretrainRun:
    """A pretraining run's settings, parsed once at the edge (:func:`parse_pretrain_cfg`).

    ``cfg``: solo-learn main's schema completed (plain DictConfig: the host's constructors and scripts read
    it, and keep adding their own keys); ``occon``: the ``occon`` section parsed into the frozen
    :class:`~occon_plugin.augment.config.OcconConfig` that the data pipeline and the method both receive."""

    cfg: DictConfig
    occon: Any  # occon_plugin.augment.config.OcconConfig (imported lazily: this module stays light)

    @property
    def n_views(self) -> int:
        return int(self.cfg.data.num_large_crops) + int(self.cfg.data.num_small_crops)


def parse_pretrain_cfg(cfg: DictConfig, known_methods, check_store: bool = False) -> PretrainRun:
    """Validate ``cfg`` against :class:`PretrainSettings`, fill the defaults solo-learn main's ``parse_cfg``
    would, check what types cannot, and parse the ``occon`` section once.

    ``known_methods``: the host's method table (``occon_plugin.host.METHODS``); ``check_store``: with an
    augmentation on, ``occon.store`` must be an existing folder (the CLI checks it; a config check alone
    does not). Raises :class:`ConfigError` naming the key and what to do."""
    from occon_plugin.augment.config import parse_occon_config, refuse_null_section

    if getattr(known_methods.get(select(cfg, "method")), "occon_parent", None):
        refuse_null_section(cfg)  # before the schema turns an absent section into a null one
    cfg = structured_cfg(PretrainSettings, cfg)
    check_ranges(cfg, TRAINING_RANGES)
    method = cfg.method
    if method not in known_methods:
        raise ConfigError(f"`method={method}` is unknown; choose one of {sorted(known_methods)}")
    # the host's backbone table (main: BaseMethod._BACKBONES, 1.0.2: _SUPPORTED_ENCODERS); the host itself
    # only asserts, which ends in a bare AssertionError
    backbones = getattr(known_methods[method], "_BACKBONES", None) or \
        getattr(known_methods[method], "_SUPPORTED_ENCODERS", None)
    name = select(cfg, "backbone.name")
    if backbones and name is not None and name not in backbones:
        raise ConfigError(f"`backbone.name={name}` is not a backbone of the installed solo-learn; "
                          f"choose one of {sorted(backbones)}")
    check_optimizer_and_scheduler(cfg)
    check_dataset_path(cfg, "data.train_path")
    if int(cfg.optimizer.batch_size) < 2:
        raise ConfigError(f"`optimizer.batch_size={cfg.optimizer.batch_size}` must be >= 2 (contrastive batches)")

    set_default(cfg, "name", f"{method}")
    set_default(cfg, "optimizer.classifier_lr", float(cfg.optimizer.lr))

    augs = select(cfg, "augmentations")
    if augs is None or len(augs) == 0:
        raise ConfigError("missing config key `augmentations` (a list of view pipelines, solo-learn main's schema)")
    count_crops(cfg, known_methods)
    for i in range(len(augs)):
        for key in ("color_jitter.prob", "grayscale.prob", "gaussian_blur.prob", "solarization.prob",
                    "horizontal_flip.prob"):
            check_probability(cfg, f"augmentations[{i}].{key}")
    # the occon section: closed schema, parsed here once (the store's contents are checked where it is opened)
    occon = parse_occon_config(select(cfg, "occon"),
                               n_views=int(cfg.data.num_large_crops) + int(cfg.data.num_small_crops),
                               check_store=False)
    if occon.refresh is not None:
        occon.refresh.check_schedule(select(cfg, "max_epochs"))
    queue = select(cfg, "method_kwargs.queue_size")
    if queue is not None and int(queue) % int(cfg.optimizer.batch_size) != 0:
        raise ConfigError(f"`method_kwargs.queue_size={queue}` must be a multiple of "
                          f"`optimizer.batch_size={cfg.optimizer.batch_size}`")
    scale_lr(cfg)
    return PretrainRun(cfg, occon.require_store() if check_store else occon)


def complete_pretrain_cfg(cfg: DictConfig, known_methods) -> DictConfig:
    """:func:`parse_pretrain_cfg` for callers that need only the completed cfg (benchmarks, tests).
    Raises :class:`ConfigError` naming the key."""
    return parse_pretrain_cfg(cfg, known_methods).cfg


def complete_linear_cfg(cfg: DictConfig) -> DictConfig:
    """Validate ``cfg`` against :class:`LinearSettings` (same YAML as the host's ``main_linear.py``).

    Raises:
        ConfigError: a key the schema refuses, a value out of range, a path that does not exist, or the old ``crop_size`` key.
    """
    cfg = structured_cfg(LinearSettings, cfg)
    check_ranges(cfg, {**TRAINING_RANGES, "optimizer.batch_size": Range(1, integer=True)})
    check_optimizer_and_scheduler(cfg)
    check_existing_path(cfg, "pretrained_feature_extractor", "a checkpoint written by main_pretrain.py")
    check_existing_path(cfg, "data.train_path", "an image folder with one sub-folder per class")
    if select(cfg, "data.val_path"):
        check_existing_path(cfg, "data.val_path", "an image folder with one sub-folder per class")
    if select(cfg, "crop_size") is not None:  # the plugin's old key: one place only, the host's
        raise ConfigError("`crop_size` moved to `data.augmentations.crop_size` (solo-learn main's key)")
    set_default(cfg, "data.augmentations.crop_size", 224)
    return cfg


# Host methods that train on a number of large crops other than 2 (solo-learn main's main_pretrain rule).
ANY_LARGE_CROPS = ("wmse", "mae")


OPTIMIZERS = ("sgd", "lars", "adam", "adamw")  # what both host generations build (1.0.2: lars = sgd + LARS)


def check_optimizer_and_scheduler(cfg: DictConfig) -> None:
    """``optimizer.name`` and ``scheduler.name`` are ones the installed solo-learn builds, and
    ``optimizer.kwargs`` are arguments of that optimizer (else the host's ``configure_optimizers`` raises a
    bare ValueError / TypeError once training starts).

    Raises:
        ConfigError: naming the key and the accepted names.
    """
    from occon_plugin.host import GENERATION

    schedulers = ("warmup_cosine", "step", "none") + (() if GENERATION == "main" else ("cosine",))
    for key, names in (("optimizer.name", OPTIMIZERS), ("scheduler.name", schedulers)):
        value = select(cfg, key)
        if value is not None and value not in names:
            raise ConfigError(f"`{key}={value}` is not one the installed solo-learn builds; choose one of "
                              f"{', '.join(names)}")
    name, kwargs = select(cfg, "optimizer.name"), select(cfg, "optimizer.kwargs") or {}
    if name is not None and kwargs:  # e.g. sgd's momentum left in optimizer.kwargs after switching to adamw
        import inspect

        import torch

        cls = {"sgd": torch.optim.SGD, "lars": torch.optim.SGD, "adam": torch.optim.Adam,
               "adamw": torch.optim.AdamW}[name]
        known = set(inspect.signature(cls.__init__).parameters) - {"self", "params", "lr", "weight_decay"}
        known |= {"eta", "clip_lr", "exclude_bias_n_norm"} if name == "lars" else set()
        unknown = sorted(str(k) for k in kwargs if k not in known)
        if unknown:
            raise ConfigError(f"`optimizer.kwargs.{unknown[0]}` is not an argument of optimizer.name={name}; it "
                              f"takes {', '.join(sorted(known))} (drop the key, e.g. ~optimizer.kwargs.{unknown[0]})")


def count_crops(cfg: DictConfig, known_methods) -> None:
    """Set ``data.num_large_crops`` / ``data.num_small_crops`` from ``augmentations`` as solo-learn main's
    ``parse_cfg`` does: views with ``augmentations[0].crop_size`` are large, the others small (multi-crop).
    Values given explicitly must agree. Every method needs 2 large crops except ``wmse`` and ``mae`` (and
    their ``_occon`` variants), as in solo-learn main's ``main_pretrain.py``.

    Raises:
        ConfigError: ``num_crops`` < 1, explicit crop counts that disagree, or not 2 large views for a method that needs them.
    """
    augs = cfg.augmentations
    big = select(augs[0], "crop_size", 224)
    large = small = 0
    for i, aug in enumerate(augs):
        crops = int(select(aug, "num_crops", 1))
        if crops < 1:
            raise ConfigError(f"`augmentations[{i}].num_crops={crops}` must be >= 1")
        if select(aug, "crop_size", 224) == big:
            large += crops
        else:
            small += crops
    for key, counted in (("data.num_large_crops", large), ("data.num_small_crops", small)):
        given = select(cfg, key)
        if given is not None and int(given) != counted:
            raise ConfigError(f"`{key}={given}` but `augmentations` produce {counted} such views (crop_size "
                              f"{'==' if 'large' in key else '!='} augmentations[0].crop_size={big}): "
                              f"drop the key or fix the augmentations")
        OmegaConf.update(cfg, key, counted, force_add=True)
    method = cfg.method
    parent = getattr(known_methods.get(method), "occon_parent", method)  # an _occon method counts as its parent
    if large != 2 and parent not in ANY_LARGE_CROPS:
        raise ConfigError(f"`method={method}` needs exactly 2 large views, but `augmentations` produce {large} "
                          f"with crop_size={big} (and {small} smaller ones); only "
                          f"{', '.join(ANY_LARGE_CROPS)} take another number")


def scale_lr(cfg: DictConfig) -> None:
    """Linear scaling rule, as solo-learn: ``optimizer.lr`` is the rate for a total batch of 256."""
    if select(cfg, "optimizer.base_lr") is not None:  # already scaled (e.g. a resumed config)
        return
    total = int(cfg.optimizer.batch_size) * num_devices(cfg) * int(select(cfg, "num_nodes", 1))
    factor = total / 256
    cfg.optimizer.base_lr = float(cfg.optimizer.lr)
    cfg.optimizer.lr = float(cfg.optimizer.lr) * factor
    cfg.optimizer.classifier_lr = float(cfg.optimizer.classifier_lr) * factor
