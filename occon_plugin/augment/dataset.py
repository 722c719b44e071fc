"""The pretraining dataset and dataloader (torchvision v2 path).

Sample = ``(index, [view_1, ..., view_n], target, info)``; a batch collates to
``[indexes (B,), [V1 (B,3,S,S), ...], targets (B,), info]`` with ``info`` =
``{"oa_crop": (B,), "mixed": (B, n), "mix_skipped": (B, n), "no_entry": (B,), "replaced": (B,)}``
(bool tensors: OA-Crop used a box / view mixed / view drew a mix but had no mask or partner
background / image had no store entry / a bad image was replaced by another one).

Randomness: every sample draws from its own seed. :class:`SeededRandomSampler` hands out
``(index, sample_seed)`` pairs from the run seed and the epoch, so a run is reproducible whatever
the number of workers, and each epoch differs. A plain int index uses a seed derived from
``(seed, index)`` (same augmentations every epoch; fine for tests and inspection).
"""
from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from occon_plugin.augment.config import OcconConfig, parse_occon_config
from occon_plugin.augment.semantics import Partner, choose_partner, sample_seed
from occon_plugin.augment.torchvision_pipeline import TorchvisionObjectAware, ViewTransform
from occon_plugin.config import select
from occon_plugin.images import BadImageError, list_images, load_image
from occon_plugin.store import Store, StoreError, validate_store

log = logging.getLogger(__name__)

MAX_BAD_IN_A_ROW = 20  # a sample gives up after this many unreadable replacements (a broken dataset)
_REPLACE_STREAM = 2


class StoreMismatchEmpty(StoreError):
    """Every image was dropped by ``occon.missing=skip``."""


# Unlabelled images get class 0 of a one-class online classifier: with solo-learn's ignore_index
# (-1) every target would be ignored and the classifier's loss would be NaN (0 / 0).
NO_LABEL_TARGET = 0


