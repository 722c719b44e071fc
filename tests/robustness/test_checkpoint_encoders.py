"""``use_momentum=true`` with a checkpoint that holds one encoder (found by trying the commands as a new user).

Before, an ``occon-zoo convert`` output (occon-ckpt: the online encoder only), a plain torchvision state_dict
or a ``random:`` / ``torchvision:`` / ``efficientnet-lite0`` model given with ``use_momentum=true`` were
evaluated with the online encoder, exit 0, no word. Now every command that reads a model (one path:
``occon_plugin.models.load_model`` -> ``read_checkpoint``) refuses it in one line; a checkpoint converted
with ``occon-zoo convert --momentum`` and a training checkpoint with both encoders load as asked."""
from __future__ import annotations

import pytest
import torch
import torchvision

from occon_plugin.errors import CheckpointError, ConfigError
from occon_plugin.models import load_model
from occon_plugin.models.checkpoint import convert_checkpoint as convert

from robustness_helpers import assert_one_line_error, run_cli


@pytest.fixture()
def solo_checkpoint(tmp_path):
    """A solo-learn (main) Lightning checkpoint with different online and momentum encoders."""
    torch.manual_seed(0)
    online, momentum = torchvision.models.resnet18(weights=None), torchvision.models.resnet18(weights=None)
    state = {**{f"backbone.{k}": v for k, v in online.state_dict().items() if not k.startswith("fc.")},
             **{f"momentum_backbone.{k}": v for k, v in momentum.state_dict().items() if not k.startswith("fc.")}}
    torch.save({"epoch": 1, "global_step": 2, "state_dict": state, "hyper_parameters": {"method": "mocov2plus"}},
               tmp_path / "last.ckpt")
    return tmp_path / "last.ckpt", online, momentum


def first_conv(loaded) -> torch.Tensor:
    return next(loaded.backbone.parameters()).detach()


@pytest.mark.kind("ckpt.one-encoder")
def test_use_momentum_with_a_single_encoder_checkpoint_is_refused_never_read_as_the_online_one(solo_checkpoint,
                                                                                              tmp_path):
    ckpt, online, momentum = solo_checkpoint
    assert torch.equal(first_conv(load_model(str(ckpt), use_momentum=True)), momentum.conv1.weight)
    convert(ckpt, tmp_path / "online.pt")
    convert(ckpt, tmp_path / "momentum.pt", use_momentum=True)
    assert torch.equal(first_conv(load_model(str(tmp_path / "momentum.pt"), use_momentum=True)),
                       momentum.conv1.weight)  # converted with --momentum: that is what it holds
    with pytest.raises(CheckpointError, match=r"online\.pt: use_momentum=true, but this occon-ckpt/2 checkpoint "
                                              r"holds only the online encoder.*occon-zoo convert --momentum"):
        load_model(str(tmp_path / "online.pt"), use_momentum=True)
    torch.save(online.state_dict(), tmp_path / "plain.pth")  # a torchvision state_dict
    with pytest.raises(CheckpointError, match=r"plain\.pth: use_momentum=true, but this is a plain backbone"):
        load_model(str(tmp_path / "plain.pth"), use_momentum=True)
    for spec in ("random:resnet18", "torchvision:resnet18", "efficientnet-lite0"):
        with pytest.raises(ConfigError, match=f"model='{spec}' has one encoder"):
            load_model(spec, use_momentum=True)
    assert torch.equal(first_conv(load_model(str(tmp_path / "online.pt"))), online.conv1.weight)  # unchanged


@pytest.mark.kind("ckpt.one-encoder")
def test_the_evaluation_command_says_it_in_one_line(solo_checkpoint, tmp_path):
    ckpt, _, _ = solo_checkpoint
    convert(ckpt, tmp_path / "online.pt")
    proc = run_cli("occon_plugin.cli.eval_linear", f"model={tmp_path / 'online.pt'}", "use_momentum=true",
                   f"train_dir={tmp_path}", f"test_dir={tmp_path}", "wandb.enabled=false")
    assert_one_line_error(proc, "online.pt", "holds only the online encoder")


@pytest.mark.kind("model.random-weights")
def test_a_named_architecture_without_weights_says_its_weights_are_random(capsys):
    """``model=torchvision:resnet50`` reads like ImageNet weights, but nothing is downloaded: localization
    and evaluation ran on random weights without a word. The one loading path says so once; ``random:``
    (the explicit spelling) stays quiet."""
    load_model("torchvision:resnet18")
    err = capsys.readouterr().err
    assert err.count("[occon] model=torchvision:resnet18 has random weights") == 1, err
    assert "model=random:resnet18 to mean it" in err
    load_model("random:resnet18")
    assert "random weights" not in capsys.readouterr().err
