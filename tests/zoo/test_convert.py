import sys
import textwrap

import pytest
import torch
import torchvision

from occon_plugin.models import model_from_record
from occon_plugin.models.checkpoint import mlp_layers
from occon_plugin.errors import CheckpointError
from occon_plugin.models.checkpoint import FORMAT
from occon_plugin.models.checkpoint import read_checkpoint as load_checkpoint
from occon_plugin.models.checkpoint import save_record as save_occon_checkpoint


def build_backbone(d):
    return model_from_record(d).backbone


def build_projector(d):
    return model_from_record(d).projector


@pytest.fixture(scope="module")
def parts():
    torch.manual_seed(0)
    net = torchvision.models.resnet18(weights=None)
    net.fc = torch.nn.Identity()
    momentum = torchvision.models.resnet18(weights=None)
    momentum.fc = torch.nn.Identity()
    proj = torch.nn.Sequential(torch.nn.Linear(512, 64), torch.nn.ReLU(), torch.nn.Linear(64, 16))
    return net.state_dict(), momentum.state_dict(), proj.state_dict()


def prefixed(prefix, state):
    return {prefix + k: v for k, v in state.items()}


def assert_same(a, b):
    assert set(a) == set(b)
    for k in a:
        assert torch.equal(a[k], b[k]), k


@pytest.mark.parametrize("enc,mom,layout", [("encoder.", "momentum_encoder.", "solo-1.0.2"),
                                            ("backbone.", "momentum_backbone.", "solo-main")])
def test_solo_lightning_layouts_round_trip(tmp_path, parts, enc, mom, layout):
    online, momentum, proj = parts
    state = {**prefixed(enc, online), **prefixed(mom, momentum), **prefixed("projector.", proj),
             **prefixed("momentum_projector.", proj), "classifier.weight": torch.zeros(10, 512)}
    torch.save({"epoch": 3, "global_step": 30, "state_dict": state,
                "hyper_parameters": {"method": "mocov2plus"}}, tmp_path / "last.ckpt")
    d = load_checkpoint(tmp_path / "last.ckpt")
    assert d["format"] == FORMAT and d["arch"] == "resnet18"
    assert d["meta"]["source_layout"] == layout and d["meta"]["epoch"] == 3
    assert d["meta"]["hparams.method"] == "mocov2plus" and d["arch_kwargs"]["cifar_stem"] is False
    assert d["family"] == "resnet" and d["normalization"]["std"][0] == (0.228 if layout == "solo-1.0.2" else 0.229)
    assert_same(d["backbone"], online)
    assert_same(d["projector"], proj)
    assert mlp_layers(d["projector"]) == [("linear", 512, 64, True), ("act",), ("linear", 64, 16, True)]
    assert_same(load_checkpoint(tmp_path / "last.ckpt", use_momentum=True)["backbone"], momentum)
    # occon -> disk -> occon is lossless, and the backbone loads strictly into torchvision
    save_occon_checkpoint(d, tmp_path / "out" / "model.pt")
    again = load_checkpoint(tmp_path / "out" / "model.pt")
    assert_same(again["backbone"], online)
    assert_same(again["projector"], proj)
    assert again["meta"] == d["meta"]
    assert_same(build_backbone(again).state_dict(), online)
    x = torch.randn(1, 512)
    ref = torch.nn.Sequential(torch.nn.Linear(512, 64), torch.nn.ReLU(), torch.nn.Linear(64, 16))
    ref.load_state_dict(proj)
    assert torch.equal(build_projector(again)(x), ref(x))
    assert not list((tmp_path / "out").glob("*.tmp"))


def bn_head(bias0):
    torch.manual_seed(1)
    head = torch.nn.Sequential(torch.nn.Linear(512, 32, bias=bias0), torch.nn.BatchNorm1d(32), torch.nn.ReLU(),
                               torch.nn.Linear(32, 8))
    head[1].running_mean.normal_()
    head[1].running_var.uniform_(0.5, 2.0)
    head[1].weight.data.normal_()
    head[1].bias.data.normal_()
    return head.eval()


def test_bare_torchvision_state_dict(tmp_path, parts):
    online, _, _ = parts
    torch.save({**online, "fc.weight": torch.zeros(1000, 512), "fc.bias": torch.zeros(1000)}, tmp_path / "tv.pth")
    d = load_checkpoint(tmp_path / "tv.pth")
    assert d["meta"]["source_layout"] == "torchvision" and d["projector"] is None
    assert_same(d["backbone"], online)


