"""The one place that knows which solo-learn is installed.

Two host generations are supported:

* ``"1.0.2"`` — the PyPI release: keyword-argument method constructors, ``encoder`` /
  ``momentum_encoder`` attributes, ``pytorch_lightning`` 1.9.
* ``"main"`` — solo-learn 1.0.6+ installed from git: ``Method(cfg)`` constructors, ``backbone`` /
  ``momentum_backbone`` attributes, ``lightning.pytorch`` 2.x.

Every other module of the plugin imports solo-learn and Lightning symbols from here and
speaks solo-learn main's config schema; this module translates. It imports none of the plugin's
methods, pipelines or commands (the methods are registered by the hook in ``occon_plugin/__init__.py``
right after this module is imported).

Patches of the host, applied when this module is imported (so in every process that imports it, the
host's own scripts included through the start-up hook), each a no-op where the installed host does not
have the behaviour it works around (:data:`PATCHES` says which applied):

* ``momentum_batch_end`` — solo-learn 1.0.2's ``BaseMomentumMethod.on_train_batch_end`` requires
  ``dataloader_idx``, which Lightning 1.9 no longer passes (TypeError at the first step);
* ``dino_clip_gradients`` — solo-learn 1.0.2's DINO defines ``clip_gradients(self, clip)``, shadowing the
  Lightning 1.9 method it calls every step (TypeError; main renamed it ``dino_clip_gradients``);
* ``whitening_cholesky`` — solo-learn 1.0.2's W-MSE calls ``torch.cholesky``, removed in torch 2.x;
* ``top_k`` — both generations compute top-5 accuracy unconditionally (``accuracy_at_k``), which fails
  with fewer than 5 classes ("selected index k out of range"); k is capped at the number of classes.
"""
from __future__ import annotations

import inspect
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import warnings

from omegaconf import DictConfig, OmegaConf, open_dict

from occon_plugin.errors import MissingDependencyError
from occon_plugin.models.normalization import IMAGENET_MEAN, IMAGENET_STD

# One line, for the commands that need the host (pretraining, linear evaluation).
INSTALL_HINT = (
    "install solo-learn next to the plugin: solo-learn main with "
    "`pip install \"setuptools<81\" && pip install --no-build-isolation git+https://github.com/vturrisi/solo-learn` "
    "(+ lightning==2.1.2 torchmetrics==0.11.4), or PyPI 1.0.2 as `./run setup` does (README: Install)")


class HostMissingError(MissingDependencyError):
    """solo-learn (the host) cannot be imported; the message says what to install."""


# solo-learn 1.0.2 pulls in lightning-bolts and old Lightning code that emit a wall of
# deprecation warnings at import time; they are not the user's concern.
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    warnings.showwarning = lambda *args, **kwargs: None  # lightning-bolts re-adds its own filters on import
    try:
        import solo
        import solo.methods as _solo_methods
        from solo.methods import BYOL, LinearModel, MoCoV2Plus  # noqa: F401  (re-exported)
        from solo.methods.base import BaseMethod, BaseMomentumMethod
    except ImportError as _exc:
        if _exc.name == "solo":
            raise HostMissingError(f"solo-learn is not installed (this command runs inside it): {INSTALL_HINT}") from _exc
        raise HostMissingError(f"solo-learn is installed but cannot be imported ({_exc}): {INSTALL_HINT}") from _exc

METHODS: Dict[str, type] = _solo_methods.METHODS


def _detect_generation() -> str:
    params = inspect.signature(BaseMethod.__init__).parameters
    return "main" if "cfg" in params else "1.0.2"


GENERATION: str = _detect_generation()


def _solo_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("solo-learn")
    except PackageNotFoundError:  # a source checkout on sys.path
        return getattr(solo, "__version__", "unknown")


SOLO_VERSION: str = _solo_version()

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    if GENERATION == "main":
        import lightning.pytorch as pl  # type: ignore[no-redef]
    else:
        import pytorch_lightning as pl  # type: ignore[no-redef]

