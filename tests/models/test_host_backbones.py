"""The installed solo-learn's own backbone constructors (either generation) -> checkpoint -> the one loader:
same features, and ContraCAM runs. Covers what a state_dict does not say (ViT head counts per method,
Swin windows shrunk at CIFAR size)."""
import pytest
import torch

from occon_plugin import host
from occon_plugin.localize import contracam
from occon_plugin.models import load_model


def host_backbones():
    """name -> (constructor, method, input size) for this host generation."""
    if host.GENERATION == "main":
        from solo.backbones import convnext_tiny, swin_tiny, vit_tiny

        return {"vit_tiny": (lambda: vit_tiny("byol", img_size=32, patch_size=8), "byol", 32),
                "vit_tiny-mocov3": (lambda: vit_tiny("mocov3", img_size=32, patch_size=8), "mocov3", 32),
                "vit_tiny-mae": (lambda: vit_tiny("mae", img_size=32, patch_size=8), "mae", 32),
                "swin_tiny-cifar": (lambda: swin_tiny("byol", window_size=4, img_size=32), "byol", 32),
                "convnext_tiny": (lambda: convnext_tiny("byol"), "byol", 64)}
    from solo.utils.backbones import swin_tiny, vit_tiny

    return {"vit_tiny": (lambda: vit_tiny(img_size=32, patch_size=8), "byol", 32),
            "vit_tiny-mocov3": (lambda: vit_tiny(img_size=32, patch_size=8), "mocov3", 32),
            "swin_tiny-cifar": (lambda: swin_tiny(window_size=4, img_size=32), "byol", 32)}


@pytest.mark.parametrize("name", sorted(host_backbones()))
def test_host_backbone_round_trip(name, tmp_path):
    make, method, size = host_backbones()[name]
    torch.manual_seed(0)
    net = make().eval()
    prefix = host.CHECKPOINT_LAYOUTS[host.CHECKPOINT_LAYOUT]["backbone"]
    torch.save({"state_dict": {prefix + k: v for k, v in net.state_dict().items()},
                "hyper_parameters": {"cfg": {"method": method}}}, tmp_path / "host.ckpt")
    loaded = load_model(str(tmp_path / "host.ckpt"))
    assert loaded.spec.name == name.split("-")[0]
    x = torch.rand(2, 3, size, size)
    mean, std = torch.tensor(loaded.spec.mean).view(1, 3, 1, 1), torch.tensor(loaded.spec.std).view(1, 3, 1, 1)
    with torch.no_grad():
        torch.testing.assert_close(loaded.feature_model()(x), net((x - mean) / std), rtol=1e-4, atol=1e-5)
    mask = contracam(loaded.cam_model(), torch.rand(2, 3, 64, 64), iters=1).mask
    assert mask.shape == (2, 1, 64, 64) and torch.isfinite(mask).all()
