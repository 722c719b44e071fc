"""Variants by name: a CAM weight function, a score and a model family, each added by registering it in one
table, reachable from ``occon-localize`` and the presets; unknown names are one line and exit 2."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from occon_plugin.localize.cam import WEIGHTS
from occon_plugin.localize.engine import SCORES, ContrastiveScore
from occon_plugin.models import FAMILIES, IMAGENET, ModelFamily, register_family
from occon_plugin.models.cam import conv_features_cam_model

FAST = ["batch_size=4", "image_size=64", "threads=1", "progress=false", "preset=bg_mixup", "post_workers=0"]


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """Five generated images: a bright square on a textured background, at a different place in each."""
    root = tmp_path_factory.mktemp("variants") / "images"
    root.mkdir()
    rng = np.random.default_rng(0)
    for k in range(5):
        img = rng.integers(0, 90, size=(48, 56, 3), dtype=np.uint8)
        y, x = 4 + 6 * k, 30 - 5 * k
        img[y:y + 16, x:x + 18] = (230, 200 - 20 * k, 40 + 30 * k)
        Image.fromarray(img).save(root / f"img{k}.png")
    return root


def _localize_in_process(monkeypatch, *args: str) -> None:
    """``occon-localize ARGS`` as the console command runs it (its ``main``, ``sys.argv`` patched)."""
    from occon_plugin.cli.localize import main

    monkeypatch.setattr(sys, "argv", ["occon-localize", *args])
    try:
        main()
    except SystemExit as stop:  # a clean run returns; an error exits 2 with one line
        assert stop.code in (0, None), stop.code


def _masks(store: Path) -> dict:
    return {p.name: p.read_bytes() for p in sorted((store / "masks").rglob("*.png"))}


def test_a_registered_cam_weight_function_runs_from_the_cli(folder, tmp_path, monkeypatch):
    calls = []

    def first_channel(grad: torch.Tensor, activations: torch.Tensor) -> torch.Tensor:
        """All weight on channel 0: the CAM is that channel's map (hand-checkable, unlike the default)."""
        calls.append(tuple(grad.shape))
        weights = torch.zeros(grad.shape[:2], dtype=grad.dtype, device=grad.device)
        weights[:, 0] = 1.0
        return weights

    monkeypatch.setitem(WEIGHTS, "first_channel", first_channel)  # the one line a new variant needs
    base = [f"data.path={folder}", *FAST]
    _localize_in_process(monkeypatch, *base, f"output_dir={tmp_path / 'mine'}", "cam.weights=first_channel")
    _localize_in_process(monkeypatch, *base, f"output_dir={tmp_path / 'paper'}")
    assert calls and all(len(shape) == 4 for shape in calls)  # called once per batch and iteration
    manifest = json.loads((tmp_path / "mine" / "manifest.json").read_text())
    assert manifest["settings"]["cam"]["weights"] == "first_channel" and manifest["counts"]["ok"] == 5
    paper = json.loads((tmp_path / "paper" / "manifest.json").read_text())
    assert "weights" not in paper["settings"]["cam"]  # the paper's variant: recorded as before variants existed
    mine, theirs = _masks(tmp_path / "mine"), _masks(tmp_path / "paper")
    assert mine.keys() == theirs.keys() and len(mine) == 5
    assert any(mine[k] != theirs[k] for k in mine)  # the variant's masks are its own


def test_a_registered_cam_weight_function_equals_its_hand_computed_map(monkeypatch):
    """The CAM of ``first_channel`` weights is channel 0 of the activations, min-max normalised (paper Eq. 2
    with alpha = e_0), upsampled to the input."""
    from occon_plugin.localize.cam import cam_from_weights, weights_for

    monkeypatch.setitem(WEIGHTS, "first_channel", lambda g, a: torch.nn.functional.one_hot(
        torch.zeros(g.shape[0], dtype=torch.long), g.shape[1]).to(g.dtype))
    acts = torch.arange(2 * 3 * 2 * 2, dtype=torch.float32).reshape(2, 3, 2, 2)
    got = cam_from_weights(acts, weights_for(True, "first_channel")(torch.ones_like(acts), acts))
    want = torch.tensor([[0.0, 1 / 3], [2 / 3, 1.0]]).expand(2, 1, 2, 2)
    torch.testing.assert_close(got, want)


def test_gradcam_plus_plus_weights_by_hand():
    """Constant gradient g per channel (a GAP model's closed form): a = g^2 / (2 g^2 + S g^3) with S the channel's
    activation sum, w = h*w * a * ReLU(g); a channel with g = 0 or g < 0 weighs 0."""
    from occon_plugin.localize.cam import gradcam_plus_plus_weights

    acts = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]], [[0.5, 0.5], [0.5, 0.5]], [[1.0, 1.0], [1.0, 1.0]]]])
    grad = torch.tensor([0.5, 0.0, -1.0])[None, :, None, None].expand(1, 3, 2, 2)
    got = gradcam_plus_plus_weights(grad, acts, eps=0.0)
    a0 = 0.25 / (2 * 0.25 + 10.0 * 0.125)
    torch.testing.assert_close(got, torch.tensor([[4 * a0 * 0.5, 0.0, 0.0]]))


