"""The object-aware methods' data checks (:class:`occon_plugin.methods.base.OcconMethodMixin` calls them
from its Lightning hooks): which pipeline feeds the method, and making the host's own dataset object-aware.

Rule: *a method whose ``occon`` section enables an augmentation never trains without it*. The plugin's
pipelines (torchvision or DALI, ``occon-pretrain``) already run the augmentations; the host's own
image-folder dataset is made object-aware in place (:mod:`occon_plugin.train.host_data`); anything else
(the host's DALI data module, a foreign data module, a loader without a dataset) is refused with one line
naming ``occon-pretrain``. Every function raises :class:`~occon_plugin.errors.ConfigError`; the mixin turns
it into the one-line stop of :func:`occon_plugin.train.process.stop_run`.
"""
from __future__ import annotations

import logging
from typing import Any

from occon_plugin.augment.config import OcconConfig
from occon_plugin.errors import ConfigError
from occon_plugin.train.process import current_plugin_command

log = logging.getLogger(__name__)


def foreign_datamodule_message(name: str) -> str:
    """The one line for a data module that cannot run OA-Crop / BG-Mixup (``name``: its class name)."""
    kind = "DALI data module" if "dali" in name.lower() else "data module"
    return (f"the host's {kind} ({name}) cannot run OA-Crop / BG-Mixup before its augmentations: run the "
            f"plugin's script, whose data.format=dali pipeline does (same YAML): {current_plugin_command()}")


def check_datamodule(datamodule: Any) -> None:
    """``trainer.datamodule`` is None or the plugin's own. Raises :class:`ConfigError` for any other."""
    if datamodule is not None and not type(datamodule).__module__.startswith("occon_plugin."):
        raise ConfigError(foreign_datamodule_message(type(datamodule).__name__))


def attach_to_host_data(loaders: list, occon: OcconConfig, n_views: int, seed: int) -> None:
    """Make the host's training dataset(s) behind ``loaders`` object-aware in place (a no-op for datasets
    that already are: the plugin's own pipelines). ``n_views``: views per sample the config says
    (``data.num_large_crops + data.num_small_crops``), checked against the host's transform; ``seed``:
    the run seed. Raises :class:`ConfigError` for a loader without a dataset, a view-count mismatch, or
    a dataset without image files (:func:`~occon_plugin.train.host_data.host_samples`)."""
    from occon_plugin.train.host_data import (HostObjectAware, host_samples, host_view_transforms, is_object_aware,
                                              make_object_aware)

    for loader in loaders:
        dataset = getattr(loader, "dataset", None)
        if dataset is None:
            raise ConfigError(f"the training loader ({type(loader).__name__}) is not a torch DataLoader: the "
                              f"object-aware augmentations cannot run in it; use {current_plugin_command()}")
        if is_object_aware(dataset):
            continue
        samples = host_samples(dataset)
        views = host_view_transforms(getattr(dataset, "transform", None))
        if len(views) != n_views:
            raise ConfigError(f"the host's transform makes {len(views)} views per image but the config "
                              f"says {n_views} (data.num_large_crops + data.num_small_crops)")
        make_object_aware(dataset, HostObjectAware(samples, views, occon, seed=seed))
        log.info("occon: the host's %s under %s now runs OA-Crop=%s BG-Mixup=%s before its augmentations",
                 type(dataset).__name__, samples.root, occon.oa_crop, occon.bg_mixup.enabled)


def check_object_aware(trainer: Any, loaders: list, occon: OcconConfig, n_views: int, seed: int) -> list:
    """Right before the first step: every loader Lightning iterates yields object-aware samples (else stop:
    never train silently without the augmentations). Returns their datasets ([] for the plugin's DALI data
    module). Raises :class:`ConfigError` naming what is wrong."""
    from occon_plugin.train.host_data import is_object_aware

    if getattr(trainer, "datamodule", None) is not None:
        return []  # the plugin's DALI data module (a foreign one stopped in setup)
    datasets = []
    for loader in loaders:
        dataset = getattr(loader, "dataset", None)
        if dataset is None or not is_object_aware(dataset):
            attach_to_host_data([loader], occon, n_views, seed)  # names what is wrong (no image files, ...)
            raise ConfigError(
                f"the training data ({type(dataset).__name__}) was not made object-aware before Lightning "
                f"started loading it (is it passed to trainer.fit?); use {current_plugin_command()}")
        datasets.append(dataset)
    return datasets
