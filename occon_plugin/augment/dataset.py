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

import copy
import functools
import logging
import sys
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler, default_collate

from occon_plugin.augment.config import OcconConfig, parse_occon_config
from occon_plugin.augment.semantics import Partner, choose_partner, replacement_index, sample_seed
from occon_plugin.augment.torchvision_pipeline import TorchvisionObjectAware, ViewTransform
from occon_plugin.config import select
from occon_plugin.errors import ConfigError, DataError
from occon_plugin.images import BadImageError, ImageInfo, check_images, examples, list_images, load_image
from occon_plugin.store import Store, StoreError, ValidationReport, validate_store

log = logging.getLogger(__name__)


def tell(message: str) -> None:
    """A start-up note the user must see (images skipped or dropped, and why): ``[occon] <message>`` on
    stderr and a warning record. Printed because the YAMLs turn Hydra's logging off (root level ERROR),
    which would swallow a log record alone."""
    print(f"[occon] {message}", file=sys.stderr, flush=True)
    log.warning("%s", message)

MAX_BAD_IN_A_ROW = 20  # a sample gives up after this many unreadable replacements (a broken dataset)


class StoreMismatchEmpty(StoreError):
    """Every image was dropped by ``occon.missing=skip``."""


# Unlabelled images get class 0 of a one-class online classifier: with solo-learn's ignore_index
# (-1) every target would be ignored and the classifier's loss would be NaN (0 / 0).
NO_LABEL_TARGET = 0