class OcconPretrainDataset(Dataset):
    """Map-style dataset of one image folder / COCO json with the object-aware augmentations.

    ``occon_cfg``: the ``occon`` config section (None or disabled: exactly the host baseline);
    ``view_transforms``: one standard transform per view (PIL -> tensor), e.g. from
    :func:`build_view_transforms`. The store is opened and checked against the image list here,
    before any training starts.
    """

    def __init__(self, source: str | Path, occon_cfg: Any, view_transforms: Sequence[ViewTransform],
                 seed: int = 0, image_root: str | Path | None = None):
        if len(view_transforms) < 1:
            raise ValueError("view_transforms is empty: the augmentations config must produce at least one view")
        self.images = list_images(source, image_root)
        self.cfg: OcconConfig = parse_occon_config(occon_cfg, n_views=len(view_transforms))
        self.pipeline = TorchvisionObjectAware(self.cfg, view_transforms)
        self.seed = int(seed)
        self.counts: Counter = Counter()  # this process's counts (workers keep their own; use info to sum)
        self.paths = list(self.images.paths)
        self.labels = list(self.images.labels) if self.images.labels is not None else None
        self.store: Store | None = None
        self.entries: list[Any] = [None] * len(self.paths)
        self.bg_candidates = np.zeros(0, dtype=np.int64)
        if self.cfg.active:
            self._attach_store()

    @property
    def num_classes(self) -> int:
        return len(self.images.classes) if self.labels is not None else 1

    def target(self, index: int) -> int:
        return self.labels[index] if self.labels is not None else NO_LABEL_TARGET

    def _attach_store(self) -> None:
        self.store = Store.open(self.cfg.store)
        report = validate_store(self.store, self.images, self.cfg.missing)  # raises on mismatch under "error"
        unusable = set(report.missing) | {path for path, _, _ in report.changed}
        if unusable and self.cfg.missing == "skip":
            keep = [i for i, p in enumerate(self.paths) if p not in unusable]
            self.paths = [self.paths[i] for i in keep]
            self.labels = [self.labels[i] for i in keep] if self.labels is not None else None
            self.entries = [None] * len(self.paths)
            if not self.paths:
                raise StoreMismatchEmpty(f"occon.missing=skip left no image: none of the images under "
                                         f"{self.images.root} has a usable entry in the store {self.store.root}")
        for i, path in enumerate(self.paths):
            self.entries[i] = None if path in unusable else self.store.entries.get(path)
        self.counts["no_entry"] = sum(e is None for e in self.entries)
        self.counts["skipped_no_entry"] = len(self.images.paths) - len(self.paths)
        self.counts["failed_localization"] = len(report.failed)
        if unusable:
            log.warning("occon store %s: %s (policy occon.missing=%s)", self.store.root, report.summary(),
                        self.cfg.missing)
        self.bg_candidates = np.array([i for i, e in enumerate(self.entries)
                                       if e is not None and e.ok and e.bg_rect is not None], dtype=np.int64)

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def n_views(self) -> int:
        return self.pipeline.n_views

    def _load(self, index: int) -> np.ndarray | None:
        try:
            return load_image(self.images.root, self.paths[index])
        except BadImageError as exc:
            self.counts["bad_images"] += 1
            log.warning("skipping %s (%d bad so far in this process)", exc, self.counts["bad_images"])
            return None

    def _load_mask(self, index: int) -> np.ndarray:
        path = self.paths[index]
        try:
            return self.store.load_mask(path)
        except (OSError, ValueError, KeyError, StoreError) as exc:
            raise StoreError(f"cannot read the mask of {path} from the store {self.store.root} ({exc}); "
                             f"the store is damaged: rebuild it with occon-localize") from exc

    def _partner(self, seed: int, index: int) -> Partner | None:
        if not self.cfg.bg_mixup.enabled:
            return None
        other = choose_partner(seed, index, self.bg_candidates)
        if other is None:
            return None
        return Partner(bg_rect=self.entries[other].bg_rect, load_image=lambda: self._load(other), index=other)

    def __getitem__(self, key: int | tuple[int, int]):
        index, seed = key if isinstance(key, tuple) else (key, sample_seed(self.seed, key))
        index, seed = int(index), int(seed)
        image, replaced = self._load(index), False
        attempts = 0
        while image is None:  # bad file: replace by another index, drawn from the sample's seed
            attempts += 1
            if attempts > MAX_BAD_IN_A_ROW:
                raise RuntimeError(f"{MAX_BAD_IN_A_ROW} unreadable images in a row (last: {self.paths[index]} "
                                   f"under {self.images.root}); check the dataset")
            index = int(np.random.default_rng([seed, _REPLACE_STREAM, attempts]).integers(len(self.paths)))
            image, replaced = self._load(index), True

        entry = self.entries[index]
        has_mask = entry is not None and entry.ok and self.cfg.bg_mixup.enabled
        partner = self._partner(seed, index)
        plan = self.pipeline.plan(image.shape[1], image.shape[0], entry, has_mask, partner, seed)
        mask = self._load_mask(index) if any(plan.mixed) else None
        views, info = self.pipeline.render(image, entry, mask, partner, plan)
        info["no_entry"] = torch.tensor(self.cfg.active and entry is None)
        info["replaced"] = torch.tensor(replaced)
        self.counts["mix_skipped"] += sum(plan.mix_skipped)
        target = self.target(index)
        return index, views, target, info