Trainer = pl.Trainer
LightningModule = pl.LightningModule
LightningDataModule = pl.LightningDataModule
Callback = pl.Callback
seed_everything = pl.seed_everything
ModelCheckpoint = pl.callbacks.ModelCheckpoint
LearningRateMonitor = pl.callbacks.LearningRateMonitor
WandbLogger = pl.loggers.WandbLogger
LIGHTNING_VERSION: str = pl.__version__

# Attribute names of the online and momentum networks, and the matching checkpoint prefixes.
BACKBONE_ATTR = "backbone" if GENERATION == "main" else "encoder"
MOMENTUM_BACKBONE_ATTR = "momentum_" + BACKBONE_ATTR

# Checkpoint ``state_dict`` prefixes of both host generations, keyed by who writes them (the table lives
# with the model loader, which reads checkpoints without solo-learn installed).
from occon_plugin.models.layouts import SOLO_CHECKPOINT_LAYOUTS as CHECKPOINT_LAYOUTS  # noqa: E402
CHECKPOINT_LAYOUT: str = "solo-main" if GENERATION == "main" else "solo-1.0.2"


def backbone_of(model: Any):
    """The online backbone of a host method, whatever the host calls it."""
    return getattr(model, BACKBONE_ATTR)


def momentum_backbone_of(model: Any):
    return getattr(model, MOMENTUM_BACKBONE_ATTR)


# --------------------------------------------------------------------------------------------
# 1.0.2 calls ``on_train_batch_end(outputs, batch, batch_idx, dataloader_idx)`` without a default,
# but Lightning 1.9 no longer passes ``dataloader_idx``: give it one (idempotent).
# --------------------------------------------------------------------------------------------
def _patch_momentum_batch_end() -> bool:
    hook = BaseMomentumMethod.on_train_batch_end
    if getattr(hook, "_occon_patched", False):
        return True
    params = inspect.signature(hook).parameters
    if "dataloader_idx" not in params or params["dataloader_idx"].default is not inspect._empty:
        return False  # solo-learn main: nothing to work around

    def on_train_batch_end(self, outputs, batch, batch_idx, dataloader_idx=0):
        return hook(self, outputs, batch, batch_idx, dataloader_idx)

    on_train_batch_end.__doc__ = hook.__doc__

    on_train_batch_end._occon_patched = True  # type: ignore[attr-defined]
    BaseMomentumMethod.on_train_batch_end = on_train_batch_end
    return True


PATCHES: Dict[str, bool] = {}  # patch -> applied here (False: this host does not need it)
PATCHES["momentum_batch_end"] = _patch_momentum_batch_end()


# --------------------------------------------------------------------------------------------
# 1.0.2's DINO defines ``clip_gradients(self, clip)`` for its own ``on_after_backward``, shadowing
# Lightning's ``clip_gradients(optimizer, gradient_clip_val, gradient_clip_algorithm)``, which
# Lightning 1.9 calls every step (TypeError). solo-learn main renamed it ``dino_clip_gradients``;
# here both callers get theirs (idempotent).
# --------------------------------------------------------------------------------------------
def _patch_dino_clip_gradients() -> bool:
    dino = _solo_methods.METHODS.get("dino")
    own = vars(dino).get("clip_gradients") if dino is not None else None
    if own is not None and getattr(own, "_occon_patched", False):
        return True
    if own is None or list(inspect.signature(own).parameters) != ["self", "clip"]:
        return False  # solo-learn main (dino_clip_gradients): nothing to work around

    def clip_gradients(self, *args, **kwargs):
        if len(args) == 1 and not kwargs and isinstance(args[0], (int, float)):
            return own(self, args[0])  # DINO's on_after_backward: clip_gradients(self.clip_grad)
        return LightningModule.clip_gradients(self, *args, **kwargs)

    clip_gradients._occon_patched = True  # type: ignore[attr-defined]
    dino.clip_gradients = clip_gradients
    return True


