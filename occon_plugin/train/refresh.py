"""``occon.refresh``: one-stage object-aware training (the store made from the model being trained).

Epochs ``< warmup_epochs`` train without OA-Crop / BG-Mixup (no store yet: the batches say so, their
``occon/*_frac`` are 0). After the last training step of epoch ``warmup_epochs - 1``, then every
``every_epochs`` epochs (not after the last one), before any epoch-end hook, :class:`RefreshCallback`:

1. saves the current weights as ``<run>/refresh/model-e<epoch>.pt`` (the layout of ``final.ckpt``);
2. calls the localizer itself, :func:`occon_plugin.localize.runner.run_localize`, with ``model=<that
   checkpoint>`` and ``occon.refresh.preset`` into a new store version ``<run>/refresh/store-e<epoch>``:
   the very store ``occon-localize model=<that checkpoint> preset=<preset> use_momentum=<m>`` writes, where
   ``m`` is true for a method with a momentum encoder (MoCo, BYOL, ...: the slowly moving key encoder, whose
   CAMs are the steadier ones; the paper's ContraCAM of a MoCo checkpoint) and false otherwise (SimCLR, ...);
   With ``occon.refresh.fraction < 1`` a later refresh localizes one of ``ceil(1 / fraction)`` groups of the
   localization batches, in turn, and keeps the other images' entries from the version before
   (:class:`~occon_plugin.localize.runner.Carry`; the store's manifest records ``carried_from``);
   with ``occon.refresh.reuse_iou`` a refresh after two others keeps the masks that barely moved between
   those two (:func:`settled_images`) and localizes the other images, in batches of their own;
3. records it in ``<run>/refresh/refresh.json`` (atomic) and only then switches the dataset to it
   (:meth:`~occon_plugin.augment.dataset.OcconPretrainDataset.use_store`) for the next epoch; the
   loader's workers are not persistent under ``occon.refresh``, so the next epoch's workers copy the
   switched dataset.

``refresh.json``::

    {"refreshes": {"<epoch>": {"store": "store-e<epoch>", "model": "model-e<epoch>.pt", "images": ...,
                               "seconds": ..., "images_per_s": ..., "epoch_seconds": ..., "epoch_fraction": ...}},
     "epochs": {"<epoch>": "store-e<k>" | "<path>" | null}}   # the version each epoch trained on (a path: another run
                                                        # folder's version, a host run resumed into a new folder)

Resume: a resumed run trains epoch ``e`` on the newest recorded refresh of an epoch ``< e`` (the one the
uninterrupted run used): the callback's state in each checkpoint names it, and the switch happens while the
checkpoint is restored (before the loader's workers start; ``refresh.json`` is the fallback at ``on_train_start``). A run killed during a refresh resumes from the checkpoint before it, trains
that epoch again and redoes the refresh: the weights are the same (``model-e<epoch>.pt`` is kept when they
are), so the localizer resumes the partly written store; other weights start that store over.

Under DDP every rank localizes its own share of the batches into the one store version
(:func:`~occon_plugin.localize.runner.run_localize` under ``torch.distributed``: the store a single process
writes); rank 0 writes the checkpoint, ``refresh.json`` and the pictures, and every rank switches after the
record is written. With ``data.format=dali`` the switched object is the DALI loader
(:meth:`~occon_plugin.augment.dali.datamodule.ObjectAwareDALILoader.use_store`): it switches the same
dataset, and the next epoch's pipeline (built per epoch) reads the new records. solo-learn's own
``main_pretrain.py`` is refused with one line (the methods' constructor).
"""
from __future__ import annotations

import json
import random
import shutil
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np

from occon_plugin.atomic import atomic_write_json
from occon_plugin.augment.config import RefreshConfig

REFRESH_DIR = "refresh"
RECORD_FILE = "refresh.json"


def refresh_dir(out_dir: Path) -> Path:
    return Path(out_dir) / REFRESH_DIR


