"""Store: read a finished store (index, manifest, masks)."""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from occon_plugin.errors import DataError
from occon_plugin.store.format import (INDEX_FILE, MANIFEST_FILE, RANK_INDEX_GLOB, READABLE_VERSIONS, SCHEMA_NAME,
                                       StoreEntry, decode_mask_png, mask_from_u8, mask_relpath, parse_index)

_SHOW = 5


class StoreError(DataError, RuntimeError):
    """A store folder that cannot be used as it is."""


class UnverifiableStoreError(StoreError):
    """A schema-v1 store (no image fingerprints) used where the images must be verified."""


class NoMaskError(StoreError, KeyError):
    """The store has no mask for this image (no entry, or its localization failed)."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


def _holds_images(root: Path, look_at: int = 200) -> bool:
    """Whether ``root`` or one of its sub-folders (ImageFolder classes) directly holds image files: a
    quick look at up to ``look_at`` entries, not a listing."""
    from itertools import islice

    from occon_plugin.images import IMAGE_EXTENSIONS

    if not root.is_dir():
        return False
    for path in islice(root.iterdir(), look_at):
        if path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS:
            return True
        if path.is_dir() and any(p.suffix.lower() in IMAGE_EXTENSIONS for p in islice(path.iterdir(), look_at)):
            return True
    return False


def store_identity(store_dir: str | Path) -> Optional[dict]:
    """What a store's masks are made from and hold, to tell a store rebuilt in place from the one a run
    started with: ``{"model_sha256", "settings_sha256", "index_sha256"}`` (sha256 of the manifest's
    settings as sorted JSON, and of ``index.jsonl``'s bytes), or None where there is no readable store."""
    root = Path(store_dir).expanduser()
    try:
        manifest = json.loads((root / MANIFEST_FILE).read_text())
        index = (root / INDEX_FILE).read_bytes()
    except (OSError, ValueError):
        return None
    if not isinstance(manifest, dict):
        return None
    settings = json.dumps(manifest.get("settings"), sort_keys=True, default=str).encode()
    return {"model_sha256": manifest.get("model_sha256"), "settings_sha256": hashlib.sha256(settings).hexdigest(),
            "index_sha256": hashlib.sha256(index).hexdigest()}


@dataclass
class Store:
    root: Path
    manifest: dict
    entries: dict[str, StoreEntry]
    problems: list[str] = field(default_factory=list)  # index lines that are not valid entries

    @classmethod
    def open(cls, store_dir: str | Path, allow_incomplete: bool = False) -> "Store":
        """Open a store; raises :class:`StoreError` (naming the file) for a folder that is not a
        store, an incomplete store (unless ``allow_incomplete``), or a damaged index: lines that
        are not valid entries, or fewer/more entries than the finished run wrote."""
        root = Path(store_dir).expanduser()
        manifest_path = root / MANIFEST_FILE
        if not manifest_path.is_file():
            if _holds_images(root):  # an image folder given as the store: a store must be another folder
                raise StoreError(f"{root} holds images, not a mask store (no {MANIFEST_FILE}): build one with "
                                 f"`occon-localize data.path={root} output_dir=<a new folder>` and point the store "
                                 f"setting at that folder")
            raise StoreError(f"{root} is not a mask store (no {MANIFEST_FILE}); build one with "
                             f"`occon-localize data.path=<images> output_dir={root}`")
        try:
            manifest = json.loads(manifest_path.read_text())
            if not isinstance(manifest, dict):
                raise ValueError("not a JSON object")
        except (ValueError, OSError) as exc:
            raise StoreError(f"{manifest_path} is not valid JSON ({exc}); rebuild the store with occon-localize "
                             f"(resume=false)") from exc
        if manifest.get("schema") != SCHEMA_NAME or manifest.get("schema_version") not in READABLE_VERSIONS:
            raise StoreError(f"{manifest_path}: schema {manifest.get('schema')} v{manifest.get('schema_version')} "
                             f"is not {SCHEMA_NAME} v{'/'.join(map(str, READABLE_VERSIONS))}; rebuild the store "
                             f"with this version")
        if not manifest.get("complete") and not allow_incomplete:
            raise StoreError(f"store {root} is incomplete (its run was interrupted); finish it by running "
                             f"occon-localize again with the same settings and resume=true")
        entries: dict[str, StoreEntry] = {}
        problems: list[str] = []
        for path in [root / INDEX_FILE, *sorted(root.glob(RANK_INDEX_GLOB))]:
            rows, bad = parse_index(path)
            problems += bad
            for entry in rows:
                entries[entry.path] = entry  # a later line of the same image supersedes (a retried bad image)
        store = cls(root=root, manifest=manifest, entries=entries, problems=problems)
        if manifest.get("complete"):
            written = (manifest.get("counts") or {}).get("written")
            if problems or (written is not None and written != len(entries)):
                more = f", ... (+{len(problems) - _SHOW})" if len(problems) > _SHOW else ""
                raise StoreError(
                    f"store {root} is damaged: {root / INDEX_FILE} holds {len(entries)} valid entries but its "
                    f"finished run wrote {written}"
                    + (f" ({'; '.join(problems[:_SHOW])}{more})" if problems else "")
                    + ". Repair it with `occon-localize data.path=<same images> output_dir=" + str(root)
                    + " resume=true` (recomputes only the lost entries) or rebuild it")
        return store

    @property
    def schema_version(self) -> int:
        return int(self.manifest.get("schema_version", 0))

    def require_fingerprints(self, allow_v1: bool, key: str, images=None) -> str | None:
        """The rule for a store written before entries recorded their image's fingerprint (schema v1),
        shared by every reader that pairs masks with image files (both pretraining pipelines, the host's
        own script, evaluation): refused unless the user allows it explicitly with ``key`` (e.g.
        ``occon.allow_v1_store``), because a photo replaced by another of the same size would silently
        get the other photo's mask. Raises :class:`UnverifiableStoreError` (the command that rebuilds
        it named; ``images``: the image folder, for that command). Returns the one line to print when
        allowed, None for a verifiable store."""
        if self.schema_version != 1:
            return None
        if not allow_v1:
            data = images if images is not None else "<the same images>"
            raise UnverifiableStoreError(
                f"store {self.root} was written before stores recorded image fingerprints (schema v1): a photo "
                f"replaced by another of the same size since would be used with the other photo's mask. Rebuild "
                f"it: `occon-localize data.path={data} output_dir={self.root} resume=false` (or into a new "
                f"output_dir), or set {key}=true to use it with image sizes checked only")
        return (f"store {self.root} is schema v1 (no image fingerprints; {key}=true): images are checked by size "
                f"only, a replaced photo of the same size is not detected")

    def __len__(self) -> int:
        return len(self.entries)

    def __contains__(self, path: str) -> bool:
        return path in self.entries

    def mask_file(self, path: str) -> Path:
        """Absolute location of the mask PNG of image ``path`` (for readers such as DALI)."""
        return self.root / mask_relpath(path)

    def load_mask_u8(self, path: str) -> np.ndarray:
        """The stored 8-bit mask of ``path`` (``H x W`` uint8). Raises :class:`StoreError` naming the
        mask file when it is missing, unreadable or not the size the index records."""
        entry = self.entries.get(path)
        if entry is None:
            raise NoMaskError(f"{path} is not in the store {self.root}")
        if not entry.ok:
            raise NoMaskError(f"{path} has no mask in the store {self.root} (status: {entry.status})")
        mask_file = self.mask_file(path)
        try:
            mask = decode_mask_png(mask_file)
        except (OSError, ValueError) as exc:
            raise StoreError(f"cannot read the mask {mask_file} of {path} ({exc}); the store is damaged: run "
                             f"occon-localize with the same data.path and output_dir={self.root} again (it redoes "
                             f"the damaged entries)") from exc
        if mask.shape != (entry.height, entry.width):
            raise StoreError(f"mask {mask_file} is {mask.shape[1]}x{mask.shape[0]}, "
                             f"the index says {entry.width}x{entry.height}")
        return mask

    def load_mask(self, path: str) -> np.ndarray:
        """Soft mask of image ``path``: float32 ``H x W`` in [0, 1] at the image's own size."""
        return mask_from_u8(self.load_mask_u8(path))
