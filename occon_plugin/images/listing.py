"""List a dataset as relative POSIX paths: an image folder (torchvision ``ImageFolder`` conventions)
or a COCO json.

Folder rules (one listing for localization, both pretraining pipelines, evaluation and features):

* **Extensions**: torchvision's ``IMG_EXTENSIONS`` (``.jpg .jpeg .png .ppm .bmp .pgm .tif .tiff
  .webp``), case-insensitive, as ``ImageFolder``. Other files (``.gif``, ``.txt``, ...) are not
  listed; they are counted per extension and reported (a GIF must be converted to be used).
* **Classes**: when every image sits in a sub-folder, each top-level folder is a class (sorted,
  index = position), as ``ImageFolder``; with images directly in the folder the dataset is
  unlabelled and every image below it is listed. Class folders without images are reported.
* **Order**: ``ImageFolder``'s: class by class, each one's ``sorted(os.walk(..., followlinks=True))``
  and the file names of each folder sorted; so index ``i`` is ``ImageFolder``'s sample ``i``.
* **Skipped on purpose, counted and reported** (where ``ImageFolder`` differs, it is named):
  hidden files and folders (``.DS_Store``, ``._photo.jpg``, ``.ipynb_checkpoints/``: ``ImageFolder``
  would list a hidden ``*.jpg`` and fail on it), dangling symbolic links (it would list them and fail),
  folders that are an occon store (their masks are not photos: a store written inside the image
  folder never becomes input) and symbolic-link loops.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from occon_plugin.errors import DataError

# torchvision.datasets.folder.IMG_EXTENSIONS (tests/robustness checks they stay equal).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
_STORE_SCHEMA = "occon-store"  # occon_plugin.store.format.SCHEMA_NAME (no import: the store imports us)

# Why a file or folder was not listed: kind -> how the report names it.
SKIP_KINDS = {
    "hidden": "hidden (name starts with '.')",
    "not_image": "not an ImageFolder image extension",
    "dangling_link": "dangling symbolic link",
    "store": "occon store folder (its masks are not photos)",
    "link_loop": "symbolic-link loop",
    "empty_class": "class folder without images",
}
_SHOW = 3


class DatasetNotFoundError(DataError, FileNotFoundError):
    """The dataset path does not exist or holds no image."""


class DatasetError(DataError, ValueError):
    """A dataset path that is not an image folder or a readable COCO json."""


@dataclass
class ImageList:
    """Images of one dataset: ``root / paths[i]`` is image ``i``.

    ``labels``/``classes`` are set for a class-per-sub-folder layout (ImageFolder style);
    ``image_ids`` is set for a COCO json (the COCO image id of ``paths[i]``); ``skipped`` maps a
    :data:`SKIP_KINDS` key to the relative paths not listed for that reason.
    """

    root: Path
    paths: list[str]
    labels: list[int] | None = None
    classes: list[str] | None = None
    image_ids: list[int] | None = None
    skipped: dict[str, list[str]] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.paths)

    def __iter__(self):
        return iter(self.paths)

    def abspath(self, rel: str) -> Path:
        return self.root / rel

    @property
    def n_skipped(self) -> int:
        return sum(len(v) for v in self.skipped.values())

    def skipped_summary(self) -> str | None:
        """One line naming how many entries were not listed, why, and the first few of each kind;
        None when nothing was skipped."""
        if not self.n_skipped:
            return None
        parts = []
        for kind, items in self.skipped.items():
            if not items:
                continue
            shown = ", ".join(items[:_SHOW]) + (f", ... (+{len(items) - _SHOW})" if len(items) > _SHOW else "")
            extra = ""
            if kind == "not_image":
                exts: dict[str, int] = {}
                for p in items:
                    ext = os.path.splitext(p)[1].lower() or "(none)"
                    exts[ext] = exts.get(ext, 0) + 1
                extra = " [" + ", ".join(f"{e}: {n}" for e, n in sorted(exts.items())) + "]"
                if ".gif" in exts:
                    extra += " (GIF is not read: convert to PNG to use it)"
            parts.append(f"{len(items)} {SKIP_KINDS.get(kind, kind)}{extra}: {shown}")
        return f"{self.n_skipped} entries under {self.root} not listed on purpose: " + "; ".join(parts)


def list_images(source: str | Path, image_root: str | Path | None = None) -> ImageList:
    """List the images of ``source``: a folder (ImageFolder conventions, see the module doc) or a
    COCO ``*.json`` (images in ``image_root``, default ``<json dir>/../images``).

    Raises :class:`DatasetNotFoundError` / :class:`DatasetError` (both :class:`DataError`) naming the path.
    """
    source = Path(source).expanduser()
    if not source.exists():
        raise DatasetNotFoundError(f"dataset path {source} does not exist: pass an image folder or a COCO json "
                                   f"(data.path=... / data.train_path=...)")
    if source.is_file():
        if source.suffix.lower() != ".json":
            raise DatasetError(f"dataset path {source} is a file but not a COCO .json: pass the folder that "
                               f"holds the images (or a COCO annotation json)")
        return _list_coco(source, image_root)
    if image_root is not None:
        raise DatasetError(f"image_root={image_root} only applies to a COCO json; {source} is a folder")
    return _list_folder(source)


def is_listable_file(path: str | Path) -> bool:
    """``is_valid_file=`` for torchvision's ``ImageFolder``: the files this module lists (an image
    extension, not hidden, not a dangling link), so an ``ImageFolder`` skips what the plugin skips."""
    name = os.path.basename(str(path))
    return not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS) and os.path.exists(path)


def is_store_dir(path: Path) -> bool:
    """A folder holding an occon store's ``manifest.json``."""
    manifest = path / "manifest.json"
    if not manifest.is_file():
        return False
    try:
        return json.loads(manifest.read_text()).get("schema") == _STORE_SCHEMA
    except (OSError, ValueError, AttributeError):
        return False