def earlier_versions(out_dir: Path, epoch: int) -> List[Tuple[int, Path]]:
    """The store versions of the refreshes before ``epoch``, oldest first, as ``(refresh epoch, store folder)``:
    what ``fraction`` and ``reuse_iou`` keep masks from. The run folder's own (``refresh.json``), and where
    the run trained on another folder's version (solo-learn main resumes into a new run folder; the record names
    the borrowed version by its path), that folder's refreshes too, its own where both have one: a resumed
    host run keeps masks as the uninterrupted one would instead of localizing every image again."""
    own = refresh_dir(out_dir)
    record = read_record(out_dir)
    # the record names its own versions by name ("store-e4"), another folder's by path
    folders = [Path(v).parent for v in record["epochs"].values() if v and Path(v).parent not in (Path("."), own)]
    found: Dict[int, Path] = {}
    for folder in [*dict.fromkeys(folders), own]:  # borrowed folders first: the run's own versions win
        for e in (record if folder == own else read_record(folder.parent))["refreshes"]:
            if int(e) < epoch:
                found[int(e)] = folder / f"store-e{int(e)}"
    return sorted(found.items())


def read_record(out_dir: Path) -> dict:
    """``refresh.json`` of the run folder (empty record when there is none yet)."""
    path = refresh_dir(out_dir) / RECORD_FILE
    record = json.loads(path.read_text()) if path.is_file() else {}
    record.setdefault("refreshes", {})
    record.setdefault("epochs", {})
    return record


def store_for_epoch(record: dict, epoch: int) -> Optional[str]:
    """The store version epoch ``epoch`` trains on: the newest recorded refresh of an earlier epoch, or None."""
    done = [int(e) for e in record.get("refreshes", {}) if int(e) < int(epoch)]
    return record["refreshes"][str(max(done))]["store"] if done else None


def check_preset(refresh: RefreshConfig) -> None:
    """``occon.refresh.preset`` names a preset of the localizer (or ``auto``), ``occon.refresh.precision`` one of
    its precisions.

    Raises:
        ConfigError: one line naming the key and the values there are.
    """
    from occon_plugin.errors import ConfigError
    from occon_plugin.localize.engine import PRECISIONS
    from occon_plugin.localize.presets import PRESETS

    if refresh.preset != "auto" and refresh.preset not in PRESETS:
        raise ConfigError(f"occon.refresh.preset={refresh.preset!r}: use auto or one of {', '.join(sorted(PRESETS))}")
    if refresh.precision not in PRECISIONS:
        raise ConfigError(f"occon.refresh.precision={refresh.precision!r}: use one of {', '.join(PRECISIONS)}")


def _same_weights(path: Path, state_dict: dict) -> bool:
    import torch

    try:
        saved = torch.load(path, map_location="cpu", weights_only=False)["state_dict"]
    except Exception:  # torn or unreadable: written again
        return False
    return saved.keys() == state_dict.keys() and all(
        torch.equal(saved[k].cpu(), v.detach().cpu()) for k, v in state_dict.items())


class _KeepRngs:
    """The refresh draws nothing from the training's random streams (a resumed run that re-attaches a
    store without refreshing continues exactly as the run that refreshed)."""

    def __enter__(self):
        import torch

        self.state = (torch.get_rng_state(), np.random.get_state(), random.getstate(),
                      torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None)

    def __exit__(self, *exc):
        import torch

        cpu, nps, py, cuda = self.state
        torch.set_rng_state(cpu)
        np.random.set_state(nps)
        random.setstate(py)
        if cuda is not None:
            torch.cuda.set_rng_state_all(cuda)
        return False


