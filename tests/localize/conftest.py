"""Fixtures shared by the localization tests: real photos and the embedded default model."""
import numpy as np
import pytest
import skimage.data
import torch
import torch.nn.functional as F

from occon_plugin.localize.backbones import load_cam_model


def _photos(size: int, names=("astronaut", "chelsea", "coffee")) -> torch.Tensor:
    """Real photos from scikit-image, resized to size x size, float in [0,1]."""
    batch = [torch.from_numpy(np.ascontiguousarray(getattr(skimage.data, n)()[..., :3])).permute(2, 0, 1) for n in names]
    return torch.cat([F.interpolate(b[None].float() / 255, size=(size, size), mode="bilinear", antialias=True)
                      for b in batch]).clamp(0, 1)


@pytest.fixture(scope="session")
def photos():
    """``photos(size, names=...)``: a batch of real photos (B,3,size,size) in [0,1]."""
    return _photos


@pytest.fixture(scope="module")
def lite0():
    return load_cam_model("efficientnet-lite0")
