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

import torch
from nvidia.dali.plugin.pytorch import DALIGenericIterator, LastBatchPolicy

from occon_plugin.augment.dataset import OcconPretrainDataset, build_dataset, loader_settings
from occon_plugin.config import select
from occon_plugin.host import LightningDataModule
from occon_plugin.images import BadImageError, image_size

from .pipeline import build_object_aware_pipeline, standard_view_fn
from .source import ObjectAwareSource, SampleRecord
from .standard_ops import ViewOps, views_from_cfg

INFO_KEYS = ("oa_crop", "mixed", "mix_skipped", "no_entry")


def _identity(image):
    return image


def records_from_dataset(dataset: OcconPretrainDataset, need_sizes: bool) -> list[SampleRecord]:
    """The dataset's images with their store entries as :class:`SampleRecord`s.

    ``need_sizes``: images without a store entry get their size from the file header (OA-Crop
    needs every image's size for its integer windows)."""
    root = Path(dataset.images.root)
    records = []
    for i, (path, entry) in enumerate(zip(dataset.paths, dataset.entries)):
        target = dataset.target(i)
        if entry is None:
            width = height = 0
            if need_sizes:
                try:
                    width, height = image_size(root, path)
                except BadImageError as exc:
                    raise BadImageError(exc.path, f"{exc.reason}; the DALI path cannot skip unreadable images "
                                                  f"during training: remove the file or train with the torchvision loader"
                                        ) from exc
            records.append(SampleRecord(root / path, width, height, target=target))
            continue
        usable = entry.ok
        records.append(SampleRecord(
            image_file=root / path, width=entry.width, height=entry.height,
            boxes=tuple(tuple(b) for b in entry.boxes) if usable else (),
            bg_rect=tuple(entry.bg_rect) if usable and entry.bg_rect is not None else None,
            mask_file=dataset.store.mask_file(path) if usable and dataset.cfg.bg_mixup.enabled else None,
            target=target, has_entry=True))
    return records


class ObjectAwareDALILoader:
    """Iterable over one epoch of solo-learn batches per ``iter()`` (wraps ``DALIGenericIterator``)."""

    def __init__(self, source: ObjectAwareSource, views: list[ViewOps], *, device: str = "cpu",
                 num_threads: int = 2, seed: int = 0, py_workers: int = 0):
        if len(views) != source.n_views:
            raise ValueError(f"{len(views)} view pipelines for a source of {source.n_views} views")
        self.source = source
        self.n_views = len(views)
        self.pipeline = build_object_aware_pipeline(source, standard_view_fn(views), device=device,
                                                    num_threads=num_threads, seed=seed, py_workers=py_workers)
        self.output_map = [f"view{v}" for v in range(self.n_views)] + ["index", "target", *INFO_KEYS]
        self._iterator = DALIGenericIterator(self.pipeline, self.output_map, auto_reset=True,
                                             last_batch_policy=LastBatchPolicy.DROP)

    def __len__(self) -> int:
        return self.source.batches_per_epoch

    def __iter__(self):
        for (out,) in self._iterator:
            yield self.to_solo_batch(out)

    def to_solo_batch(self, out: dict) -> list:
        indexes = out["index"].reshape(-1).long()
        info = {key: out[key].bool() for key in INFO_KEYS}
        for key in ("oa_crop", "no_entry"):
            info[key] = info[key].reshape(-1)
        info["replaced"] = torch.zeros_like(indexes, dtype=torch.bool)  # DALI never swaps in another image
        views = [out[f"view{v}"] for v in range(self.n_views)]
        return [indexes, views, out["target"].reshape(-1).long(), info]


def build_dali_source(cfg: Any, shard_id: int = 0, num_shards: int = 1) -> tuple[ObjectAwareSource, list[ViewOps]]:
    """The object-aware source (images, store entries, decisions) and the per-view standard ops
    from ``cfg.data.train_path`` (+ ``cfg.data.image_root``), ``cfg.optimizer.batch_size``,
    ``cfg.augmentations``, ``cfg.occon`` and ``cfg.seed``; the store is validated here."""
    train_path, batch_size, seed = loader_settings(cfg)
    views = views_from_cfg(select(cfg, "augmentations"))
    dataset = build_dataset(cfg, [_identity] * len(views))
    records = records_from_dataset(dataset, need_sizes=dataset.cfg.oa_crop)
    if len(records) // num_shards < int(batch_size):
        raise ValueError(f"data.train_path={train_path} has {len(records)} images, fewer than "
                         f"optimizer.batch_size={batch_size} per process (the last partial batch is dropped)")
    source = ObjectAwareSource(records, int(batch_size), len(views), dataset.cfg, seed, shard_id, num_shards)
    return source, views


def dali_device(cfg: Any) -> str:
    device = str(select(cfg, "dali.device", "gpu"))
    if device not in ("gpu", "cpu"):
        raise ValueError(f"dali.device={device!r} must be 'gpu' or 'cpu'")
    if device == "gpu" and not torch.cuda.is_available():
        raise RuntimeError("dali.device=gpu but no CUDA device is visible: set dali.device=cpu")
    return device


def build_dali_loader(cfg: Any, shard_id: int = 0, num_shards: int = 1) -> ObjectAwareDALILoader:
    """The DALI training loader: :func:`build_dali_source` + ``cfg.dali.device`` ("gpu" or "cpu"),
    ``cfg.data.num_workers`` (DALI threads) and ``cfg.dali.py_workers`` (processes running the
    external source; default 0 = in the training process)."""
    device = dali_device(cfg)
    py_workers = select(cfg, "dali.py_workers", 0)
    if not isinstance(py_workers, int) or isinstance(py_workers, bool) or py_workers < 0:
        raise ValueError(f"dali.py_workers={py_workers!r} must be an integer >= 0")
    source, views = build_dali_source(cfg, shard_id, num_shards)
    return ObjectAwareDALILoader(source, views, device=device, seed=int(select(cfg, "seed", 0)),
                                 num_threads=max(1, int(select(cfg, "data.num_workers", 2))),
                                 py_workers=py_workers)


class ObjectAwareDALIDataModule(LightningDataModule):
    """Lightning data module around :func:`build_dali_loader` (built in ``setup`` so the GPU
    pipeline lands on the device Lightning assigned to this process)."""

    def __init__(self, cfg: Any):
        super().__init__()
        self.cfg = cfg
        self.loader: ObjectAwareDALILoader | None = None

    def setup(self, stage: str | None = None) -> None:
        if self.loader is None:
            trainer = getattr(self, "trainer", None)
            rank, world = (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)
            self.loader = build_dali_loader(self.cfg, shard_id=rank, num_shards=world)

    def train_dataloader(self):
        self.setup()
        return self.loader


def build_dali_datamodule(cfg: Any) -> ObjectAwareDALIDataModule:
    return ObjectAwareDALIDataModule(cfg)
