"""OcconPretrainDataset / build_pretrain_dataloader: store pairing, bad images, batches, seeding."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image
from torchvision.transforms import v2

from occon_plugin.augment.dataset import NO_LABEL_TARGET
from occon_plugin.augment.config import parse_occon_config
from occon_plugin.augment.dataset import (OcconPretrainDataset, SeededRandomSampler, build_pretrain_dataloader,
                                          build_view_transforms)
from occon_plugin.augment.semantics import choose_partner, plan_sample, sample_seed
from occon_plugin.augment.torchvision_pipeline import seeded_global_rngs
from occon_plugin.store import StoreEntry, StoreMismatchError, StoreWriter, mask_to_u8

IDENTITY = v2.Compose([v2.PILToTensor(), v2.ToDtype(torch.float32)])
AUG = [{"rrc": {"enabled": True, "crop_min_scale": 0.08, "crop_max_scale": 1.0},
        "color_jitter": {"prob": 0.8, "brightness": 0.4, "contrast": 0.4, "saturation": 0.2, "hue": 0.1},
        "grayscale": {"prob": 0.2}, "gaussian_blur": {"prob": 0.5, "sigma_min": 0.1, "sigma_max": 2.0},
        "solarization": {"prob": 0.0}, "equalization": {"prob": 0.0}, "horizontal_flip": {"prob": 0.5},
        "crop_size": 32, "num_crops": 2}]


def _image(seed: int, height: int = 40, width: int = 48) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def _folder(root: Path, names: list[str]) -> dict[str, np.ndarray]:
    images = {}
    for i, name in enumerate(names):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        images[name] = _image(i)
        Image.fromarray(images[name]).save(root / name)  # PNG: lossless, pixels compare exactly
    return images


def _store(out: Path, entries: list[tuple[StoreEntry, np.ndarray | None]]) -> Path:
    writer = StoreWriter(out, settings={"test": True}, model_hash="test", resume=False)
    for entry, mask in entries:
        writer.write(entry, None if mask is None else mask_to_u8(mask))
    writer.close(listed=len(entries))
    return out


def _mask(height: int = 40, width: int = 48) -> np.ndarray:
    mask = np.zeros((height, width), np.float32)
    mask[10:30, 12:36] = 1.0
    return mask


@pytest.fixture()
def two_image_store(tmp_path):
    """``a.png`` (one box, mask, no background) and ``b.png`` (no box, background rectangle)."""
    data = tmp_path / "data"
    images = _folder(data, ["a.png", "b.png"])
    store = _store(tmp_path / "store", [
        (StoreEntry("a.png", 48, 40, boxes=[[0.25, 0.25, 0.75, 0.75]], bg_rect=None), _mask()),
        (StoreEntry("b.png", 48, 40, boxes=[], bg_rect=[0, 0, 5, 3]), np.zeros((40, 48), np.float32)),
    ])
    return data, store, images


def test_disabled_occon_is_exactly_the_host_baseline(tmp_path):
    data = tmp_path / "data"
    images = _folder(data, ["cat/x.png", "dog/y.png", "dog/z.png"])
    transforms = build_view_transforms(AUG)
    ds = OcconPretrainDataset(data, None, transforms, seed=3)
    for index in range(len(ds)):
        got_index, views, target, info = ds[index]
        plan = plan_sample(sample_seed(3, index), ds.cfg, 2, 48, 40)
        with seeded_global_rngs(plan.transform_seed):
            pil = Image.fromarray(images[ds.paths[index]])
            expected = [t(pil) for t in transforms]
        assert got_index == index and target == (0 if ds.paths[index].startswith("cat") else 1)
        for a, b in zip(views, expected):
            assert torch.equal(a, b)
        assert not info["oa_crop"] and not info["mixed"].any() and not info["no_entry"]


def test_oa_crop_and_bg_mixup_use_the_store_and_the_partner_background(two_image_store):
    data, store, images = two_image_store
    occon = {"store": str(store), "oa_crop": {"enabled": True}, "bg_mixup": {"enabled": True, "p_mix": 1.0}}
    ds = OcconPretrainDataset(data, occon, [IDENTITY, IDENTITY], seed=0)
    assert ds.bg_candidates.tolist() == [1]
    index, views, target, info = ds[0]  # a.png: crop x 12..36, y 10..30; partner must be b.png
    assert index == 0 and target == NO_LABEL_TARGET
    assert bool(info["oa_crop"]) and info["mixed"].tolist() == [True, True]
    crop = images["a.png"][10:30, 12:36]
    mask = _mask()[10:30, 12:36]
    patch = images["b.png"][0:3, 0:5]
    tiled = np.tile(patch, (7, 5, 1))[:20, :24]
    for view in views:
        got = view.permute(1, 2, 0).numpy()
        np.testing.assert_array_equal(got[mask == 1], crop[mask == 1])
        np.testing.assert_array_equal(got[mask == 0], tiled[mask == 0])
    # b.png has no box (full image) and no OTHER sample with a background: drawn but left unmixed
    index, views, _, info = ds[1]
    assert not info["oa_crop"] and not info["mixed"].any() and info["mix_skipped"].all()
    np.testing.assert_array_equal(views[0].permute(1, 2, 0).numpy(), images["b.png"])
    assert ds.counts["mix_skipped"] == 2


def test_the_two_views_of_a_sample_are_mixed_with_their_own_donors(tmp_path):
    """mask 0 everywhere and the whole photo as background: a mixed view IS its donor's photo, so
    each view shows which sample ``choose_partner(seed, index, candidates, view)`` drew for it."""
    data = tmp_path / "data"
    names = [f"{i}.png" for i in range(6)]
    images = _folder(data, names)
    store = _store(tmp_path / "store", [(StoreEntry(n, 48, 40, boxes=[], bg_rect=[0, 0, 48, 40]),
                                         np.zeros((40, 48), np.float32)) for n in names])
    ds = OcconPretrainDataset(data, {"store": str(store), "bg_mixup": {"enabled": True, "p_mix": 1.0}},
                              [IDENTITY, IDENTITY], seed=0)
    different = 0
    for seed in range(8):
        for index in range(6):
            _, views, _, info = ds[(index, seed)]
            assert info["mixed"].tolist() == [True, True]
            donors = [choose_partner(seed, index, ds.bg_candidates, v) for v in (0, 1)]
            for view, donor in zip(views, donors):
                assert donor != index
                np.testing.assert_array_equal(view.permute(1, 2, 0).numpy(), images[ds.paths[donor]])
            different += donors[0] != donors[1]
    assert different >= 30  # 48 samples, the views' donors differ with probability 4/5


def test_a_store_with_fewer_than_two_backgrounds_says_what_bg_mixup_can_do(tmp_path, capsys):
    data = tmp_path / "data"
    _folder(data, ["a.png", "b.png", "c.png"])
    occon = {"bg_mixup": {"enabled": True, "p_mix": 1.0}}
    none = _store(tmp_path / "none", [(StoreEntry(n, 48, 40, boxes=[], bg_rect=None), _mask())
                                      for n in ("a.png", "b.png", "c.png")])
    OcconPretrainDataset(data, {"store": str(none), **occon}, [IDENTITY, IDENTITY], seed=0)
    assert "none of the 3 images has a background rectangle: BG-Mixup can mix no view" in capsys.readouterr().err
    one = _store(tmp_path / "one", [(StoreEntry(n, 48, 40, boxes=[], bg_rect=[0, 0, 5, 5] if n == "b.png" else None),
                                     _mask()) for n in ("a.png", "b.png", "c.png")])
    ds = OcconPretrainDataset(data, {"store": str(one), **occon}, [IDENTITY, IDENTITY], seed=0)
    assert "only b.png of 3 images has a background rectangle" in capsys.readouterr().err
    ds[(1, 0)]  # b.png: its only possible donor is itself -> both views drawn, neither mixed
    assert ds.counts["mix_skipped"] == 2


def test_store_mismatch_is_reported_before_training(two_image_store):
    data, store, images = two_image_store
    Image.fromarray(_image(9)).save(data / "c.png")  # not in the store
    occon = {"store": str(store), "oa_crop": {"enabled": True}, "bg_mixup": {"enabled": True, "p_mix": 1.0}}
    with pytest.raises(StoreMismatchError, match="1 missing"):
        OcconPretrainDataset(data, occon, [IDENTITY, IDENTITY])
    ds = OcconPretrainDataset(data, {**occon, "missing": "full_image"}, [IDENTITY, IDENTITY])
    assert len(ds) == 3 and ds.counts["no_entry"] == 1
    _, views, _, info = ds[ds.paths.index("c.png")]
    assert bool(info["no_entry"]) and not info["oa_crop"] and not info["mixed"].any()
    np.testing.assert_array_equal(views[1].permute(1, 2, 0).numpy(), _image(9))
    ds = OcconPretrainDataset(data, {**occon, "missing": "skip"}, [IDENTITY, IDENTITY])
    assert ds.paths == ["a.png", "b.png"] and ds.counts["skipped_no_entry"] == 1


def test_bad_images_are_replaced_and_counted(tmp_path):
    data = tmp_path / "data"
    images = _folder(data, ["a.png", "b.png", "c.png"])
    (data / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    ds = OcconPretrainDataset(data, None, [IDENTITY, IDENTITY], seed=0)
    # unreadable at the start: dropped before training (both pipelines drop the same files), counted
    assert ds.paths == ["a.png", "b.png", "c.png"] and ds.startup["unreadable"] == 1
    # unreadable later (the file broke during training): replaced by another image, counted
    (data / "c.png").write_bytes(b"\x89PNG broken now")
    bad = ds.paths.index("c.png")
    index, views, _, info = ds[bad]
    assert index != bad and bool(info["replaced"]) and ds.counts["bad_images"] >= 1
    np.testing.assert_array_equal(views[0].permute(1, 2, 0).numpy(), images[ds.paths[index]])


def test_seeded_sampler_varies_per_epoch_and_repeats_per_seed():
    sampler = SeededRandomSampler(10, seed=5)
    epoch0, epoch1 = list(sampler), list(sampler)
    assert sorted(i for i, _ in epoch0) == list(range(10))
    assert epoch0 != epoch1
    again = SeededRandomSampler(10, seed=5)
    assert list(again) == epoch0
    again.set_epoch(1)
    assert list(again) == epoch1


def _cfg(data: Path, num_workers: int, occon: dict | None = None):
    return OmegaConf.create({"data": {"train_path": str(data), "num_workers": num_workers},
                             "optimizer": {"batch_size": 4}, "augmentations": AUG, "occon": occon, "seed": 7})


def test_dataloader_batches_collate_and_do_not_depend_on_workers(tmp_path):
    data = tmp_path / "data"
    _folder(data, [f"c{i % 2}/{i}.png" for i in range(9)])
    store = _store(tmp_path / "store", [
        (StoreEntry(f"c{i % 2}/{i}.png", 48, 40, boxes=[[0.1, 0.1, 0.6, 0.9]], bg_rect=[0, 0, 8, 8]), _mask())
        for i in range(9)])
    occon = {"store": str(store), "oa_crop": {"enabled": True}, "bg_mixup": {"enabled": True, "p_mix": 0.4}}
    loader = build_pretrain_dataloader(_cfg(data, 0, occon))
    batches = list(loader)
    assert len(batches) == 2  # 9 images, batch 4, drop_last
    indexes, views, targets, info = batches[0]
    paths = loader.dataset.paths
    assert indexes.shape == (4,) and targets.tolist() == [int(paths[i][1]) for i in indexes.tolist()]
    assert len(views) == 2 and all(v.shape == (4, 3, 32, 32) for v in views)
    assert info["oa_crop"].shape == (4,) and info["oa_crop"].all()
    assert info["mixed"].shape == (4, 2) and info["mixed"].dtype == torch.bool
    assert not loader.persistent_workers

    with_workers = build_pretrain_dataloader(_cfg(data, 2, occon))
    assert with_workers.persistent_workers
    first = next(iter(with_workers))
    assert torch.equal(first[0], indexes)
    for a, b in zip(first[1], views):
        assert torch.equal(a, b)
    assert torch.equal(first[3]["mixed"], info["mixed"])


def test_dataloader_config_errors_name_the_key(tmp_path):
    data = tmp_path / "data"
    _folder(data, ["a.png", "b.png"])
    with pytest.raises(ValueError, match="fewer than optimizer.batch_size=4"):
        build_pretrain_dataloader(_cfg(data, 0))
    cfg = _cfg(data, 0)
    cfg.data.train_path = None
    with pytest.raises(ValueError, match="data.train_path is required"):
        build_pretrain_dataloader(cfg)
    with pytest.raises(ValueError, match="occon.bg_mixup.p_mix=1.5 must be in"):
        build_pretrain_dataloader(_cfg(data, 0, {"store": str(tmp_path), "bg_mixup": {"enabled": True, "p_mix": 1.5}}))
    assert parse_occon_config({"bg_mixup": {"enabled": True, "views": [0, 1, 2, 3]}}, n_views=4,
                              check_store=False).bg_mixup.views == (0, 1, 2, 3)


@pytest.mark.shared_data
def test_coco_json_source_with_a_store_from_ground_truth(coco128, tmp_path):
    """Real COCO photos listed from the json; a store built from the instance annotations."""
    from pycocotools.coco import COCO

    from occon_plugin.images import list_images
    from occon_plugin.localize.background import largest_empty_rectangle

    json_path = coco128 / "annotations" / "instances_train2017.json"
    images = list_images(json_path)
    coco = COCO(str(json_path))
    rows = []
    for path, image_id in list(zip(images.paths, images.image_ids)):
        info = coco.imgs[image_id]
        width, height = info["width"], info["height"]
        mask = np.zeros((height, width), np.float32)
        boxes = []
        for ann in coco.loadAnns(coco.getAnnIds(imgIds=image_id, iscrowd=False)):
            mask = np.maximum(mask, coco.annToMask(ann).astype(np.float32))
            x, y, w, h = ann["bbox"]
            if w * h >= 0.01 * width * height:
                boxes.append([x / width, y / height, (x + w) / width, (y + h) / height])
        rows.append((StoreEntry(path, width, height, boxes=boxes, bg_rect=largest_empty_rectangle(mask > 0)), mask))
    store = _store(tmp_path / "store", rows)
    occon = {"store": str(store), "oa_crop": {"enabled": True}, "bg_mixup": {"enabled": True, "p_mix": 0.4}}
    loader = build_pretrain_dataloader(OmegaConf.create({
        "data": {"train_path": str(json_path), "num_workers": 0}, "optimizer": {"batch_size": 8},
        "augmentations": AUG, "occon": occon, "seed": 0}))
    indexes, views, targets, info = next(iter(loader))
    assert len(loader.dataset) == 128 and (targets == NO_LABEL_TARGET).all()
    assert all(v.shape == (8, 3, 32, 32) and torch.isfinite(v).all() for v in views)
    with_boxes = torch.tensor([len(loader.dataset.entries[i].boxes) > 0 for i in indexes.tolist()])
    assert torch.equal(info["oa_crop"], with_boxes)


@pytest.mark.parametrize("raw, said", [
    ({"refresh": {"fraction": None}}, "occon.refresh.fraction=null is invalid: give a value, or drop the key for its "
                                      "default (1.0)"),
    ({"bg_mixup": {"p_mix": None}}, "occon.bg_mixup.p_mix=null is invalid"),
    ({"refresh": {"preset": None}}, "default ('bg_mixup')"),
    ({"refresh": {"preset": [1]}}, "occon.refresh.preset=[1] is invalid: give a string (default 'bg_mixup')"),
    # a null section would train with the augmentation silently off
    ({"oa_crop": None}, "occon.oa_crop=null is invalid: give occon.oa_crop.enabled=true or false"),
    ({"bg_mixup": None}, "occon.bg_mixup=null is invalid"),
    ({"missing": None}, "occon.missing=null must be one of error, skip, full_image (default error)"),
    ({"bg_mixup": {"hard": None}}, "occon.bg_mixup.hard=null must be true or false"),
    # the refresh's ranges hold while it is off: a typo surfaces before the day it is switched on
    ({"refresh": {"enabled": False, "image_size": 2049}}, "occon.refresh.image_size=2049: must be an integer in [32, "
                                                          "2048]"),
    ({"refresh": {"image_size": "64"}}, "occon.refresh.image_size='64' must be an integer in [32, 2048]"),
])
def test_a_null_or_a_list_where_the_schema_takes_a_value_is_one_line(raw, said):
    from occon_plugin.errors import ConfigError

    with pytest.raises(ConfigError) as err:
        parse_occon_config({"enabled": True, **raw}, check_store=False)
    assert said in str(err.value) and "\n" not in str(err.value) and "object_type" not in str(err.value)