def test_a_registered_score_runs_through_cam_masks():
    from occon_plugin.localize.presets import PRESETS
    from occon_plugin.localize.refine import cam_masks
    from occon_plugin.models import load_cam_model

    made = []

    def hot_contrastive(cam) -> ContrastiveScore:
        made.append(cam.temperature)
        return ContrastiveScore(cam.temperature * 2)

    torch.manual_seed(0)
    model = load_cam_model("random:resnet18")
    images = torch.rand(3, 3, 32, 32)
    cam = PRESETS["bg_mixup"].cam
    SCORES["hot"] = hot_contrastive
    try:
        import dataclasses

        hot = cam_masks(model, images, dataclasses.replace(cam, score="hot"))
        same = cam_masks(model, images, dataclasses.replace(cam, temperature=cam.temperature * 2))
    finally:
        del SCORES["hot"]
    assert made == [cam.temperature]
    torch.testing.assert_close(hot.mask, same.mask)


@pytest.mark.parametrize("key,name", [("cam.weights", "gradcam-plus"), ("cam.score", "entropy")])
def test_an_unknown_variant_is_one_line_listing_the_known_ones(folder, tmp_path, key, name):
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run([sys.executable, "-m", "occon_plugin.cli.localize", f"data.path={folder}",
                           f"output_dir={tmp_path / 'store'}", *FAST, f"{key}={name}"],
                          capture_output=True, text=True, env=env, timeout=300)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2 and len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    known = sorted(WEIGHTS if key == "cam.weights" else SCORES)
    assert f"{key}={name!r}" in lines[0] and str(known) in lines[0], lines[0]
    assert not (tmp_path / "store").exists()  # refused before anything is written


class TinyNet(nn.Module):
    """Two strided convolutions; ``features`` gives the (B,K,h,w) maps, ``forward`` the pooled (B,K)."""

    def __init__(self, width: int = 8):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, width, 3, stride=2, padding=1), nn.ReLU(),
                                      nn.Conv2d(width, width, 3, stride=2, padding=1), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x).mean(dim=(2, 3))


def _tiny_family() -> ModelFamily:
    return ModelFamily("tiny", build=lambda arch, kwargs: TinyNet(**kwargs),
                       cam=lambda spec, backbone, head: conv_features_cam_model(spec, backbone, "features", head),
                       preset="bg_mixup", what="a two-layer test net")


def _tiny_checkpoint(path: Path) -> Path:
    torch.manual_seed(0)
    net = TinyNet(width=8)
    torch.save({"format": "occon-ckpt/2", "family": "tiny", "arch": "tinynet", "arch_kwargs": {"width": 8},
                "backbone": net.state_dict(), "projector": None, "projector_activation": "relu", "predictor": None,
                "normalization": IMAGENET.as_dict(), "meta": {}}, path)
    return path


def test_a_registered_model_family_localizes_with_its_own_preset(folder, tmp_path, monkeypatch):
    from occon_plugin.localize.runner import run_localize
    from occon_plugin.localize.settings import LocalizeSettings
    from occon_plugin.models import load_model

    ckpt = _tiny_checkpoint(tmp_path / "tiny.pt")
    monkeypatch.setitem(FAMILIES, "tiny", None)  # restored after the test
    register_family(_tiny_family())
    loaded = load_model(str(ckpt))
    assert (loaded.spec.family, loaded.spec.name) == ("tiny", "tinynet")
    assert loaded.feature_model()(torch.rand(2, 3, 32, 32)).shape == (2, 8)
    s = LocalizeSettings(model=str(ckpt), image_size=64, batch_size=4, threads=1, progress=False, post_workers=0)
    s.data.path, s.output_dir = str(folder), str(tmp_path / "store")
    summary = run_localize(s)
    assert summary["preset"] == "bg_mixup" and summary["written_ok"] == 5  # preset=auto: the family's


def test_a_checkpoint_of_an_unregistered_family_is_one_line(tmp_path, monkeypatch):
    from occon_plugin.errors import CheckpointError
    from occon_plugin.models import load_model

    ckpt = _tiny_checkpoint(tmp_path / "tiny.pt")
    monkeypatch.delitem(FAMILIES, "tiny", raising=False)
    with pytest.raises(CheckpointError, match=r"model family 'tiny' is not supported.*'resnet'"):
        load_model(str(ckpt))
