"""A wheel of the plugin, installed with ``pip install --no-deps`` into a throwaway environment, with no
clone anywhere near: the startup hook lands in site-packages (solo-learn sees the methods without
``import occon_plugin``), and ``occon-pretrain --config-name custom/mocov2_occon`` trains from the
YAML shipped inside the package.

The throwaway venv reuses this environment's packages (torch, solo-learn, ...) through a path entry,
the same effect as ``--system-site-packages`` off the repository venv; that entry does not run this
environment's own ``.pth`` files, so the repository's editable install stays invisible.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from occon_plugin.store import StoreEntry, StoreWriter, mask_to_u8

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow
TOP_LEVEL_IGNORED = {".venv", ".git", "build", "dist", "outputs", "trained_models", "wandb", ".pytest_cache"}


def ignore(folder, names):
    """What a clean checkout lacks: the venv, build and run outputs (at the top level), caches."""
    top = Path(folder) == REPO
    return [n for n in names if n == "__pycache__" or n.endswith(".egg-info") or (top and n in TOP_LEVEL_IGNORED)]


def sh(args, cwd, env=None, timeout=900):
    proc = subprocess.run([str(a) for a in args], capture_output=True, text=True, cwd=cwd, timeout=timeout,
                          env={**os.environ, **(env or {})})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return proc.stdout


@pytest.fixture(scope="module")
def wheel_venv(tmp_path_factory):
    root = tmp_path_factory.mktemp("wheel")
    src = root / "src"
    shutil.copytree(REPO, src, ignore=ignore)  # build from a copy: nothing written into the checkout
    sh([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", root / "dist", src],
       cwd=root)
    wheel = next((root / "dist").glob("occon_plugin-*.whl"))
    venv = root / "venv"
    sh([sys.executable, "-m", "venv", "--without-pip", venv], cwd=root)
    site = Path(sysconfig.get_path("purelib", vars={"base": str(venv), "platbase": str(venv)}))
    (site / "_this_environment.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    sh([sys.executable, "-m", "pip", "--python", venv / "bin" / "python", "install", "-q", "--no-deps", wheel],
       cwd=root)
    shutil.rmtree(src)  # no clone left anywhere
    return root, venv, site


def test_wheel_puts_the_hook_and_the_yamls_in_site_packages(wheel_venv):
    root, venv, site = wheel_venv
    assert (site / "occon_plugin_autoregister.pth").is_file()
    out = sh([venv / "bin" / "python", "-c",
              "import occon_plugin, json; from occon_plugin.cli._hydra import packaged_config_dir, "
              "packaged_config_names; print(json.dumps([occon_plugin.__file__, str(packaged_config_dir('pretrain')), "
              "packaged_config_names('pretrain'), packaged_config_names('linear')]))"], cwd=root)
    module, pretrain_dir, names, linear = json.loads(out.strip().splitlines()[-1])
    assert module.startswith(str(site)) and pretrain_dir.startswith(str(site))
    assert {"coco/mocov2_occon", "custom/byol_occon", "imagenet-9/mocov2_occon"} <= set(names)
    assert linear == ["custom/linear"]
    # the command docs/hosts.md gives for the host's own scripts: the installed YAMLs' folder
    printed = sh([venv / "bin" / "python", "-m", "occon_plugin.configs", "pretrain"], cwd=root).strip()
    assert printed == pretrain_dir and (Path(printed) / "coco" / "mocov2_occon.yaml").is_file()


def test_host_import_alone_sees_the_methods_from_the_wheel(wheel_venv):
    root, venv, _ = wheel_venv
    out = sh([venv / "bin" / "python", "-W", "ignore", "-c",
              "import sys, solo.methods as m; print('occon_plugin' in sys.modules, "
              "sorted(k for k in m.METHODS if k in ('mocov2_occon', 'byol_occon')))"], cwd=root)
    assert out.strip().splitlines()[-1] == "True ['byol_occon', 'mocov2_occon']"


def _tiny_data(root: Path) -> tuple[Path, Path]:
    images = root / "images"
    images.mkdir()
    names = []
    for i in range(4):
        image = np.zeros((40, 40, 3), np.uint8)
        image[10:30, 10:30] = (60 * i, 255, 128)
        Image.fromarray(image).save(images / f"{i}.png")
        names.append(f"{i}.png")
    writer = StoreWriter(root / "store", settings={"test": "wheel"}, model_hash="none", resume=False)
    mask = np.zeros((40, 40), np.float32)
    mask[10:30, 10:30] = 1
    for name in names:
        writer.write(StoreEntry(name, 40, 40, boxes=[[0.25, 0.25, 0.75, 0.75]], bg_rect=[0, 0, 10, 40]),
                     mask_to_u8(mask))
    writer.close(listed=len(names))
    return images, root / "store"


def test_occon_pretrain_runs_a_shipped_yaml_by_name(wheel_venv):
    root, venv, _ = wheel_venv
    work = root / "work"
    work.mkdir()
    images, store = _tiny_data(work)
    out = sh([venv / "bin" / "occon-pretrain", "--config-name", "custom/mocov2_occon", f"++data.train_path={images}",
              f"++occon.store={store}", "++optimizer.batch_size=2", "++method_kwargs.queue_size=8",
              "++method_kwargs.proj_hidden_dim=32", "++max_steps=1", "++max_epochs=1", "++data.num_workers=0",
              "++augmentations.0.crop_size=32", "++accelerator=cpu", "++wandb.enabled=false",
              "++checkpoint.dir=runs"], cwd=work)
    done = json.loads(next(l for l in out.splitlines() if "[occon] pretraining done: " in l).split(": ", 1)[1])
    run = work / "runs" / "mocov2_occon" / "mocov2_occon-custom"
    assert done["global_step"] == 1 and (run / "final.ckpt").is_file()
    args = json.loads((run / "args.json").read_text())  # solo-learn's run-folder layout (main_knn.py / main_umap.py)
    assert args["method"] == "mocov2_occon" and "wandb_run_id" in args and args["occon"]["oa_crop"]["enabled"]