def refresh_callback(cfg: Any, refresh: RefreshConfig, out_dir: Optional[Path] = None,
                     save_checkpoint: Optional[Callable[[Any, Any, Path], None]] = None):
    """The Lightning callback of a ``occon.refresh`` run.

    ``occon-pretrain`` gives it with its run folder ``out_dir`` and sets its ``dataset`` (the training
    :class:`~occon_plugin.augment.dataset.OcconPretrainDataset`, switched in place) before ``trainer.fit``;
    with the DALI data module it finds the loader (``refresh_target``) itself. In solo-learn's own
    ``main_pretrain.py`` the object-aware method adds it (``configure_callbacks``) with ``out_dir=None``: the
    folder is the host's run folder (:func:`occon_plugin.host.pretrain_run_folder`, rank 0's under DDP) and
    the data is the host's dataset the method made object-aware. ``save_checkpoint(model, trainer, path)``
    writes the weights as ``final.ckpt`` is written (what ``occon-localize`` reads; default
    :func:`occon_plugin.train.runs.save_final_checkpoint` with ``cfg``).

    The refresh runs right after the last training step of an epoch, before any epoch-end hook, so every
    checkpoint written at an epoch's end (the plugin's ``ModelCheckpoint``, the host's ``Checkpointer``) already
    carries the store version the next epoch reads.

    Raises (from the callback's hooks): RuntimeError when no training data to switch can be found (a caller's
    bug); the localizer's errors (:func:`~occon_plugin.localize.runner.run_localize`: DataError, ConfigError, ...)
    as they are, one line through the CLI."""
    from occon_plugin import host

    if save_checkpoint is None:
        from occon_plugin.train.runs import save_final_checkpoint

        def save_checkpoint(module, trainer, path):
            save_final_checkpoint(module, trainer, cfg, path)

    class RefreshCallback(host.Callback):
        occon_refresh = True  # the object-aware methods check that a refresh step is there

        def __init__(self):
            self.out_dir: Optional[Path] = None if out_dir is None else Path(out_dir)
            self.dataset: Any = None
            self.store: Optional[Path] = None  # the store version the data reads now (None: the warm-up)
            self.epoch_started: Optional[float] = None

        def _write(self, record: dict) -> None:
            atomic_write_json(refresh_dir(self.out_dir) / RECORD_FILE, record)

        def _data(self, trainer) -> Any:
            """What switches to a new store version: the dataset set by the caller, the DALI loader, or the
            plugin's dataset behind the host's loader (made object-aware in the method's ``setup``)."""
            if self.dataset is None:
                self.dataset = getattr(getattr(trainer, "datamodule", None), "refresh_target", None)
            if self.dataset is None:
                from occon_plugin.train.host_data import occon_dataset_of

                found = [occon_dataset_of(getattr(loader, "dataset", None))
                         for loader in host.pending_train_dataloaders(trainer) or host.train_dataloaders(trainer)]
                self.dataset = next((d for d in found if d is not None), None)
            if self.dataset is None or not hasattr(self.dataset, "use_store"):
                raise RuntimeError("the refresh callback has no training data to switch (set .dataset)")
            return self.dataset

        def _folder(self, trainer) -> Path:
            """The run folder (``refresh/`` goes in it). The host's own script: its ``Checkpointer``'s folder,
            known from that callback's ``on_train_start`` (before this one's), rank 0's for every rank; without
            one ``<checkpoint.dir>/<method>/occon_refresh-<name>`` (else ``<default_root_dir>/occon_refresh``)."""
            if self.out_dir is None:
                folder = host.pretrain_run_folder(trainer)
                if folder is None and _opt(cfg, "checkpoint.dir") and _opt(cfg, "method"):
                    folder = Path(_opt(cfg, "checkpoint.dir")) / _opt(cfg, "method") / f"occon_refresh-{_opt(cfg, 'name')}"
                folder = folder or Path(trainer.default_root_dir) / "occon_refresh"
                self.out_dir = Path(trainer.strategy.broadcast(str(folder), src=0))
            return self.out_dir

        def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
            """Every checkpoint names the store version the data reads from now on (written at an epoch's end
            after its refresh, or mid-epoch by SIGTERM: the version of the epoch under way), as a path: a
            resumed host run may write into another folder."""
            checkpoint["occon_refresh"] = {"store": None if self.store is None else str(self.store)}

        def on_load_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
            """A resumed run switches here, while Lightning restores the checkpoint: before the training
            loader's worker processes start (Lightning 2.x starts them while the optimizers are configured,
            before ``on_train_start``), so the first resumed epoch's workers copy the right version."""
            store = (checkpoint.get("occon_refresh") or {}).get("store")
            if store is not None:
                self._switch(trainer, Path(store), "the resumed run")

        def _switch(self, trainer, store: Path, who: str) -> None:
            if self.store is not None and self.store.resolve() == store.resolve():
                return
            from occon_plugin.errors import OcconError
            from occon_plugin.train.process import stop_run

            try:
                check_version(store, self._rebuild_command(trainer, store),
                              keeps_masks=refresh.groups > 1 or refresh.reuse_iou is not None)
                self._data(trainer).use_store(store)
            except OcconError as err:
                stop_run(err)
            self.store = store
            print(f"[occon] refresh: {who} continues on the store version {store}", flush=True)

        def _rebuild_command(self, trainer, store: Path) -> str:
            """The occon-localize command that writes ``store`` again from the run's own weights."""
            extra = "".join(f" {k}={v}" for k, v in (("image_size", refresh.image_size),
                                                       ("batch_size", refresh.batch_size)) if v is not None)
            extra += f" precision={refresh.precision}" if refresh.precision != "fp32" else ""
            data = _train_data(cfg)
            root = f" data.image_root={data.image_root}" if data.image_root else ""
            command = (f"occon-localize data.path={data.path}{root} model={model_for(store)} preset={refresh.preset} "
                       f"use_momentum={str(has_momentum_encoder(trainer.lightning_module)).lower()}{extra} "
                       f"output_dir={store} resume=false")
            return command

        def on_train_start(self, trainer, pl_module):
            # a checkpoint of an earlier plugin version carries no store: the record says which version the epoch uses
            version = store_for_epoch(read_record(self._folder(trainer)), trainer.current_epoch)
            if version is not None:
                self._switch(trainer, refresh_dir(self.out_dir) / version, f"epoch {trainer.current_epoch}")

        def on_train_epoch_start(self, trainer, pl_module):
            self.epoch_started = time.perf_counter()
            if trainer.global_rank == 0:  # one writer of refresh.json
                record = read_record(self.out_dir)
                # the version's name, or its path when it is another folder's (a host run resumed into a new folder)
                store = self.store
                record["epochs"][str(trainer.current_epoch)] = (
                    None if store is None else store.name if store.parent == refresh_dir(self.out_dir) else str(store))
                self._write(record)

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, *args):
            """After the epoch's last step: the refresh (before the epoch-end hooks write checkpoints)."""
            if batch_idx + 1 < trainer.num_training_batches:
                return
            epoch = int(trainer.current_epoch)
            epoch_seconds = time.perf_counter() - (self.epoch_started or time.perf_counter())
            last = trainer.max_epochs is not None and trainer.max_epochs >= 0 and epoch + 1 >= trainer.max_epochs
            steps_done = trainer.max_steps is not None and 0 < trainer.max_steps <= trainer.global_step
            if not refresh.refreshes_after(epoch) or last or steps_done or trainer.should_stop:
                return
            stats = self.refresh(trainer, pl_module, epoch, epoch_seconds)
            pl_module.log_dict({"occon/refresh_images_per_s": float(stats["images_per_s"]),
                                "occon/refresh_epoch_fraction": float(stats["epoch_fraction"]),
                                "occon/refresh_seconds": float(stats["seconds"]),
                                "occon/refresh_images": float(stats["images"]),
                                "occon/refresh_written_ok": float(stats["written_ok"]),
                                "occon/refresh_written_bad": float(stats["written_bad"])},
                               on_step=False, on_epoch=True)  # with the epoch's values, whatever log_every_n_steps
            if trainer.global_rank == 0:
                self.log_overlays(trainer, epoch)

        def log_overlays(self, trainer, epoch: int) -> int:
            """A few overlays of the new store version (``occon/refresh_overlays``, captioned with the epoch)
            when the trainer has a W&B logger; returns how many were logged."""
            from occon_plugin.tracking import store_overlays
            from occon_plugin.train.tracking import wandb_logger_of

            logger = wandb_logger_of(trainer)
            if logger is None:
                return 0
            pictures = store_overlays(refresh_dir(self.out_dir) / f"store-e{epoch}", _train_data(cfg))
            if pictures:
                logger.log_image(key="occon/refresh_overlays", images=[p for p, _ in pictures],
                                 caption=[f"refresh after epoch {epoch}: {c}" for _, c in pictures])
            return len(pictures)

        def refresh(self, trainer, pl_module, epoch: int, epoch_seconds: float) -> dict:
            import torch

            from occon_plugin.localize.runner import Carry, run_localize
            from occon_plugin.localize.settings import LocalizeSettings

            folder = refresh_dir(self.out_dir)
            model_path, store = folder / f"model-e{epoch}.pt", folder / f"store-e{epoch}"
            rank, world = int(trainer.global_rank), int(trainer.world_size)
            if rank == 0 and not (model_path.is_file() and _same_weights(model_path, pl_module.state_dict())):
                save_checkpoint(pl_module, trainer, model_path)
                if store.exists():  # made from other weights (a resumed run that diverged): start it over
                    shutil.rmtree(store)
            trainer.strategy.barrier("occon_refresh_model")  # every rank reads the checkpoint rank 0 wrote
            settings = LocalizeSettings(
                data=_train_data(cfg),
                output_dir=str(store), model=str(model_path), preset=refresh.preset,
                use_momentum=has_momentum_encoder(pl_module), precision=refresh.precision,
                device=str(pl_module.device), progress=False, resume=True)
            if refresh.image_size is not None:
                settings.image_size = refresh.image_size
            if refresh.batch_size is not None:
                settings.batch_size = refresh.batch_size
            carry = None
            earlier = [version for _, version in earlier_versions(self.out_dir, epoch)]
            if refresh.groups > 1 and earlier:  # a later refresh: one group of batches again, the rest kept
                carry = Carry(store=earlier[-1], groups=refresh.groups, turn=len(earlier) - 1)
            if refresh.reuse_iou is not None and len(earlier) >= 2:  # the masks that settled are kept
                newer, older = earlier[-1], earlier[-2]
                for version in (newer, older):  # both must be there as written (else: the command that rebuilds one)
                    check_version(version, self._rebuild_command(trainer, version), keeps_masks=True)
                carry = Carry(store=newer, groups=1, turn=0, keep=settled_images(newer, older, refresh.reuse_iou),
                              rule=f"reuse_iou={refresh.reuse_iou:g}")
            start = time.perf_counter()
            with _KeepRngs():
                # the complete store is written (and closed) before the switch
                summary = run_localize(settings, carry=carry)
            seconds = time.perf_counter() - start
            images, carried = int(summary["listed"]), int(summary.get("carried", 0))
            written = [int(summary["written_ok"]), int(summary["written_bad"]), int(summary["already_done"])]
            if world > 1:  # every rank localized its own batches (run_localize under torch.distributed)
                parts: list = [None] * world
                torch.distributed.all_gather_object(parts, written)
                written = [sum(p[i] for p in parts) for i in range(3)]
            stats = {"store": store.name, "model": model_path.name, "preset": summary["preset"], "images": images,
                     "written_ok": written[0], "written_bad": written[1],
                     "already_done": written[2], "carried": carried, "seconds": round(seconds, 3),
                     "images_per_s": round(sum(written[:2]) / max(seconds, 1e-9), 2),  # of those localized by this call
                     "epoch_seconds": round(epoch_seconds, 3), "epoch_fraction": round(seconds / max(epoch_seconds, 1e-9), 3),
                     "localize_stage_seconds": summary.get("stage_seconds", {})}  # where the localizer's time went
            if rank == 0:
                record = read_record(self.out_dir)
                record["refreshes"][str(epoch)] = stats
                self._write(record)
            trainer.strategy.barrier("occon_refresh_record")  # recorded before any rank trains on it
            self._data(trainer).use_store(store)  # the next epoch's workers copy the switched dataset
            self.store = store
            if rank != 0:
                return stats
            # what this refresh wrote, each kind said: unreadable images get no mask, an interrupted refresh's
            # finished part is not localized again
            kept = "".join(text for n, text in (
                (written[1], f", {written[1]} unreadable (no mask, skipped)"),
                (written[2], f", {written[2]} localized before the interruption"),
                (carried if carry is not None else 0, f", {carried} kept from {carry.store.name if carry else ''}")) if n)
            print(f"[occon] refresh after epoch {epoch}: {written[0]} of {images} images localized{kept} in "
                  f"{seconds:.1f} s ({stats['images_per_s']} images/s, {stats['epoch_fraction']:.2f} x the epoch's "
                  f"{epoch_seconds:.1f} s of training), preset {summary['preset']} -> {store}", flush=True)
            return stats

    return RefreshCallback()


