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

import fcntl
import hashlib
import json
import os
import random
import signal
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np
from omegaconf import DictConfig, OmegaConf

from occon_plugin.atomic import OUTPUT_ERRNOS, atomic_path, atomic_torch_save, make_output_dir, output_error
from occon_plugin.errors import ConfigError, OutputError, TrainingDivergedError, examples
from occon_plugin.train.process import Terminated, launch_dir, launched_rank  # noqa: F401  (launched_rank: the run folders' API)

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
    named_dir: Optional[Path] = None  # the folder of cfg.name when the run moved to <name>-k


def run_folder(cfg: DictConfig) -> Path:
    return Path(str(cfg.checkpoint.dir)) / str(cfg.method) / str(cfg.name)


def holds_run(folder: Path) -> bool:
    return folder.is_dir() and ((folder / CONFIG_FILE).is_file() or any(folder.glob("*.ckpt")))


def _saved_anything(folder: Path) -> bool:
    """Whether a run folder holds anything a run wrote while training: a checkpoint (anywhere below it), a
    weights file or one-stage refresh versions. A folder with only its settings (``config.yaml``, ``args.json``,
    a lock, logs) has nothing another setting could be mixed with."""
    return any(folder.rglob("*.ckpt")) or any(folder.glob("*.pt")) or (folder / "refresh").exists()


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


# Run-defining settings that are paths: compared as the folders they name (a relative path against the launch
# folder, symbolic links followed), so `stores/x` and `/home/me/stores/x` are the same run.
PATH_KEYS = ("data.train_path", "data.image_root", "occon.store")


def _same_path(value: Any) -> Any:
    if not isinstance(value, str) or not value or "://" in value or value == "???":
        return value

    path = Path(value).expanduser()
    return os.path.realpath(path if path.is_absolute() else launch_dir() / path)


def run_settings(cfg: DictConfig) -> dict[str, Any]:
    """The run-defining settings of ``cfg`` as flat ``key -> value`` pairs (:data:`PATH_KEYS` resolved)."""
    flat: dict[str, Any] = {}
    for key in RUN_KEYS:
        _flatten(_plain(OmegaConf.select(cfg, key, default=None)), key, flat)
    flat = {k: _same_path(v) if k in PATH_KEYS else v for k, v in flat.items()}
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
    make_output_dir(folder)
    try:
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
        return RunPlan(new, None, notes, named_dir=folder)
    config_file = folder / CONFIG_FILE
    if not config_file.is_file():
        raise ConfigError(f"{folder} holds checkpoints but no {CONFIG_FILE}: its settings cannot be compared, so "
                          f"it is not resumed. Pass ++name=<new name> for a new run, or move the folder away")
    try:
        old = OmegaConf.load(config_file)
    except Exception as exc:  # a damaged yaml
        raise ConfigError(f"{config_file} cannot be read ({type(exc).__name__}: {exc}): the run cannot be checked "
                          f"before resuming. Pass ++name=<new name> for a new run") from exc
    from occon_plugin import host

    # config.yaml was written after the method completed its cfg (solo-learn main fills optimizer/scheduler defaults
    # in place); this cfg is compared with the same defaults filled in
    diffs = setting_differences(old, host.with_method_defaults(cfg))
    if diffs and not _saved_anything(folder):  # e.g. a DDP run refused by a rank's check after config.yaml
        notes.append(f"{folder} holds the settings of a run that saved nothing (no checkpoint, no refresh): "
                     f"starting it over with these settings")
        return RunPlan(folder, None, notes)
    if diffs:
        raise ConfigError(
            f"auto_resume: {folder} holds a run with other settings ({examples(diffs, show=_SHOW, sep='; ')}); resuming "
            f"would continue its weights and steps under a new config. Use the same settings to continue it, or "
            f"++name=<new name> (or auto_resume.enabled=false) to start a new run; the old run is left as it is")
    rebuilt = store_changed(folder, cfg)
    if rebuilt:
        raise ConfigError(
            f"auto_resume: the store occon.store={OmegaConf.select(cfg, 'occon.store')} was rebuilt since the run in "
            f"{folder} started ({rebuilt}): resuming would continue its weights on other masks. Start a new run "
            f"(++name=<new name> or auto_resume.enabled=false), or rebuild the store as it was")
    ckpt = find_resume_checkpoint(folder, notes)
    if ckpt is None:
        notes.append(f"{folder} has the same settings but no readable checkpoint: starting it over")
        return RunPlan(folder, None, notes)
    notes.append(f"resuming from {ckpt}")
    return RunPlan(folder, str(ckpt), notes)


