"""Shared helpers of the per-method tests: a method's shipped YAML shrunk for CPU, fixed batches, a tiny store."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from occon_plugin import host
from occon_plugin.config import complete_pretrain_cfg
from occon_plugin.methods import table

REPO = Path(__file__).resolve().parents[2]
CUSTOM = REPO / "scripts" / "pretrain" / "custom"
LARGE, SMALL = 32, 16  # view sizes on CPU (multi-crop: 2 x LARGE + n x SMALL)
ROWS = {name: (parent, cls, family) for name, parent, cls, family in table.ROWS}
REPRESENTATIVES = {rep for _, rep in table.FAMILIES.values()}


def method_params(names=None):
    """pytest params of the table's methods this host has; only each family's representative runs
    without ``-m slow`` (``table.FAMILIES``)."""
    from occon_plugin.methods import OCCON_METHODS

    params = []
    for name in names or ROWS:
        if name not in OCCON_METHODS:
            continue  # the host has no parent (tests/methods/test_table.py checks that this is right)
        marks = () if name in REPRESENTATIVES else (pytest.mark.slow,)
        params.append(pytest.param(name, marks=marks, id=name))
    return params


def load_yaml_cfg(method: str):
    """``scripts/pretrain/custom/<method>.yaml`` with its augmentation group, as Hydra composes it."""
    cfg = OmegaConf.load(CUSTOM / f"{method}.yaml")
    group = next(d["augmentations"] for d in cfg.defaults if "augmentations" in d)
    cfg.augmentations = OmegaConf.load(CUSTOM / "augmentations" / group)
    del cfg["defaults"], cfg["hydra"]
    return cfg


def tiny_cfg(method: str, train_path: str | Path, batch_size: int = 4, small_crops: int = 0,
             store: str | Path | None = None, p_mix: float = 0.5):
    """The method's real YAML with CPU-sized networks, views and queues (every key the YAML sets stays
    set, so solo-learn 1.0.2's constructors, which have no defaults, see the full recipe).

    ``store``: OA-Crop and BG-Mixup on (``p_mix``) from that store; None: ``occon.enabled: false``
    (the parent's behaviour)."""
    cfg = load_yaml_cfg(method)
    OmegaConf.set_struct(cfg, False)
    if store is None:
        cfg.occon = {"enabled": False}
    else:
        cfg.occon.store = str(store)
        cfg.occon.oa_crop.enabled, cfg.occon.bg_mixup.enabled, cfg.occon.bg_mixup.p_mix = True, True, p_mix
        cfg.occon.bg_mixup.pop("views", None)  # the default: every view (multi-crop: the small ones too)
    cfg.wandb = {"enabled": False}
    cfg.data.train_path, cfg.data.num_workers = str(train_path), 0
    cfg.optimizer.batch_size = batch_size
    cfg.scheduler = {"name": "none"}
    cfg.max_epochs, cfg.accelerator, cfg.devices = 3, "cpu", 1  # >= the epochs fit() runs (per-epoch schedules)
    aug = cfg.augmentations
    big = aug[0].crop_size
    for item in aug:
        item.crop_size = LARGE if item.crop_size == big else SMALL
    if small_crops:
        small = OmegaConf.create(OmegaConf.to_container(aug[0]))
        small.crop_size, small.num_crops = SMALL, small_crops
        aug.append(small)
    kw = cfg.method_kwargs
    for key in list(kw):
        if key.endswith("_dim"):
            kw[key] = 32
    if "queue_size" in kw:
        kw.queue_size = 4 * batch_size
    if "num_prototypes" in kw:  # DeepClusterV2: k-means over one epoch's memory (4 or 8 samples here)
        kw.num_prototypes = [3] * len(kw.num_prototypes) if OmegaConf.is_list(kw.num_prototypes) else 16
    if "kmeans_iters" in kw:
        kw.kmeans_iters = 2
    if "warmup_teacher_temperature_epochs" in kw:
        kw.warmup_teacher_temperature_epochs = 0
    if "whitening_size" in kw:  # W-MSE whitens groups of whitening_size samples in proj_output_dim dims
        kw.whitening_size, kw.proj_output_dim = batch_size, 2
    if "decoder_depth" in kw:  # MAE: a ViT that fits a 32-pixel view
        kw.decoder_depth, kw.decoder_num_heads = 1, 2
        cfg.backbone = {"name": "vit_tiny", "kwargs": {"img_size": LARGE, "patch_size": 8}}
    return complete_pretrain_cfg(cfg, host.METHODS)


def view_shapes(cfg) -> list[int]:
    """The crop size of every view the cfg's augmentations produce, in order."""
    return [int(a.crop_size) for a in cfg.augmentations for _ in range(int(a.num_crops))]


class FixedBatches(torch.utils.data.Dataset):
    """Deterministic samples ``[index, views, target(, info)]`` with the cfg's number and sizes of views."""

    def __init__(self, n: int, sizes: list[int], with_info: bool = False):
        g = torch.Generator().manual_seed(0)
        self.views = [torch.rand(n, 3, s, s, generator=g) for s in sizes]
        self.n, self.with_info = n, with_info

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        sample = [i, [v[i] for v in self.views], 0]
        if self.with_info:
            mixed = torch.tensor([i % 2 == 0] + [False] * (len(self.views) - 1))
            sample.append({"oa_crop": torch.tensor(True), "mixed": mixed})
        return sample


class LossRecorder(host.Callback):
    def __init__(self):
        self.losses = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, *args):
        self.losses.append(float(host.training_step_output_loss(outputs)))