def settled_images(newer: Path, older: Path, min_iou: float) -> frozenset:
    """``occon.refresh.reuse_iou``: the images whose mask barely moved between two store versions of one run.

    An image is settled when both versions hold a mask for it, those masks binarized at 0.5 (the store's
    8-bit value >= 128) overlap with IoU >= ``min_iou`` (both empty: IoU 1), and the two mask files are not
    byte-identical: identical files mean the newer version kept the older one's mask (it was settled at the
    last refresh), so that image is localized again now. Every image is thus localized at least every second
    refresh, and a mask is never kept from a model more than one refresh old.

    Args:
        newer, older: store folders of the same images (``refresh/store-e<e>``).
        min_iou: in (0, 1].
    Returns:
        The settled images' paths, as the stores list them (relative to the data root).
    """
    return frozenset(path for path, iou in mask_ious(newer, older).items() if iou is not None and iou >= min_iou)


def mask_ious(newer: Path, older: Path) -> dict:
    """IoU of each image's masks in two store versions, binarized at 0.5 (8-bit value >= 128; both empty:
    1.0). ``None`` where the files are byte-identical (the newer version kept the older one's mask). Images
    missing or failed in either version, with unreadable masks or masks of other shapes are left out.

    Returns:
        ``{path: float in [0, 1] or None}``, paths as the stores list them.
    """
    from occon_plugin.store import Store
    from occon_plugin.store.format import decode_mask_png

    a, b = Store.open(newer), Store.open(older)
    out: dict = {}
    for path, entry in a.entries.items():
        other = b.entries.get(path)
        if other is None or not entry.ok or not other.ok:
            continue
        try:  # each file read once: compared as bytes, decoded only when they differ
            file_a, file_b = a.mask_file(path), b.mask_file(path)
            bytes_a, bytes_b = file_a.read_bytes(), file_b.read_bytes()
            if bytes_a == bytes_b:
                out[path] = None
                continue
            ma, mb = decode_mask_png(file_a, bytes_a) >= 128, decode_mask_png(file_b, bytes_b) >= 128
        except (OSError, ValueError):  # unreadable: localized again
            continue
        if ma.shape != mb.shape or ma.shape != (entry.height, entry.width):  # not the size the index says
            continue
        union = int(np.count_nonzero(ma | mb))
        out[path] = np.count_nonzero(ma & mb) / union if union else 1.0
    return out


