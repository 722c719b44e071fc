"""Check, before the first training step, that a store matches the images a run is about to use.

Per listed image the validator finds (and names) every fault a sample would otherwise hit at
step N, in one pass:

* **missing** - listed, no entry in the store;
* **changed** - the image file is not the one the entry was computed from (fingerprint differs:
  swapped names, a replaced photo of the same size, another folder with the same file names), or
  for an entry without a fingerprint, its size differs; or the file cannot be read any more;
* **damaged** - the entry's boxes / background rectangle are NaN, inverted, empty or outside the
  image, or (``check_masks``) its mask PNG is missing, truncated, corrupt or of the wrong size;
* **failed** - the image was unreadable at localization (no mask): a bad image, skipped and counted;
* **extra** - in the store, not listed (informational: training on a subset of a store is fine).

``policy`` (``occon.missing``): ``"error"`` raises :class:`StoreMismatchError` naming how many and
which files (first 10) and how to fix it; ``"skip"`` / ``"full_image"`` return the report and the
caller drops those images or uses them without store information (counted).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from occon_plugin.errors import DataError, examples
from occon_plugin.images import BadImageError, ImageList, fingerprints, image_size
from occon_plugin.images.check import parallel_map
from occon_plugin.store.format import mask_png_problem
from occon_plugin.store.reader import Store

POLICIES = ("error", "skip", "full_image")
_SHOW = 10


class StoreMismatchError(DataError, RuntimeError):
    """The store does not cover the image list (missing, changed or damaged entries)."""


@dataclass
class ValidationReport:
    n_images: int
    missing: list[str] = field(default_factory=list)   # listed, not in the store
    extra: list[str] = field(default_factory=list)     # in the store, not listed
    changed: list[tuple[str, tuple[int, int], tuple[int, int]]] = field(default_factory=list)  # path, store wh, image wh
    failed: list[str] = field(default_factory=list)    # in the store with a non-ok status (no mask)
    damaged: list[tuple[str, str]] = field(default_factory=list)  # path, what is wrong with its entry/mask
    replaced: list[str] = field(default_factory=list)  # same size, other file content (fingerprint differs)
    gone: list[str] = field(default_factory=list)      # localized before, cannot be read now (deleted, moved, root)
    unverified: int = 0                                # entries without a fingerprint (sizes checked only)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.extra or self.changed or self.damaged or self.replaced or self.gone)

    @property
    def unusable(self) -> set[str]:
        """Images whose store entry must not be used (missing, changed, replaced, gone, damaged)."""
        return (set(self.missing) | {p for p, _, _ in self.changed} | set(self.replaced) | set(self.gone)
                | {p for p, _ in self.damaged})

    @property
    def counts(self) -> dict[str, int]:
        return {"images": self.n_images, "missing": len(self.missing), "extra": len(self.extra),
                "changed": len(self.changed), "failed": len(self.failed), "damaged": len(self.damaged),
                "replaced": len(self.replaced), "gone": len(self.gone)}

    def summary(self) -> str:
        parts = []
        if self.missing:
            parts.append(f"{len(self.missing)} missing (listed but not in the store): {_first(self.missing)}")
        if self.extra:
            parts.append(f"{len(self.extra)} extra (in the store but not listed): {_first(self.extra)}")
        if self.changed:
            shown = [f"{p} (store {sw}x{sh}, image {iw}x{ih})" if iw >= 0 else f"{p} (unreadable now)"
                     for p, (sw, sh), (iw, ih) in self.changed]
            parts.append(f"{len(self.changed)} changed (size differs): {_first(shown)}")
        if self.replaced:
            parts.append(f"{len(self.replaced)} replaced (same name, other file content than the one localized: "
                         f"swapped or replaced photos, or another folder): {_first(self.replaced)}")
        if self.gone:
            parts.append(f"{len(self.gone)} localized but not found or unreadable now (deleted or moved since, or "
                         f"another data folder / data.image_root): {_first(self.gone)}")
        if self.damaged:
            parts.append(f"{len(self.damaged)} damaged store entries: {_first([f'{p} ({r})' for p, r in self.damaged])}")
        if self.failed:
            parts.append(f"{len(self.failed)} failed at localization (no mask): {_first(self.failed)}")
        return "; ".join(parts) if parts else f"all {self.n_images} images match"


def _first(items: list[str]) -> str:
    return examples(items, show=_SHOW)


def validate_store(store: Store, images: ImageList, policy: str = "error", check_sizes: bool = True,
                   check_masks: bool = True, workers: int | None = None) -> ValidationReport:
    """Compare ``store`` with ``images`` (see the module doc). ``check_sizes`` verifies every image
    against its entry (fingerprint, or header size for entries without one); ``check_masks`` reads
    every mask PNG's chunks (no inflating). Raises :class:`StoreMismatchError` under
    ``policy="error"`` when anything is missing, changed, replaced or damaged."""
    if policy not in POLICIES:
        raise ValueError(f"store mismatch policy {policy!r} is not one of {POLICIES}")
    listed = set(images.paths)
    report = ValidationReport(n_images=len(images.paths))
    report.missing = [p for p in images.paths if p not in store.entries]
    report.extra = sorted(p for p in store.entries if p not in listed)
    present = [p for p in images.paths if p in store.entries]
    report.failed = [p for p in present if not store.entries[p].ok]
    usable = [p for p in present if store.entries[p].ok]
    for path in usable:
        problem = store.entries[path].problem()
        if problem:
            report.damaged.append((path, problem))
    if check_sizes:
        with_fp = [p for p in usable if store.entries[p].fingerprint]
        current = fingerprints(images.root, with_fp, workers)
        report.gone = [p for p in with_fp if current[p] is None]  # cannot be read: not "another photo"
        report.replaced = [p for p in with_fp if current[p] is not None and current[p] != store.entries[p].fingerprint]
        without = [p for p in usable if not store.entries[p].fingerprint]
        report.unverified = len(without)

        def size_of(rel: str) -> tuple[int, int]:
            try:
                return image_size(images.root, rel)
            except BadImageError:
                return (-1, -1)  # unreadable now but localized before: the file changed

        for path, size in zip(without, parallel_map(size_of, without, workers)):
            entry = store.entries[path]
            if size != (entry.width, entry.height):
                report.changed.append((path, (entry.width, entry.height), size))
    if check_masks:
        bad_entries = {p for p, _ in report.damaged}
        todo = [p for p in usable if p not in bad_entries]

        def mask_problem(rel: str) -> str | None:
            entry = store.entries[rel]
            return mask_png_problem(store.mask_file(rel), entry.width, entry.height)

        for path, problem in zip(todo, parallel_map(mask_problem, todo, workers)):
            if problem:
                report.damaged.append((path, problem))
    if policy == "error" and report.unusable:  # extra entries alone (a subset of the store) are fine
        data = (f"data.path=<the COCO json> data.image_root={images.root}" if images.image_ids is not None
                else f"data.path={images.root}")
        raise StoreMismatchError(
            f"store {store.root} does not match the images under {images.root}: {report.summary()}. "
            f"Repair it with `occon-localize {data} output_dir={store.root}` (it adds the missing "
            f"images and redoes the damaged entries; changed or replaced photos need resume=false, which rebuilds "
            f"the store), or choose the mismatch "
            f"policy occon.missing=skip (drop those images) or full_image (train them without object-aware "
            f"augmentation) to train anyway.")
    return report
