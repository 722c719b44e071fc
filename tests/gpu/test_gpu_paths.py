"""The GPU paths (marker ``gpu``; ``bench/gpu_check.sh`` runs ``pytest -m gpu``).

On a CUDA machine they run on the GPU. With ``OCCON_GPU_DRY_RUN=1`` (``bench/gpu_check.sh
--cpu-dry-run``, run in CI) the same code runs on the CPU, so an import or API error in these paths
is caught without a GPU; the comparisons are then CPU against CPU. Otherwise they skip, saying why.
The DALI GPU pipeline cases live in ``tests/augment/test_dali_pipeline.py`` (also marked ``gpu``).
"""
from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = REPO / "scripts"
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "motorcycle_left", "camera")

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def device() -> str:
    if torch.cuda.is_available():
        return "cuda"
    if os.environ.get("OCCON_GPU_DRY_RUN") == "1":
        return "cpu"
    pytest.skip("no CUDA device (bench/gpu_check.sh OUT --cpu-dry-run runs these on the CPU)")


@pytest.fixture
def exact_float32():
    """No TF32 on Ampere+/Hopper: CUDA results must match the CPU's float32 closely."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


@pytest.mark.parametrize("expand", [False, True])
def test_contracam_on_the_device_equals_cpu(device, exact_float32, lite0, photos, expand):
    from occon_plugin.localize import contracam

    images = photos(160, names=PHOTOS[:4])
    on_cpu = contracam(lite0, images, iters=3, expand=expand).mask
    model = copy.deepcopy(lite0).to(device)
    on_device = contracam(model, images.to(device), iters=3, expand=expand).mask.cpu()
    assert on_device.shape == on_cpu.shape == (4, 1, 160, 160)
    assert (on_device - on_cpu).abs().max().item() < 2e-3
    agree = ((on_device >= 0.5) == (on_cpu >= 0.5)).float().mean().item()
    assert agree > 0.995, f"binarized masks agree on only {agree:.4f} of the pixels"


def test_contracam_bf16_on_the_device_is_close_to_fp32(device, lite0, photos):
    from occon_plugin.localize import contracam

    images = photos(160, names=PHOTOS[:4]).to(device)
    model = copy.deepcopy(lite0).to(device)
    fp32 = contracam(model, images, iters=3).mask.float()
    bf16 = contracam(model.to(torch.bfloat16), images.to(torch.bfloat16), iters=3).mask.float()
    assert torch.isfinite(bf16).all() and bf16.min() >= 0 and bf16.max() <= 1
    agree = ((bf16 >= 0.5) == (fp32 >= 0.5)).float().mean().item()
    assert agree > 0.95, f"bf16 and fp32 binarized masks agree on only {agree:.4f} of the pixels"


def _run(args, cwd):
    proc = subprocess.run([sys.executable, *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def photos_and_store(device, tmp_path_factory):
    from occon_plugin.images.bundled import export_skimage_photos

    root = tmp_path_factory.mktemp("gpu")
    folder = root / "photos"
    export_skimage_photos(folder, names=PHOTOS, max_side=256)
    store = root / "store"
    _run([SCRIPTS / "localize" / "main_localize.py", f"data.path={folder}", f"output_dir={store}",
          "cam.iters=2", "refine.method=none", "batch_size=6", "image_size=128", f"device={device}",
          "progress=false"], cwd=root)
    return root, folder, store


@pytest.mark.parametrize("method", ["mocov2_occon", "byol_occon"])
@pytest.mark.parametrize("data_format", ["image_folder", "dali"])
def test_a_training_step_on_the_device(device, photos_and_store, method, data_format):
    if data_format == "dali":
        pytest.importorskip("nvidia.dali", reason="nvidia-dali is not installed")
    root, folder, store = photos_and_store
    out = root / f"trained-{method}-{data_format}"
    kw = (["++method_kwargs.queue_size=64", "++method_kwargs.proj_hidden_dim=64"] if method == "mocov2_occon"
          else ["++method_kwargs.proj_hidden_dim=64", "++method_kwargs.pred_hidden_dim=64"])
    log = _run([SCRIPTS / "pretrain" / "main_pretrain.py", "--config-path", SCRIPTS / "pretrain" / "custom",
                "--config-name", f"{method}.yaml", f"++name=gpu-{data_format}", f"++data.train_path={folder}",
                f"++data.format={data_format}", "++data.num_workers=0",
                f"++dali.device={'gpu' if device == 'cuda' else 'cpu'}", f"++occon.store={store}",
                "++occon.oa_crop.enabled=true", "++occon.bg_mixup.enabled=true", "++occon.bg_mixup.p_mix=1.0",
                "++optimizer.batch_size=4", "++max_steps=2", "++max_epochs=10", "++augmentations.0.crop_size=64",
                f"++accelerator={'gpu' if device == 'cuda' else 'cpu'}", f"++checkpoint.dir={out}",
                "++wandb.enabled=false", *kw], cwd=root)
    marker = "[occon] pretraining done: "
    done = json.loads(next(l for l in reversed(log.splitlines()) if marker in l).split(marker, 1)[1])
    assert done["global_step"] == 2
    state = torch.load(done["checkpoint"], map_location="cpu", weights_only=False)["state_dict"]
    assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())
