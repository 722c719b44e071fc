"""The DALI training path end to end on the CPU (``device_id=None``): real photos in a real store
on disk, the solo-learn batch format, the same decisions as the torchvision path, real COCO JPEGs."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from occon_plugin.augment.dataset import NO_LABEL_TARGET
from occon_plugin.augment.dali.datamodule import build_dali_datamodule, build_dali_loader, build_dali_source
from occon_plugin.augment.dali.pipeline import build_object_aware_pipeline
from occon_plugin.augment.dali.single import identity_view
from occon_plugin.augment.semantics import Partner, mix_weights
from occon_plugin.localize.background import largest_empty_rectangle
from occon_plugin.store import StoreEntry, StoreWriter, mask_from_u8, mask_to_u8

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "colorwheel")
CROP = 48
AUG = {"rrc": {"enabled": True, "crop_min_scale": 0.08, "crop_max_scale": 1.0},
       "color_jitter": {"prob": 0.8, "brightness": 0.4, "contrast": 0.4, "saturation": 0.2, "hue": 0.1},
       "grayscale": {"prob": 0.2}, "gaussian_blur": {"prob": 0.5, "sigma_min": 0.1, "sigma_max": 2.0},
       "solarization": {"prob": 0.2}, "horizontal_flip": {"prob": 0.5}, "crop_size": CROP, "num_crops": 2}


def _soft_blob(height: int, width: int, cy: float, cx: float) -> np.ndarray:
    yy, xx = np.mgrid[0:height, 0:width]
    r = np.hypot((yy - cy * height) / (0.22 * height), (xx - cx * width) / (0.18 * width))
    return np.clip(1.6 - r, 0, 1)


def write_store(images: dict[str, np.ndarray], store_dir, with_boxes: bool = True) -> None:
    """A real store (StoreWriter) with a soft object mask, its box(es) and background rectangle per image."""
    with StoreWriter(store_dir, settings={"made_by": "test_dali_pipeline"}, model_hash="none") as writer:
        for k, (path, image) in enumerate(sorted(images.items())):
            height, width = image.shape[:2]
            mask = np.maximum(_soft_blob(height, width, 0.4, 0.35 + 0.05 * k), 0.7 * _soft_blob(height, width, 0.6, 0.75))
            mask_u8 = mask_to_u8(mask)
            boxes = [[0.35 - 0.18 + 0.05 * k, 0.4 - 0.22, 0.35 + 0.18 + 0.05 * k, 0.62], [0.57, 0.38, 0.93, 0.82]]
            rect = largest_empty_rectangle(mask_from_u8(mask_u8) >= 0.2)
            writer.write(StoreEntry(path, width, height, boxes=boxes if with_boxes else [], bg_rect=list(rect)),
                         mask_u8)
        writer.close()


@pytest.fixture(scope="module")
def photo_data(tmp_path_factory):
    """Six real photos as PNG (lossless: DALI and OpenCV decode them identically) and their store."""
    skdata = pytest.importorskip("skimage.data")
    root = tmp_path_factory.mktemp("dali_photos")
    (root / "images").mkdir()
    images = {}
    for name in PHOTOS:
        image = getattr(skdata, name)()
        images[f"{name}.png"] = image
        cv2.imwrite(str(root / "images" / f"{name}.png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    write_store(images, root / "store")
    return root, images


def make_cfg(root, occon: dict | None, batch_size: int = 3, seed: int = 5, aug: dict = AUG):
    occon = None if occon is None else {"store": str(root / "store"), **occon}
    return OmegaConf.create({"data": {"train_path": str(root / "images"), "num_workers": 1},
                             "optimizer": {"batch_size": batch_size}, "augmentations": [aug],
                             "occon": occon, "seed": seed, "dali": {"device": "cpu"}})


BOTH = {"oa_crop": {"enabled": True}, "bg_mixup": {"enabled": True, "p_mix": 0.5}}


def _reference_views(source, images, index: int, seed: int):
    """OA-Crop + BG-Mixup of one sample computed with NumPy and the shared helpers."""
    decision = source.decide(index, seed)
    plan, rec = decision.plan, source.records[index]
    image = images[rec.image_file.name]
    left, top, right, bottom = plan.crop_rect or (0, 0, rec.width, rec.height)
    crop = image[top:bottom, left:right].astype(np.float64)
    views = []
    for v in range(source.n_views):
        if not plan.mixed[v]:
            views.append(crop)
            continue
        mask = mask_from_u8(cv2.imread(str(rec.mask_file), cv2.IMREAD_UNCHANGED))[top:bottom, left:right]
        donor = decision.partners[v]  # each mixed view has its own donor
        partner = Partner.from_image(images[donor.image_file.name], donor.bg_rect)
        tiled = partner.background(bottom - top, right - left).astype(np.float64)
        w = mix_weights(mask, source.settings.bg_mixup.hard, source.settings.bg_mixup.hard_threshold)[..., None]
        views.append(w * crop + (1 - w) * tiled)
    return views, plan


GPU = pytest.param("gpu", marks=[pytest.mark.gpu,
                                  pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")])


@pytest.mark.parametrize("device", ["cpu", GPU])
@pytest.mark.parametrize("hard", [False, True])
def test_training_batches_match_the_shared_reference(photo_data, hard, device):
    """Whole training batches (several samples, partners decoded as slices, in-batch paste ids),
    standard ops replaced by the identity: every view equals the NumPy reference."""
    root, images = photo_data
    occon = {"oa_crop": {"enabled": True}, "bg_mixup": {"enabled": True, "p_mix": 0.6, "hard": hard}}
    source, _ = build_dali_source(make_cfg(root, occon, batch_size=3))
    pipe = build_object_aware_pipeline(source, identity_view, device=device, num_threads=1)
    n_mixed = n_crops = 0
    for iteration in range(source.batches_per_epoch):
        out = [o.as_cpu() if hasattr(o, "as_cpu") else o for o in pipe.run()]
        rows = source.batch_plan(0, iteration)
        for b, (index, seed) in enumerate(rows):
            expected, plan = _reference_views(source, images, int(index), int(seed))
            assert int(np.array(out[2][b])) == index
            assert np.array(out[5][b]).tolist() == list(plan.mixed)
            for v in range(2):
                got = np.array(out[v][b]).astype(np.float64)
                assert got.shape == expected[v].shape
                assert np.abs(got - expected[v]).max() <= (0.0 if hard or not plan.mixed[v] else 0.51)
            n_mixed += sum(plan.mixed)
            n_crops += plan.oa_crop
    assert n_mixed > 0 and n_crops == 6  # the run exercised mixing, and every image has boxes


@pytest.mark.parametrize("device", ["cpu", GPU])
def test_loader_yields_solo_batches_deterministically(photo_data, device):
    root, _ = photo_data
    cfg = make_cfg(root, BOTH)
    cfg.dali.device = device
    loader = build_dali_loader(cfg)
    assert len(loader) == 2
    batches = list(loader)
    assert len(batches) == 2
    indexes, views, targets, info = batches[0]
    assert indexes.shape == (3,) and targets.tolist() == [NO_LABEL_TARGET] * 3
    assert len(views) == 2 and all(v.shape == (3, 3, CROP, CROP) and v.dtype == torch.float32 for v in views)
    assert all(v.device.type == ("cuda" if device == "gpu" else "cpu") for v in views)
    assert all(torch.isfinite(v).all() and v.std() > 0.1 for v in views)
    assert info["oa_crop"].shape == (3,) and info["mixed"].shape == (3, 2) and info["mix_skipped"].shape == (3, 2)
    assert info["oa_crop"].all() and not info["no_entry"].any() and not info["replaced"].any()
    seen = torch.cat([b[0] for b in batches])
    assert sorted(seen.tolist()) == list(range(6))  # one epoch visits every image once

    again = list(build_dali_loader(cfg))
    for a, b in zip(batches, again):
        assert torch.equal(a[0], b[0]) and all(torch.equal(x, y) for x, y in zip(a[1], b[1]))
    other = list(build_dali_loader(OmegaConf.merge(cfg, {"seed": 6})))
    assert not torch.equal(batches[0][1][0], other[0][1][0])

    second_epoch = list(loader)  # auto-reset: a new epoch, a new order and new decisions
    assert len(second_epoch) == 2
    assert torch.cat([b[0] for b in second_epoch]).tolist() != seen.tolist()


def test_decisions_and_order_match_the_torchvision_path(photo_data):
    from occon_plugin.augment.dataset import build_pretrain_dataloader

    root, _ = photo_data
    cfg = make_cfg(root, BOTH)
    cfg.data.num_workers = 0
    dali_batches = list(build_dali_loader(cfg))
    torch_batches = list(build_pretrain_dataloader(cfg))
    assert len(dali_batches) == len(torch_batches) == 2
    for d, t in zip(dali_batches, torch_batches):
        assert torch.equal(d[0], t[0])
        for key in ("oa_crop", "mixed", "mix_skipped", "no_entry"):
            assert torch.equal(d[3][key], t[3][key]), key
        assert all(dv.shape == tv.shape for dv, tv in zip(d[1], t[1]))


def test_both_pipelines_draw_the_same_donor_for_every_view(photo_data):
    """The torchvision dataset and the DALI source pick the same background donor per view."""
    from occon_plugin.augment.dataset import build_dataset

    root, _ = photo_data
    cfg = make_cfg(root, {"bg_mixup": {"enabled": True, "p_mix": 1.0}})
    source, _ = build_dali_source(cfg)
    dataset = build_dataset(cfg, [lambda image: image] * source.n_views)
    by_file = {str(rec.image_file): i for i, rec in enumerate(source.records)}
    differ = 0
    for index, seed in source.epoch_plan(0):
        decision = source.decide(int(index), int(seed))
        dali = [None if d is None else by_file[str(d.image_file)] for d in decision.partners]
        torchvision = [None if p is None else p.index for p in dataset._partners(int(seed), int(index))]
        assert dali == torchvision and None not in dali
        differ += dali[0] != dali[1]
    assert differ > 0


def test_baseline_without_occon_and_the_datamodule(photo_data):
    root, _ = photo_data
    module = build_dali_datamodule(make_cfg(root, None, batch_size=2))
    module.setup("fit")
    batches = list(module.train_dataloader())
    assert len(batches) == 3
    for indexes, views, _, info in batches:
        assert all(v.shape == (2, 3, CROP, CROP) for v in views)
        assert not info["oa_crop"].any() and not info["mixed"].any() and not info["no_entry"].any()


@pytest.mark.parametrize("change, message", [
    ({"dali": {"device": "tpu"}}, "dali.device='tpu' must be 'gpu' or 'cpu'"),
    ({"optimizer": {"batch_size": 7}}, "fewer than optimizer.batch_size=7"),
    ({"augmentations": [{**AUG, "equalization": {"prob": 0.1}}]}, "augmentations[0].equalization.prob"),
    ({"occon": {"bg_mixup": {"enabled": True, "p_mix": 2}}}, "occon.bg_mixup.p_mix=2 must be in [0, 1]"),
    ({"dali": {"py_workers": -1}}, "dali.py_workers=-1 must be an integer >= 0"),
    ({"augmentations": [{**AUG, "color_jitter": {**AUG["color_jitter"], "hue": 0.7}}]},
     "augmentations[0].color_jitter.hue=0.7 must be in [0, 0.5]"),
    ({"data": {"train_path": None}}, "data.train_path is required"),
])
def test_bad_config_names_the_key(photo_data, change, message):
    root, _ = photo_data
    cfg = OmegaConf.merge(make_cfg(root, BOTH), OmegaConf.create(change))
    with pytest.raises(ValueError) as err:
        build_dali_loader(cfg)
    assert message in str(err.value)


@pytest.mark.shared_data
def test_one_batch_of_coco_jpegs_end_to_end(coco128, tmp_path):
    """Real COCO JPEGs (varied sizes, EXIF) with a store built from the ground-truth instances."""
    import contextlib
    import io

    from pycocotools.coco import COCO

    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(str(coco128 / "annotations" / "instances_train2017.json"))
    image_ids = sorted(coco.getImgIds())[:8]
    (tmp_path / "images").mkdir()
    with StoreWriter(tmp_path / "store", settings={"made_by": "gt"}, model_hash="none") as writer:
        for image_id in image_ids:
            info = coco.loadImgs(image_id)[0]
            width, height = info["width"], info["height"]
            (tmp_path / "images" / info["file_name"]).symlink_to(coco128 / "images" / info["file_name"])
            anns = [a for a in coco.loadAnns(coco.getAnnIds(imgIds=image_id)) if not a.get("iscrowd")]
            mask = np.zeros((height, width), np.uint8)
            boxes = []
            for a in anns:
                mask |= coco.annToMask(a).astype(np.uint8)
                x, y, w, h = a["bbox"]
                boxes.append([x / width, y / height, (x + w) / width, (y + h) / height])
            rect = largest_empty_rectangle(mask > 0)
            writer.write(StoreEntry(info["file_name"], width, height, boxes=boxes,
                                    bg_rect=list(rect) if rect else None), mask * 255)
        writer.close()
    cfg = make_cfg(tmp_path, BOTH, batch_size=8)
    cfg.occon.bg_mixup.p_mix = 1.0
    indexes, views, targets, info = next(iter(build_dali_loader(cfg)))
    assert sorted(indexes.tolist()) == list(range(8))
    assert all(v.shape == (8, 3, CROP, CROP) and torch.isfinite(v).all() for v in views)
    assert info["oa_crop"].any()
    assert (info["mixed"] | info["mix_skipped"]).all()  # p_mix = 1: every view drew a mix


def test_lightning_trains_on_the_dali_datamodule(photo_data, tmp_path):
    """The data module under a real Lightning Trainer (CPU): two optimizer steps on DALI batches."""
    from occon_plugin import host

    class TwoViewProbe(host.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = torch.nn.Linear(3, 4)
            self.seen = []

        def training_step(self, batch, batch_idx):
            indexes, views, targets, info = batch
            self.seen.append((indexes.clone(), info["mixed"].clone()))
            feats = [self.net(v.mean(dim=(2, 3))) for v in views]
            return torch.nn.functional.mse_loss(feats[0], feats[1]) + feats[0].pow(2).mean()

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    root, _ = photo_data
    probe = TwoViewProbe()
    before = probe.net.weight.detach().clone()
    trainer = host.Trainer(max_epochs=1, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                           enable_progress_bar=False, enable_model_summary=False, default_root_dir=str(tmp_path))
    trainer.fit(probe, datamodule=build_dali_datamodule(make_cfg(root, BOTH)))
    assert len(probe.seen) == 2 and sorted(torch.cat([s[0] for s in probe.seen]).tolist()) == list(range(6))
    assert not torch.equal(before, probe.net.weight)


@pytest.mark.slow
def test_parallel_source_workers_give_the_same_batches(photo_data):
    """``dali.py_workers``: the source in a spawned worker process yields exactly the in-process batches,
    across an epoch boundary."""
    root, _ = photo_data
    cfg = make_cfg(root, BOTH)
    in_process = build_dali_loader(cfg)
    cfg.dali.py_workers = 1
    parallel = build_dali_loader(cfg)
    for _ in range(2):  # two epochs
        for a, b in zip(in_process, parallel, strict=True):
            assert torch.equal(a[0], b[0]) and all(torch.equal(x, y) for x, y in zip(a[1], b[1]))
            assert all(torch.equal(a[3][k], b[3][k]) for k in a[3])


@pytest.mark.parametrize("policy", ["full_image", "skip"])
def test_store_missing_an_image_follows_the_policy(photo_data, tmp_path, policy):
    root, images = photo_data
    partial = dict(sorted(images.items())[1:])  # the store lacks the first image (astronaut.png)
    write_store(partial, tmp_path / "store")
    n_kept = 6 if policy == "full_image" else 5
    cfg = make_cfg(root, {**BOTH, "missing": policy}, batch_size=n_kept)  # one batch holds every image
    cfg.occon.store = str(tmp_path / "store")
    source, _ = build_dali_source(cfg)
    assert len(source.records) == n_kept
    indexes, views, _, info = next(iter(build_dali_loader(cfg)))
    assert sorted(indexes.tolist()) == list(range(n_kept))
    lacking = [i for i, r in enumerate(source.records) if r.image_file.name == "astronaut.png"]
    assert len(lacking) == (1 if policy == "full_image" else 0)
    for b, index in enumerate(indexes.tolist()):
        assert bool(info["no_entry"][b]) == (index in lacking)
        if index in lacking:  # no entry: the full image, never mixed
            assert not info["oa_crop"][b] and not info["mixed"][b].any()
    assert all(v.shape == (n_kept, 3, CROP, CROP) for v in views)
    with pytest.raises(Exception, match="astronaut.png"):
        build_dali_source(OmegaConf.merge(cfg, {"occon": {"missing": "error"}}))


def test_oa_crop_windows_follow_exif_orientation(tmp_path):
    """Store sizes and boxes are in the EXIF-rotated frame (``images.image_size``); the slice decode
    must cut the same window from the rotated image that a full decode shows."""
    from PIL import Image
    from nvidia.dali import fn, pipeline_def, types

    skdata = pytest.importorskip("skimage.data")
    (tmp_path / "images").mkdir()
    photo = Image.fromarray(skdata.coffee())  # 600 x 400 as stored; EXIF 6 = shown rotated, 400 x 600
    exif = photo.getexif()
    exif[274] = 6
    path = tmp_path / "images" / "rotated.jpg"
    photo.save(path, quality=95, exif=exif.tobytes())
    box = [0.1, 0.5, 0.6, 0.9]
    with StoreWriter(tmp_path / "store", settings={}, model_hash="none") as writer:
        writer.write(StoreEntry("rotated.jpg", 400, 600, boxes=[box], bg_rect=[0, 0, 40, 40]),
                     np.zeros((600, 400), np.uint8))
        writer.close()
    source, _ = build_dali_source(make_cfg(tmp_path, {"oa_crop": {"enabled": True}}, batch_size=1))
    crop = np.array(build_object_aware_pipeline(source, identity_view, num_threads=1).run()[0][0])

    @pipeline_def(batch_size=1, num_threads=1, device_id=None)
    def full_decode():
        return fn.decoders.image(fn.external_source(lambda: [np.fromfile(path, np.uint8)], batch=True),
                                 output_type=types.RGB)

    pipe = full_decode()
    pipe.build()
    full = np.array(pipe.run()[0][0])
    assert full.shape == (600, 400, 3)
    np.testing.assert_array_equal(crop, full[300:540, 40:240])  # box_to_pixels(box, 400, 600)
