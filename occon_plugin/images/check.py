"""Check many images at once (threads): which are usable, which are bad and why.

Both pretraining pipelines call :func:`check_images` on the images the store cannot vouch for,
before the first step, so they drop the same files (and the DALI decoder never sees a file the
torchvision path would have replaced). Localization does not need it: it decodes every image
anyway and records the bad ones in the store.
"""
from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence, TypeVar

from occon_plugin.errors import examples as _examples
from occon_plugin.images.loading import BadImageError, ImageInfo, file_fingerprint, inspect_image

T = TypeVar("T")
SHOW = 5


def default_workers() -> int:
    return max(1, min(8, os.cpu_count() or 1))


def parallel_map(fn: Callable[[str], T], items: Sequence[str], workers: int | None = None) -> list[T]:
    """``[fn(x) for x in items]`` on threads (file reads and PIL decoding release the GIL)."""
    workers = default_workers() if workers is None else max(1, int(workers))
    if workers == 1 or len(items) < 16:
        return [fn(x) for x in items]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(fn, items, chunksize=64))


def examples(items: Iterable[str], total: int | None = None, show: int = SHOW) -> str:
    """``"a, b, c, ... (+7 more)"`` (:func:`occon_plugin.errors.examples` with this module's ``SHOW``)."""
    return _examples(items, total, show)


@dataclass
class CheckReport:
    """``info``: usable images (header facts); ``bad``: path -> reason."""

    info: dict[str, ImageInfo] = field(default_factory=dict)
    bad: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0

    def bad_summary(self, root: Path | str) -> str:
        shown = [f"{p} ({r})" for p, r in list(self.bad.items())[:SHOW]]
        return (f"{len(self.bad)} unreadable image(s) under {root} skipped: "
                + examples(shown, len(self.bad)))


def check_images(root: str | Path, paths: Sequence[str], decode: bool = True,
                 workers: int | None = None) -> CheckReport:
    """Inspect every ``root/path`` (:func:`~occon_plugin.images.loading.inspect_image`);
    ``decode=True`` also proves each is decodable by the shared rule."""
    start = time.perf_counter()

    def one(rel: str):
        try:
            return inspect_image(root, rel, decode=decode)
        except BadImageError as err:
            return err

    report = CheckReport()
    for rel, result in zip(paths, parallel_map(one, list(paths), workers)):
        if isinstance(result, BadImageError):
            report.bad[rel] = result.reason
        else:
            report.info[rel] = result
    report.seconds = time.perf_counter() - start
    return report


def fingerprints(root: str | Path, paths: Sequence[str], workers: int | None = None) -> dict[str, str | None]:
    """``path -> file_fingerprint`` (None where the file cannot be read)."""
    def one(rel: str):
        try:
            return file_fingerprint(Path(root) / rel)
        except OSError:
            return None

    return dict(zip(paths, parallel_map(one, list(paths), workers)))
