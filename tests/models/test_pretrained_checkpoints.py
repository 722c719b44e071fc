"""Checkpoints written by the plugin's own pretraining script load and localize through `occon-localize`:
a CIFAR-stem ResNet-18 (mocov2_occon) and a ViT (byol_occon: projector + predictor), tiny crops, 1 CPU step."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from occon_plugin.images.bundled import export_skimage_photos

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = REPO / "scripts"
pytestmark = pytest.mark.slow


def run(args, cwd):
    proc = subprocess.run([sys.executable, *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def photos_and_store(tmp_path_factory):
    root = tmp_path_factory.mktemp("ckpts")
    photos = root / "photos"
    export_skimage_photos(photos, names=("astronaut", "chelsea", "coffee", "rocket"), max_side=128)
    run([SCRIPTS / "localize" / "main_localize.py", f"data.path={photos}", f"output_dir={root / 'store'}",
         "model=torchvision:resnet18", "cam.iters=1", "refine.method=none", "batch_size=4", "image_size=64",
         "progress=false"], cwd=root)
    return root, photos, root / "store"


def cifar_stem_override():
    from occon_plugin import host

    # solo-learn 1.0.2 takes the CIFAR stem from backbone kwargs; main from the dataset name
    return "++backbone.kwargs.cifar=true" if host.GENERATION == "1.0.2" else "++data.dataset=cifar10"


CASES = {
    "resnet18-cifar": ("mocov2_occon", [cifar_stem_override, "++method_kwargs.queue_size=16",
                                        "++method_kwargs.proj_hidden_dim=32"]),
    "vit_tiny": ("byol_occon", ["++backbone.name=vit_tiny", "++backbone.kwargs.img_size=32",
                                "++backbone.kwargs.patch_size=8", "++method_kwargs.proj_hidden_dim=32",
                                "++method_kwargs.pred_hidden_dim=32"]),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_pretrain_script_checkpoint_localizes(photos_and_store, case):
    root, photos, store = photos_and_store
    method, extra = CASES[case]
    extra = [e() if callable(e) else e for e in extra]
    log = run([SCRIPTS / "pretrain" / "main_pretrain.py", "--config-path", SCRIPTS / "pretrain" / "custom",
               "--config-name", f"{method}.yaml", f"++name={case}", f"++data.train_path={photos}",
               "++data.num_workers=0", f"++occon.store={store}", "++optimizer.batch_size=2", "++max_steps=1",
               "++max_epochs=1", "++augmentations.0.crop_size=32", "++accelerator=cpu",
               f"++checkpoint.dir={root / 'trained'}", "++wandb.enabled=false", *extra], cwd=root)
    line = next(l for l in reversed(log.splitlines()) if "[occon] pretraining done: " in l)
    ckpt = Path(json.loads(line.split("[occon] pretraining done: ", 1)[1])["checkpoint"])
    if not ckpt.is_absolute():
        ckpt = root / ckpt

    from occon_plugin.models import load_model

    loaded = load_model(str(ckpt))
    assert loaded.spec.method == method and loaded.projector is not None
    if case == "vit_tiny":
        assert loaded.spec.family == "vit" and loaded.spec.name == "vit_tiny" and loaded.predictor is not None
    else:
        assert loaded.spec.family == "resnet" and loaded.spec.arch_kwargs["cifar_stem"] is True
    # the model is the one the host trained: the host's own module on the same weights gives the same features
    from occon_plugin import host

    raw = torch.load(ckpt, map_location="cpu", weights_only=False)
    trained = host.build_method(method, OmegaConf.create(raw["occon"]["cfg"]))
    trained.load_state_dict(raw["state_dict"])
    x = torch.rand(2, 3, 32, 32)
    mean, std = torch.tensor(loaded.spec.mean).view(1, 3, 1, 1), torch.tensor(loaded.spec.std).view(1, 3, 1, 1)
    with torch.no_grad():
        torch.testing.assert_close(loaded.feature_model()(x), host.backbone_of(trained).eval()((x - mean) / std))

    out = root / f"store-{case}"
    run([SCRIPTS / "localize" / "main_localize.py", f"data.path={photos}", f"output_dir={out}", f"model={ckpt}",
         "cam.iters=2", "refine.method=none", "batch_size=4", "image_size=64", "progress=false"], cwd=root)
    entries = [json.loads(l) for l in (out / "index.jsonl").read_text().splitlines()]
    assert len(entries) == 4 and all(e["status"] == "ok" for e in entries)
