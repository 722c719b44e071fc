"""Fixtures shared by the host/method tests."""
from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf

REPO = Path(__file__).resolve().parents[2]


def small_cfg(method: str, train_path: str = ".", batch_size: int = 4, occon: bool = False):
    """A real YAML of the repository, shrunk for CPU; without its ``occon`` section unless ``occon``
    (the object-aware methods are then exactly their parents)."""
    dataset = "coco"
    cfg = OmegaConf.load(REPO / "scripts" / "pretrain" / dataset / f"{method}.yaml")
    if not occon:
        cfg.pop("occon", None)
    cfg.augmentations = OmegaConf.load(REPO / "scripts" / "pretrain" / dataset / "augmentations" / "symmetric.yaml")
    cfg.wandb = {"enabled": False}
    cfg.data.train_path = train_path
    cfg.optimizer.batch_size = batch_size
    cfg.scheduler.name = "none"
    if "queue_size" in cfg.method_kwargs:
        cfg.method_kwargs.queue_size = 16 * batch_size
        cfg.method_kwargs.proj_hidden_dim = 32
    else:
        cfg.method_kwargs.proj_hidden_dim = 32
        cfg.method_kwargs.pred_hidden_dim = 32
    cfg.max_epochs = 1
    cfg.accelerator = "cpu"
    return cfg


@pytest.fixture
def make_cfg():
    return small_cfg
