"""End to end: the torchvision loader feeds the plugin's methods for a training step on CPU."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from occon_plugin import host
from occon_plugin.augment.dataset import build_pretrain_dataloader
from occon_plugin.config import complete_pretrain_cfg
from occon_plugin.store import StoreEntry, StoreWriter, mask_to_u8


@pytest.mark.slow
@pytest.mark.parametrize("method", ["mocov2_occon", "byol_occon"])
def test_one_training_step_on_object_aware_batches(repo_root, tmp_path, method):
    skdata = pytest.importorskip("skimage.data")
    data, store = tmp_path / "data", tmp_path / "store"
    data.mkdir()
    writer = StoreWriter(store, settings={"test": True}, model_hash="test", resume=False)
    for i, name in enumerate(["astronaut", "chelsea", "coffee", "rocket"] * 2):
        photo = getattr(skdata, name)()[::4, ::4]  # real photos, shrunk for CPU
        height, width = photo.shape[:2]
        Image.fromarray(photo).save(data / f"{i}_{name}.jpg", quality=90)
        mask = np.zeros((height, width), np.float32)
        mask[height // 4: 3 * height // 4, width // 4: 3 * width // 4] = 0.9
        writer.write(StoreEntry(f"{i}_{name}.jpg", width, height, boxes=[[0.2, 0.2, 0.8, 0.8]],
                                bg_rect=[0, 0, width // 4, height // 4]), mask_to_u8(mask))
    writer.close(listed=8)

    cfg = OmegaConf.load(repo_root / "scripts" / "pretrain" / "coco" / f"{method}.yaml")
    cfg.augmentations = OmegaConf.load(repo_root / "scripts" / "pretrain" / "coco" / "augmentations" / "symmetric.yaml")
    cfg.augmentations[0].crop_size = 32
    cfg.wandb = {"enabled": False}
    cfg.data.train_path, cfg.data.num_workers = str(data), 0
    cfg.occon.store = str(store)
    cfg.occon.bg_mixup.enabled, cfg.occon.bg_mixup.p_mix = True, 0.5
    cfg.optimizer.batch_size, cfg.scheduler.name, cfg.accelerator = 4, "none", "cpu"
    for key in ("proj_hidden_dim", "pred_hidden_dim"):
        if key in cfg.method_kwargs:
            cfg.method_kwargs[key] = 32
    if "queue_size" in cfg.method_kwargs:
        cfg.method_kwargs.queue_size = 64
    cfg = complete_pretrain_cfg(cfg, host.METHODS)

    loader = build_pretrain_dataloader(cfg)
    model = host.build_method(cfg.method, cfg)
    trainer = host.Trainer(max_steps=2, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                           enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(model, loader)
    logged = {k: float(v) for k, v in trainer.callback_metrics.items()}
    assert logged["occon/oa_crop_frac_epoch"] == pytest.approx(1.0)  # every image has a box
    assert 0.0 <= logged["occon/bg_mixed_frac_epoch"] <= 1.0
    # solo's online classifier loss is NaN here (all targets are -1: an unlabeled folder); the SSL loss
    # and the backbone must stay finite
    ssl_loss = {"mocov2_occon": "train_nce_loss", "byol_occon": "train_neg_cos_sim"}[method]
    assert np.isfinite(logged[ssl_loss]), logged
    assert all(torch.isfinite(p).all() for p in host.backbone_of(model).parameters())
    assert torch.is_tensor(next(iter(loader))[3]["mixed"])