def model_for(store: Path) -> Path:
    """``refresh/store-e<e>`` -> ``refresh/model-e<e>.pt``, the weights it is made from."""
    return store.parent / (store.name.replace("store-e", "model-e", 1) + ".pt")


def check_version(store: Path, rebuild: str, keeps_masks: bool = False) -> None:
    """A store version a (resumed) run switches to is complete and was written from the weights saved beside it
    (the manifest's ``model_sha256`` is the sha256 of ``model-e<e>.pt``), not a store rebuilt by hand from other
    weights under the same name.

    ``keeps_masks``: the run keeps masks between refreshes (``fraction < 1``, ``reuse_iou``); the message then
    says that a rebuilt version localizes every image (close to, not the same as, the version it replaces).

    Raises:
        ConfigError: one line naming the store and ``rebuild`` (the command that writes it again correctly).
    """
    from occon_plugin.errors import ConfigError
    from occon_plugin.localize.runner import model_fingerprint

    caveat = (" (this run keeps some masks of the version before at each refresh; the rebuilt version localizes "
              "every image, so it is close to, not the same as, the one it replaces)") if keeps_masks else ""

    manifest = store / "manifest.json"
    try:
        recorded = json.loads(manifest.read_text()).get("model_sha256")
    except (OSError, ValueError):
        raise ConfigError(f"{store}, the store version this run trains on, is missing or incomplete (no readable "
                          f"manifest.json): write it again from the run's own weights with `{rebuild}`{caveat}, then "
                          f"run the same command again") from None
    model = model_for(store)
    if not model.is_file():
        return  # a version from elsewhere (another run's folder): its own run checked it
    if recorded != model_fingerprint(str(model), None):  # the localizer's own fingerprint of a checkpoint file
        raise ConfigError(f"{store} was not written from {model.name} beside it (another model's store under this "
                          f"version's name): the run would train on other masks than it did; write it again with "
                          f"`{rebuild}`{caveat}, then run the same command again")


def has_momentum_encoder(module: Any) -> bool:
    """Whether a solo-learn method holds a momentum (key) encoder: its state dict has ``momentum_backbone.*``
    (solo-learn main) or ``momentum_encoder.*`` (1.0.2) weights."""
    return any(k.startswith(("momentum_backbone.", "momentum_encoder.")) for k in module.state_dict())


def _train_data(cfg: Any):
    """The localizer's ``data`` settings of the run's training images (``data.train_path``, ``data.image_root``)."""
    from occon_plugin.localize.settings import DataSettings

    return DataSettings(path=str(cfg.data.train_path), image_root=_opt(cfg, "data.image_root"))


def _opt(cfg: Any, key: str) -> Optional[str]:
    from omegaconf import OmegaConf

    value = OmegaConf.select(cfg, key, default=None)
    return None if value is None else str(value)
