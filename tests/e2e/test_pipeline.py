"""End to end on real photos, through the user-facing scripts:
occon-localize -> main_pretrain.py (OA-Crop + BG-Mixup, image_folder and DALI CPU) -> main_linear.py.
"""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from occon_plugin.cli.demo import make_probe_dataset
from occon_plugin.images.bundled import export_skimage_photos

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = REPO / "scripts"
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "motorcycle_left", "camera", "coins", "immunohistochemistry")

pytestmark = pytest.mark.slow


def run(args, cwd):
    proc = subprocess.run([sys.executable, *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return proc.stdout + proc.stderr


def done_line(output: str, marker: str) -> dict:
    line = next(l for l in reversed(output.splitlines()) if marker in l)
    return json.loads(line.split(marker, 1)[1])


@pytest.fixture(scope="module")
def photos_and_store(tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e")
    photos = root / "photos"
    export_skimage_photos(photos, names=PHOTOS, max_side=256)
    store = root / "store"
    # a fast preset (T=2, no CRF) keeps the test short; the demo runs the paper's preset
    run([SCRIPTS / "localize" / "main_localize.py", f"data.path={photos}", f"output_dir={store}",
         "cam.iters=2", "refine.method=none", "batch_size=8", "image_size=160", "progress=false"], cwd=root)
    return root, photos, store


def pretrain_cmd(method, photos, store, out, fmt, steps=3):
    kw = (["++method_kwargs.queue_size=32", "++method_kwargs.proj_hidden_dim=64"] if method == "mocov2_occon"
          else ["++method_kwargs.proj_hidden_dim=64", "++method_kwargs.pred_hidden_dim=64"])
    return [SCRIPTS / "pretrain" / "main_pretrain.py", "--config-path", SCRIPTS / "pretrain" / "custom",
            "--config-name", f"{method}.yaml", f"++name=e2e-{fmt}", f"++data.train_path={photos}",
            f"++data.format={fmt}", "++data.num_workers=0", "++dali.device=cpu", f"++occon.store={store}",
            "++occon.oa_crop.enabled=true", "++occon.bg_mixup.enabled=true", "++optimizer.batch_size=4",
            f"++max_steps={steps}", "++max_epochs=50", "++augmentations.0.crop_size=64", "++accelerator=cpu",
            f"++checkpoint.dir={out}", "++wandb.enabled=true", "++wandb.offline=true", *kw]


def pretrain(root, photos, store, method, fmt) -> Path:
    out = root / f"trained-{method}-{fmt}"
    log = run(pretrain_cmd(method, photos, store, out, fmt), cwd=root)
    result = done_line(log, "[occon] pretraining done: ")
    ckpt = Path(result["checkpoint"])
    assert result["global_step"] == 3 and ckpt.is_file()
    assert list((ckpt.parent / "wandb").glob("offline-run-*")), "W&B offline run files next to the checkpoint"
    pictures = list((ckpt.parent / "wandb").glob("offline-run-*/files/media/images/occon/augmentations*"))
    assert pictures, "the picture of the object-aware views (both pipelines)"
    assert (ckpt.parent / "args.json").is_file()  # solo-learn's run-folder layout
    return ckpt


def linear_steps(root, photos, ckpt) -> int:
    probe = make_probe_dataset(sorted(photos.glob("*.jpg")), root / "probe", crops_per_split=(2, 1))
    log = run([SCRIPTS / "linear" / "main_linear.py", "--config-path", SCRIPTS / "linear" / "custom",
               "--config-name", "linear.yaml", f"++pretrained_feature_extractor={ckpt}",
               f"++data.train_path={probe / 'train'}", "++data.num_workers=0", "++optimizer.batch_size=4",
               "++max_steps=2", "++max_epochs=1", "++data.augmentations.crop_size=64", "++accelerator=cpu",
               f"++checkpoint.dir={root / 'linear'}", "++wandb.enabled=false"], cwd=root)
    return done_line(log, "[occon] linear evaluation done: ")["global_step"]


@pytest.fixture(scope="module")
def mocov2_checkpoint(photos_and_store):
    root, photos, store = photos_and_store
    return pretrain(root, photos, store, "mocov2_occon", "image_folder")


def test_mocov2_occon_image_folder_then_linear(photos_and_store, mocov2_checkpoint):
    root, photos, store = photos_and_store
    assert len((store / "index.jsonl").read_text().splitlines()) == len(PHOTOS)
    assert linear_steps(root, photos, mocov2_checkpoint) == 2


def test_byol_occon_dali_cpu_then_linear(photos_and_store):
    root, photos, store = photos_and_store
    ckpt = pretrain(root, photos, store, "byol_occon", "dali")
    assert linear_steps(root, photos, ckpt) == 2


@pytest.mark.parametrize("layout", ["solo-1.0.2", "solo-main"])
def test_zoo_converts_a_pretrained_checkpoint_and_localizes_with_it(photos_and_store, mocov2_checkpoint, layout,
                                                                   tmp_path):
    import torch

    from occon_plugin import host

    root, photos, _ = photos_and_store
    src = mocov2_checkpoint
    ours = host.CHECKPOINT_LAYOUTS[host.CHECKPOINT_LAYOUT]
    if layout != host.CHECKPOINT_LAYOUT:  # the other generation's key names, same weights
        theirs = host.CHECKPOINT_LAYOUTS[layout]
        ckpt = torch.load(src, map_location="cpu", weights_only=False)
        renamed = {}
        for key, value in ckpt["state_dict"].items():
            for part in ("momentum_backbone", "backbone"):
                if key.startswith(ours[part]):
                    key = theirs[part] + key[len(ours[part]):]
                    break
            renamed[key] = value
        ckpt["state_dict"] = renamed
        src = tmp_path / "other-layout.ckpt"
        torch.save(ckpt, src)
    converted = tmp_path / "mocov2.occon.pt"
    run([REPO / "occon_plugin" / "cli" / "zoo.py", "convert", src, converted], cwd=tmp_path)
    store = tmp_path / "store"
    run([SCRIPTS / "localize" / "main_localize.py", f"data.path={photos}", f"output_dir={store}",
         f"model={converted}", "cam.iters=1", "refine.method=none", "batch_size=8", "image_size=96",
         "progress=false"], cwd=tmp_path)
    entries = [json.loads(l) for l in (store / "index.jsonl").read_text().splitlines()]
    assert len(entries) == len(PHOTOS) and all(e["status"] == "ok" for e in entries)
    manifest = json.loads((store / "manifest.json").read_text())
    assert manifest["model"] == str(converted)


def test_store_for_another_folder_is_rejected_before_training(photos_and_store, tmp_path):
    root, photos, store = photos_and_store
    other = tmp_path / "other"
    export_skimage_photos(other, names=("astronaut", "retina", "hubble_deep_field", "clock"), max_side=128)
    proc = subprocess.run([sys.executable, *map(str, pretrain_cmd("mocov2_occon", other, store, tmp_path / "t",
                                                                  "image_folder"))],
                          capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert proc.returncode != 0
    message = proc.stdout + proc.stderr
    assert "3" in message and "retina.jpg" in message  # how many and which images lack an entry
    assert "Epoch 0" not in message  # nothing trained


def test_interrupted_pretraining_resumes_from_last_checkpoint(photos_and_store, tmp_path):
    root, photos, store = photos_and_store
    base = [a for a in pretrain_cmd("mocov2_occon", photos, store, tmp_path / "t", "image_folder", steps=2)
            if not str(a).startswith("++max_steps")]
    # 8 photos / batch 4 = 2 steps per epoch: the first run stops after epoch 0 with last.ckpt written
    first = done_line(run(base + ["++max_steps=2", "++auto_resume.enabled=true"], cwd=tmp_path),
                      "[occon] pretraining done: ")
    assert first["global_step"] == 2
    log = run(base + ["++max_steps=4", "++auto_resume.enabled=true"], cwd=tmp_path)
    assert "[occon] resuming from" in log and "last.ckpt" in log
    assert done_line(log, "[occon] pretraining done: ")["global_step"] == 4
