"""End to end on real photos, through the user-facing scripts:
occon-localize -> main_pretrain.py (OA-Crop + BG-Mixup, image_folder and DALI CPU) -> main_linear.py.
"""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from occon_plugin.cli.demo import export_skimage_photos, make_probe_dataset

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
         "cam.iters=2", "crf.enabled=false", "batch_size=8", "image_size=160", "progress=false"], cwd=root)
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


@pytest.mark.parametrize("method,fmt", [("mocov2_occon", "image_folder"), ("byol_occon", "dali")])
def test_localize_pretrain_linear(photos_and_store, method, fmt):
    root, photos, store = photos_and_store
    assert len((store / "index.jsonl").read_text().splitlines()) == len(PHOTOS)
    out = root / f"trained-{method}-{fmt}"
    log = run(pretrain_cmd(method, photos, store, out, fmt), cwd=root)
    result = done_line(log, "[occon] pretraining done: ")
    ckpt = Path(result["checkpoint"])
    assert result["global_step"] == 3 and ckpt.is_file()
    assert list((ckpt.parent / "wandb").glob("offline-run-*")), "W&B offline run files next to the checkpoint"

    probe = make_probe_dataset(sorted(photos.glob("*.jpg")), root / "probe", crops_per_split=(2, 1))
    log = run([SCRIPTS / "linear" / "main_linear.py", "--config-path", SCRIPTS / "linear" / "custom",
               "--config-name", "linear.yaml", f"++pretrained_feature_extractor={ckpt}",
               f"++data.train_path={probe / 'train'}", "++data.num_workers=0", "++optimizer.batch_size=4",
               "++max_steps=2", "++max_epochs=1", "++crop_size=64", "++accelerator=cpu",
               f"++output_dir={root / 'linear'}", "++wandb.enabled=false"], cwd=root)
    assert done_line(log, "[occon] linear evaluation done: ")["global_step"] == 2


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
