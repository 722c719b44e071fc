"""CAM splits per family: expansion trick, pooled == the network's own pooled feature, closed form vs autograd."""
import pytest
import torch
import torchvision

from occon_plugin.localize.engine import ContrastiveScore, contracam, score_gradient
from occon_plugin.localize.cam import activation_gradient_from_pooled
from occon_plugin.localize.score import contrastive_score
from occon_plugin.models import load_cam_model, load_model


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


def test_lite0_default_uses_lite_normalization_and_identity_head(lite0):
    assert lite0.spec.name == "efficientnet-lite0" and lite0.family == "efficientnet-lite"
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


@pytest.mark.parametrize("spec", ["torchvision:resnet18", "timm:convnext_atto"])
def test_engine_closed_form_equals_its_autograd_path(spec, photos):
    """The engine's closed form (CNNs) gives the gradient its autograd path (through model.pooled) gives."""
    torch.manual_seed(0)
    model = load_cam_model(spec)
    with torch.no_grad():
        acts = model.activations(photos(64))
    if not model.pool_is_mean:  # timm's ConvNeXt pools then normalizes: no closed form, and the engine knows it
        with pytest.raises(ValueError, match="closed-form"):
            score_gradient(model, acts, ContrastiveScore(0.2), [], closed_form=True)
        return
    z1, closed = score_gradient(model, acts, ContrastiveScore(0.2), [], closed_form=True)
    z2, auto = score_gradient(model, acts, ContrastiveScore(0.2), [], closed_form=False)
    assert closed.abs().max() > 0
    torch.testing.assert_close(z1, z2)
    torch.testing.assert_close(closed, auto, rtol=1e-5, atol=1e-9)


def _vit(global_pool="token"):
    torch.manual_seed(0)
    from timm.models.vision_transformer import VisionTransformer

    net = VisionTransformer(img_size=32, patch_size=8, embed_dim=192, depth=2, num_heads=3, num_classes=0,
                            global_pool=global_pool, class_token=global_pool == "token", dynamic_img_size=True)
    return net.eval()


@pytest.mark.parametrize("global_pool", ["token", "avg"])
def test_vit_split_and_autograd_gradient_match_the_network(tmp_path, photos, global_pool):
    """ViT: pooled(activations) is the network's own output; dS/dA from the engine equals autograd from the
    full forward taken at the same place (a hook on blocks[-1].norm1, as pytorch-grad-cam does)."""
    net = _vit(global_pool)
    projector = torch.nn.Sequential(torch.nn.Linear(192, 32), torch.nn.BatchNorm1d(32), torch.nn.ReLU(),
                                    torch.nn.Linear(32, 16)).eval()
    torch.save({"state_dict": {**{f"backbone.{k}": v for k, v in net.state_dict().items()},
                               **{f"projector.{k}": v for k, v in projector.state_dict().items()}}},
               tmp_path / "vit.ckpt")
    loaded = load_model(str(tmp_path / "vit.ckpt"))
    assert loaded.spec.family == "vit" and loaded.spec.arch_kwargs["global_pool"] == global_pool
    model = loaded.cam_model()
    x = photos(48)  # not the training size (32): position embeddings are interpolated to the 6x6 grid
    normalized = (x - model._mean) / model._std
    with torch.no_grad():
        acts = model.activations(x)
        assert acts.maps.shape == (3, 192, 6, 6)
        torch.testing.assert_close(model(x), projector(net(normalized)))

    captured = {}
    hook = net.blocks[-1].norm1.register_forward_hook(lambda m, i, out: captured.setdefault("a", out))
    try:
        with torch.enable_grad():
            z = projector(net(normalized))
            keys = z.detach()
            not_self = ~torch.eye(3, dtype=torch.bool)
            score = contrastive_score(z, keys, keys, 0.2, not_self)
            full = torch.autograd.grad(score.sum(), captured["a"])[0][:, net.num_prefix_tokens:]
    finally:
        hook.remove()
    full = full.transpose(1, 2).reshape(3, 192, 6, 6)
    _, grad = score_gradient(model, acts, ContrastiveScore(0.2), [])
    assert not model.pool_is_mean and full.abs().max() > 0
    torch.testing.assert_close(grad, full, rtol=1e-4, atol=1e-7)
    with pytest.warns(RuntimeWarning, match="expansion trick is skipped"):
        mask = contracam(model, x, iters=2, expand=True).mask
    assert mask.shape == (3, 1, 48, 48) and 0 <= mask.min() and mask.max() <= 1


def test_timm_resnet_has_features_and_expansion():
    model = load_cam_model("timm:resnet18")
    with torch.no_grad(), model.expansion():
        assert model.features(torch.rand(1, 3, 64, 64)).shape == (1, 512, 4, 4)


@pytest.mark.parametrize("spec, message", [
    ("resnet18", "no such file"), ("torchvision:no_such_net", "no_such_net"), ("timm:no_such_net", "no_such_net"),
    ("missing/file.ckpt", "missing/file.ckpt")])
def test_unknown_spec_is_a_clear_error(spec, message):
    from occon_plugin.errors import OcconError

    with pytest.raises(OcconError, match=message):
        load_cam_model(spec)


def _occon_v1_checkpoint(path, with_projector: bool):
    torch.manual_seed(3)
    net = torchvision.models.resnet18()
    backbone = {k: v for k, v in net.state_dict().items() if not k.startswith("fc.")}
    projector = torch.nn.Sequential(torch.nn.Linear(512, 64), torch.nn.ReLU(), torch.nn.Linear(64, 16)) \
        if with_projector else None
    torch.save({"format": "occon-ckpt/1", "arch": "resnet18", "backbone": backbone,
                "projector": projector.state_dict() if projector else None,
                "projector_dims": [512, 64, 16] if projector else None, "meta": {"method": "mocov2"}}, path)
    net.fc = torch.nn.Identity()
    return net.eval(), projector


@pytest.mark.parametrize("with_projector", [True, False])
def test_occon_v1_checkpoint_loads_backbone_and_projector(photos, tmp_path, with_projector):
    path = tmp_path / "model.pt"
    net, projector = _occon_v1_checkpoint(path, with_projector)
    model = load_cam_model(str(path))
    x = photos(64)
    normalized = torchvision.transforms.functional.normalize(x, [0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
    with torch.no_grad():
        expected = net(normalized)
        if projector is not None:
            expected = projector(expected)
        torch.testing.assert_close(model(x), expected)


def test_bad_checkpoint_contents_are_named(tmp_path):
    from occon_plugin.errors import CheckpointError

    path = tmp_path / "wrong.pt"
    torch.save({"format": "occon-ckpt/1", "arch": "resnet18", "backbone": {"conv1.weight": torch.zeros(1)},
                "projector": None, "projector_dims": None, "meta": {}}, path)
    with pytest.raises(CheckpointError, match="wrong.pt.*resnet18"):
        load_cam_model(str(path))


def test_random_init_models_are_the_same_in_every_process_and_leave_the_callers_rng_alone():
    """``model=random:resnet18`` is a reference on docs/science.md: two processes must read the same weights
    (they did not: the object probe of the reference moved 0.482 -> 0.489 between two identical runs)."""
    import subprocess
    import sys

    code = ("from occon_plugin.models.build import load_model; m = load_model('random:resnet18'); "
            "print(repr(float(sum(p.detach().double().sum() for p in m.backbone.parameters()))))")
    sums = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
            for _ in range(2)}
    assert len(sums) == 1, sums
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    load_model("random:resnet18")
    assert torch.equal(torch.rand(3), expected)  # building it consumed none of the caller's draws