def fit(method: str, cfg, loader, steps: int = 2, datamodule=None):
    """Train ``method`` for ``steps`` optimizer steps on ``loader``; (losses, trainer, model).

    One intra-op thread: on these tiny networks OpenMP's thread handoffs cost more than the math
    (7x the CPU time with 2 threads on a busy 2-core machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(1)
        model = host.build_method(method, cfg)
        recorder = LossRecorder()
        trainer = host.Trainer(max_steps=steps, max_epochs=int(cfg.max_epochs), accelerator="cpu", devices=1,
                               logger=False, enable_checkpointing=False, enable_progress_bar=False,
                               enable_model_summary=False, callbacks=[recorder], **host.KEEP_SAMPLER)
        torch.manual_seed(2)
        if datamodule is not None:
            trainer.fit(model, datamodule=datamodule)
        else:
            trainer.fit(model, loader)
    finally:
        torch.set_num_threads(threads)
    return recorder.losses, trainer, model


@pytest.fixture(scope="session")
def photo_store(tmp_path_factory):
    """8 real photos (scikit-image's) with a store: one box and a soft mask each, a background rectangle."""
    from PIL import Image

    from occon_plugin.store import StoreEntry, StoreWriter, mask_to_u8

    skdata = pytest.importorskip("skimage.data")
    root = tmp_path_factory.mktemp("methods")
    data, store = root / "data", root / "store"
    data.mkdir()
    writer = StoreWriter(store, settings={"test": True}, model_hash="test", resume=False)
    for i, name in enumerate(["astronaut", "chelsea", "coffee", "rocket"] * 2):
        photo = getattr(skdata, name)()[::8, ::8]  # real photos, shrunk for CPU
        height, width = photo.shape[:2]
        Image.fromarray(photo).save(data / f"{i}_{name}.png")
        mask = np.zeros((height, width), np.float32)
        mask[height // 4: 3 * height // 4, width // 4: 3 * width // 4] = 0.9
        writer.write(StoreEntry(f"{i}_{name}.png", width, height, boxes=[[0.2, 0.2, 0.8, 0.8]],
                                bg_rect=[0, 0, width // 4, height // 4]), mask_to_u8(mask))
    writer.close(listed=8)
    return data, store


def pytest_generate_tests(metafunc):
    """``occon_method``: every object-aware method of the installed host (non-representatives marked slow)."""
    if "occon_method" in metafunc.fixturenames:
        metafunc.parametrize("occon_method", method_params())


@pytest.fixture(scope="session")
def kit():
    """The helpers above (test modules cannot import this conftest under --import-mode=importlib)."""
    import types

    return types.SimpleNamespace(tiny_cfg=tiny_cfg, load_yaml_cfg=load_yaml_cfg, view_shapes=view_shapes,
                                 FixedBatches=FixedBatches, fit=fit, ROWS=ROWS, CUSTOM=CUSTOM,
                                 REPRESENTATIVES=REPRESENTATIVES, LARGE=LARGE, SMALL=SMALL)
