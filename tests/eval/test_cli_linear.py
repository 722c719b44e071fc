import json

import numpy as np
import torch
import torchvision
from hydra import compose, initialize_config_dir
from PIL import Image

from occon_plugin.cli.eval_bgchallenge import run as run_bg
from occon_plugin.cli.eval_common import CONFIG_DIR
from occon_plugin.cli.eval_linear import run as run_linear
from occon_plugin.eval.cococrop import crop_box
from occon_plugin.models import load_feature_model

COLOURS = {"00_red": (220, 20, 20), "01_blue": (20, 20, 220)}


def tree(root, n, seed):
    rng = np.random.default_rng(seed)
    for cls, colour in COLOURS.items():
        (root / cls).mkdir(parents=True)
        for i in range(n):
            img = np.full((40, 40, 3), (30, 160, 30), np.uint8)
            y, x = rng.integers(0, 24, 2)
            img[y:y + 16, x:x + 16] = colour
            Image.fromarray(img).save(root / cls / f"{i}.png")


def compose_cfg(name, overrides):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.2"):
        return compose(config_name=name, overrides=overrides)


def solo_checkpoint(path):
    torch.manual_seed(0)
    net = torchvision.models.resnet18(weights=None)
    net.fc = torch.nn.Identity()
    torch.save({"state_dict": {f"backbone.{k}": v for k, v in net.state_dict().items()}}, path)
    return net


def test_eval_linear_cli_from_a_solo_checkpoint(tmp_path):
    tree(tmp_path / "train", 10, seed=0)
    tree(tmp_path / "test", 5, seed=1)
    solo_checkpoint(tmp_path / "solo.ckpt")
    common = ["resize=32", "crop=32", "num_workers=0", "progress=false", "fast=true", "threads=1"]
    res = run_linear(compose_cfg("eval_linear", common + [
        f"model={tmp_path / 'solo.ckpt'}", f"train_dir={tmp_path / 'train'}", f"test_dir={tmp_path / 'test'}",
        f"output_dir={tmp_path / 'out'}"]))
    assert res["test_acc"] == 1.0 and res["n_test"] == 10 and res["feature_dim"] == 512
    saved = json.loads((tmp_path / "out" / "eval_linear.json").read_text())
    assert saved["summary"]["test_acc"] == 1.0 and len(saved["l2_table"]) == 8
    assert (tmp_path / "out" / "eval_linear.csv").read_text().startswith("model,train,test,test_acc")
    assert list((tmp_path / "out" / "wandb").glob("offline-run-*"))


def test_eval_bgchallenge_cli(tmp_path):
    root = tmp_path / "in9"
    tree(root / "original" / "train", 8, seed=0)
    tree(root / "mixed_same" / "val", 3, seed=1)
    tree(root / "mixed_rand" / "val", 3, seed=2)
    solo_checkpoint(tmp_path / "solo.ckpt")
    res = run_bg(compose_cfg("eval_bgchallenge", [
        f"model={tmp_path / 'solo.ckpt'}", f"root={root}", "variants=[mixed_same,mixed_rand]",
        f"+shift_sets.shift-9={root / 'mixed_same' / 'val'}", f"output_dir={tmp_path / 'out'}",
        "resize=32", "crop=32", "num_workers=0", "progress=false", "fast=true", "wandb.enabled=false"]))
    assert res["acc/mixed_same"] == res["acc/mixed_rand"] == res["acc/shift-9"] == 1.0
    assert res["bg_gap"] == 0.0
    rows = json.loads((tmp_path / "out" / "eval_bgchallenge.json").read_text())["rows"]
    assert [r["set"] for r in rows] == ["mixed_same", "mixed_rand", "shift-9"]


def test_efficientnet_lite0_from_the_zoo_gives_pooled_features():
    model, info = load_feature_model("efficientnet-lite0")
    assert info["arch"] == "efficientnet-lite0"
    with torch.no_grad():
        out = model.eval()(torch.zeros(1, 3, 64, 64))
    assert out.shape == (1, 1280)


def test_crop_box_margin():
    assert crop_box(10, 20, 50, 10, 100, 100, 0.2) == (0, 18, 70, 32)
    assert crop_box(80, 90, 20, 10, 100, 100, 0.2) == (76, 88, 100, 100)