def save_checkpoint_file(checkpoint: dict, path) -> None:
    """Write a training checkpoint whole or not at all, never with non-finite weights.

    Raises :class:`~occon_plugin.errors.TrainingDivergedError` when ``checkpoint["state_dict"]`` holds
    NaN/Inf (nothing is written: the previous file stays the last finite checkpoint) and
    :class:`~occon_plugin.errors.OutputError` when the disk is full, a file-size limit is reached or
    the folder is not writable (one line naming the folder; the previous file at ``path`` is intact)."""
    from occon_plugin.finite import nonfinite_tensors

    path = Path(path)
    bad = nonfinite_tensors(checkpoint.get("state_dict") or {})
    if bad:
        step = checkpoint.get("global_step")
        raise TrainingDivergedError(
            f"the weights at step {step} are not finite (NaN or Inf in {examples(bad, show=3)}): training diverged; "
            f"{path.name} was not written" + (f" ({path} keeps the last finite checkpoint)" if path.is_file() else "")
            + "; lower optimizer.lr and train again")
    try:
        atomic_torch_save(checkpoint, path)
    except OutputError as err:
        kept = (f"the previous {path.name} is intact: run the same command again to resume from it"
                if path.is_file() else f"no earlier {path.name} there")
        raise OutputError(f"{err}. Run folder {path.parent} (checkpoint.dir chooses another disk): {kept}") from None


def save_final_checkpoint(model, trainer, cfg: DictConfig, path: Path) -> None:
    """``final.ckpt``: the weights + the ``occon`` record (plain types only: loads with
    ``torch.load(weights_only=True)``, as the host's ``main_linear.py`` does); also readable by
    Lightning's ``load_from_checkpoint`` (``main_knn.py``)."""
    from occon_plugin import host
    from occon_plugin.models.normalization import plugin_pretrain_normalization

    checkpoint = {
        "state_dict": model.state_dict(),
        "global_step": trainer.global_step,
        "epoch": trainer.current_epoch,
        "pytorch-lightning_version": host.LIGHTNING_VERSION,
        "occon": {
            "method": str(cfg.method),
            "backbone": str(cfg.backbone.name),
            "host_generation": host.GENERATION,
            "checkpoint_layout": host.CHECKPOINT_LAYOUT,
            "normalization": plugin_pretrain_normalization(cfg).as_dict(),  # read back by occon_plugin.models
            "cfg": OmegaConf.to_container(cfg, resolve=True),
        },
    }
    save_checkpoint_file(checkpoint, path)  # atomic, finite weights only, one line on a full disk