class OcconPretrainDataset(Dataset):
    """Map-style dataset of one image folder / COCO json with the object-aware augmentations.

    ``occon_cfg``: the ``occon`` config section (None or disabled: exactly the host baseline);
    ``view_transforms``: one standard transform per view (PIL -> tensor), e.g. from
    :func:`build_view_transforms`. Before any training step (and shared with the DALI pipeline,
    which builds its samples from this object):

    1. the folder is listed by ImageFolder's conventions (files skipped on purpose are reported);
    2. with an object-aware augmentation on, the store is validated against the images
       (fingerprints, entries, masks; ``occon.missing`` decides: stop, drop, or use without store);
    3. unreadable images are dropped and counted: store entries that failed localization, and
       every image the store does not vouch for is checked by the shared decode rule.

    ``startup`` holds the counts of steps 1-3; ``info[i]`` the header facts of image ``i``.
    Raises:
        ConfigError: ``view_transforms`` is empty (the augmentations config made no view).
    """

    def __init__(self, source: str | Path, occon_cfg: Any, view_transforms: Sequence[ViewTransform],
                 seed: int = 0, image_root: str | Path | None = None, workers: int | None = None):
        if len(view_transforms) < 1:
            raise ConfigError("view_transforms is empty: the augmentations config must produce at least one view")
        self.images = list_images(source, image_root)
        # the run's parsed section (occon-pretrain, the host's script: parsed once), else a raw one parsed here
        configured: OcconConfig = (occon_cfg.check_views(len(view_transforms)).require_store()
                                   if isinstance(occon_cfg, OcconConfig) else
                                   parse_occon_config(occon_cfg, n_views=len(view_transforms)))
        self.configured = configured  # as configured; ``cfg``: what runs now (occon.refresh: off until a store)
        self.cfg: OcconConfig = without_augmentations(configured) if configured.refresh is not None else configured
        self.workers = workers
        self.pipeline = TorchvisionObjectAware(self.cfg, view_transforms)
        self.seed = int(seed)
        self.counts: Counter = Counter()  # this process's counts (workers keep their own; use info to sum)
        self.paths = list(self.images.paths)
        self.labels = list(self.images.labels) if self.images.labels is not None else None
        self.store: Store | None = None
        self.report: ValidationReport | None = None
        self.entries: list[Any] = [None] * len(self.paths)
        self.info: list[ImageInfo | None] = [None] * len(self.paths)
        self.bg_candidates = np.zeros(0, dtype=np.int64)
        self.startup: dict[str, Any] = {"listed": len(self.paths), "not_listed": self.images.n_skipped}
        self.notes: list[str] = []
        listing_note = self.images.skipped_summary()
        if listing_note:
            self.notes.append(listing_note)
        if self.cfg.active:
            self._attach_store(workers)
        self._drop_unreadable(workers)
        self.bg_candidates = background_donors(self.entries, self.paths, self.cfg, self.notes)
        self.startup["used"] = len(self.paths)
        for note in self.notes:
            tell(note)

    def use_store(self, store: str | Path) -> None:
        """``occon.refresh``: from the next sample on, run the configured augmentations on ``store`` (a
        complete store of these images; validated here under ``occon.missing``, with ``skip`` read as
        ``full_image``: the sampler's indexes must stay the same images). The previous store stays in use
        until this returns. A loader's worker processes hold copies: the loader must start new ones for the
        next epoch (``persistent_workers=False``, :func:`build_pretrain_dataloader`).

        Raises:
            ConfigError: the dataset was not built with ``occon.refresh`` enabled.
            StoreError: the store does not match the images (``occon.missing=error``).
        """
        if self.configured.refresh is None:
            raise ConfigError("use_store is for occon.refresh runs: this dataset trains on occon.store")
        missing = "full_image" if self.configured.missing == "skip" else self.configured.missing
        cfg = replace(self.configured, store=Path(store), missing=missing)
        fresh = copy.copy(self)  # validated on a copy: a store that does not match leaves this one as it was
        fresh.cfg, fresh.entries, fresh.notes, fresh.counts = cfg, [None] * len(self.paths), [], Counter()
        fresh.startup = dict(self.startup)
        fresh._attach_store(self.workers)
        bg = background_donors(fresh.entries, fresh.paths, cfg, fresh.notes)
        for note in fresh.notes:
            tell(note)
        assert fresh.paths == self.paths, "full_image / error policies keep every image"
        # the switch: everything the next sample reads, set together
        self.store, self.report, self.entries, self.bg_candidates = fresh.store, fresh.report, fresh.entries, bg
        self.cfg, self.counts, self.startup = cfg, fresh.counts, fresh.startup
        self.pipeline = TorchvisionObjectAware(cfg, self.pipeline.view_transforms)

    @property
    def num_classes(self) -> int:
        return len(self.images.classes) if self.labels is not None else 1

    def target(self, index: int) -> int:
        return self.labels[index] if self.labels is not None else NO_LABEL_TARGET

    def _keep(self, keep: list[int]) -> None:
        self.paths = [self.paths[i] for i in keep]
        self.labels = [self.labels[i] for i in keep] if self.labels is not None else None
        self.entries = [self.entries[i] for i in keep]
        self.info = [self.info[i] for i in keep]

    def _attach_store(self, workers: int | None) -> None:
        self.store = Store.open(self.cfg.store)
        # a store from before fingerprints: refused unless occon.allow_v1_store=true (then said once)
        note = self.store.require_fingerprints(self.cfg.allow_v1_store, "occon.allow_v1_store", self.images.root)
        if note:
            self.notes.append(note)
        # raises under occon.missing=error, naming the files; masks are read only if BG-Mixup uses them
        report = validate_store(self.store, self.images, self.cfg.missing, check_masks=self.cfg.bg_mixup.enabled,
                                workers=workers)
        self.report = report
        unusable = report.unusable
        for i, path in enumerate(self.paths):
            self.entries[i] = None if path in unusable else self.store.entries.get(path)
        n_unusable = sum(p in unusable for p in self.paths)
        if unusable and self.cfg.missing == "skip":
            self._keep([i for i, p in enumerate(self.paths) if p not in unusable])
        self.counts["no_entry"] = sum(e is None for e in self.entries)
        self.counts["skipped_no_entry"] = len(self.images.paths) - len(self.paths)
        self.counts["failed_localization"] = len(report.failed)
        self.startup.update(store_unusable=n_unusable, store_policy=self.cfg.missing, **{
            f"store_{k}": v for k, v in report.counts.items() if k != "images"})
        if unusable:
            what = "dropped" if self.cfg.missing == "skip" else "used without store information (full image)"
            self.notes.append(f"occon store {self.store.root}: {report.summary()} -> {n_unusable} image(s) {what} "
                              f"(occon.missing={self.cfg.missing})")
        if not self.paths:
            raise StoreMismatchEmpty(f"occon.missing=skip left no image: none of the images under "
                                     f"{self.images.root} has a usable entry in the store {self.store.root}")

    def _drop_unreadable(self, workers: int | None) -> None:
        """Drop the images neither pipeline could decode (the same ones for both), counted."""
        vouched = [i for i, e in enumerate(self.entries) if e is not None and e.ok and e.fingerprint]
        failed = {i: e.status for i, e in enumerate(self.entries) if e is not None and not e.ok}
        vouched_set = set(vouched)
        others = [i for i in range(len(self.paths)) if i not in failed and i not in vouched_set]
        bad: dict[str, str] = {self.paths[i]: reason for i, reason in failed.items()}
        for indexes, decode in ((vouched, False), (others, True)):
            checked = check_images(self.images.root, [self.paths[i] for i in indexes], decode=decode, workers=workers)
            bad.update(checked.bad)
            for i in indexes:
                self.info[i] = checked.info.get(self.paths[i])
        self.startup.update(unreadable=len(bad), checked_by_decoding=len(others))
        if bad:
            self.counts["unreadable_at_start"] = len(bad)
            self._keep([i for i, p in enumerate(self.paths) if p not in bad])
            shown = [f"{p} ({r})" for p, r in list(bad.items())[:5]]
            self.notes.append(f"{len(bad)} unreadable image(s) under {self.images.root} skipped (both pipelines): "
                              + examples(shown, len(bad)))
        if not self.paths:
            raise DataError(f"none of the {self.startup['listed']} images under {self.images.root} can be used: "
                            + "; ".join(self.notes) + ". Check data.train_path")

    def startup_summary(self) -> str:
        """One line: how many listed images are used and why the others are not."""
        s = self.startup
        parts = [f"{s['used']} of {s['listed']} listed images used"]
        if s.get("not_listed"):
            parts.append(f"{s['not_listed']} files not listed on purpose")
        if s.get("unreadable"):
            parts.append(f"{s['unreadable']} unreadable skipped")
        if s.get("store_unusable"):
            parts.append(f"{s['store_unusable']} without a usable store entry (occon.missing={s['store_policy']})")
        return "; ".join(parts)

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

    def _load_mask(self, index: int) -> np.ndarray | None:
        """The soft mask, or None (counted, named in the log) when it became unreadable after the
        start-up validation: the sample is then not mixed, the run goes on."""
        path = self.paths[index]
        try:
            return self.store.load_mask(path)
        except (OSError, ValueError, KeyError, StoreError) as exc:
            self.counts["mask_unreadable"] += 1
            log.warning("mask of %s unreadable, sample not mixed (%d so far in this process): %s", path,
                        self.counts["mask_unreadable"], exc)
            return None

    def _partners(self, seed: int, index: int) -> tuple[Partner | None, ...]:
        """View k's background donor (``choose_partner`` with view k), None for views BG-Mixup does
        not mix; a donor drawn for two views is one ``Partner`` (its image read at most once)."""
        if not self.cfg.bg_mixup.enabled:
            return (None,) * self.n_views
        donors: dict[int, Partner] = {}
        out = []
        for view in range(self.n_views):
            other = choose_partner(seed, index, self.bg_candidates, view) if view in self.cfg.bg_mixup.views else None
            if other is not None and other not in donors:
                donors[other] = Partner(bg_rect=self.entries[other].bg_rect,
                                        load_image=functools.cache(functools.partial(self._load, other)), index=other)
            out.append(None if other is None else donors[other])
        return tuple(out)

    def __getitem__(self, key: int | tuple[int, int]):
        index, seed = key if isinstance(key, tuple) else (key, sample_seed(self.seed, key))
        index, seed = int(index), int(seed)
        image, replaced = self._load(index), False
        attempts = 0
        while image is None:  # bad file: replace by another index, drawn from the sample's seed
            attempts += 1
            if attempts > MAX_BAD_IN_A_ROW:
                raise DataError(f"{MAX_BAD_IN_A_ROW} unreadable images in a row (last: {self.paths[index]} "
                                   f"under {self.images.root}); check the dataset")
            index = replacement_index(seed, attempts, len(self.paths))
            image, replaced = self._load(index), True

        entry = self.entries[index]
        has_mask = entry is not None and entry.ok and self.cfg.bg_mixup.enabled
        partners = self._partners(seed, index)
        plan = self.pipeline.plan(image.shape[1], image.shape[0], entry, has_mask, partners, seed)
        mask = self._load_mask(index) if any(plan.mixed) else None
        if mask is None and any(plan.mixed):
            plan = plan.without_mixing()
        views, info = self.pipeline.render(image, entry, mask, partners, plan)
        info["no_entry"] = torch.tensor(self.cfg.active and entry is None)
        info["replaced"] = torch.tensor(replaced)
        self.counts["mix_skipped"] += int(info["mix_skipped"].sum())  # after render: a donor unreadable now counts too
        target = self.target(index)
        return index, views, target, info


