"""Issue 18 kind 14: small CLI stops. A checkpoint path that is not a file is bad input (one line, exit 2) in
``occon-zoo convert`` as in every other command; the installed package says where its YAMLs are
(``python -m occon_plugin.configs``, the command docs/hosts.md and the README give for the host's scripts)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from robustness_helpers import assert_one_line_error, run_cli


@pytest.mark.kind("cli.small")
def test_a_missing_checkpoint_is_bad_input_in_every_command(tmp_path):
    for missing in (tmp_path / "nope.ckpt", tmp_path):  # no such file; a folder
        proc = run_cli("occon_plugin.cli.zoo", "convert", missing, tmp_path / "out.ckpt")
        assert_one_line_error(proc, f"checkpoint not found: {missing}")
    assert not (tmp_path / "out.ckpt").exists()
    proc = run_cli("occon_plugin.cli.eval_linear", f"model={tmp_path / 'nope.ckpt'}", f"train_dir={tmp_path}",
                   f"test_dir={tmp_path}", "wandb.enabled=false")
    assert_one_line_error(proc, "nope.ckpt", "no such file")
    proc = run_cli("occon_plugin.cli.eval_linear", f"model={tmp_path}", f"train_dir={tmp_path}",  # a run folder
                   f"test_dir={tmp_path}", "wandb.enabled=false")
    assert_one_line_error(proc, f"checkpoint not found: {tmp_path} is a folder")


@pytest.mark.kind("found.unwritable-output")
def test_an_output_file_that_is_a_folder_is_one_line_before_anything_is_written(tmp_path):
    """``occon-zoo convert SRC DST`` with DST an existing folder: a traceback (IsADirectoryError) after the
    whole file was written, before; now the one atomic writer refuses it first."""
    import torch
    import torchvision

    from occon_plugin.atomic import atomic_write_text
    from occon_plugin.errors import OutputError

    net = torchvision.models.resnet18(weights=None)
    net.fc = torch.nn.Identity()
    torch.save({"state_dict": {f"backbone.{k}": v for k, v in net.state_dict().items()}}, tmp_path / "solo.ckpt")
    folder = tmp_path / "out"
    folder.mkdir()
    proc = run_cli("occon_plugin.cli.zoo", "convert", tmp_path / "solo.ckpt", folder)
    assert_one_line_error(proc, f"cannot write {folder}: it is a folder")
    assert list(folder.iterdir()) == [] and sorted(p.name for p in tmp_path.iterdir()) == ["out", "solo.ckpt"]
    with pytest.raises(OutputError, match="it is a folder"):
        atomic_write_text(folder, "x")


@pytest.mark.kind("cli.small")
def test_the_installed_yamls_folder_is_one_command_away(tmp_path):
    def configs(*args):
        return subprocess.run([sys.executable, "-m", "occon_plugin.configs", *args], capture_output=True, text=True,
                              cwd=tmp_path, timeout=60)

    listed = configs()
    assert listed.returncode == 0
    folders = dict(line.split(": ", 1) for line in listed.stdout.strip().splitlines())
    assert set(folders) == {"pretrain", "linear", "cli"}
    pretrain = configs("pretrain")
    assert pretrain.returncode == 0 and pretrain.stdout.strip() == folders["pretrain"]
    assert (Path(folders["pretrain"]) / "coco" / "mocov2_occon.yaml").is_file()  # --config-path "$(...)/coco"
    assert (Path(folders["linear"]) / "custom" / "linear.yaml").is_file()
    assert (Path(folders["cli"]) / "localize.yaml").is_file()
    assert_one_line_error(configs("pretrian"), "usage: python -m occon_plugin.configs", "pretrian")
