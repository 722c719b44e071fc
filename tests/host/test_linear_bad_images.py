"""occon-linear (the host's LinearModel through the plugin's script): unreadable images in the class
folders are dropped before training, counted and named, as pretraining does.

Found by trying it: a 0-byte JPEG in a class folder passed torchvision's ImageFolder listing and
stopped the run at the training step that drew it (after the sanity check and a first step)."""
from __future__ import annotations

import numpy as np
import pytest
from omegaconf import OmegaConf
from PIL import Image

from occon_plugin.cli.linear import image_folder
from occon_plugin.errors import DataError
from occon_plugin.images import is_listable_file, load_pil_image


def _write(root, rel, image=True):
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    if image:
        Image.fromarray(np.full((12, 16, 3), 70, np.uint8)).save(path)
    return path


def test_unreadable_images_are_dropped_before_training_and_named(tmp_path, capsys):
    root = tmp_path / "train"
    for rel in ("cat/1.png", "cat/2.png", "dog/1.png"):
        _write(root, rel)
    _write(root, "cat/zero.jpg", image=False).write_bytes(b"")
    good = _write(root, "dog/cut.png")
    good.write_bytes(good.read_bytes()[:60])  # a truncated PNG
    cfg = OmegaConf.create({"data": {"train_path": str(root)}})
    folder = image_folder(cfg, "data.train_path", None, loader=load_pil_image, is_valid_file=is_listable_file)
    names = sorted(p.split("/train/")[1] for p, _ in folder.samples)
    assert names == ["cat/1.png", "cat/2.png", "dog/1.png"]
    assert folder.targets == [t for _, t in folder.samples] and folder.imgs == folder.samples
    assert [folder.classes[t] for _, t in sorted(folder.samples)] == ["cat", "cat", "dog"]
    for path, _ in folder.samples:
        load_pil_image(path)  # every kept sample loads
    out = capsys.readouterr().out
    assert "[occon] data.train_path: 2 unreadable image(s) skipped" in out and "cat/zero.jpg" in out, out


def test_a_folder_of_only_unreadable_images_is_one_error(tmp_path):
    root = tmp_path / "train"
    for rel in ("cat/a.jpg", "dog/b.jpg"):
        _write(root, rel, image=False).write_text("not an image")
    cfg = OmegaConf.create({"data": {"train_path": str(root)}})
    with pytest.raises(DataError, match=r"data.train_path=.*none of its 2 images can be read"):
        image_folder(cfg, "data.train_path", None, loader=load_pil_image, is_valid_file=is_listable_file)


def test_a_store_inside_the_class_tree_is_not_a_class(tmp_path, capsys):
    """occon-localize into <train>/store made torchvision's ImageFolder see a third class of mask PNGs;
    the plugin's listing (pretraining, occon-eval-linear) skips stores: occon-linear now lists the same."""
    import json

    from occon_plugin.images.listing import _STORE_SCHEMA

    root = tmp_path / "train"
    for rel in ("cat/1.png", "dog/1.png", "dog/2.png"):
        _write(root, rel)
    _write(root, "store/masks/cat/1.png")  # what occon-localize output_dir=<train>/store leaves
    (root / "store" / "manifest.json").write_text(json.dumps({"schema": _STORE_SCHEMA}))
    cfg = OmegaConf.create({"data": {"train_path": str(root)}})
    folder = image_folder(cfg, "data.train_path", None, loader=load_pil_image, is_valid_file=is_listable_file)
    assert folder.classes == ["cat", "dog"] and folder.class_to_idx == {"cat": 0, "dog": 1}
    assert sorted((p.split("/train/")[1], t) for p, t in folder.samples) == [("cat/1.png", 0), ("dog/1.png", 1),
                                                                             ("dog/2.png", 1)]
    assert "store" in capsys.readouterr().out
