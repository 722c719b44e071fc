import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from occon_plugin.images import BadImageError, image_size, list_images, load_image


def _save(path: Path, w: int = 8, h: int = 6, color=(10, 20, 30), **kw) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (w, h), color).save(path, **kw)


def test_folder_listing_is_sorted_relative_posix_with_classes(tmp_path):
    for rel in ["dog/b.jpg", "cat/z.png", "cat/sub/a.JPEG", "dog/x.webp", "dog/notes.txt"]:
        if rel.endswith(".txt"):
            (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / rel).write_text("not an image")
        else:
            _save(tmp_path / rel)
    images = list_images(tmp_path)
    assert images.root == tmp_path
    # torchvision ImageFolder's order: class by class, each folder's files before its sub-folders'
    assert images.paths == ["cat/z.png", "cat/sub/a.JPEG", "dog/b.jpg", "dog/x.webp"]
    assert images.classes == ["cat", "dog"]
    assert images.labels == [0, 0, 1, 1]
    assert images.skipped == {"not_image": ["dog/notes.txt"]}
    from torchvision.datasets import ImageFolder

    folder = ImageFolder(str(tmp_path))
    assert [Path(p).relative_to(tmp_path).as_posix() for p, _ in folder.samples] == images.paths
    assert [t for _, t in folder.samples] == images.labels and folder.classes == images.classes


def test_flat_folder_has_no_classes(tmp_path):
    _save(tmp_path / "a.png")
    _save(tmp_path / "sub" / "b.png")
    images = list_images(str(tmp_path))
    assert images.paths == ["a.png", "sub/b.png"]
    assert images.labels is None and images.classes is None


def test_missing_and_empty_sources_name_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope"):
        list_images(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="empty"):
        list_images(tmp_path / "empty")


def test_coco_json_listing(tmp_path):
    _save(tmp_path / "images" / "000002.jpg")
    _save(tmp_path / "images" / "000001.jpg")
    ann = {"images": [{"id": 2, "file_name": "000002.jpg", "width": 8, "height": 6},
                      {"id": 1, "file_name": "000001.jpg", "width": 8, "height": 6}],
           "annotations": [], "categories": []}
    (tmp_path / "annotations").mkdir()
    json_path = tmp_path / "annotations" / "instances.json"
    json_path.write_text(json.dumps(ann))
    images = list_images(json_path)
    assert images.root == tmp_path / "images"
    assert images.paths == ["000001.jpg", "000002.jpg"]
    assert images.image_ids == [1, 2]
    other = tmp_path / "elsewhere"
    with pytest.raises(FileNotFoundError, match="elsewhere"):
        list_images(json_path, image_root=other)


def test_coco128_lists_128_images(coco128):
    images = list_images(coco128 / "annotations" / "instances_train2017.json")
    assert len(images) == 128
    assert images.paths[0] == "000000000009.jpg"
    img = load_image(images.root, images.paths[0])
    assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3


def test_load_image_rgb_and_exif_transpose(tmp_path):
    _save(tmp_path / "gray.png", w=5, h=3)
    Image.new("L", (5, 3), 7).save(tmp_path / "gray.png")
    arr = load_image(tmp_path, "gray.png")
    assert arr.shape == (3, 5, 3) and (arr == 7).all()
    # A 5x3 (w x h) image stored with orientation 6 (rotate 90) must come out 3 wide, 5 high.
    img = Image.new("RGB", (5, 3), (1, 2, 3))
    exif = img.getexif()
    exif[274] = 6
    img.save(tmp_path / "rot.jpg", exif=exif.tobytes())
    assert load_image(tmp_path, "rot.jpg").shape == (5, 3, 3)
    assert image_size(tmp_path, "rot.jpg") == (3, 5)


def test_truncated_and_missing_images_raise_bad_image_error(tmp_path):
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(tmp_path / "full.jpg", quality=95)
    data = (tmp_path / "full.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    (tmp_path / "junk.png").write_bytes(b"this is not a png")
    with pytest.raises(BadImageError, match="cut.jpg") as info:
        load_image(tmp_path, "cut.jpg")
    assert info.value.path.endswith("cut.jpg") and "truncated" in info.value.reason
    with pytest.raises(BadImageError, match="junk.png"):
        load_image(tmp_path, "junk.png")
    with pytest.raises(BadImageError, match="not found"):
        load_image(tmp_path, "absent.jpg")
    assert load_image(tmp_path, "full.jpg").shape == (64, 64, 3)
