"""Item 2: both pretraining pipelines (torchvision v2, DALI CPU) over the same mixed folder use the
same images, in the same order, with the same object-aware decisions; bad files never reach DALI."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from occon_plugin.augment.dali.datamodule import build_dali_loader, build_dali_source
from occon_plugin.augment.dataset import build_pretrain_dataloader
from occon_plugin.errors import DataError
from occon_plugin.store import mask_relpath

from robustness_helpers import copy_tree

AUG = {"rrc": {"enabled": True, "crop_min_scale": 0.08, "crop_max_scale": 1.0},
       "color_jitter": {"prob": 0.8, "brightness": 0.4, "contrast": 0.4, "saturation": 0.2, "hue": 0.1},
       "grayscale": {"prob": 0.2}, "gaussian_blur": {"prob": 0.5, "sigma_min": 0.1, "sigma_max": 2.0},
       "solarization": {"prob": 0.0}, "equalization": {"prob": 0.0}, "horizontal_flip": {"prob": 0.5},
       "crop_size": 32, "num_crops": 2}
OCCON = {"oa_crop": {"enabled": True}, "bg_mixup": {"enabled": True, "p_mix": 0.6}}


def cfg(root: Path, store: Path | None, missing: str = "error", batch: int = 4):
    occon = None if store is None else {"store": str(store), "missing": missing, **OCCON}
    return OmegaConf.create({"data": {"train_path": str(root), "num_workers": 0}, "optimizer": {"batch_size": batch},
                             "augmentations": [AUG], "occon": occon, "seed": 3, "dali": {"device": "cpu"}})


def torchvision_epoch(loader) -> tuple[list[int], dict]:
    order, info = [], {"oa_crop": [], "mixed": [], "replaced": []}
    for indexes, views, _, batch_info in loader:
        assert all(v.shape[-2:] == (32, 32) for v in views)
        order += indexes.tolist()
        for key in info:
            info[key] += batch_info[key].tolist()
    return order, info


def dali_epoch(loader) -> tuple[list[int], dict]:
    order, info = [], {"oa_crop": [], "mixed": [], "replaced": []}
    for indexes, views, _, batch_info in loader:
        assert all(tuple(v.shape[-2:]) == (32, 32) for v in views)
        order += indexes.tolist()
        for key in info:
            info[key] += batch_info[key].tolist()
    return order, info


@pytest.mark.kind("bad.unreadable")
@pytest.mark.kind("bad.failed-entry")
@pytest.mark.parametrize("with_store", [True, False], ids=["store", "no-store"])
def test_both_pipelines_use_the_same_images_and_decisions(mixed, mixed_store, with_store):
    c = cfg(mixed.root, mixed_store if with_store else None)
    tv_loader = build_pretrain_dataloader(c)
    dataset = tv_loader.dataset
    source, _ = build_dali_source(c)
    listing_order = [p for p in dataset.images.paths if p in set(mixed.good)]
    assert dataset.paths == listing_order  # the 6 bad files dropped, the rest in listing order
    assert [Path(r.image_file).relative_to(mixed.root).as_posix() for r in source.records] == dataset.paths
    assert all(r.width > 0 and r.height > 0 for r in source.records)  # no failed entry reaches DALI
    assert dataset.startup == {**dataset.startup, "listed": 22, "not_listed": 6, "unreadable": 6, "used": 16}
    if with_store:  # failed store entries are the bad files: known from the store, nothing decoded
        assert dataset.startup["checked_by_decoding"] == 0 and dataset.report.failed == sorted(mixed.bad)
    else:
        assert dataset.startup["checked_by_decoding"] == 22
    tv_order, tv_info = torchvision_epoch(tv_loader)
    dali_order, dali_info = dali_epoch(build_dali_loader(c))
    assert len(tv_order) == 16 and tv_order == dali_order  # 4 batches of 4, the same samples in the same order
    assert tv_info == dali_info  # same OA-Crop / BG-Mixup decisions
    if with_store:
        assert any(tv_info["oa_crop"]) and any(any(m) for m in tv_info["mixed"])


@pytest.mark.kind("bad.runtime")
def test_files_breaking_during_training_are_handled_alike(mixed, mixed_store, tmp_path):
    root = copy_tree(mixed.root, tmp_path / "data")
    store = copy_tree(mixed_store, tmp_path / "store")
    c = cfg(root, store)
    tv_loader = build_pretrain_dataloader(c)
    dali_loader = build_dali_loader(c)
    # after the start-up checks: one photo disappears, one mask disappears
    (root / "c_rgb.jpg").unlink()
    (store / mask_relpath("b_rgb.png")).unlink()
    tv_order, tv_info = torchvision_epoch(tv_loader)
    dali_order, dali_info = dali_epoch(dali_loader)
    assert tv_order == dali_order and tv_info["replaced"] == dali_info["replaced"] and any(tv_info["replaced"])
    gone = tv_loader.dataset.paths.index("c_rgb.jpg")
    assert gone not in tv_order  # replaced by the same seeded stand-in in both
    assert tv_loader.dataset.counts["bad_images"] >= 1 and dali_loader.source.counts["bad_images"] >= 1
    b = tv_loader.dataset.paths.index("b_rgb.png")
    for order, info in ((tv_order, tv_info), (dali_order, dali_info)):
        assert b in order and not any(any(info["mixed"][k]) for k, i in enumerate(order) if i == b)  # never mixed without its mask


@pytest.mark.kind("bad.runtime")
def test_dali_names_the_files_when_a_photo_is_damaged_after_the_check(mixed, mixed_store, tmp_path):
    root = copy_tree(mixed.root, tmp_path / "data")
    c = cfg(root, None)
    loader = build_dali_loader(c)
    for name in loader.source.records:
        path = Path(name.image_file)
        if path.suffix == ".jpg" and not name.decode_here:
            path.write_bytes(path.read_bytes()[:200])  # still starts like a JPEG: only the decoder can tell
    with pytest.raises(DataError, match=r"DALI could not decode a sample .*\.jpg.* changed after the start-up check"):
        dali_epoch(loader)


@pytest.mark.kind("quiet.all-bad")
def test_a_folder_of_only_bad_images_stops_before_training(mixed, tmp_path):
    root = tmp_path / "only-bad"
    root.mkdir()
    for name in mixed.bad:
        shutil.copy(mixed.root / name, root / name)
    with pytest.raises(DataError, match=r"none of the 6 images .* can be used: 6 unreadable image\(s\)"):
        build_pretrain_dataloader(cfg(root, None))
    with pytest.raises(DataError, match="none of the 6 images"):
        build_dali_source(cfg(root, None))