PATCHES["dino_clip_gradients"] = _patch_dino_clip_gradients()


# --------------------------------------------------------------------------------------------
# 1.0.2's W-MSE whitening calls ``torch.cholesky``, which torch 2.x removed (it raises);
# solo-learn main calls ``torch.linalg.cholesky``. Only that module sees the replacement.
# --------------------------------------------------------------------------------------------
def _patch_whitening_cholesky() -> bool:
    import types

    import torch

    try:
        from solo.utils import whitening
    except ImportError:
        return False
    if GENERATION != "1.0.2":
        return False  # solo-learn main calls torch.linalg.cholesky: nothing to work around
    if getattr(whitening, "torch", None) is not torch:
        return True  # already patched

    class _TorchWithLinalgCholesky(types.ModuleType):
        cholesky = staticmethod(torch.linalg.cholesky)

        def __getattr__(self, name):
            return getattr(torch, name)

    whitening.torch = _TorchWithLinalgCholesky("torch")
    return True


PATCHES["whitening_cholesky"] = _patch_whitening_cholesky()


# --------------------------------------------------------------------------------------------
# Both generations compute top-5 accuracy unconditionally in LinearModel (and the momentum
# classifier), which fails with fewer than 5 classes ("selected index k out of range"). Cap every
# k at the number of classes (what main's online classifier already does with top_k_max).
# --------------------------------------------------------------------------------------------
def _patch_top_k() -> bool:
    import solo.methods.base as _base
    import solo.methods.linear as _linear
    import solo.utils.metrics as _metrics

    original = _metrics.accuracy_at_k
    if getattr(original, "_occon_patched", False):
        return True

    def accuracy_at_k(outputs, targets, top_k=(1, 5)):
        n_classes = outputs.size(-1)
        return original(outputs, targets, top_k=tuple(min(int(k), n_classes) for k in top_k))

    accuracy_at_k.__doc__ = original.__doc__
    accuracy_at_k._occon_patched = True  # type: ignore[attr-defined]
    for module in (_metrics, _base, _linear):
        if getattr(module, "accuracy_at_k", None) is original:
            module.accuracy_at_k = accuracy_at_k
    return True

PATCHES["top_k"] = _patch_top_k()


# --------------------------------------------------------------------------------------------
# Constructors: the plugin speaks main's cfg; 1.0.2 wants flat keyword arguments.
# --------------------------------------------------------------------------------------------
def _select(cfg: DictConfig, key: str, default: Any = None) -> Any:
    """:func:`occon_plugin.config.select` as plain Python values (the 1.0.2 constructors want them)."""
    from occon_plugin.cfgkeys import select

    value = select(cfg, key, default)
    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value


