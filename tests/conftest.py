"""Shared pytest fixtures (data folders, real photos, the embedded default model).

Tests live in plain folders (no ``__init__.py``) and run with ``--import-mode=importlib``
because solo-learn 1.0.2 installs a top-level ``tests`` package into site-packages.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
# The project's shared data sits beside the repository checkout (`../shared`); it is
# absent on a user's machine, where tests that need it skip and say so.
COCO128 = REPO_ROOT.parent / "shared" / "data" / "coco128"


def pytest_configure(config):
    # a user's WANDB_DIR sends every command's W&B run files there (occon_plugin.tracking.wandb_dir); the tests look
    # for them next to each run's outputs, and the one test of WANDB_DIR sets its own
    os.environ.pop("WANDB_DIR", None)


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def coco128() -> Path:
    """Root of the COCO128 sample (``images/`` + ``annotations/instances_train2017.json``)."""
    if not (COCO128 / "annotations" / "instances_train2017.json").is_file():
        pytest.skip(f"needs ../shared/data/coco128 next to the repository (not found at {COCO128.name}/); "
                    "this data is only present on the project's own machines")
    return COCO128


def _photos(size: int, names=("astronaut", "chelsea", "coffee")):
    """Real photos from scikit-image, resized to size x size, float in [0,1]."""
    import numpy as np
    import skimage.data
    import torch
    import torch.nn.functional as F

    batch = [torch.from_numpy(np.ascontiguousarray(getattr(skimage.data, n)()[..., :3])).permute(2, 0, 1) for n in names]
    return torch.cat([F.interpolate(b[None].float() / 255, size=(size, size), mode="bilinear", antialias=True)
                      for b in batch]).clamp(0, 1)


@pytest.fixture(scope="session")
def photos():
    """``photos(size, names=...)``: a batch of real photos (B,3,size,size) in [0,1]."""
    return _photos


@pytest.fixture(scope="module")
def lite0():
    """The embedded default model (EfficientNet-Lite0) as a CamModel."""
    from occon_plugin.models import load_cam_model

    return load_cam_model("efficientnet-lite0")
