"""Checkpoints of every supported layout -> the same model: CIFAR stem, ViT, wrapper prefixes, clear refusals."""
import pytest
import torch
import torchvision

from occon_plugin.errors import CheckpointError
from occon_plugin.models import load_model, read_checkpoint
from occon_plugin.models.normalization import CIFAR10, IMAGENET, IMAGENET_SOLO_1_0_2


def solo_resnet(cifar: bool, arch: str = "resnet18"):
    """A ResNet built the way solo-learn builds its backbones (both generations: base.py)."""
    torch.manual_seed(1)
    net = getattr(torchvision.models, arch)(weights=None)
    net.fc = torch.nn.Identity()
    if cifar:
        net.conv1 = torch.nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=2, bias=False)
        net.maxpool = torch.nn.Identity()
    return net.eval()


def mlp():
    torch.manual_seed(2)
    return torch.nn.Sequential(torch.nn.Linear(512, 64), torch.nn.ReLU(), torch.nn.Linear(64, 16)).eval()


def prefixed(prefix, state):
    return {prefix + k: v for k, v in state.items()}


def features_equal(loaded, net, x, normalization=IMAGENET):
    normalized = (x - torch.tensor(normalization.mean).view(1, 3, 1, 1)) / torch.tensor(normalization.std).view(1, 3, 1, 1)
    with torch.no_grad():
        torch.testing.assert_close(loaded.feature_model()(x), net(normalized))


@pytest.mark.parametrize("cifar", [True, False])
@pytest.mark.parametrize("layout", ["solo-1.0.2", "solo-main"])
def test_resnet_with_and_without_cifar_stem_localizes(tmp_path, photos, cifar, layout):
    """The CIFAR stem is rebuilt (it used to fail with `size mismatch for conv1.weight`)."""
    net, head = solo_resnet(cifar), mlp()
    enc = "encoder." if layout == "solo-1.0.2" else "backbone."
    hp = {"cfg": {"method": "mocov2plus", "backbone": {"name": "resnet18", "kwargs": {}},
                  "data": {"dataset": "cifar10" if cifar else "custom"}}}
    torch.save({"state_dict": {**prefixed(enc, net.state_dict()), **prefixed("projector.", head.state_dict())},
                "hyper_parameters": hp}, tmp_path / "last.ckpt")
    loaded = load_model(str(tmp_path / "last.ckpt"))
    assert loaded.spec.name == "resnet18" and loaded.spec.family == "resnet"
    assert loaded.spec.arch_kwargs["cifar_stem"] is cifar and loaded.spec.meta["source_layout"] == layout
    expected = CIFAR10 if cifar else (IMAGENET if layout == "solo-main" else IMAGENET_SOLO_1_0_2)
    assert loaded.spec.normalization == expected
    x = photos(32)
    features_equal(loaded, net, x, loaded.spec.normalization)
    cam = loaded.cam_model()
    from occon_plugin.localize import contracam

    mask = contracam(cam, x, iters=2, expand=True).mask
    assert mask.shape == (3, 1, 32, 32) and torch.isfinite(mask).all()
    with torch.no_grad():
        # stride 8 (solo-learn's padding 2 grows 32 to 34 first) vs 32
        assert cam.features(x).shape[-2:] == ((5, 5) if cifar else (1, 1))
        with cam.expansion():
            assert cam.features(x).shape[-2:] == ((9, 9) if cifar else (2, 2))


