"""Run folders: which run a pretraining command continues, atomic checkpoints, resume state.

Policy (``<checkpoint.dir>/<method>/<name>/``, decided before anything is written):

* **empty or new folder**: a fresh run there.
* **folder holds a run, ``auto_resume.enabled=true``**: the run is continued only when every
  run-defining setting (:data:`RUN_KEYS`, the settings solo-learn's own auto-resumer compares and
  those that change what is trained: method, backbone, method_kwargs, optimizer, scheduler,
  max_epochs, data, augmentations, occon, seed, precision) equals the saved ``config.yaml``;
  otherwise the command stops with one line naming the differing keys (exit 2) and writes nothing.
  It resumes from the newest checkpoint that reads back whole (a torn ``last.ckpt`` left by an
  older writer or a damaged disk is renamed ``*.damaged`` and the next good one is used, saying
  so); with none left the run starts over in the same folder (same settings).
* **folder holds a run, ``auto_resume.enabled=false``**: the new run goes to the first free
  ``<name>-2``, ``<name>-3``, ... (``cfg.name`` is updated), as solo-learn gives every run its own
  folder: an earlier run's config and checkpoints are never overwritten.

Checkpoints are written atomically (:class:`AtomicCheckpointIO`: temp file, fsync, rename), so
``kill -9`` while ``last.ckpt`` is written leaves the previous ``last.ckpt`` intact.

What a Lightning checkpoint does not restore, and :class:`ResumeState` does (saved in the
checkpoint's callback state): the momentum encoder's current tau (solo-learn recomputes it only
after the next update, so the first resumed step would use the initial tau), and the global RNGs
(torch, numpy, Python). The sampler position needs nothing: checkpoints are written at epoch ends and
the torchvision sampler draws each epoch from ``[seed, epoch]`` (Lightning sets the epoch); the DALI
source starts at the resumed epoch (``ObjectAwareDALIDataModule``). The DALI pipeline's own random
stream (its standard augmentations) has no saveable state: a resumed DALI run differs from an
uninterrupted one in those draws (``tests/robustness/test_resume.py`` measures both paths).
"""
from __future__ import annotations

import random
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np
from omegaconf import DictConfig, OmegaConf

from occon_plugin.atomic import OUTPUT_ERRNOS, atomic_path, output_error
from occon_plugin.errors import ConfigError, examples

# Settings that define a run: a resumed run must match them (compared after defaults and lr scaling).
RUN_KEYS = ("method", "backbone", "method_kwargs", "optimizer", "scheduler", "max_epochs", "data.dataset",
            "data.train_path", "data.image_root", "data.format", "data.num_large_crops", "data.num_small_crops",
            "data.fraction", "augmentations", "occon", "seed", "precision")
# Inside those sections, keys that do not change what is trained.
IGNORED_KEYS = ("data.num_workers",)
CONFIG_FILE = "config.yaml"
_SHOW = 6


@dataclass
class RunPlan:
    """Where a run writes and what it resumes from."""

    out_dir: Path
    ckpt_path: Optional[str]          # checkpoint to resume from, or None
    notes: list[str]                  # what was decided and why (printed by the CLI)


def run_folder(cfg: DictConfig) -> Path:
    return Path(str(cfg.checkpoint.dir)) / str(cfg.method) / str(cfg.name)


def holds_run(folder: Path) -> bool:
    return folder.is_dir() and ((folder / CONFIG_FILE).is_file() or any(folder.glob("*.ckpt")))


def _plain(value: Any) -> Any:
    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value


def _flatten(value: Any, prefix: str, out: dict) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            _flatten(v, f"{prefix}.{k}" if prefix else str(k), out)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _flatten(v, f"{prefix}[{i}]", out)
    else:
        out[prefix] = value


def run_settings(cfg: DictConfig) -> dict[str, Any]:
    """The run-defining settings of ``cfg`` as flat ``key -> value`` pairs."""
    flat: dict[str, Any] = {}
    for key in RUN_KEYS:
        _flatten(_plain(OmegaConf.select(cfg, key, default=None)), key, flat)
    return {k: v for k, v in flat.items() if not any(k == i or k.startswith(i + ".") for i in IGNORED_KEYS)}


