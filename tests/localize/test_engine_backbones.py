"""Backbones for CAM: expansion trick, checkpoint loading, closed-form gradient on the real model."""
import pytest
import torch
import torchvision

from occon_plugin.localize.backbones import OCCON_CKPT_FORMAT, build_projector, load_cam_model
from occon_plugin.localize.cam import activation_gradient_from_pooled
from occon_plugin.localize.score import contrastive_score






@pytest.mark.parametrize("spec", ["torchvision:resnet18", "efficientnet-lite0"])
def test_expansion_doubles_resolution_and_is_undone(spec, lite0):
    model = lite0 if spec == "efficientnet-lite0" else load_cam_model(spec)
    x = torch.rand(1, 3, 224, 224)
    with torch.no_grad():
        assert model.features(x).shape[-2:] == (7, 7)
        with model.expansion():
            assert model.features(x).shape[-2:] == (14, 14)
        assert model.features(x).shape[-2:] == (7, 7)
        with model.expansion(enabled=False):
            assert model.features(x).shape[-2:] == (7, 7)
        with pytest.raises(RuntimeError, match="boom"), model.expansion():
            raise RuntimeError("boom")
        assert model.features(x).shape[-2:] == (7, 7)  # restored after an exception too


def test_resnet50_expansion_uses_the_bottleneck_stride():
    model = load_cam_model("torchvision:resnet50")
    block = model.trunk.layer4[0]
    with model.expansion():
        assert block.conv2.stride == (1, 1) and block.downsample[0].stride == (1, 1)
    assert block.conv2.stride == (2, 2) and block.downsample[0].stride == (2, 2)


def test_lite0_default_uses_lite_normalisation_and_identity_head(lite0):
    assert lite0.mean == pytest.approx((127 / 255,) * 3) and lite0.std == pytest.approx((128 / 255,) * 3)
    pooled = torch.randn(2, 1280)
    assert torch.equal(lite0.head(pooled), pooled)


def test_closed_form_gradient_on_the_real_lite0(photos, lite0):
    x = photos(64).requires_grad_(True)  # query = astronaut; the other two photos are its negatives
    with torch.enable_grad():
        activations = lite0.features(x)
        z = lite0.head(lite0.pool(activations))
        keys = z.detach()
        score = contrastive_score(z[:1], keys[:1], keys[1:], 0.2)
        full = torch.autograd.grad(score.sum(), activations)[0][:1]

        pooled = lite0.pool(activations.detach()[:1]).requires_grad_(True)
        head_only = contrastive_score(lite0.head(pooled), keys[:1], keys[1:], 0.2)
        grad_pooled = torch.autograd.grad(head_only.sum(), pooled)[0]
    assert activations.shape[-2:] == (2, 2) and full.abs().max() > 0
    torch.testing.assert_close(activation_gradient_from_pooled(grad_pooled, (2, 2)), full, rtol=1e-4, atol=1e-9)


def _occon_checkpoint(path, with_projector: bool):
    torch.manual_seed(3)
    net = torchvision.models.resnet18()
    backbone = {k: v for k, v in net.state_dict().items() if not k.startswith("fc.")}
    projector = build_projector([512, 64, 16]) if with_projector else None
    torch.save({"format": OCCON_CKPT_FORMAT, "arch": "resnet18", "backbone": backbone,
                "projector": projector.state_dict() if projector else None,
                "projector_dims": [512, 64, 16] if projector else None, "meta": {"method": "mocov2"}}, path)
    net.fc = torch.nn.Identity()
    return net.eval(), projector


@pytest.mark.parametrize("with_projector", [True, False])
def test_occon_checkpoint_loads_backbone_and_projector(photos, tmp_path, with_projector):
    path = tmp_path / "model.pt"
    net, projector = _occon_checkpoint(path, with_projector)
    model = load_cam_model(str(path))
    x = photos(64)
    normalized = torchvision.transforms.functional.normalize(x, [0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
    with torch.no_grad():
        expected = net(normalized)
        if projector is not None:
            expected = projector(expected)
        torch.testing.assert_close(model(x), expected)


def test_bad_checkpoint_contents_are_named(tmp_path):
    path = tmp_path / "wrong.pt"
    torch.save({"format": OCCON_CKPT_FORMAT, "arch": "resnet18", "backbone": {"conv1.weight": torch.zeros(1)}}, path)
    with pytest.raises(ValueError, match="wrong.pt.*resnet18"):
        load_cam_model(str(path))


@pytest.mark.parametrize("spec", ["resnet18", "torchvision:no_such_net", "timm:no_such_net", "missing/file.ckpt"])
def test_unknown_spec_is_a_clear_error(spec):
    with pytest.raises(ValueError, match="no_such_net|resnet18|missing/file.ckpt"):
        load_cam_model(spec)


def test_timm_resnet_has_features_and_expansion():
    model = load_cam_model("timm:resnet18")
    with torch.no_grad(), model.expansion():
        assert model.features(torch.rand(1, 3, 64, 64)).shape == (1, 512, 4, 4)