def test_solo_1_0_2_checkpoints_get_its_own_imagenet_constants(tmp_path):
    """solo-learn 1.0.2's own scripts normalized with std 0.228; main (and the plugin) with 0.229."""
    net = solo_resnet(False)
    torch.save({"state_dict": prefixed("encoder.", net.state_dict()),
                "hyper_parameters": {"method": "mocov2plus", "encoder": "resnet18", "dataset": "custom"}},
               tmp_path / "host.ckpt")
    assert load_model(str(tmp_path / "host.ckpt")).spec.normalization.std == (0.228, 0.224, 0.225)
    torch.save({"state_dict": prefixed("encoder.", net.state_dict()), "hyper_parameters": {
        "method": "mocov2plus", "encoder": "resnet18", "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}},
        tmp_path / "own.ckpt")
    assert load_model(str(tmp_path / "own.ckpt")).spec.normalization.std == (0.25, 0.25, 0.25)


def test_bare_timm_vit_and_solo_vit_layouts(tmp_path, photos):
    from timm.models.vision_transformer import VisionTransformer

    torch.manual_seed(0)
    vit = VisionTransformer(img_size=32, patch_size=8, embed_dim=192, depth=2, num_heads=3, num_classes=0).eval()
    torch.save(vit.state_dict(), tmp_path / "bare.pth")
    torch.save({"state_dict": prefixed("encoder.", vit.state_dict()),
                "hyper_parameters": {"method": "byol", "encoder": "vit_tiny"}}, tmp_path / "solo.ckpt")
    for name in ("bare.pth", "solo.ckpt"):
        loaded = load_model(str(tmp_path / name))
        assert loaded.spec.name == "vit_tiny" and loaded.spec.family == "vit"
        assert loaded.spec.arch_kwargs["patch_size"] == 8 and loaded.spec.arch_kwargs["img_size"] == 32
        features_equal(loaded, vit, photos(32), loaded.spec.normalization)


@pytest.mark.parametrize("wrap", ["dataparallel", "compile-whole", "compile-backbone", "ddp-of-compiled"])
def test_wrapper_prefixes_are_stripped_before_layout_detection(tmp_path, photos, wrap):
    """`module.` (DDP / DataParallel) and `_orig_mod.` (torch.compile), from the real wrappers."""
    net, head = solo_resnet(False), mlp()
    method = torch.nn.Module()
    method.backbone, method.projector = net, head
    if wrap == "dataparallel":
        state = torch.nn.DataParallel(method).state_dict()
        expect = {"module.": len(method.state_dict())}
    elif wrap == "compile-whole":
        state = torch.compile(method).state_dict()
        expect = {"_orig_mod.": len(method.state_dict())}
    elif wrap == "compile-backbone":
        method.backbone = torch.compile(net)
        state = method.state_dict()
        expect = {"_orig_mod.": len(net.state_dict())}
    else:
        state = torch.nn.DataParallel(torch.compile(method)).state_dict()
        expect = {"module.": len(state), "_orig_mod.": len(state)}
    assert any(k.startswith(tuple(expect)) or "._orig_mod." in k for k in state)
    torch.save({"state_dict": state}, tmp_path / "wrapped.ckpt")
    record = read_checkpoint(tmp_path / "wrapped.ckpt")
    assert record["meta"]["source_layout"] == "solo-main" and record["meta"]["stripped_prefixes"] == expect
    loaded = load_model(str(tmp_path / "wrapped.ckpt"))
    features_equal(loaded, net, photos(32))
    with torch.no_grad():
        torch.testing.assert_close(loaded.projector(torch.ones(2, 512)), head(torch.ones(2, 512)))


def test_refusals_name_what_is_supported_and_never_blame_the_layout_for_wrappers(tmp_path):
    import timm

    poolformer = timm.create_model("poolformer_s12", pretrained=False, num_classes=0)
    state = {f"module._orig_mod.backbone.{k}": v for k, v in poolformer.state_dict().items()}
    torch.save({"state_dict": state, "hyper_parameters": {"cfg": {"backbone": {"name": "poolformer_s12"}}}},
               tmp_path / "poolformer.ckpt")
    with pytest.raises(CheckpointError) as err:
        load_model(str(tmp_path / "poolformer.ckpt"))
    text = str(err.value)
    assert "poolformer.ckpt" in text and "'poolformer_s12' is not supported" in text
    assert all(word in text for word in ("ResNet", "ViT", "Swin", "ConvNeXt"))
    assert "layout" not in text and "module." not in text

    torch.save({"state_dict": {"module.head.weight": torch.zeros(2)}}, tmp_path / "odd.ckpt")
    with pytest.raises(CheckpointError, match="no known key layout.*head.weight") as err:
        read_checkpoint(tmp_path / "odd.ckpt")
    assert "module.head" not in str(err.value)  # the keys are shown as they are once unwrapped


@pytest.mark.parametrize("family", ["swin", "convnext"])
def test_swin_and_convnext_checkpoints(tmp_path, photos, family):
    """solo-learn's swin_* / convnext_* are timm models: rebuilt from their weights, any input size."""
    from timm.models.convnext import ConvNeXt
    from timm.models.swin_transformer import SwinTransformer

    torch.manual_seed(0)
    if family == "swin":
        net = SwinTransformer(img_size=64, patch_size=4, embed_dim=48, depths=(1, 1), num_heads=(3, 6),
                              window_size=4, num_classes=0).eval()
    else:
        net = ConvNeXt(depths=(1, 1, 1, 1), dims=(16, 32, 48, 64), num_classes=0).eval()
    torch.save({"state_dict": prefixed("backbone.", net.state_dict())}, tmp_path / f"{family}.ckpt")
    loaded = load_model(str(tmp_path / f"{family}.ckpt"))
    assert loaded.spec.family == family
    features_equal(loaded, net, photos(64))
    cam = loaded.cam_model()
    with torch.no_grad():
        acts = cam.activations(photos(64))
        torch.testing.assert_close(cam.pooled(acts), loaded.feature_model()(photos(64)))
    from occon_plugin.localize import contracam

    mask = contracam(cam, photos(80), iters=2).mask  # 80: not a multiple of the Swin window grid
    assert mask.shape == (3, 1, 80, 80) and torch.isfinite(mask).all() and mask.max() == 1


def test_pickled_hydra_config_is_read_without_importing_it(tmp_path):
    """A Lightning checkpoint whose hyper-parameters are a pickled DictConfig: read through the inert
    stand-ins (never unpickled as OmegaConf objects), it still tells the dataset, hence the normalization."""
    from omegaconf import OmegaConf

    from occon_plugin.models.normalization import CIFAR100

    cfg = OmegaConf.create({"method": "byol", "backbone": {"name": "resnet18", "kwargs": {}},
                            "data": {"dataset": "cifar100"}})
    torch.save({"state_dict": prefixed("backbone.", solo_resnet(True).state_dict()), "hyper_parameters": {"cfg": cfg}},
               tmp_path / "hydra.ckpt")
    loaded = load_model(str(tmp_path / "hydra.ckpt"))
    assert loaded.spec.normalization == CIFAR100 and loaded.spec.method == "byol"


def test_a_file_that_is_not_a_checkpoint_says_what_it_is(tmp_path):
    """A photo, a text file or an empty file given as the model: one short line naming what the file holds (torch's
    own message was about weights_only and pickle opcodes, and advised unpickling with weights_only=False)."""
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, "JPEG")
    files = {"photo.ckpt": (buf.getvalue(), "a JPEG image"), "notes.ckpt": (b"model: resnet18\n", "text"),
             "empty.ckpt": (b"", "an empty file")}
    for name, (data, kind) in files.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(CheckpointError) as err:
            read_checkpoint(tmp_path / name)
        text = str(err.value)
        assert f"{name}: is not a torch checkpoint ({kind})" in text and "weights_only" not in text, text
    torch.save({"x": torch.zeros(1)}, tmp_path / "real.pt")  # a torch file that is cut short: torch's cause, short
    (tmp_path / "torn.pt").write_bytes((tmp_path / "real.pt").read_bytes()[:40])
    with pytest.raises(CheckpointError, match=r"torn\.pt: cannot be read as a torch checkpoint") as err:
        read_checkpoint(tmp_path / "torn.pt")
    assert "\n" not in str(err.value) and len(str(err.value)) < 500
