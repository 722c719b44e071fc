"""OA-Crop and BG-Mixup inside the host's own data pipeline (solo-learn's ``main_pretrain.py``).

solo-learn builds its pretraining data itself (``prepare_datasets`` -> torchvision ``ImageFolder``
or its ``CustomDatasetWithoutLabels``, wrapped by ``dataset_with_index``; ``prepare_dataloader``)
and passes the loader to ``trainer.fit``. An object-aware method reaches that dataset from its
Lightning hook ``setup`` (before Lightning creates the loader's iterator and forks its worker
processes; see :class:`occon_plugin.methods.base.OcconMethodMixin`) and makes it object-aware in
place with :func:`make_object_aware`:

* the store is keyed by the dataset's own sample paths (relative to its ``root``);
* the per-view transforms are the host's own (``dataset.transform``, a ``FullTransformPipeline`` of
  ``NCropAugmentation``\\ s), applied after OA-Crop / BG-Mixup exactly as in the plugin's pipeline —
  the work is delegated to :class:`~occon_plugin.augment.dataset.OcconPretrainDataset` (one
  semantics, :mod:`occon_plugin.augment.semantics`);
* samples become ``(index, views, target, info)``: the 4-element batches the methods log
  (``occon/*_frac``).

Differences from the plugin's own pipeline (``occon-pretrain``), all from the host's loader: the
host shuffles with its ``RandomSampler``, so each sample draws its object-aware seed from the
worker's torch RNG (new decisions every epoch, reproducible under ``seed_everything``); host samples
the plugin does not list as images (``os.listdir`` returns every file of an unlabelled folder) or
that ``occon.missing=skip`` drops are replaced by another image and counted as ``replaced`` (the
host fixed the epoch length before the hook ran); unlabelled images get target 0 of the one-class
online classifier instead of the host's -1 (a batch of only -1 targets makes its loss NaN).
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from occon_plugin.augment.dataset import OcconPretrainDataset, tell
from occon_plugin.errors import ConfigError

log = logging.getLogger(__name__)

_REPLACE_STREAM = 3  # numpy stream of the replacement draw (semantics uses 1, the dataset 2)


class HostPipelineError(ConfigError):
    """The host's data pipeline cannot carry the object-aware augmentations; the message names the
    plugin command that can (``occon-pretrain``, same YAML)."""


@dataclass
class HostSamples:
    """The host dataset's images: ``root / paths[i]`` is host sample ``i``; ``targets[i]`` its label
    (None: the host has no labels, ``CustomDatasetWithoutLabels``)."""

    root: Path
    paths: list[str]
    targets: list[int] | None


def host_samples(dataset: Any) -> HostSamples:
    """The sample paths of a solo-learn pretraining dataset, in the host's order.

    Supports torchvision's ``ImageFolder`` (``root`` + ``samples``, labelled) and solo-learn's
    ``CustomDatasetWithoutLabels`` (``root`` + ``images``, ``data.no_labels: True``), with or without
    ``dataset_with_index``. Raises :class:`HostPipelineError` for anything else (CIFAR, STL-10, h5:
    no image files to key a store by).
    """
    root = getattr(dataset, "root", None)
    if root is not None and isinstance(getattr(dataset, "samples", None), list):
        root = Path(root)
        paths, targets = [], []
        for path, target in dataset.samples:
            paths.append(Path(os.path.relpath(path, root)).as_posix())
            targets.append(int(target))
        return HostSamples(root, paths, targets)
    if root is not None and isinstance(getattr(dataset, "images", None), list):
        return HostSamples(Path(root), [Path(p).as_posix() for p in dataset.images], None)
    raise HostPipelineError(
        f"the host's training dataset ({type(dataset).__name__}) has no image files to key an occon store by: "
        f"object-aware pretraining needs data.dataset=custom (an image folder, labelled or data.no_labels: True)")


def host_view_transforms(transform: Any) -> list[Callable]:
    """The host's per-view transforms (PIL image -> tensor), one per view, from its
    ``FullTransformPipeline`` / ``NCropAugmentation`` (both host generations).

    Raises:
        HostPipelineError: the transform is not solo-learn's ``FullTransformPipeline`` of ``NCropAugmentation``.
    """
    parts = getattr(transform, "transforms", None)
    if parts is None and hasattr(transform, "num_crops"):
        parts = [transform]
    views: list[Callable] = []
    for part in parts or ():
        inner, crops = getattr(part, "transform", None), getattr(part, "num_crops", None)
        if inner is None or crops is None:
            views = []
            break
        views.extend([inner] * int(crops))
    if not views:
        raise HostPipelineError(
            f"the host's pretraining transform ({type(transform).__name__}) is not solo-learn's "
            f"FullTransformPipeline of NCropAugmentation: the object-aware augmentations cannot run before it")
    return views


class HostObjectAware:
    """Host sample ``i`` -> ``(index, views, target, info)`` with OA-Crop / BG-Mixup.

    ``occon_cfg``: the run's parsed :class:`~occon_plugin.augment.config.OcconConfig` (a raw ``occon``
    section is parsed); ``seed``: the run seed (decisions of a sample come
    from a seed drawn from the torch RNG of the process that loads it). The store is opened and
    validated against the plugin's listing of ``samples.root`` here, before training. Raises
    :class:`ConfigError` for an inactive config and :class:`HostPipelineError` when no sample is usable.
    """

    def __init__(self, samples: HostSamples, view_transforms: Sequence[Callable], occon_cfg: Any, seed: int = 0):
        self.samples = samples
        self.occon = OcconPretrainDataset(samples.root, occon_cfg, list(view_transforms), seed=seed)
        if not self.occon.configured.active:  # (occon.refresh: off during the warm-up, on after the first refresh)
            raise ConfigError("HostObjectAware needs an active occon config (occon.oa_crop or occon.bg_mixup enabled)")
        plugin_index = {path: i for i, path in enumerate(self.occon.paths)}
        self.to_plugin = np.array([plugin_index.get(p, -1) for p in samples.paths], dtype=np.int64)
        self.host_index = {path: i for i, path in enumerate(samples.paths)}
        self.usable = np.flatnonzero(self.to_plugin >= 0)
        if len(self.usable) == 0:
            raise HostPipelineError(f"none of the {len(samples.paths)} images of the host's dataset under "
                                    f"{samples.root} is usable with the store {self.occon.cfg.store}")
        self.unlisted = [p for p, j in zip(samples.paths, self.to_plugin) if j < 0]
        if self.unlisted:
            tell(f"{len(self.unlisted)} of the host's {len(samples.paths)} samples under {samples.root} are not "
                 f"usable images with a store entry (first: {', '.join(self.unlisted[:3])}); each is replaced by "
                 "another image when drawn (counted as occon/replaced)")

    def __len__(self) -> int:
        return len(self.samples.paths)

    def target(self, plugin_index: int) -> int:
        path = self.occon.paths[plugin_index]
        host = self.host_index.get(path)
        if self.samples.targets is not None and host is not None:
            return self.samples.targets[host]
        return self.occon.target(plugin_index)

    def __call__(self, index: int):
        index = int(index)
        seed = int(torch.randint(0, 2**62, (1,)).item())  # the worker's RNG: differs per epoch, seeded runs repeat
        j = int(self.to_plugin[index])
        replaced = j < 0
        if replaced:
            pick = int(np.random.default_rng([seed, _REPLACE_STREAM]).integers(len(self.usable)))
            j = int(self.to_plugin[self.usable[pick]])
        used, views, _, info = self.occon[(j, seed)]
        if replaced:
            info["replaced"] = torch.tensor(True)
        out_index = self.host_index.get(self.occon.paths[used], index)
        return out_index, views, self.target(used), info


def _object_aware_getitem(self, index):
    return self._occon_host(index)


_SUBCLASSES: dict[type, type] = {}


def make_object_aware(dataset: Any, adapter: HostObjectAware) -> None:
    """Make the host's dataset object return :class:`HostObjectAware` samples, in place.

    The loader keeps the same dataset object (Lightning and ``DataLoader`` forbid swapping it), so
    its class becomes a subclass whose ``__getitem__`` delegates to ``adapter``; ``len`` and every
    other attribute stay the host's. Only worker processes started afterwards see the change: call
    it before Lightning creates the loader's iterator (the ``setup`` hook).
    """
    cls = type(dataset)
    if not getattr(cls, "_occon_object_aware", False):
        sub = _SUBCLASSES.get(cls)
        if sub is None:
            sub = type(f"ObjectAware{cls.__name__}", (cls,),
                       {"__getitem__": _object_aware_getitem, "_occon_object_aware": True,
                        "__module__": cls.__module__, "__qualname__": f"ObjectAware{cls.__qualname__}"})
            _SUBCLASSES[cls] = sub
        dataset.__class__ = sub
    dataset._occon_host = adapter


def is_object_aware(dataset: Any) -> bool:
    """Does this dataset already yield the object-aware 4-element samples (the plugin's own or wrapped)?"""
    return isinstance(dataset, OcconPretrainDataset) or getattr(type(dataset), "_occon_object_aware", False)


def occon_dataset_of(dataset: Any) -> OcconPretrainDataset | None:
    """The :class:`OcconPretrainDataset` doing the object-aware work behind ``dataset`` (for pictures)."""
    if isinstance(dataset, OcconPretrainDataset):
        return dataset
    adapter = getattr(dataset, "_occon_host", None)
    return adapter.occon if adapter is not None else None
