"""The object-aware augmentations on NVIDIA DALI (GPU decoding and ops; CPU with ``dali.device=cpu``).

``source`` draws the shared decisions (``occon_plugin.augment.semantics``) and feeds files and
windows; ``pipeline`` is the DALI graph (OA-Crop as a decoded slice, BG-Mixup by tiling and
blending, then ``standard_ops``); ``datamodule`` wraps it in solo-learn's batch format and a
Lightning data module; ``single`` runs one in-memory sample (inspection, the shared test suite).
"""
from occon_plugin.augment.dali.datamodule import (ObjectAwareDALIDataModule, ObjectAwareDALILoader,
                                                  build_dali_datamodule, build_dali_loader, build_dali_source)
from occon_plugin.augment.dali.pipeline import build_object_aware_pipeline, standard_view_fn
from occon_plugin.augment.dali.source import ObjectAwareSource, SampleRecord
from occon_plugin.augment.dali.standard_ops import ViewOps, views_from_cfg

__all__ = ["ObjectAwareDALIDataModule", "ObjectAwareDALILoader", "build_dali_datamodule", "build_dali_loader",
           "build_dali_source", "build_object_aware_pipeline", "standard_view_fn", "ObjectAwareSource",
           "SampleRecord", "ViewOps", "views_from_cfg"]
