"""Every object-aware method's checkpoint (the plugin's final.ckpt layout, the host's own modules) loads through
the one model path: backbone and projector give exactly the host's outputs, and ContraCAM runs on it."""
import importlib.util
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from occon_plugin import host
from occon_plugin.localize import contracam
from occon_plugin.models import load_model

_spec = importlib.util.spec_from_file_location(  # the per-method CPU-sized configs of tests/methods
    "occon_methods_conftest", Path(__file__).resolve().parents[1] / "methods" / "conftest.py")
methods_kit = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(methods_kit)
# Heads the loader does not rebuild (z = the pooled backbone feature then, recorded in the spec's meta).
NO_PROJECTOR = {"mae_occon": "reconstruction method: no projector",
                "vibcreg_occon": "projector ends in IterNorm, not Linear/BatchNorm1d"}


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    import numpy as np
    from PIL import Image

    root = tmp_path_factory.mktemp("method-ckpts")
    for i in range(4):
        Image.fromarray(np.random.default_rng(i).integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(root / f"{i}.png")
    return root


@pytest.mark.parametrize("name", methods_kit.method_params())
def test_method_checkpoint_loads_exactly_and_localizes(name, images, tmp_path):
    cfg = methods_kit.tiny_cfg(name, images)
    model = host.build_method(name, cfg).eval()
    path = tmp_path / "final.ckpt"
    torch.save({"state_dict": model.state_dict(), "occon": {"method": name, "backbone": str(cfg.backbone.name),
                                                          "cfg": OmegaConf.to_container(cfg, resolve=True)}}, path)
    loaded = load_model(str(path))
    x = torch.rand(3, 3, 32, 32)
    mean, std = torch.tensor(loaded.spec.mean).view(1, 3, 1, 1), torch.tensor(loaded.spec.std).view(1, 3, 1, 1)
    with torch.no_grad():
        feats = host.backbone_of(model)((x - mean) / std)
        torch.testing.assert_close(loaded.feature_model()(x), feats, rtol=1e-4, atol=1e-5)
        theirs = getattr(model, "projector", None) or getattr(getattr(model, "head", None), "mlp", None)
        if name in NO_PROJECTOR:
            assert loaded.projector is None
        else:
            torch.testing.assert_close(loaded.projector(feats), theirs(feats), rtol=1e-4, atol=1e-5)
    mask = contracam(loaded.cam_model(), x, iters=1, expand=loaded.spec.family == "resnet").mask
    assert mask.shape == (3, 1, 32, 32) and torch.isfinite(mask).all()