def legacy_kwargs(cfg: DictConfig) -> Dict[str, Any]:
    """Translate a solo-learn-main style cfg into solo-learn 1.0.2 constructor keywords."""
    optimizer = cfg.optimizer
    opt_kwargs = dict(_select(cfg, "optimizer.kwargs", {}) or {})
    lars = optimizer.name == "lars"
    kwargs: Dict[str, Any] = dict(
        encoder=cfg.backbone.name,
        num_classes=int(cfg.data.num_classes),
        backbone_args=dict(_select(cfg, "backbone.kwargs", {}) or {}),
        max_epochs=int(cfg.max_epochs),
        batch_size=int(optimizer.batch_size),
        optimizer="sgd" if lars else optimizer.name,
        lars=lars,
        lr=float(optimizer.lr),
        weight_decay=float(optimizer.weight_decay),
        classifier_lr=float(_select(cfg, "optimizer.classifier_lr", optimizer.lr)),
        exclude_bias_n_norm=bool(opt_kwargs.pop("exclude_bias_n_norm", False)),
        eta_lars=float(opt_kwargs.pop("eta", 1e-3)),
        grad_clip_lars=bool(opt_kwargs.pop("clip_lr", False)),
        accumulate_grad_batches=int(_select(cfg, "accumulate_grad_batches", 1) or 1),
        extra_optimizer_args=opt_kwargs,
        scheduler=cfg.scheduler.name,
        lr_decay_steps=_select(cfg, "scheduler.lr_decay_steps", None),
        min_lr=float(_select(cfg, "scheduler.min_lr", 0.0)),
        warmup_start_lr=float(_select(cfg, "scheduler.warmup_start_lr", 3e-5)),
        warmup_epochs=float(_select(cfg, "scheduler.warmup_epochs", 10)),
        num_large_crops=int(cfg.data.num_large_crops),
        num_small_crops=int(cfg.data.num_small_crops),
        knn_eval=bool(_select(cfg, "knn_eval.enabled", False)),
        knn_k=int(_select(cfg, "knn_eval.k", 20)),
    )
    if OmegaConf.select(cfg, "momentum") is not None:
        kwargs.update(
            base_tau_momentum=float(_select(cfg, "momentum.base_tau", 0.99)),
            final_tau_momentum=float(_select(cfg, "momentum.final_tau", 1.0)),
            momentum_classifier=bool(_select(cfg, "momentum.classifier", False)),
        )
    if kwargs["warmup_epochs"] == 0:  # as main does: no warmup starts at the full rate
        kwargs["warmup_start_lr"] = kwargs["lr"]
    kwargs.update(_select(cfg, "method_kwargs", {}) or {})
    return kwargs


def parent_init_args(cfg: DictConfig) -> Tuple[tuple, Dict[str, Any]]:
    """Positional and keyword arguments for a host method's ``__init__`` built from ``cfg``."""
    if GENERATION == "main":
        return (cfg,), {}
    return (), legacy_kwargs(cfg)


def build_method(name: str, cfg: DictConfig, **plugin_kwargs: Any):
    """Instantiate ``METHODS[name]`` from a main-schema cfg on either host generation.

    ``plugin_kwargs`` (e.g. ``occon=<OcconConfig>``) go to a plugin method's constructor (one whose class sets
    ``occon_accepts_cfg``), never to a host method. Raises ``KeyError`` for an unregistered name (the
    CLIs check ``method`` first) and ``TypeError`` for ``plugin_kwargs`` given to a host method."""
    if name not in METHODS:
        raise KeyError(f"method={name!r} is not registered; known methods: {sorted(METHODS)}")
    cls = METHODS[name]
    if getattr(cls, "occon_accepts_cfg", False):
        return cls(cfg, **plugin_kwargs)
    if plugin_kwargs:
        raise TypeError(f"method={name!r} is solo-learn's own: it takes no {sorted(plugin_kwargs)}")
    if GENERATION == "main":
        return cls(cfg)
    return cls(**legacy_kwargs(cfg))


def build_linear_model(backbone, cfg: DictConfig):
    """The host's ``LinearModel`` around a (frozen) backbone."""
    if GENERATION == "main":
        return LinearModel(backbone, cfg=cfg)
    kwargs = legacy_kwargs(cfg)
    kwargs.pop("encoder")
    return LinearModel(backbone=backbone, **kwargs)


def training_step_output_loss(out: Any):
    """1.0.2 and main both return either a tensor or a dict with ``loss``."""
    return out["loss"] if isinstance(out, dict) else out


