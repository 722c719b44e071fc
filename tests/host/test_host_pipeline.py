"""The host's own pretraining API sequence (as solo-learn's main_pretrain.py runs it) with the object-aware methods.

Method from ``METHODS``, the host's transform / dataset / dataloader builders
(``host.build_host_pretrain_loader``), ``trainer.fit``: the methods' Lightning hooks make the host's
dataset object-aware, so OA-Crop / BG-Mixup batches arrive (checked on the pixels and on the logged
``occon/*_frac``), or the run stops before the first step with one message naming ``occon-pretrain``.

Pixel check: every image is black with a (nearly) white square; the store's box is the square and its
background rectangle is the square too. OA-Crop -> every view is (almost) all white; BG-Mixup with an
empty mask (hard) -> a mixed view is the partner's "background" tiled = white. Without them the views
would be mostly black (the square covers 1/9 of the image).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from occon_plugin import host
from occon_plugin.config import complete_pretrain_cfg
from occon_plugin.errors import ConfigError
from occon_plugin.store import StoreEntry, StoreWriter, mask_to_u8

SIZE, SQUARE = 48, (16, 16, 32, 32)  # image side; the white square (left, top, right, bottom)
N_IMAGES, BATCH = 8, 4
WHITE = 1.0  # mean of a normalized view that is mostly white (all white: 2.44, 227 gray: 1.9; the raw images: -1.6)


def _images(root: Path, labelled: bool) -> list[str]:
    names = [f"{'cls%d/' % (i % 2) if labelled else ''}img{i}.png" for i in range(N_IMAGES)]
    left, top, right, bottom = SQUARE
    for i, name in enumerate(names):
        image = np.zeros((SIZE, SIZE, 3), np.uint8)
        image[top:bottom, left:right] = 255 - 4 * i  # (almost) white, a different picture each
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(root / name)
    return names


def _store(out: Path, names: list[str]) -> Path:
    left, top, right, bottom = SQUARE
    box = [left / SIZE, top / SIZE, right / SIZE, bottom / SIZE]
    writer = StoreWriter(out, settings={"test": "host_pipeline"}, model_hash="none", resume=False)
    for name in names:
        writer.write(StoreEntry(name, SIZE, SIZE, boxes=[box], bg_rect=list(SQUARE)),
                     mask_to_u8(np.zeros((SIZE, SIZE), np.float32)))
    writer.close(listed=len(names))
    return out


def _data_and_store(tmp_path: Path, labelled: bool):
    data = tmp_path / "data"
    names = _images(data, labelled)
    return data, _store(tmp_path / "store", names), labelled


@pytest.fixture(params=["labelled", "no_labels"])
def data_and_store(request, tmp_path):
    """Both layouts of solo-learn's custom dataset: ImageFolder, and CustomDatasetWithoutLabels."""
    return _data_and_store(tmp_path, request.param == "labelled")


@pytest.fixture
def labelled_data(tmp_path):
    return _data_and_store(tmp_path, True)


class Recorder(host.Callback):
    """What reached the method's training step, per batch."""

    def __init__(self):
        self.batches = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx, *args):
        self.batches.append(batch)


def _cfg(make_cfg, method, data, store, labelled, oa_crop=True, bg_mixup=False, workers=0, batch_size=BATCH):
    cfg = make_cfg(method, train_path=str(data), batch_size=batch_size, occon=True)
    cfg.augmentations[0].crop_size = 32
    cfg.augmentations[0].rrc.crop_min_scale = 0.5
    cfg.augmentations[0].color_jitter.prob = 0.0
    cfg.augmentations[0].grayscale.prob = 0.0
    cfg.augmentations[0].gaussian_blur.prob = 0.0
    cfg.data.no_labels = not labelled
    cfg.data.num_workers = workers
    cfg.occon = {"store": str(store) if store else None, "missing": "error", "oa_crop": {"enabled": oa_crop},
                 "bg_mixup": {"enabled": bg_mixup, "p_mix": 1.0, "hard": True}}
    cfg = complete_pretrain_cfg(cfg, host.METHODS)
    cfg.data.num_classes = 2 if labelled else 1  # what parse_cfg counts (class sub-folders)
    return cfg


def _fit(cfg, loader=None, steps=2, logger=False, datamodule=None):
    model = host.METHODS[cfg.method](cfg)  # as solo-learn main's main_pretrain.py: METHODS[cfg.method](cfg)
    recorder = Recorder()
    trainer = host.Trainer(max_steps=steps, accelerator="cpu", devices=1, logger=logger, enable_checkpointing=False,
                           enable_progress_bar=False, enable_model_summary=False, callbacks=[recorder])
    if datamodule is not None:
        trainer.fit(model, datamodule=datamodule)
    else:
        trainer.fit(model, loader if loader is not None else host.build_host_pretrain_loader(cfg))
    return trainer, recorder, model


def _metrics(trainer):
    return {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("occon/")}