def test_byol_bn_projector_and_predictor_are_kept_exactly(tmp_path, parts):
    online, _, _ = parts
    head = bn_head(bias0=True)
    torch.manual_seed(5)
    predictor = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.BatchNorm1d(16), torch.nn.ReLU(),
                                    torch.nn.Linear(16, 8)).eval()
    torch.save({"state_dict": {**prefixed("backbone.", online), **prefixed("projector.", head.state_dict()),
                               **prefixed("predictor.", predictor.state_dict())}}, tmp_path / "byol.ckpt")
    d = load_checkpoint(tmp_path / "byol.ckpt")
    assert [l[0] for l in mlp_layers(d["projector"])] == ["linear", "bn", "act", "linear"]
    x = torch.randn(5, 512)
    loaded = model_from_record(d)
    torch.testing.assert_close(loaded.projector(x), head(x), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(loaded.predictor(head(x)), predictor(head(x)), rtol=1e-5, atol=1e-5)


def test_unknown_projector_layout_is_dropped_with_a_note(tmp_path, parts):
    online, _, _ = parts
    head = torch.nn.ModuleDict({"proj": torch.nn.Linear(512, 8)})
    torch.save({"state_dict": {**prefixed("backbone.", online), **prefixed("projector.", head.state_dict())}},
               tmp_path / "odd_head.ckpt")
    d = load_checkpoint(tmp_path / "odd_head.ckpt")
    assert d["projector"] is None
    assert "not an nn.Sequential" in d["meta"]["projector_dropped"]


def test_authors_checkpoint_with_foreign_pickled_classes_is_read_without_importing_them(tmp_path, parts):
    online, _, proj = parts
    module_dir = tmp_path / "authors_code"
    module_dir.mkdir()
    (module_dir / "authors_args.py").write_text("class Args:\n    def __init__(self):\n        self.lr = 0.3\n")
    sys.path.insert(0, str(module_dir))
    try:
        import authors_args
        head = bn_head(bias0=False)  # the authors' projector: Linear(no bias)-BN-ReLU-Linear
        state = {**prefixed("encoder.", online), **prefixed("_encoder.", online),
                 **prefixed("projector.", head.state_dict()), **prefixed("_projector.", head.state_dict()),
                 "queue": torch.zeros(16, 8)}
        ckpt = {"epoch": 799, "state_dict": state,
                "hyper_parameters": {"args": authors_args.Args(), "method": "mocov2plus"}}
        torch.save(ckpt, tmp_path / "authors.ckpt")
        # importing the module from now on would leave a trace
        sentinel = tmp_path / "imported"
        (module_dir / "authors_args.py").write_text(textwrap.dedent(f"""
            open({str(sentinel)!r}, "w").close()
            class Args:
                pass
        """))
        del sys.modules["authors_args"]
        d = load_checkpoint(tmp_path / "authors.ckpt")
    finally:
        sys.path.remove(str(module_dir))
        sys.modules.pop("authors_args", None)
    assert not sentinel.exists()
    assert d["meta"]["source_layout"] == "authors-2021" and d["meta"]["epoch"] == 799
    assert_same(d["backbone"], online)
    x = torch.randn(3, 512)
    torch.testing.assert_close(build_projector(d)(x), head(x), rtol=1e-5, atol=1e-5)


def test_cifar_stem_and_resnet50_are_recognised(tmp_path):
    net = torchvision.models.resnet50(weights=None)
    net.fc = torch.nn.Identity()
    net.conv1 = torch.nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=2, bias=False)
    torch.save({"state_dict": prefixed("backbone.", net.state_dict())}, tmp_path / "r50.ckpt")
    d = load_checkpoint(tmp_path / "r50.ckpt")
    assert d["arch"] == "resnet50" and d["arch_kwargs"]["cifar_stem"] is True and d["arch_kwargs"]["stem_padding"] == 2
    assert_same(build_backbone(d).state_dict(), net.state_dict())


def test_bad_inputs_have_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.ckpt"):
        load_checkpoint(tmp_path / "missing.ckpt")
    torch.save({"state_dict": {"head.weight": torch.zeros(2)}}, tmp_path / "odd.ckpt")
    with pytest.raises(CheckpointError, match="no known key layout.*head.weight"):
        load_checkpoint(tmp_path / "odd.ckpt")
    (tmp_path / "junk.ckpt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match=r"junk.ckpt: is not a torch checkpoint \(text\)"):
        load_checkpoint(tmp_path / "junk.ckpt")
    with pytest.raises(CheckpointError, match="lacks the key 'projector'"):
        save_occon_checkpoint({"format": FORMAT, "family": "resnet", "arch": "resnet18", "arch_kwargs": {},
                               "backbone": {"a": torch.zeros(1)}, "normalization": {}, "meta": {}}, tmp_path / "x.pt")
    assert not (tmp_path / "x.pt").exists()


def test_official_moco_layout_takes_its_head_from_fc(tmp_path, parts):
    online, momentum, proj = parts
    state = {**prefixed("module.encoder_q.", {**online, **prefixed("fc.", proj)}),
             **prefixed("module.encoder_k.", {**momentum, **prefixed("fc.", proj)}),
             "module.queue": torch.zeros(16, 4), "module.queue_ptr": torch.zeros(1, dtype=torch.long)}
    torch.save({"epoch": 800, "arch": "resnet18", "state_dict": state}, tmp_path / "moco.pth.tar")
    d = load_checkpoint(tmp_path / "moco.pth.tar")
    assert d["meta"]["source_layout"] == "moco-official" and d["meta"]["epoch"] == 800
    assert_same(d["backbone"], online)
    assert_same(d["projector"], proj)
    assert_same(load_checkpoint(tmp_path / "moco.pth.tar", use_momentum=True)["backbone"], momentum)
