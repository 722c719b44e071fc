"""Checkpoint key layouts: who writes which ``state_dict`` prefixes, and the wrappers around them.

No torch and no solo-learn import here: ``occon_plugin.host`` reads the solo-learn part of this table,
and localization/evaluation read checkpoints with no host installed.
"""
from __future__ import annotations

from typing import Dict, Mapping, Tuple, TypeVar

V = TypeVar("V")

# role -> key prefix, per layout. Roles: backbone, momentum_backbone, projector, momentum_projector,
# and optionally predictor.
SOLO_CHECKPOINT_LAYOUTS: Dict[str, Dict[str, str]] = {
    "solo-1.0.2": {"backbone": "encoder.", "momentum_backbone": "momentum_encoder.",
                   "projector": "projector.", "momentum_projector": "momentum_projector.",
                   "predictor": "predictor."},
    "solo-main": {"backbone": "backbone.", "momentum_backbone": "momentum_backbone.",
                  "projector": "projector.", "momentum_projector": "momentum_projector.",
                  "predictor": "predictor."},
}
# Layouts written by code outside solo-learn.
EXTRA_CHECKPOINT_LAYOUTS: Dict[str, Dict[str, str]] = {
    # the paper authors' Lightning checkpoints (alinlab/object-aware-contrastive)
    "authors-2021": {"backbone": "encoder.", "momentum_backbone": "_encoder.",
                     "projector": "projector.", "momentum_projector": "_projector."},
    # facebookresearch/moco (the paper's MoCov2 baseline): the MLP head is the ResNet's ``fc``
    "moco-official": {"backbone": "encoder_q.", "momentum_backbone": "encoder_k.",
                      "projector": "encoder_q.fc.", "momentum_projector": "encoder_k.fc."},
}
# Every layout, solo-learn's first (on a tie in key coverage the first wins).
CHECKPOINT_LAYOUTS: Dict[str, Dict[str, str]] = {**SOLO_CHECKPOINT_LAYOUTS, **EXTRA_CHECKPOINT_LAYOUTS}

# Heads that some methods keep under another attribute than ``projector`` (solo-learn's DINO: ``head``,
# an MLP in ``head.mlp`` followed by the prototypes layer ``head.last_layer``).
ALTERNATIVE_PROJECTORS: Tuple[Tuple[str, str], ...] = (("head.mlp.", "momentum_head.mlp."),)

# Prefixes added by wrappers around a model: DistributedDataParallel / DataParallel (``module.``) and
# ``torch.compile`` (``_orig_mod.``). They may nest (``module._orig_mod.``) and may sit after a role
# prefix (``backbone._orig_mod.conv1.weight`` when only the backbone was compiled).
WRAPPER_PREFIXES: Tuple[str, ...] = ("module.", "_orig_mod.")


def strip_wrapper_prefixes(state: Mapping[str, V]) -> Tuple[Dict[str, V], Dict[str, int]]:
    """``state`` with every ``module.`` / ``_orig_mod.`` key component removed, and how many keys had each.

    Raises ``ValueError`` if two keys become equal (a checkpoint holding a model twice under
    different wrappers is ambiguous).
    """
    out: Dict[str, V] = {}
    counts: Dict[str, int] = {}
    for key, value in state.items():
        parts = key.split(".")
        kept = [p for p in parts if p + "." not in WRAPPER_PREFIXES]
        for p in parts:
            if p + "." in WRAPPER_PREFIXES:
                counts[p + "."] = counts.get(p + ".", 0) + 1
        new = ".".join(kept)
        if new in out:
            raise ValueError(f"keys {key!r} and another one are the same parameter {new!r} once the "
                             f"wrapper prefixes {WRAPPER_PREFIXES} are removed")
        out[new] = value
    return out, counts
