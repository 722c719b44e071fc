"""List a dataset as sorted relative POSIX paths: an image folder or a COCO json."""
from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass
from pathlib import Path

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


@dataclass
class ImageList:
    """Images of one dataset: ``root / paths[i]`` is image ``i``.

    ``labels``/``classes`` are set for a class-per-sub-folder layout (ImageFolder style);
    ``image_ids`` is set for a COCO json (the COCO image id of ``paths[i]``).
    """

    root: Path
    paths: list[str]
    labels: list[int] | None = None
    classes: list[str] | None = None
    image_ids: list[int] | None = None

    def __len__(self) -> int:
        return len(self.paths)

    def __iter__(self):
        return iter(self.paths)

    def abspath(self, rel: str) -> Path:
        return self.root / rel


def list_images(source: str | Path, image_root: str | Path | None = None) -> ImageList:
    """List the images of ``source``: a folder (searched recursively) or a COCO ``*.json``.

    For a COCO json the images live in ``image_root`` (default ``<json dir>/../images``).
    """
    source = Path(source).expanduser()
    if not source.exists():
        raise FileNotFoundError(f"dataset path {source} does not exist: pass an image folder or a COCO json "
                                f"(data.path=...)")
    if source.is_file():
        if source.suffix.lower() != ".json":
            raise ValueError(f"dataset path {source} is a file but not a COCO .json: pass an image folder "
                             f"or a COCO annotation json")
        return _list_coco(source, image_root)
    if image_root is not None:
        raise ValueError(f"image_root={image_root} only applies to a COCO json; {source} is a folder")
    return _list_folder(source)


def _list_folder(root: Path) -> ImageList:
    paths = sorted(p.relative_to(root).as_posix() for p in root.rglob("*")
                   if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
    if not paths:
        raise FileNotFoundError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) found under {root}")
    # Class = first sub-folder, only when every image sits in one (ImageFolder layout).
    if all("/" in p for p in paths):
        names = [p.split("/", 1)[0] for p in paths]
        classes = sorted(set(names))
        index = {c: i for i, c in enumerate(classes)}
        return ImageList(root=root, paths=paths, labels=[index[n] for n in names], classes=classes)
    return ImageList(root=root, paths=paths)


def _list_coco(json_path: Path, image_root: str | Path | None) -> ImageList:
    from pycocotools.coco import COCO

    root = Path(image_root).expanduser() if image_root is not None else json_path.parent.parent / "images"
    if not root.is_dir():
        raise FileNotFoundError(f"image folder {root} for COCO json {json_path} does not exist: "
                                f"pass image_root=<folder holding the json's file_names>")
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
            coco = COCO(str(json_path))
    except Exception as exc:  # json syntax errors, missing keys
        raise ValueError(f"cannot read COCO json {json_path}: {exc}") from exc
    pairs = sorted((Path(img["file_name"]).as_posix(), int(img["id"])) for img in coco.dataset.get("images", []))
    if not pairs:
        raise ValueError(f"COCO json {json_path} lists no images")
    return ImageList(root=root, paths=[p for p, _ in pairs], image_ids=[i for _, i in pairs])