def background_donors(entries: Sequence[Any], paths: Sequence[str], cfg: OcconConfig, notes: list[str]) -> np.ndarray:
    """Sorted indexes of the images whose store entry has a background rectangle (``choose_partner``'s
    candidates). With BG-Mixup on and fewer than two of them, a note says what that means (appended to
    ``notes``): none -> no view can be mixed; one -> it is every donor and its own samples are never mixed."""
    donors = np.array([i for i, e in enumerate(entries) if e is not None and e.ok and e.bg_rect is not None],
                      dtype=np.int64)
    if cfg.bg_mixup.enabled and cfg.active and len(donors) < 2 and any(e is not None for e in entries):
        where = f"occon store {cfg.store}"
        if len(donors) == 0:
            notes.append(f"{where}: none of the {len(paths)} images has a background rectangle: BG-Mixup can mix no "
                         f"view (every drawn mix is counted as occon/mix_skipped); check the store's bg_rect entries")
        else:
            notes.append(f"{where}: only {paths[int(donors[0])]} of {len(paths)} images has a background rectangle: "
                         f"it is every view's donor, and its own samples are never mixed")
    return donors


def without_augmentations(cfg: OcconConfig) -> OcconConfig:
    """``cfg`` with OA-Crop and BG-Mixup off (``occon.refresh``'s warm-up: no store yet)."""
    return replace(cfg, oa_crop=False, bg_mixup=replace(cfg.bg_mixup, enabled=False))


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
        self._skip = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def skip_next(self, n: int) -> None:
        """The next pass starts ``n`` samples into this rank's share of its epoch (a run resumed from a
        checkpoint saved mid-epoch, by SIGTERM: the samples it trained on are not drawn again). The
        length stays the full epoch's (Lightning counts the batches already done itself)."""
        self._skip = max(0, int(n))

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
        skip, self._skip = self._skip, 0
        return iter(list(zip(order[mine].tolist(), seeds[mine].tolist()))[skip:])