def setting_differences(old: DictConfig, new: DictConfig) -> list[str]:
    """``["optimizer.lr: 0.03 -> 0.1", ...]`` over :data:`RUN_KEYS` (missing keys shown as None)."""
    a, b = run_settings(old), run_settings(new)
    return [f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]


def checkpoint_readable(path: Path) -> bool:
    """A checkpoint that reads back whole: a torch zip archive whose every member's CRC checks
    (no unpickling), or for the legacy format, one ``torch.load`` can read."""
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                return archive.testzip() is None
        import torch

        torch.load(path, map_location="cpu", weights_only=False)
        return True
    except Exception:  # torn, truncated or not a checkpoint at all
        return False


def find_resume_checkpoint(folder: Path, notes: list[str]) -> Optional[Path]:
    """The newest readable checkpoint of ``folder`` (``last.ckpt`` first, then other ``*.ckpt`` by
    modification time, ``final.ckpt`` last); damaged ones are renamed ``<name>.damaged`` (kept, not
    deleted) and named in ``notes``."""
    candidates = sorted((p for p in folder.glob("*.ckpt") if p.name not in ("last.ckpt", "final.ckpt")),
                        key=lambda p: p.stat().st_mtime, reverse=True)
    ordered = [folder / "last.ckpt", *candidates, folder / "final.ckpt"]
    for path in ordered:
        if not path.is_file():
            continue
        if checkpoint_readable(path):
            if path.name != "last.ckpt":
                notes.append(f"resuming from {path.name}, the newest checkpoint that reads back whole")
            return path
        damaged = path.with_name(path.name + ".damaged")
        path.replace(damaged)
        notes.append(f"{path} is damaged (torn or truncated: a killed writer or a bad disk); kept as {damaged.name}")
    return None