def _distributed_rank_and_world() -> tuple[int, int]:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class SeededRandomSampler(Sampler):
    """Shuffles like ``RandomSampler`` and gives every sample its own seed: yields ``(index, seed)``.

    Both come from ``[seed, epoch]``; ``epoch`` advances on each pass (and follows Lightning's
    ``set_epoch`` calls), so augmentations differ per epoch yet a run is reproducible and does not
    depend on which worker loads which sample. Under DDP each rank takes every ``world``-th entry of
    the same global order (ranks are read when iterating, after Lightning set up the process group;
    Lightning must not swap in its own sampler, see ``host.KEEP_SAMPLER``), so the samples and their
    seeds do not depend on the number of processes.
    """

    def __init__(self, n: int, seed: int = 0, rank: int | None = None, num_replicas: int | None = None):
        self.n, self.seed, self.epoch = int(n), int(seed), 0
        self.rank, self.num_replicas = rank, num_replicas

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def _shard(self) -> tuple[int, int]:
        rank, world = _distributed_rank_and_world()
        return (rank if self.rank is None else self.rank,
                world if self.num_replicas is None else self.num_replicas)

    def __len__(self) -> int:
        return self.n // self._shard()[1]

    def __iter__(self) -> Iterator[tuple[int, int]]:
        rank, world = self._shard()
        rng = np.random.default_rng([self.seed & (2**63 - 1), self.epoch])
        order = rng.permutation(self.n)
        seeds = rng.integers(2**62, size=self.n)
        self.epoch += 1
        per_rank = self.n // world  # equal shares: the remainder is dropped this epoch, as DistributedSampler
        mine = slice(rank, per_rank * world, world)
        return iter(zip(order[mine].tolist(), seeds[mine].tolist()))


def build_view_transforms(augmentations: Any) -> list[ViewTransform]:
    """solo-learn main's ``augmentations`` list -> one host transform per view (``num_crops`` each)."""
    from omegaconf import OmegaConf

    from occon_plugin import host

    if augmentations is None or len(augmentations) == 0:
        raise ValueError("augmentations is empty: give a list of pipelines, e.g. one with num_crops: 2")
    transforms: list[ViewTransform] = []
    for i, item in enumerate(augmentations):
        item = OmegaConf.create(item) if isinstance(item, dict) else item
        num_crops = int(select(item, "num_crops", 1))
        if num_crops < 1:
            raise ValueError(f"augmentations[{i}].num_crops={num_crops} must be >= 1")
        transform = host.build_view_transform(item)
        transforms.extend([transform] * num_crops)
    return transforms


def loader_settings(cfg: Any) -> tuple[str, int, int]:
    """(``data.train_path``, ``optimizer.batch_size``, ``seed``), checked; shared by both pipelines."""
    train_path = select(cfg, "data.train_path")
    if train_path is None:
        raise ValueError("data.train_path is required: an image folder or a COCO json")
    batch_size = select(cfg, "optimizer.batch_size")
    if batch_size is None or int(batch_size) < 1:
        raise ValueError(f"optimizer.batch_size={batch_size!r} must be a positive integer")
    return train_path, int(batch_size), int(select(cfg, "seed", 0))


def build_dataset(cfg: Any, view_transforms: Sequence[ViewTransform]) -> "OcconPretrainDataset":
    """The images of ``data.train_path`` paired with the ``occon`` store (validated here)."""
    train_path, _, seed = loader_settings(cfg)
    return OcconPretrainDataset(train_path, select(cfg, "occon"), view_transforms, seed=seed,
                                image_root=select(cfg, "data.image_root"))


def build_pretrain_dataloader(cfg: Any) -> DataLoader:
    """The training loader from ``cfg.data.train_path`` (+ optional ``cfg.data.image_root`` for a COCO
    json), ``cfg.data.num_workers``, ``cfg.optimizer.batch_size``, ``cfg.augmentations``,
    ``cfg.occon`` and ``cfg.seed``. Store mismatches are reported here, before training."""
    train_path, batch_size, seed = loader_settings(cfg)
    num_workers = int(select(cfg, "data.num_workers", 0))
    dataset = build_dataset(cfg, build_view_transforms(select(cfg, "augmentations")))
    if len(dataset) < int(batch_size):
        raise ValueError(f"data.train_path={train_path} has {len(dataset)} images, fewer than "
                         f"optimizer.batch_size={batch_size} (drop_last=True would give no batch)")
    return DataLoader(dataset, batch_size=int(batch_size), sampler=SeededRandomSampler(len(dataset), seed),
                      num_workers=num_workers, drop_last=True, pin_memory=torch.cuda.is_available(),
                      persistent_workers=num_workers > 0)