def atomic_checkpoint_io():
    """A Lightning ``CheckpointIO`` whose ``save_checkpoint`` is :func:`save_checkpoint_file` (atomic,
    finite weights only, one line when the disk is full; pass as ``Trainer(plugins=[...])``).

    Raises:
        TypeError: Lightning passes ``storage_options`` (not supported by the atomic writer).
    """
    from occon_plugin import host

    class AtomicCheckpointIO(host.pl.plugins.io.TorchCheckpointIO):
        """Checkpoints appear whole or not at all (temp file + fsync + rename), never with NaN weights."""

        def save_checkpoint(self, checkpoint, path, storage_options=None):
            if storage_options is not None:
                raise TypeError(f"{type(self).__name__} takes no storage_options")
            save_checkpoint_file(checkpoint, path)

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
            self.batches_done: Optional[int] = None  # set while a mid-epoch checkpoint is saved (SIGTERM)
            self.resumed_epoch: Optional[int] = None
            self.epoch_end: Optional[list] = None

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
            if self.batches_done:
                state["batches_done_in_epoch"] = int(self.batches_done)
            return state

        def load_state_dict(self, state_dict: dict) -> None:
            self.loaded = dict(state_dict)

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx, *args):
            # Lightning (1.9 and 2.x) steps epoch-interval LR schedulers once more when it restarts from
            # an epoch-end checkpoint although they were stepped before the save: put them (and the
            # optimizer's learning rates) back to the saved state before the first resumed step.
            saved, self.schedulers = self.schedulers, None
            if saved:
                _load_schedulers(trainer.lr_scheduler_configs, saved)
            # Lightning 1.9's fit loop, still "restarting" at the end of the epoch it resumed in (max_steps runs:
            # always), steps the epoch-interval schedulers a second time after on_train_epoch_end: put them back
            # to the state of that hook before the next epoch's first step
            if self.epoch_end is not None and trainer.current_epoch != self.resumed_epoch:
                configs = [c for c in trainer.lr_scheduler_configs if not c.reduce_on_plateau]
                _load_schedulers(configs, self.epoch_end)
                self.epoch_end = None

        def on_train_epoch_end(self, trainer, pl_module):
            if self.resumed_epoch is not None and trainer.current_epoch == self.resumed_epoch:
                self.epoch_end = [c.scheduler.state_dict() for c in trainer.lr_scheduler_configs
                                  if not c.reduce_on_plateau]

        def on_train_start(self, trainer, pl_module):
            if not self.loaded:
                return
            state, self.loaded = self.loaded, None
            self.schedulers = state.get("lr_schedulers")
            self.resumed_epoch = int(trainer.current_epoch)
            if state.get("batches_done_in_epoch"):
                # saved mid-epoch (SIGTERM): Lightning runs only the epoch's remaining batches, the loaders
                # must draw exactly those (not the epoch's first ones again)
                skip_trained_batches(trainer, int(state["batches_done_in_epoch"]))
                # a stop before the epoch's LAST batch saved Lightning's "is_last_batch" (set when that batch
                # was fetched) as True; restored, it ends the resumed epoch before its one remaining batch
                # (Lightning 1.9 and 2.x: the epoch loop is done once is_last_batch), so that batch was never
                # trained and the run went on one epoch further. The resumed epoch has batches left: not last.
                progress = getattr(getattr(trainer.fit_loop, "epoch_loop", None), "batch_progress", None)
                if progress is not None and hasattr(progress, "is_last_batch"):
                    progress.is_last_batch = False
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


def _load_schedulers(configs, states) -> None:
    """Put LR schedulers (Lightning scheduler configs) and their optimizers' learning rates back to ``states``."""
    for config, state in zip(configs, states):
        config.scheduler.load_state_dict(state)
        last = state.get("_last_lr")
        if last is not None:
            for group, lr in zip(config.scheduler.optimizer.param_groups, last):
                group["lr"] = lr


def skip_trained_batches(trainer, batches: int) -> None:
    """Make the training loaders' next epoch start ``batches`` batches in: the torchvision path's
    :class:`~occon_plugin.augment.dataset.SeededRandomSampler` and the DALI loader both have
    ``skip_next``. Raises RuntimeError for a loader that cannot (a resume would silently repeat the
    epoch's first batches and leave out its last ones)."""
    from occon_plugin import host

    for loader in host.train_dataloaders(trainer):
        sampler = getattr(loader, "sampler", None)
        if hasattr(sampler, "skip_next"):
            sampler.skip_next(batches * int(loader.batch_size))
        elif hasattr(loader, "skip_next"):
            loader.skip_next(batches)
        else:
            raise RuntimeError(f"cannot resume mid-epoch: the training loader {type(loader).__name__} cannot skip "
                               f"the {batches} batches already trained")


STORE_FILE = "store.json"  # the identity of the store a run started with (occon_plugin.store.store_identity)


def record_store(cfg: DictConfig, out_dir: Path) -> None:
    """Write ``store.json`` (once: a resumed run keeps the first) naming the store the run trains on, so a
    resume can tell a store rebuilt in place (:func:`store_changed`). Nothing without ``occon.store``."""
    from occon_plugin.store import store_identity

    store = OmegaConf.select(cfg, "occon.store", default=None)
    if not store or not OmegaConf.select(cfg, "occon.enabled", default=True) or (out_dir / STORE_FILE).is_file():
        return
    identity = store_identity(_same_path(str(store)))
    if identity is not None:
        with atomic_path(out_dir / STORE_FILE) as tmp:
            Path(tmp).write_text(json.dumps(identity, indent=1))


