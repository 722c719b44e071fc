"""Batches in solo-learn's format from the object-aware DALI pipeline, and the Lightning data module.

Batch = ``[indexes (B,), [V1 (B,3,S,S), ...], targets (B,), info]`` with ``info`` =
``{"oa_crop": (B,), "mixed": (B, n), "mix_skipped": (B, n), "no_entry": (B,), "replaced": (B,)}``,
the same keys as the torchvision path (``occon_plugin.augment.dataset``). The images, their
store entries, labels and background donors come from that path's dataset object, so both
pipelines train on the same samples with the same store policy.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from nvidia.dali.plugin.pytorch import DALIGenericIterator, LastBatchPolicy

from occon_plugin.augment.dataset import (OcconPretrainDataset, build_dataset, check_batch_per_process,
                                          loader_settings)
from occon_plugin.augment.config import OcconConfig
from occon_plugin.config import select
from occon_plugin.host import LightningDataModule
from occon_plugin.errors import ConfigError, DataError
from occon_plugin.images import BadImageError, examples, inspect_image

from .pipeline import build_object_aware_pipeline, standard_view_fn
from .source import ObjectAwareSource, SampleRecord
from .standard_ops import ViewOps, views_from_cfg

INFO_KEYS = ("oa_crop", "mixed", "mix_skipped", "no_entry", "replaced")


def _identity(image):
    return image


def records_from_dataset(dataset: OcconPretrainDataset, need_sizes: bool = True) -> list[SampleRecord]:
    """The dataset's images with their store entries as :class:`SampleRecord`s.

    The dataset already dropped the images neither pipeline can decode (so no failed entry and
    no ``w = h = 0`` record reaches DALI) and read every kept image's header: sizes come from
    the store entry or the header, and files DALI's decoder would decode differently from the
    shared rule (16-bit, float, unusual modes) are marked ``decode_here``. ``need_sizes`` is kept
    for callers of the old signature (sizes are always known now).

    Raises:
        BadImageError: an image whose header cannot be read (the dataset's checks normally dropped it).
    """
    root = Path(dataset.images.root)
    records = []
    for i, (path, entry, info) in enumerate(zip(dataset.paths, dataset.entries, dataset.info)):
        target = dataset.target(i)
        if info is None:  # cannot happen after _drop_unreadable; kept loud rather than silent
            raise BadImageError(root / path, "no header facts: the dataset did not check this image")
        decode_here = not info.dali_native
        if entry is None:
            records.append(SampleRecord(root / path, info.width, info.height, target=target,
                                        decode_here=decode_here))
            continue
        usable = entry.ok
        records.append(SampleRecord(
            image_file=root / path, width=entry.width, height=entry.height,
            boxes=tuple(tuple(b) for b in entry.boxes) if usable else (),
            bg_rect=tuple(entry.bg_rect) if usable and entry.bg_rect is not None else None,
            mask_file=dataset.store.mask_file(path) if usable and dataset.cfg.bg_mixup.enabled else None,
            target=target, has_entry=True, decode_here=decode_here))
    return records


class ObjectAwareDALILoader:
    """Iterable over one epoch of solo-learn batches per ``iter()`` (wraps ``DALIGenericIterator``).

    Each epoch gets its own DALI pipeline, seeded from ``(seed, epoch)``, and the source draws that
    epoch's sample order: so epoch ``e`` is the same whether the run got there without a break or
    resumed from a checkpoint (DALI's random state cannot be saved). ``start_epoch`` (an int, or a
    callable read at every ``iter()``, e.g. the trainer's current epoch) says which epoch an
    ``iter()`` draws; without a callable, epochs count up from ``start_epoch``. The data checks
    happen when the source is built (before this object exists), the pipeline at ``iter()``.

    Raises:
        ValueError: the per-view settings do not match the number of views (a caller's bug)."""

    def __init__(self, source: ObjectAwareSource, views: list[ViewOps], *, device: str = "cpu",
                 num_threads: int = 2, seed: int = 0, py_workers: int = 0, start_epoch=0, with_info: bool = True,
                 dataset: OcconPretrainDataset | None = None):
        if len(views) != source.n_views:
            raise ValueError(f"{len(views)} view pipelines for a source of {source.n_views} views")
        self.source = source
        self._dataset = dataset  # the torchvision path's dataset the records came from (occon.refresh switches it)
        self.with_info = with_info  # False: the host's [indexes, views, targets] (a plain host method)
        self.n_views = len(views)
        self.output_map = [f"view{v}" for v in range(self.n_views)] + ["index", "target", *INFO_KEYS]
        self._build_args = dict(view_fn=standard_view_fn(views), device=device, num_threads=num_threads,
                                py_workers=py_workers)
        self.seed = int(seed)
        self._start_epoch = start_epoch
        self._next_epoch = None if callable(start_epoch) else int(start_epoch)
        self.pipeline = None
        self._iterator = None
        self.epoch = None
        self._skip = 0

    def skip_next(self, batches: int) -> None:
        """The next epoch's pipeline starts ``batches`` batches in (a run resumed from a checkpoint saved
        mid-epoch, by SIGTERM): the same samples and object-aware decisions as the uninterrupted epoch's
        remaining batches; DALI's own random stream (standard augmentations) restarts."""
        self._skip = max(0, int(batches))

    def _build(self, epoch: int) -> None:
        """A fresh pipeline for ``epoch``: its random stream and its sample order depend only on
        ``(seed, epoch)``."""
        if self.pipeline is not None:
            self._iterator, self.pipeline = None, None
        self.source.start_epoch = epoch
        self.source.start_batch, self._skip = self._skip, 0
        args = self._build_args
        epoch_seed = int(np.random.SeedSequence([self.seed & (2**63 - 1), epoch]).generate_state(1)[0] % 2**31)
        self.pipeline = build_object_aware_pipeline(self.source, args["view_fn"], device=args["device"],
                                                    num_threads=args["num_threads"], seed=epoch_seed,
                                                    py_workers=args["py_workers"])
        self._iterator = DALIGenericIterator(self.pipeline, self.output_map, auto_reset=False,
                                             last_batch_policy=LastBatchPolicy.DROP)
        self.epoch = epoch

    def __len__(self) -> int:
        return self.source.batches_per_epoch

    def use_store(self, store) -> None:
        """``occon.refresh``: the next epoch's pipeline reads ``store`` (validated by the dataset exactly as
        on the torchvision path: :meth:`OcconPretrainDataset.use_store`), with the augmentations the run
        configured; the pipeline of the epoch under way is not touched.

        Raises:
            ConfigError: the loader was built without its dataset or the run has no ``occon.refresh``.
            StoreError: the store does not match the images (from the dataset).
        """
        if self._dataset is None:
            raise ConfigError("use_store needs the loader built by build_dali_loader (it keeps the dataset)")
        self._dataset.use_store(store)
        self.source.use(records_from_dataset(self._dataset), self._dataset.cfg)

    @property
    def dataset(self) -> list:
        """One record per image of the whole dataset (every shard): hosts size per-sample state by
        ``len(trainer.train_dataloader.dataset)`` (solo-learn's DeepClusterV2 memory of assignments)."""
        return self.source.records

    def __iter__(self):
        epoch = int(self._start_epoch() or 0) if callable(self._start_epoch) else self._next_epoch
        self._next_epoch = epoch + 1
        try:
            self._build(epoch)  # DALI runs the first batches already here (prefetch)
            iterator = iter(self._iterator)
        except RuntimeError as exc:
            raise self._decode_error(exc) from exc
        while True:
            try:
                (out,) = next(iterator)
            except StopIteration:
                return
            except RuntimeError as exc:  # DALI's decoder met a file that changed after the start-up check
                raise self._decode_error(exc) from exc
            yield self.to_solo_batch(out)

    def _decode_error(self, exc: RuntimeError) -> Exception:
        """What a DALI error during an epoch was. The files of the last batches that the shared rule
        cannot decode any more changed after the start-up check: a :class:`DataError` naming them.
        When every one of them still decodes the data is not the cause: DALI's own error is raised
        as it is (a ``RuntimeError`` with DALI's message), never blamed on a file."""
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        cause = next((line for line in lines if "failure" in line or "rror:" in line), lines[0] if lines else "")
        recent = list(dict.fromkeys(reversed(self.source.recent)))  # newest first, each file once
        changed = [f"{path} ({reason})" for path, reason in _unreadable_now(recent).items()]
        if changed:
            return DataError(f"DALI could not decode a sample of the last batches ({cause[:200]}): "
                             f"{examples(changed, show=3)} changed after the start-up check (unreadable now); fix "
                             f"or remove it and rerun (the check runs again)")
        return RuntimeError(f"the DALI pipeline failed ({cause[:300]}); not a data problem: the {len(recent)} files "
                            f"of the last batches are unchanged and decode")

    def to_solo_batch(self, out: dict) -> list:
        indexes = out["index"].reshape(-1).long()
        info = {key: out[key].bool() for key in INFO_KEYS}
        for key in ("oa_crop", "no_entry", "replaced"):
            info[key] = info[key].reshape(-1)
        views = [out[f"view{v}"] for v in range(self.n_views)]
        batch = [indexes, views, out["target"].reshape(-1).long(), info]
        return batch if self.with_info else batch[:3]


def _unreadable_now(files: list[str]) -> dict[str, str]:
    """``file -> reason`` for the ``files`` the shared decode rule cannot decode now."""
    bad = {}
    for file in files:
        path = Path(file)
        try:
            inspect_image(path.parent, path.name, decode=True)
        except BadImageError as err:
            bad[file] = err.reason
    return bad


def build_dali_source(cfg: Any, shard_id: int = 0, num_shards: int = 1,
                      occon: OcconConfig | None = None) -> tuple[ObjectAwareSource, list[ViewOps]]:
    """The object-aware source (images, store entries, decisions) and the per-view standard ops
    from ``cfg.data.train_path`` (+ ``cfg.data.image_root``), ``cfg.optimizer.batch_size``,
    ``cfg.augmentations``, ``cfg.occon`` (or ``occon``: the run's parsed section) and ``cfg.seed``; the store
    is validated here. Raises :class:`ConfigError` / ``DataError`` for what the run cannot use."""
    source, views, _ = _dali_parts(cfg, shard_id, num_shards, occon)
    return source, views


def _dali_parts(cfg: Any, shard_id: int, num_shards: int, occon: OcconConfig | None):
    """(source, views, the dataset the records came from): :func:`build_dali_source`'s work."""
    train_path, batch_size, seed = loader_settings(cfg)
    views = views_from_cfg(select(cfg, "augmentations"))
    dataset = build_dataset(cfg, [_identity] * len(views), occon=occon)
    records = records_from_dataset(dataset)
    check_batch_per_process(len(records), int(batch_size), num_shards, train_path, dataset.startup_summary())
    source = ObjectAwareSource(records, int(batch_size), len(views), dataset.cfg, seed, shard_id, num_shards)
    return source, views, dataset


def dali_device(cfg: Any) -> str:
    """``dali.device`` (gpu or cpu), checked against the machine.

    Raises:
        ConfigError: ``dali.device`` is not gpu/cpu, or gpu without a visible CUDA device.
    """
    device = str(select(cfg, "dali.device", "gpu"))
    if device not in ("gpu", "cpu"):
        raise ConfigError(f"dali.device={device!r} must be 'gpu' or 'cpu'")
    if device == "gpu" and not torch.cuda.is_available():
        raise ConfigError("dali.device=gpu but no CUDA device is visible: set dali.device=cpu")
    return device


def build_dali_loader(cfg: Any, shard_id: int = 0, num_shards: int = 1, start_epoch=0,
                      with_info: bool = True, occon: OcconConfig | None = None) -> ObjectAwareDALILoader:
    """The DALI training loader: :func:`build_dali_source` + ``cfg.dali.device`` ("gpu" or "cpu"),
    ``cfg.data.num_workers`` (DALI threads) and ``cfg.dali.py_workers`` (processes running the
    external source; default 0 = in the training process). ``with_info=False``: batches in the host's
    three-element format (a plain host method).

    Raises:
        ConfigError: ``dali.py_workers`` is not an integer >= 0, or any error of :func:`build_dali_source`.
    """
    device = dali_device(cfg)
    py_workers = select(cfg, "dali.py_workers", 0)
    if not isinstance(py_workers, int) or isinstance(py_workers, bool) or py_workers < 0:
        raise ConfigError(f"dali.py_workers={py_workers!r} must be an integer >= 0")
    source, views, dataset = _dali_parts(cfg, shard_id, num_shards, occon)
    return ObjectAwareDALILoader(source, views, device=device, seed=int(select(cfg, "seed", 0)),
                                 num_threads=max(1, int(select(cfg, "data.num_workers", 2))),
                                 py_workers=py_workers, start_epoch=start_epoch, with_info=with_info,
                                 dataset=dataset if dataset.configured.refresh is not None else None)


class ObjectAwareDALIDataModule(LightningDataModule):
    """Lightning data module around :func:`build_dali_loader` (built in ``setup`` so the GPU
    pipeline lands on the device Lightning assigned to this process)."""

    def __init__(self, cfg: Any, with_info: bool = True, occon: OcconConfig | None = None):
        super().__init__()
        self.cfg = cfg
        self.occon = occon  # the run's parsed section (None: parsed from cfg.occon in setup)
        self.with_info = with_info
        self.loader: ObjectAwareDALILoader | None = None

    def setup(self, stage: str | None = None) -> None:
        if self.loader is None:
            trainer = getattr(self, "trainer", None)
            rank, world = (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)
            # a resumed run's epoch is known only after Lightning restored the checkpoint (after setup):
            # the loader reads it when its pipeline is built, at the first epoch's iter()
            self.loader = build_dali_loader(self.cfg, shard_id=rank, num_shards=world,
                                            start_epoch=lambda: trainer.current_epoch if trainer is not None else 0,
                                            with_info=self.with_info, occon=self.occon)

    def train_dataloader(self):
        self.setup()
        return self.loader

    @property
    def refresh_target(self) -> ObjectAwareDALILoader | None:
        """What ``occon.refresh`` switches to each new store version (the loader, once ``setup`` built it)."""
        return self.loader


def build_dali_datamodule(cfg: Any, with_info: bool = True,
                          occon: OcconConfig | None = None) -> ObjectAwareDALIDataModule:
    """The plugin's DALI pipeline as a Lightning data module (built in its ``setup``); ``occon``: the run's
    parsed section (None: ``cfg.occon`` is parsed there)."""
    return ObjectAwareDALIDataModule(cfg, with_info=with_info, occon=occon)