def ensure_writable(folder: Path) -> None:
    """Create ``folder`` and prove a file can be written there, before any training; raises
    :class:`~occon_plugin.errors.OutputError` naming it (read-only, full, no permission)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".occon-write-test-"):
            pass
    except OSError as exc:
        if exc.errno in OUTPUT_ERRNOS:
            raise output_error(folder, exc) from exc
        raise


def plan_run(cfg: DictConfig) -> RunPlan:
    """Decide the run folder and checkpoint by the module's policy (may set ``cfg.name``).
    Raises :class:`ConfigError` when ``auto_resume`` would continue a run with other settings, and
    :class:`~occon_plugin.errors.OutputError` when the folder cannot be written."""
    plan = _plan_run(cfg)
    ensure_writable(plan.out_dir)
    return plan


def _plan_run(cfg: DictConfig) -> RunPlan:
    folder = run_folder(cfg)
    notes: list[str] = []
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"checkpoint folder {folder} is a file: choose another checkpoint.dir or name")
    if not holds_run(folder):
        return RunPlan(folder, None, notes)
    auto_resume = bool(OmegaConf.select(cfg, "auto_resume.enabled", default=False))
    if not auto_resume:
        base, k = str(cfg.name), 2
        while holds_run(folder.with_name(f"{base}-{k}")):
            k += 1
        cfg.name = f"{base}-{k}"
        new = run_folder(cfg)
        notes.append(f"{folder} holds an earlier run (kept): this run is written to {new} "
                     f"(auto_resume.enabled=true continues a run with the same settings)")
        return RunPlan(new, None, notes)
    config_file = folder / CONFIG_FILE
    if not config_file.is_file():
        raise ConfigError(f"{folder} holds checkpoints but no {CONFIG_FILE}: its settings cannot be compared, so "
                          f"it is not resumed. Pass ++name=<new name> for a new run, or move the folder away")
    try:
        old = OmegaConf.load(config_file)
    except Exception as exc:  # a damaged yaml
        raise ConfigError(f"{config_file} cannot be read ({type(exc).__name__}: {exc}): the run cannot be checked "
                          f"before resuming. Pass ++name=<new name> for a new run") from exc
    diffs = setting_differences(old, cfg)
    if diffs:
        raise ConfigError(
            f"auto_resume: {folder} holds a run with other settings ({examples(diffs, show=_SHOW, sep='; ')}); resuming "
            f"would continue its weights and steps under a new config. Use the same settings to continue it, or "
            f"++name=<new name> (or auto_resume.enabled=false) to start a new run; the old run is left as it is")
    ckpt = find_resume_checkpoint(folder, notes)
    if ckpt is None:
        notes.append(f"{folder} has the same settings but no readable checkpoint: starting it over")
        return RunPlan(folder, None, notes)
    notes.append(f"resuming from {ckpt}")
    return RunPlan(folder, str(ckpt), notes)


def atomic_checkpoint_io():
    """A Lightning ``CheckpointIO`` whose ``save_checkpoint`` writes through
    :func:`occon_plugin.atomic.atomic_path` (pass as ``Trainer(plugins=[...])``)."""
    import torch

    from occon_plugin import host

    class AtomicCheckpointIO(host.pl.plugins.io.TorchCheckpointIO):
        """Checkpoints appear whole or not at all (temp file + fsync + rename)."""

        def save_checkpoint(self, checkpoint, path, storage_options=None):
            if storage_options is not None:
                raise TypeError(f"{type(self).__name__} takes no storage_options")
            with atomic_path(path) as tmp:
                torch.save(checkpoint, tmp)

    return AtomicCheckpointIO()


def resume_state_callback():
    """A Lightning callback saving and restoring what checkpoints otherwise lose (module doc)."""
    import torch

    from occon_plugin import host

    class ResumeState(host.Callback):
        def __init__(self):
            self.module = None
            self.loaded: Optional[dict] = None
            self.schedulers: Optional[list] = None

        @property
        def state_key(self) -> str:
            return "occon.ResumeState"

        def setup(self, trainer, pl_module, stage=None):
            self.module = pl_module

        def state_dict(self) -> dict:
            # plain types only: Lightning reads checkpoints back with torch.load(weights_only=True)
            kind, keys, pos, has_gauss, cached = np.random.get_state()
            state = {"torch_rng": torch.get_rng_state(),
                     "numpy_rng": [kind, [int(k) for k in keys], int(pos), int(has_gauss), float(cached)],
                     "python_rng": list(random.getstate())}
            updater = getattr(self.module, "momentum_updater", None)
            if updater is not None:
                state["cur_tau"] = float(updater.cur_tau)
            trainer = getattr(self.module, "trainer", None) if self.module is not None else None
            if trainer is not None:
                state["lr_schedulers"] = [c.scheduler.state_dict() for c in trainer.lr_scheduler_configs]
            return state

        def load_state_dict(self, state_dict: dict) -> None:
            self.loaded = dict(state_dict)

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx, *args):
            # Lightning (1.9 and 2.x) steps epoch-interval LR schedulers once more when it restarts from
            # an epoch-end checkpoint although they were stepped before the save: put them (and the
            # optimizer's learning rates) back to the saved state before the first resumed step.
            saved, self.schedulers = self.schedulers, None
            if not saved:
                return
            for config, state in zip(trainer.lr_scheduler_configs, saved):
                config.scheduler.load_state_dict(state)
                last = state.get("_last_lr")
                if last is not None:
                    for group, lr in zip(config.scheduler.optimizer.param_groups, last):
                        group["lr"] = lr

        def on_train_start(self, trainer, pl_module):
            if not self.loaded:
                return
            state, self.loaded = self.loaded, None
            self.schedulers = state.get("lr_schedulers")
            updater = getattr(pl_module, "momentum_updater", None)
            if updater is not None and "cur_tau" in state:
                updater.cur_tau = state["cur_tau"]
            if "torch_rng" in state:
                torch.set_rng_state(state["torch_rng"])
                kind, keys, pos, has_gauss, cached = state["numpy_rng"]
                np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
                version, internal, gauss = state["python_rng"]
                random.setstate((version, tuple(internal), gauss))

    return ResumeState()


def save_config_once(cfg: DictConfig, out_dir: Path) -> None:
    """Write ``config.yaml`` atomically (a resumed run rewrites the same settings)."""
    with atomic_path(out_dir / CONFIG_FILE) as tmp:
        OmegaConf.save(cfg, tmp)