def store_changed(folder: Path, cfg: DictConfig) -> Optional[str]:
    """What differs between the store the run in ``folder`` started with and ``occon.store`` now
    (e.g. ``"the localization settings and the entries differ"``), or None (the same store, or nothing
    recorded: a run from before this check, or one without a store)."""
    from occon_plugin.store import store_identity

    record = folder / STORE_FILE
    store = OmegaConf.select(cfg, "occon.store", default=None)
    if not record.is_file() or not store:
        return None
    try:
        before = json.loads(record.read_text())
    except (OSError, ValueError):
        return None
    now = store_identity(_same_path(str(store)))
    if now is None:
        return "no readable store is there now"
    what = {"model_sha256": "the model", "settings_sha256": "the localization settings",
            "index_sha256": "the entries"}
    changed = [name for key, name in what.items() if before.get(key) != now.get(key)]
    return (" and ".join(changed) + " differ") if changed else None


def save_config_once(cfg: DictConfig, out_dir: Path) -> None:
    """Write ``config.yaml`` atomically (a resumed run rewrites the same settings)."""
    with atomic_path(out_dir / CONFIG_FILE) as tmp:
        OmegaConf.save(cfg, tmp)


# --------------------------------------------------------------------------------------------
# One run per folder at a time; the ranks of one DDP run share the run folder rank 0 decided.
# --------------------------------------------------------------------------------------------
LOCK_FILE = ".occon-run.lock"
_PLAN_ENV = "OCCON_RUN_PLAN"  # rank 0's decision, inherited by the DDP processes Lightning starts