@pytest.mark.parametrize("method", ["mocov2_occon", "byol_occon"])
def test_host_loader_gets_oa_crop(make_cfg, data_and_store, method):
    data, store, labelled = data_and_store
    cfg = _cfg(make_cfg, method, data, store, labelled)
    trainer, recorder, _ = _fit(cfg)
    assert trainer.global_step == 2 and len(recorder.batches) == 2
    for indexes, views, targets, info in recorder.batches:  # 4 elements: the object-aware record
        assert bool(info["oa_crop"].all()) and not bool(info["mixed"].any())
        for view in views:  # OA-Crop to the white square, then the host's RandomResizedCrop: white
            assert view.shape == (BATCH, 3, 32, 32) and float(view.mean()) > WHITE
        assert set(targets.tolist()) <= ({0, 1} if labelled else {0})  # no -1: the classifier's loss stays finite
        assert ((0 <= indexes) & (indexes < N_IMAGES)).all()
    m = _metrics(trainer)
    assert m["occon/oa_crop_frac_epoch"] == pytest.approx(1.0) and m["occon/bg_mixed_frac_epoch"] == 0.0


def test_host_loader_gets_bg_mixup_in_worker_processes(make_cfg, data_and_store):
    data, store, labelled = data_and_store
    cfg = _cfg(make_cfg, "mocov2_occon", data, store, labelled, oa_crop=False, bg_mixup=True, workers=2)
    trainer, recorder, _ = _fit(cfg)
    for _, views, _, info in recorder.batches:
        assert bool(info["mixed"].all()) and not bool(info["oa_crop"].any())
        for view in views:  # empty mask, hard mix: every pixel is the partner's tiled "background" (white)
            assert float(view.mean()) > WHITE
    m = _metrics(trainer)
    assert m["occon/bg_mixed_frac_epoch"] == pytest.approx(1.0) and m["occon/oa_crop_frac_epoch"] == 0.0


def test_without_occon_the_host_loader_is_untouched(make_cfg, labelled_data):
    data, store, labelled = labelled_data
    cfg = make_cfg("mocov2_occon", train_path=str(data), batch_size=BATCH)  # no occon section
    cfg.data.no_labels = not labelled
    cfg.augmentations[0].crop_size = 32
    cfg = complete_pretrain_cfg(cfg, host.METHODS)
    cfg.data.num_classes = 2 if labelled else 1
    loader = host.build_host_pretrain_loader(cfg)
    cls = type(loader.dataset)
    trainer, recorder, _ = _fit(cfg, loader)
    assert type(loader.dataset) is cls and all(len(b) == 3 for b in recorder.batches)
    assert not _metrics(trainer)


def test_wandb_gets_a_picture_of_the_augmentations(make_cfg, labelled_data, tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    data, store, labelled = labelled_data
    cfg = _cfg(make_cfg, "mocov2_occon", data, store, labelled, bg_mixup=True)
    logger = host.WandbLogger(name="pictures", project="occon-test", offline=True, save_dir=str(tmp_path / "run"),
                              mode="offline")
    _fit(cfg, steps=1, logger=logger)
    logger.experiment.finish()
    pictures = list((tmp_path / "run" / "wandb").glob("offline-run-*/files/media/images/occon/augmentations*"))
    assert len(pictures) == 4  # N_PICTURES samples, one picture each


# ------------------------------------------------------------------------------------ clear stops
def test_argparse_construction_stops_naming_the_plugin_script(make_cfg, labelled_data):
    # solo-learn 1.0.2's main_pretrain.py: METHODS[name](**vars(args)), no occon section
    data, store, labelled = labelled_data
    cfg = _cfg(make_cfg, "mocov2_occon", data, store, labelled)
    with pytest.raises(ConfigError, match="occon-pretrain --config-path"):
        host.METHODS["mocov2_occon"](**host.legacy_kwargs(cfg))


def test_missing_store_stops_before_the_first_step(make_cfg, labelled_data):
    data, store, labelled = labelled_data
    cfg = _cfg(make_cfg, "mocov2_occon", data, store, labelled)
    cfg.occon.store = str(store) + "-missing"
    with pytest.raises(ConfigError, match=r"occon\.store=.*-missing does not exist"):
        _fit(cfg)


def test_a_dataset_without_image_files_stops_before_the_first_step(make_cfg, labelled_data):
    data, store, labelled = labelled_data
    cfg = _cfg(make_cfg, "mocov2_occon", data, store, labelled)
    tensors = torch.utils.data.TensorDataset(torch.arange(8), torch.rand(8, 3, 32, 32), torch.zeros(8))
    with pytest.raises(ConfigError, match="no image files to key an occon store by"):
        _fit(cfg, torch.utils.data.DataLoader(tensors, batch_size=4))


def test_a_foreign_dali_data_module_stops_naming_the_plugin_script(make_cfg, labelled_data):
    data, store, labelled = labelled_data
    cfg = _cfg(make_cfg, "mocov2_occon", data, store, labelled)

    class PretrainDALIDataModule(host.LightningDataModule):  # stands in for the host's (needs a GPU build)
        def train_dataloader(self):
            return host.build_host_pretrain_loader(cfg)

    with pytest.raises(ConfigError, match="DALI data module .* occon-pretrain"):
        _fit(cfg, datamodule=PretrainDALIDataModule())


def test_three_element_batches_with_occon_on_stop(make_cfg, labelled_data):
    data, store, labelled = labelled_data
    cfg = _cfg(make_cfg, "mocov2_occon", data, store, labelled)
    model = host.METHODS["mocov2_occon"](cfg)
    batch = [torch.arange(2), [torch.rand(2, 3, 32, 32)] * 2, torch.zeros(2, dtype=torch.long)]
    with pytest.raises(ConfigError, match="without the object-aware record"):
        model.training_step(batch, 0)
