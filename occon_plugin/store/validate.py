"""Check that a store matches the images a run is about to use."""
from __future__ import annotations

from dataclasses import dataclass, field

from occon_plugin.errors import DataError
from occon_plugin.images import BadImageError, ImageList, image_size
from occon_plugin.store.reader import Store

POLICIES = ("error", "skip", "full_image")
_SHOW = 10


class StoreMismatchError(DataError, RuntimeError):
    """The store does not cover the image list (missing, extra or changed images)."""


@dataclass
class ValidationReport:
    n_images: int
    missing: list[str] = field(default_factory=list)   # listed, not in the store
    extra: list[str] = field(default_factory=list)     # in the store, not listed
    changed: list[tuple[str, tuple[int, int], tuple[int, int]]] = field(default_factory=list)  # path, store wh, image wh
    failed: list[str] = field(default_factory=list)    # in the store with a non-ok status (no mask)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.extra or self.changed)

    @property
    def counts(self) -> dict[str, int]:
        return {"images": self.n_images, "missing": len(self.missing), "extra": len(self.extra),
                "changed": len(self.changed), "failed": len(self.failed)}

    def summary(self) -> str:
        parts = []
        if self.missing:
            parts.append(f"{len(self.missing)} missing (listed but not in the store): {_first(self.missing)}")
        if self.extra:
            parts.append(f"{len(self.extra)} extra (in the store but not listed): {_first(self.extra)}")
        if self.changed:
            shown = [f"{p} (store {sw}x{sh}, image {iw}x{ih})" for p, (sw, sh), (iw, ih) in self.changed]
            parts.append(f"{len(self.changed)} changed (size differs): {_first(shown)}")
        if self.failed:
            parts.append(f"{len(self.failed)} failed at localization (no mask): {_first(self.failed)}")
        return "; ".join(parts) if parts else f"all {self.n_images} images match"


def _first(items: list[str]) -> str:
    more = f", ... (+{len(items) - _SHOW} more)" if len(items) > _SHOW else ""
    return ", ".join(items[:_SHOW]) + more


def validate_store(store: Store, images: ImageList, policy: str = "error",
                   check_sizes: bool = True) -> ValidationReport:
    """Compare ``store`` with ``images``. ``policy="error"`` raises :class:`StoreMismatchError` on any
    missing/extra/changed image; ``"skip"``/``"full_image"`` return the report (the caller then skips
    those images or treats them as one full-image box). ``check_sizes`` reads every image header."""
    if policy not in POLICIES:
        raise ValueError(f"store mismatch policy {policy!r} is not one of {POLICIES}")
    listed = set(images.paths)
    report = ValidationReport(n_images=len(images.paths))
    report.missing = [p for p in images.paths if p not in store.entries]
    report.extra = sorted(p for p in store.entries if p not in listed)
    for path in images.paths:
        entry = store.entries.get(path)
        if entry is None:
            continue
        if not entry.ok:
            report.failed.append(path)
            continue
        if check_sizes:
            try:
                size = image_size(images.root, path)
            except BadImageError:
                size = (-1, -1)  # unreadable now but localized before: the file changed
            if size != (entry.width, entry.height):
                report.changed.append((path, (entry.width, entry.height), size))
    if policy == "error" and not report.ok:
        raise StoreMismatchError(
            f"store {store.root} does not match the images under {images.root}: {report.summary()}. "
            f"Rebuild or extend the store with `occon-localize data.path=<same dataset> output_dir={store.root}` "
            f"(resume=true adds missing images; resume=false rebuilds changed ones), or choose the mismatch "
            f"policy 'skip' or 'full_image' to train anyway.")
    return report