def build_view_transforms(augmentations: Any) -> list[ViewTransform]:
    """solo-learn main's ``augmentations`` list -> one host transform per view (``num_crops`` each).

    Raises:
        ConfigError: ``augmentations`` empty or a ``num_crops`` < 1; any error of :func:`occon_plugin.host.build_view_transform`.
    """
    from omegaconf import OmegaConf

    from occon_plugin import host

    if augmentations is None or len(augmentations) == 0:
        raise ConfigError("augmentations is empty: give a list of pipelines, e.g. one with num_crops: 2")
    transforms: list[ViewTransform] = []
    for i, item in enumerate(augmentations):
        item = OmegaConf.create(item) if isinstance(item, dict) else item
        num_crops = int(select(item, "num_crops", 1))
        if num_crops < 1:
            raise ConfigError(f"augmentations[{i}].num_crops={num_crops} must be >= 1")
        transform = host.build_view_transform(item)
        transforms.extend([transform] * num_crops)
    return transforms


def loader_settings(cfg: Any) -> tuple[str, int, int]:
    """(``data.train_path``, ``optimizer.batch_size``, ``seed``), checked; shared by both pipelines.

    Raises:
        ConfigError: ``data.train_path`` missing, ``optimizer.batch_size`` not a positive integer, ``seed`` not an integer.
    """
    train_path = select(cfg, "data.train_path")
    if train_path is None:
        raise ConfigError("data.train_path is required: an image folder or a COCO json")
    batch_size = select(cfg, "optimizer.batch_size")
    if isinstance(batch_size, bool) or not _is_int(batch_size) or int(batch_size) < 1:
        raise ConfigError(f"optimizer.batch_size={batch_size!r} must be a positive integer")
    seed = select(cfg, "seed", 0)
    if isinstance(seed, bool) or not _is_int(seed):
        raise ConfigError(f"seed={seed!r} must be an integer")
    return train_path, int(batch_size), int(seed)


