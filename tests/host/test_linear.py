"""Linear evaluation with the host's LinearModel: any number of classes >= 2 (top-k capped), the shipped
YAML accepted by the plugin's script, checkpoints written by the plugin's pretraining."""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from occon_plugin import host
from occon_plugin.cli.linear import linear_eval
from occon_plugin.cli.pretrain import save_final_checkpoint
from occon_plugin.config import complete_pretrain_cfg
from occon_plugin.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
LINEAR_YAML = REPO / "scripts" / "linear" / "custom" / "linear.yaml"


def test_top_k_is_capped_at_the_class_count():
    import solo.methods.linear as linear

    logits = torch.tensor([[2.0, 1.0], [0.0, 3.0], [5.0, 1.0]])
    targets = torch.tensor([1, 1, 0])
    acc1, acc5 = linear.accuracy_at_k(logits, targets, top_k=(1, 5))  # the host always asks for top-5
    assert float(acc1) == pytest.approx(200 / 3) and float(acc5) == pytest.approx(100.0)  # top-5 of 2 = top-2


def _folder(root: Path, classes: int, per_class: int) -> Path:
    for c in range(classes):
        for i in range(per_class):
            path = root / f"class{c}" / f"{i}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.full((40, 40, 3), 40 * c + 5 * i, np.uint8)).save(path)
    return root


@pytest.fixture
def final_ckpt(make_cfg, tmp_path):
    cfg = complete_pretrain_cfg(make_cfg("mocov2_occon", train_path=str(tmp_path)), host.METHODS)
    model = host.build_method("mocov2_occon", cfg)
    path = tmp_path / "final.ckpt"
    save_final_checkpoint(model, SimpleNamespace(global_step=0, current_epoch=0), cfg, path)
    return path


def _linear_cfg(ckpt: Path, train: Path, val: Path | None):
    cfg = OmegaConf.load(LINEAR_YAML)
    del cfg["defaults"], cfg["hydra"]
    cfg.pretrained_feature_extractor = str(ckpt)
    cfg.data.train_path, cfg.data.val_path = str(train), (str(val) if val else None)
    cfg.data.num_workers = 0
    cfg.data.augmentations.crop_size = 32
    cfg.optimizer.batch_size = 4
    cfg.max_epochs, cfg.accelerator = 1, "cpu"  # one epoch, then the validation pass
    cfg.wandb.enabled = False
    cfg.checkpoint.dir = str(train.parent / "runs")
    return cfg


@pytest.mark.parametrize("classes", [2, 3])
def test_linear_with_fewer_than_five_classes(final_ckpt, tmp_path, classes):
    train = _folder(tmp_path / "train", classes, 4)
    val = _folder(tmp_path / "val", classes, 2)
    result = linear_eval(_linear_cfg(final_ckpt, train, val))
    assert result["global_step"] == classes and len(result["classes"]) == classes  # 4 images per class, batch 4
    assert result["metrics"]["val_acc5"] == pytest.approx(100.0)  # top-5 of < 5 classes: every class
    assert 0.0 <= result["metrics"]["val_acc1"] <= 100.0


def test_linear_needs_two_classes(final_ckpt, tmp_path):
    train = _folder(tmp_path / "train", 1, 4)
    with pytest.raises(ConfigError, match="needs at least 2"):
        linear_eval(_linear_cfg(final_ckpt, train, None))


def test_old_crop_size_key_is_named(final_ckpt, tmp_path):
    cfg = _linear_cfg(final_ckpt, _folder(tmp_path / "train", 2, 2), None)
    cfg.crop_size = 64
    with pytest.raises(ConfigError, match="data.augmentations.crop_size"):
        linear_eval(cfg)
