"""What the two object-aware methods add to their host parents.

The object-aware augmentations (OA-Crop, BG-Mixup) happen in the data pipeline
(:mod:`occon_plugin.augment`), before the standard augmentations, as the paper prescribes.
The pipeline appends a fourth batch element with what it did to each sample; the methods
log it and hand the usual ``[indexes, views, targets]`` to the host's training step, so a
batch without that element trains exactly like the parent method.
"""
from __future__ import annotations

from typing import Any, Dict, Optional, Sequence, Tuple

import torch

from occon_plugin import host

# Per-sample record of the object-aware pipelines: ``oa_crop`` (B,) a box was used,
# ``mixed`` (B, n_views) the view was BG-mixed, plus counters such as ``replaced`` (bad image
# swapped for another) or ``no_entry`` (no store entry). Each is logged as a fraction.
OCCON_INFO_KEYS = ("oa_crop", "mixed")


def split_occon_batch(batch: Sequence[Any]) -> Tuple[list, Optional[Dict[str, torch.Tensor]]]:
    """``[idx, views, targets(, info)]`` -> (``[idx, views, targets]``, info or None)."""
    if len(batch) == 3:
        return list(batch), None
    if len(batch) == 4 and isinstance(batch[3], dict):
        missing = set(OCCON_INFO_KEYS) - set(batch[3])
        if missing:
            raise KeyError(f"object-aware batch record lacks {sorted(missing)}; it must hold {OCCON_INFO_KEYS}")
        return list(batch[:3]), batch[3]
    raise ValueError(
        "expected a batch [indexes, views, targets] or [indexes, views, targets, occon_info], "
        f"got {len(batch)} elements"
    )


class OcconMethodMixin:
    """Mixed in before a host method class (``class X(OcconMethodMixin, MoCoV2Plus)``)."""

    # host.build_method: construct with the cfg on both host generations.
    occon_accepts_cfg = True

    def __init__(self, cfg=None, **kwargs):
        # solo-learn main calls Method(cfg); 1.0.2's own scripts call Method(**kwargs).
        if cfg is not None:
            args, kwargs = host.parent_init_args(cfg)
        else:
            args = ()
        super().__init__(*args, **kwargs)

    def training_step(self, batch: Sequence[Any], batch_idx: int):
        batch, info = split_occon_batch(batch)
        if info is not None:
            self._log_occon_info(info)
        return super().training_step(batch, batch_idx)

    def _log_occon_info(self, info: Dict[str, torch.Tensor]) -> None:
        names = {"oa_crop": "oa_crop_frac", "mixed": "bg_mixed_frac"}
        stats = {f"occon/{names.get(k, k + '_frac')}": v.float().mean()
                 for k, v in info.items() if torch.is_tensor(v)}
        self.log_dict(stats, on_epoch=True, sync_dist=True)
