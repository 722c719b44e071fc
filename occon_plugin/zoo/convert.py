"""``occon-zoo convert``: any supported checkpoint -> an occon checkpoint file (``occon-ckpt/2``).

Reading and the record's format live in the one model-loading path, :mod:`occon_plugin.models.checkpoint`
(layouts, wrapper prefixes, architectures, heads); this module is the zoo's use of it.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict

from occon_plugin.errors import CheckpointError  # noqa: F401  (re-exported)
from occon_plugin.models.checkpoint import FORMAT, read_checkpoint, save_record, validate_record

load_checkpoint = read_checkpoint          # any layout -> record
save_occon_checkpoint = save_record        # validate + atomic write
validate_occon_checkpoint = validate_record


def convert(src, dst, use_momentum: bool = False) -> Dict[str, Any]:
    """Read ``src`` (any supported layout), write it to ``dst`` as an occon checkpoint; returns the record."""
    record = read_checkpoint(src, use_momentum=use_momentum)
    save_record(record, Path(dst))
    return record


__all__ = ["FORMAT", "CheckpointError", "convert", "load_checkpoint", "save_occon_checkpoint",
           "validate_occon_checkpoint"]