class RunLock:
    """An exclusive ``fcntl.flock`` on ``<run folder>/.occon-run.lock`` for as long as a run trains
    there: a second run of the same folder is refused with one line. The kernel drops the lock when
    the process ends however it ends (``kill -9`` included), so a killed run never leaves it stale;
    the file itself stays (empty but for the holder's pid)."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.fd: Optional[int] = None

    def acquire(self) -> "RunLock":
        """Raises :class:`ConfigError` naming the folder (and the holder's pid) when another process
        holds it, :class:`~occon_plugin.errors.OutputError` when it cannot be created."""
        ensure_writable(self.folder)
        path = self.folder / LOCK_FILE
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise ConfigError(f"another pretraining run (pid {holder}) is training in {self.folder} right now: wait "
                              f"for it to end, or give this run another ++name=...") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self.fd = fd
        return self

    def release(self) -> None:
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None


def lock_and_plan(cfg: DictConfig) -> tuple[RunPlan, list]:
    """:func:`plan_run` under the run lock: rank 0 locks the named run folder *before* deciding (two
    runs started with one name at once: the second is refused, whatever it would have decided) and,
    when the plan moves to ``<name>-k``, that folder too. DDP ranks > 0 lock nothing and take the
    plan rank 0 shared (:func:`inherited_plan`). Returns the plan and the locks to release.

    Raises:
        ConfigError: what :func:`plan_run` refuses, or the run folder is locked by another run (the locks
            taken so far are released first)."""
    inherited = inherited_plan(cfg)
    if inherited is not None:
        return inherited, []
    if launched_rank() != 0:
        return plan_run(cfg), []
    locks: list = []
    try:
        named = run_folder(cfg)
        if not (named.exists() and not named.is_dir()):  # a file there: plan_run names the problem
            locks.append(RunLock(named).acquire())
        plan = plan_run(cfg)
        if plan.out_dir != named:
            locks.append(RunLock(plan.out_dir).acquire())
    except BaseException:
        for lock in locks:
            lock.release()
        raise
    return plan, locks


def share_plan(cfg: DictConfig, plan: RunPlan) -> None:
    """Hand rank 0's run folder and checkpoint to the DDP processes Lightning's launcher starts (they
    inherit this process's environment), so they do not decide again (with ``auto_resume=false`` a
    second decision would see rank 0's ``config.yaml`` and move to ``<name>-2``)."""
    # keyed by the folder of the name as requested (the other processes parse the same command line) and the settings
    os.environ[_PLAN_ENV] = json.dumps({"key": _plan_key(cfg, plan.named_dir or plan.out_dir),
                                        "out_dir": str(plan.out_dir), "ckpt_path": plan.ckpt_path,
                                        "name": str(cfg.name)})


def unshare_plan() -> None:
    os.environ.pop(_PLAN_ENV, None)


def _plan_key(cfg: DictConfig, folder: Path) -> str:
    return hashlib.sha256(json.dumps([str(folder), run_settings(cfg)], sort_keys=True,
                                     default=str).encode()).hexdigest()[:16]


def inherited_plan(cfg: DictConfig) -> Optional[RunPlan]:
    """The plan rank 0 shared (:func:`share_plan`) when this process is one of its DDP ranks > 0 and
    the plan is for this very run (same folder and settings); else None."""
    text = os.environ.get(_PLAN_ENV)
    if not text or launched_rank() == 0:
        return None
    shared = json.loads(text)
    if shared.get("key") != _plan_key(cfg, run_folder(cfg)):
        return None
    cfg.name = shared["name"]
    return RunPlan(Path(shared["out_dir"]), shared["ckpt_path"], [])


# --------------------------------------------------------------------------------------------
# SIGTERM while training: a resumable checkpoint at the next step boundary, then exit 143.
# --------------------------------------------------------------------------------------------
def stop_on_signal_callback(out_dir: Path, resume_state=None):
    """A Lightning callback that, once SIGTERM reached the process (its :meth:`take` is registered with
    ``occon_plugin.cli._hydra.stop_signals_taken_by``; Ctrl-C too), stops training at the next step boundary: every
    hook of the finished step has run (the momentum encoder's update included), nothing of the next
    one has; it saves ``<out_dir>/last.ckpt`` there (atomically, as Lightning's SLURM handling saves
    its ``hpc_ckpt``) and raises :class:`~occon_plugin.train.process.Terminated` naming it (the CLI exits
    143). Under DDP the ranks decide together (one boolean all-reduce per step), so a signal sent to
    one process only (``kill <pid>``) stops them all at the same step. The rerun resumes from it (the
    run policy above: newest readable checkpoint)."""
    from occon_plugin import host

    class StopOnSignal(host.Callback):
        def __init__(self):
            self.signum: Optional[int] = None
            self.host_flagged = False  # Lightning 2.x's own SIGTERM flag, taken over (host.take_lightning_sigterm)

        def take(self, signum: int) -> bool:
            if self.signum is not None:  # a second signal: stop at once (nothing half-written; no final.ckpt)
                return False
            print(f"[occon] {signal_name(signum)} received: saving a resumable checkpoint at the end of this step, "
                  f"then stopping (send it again to stop at once)", flush=True)
            self.signum = int(signum)
            return True

        def _requested(self, trainer) -> bool:
            self.host_flagged |= host.take_lightning_sigterm(trainer)
            flagged = self.signum is not None or self.host_flagged
            if int(getattr(trainer, "world_size", 1) or 1) > 1:
                return not trainer.strategy.reduce_boolean_decision(not flagged)  # stop if any rank was signalled
            return flagged

        # Lightning 2.x would end fit with SIGTERMException (exit 0, no checkpoint) at the end of the step or epoch
        # in which SIGTERM arrived: its flag is taken over before its loops look at it (after these hooks)
        def on_train_batch_end(self, trainer, *args, **kwargs):
            self.host_flagged |= host.take_lightning_sigterm(trainer)

        def on_train_epoch_end(self, trainer, *args, **kwargs):
            self.host_flagged |= host.take_lightning_sigterm(trainer)

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx, *args):
            if not self._requested(trainer):
                return
            path = Path(out_dir) / "last.ckpt"
            if resume_state is not None:
                resume_state.batches_done = batch_idx  # the resumed epoch starts after the batches trained
            try:
                trainer.save_checkpoint(str(path))  # every rank takes part; rank 0 writes (atomic, finite only)
            finally:
                if resume_state is not None:
                    resume_state.batches_done = None
            signum = self.signum if self.signum is not None else 15
            raise Terminated(signum, f"saved a resumable checkpoint at step {trainer.global_step} (epoch "
                                     f"{trainer.current_epoch}): {path}; run the same command again to resume from it")

    return StopOnSignal()


def signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"