# --------------------------------------------------------------------------------------------
# Data: the host's per-view transform from one item of main's ``augmentations`` list.
# --------------------------------------------------------------------------------------------
# A key missing from one item of main's ``augmentations`` list: the one default table of both pipelines.
def build_view_transform(aug_cfg, mean=IMAGENET_MEAN, std=IMAGENET_STD):
    """The host's own single-view pretraining transform (PIL image -> normalised float32 tensor 3 x S x S,
    S = ``crop_size``); keys ``aug_cfg`` leaves out come from :data:`occon_plugin.augment.views.VIEW_DEFAULTS`.
    Raises :class:`~occon_plugin.errors.ConfigError` for a setting the installed host cannot run."""
    from occon_plugin.augment.views import VIEW_DEFAULTS
    from occon_plugin.errors import ConfigError

    aug = OmegaConf.merge(OmegaConf.create(VIEW_DEFAULTS), aug_cfg)
    if GENERATION == "main":
        from solo.data.pretrain_dataloader import build_transform_pipeline

        aug.mean, aug.std = list(mean), list(std)
        return build_transform_pipeline("custom", aug)
    from solo.utils.pretrain_dataloader import CustomTransform

    if aug.equalization.prob > 0:
        raise ConfigError("augmentations: equalization.prob > 0 is not supported by solo-learn 1.0.2: set it to 0 "
                          "or install solo-learn main")
    scale = (aug.rrc.crop_min_scale, aug.rrc.crop_max_scale) if aug.rrc.enabled else (1.0, 1.0)
    return CustomTransform(
        brightness=aug.color_jitter.brightness,
        contrast=aug.color_jitter.contrast,
        saturation=aug.color_jitter.saturation,
        hue=aug.color_jitter.hue,
        color_jitter_prob=aug.color_jitter.prob,
        gray_scale_prob=aug.grayscale.prob,
        horizontal_flip_prob=aug.horizontal_flip.prob,
        gaussian_prob=aug.gaussian_blur.prob,
        solarization_prob=aug.solarization.prob,
        min_scale=scale[0],
        max_scale=scale[1],
        crop_size=int(aug.crop_size),
        mean=mean,
        std=std,
    )


def build_host_pretrain_loader(cfg: DictConfig):
    """The training loader exactly as the host's own ``main_pretrain.py`` builds it for
    ``data.format=image_folder`` (its transform classes, ``prepare_datasets``, ``prepare_dataloader``):
    what the object-aware methods' hooks find in ``trainer.train_dataloader`` when solo-learn's
    script runs them. For tests and docs; the plugin's own script uses its own pipelines."""
    views = [(build_view_transform(aug), int(OmegaConf.select(aug, "num_crops", default=1)))
             for aug in cfg.augmentations]
    no_labels = bool(OmegaConf.select(cfg, "data.no_labels", default=False))
    batch_size, workers = int(cfg.optimizer.batch_size), int(OmegaConf.select(cfg, "data.num_workers", default=0))
    if GENERATION == "main":
        from solo.data.pretrain_dataloader import (FullTransformPipeline, NCropAugmentation, prepare_dataloader,
                                                   prepare_datasets)

        transform = FullTransformPipeline([NCropAugmentation(t, n) for t, n in views])
        dataset = prepare_datasets(str(cfg.data.dataset), transform, train_data_path=str(cfg.data.train_path),
                                   data_format="image_folder", no_labels=no_labels,
                                   data_fraction=float(OmegaConf.select(cfg, "data.fraction", default=-1)))
    else:
        from solo.utils.pretrain_dataloader import (FullTransformPipeline, NCropAugmentation, prepare_dataloader,
                                                    prepare_datasets)

        transform = FullTransformPipeline([NCropAugmentation(t, n) for t, n in views])
        dataset = prepare_datasets(str(cfg.data.dataset), transform, data_dir=str(cfg.data.train_path),
                                   train_dir=".", no_labels=no_labels)
    return prepare_dataloader(dataset, batch_size=batch_size, num_workers=workers)


# Trainer keywords that keep a loader's own (DDP-aware) sampler instead of Lightning's.
KEEP_SAMPLER: Dict[str, Any] = (
    {"use_distributed_sampler": False} if GENERATION == "main" else {"replace_sampler_ddp": False}
)


