"""Store: read a finished store (index, manifest, masks)."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from occon_plugin.errors import DataError
from occon_plugin.store.format import (INDEX_FILE, MANIFEST_FILE, RANK_INDEX_GLOB, SCHEMA_NAME, SCHEMA_VERSION,
                                       StoreEntry, decode_mask_png, mask_from_u8, mask_relpath,
                                       read_index_lines)


class StoreError(DataError, RuntimeError):
    """A store folder that cannot be used as it is."""


@dataclass
class Store:
    root: Path
    manifest: dict
    entries: dict[str, StoreEntry]

    @classmethod
    def open(cls, store_dir: str | Path, allow_incomplete: bool = False) -> "Store":
        root = Path(store_dir).expanduser()
        manifest_path = root / MANIFEST_FILE
        if not manifest_path.is_file():
            raise StoreError(f"{root} is not a mask store (no {MANIFEST_FILE}); build one with "
                             f"`occon-localize data.path=<images> output_dir={root}`")
        try:
            manifest = json.loads(manifest_path.read_text())
        except json.JSONDecodeError as exc:
            raise StoreError(f"{manifest_path} is not valid JSON: {exc}") from exc
        if manifest.get("schema") != SCHEMA_NAME or manifest.get("schema_version") != SCHEMA_VERSION:
            raise StoreError(f"{manifest_path}: schema {manifest.get('schema')} v{manifest.get('schema_version')} "
                             f"is not {SCHEMA_NAME} v{SCHEMA_VERSION}; rebuild the store with this version")
        if not manifest.get("complete") and not allow_incomplete:
            raise StoreError(f"store {root} is incomplete (its run was interrupted); finish it by running "
                             f"occon-localize again with the same settings and resume=true")
        entries: dict[str, StoreEntry] = {}
        for path in [root / INDEX_FILE, *sorted(root.glob(RANK_INDEX_GLOB))]:
            for row in read_index_lines(path)[0]:
                entry = StoreEntry.from_dict(row)
                entries.setdefault(entry.path, entry)
        return cls(root=root, manifest=manifest, entries=entries)

    def __len__(self) -> int:
        return len(self.entries)

    def __contains__(self, path: str) -> bool:
        return path in self.entries

    def mask_file(self, path: str) -> Path:
        """Absolute location of the mask PNG of image ``path`` (for readers such as DALI)."""
        return self.root / mask_relpath(path)

    def load_mask_u8(self, path: str) -> np.ndarray:
        entry = self.entries.get(path)
        if entry is None:
            raise KeyError(f"{path} is not in the store {self.root}")
        if not entry.ok:
            raise KeyError(f"{path} has no mask in the store {self.root} (status: {entry.status})")
        mask = decode_mask_png(self.mask_file(path))
        if mask.shape != (entry.height, entry.width):
            raise StoreError(f"mask {self.mask_file(path)} is {mask.shape[1]}x{mask.shape[0]}, "
                             f"the index says {entry.width}x{entry.height}")
        return mask

    def load_mask(self, path: str) -> np.ndarray:
        """Soft mask of image ``path``: float32 ``H x W`` in [0, 1] at the image's own size."""
        return mask_from_u8(self.load_mask_u8(path))