def _is_int(value: Any) -> bool:
    try:
        return int(value) == float(value)
    except (TypeError, ValueError):
        return False


def build_dataset(cfg: Any, view_transforms: Sequence[ViewTransform],
                  occon: OcconConfig | None = None) -> "OcconPretrainDataset":
    """The images of ``data.train_path`` paired with the ``occon`` store (validated here). ``occon``: the
    run's parsed section (None: ``cfg.occon`` is parsed). Raises :class:`ConfigError` / ``DataError`` /
    ``StoreError`` for settings, images or a store the run cannot use."""
    train_path, _, seed = loader_settings(cfg)
    dataset = OcconPretrainDataset(train_path, occon if occon is not None else select(cfg, "occon"),
                                   view_transforms, seed=seed,
                                   image_root=select(cfg, "data.image_root"))
    s = dataset.startup
    dropped = s["listed"] != s["used"] or s.get("not_listed") or s.get("store_unusable")
    if dropped:
        tell("data: " + dataset.startup_summary())
    else:
        log.info("[occon] data: %s", dataset.startup_summary())
    return dataset


def check_batch_per_process(n_images: int, batch_size: int, world: int, train_path: Any, summary: str = "") -> None:
    """Both pipelines: every one of the ``world`` processes gets ``n_images // world`` images (equal shares,
    :class:`SeededRandomSampler`) and drops its last partial batch, so each needs at least one full batch.
    Raises :class:`ConfigError` naming ``optimizer.batch_size`` (and ``devices`` under DDP)."""
    per_process = n_images // max(1, int(world))
    if per_process >= batch_size:
        return
    shares = (f"{n_images} usable images, {per_process} per process over {world} processes (devices x num_nodes),"
              if world > 1 else f"{n_images} usable images,")
    raise ConfigError(f"data.train_path={train_path} has {shares} fewer than optimizer.batch_size={batch_size} "
                      f"(the last partial batch is dropped: no batch would be trained): lower optimizer.batch_size"
                      + (" or devices" if world > 1 else "") + (f" ({summary})" if summary else ""))


def collate_host_batch(samples: list) -> list:
    """Collate to the host's own ``[indexes, views, targets]`` (the object-aware record dropped): the
    batches of a plain host method (``method=mocov2plus``), whose training step unpacks three elements."""
    return default_collate([sample[:3] for sample in samples])


def build_pretrain_dataloader(cfg: Any, world: int = 1, with_info: bool = True,
                              occon: OcconConfig | None = None) -> DataLoader:
    """The training loader from ``cfg.data.train_path`` (+ optional ``cfg.data.image_root`` for a COCO
    json), ``cfg.data.num_workers``, ``cfg.optimizer.batch_size``, ``cfg.augmentations``,
    ``cfg.occon`` and ``cfg.seed``. Store mismatches are reported here, before training; ``world``:
    the number of training processes (DDP), each of which needs a full batch.

    ``with_info``: batches carry the object-aware record (``[idx, views, targets, info]``, what the
    ``*_occon`` methods take); False gives the host's ``[idx, views, targets]`` for a plain method.
    ``occon``: the run's parsed section (None: ``cfg.occon`` is parsed here). Batches: ``idx`` (B,) int64,
    ``views`` n_views tensors (B, 3, S, S) float32 normalized, ``targets`` (B,) int64, ``info`` dict of
    (B,) / (B, n_views) bool/int tensors. Raises :class:`ConfigError` (e.g. fewer images than a batch)."""
    train_path, batch_size, seed = loader_settings(cfg)
    num_workers = int(select(cfg, "data.num_workers", 0))
    dataset = build_dataset(cfg, build_view_transforms(select(cfg, "augmentations")), occon=occon)
    check_batch_per_process(len(dataset), int(batch_size), world, train_path, dataset.startup_summary())
    return DataLoader(dataset, batch_size=int(batch_size), sampler=SeededRandomSampler(len(dataset), seed),
                      num_workers=num_workers, drop_last=True, pin_memory=torch.cuda.is_available(),
                      # occon.refresh switches the dataset's store between epochs: fresh workers copy it each epoch
                      persistent_workers=num_workers > 0 and dataset.configured.refresh is None,
                      collate_fn=None if with_info else collate_host_batch)