def make_trainer(cfg: DictConfig, **overrides):
    """A Lightning ``Trainer`` from the cfg's top-level Lightning keys (unknown keys ignored).

    ``strategy: auto`` with several processes is DDP in both generations (Lightning 1.9's own default on
    CPU is ``ddp_spawn``). Spawning strategies are refused: a spawned process gets a pickled copy of the
    trainer, and the plugin's run lock, signal handling and checkpoint writer do not travel that way.
    Raises :class:`~occon_plugin.errors.ConfigError` for those and for every setting Lightning itself
    refuses (``accelerator=gpu`` without a GPU, ``devices`` beyond the machine's ...), naming the keys."""
    from occon_plugin.cfgkeys import num_devices
    from occon_plugin.errors import ConfigError

    valid = inspect.signature(Trainer.__init__).parameters
    container = OmegaConf.to_container(cfg, resolve=True)
    kwargs = {k: container[k] for k in valid if k in container}
    strategy = kwargs.get("strategy")
    if isinstance(strategy, str) and "spawn" in strategy:
        raise ConfigError(f"strategy={strategy} is not supported (the run lock, SIGTERM checkpoint and atomic "
                          f"checkpoint writer do not travel to spawned processes): use strategy=ddp")
    if str(kwargs.get("accelerator")) in ("gpu", "cuda"):
        import torch

        if not torch.cuda.is_available():
            raise ConfigError(f"accelerator={kwargs['accelerator']} but no CUDA device is visible here: use "
                              f"accelerator=auto (or cpu)")
    if strategy in ("auto", None) and GENERATION != "main":
        kwargs.pop("strategy", None)  # Lightning 1.9 has no "auto" strategy name
        if num_devices(cfg) * int(container.get("num_nodes") or 1) > 1:
            kwargs["strategy"] = "ddp"  # what Lightning 2.x's "auto" picks; 1.9 would spawn
    kwargs.update(overrides)
    if GENERATION != "main" and str(kwargs.get("precision")) in ("16", "16-mixed"):
        import torch

        if str(kwargs.get("accelerator")) == "cpu" or not torch.cuda.is_available():
            # Lightning 1.9 turns float16 on the CPU into bf16 with only a warning (hidden by PYTHONWARNINGS)
            print(f"[occon] precision={kwargs['precision']} on the CPU: Lightning 1.9 trains with bf16 autocast "
                  f"instead (no float16 autocast on the CPU there); precision=bf16 or 32 says what runs",
                  file=sys.stderr)
    try:
        return Trainer(**kwargs)
    except Exception as exc:  # Lightning's MisconfigurationException (its module moved between generations);
        # its accelerators check their arguments with TypeError / ValueError (`devices` ... should be an int > 0)
        if type(exc).__name__ != "MisconfigurationException" and not isinstance(exc, (TypeError, ValueError)):
            raise
        keys = ", ".join(f"{k}={kwargs[k]}" for k in ("accelerator", "devices", "num_nodes", "strategy", "precision")
                         if k in kwargs)
        raise ConfigError(f"Lightning refuses the trainer settings ({keys}): {exc}") from None


def _flatten_loaders(loaders: Any) -> List[Any]:
    loaders = getattr(loaders, "loaders", loaders)  # Lightning 1.9 CombinedLoader
    if loaders is None:
        return []
    if isinstance(loaders, dict):
        return list(loaders.values())
    if isinstance(loaders, (list, tuple)):
        return list(loaders)
    return [loaders]


def pretrain_run_folder(trainer) -> Optional[Path]:
    """The run folder of solo-learn's own ``main_pretrain.py``: its ``Checkpointer``'s ``path`` (solo-learn main
    sets it in the callback's ``on_train_start``: ``<checkpoint.dir>/<method>/<W&B id or offline-xxxx>``); None
    before that or without a ``Checkpointer`` (``checkpoint.enabled=false``)."""
    for callback in getattr(trainer, "callbacks", None) or ():
        if type(callback).__name__ == "Checkpointer" and getattr(callback, "path", None) is not None:
            return Path(callback.path)
    return None