def _walk(top: Path, root: Path, skipped: dict[str, list[str]], seen: set[str]) -> list[str]:
    """Image paths under ``top`` (relative to ``root``) in ``sorted(os.walk(top))`` order."""
    found: list[tuple[str, list[str]]] = []
    for dirpath, dirnames, filenames in os.walk(top, followlinks=True):
        keep = []
        for d in dirnames:
            full = Path(dirpath) / d
            rel = full.relative_to(root).as_posix()
            if d.startswith("."):
                skipped["hidden"].append(rel + "/")
            elif is_store_dir(full):
                skipped["store"].append(rel + "/")
            elif os.path.realpath(full) in seen:
                skipped["link_loop"].append(rel + "/")
            else:
                seen.add(os.path.realpath(full))
                keep.append(d)
        dirnames[:] = keep
        found.append((dirpath, filenames))
    paths = []
    for dirpath, filenames in sorted(found):
        for name in sorted(filenames):
            full = Path(dirpath) / name
            rel = full.relative_to(root).as_posix()
            if name.startswith("."):
                skipped["hidden"].append(rel)
            elif not name.lower().endswith(IMAGE_EXTENSIONS):
                skipped["not_image"].append(rel)
            elif not full.exists():  # a symbolic link to nothing
                skipped["dangling_link"].append(rel)
            else:
                paths.append(rel)
    return paths


def _list_folder(root: Path) -> ImageList:
    if is_store_dir(root):
        raise DatasetError(f"{root} is an occon store (it holds an occon manifest.json), not an image folder: "
                           f"pass the folder of photos it was made from")
    skipped: dict[str, list[str]] = {k: [] for k in SKIP_KINDS}
    seen = {os.path.realpath(root)}
    top_dirs, loose = [], False
    for entry in sorted(os.scandir(root), key=lambda e: e.name):
        if entry.is_dir():
            if not entry.name.startswith(".") and not is_store_dir(Path(entry.path)):
                top_dirs.append(entry.name)
        elif (not entry.name.startswith(".") and entry.name.lower().endswith(IMAGE_EXTENSIONS)
              and os.path.exists(entry.path)):
            loose = True
    if loose:  # images directly in the folder: unlabelled, list everything below it
        paths, labels, classes = _walk(root, root, skipped, seen), None, None
    else:
        paths, labels, classes = [], [], []
        # ImageFolder: the top-level files are not samples; report the ones we do not list
        for entry in sorted(os.scandir(root), key=lambda e: e.name):
            if not entry.is_dir():
                kind = "hidden" if entry.name.startswith(".") else (
                    "not_image" if not entry.name.lower().endswith(IMAGE_EXTENSIONS) else "dangling_link")
                skipped[kind].append(entry.name)
            elif entry.name.startswith("."):
                skipped["hidden"].append(entry.name + "/")
            elif is_store_dir(Path(entry.path)):
                skipped["store"].append(entry.name + "/")
        for name in top_dirs:
            seen.add(os.path.realpath(root / name))
            found = _walk(root / name, root, skipped, seen)
            if not found:
                skipped["empty_class"].append(name + "/")
                continue
            labels += [len(classes)] * len(found)
            classes.append(name)
            paths += found
    skipped = {k: v for k, v in skipped.items() if v}
    if not paths:
        raise DatasetNotFoundError(
            f"no images ({', '.join(IMAGE_EXTENSIONS)}) found under {root}"
            + (f"; {ImageList(root, [], skipped=skipped).skipped_summary()}" if skipped else ""))
    return ImageList(root=root, paths=paths, labels=labels, classes=classes, skipped=skipped)


def _list_coco(json_path: Path, image_root: str | Path | None) -> ImageList:
    from pycocotools.coco import COCO

    root = Path(image_root).expanduser() if image_root is not None else json_path.parent.parent / "images"
    if not root.is_dir():
        raise DatasetNotFoundError(f"image folder {root} for COCO json {json_path} does not exist: "
                                   f"pass data.image_root=<folder holding the json's file_names> (image_root= for occon-eval-localization)")
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
            coco = COCO(str(json_path))
        pairs = sorted((Path(img["file_name"]).as_posix(), int(img["id"])) for img in coco.dataset.get("images", []))
    except Exception as exc:  # json syntax errors, missing keys, wrong types
        raise DatasetError(f"cannot read COCO json {json_path}: {type(exc).__name__}: {exc}") from exc
    if not pairs:
        raise DatasetError(f"COCO json {json_path} lists no images")
    names = [p for p, _ in pairs]
    dupes = sorted(p for p, n in Counter(names).items() if n > 1)
    if dupes:
        raise DatasetError(f"COCO json {json_path} lists the file_name {dupes[0]} more than once "
                           f"({len(dupes)} such names): give each image one entry")
    return ImageList(root=root, paths=names, image_ids=[i for _, i in pairs])
