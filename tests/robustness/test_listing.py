"""Items 4 and 13: one listing (torchvision ImageFolder's conventions), skips on purpose counted."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from PIL import Image

from occon_plugin.errors import DataError
from occon_plugin.images import IMAGE_EXTENSIONS, list_images

from robustness_helpers import photo


def _save(path: Path, name: str = "coffee") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(photo(name, (16, 12))).save(path)


def _imagefolder(root: Path) -> tuple[list[str], list[int], list[str]]:
    from torchvision.datasets import ImageFolder

    folder = ImageFolder(str(root))
    return ([Path(p).relative_to(root).as_posix() for p, _ in folder.samples], [t for _, t in folder.samples],
            folder.classes)


@pytest.mark.kind("list.imagefolder")
def test_extensions_are_torchvisions():
    from torchvision.datasets.folder import IMG_EXTENSIONS

    assert IMAGE_EXTENSIONS == IMG_EXTENSIONS


@pytest.mark.kind("list.imagefolder")
def test_class_tree_lists_like_imagefolder(tmp_path):
    root = tmp_path / "data"
    for rel in ["dog/b.jpg", "cat/z.png", "cat/sub/a.JPEG", "cat/sub/deeper/c.tif", "cat-2/x.webp", "dog/a.PNG",
                "cat/sub-b/q.bmp", "cat/sub b/r.pgm", "cat/y.ppm"]:
        _save(root / rel)
    images = list_images(root)
    paths, labels, classes = _imagefolder(root)
    assert images.paths == paths and images.labels == labels and images.classes == classes
    assert images.skipped == {}


@pytest.mark.kind("list.skipped")
def test_hidden_non_images_links_and_empty_classes_are_reported(tmp_path):
    root = tmp_path / "data"
    _save(root / "cat" / "a.jpg")
    _save(root / "dog" / "b.jpg")
    _save(root / "dog" / "._b.jpg")            # macOS AppleDouble: ImageFolder would list it and fail
    (root / "dog" / ".DS_Store").write_bytes(b"Bud1")
    _save(root / "cat" / ".ipynb_checkpoints" / "a-checkpoint.jpg")
    Image.fromarray(photo("coffee", (8, 8))).save(root / "cat" / "anim.gif")
    (root / "cat" / "notes.txt").write_text("x")
    os.symlink(root / "nowhere.jpg", root / "dog" / "dangling.jpg")
    os.symlink(root / "cat", root / "cat" / "loop")  # a symbolic-link loop
    (root / "empty").mkdir()
    (root / ".git").mkdir()
    images = list_images(root)
    assert images.paths == ["cat/a.jpg", "dog/b.jpg"] and images.classes == ["cat", "dog"]
    assert images.skipped == {"hidden": [".git/", "cat/.ipynb_checkpoints/", "dog/.DS_Store", "dog/._b.jpg"],
                              "not_image": ["cat/anim.gif", "cat/notes.txt"], "dangling_link": ["dog/dangling.jpg"],
                              "link_loop": ["cat/loop/"], "empty_class": ["empty/"]}
    line = images.skipped_summary()
    assert line.startswith(f"9 entries under {root} not listed on purpose")
    for piece in ("4 hidden", ".gif: 1", "GIF is not read: convert to PNG", "1 dangling symbolic link",
                  "dog/dangling.jpg", "1 class folder without images: empty/", "1 symbolic-link loop"):
        assert piece in line, piece


@pytest.mark.kind("list.skipped")
def test_mixed_folder_lists_exactly_the_image_files(mixed):
    images = list_images(mixed.root)
    assert sorted(images.paths) == sorted(mixed.good + mixed.bad)
    assert images.labels is None  # loose images: unlabelled, everything below listed
    assert {k: sorted(v) for k, v in images.skipped.items()} == {k: sorted(v) for k, v in mixed.skipped.items()}


@pytest.mark.kind("out.inside-input")
@pytest.mark.kind("found.store-as-data")
def test_stores_inside_the_data_are_not_photos(tmp_path, mixed_store):
    import shutil

    root = tmp_path / "data"
    _save(root / "a.jpg")
    _save(root / "b.jpg")
    shutil.copytree(mixed_store, root / "my-store")   # a store written inside the image folder
    images = list_images(root)
    assert images.paths == ["a.jpg", "b.jpg"] and images.skipped == {"store": ["my-store/"]}
    with pytest.raises(DataError, match="is an occon store"):
        list_images(root / "my-store")


@pytest.mark.kind("found.coco-duplicates")
def test_coco_json_listing_one_file_twice_is_refused(tmp_path):
    _save(tmp_path / "images" / "a.jpg")
    ann = {"images": [{"id": 1, "file_name": "a.jpg", "width": 16, "height": 12},
                      {"id": 2, "file_name": "a.jpg", "width": 16, "height": 12}], "annotations": [], "categories": []}
    (tmp_path / "ann").mkdir()
    (tmp_path / "ann" / "x.json").write_text(json.dumps(ann))
    with pytest.raises(DataError, match="a.jpg more than once"):
        list_images(tmp_path / "ann" / "x.json")