def train_dataloaders(trainer) -> List[Any]:
    """The training loader(s) Lightning iterates, once it set them up (``on_train_start``):
    Lightning 2.x returns the loader (or a collection), Lightning 1.9 a ``CombinedLoader``."""
    return _flatten_loaders(getattr(trainer, "train_dataloader", None))


def pending_train_dataloaders(trainer) -> List[Any]:
    """The training loader(s) given to ``trainer.fit``, *before* Lightning iterates them (the
    ``setup`` hook). Lightning 2.x creates the loader's iterator -- and so forks its worker
    processes, each with a copy of the dataset -- in ``fit_loop.setup_data``, which runs before
    ``on_fit_start`` when ``configure_optimizers`` asks for ``trainer.estimated_stepping_batches``
    (solo-learn's warmup-cosine schedule does): a dataset changed later would only reach the main
    process. Lightning has
    no public accessor at that point; this reads its data source (``fit_loop._data_source`` in 2.x,
    ``_data_connector._train_dataloader_source`` in 1.9). Empty when the loaders come from a
    ``*_dataloader()`` hook of a module or data module (or a Lightning without these attributes)."""
    source = getattr(getattr(trainer, "fit_loop", None), "_data_source", None)
    if source is None:
        source = getattr(getattr(trainer, "_data_connector", None), "_train_dataloader_source", None)
    instance = getattr(source, "instance", None)
    if instance is None or isinstance(instance, (LightningModule, LightningDataModule)):
        return []
    return _flatten_loaders(instance)


def with_method_defaults(cfg: DictConfig) -> DictConfig:
    """A copy of ``cfg`` with the defaults ``cfg.method``'s constructor will fill in, so that a run's saved
    ``config.yaml`` (written after the method was built) compares key for key with a new cfg (before it is):
    solo-learn main's methods complete their cfg in place (``add_and_assert_specific_cfg``: e.g.
    ``optimizer.exclude_bias_n_norm_wd``, ``scheduler.interval``, ``scheduler.min_lr``); 1.0.2's do not (argparse:
    the copy is returned as is). A cfg the method's checks refuse is returned unfilled (building the method
    says what is wrong)."""
    filled = cfg.copy()
    fill = getattr(METHODS.get(str(_select(cfg, "method", ""))), "add_and_assert_specific_cfg", None)
    if fill is not None:
        try:
            with open_dict(filled):
                filled = fill(filled) or filled
        except Exception:  # noqa: BLE001 - the method's own constructor reports it, with its message
            return cfg.copy()
    return filled


def take_lightning_sigterm(trainer) -> bool:
    """Lightning 2.x notes SIGTERM itself: its signal connector (installed at ``fit``, before the plugin's own
    handler, which it still calls) sets ``received_sigterm``, and its loops then end ``fit`` at the end of the
    running step with ``SIGTERMException`` -- a ``SystemExit`` with status 0 -- before the plugin's stop callback
    saves its resumable checkpoint at the next step boundary: the run would stop with exit 0 and no checkpoint.
    The plugin takes the signal over: this clears Lightning's flag and returns whether it was set. Lightning 1.9
    has no such flag (returns False). (Lightning PR #16501 added it.)"""
    connector = getattr(trainer, "_signal_connector", None)
    if connector is not None and getattr(connector, "received_sigterm", False):
        connector.received_sigterm = False
        return True
    return False


try:  # Lightning 2.x's "stopped by SIGTERM" (a SystemExit); Lightning 1.9 has none
    from lightning.pytorch.utilities.exceptions import SIGTERMException as LightningSigterm
except ImportError:  # pragma: no cover - Lightning 1.9
    class LightningSigterm(SystemExit):
        """Never raised: Lightning 1.9 has no SIGTERMException."""


def describe() -> str:
    return f"solo-learn {SOLO_VERSION} ({GENERATION} API) on Lightning {LIGHTNING_VERSION}"


# Fully imported: the registration hook in occon_plugin/__init__.py registers the object-aware methods right
# after this module finishes importing (this module imports none of the plugin's methods: no import circle).
READY = True
