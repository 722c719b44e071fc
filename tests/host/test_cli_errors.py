"""Bad input to the pretraining / linear commands: one line naming the key or file, exit status 2.

Each case runs the real script (``scripts/pretrain/main_pretrain.py`` = ``occon-pretrain``) in a
subprocess, as a user would; errors are found before any model is built.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
PRETRAIN = REPO / "scripts" / "pretrain"
LINEAR = REPO / "scripts" / "linear"


def run(args, cwd, **kw):
    proc = subprocess.run([sys.executable, *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=300, **kw)
    return proc.returncode, proc.stderr.strip().splitlines()


@pytest.fixture(scope="module")
def small_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli_errors")
    images = root / "images"
    images.mkdir()
    for i in range(4):
        Image.fromarray(np.full((32, 32, 3), 40 * i, np.uint8)).save(images / f"{i}.png")
    store = root / "store"
    store.mkdir()
    return root, images, store


CASES = [
    ("++occon.bg_mixup.pmix=0.3", "occon.bg_mixup.pmix"),           # unknown key under occon.*
    ("++occon.missing=skipp", "occon.missing='skipp'"),              # bad enum
    ("++occon.store={root}/no-such-store", "occon.store="),          # missing store path
    ("++optimizer.batch_size=16", "optimizer.batch_size=16 is larger than the 4 images"),
    ("++optimizer.batch_size=abc", "optimizer.batch_size=abc"),
    ("++data.train_path={images}/0.png", "data.train_path="),        # an image file, not a folder
    ("++data.format=tfrecord", "data.format=tfrecord"),
]


def _overrides(root, images, store, override):
    return [f"++data.train_path={images}", f"++occon.store={store}", "++optimizer.batch_size=2",
            "++method_kwargs.queue_size=16", "++wandb.enabled=false", "++checkpoint.dir=" + str(root / "runs"),
            override.format(root=root, images=images)]


@pytest.mark.parametrize("override, key", CASES[:2] + CASES[4:5])
def test_pretraining_config_errors_are_one_line_exit_2(small_folder, override, key):
    """The real script in a subprocess: one line on stderr, exit status 2 (a few cases)."""
    root, images, store = small_folder
    args = [PRETRAIN / "main_pretrain.py", "--config-path", PRETRAIN / "custom", "--config-name", "mocov2_occon.yaml",
            *_overrides(root, images, store, override)]
    code, err = run(args, cwd=root)
    assert code == 2, "\n".join(err[-30:])
    assert len(err) == 1 and err[0].startswith("[occon] error:") and key in err[0], err


@pytest.mark.parametrize("override, key", CASES)
def test_pretraining_config_errors_name_the_key_before_training(small_folder, override, key):
    """Every case in process: an OcconError (what the script turns into that one line) naming the key,
    raised before any model or data loader is built."""
    from hydra import compose, initialize_config_dir

    from occon_plugin.cli.pretrain import pretrain
    from occon_plugin.errors import OcconError

    root, images, store = small_folder
    with initialize_config_dir(config_dir=str(PRETRAIN / "custom"), version_base="1.2"):
        cfg = compose(config_name="mocov2_occon.yaml", overrides=_overrides(root, images, store, override))
    with pytest.raises(OcconError) as err:
        pretrain(cfg)
    assert key in str(err.value)
    assert not (root / "runs").exists()  # nothing written


def test_unknown_packaged_config_lists_the_shipped_ones(tmp_path):
    code, err = run([PRETRAIN / "main_pretrain.py", "--config-name", "coco/no_such_method"], cwd=tmp_path)
    assert code == 2 and len(err) == 1 and "coco/mocov2_occon" in err[0], err


@pytest.mark.parametrize("script", [PRETRAIN / "main_pretrain.py", LINEAR / "main_linear.py"])
def test_without_solo_learn_the_host_commands_say_what_to_install(script, small_folder):
    root, images, store = small_folder
    # a Python in which `import solo` fails, as on a machine without solo-learn
    code = ("import runpy, sys; sys.modules['solo'] = None; "
            f"sys.argv = [{str(script)!r}, '--config-name', "
            f"{'coco/mocov2_occon' if 'pretrain' in script.name else 'custom/linear'!r}, "
            f"'++data.train_path={images}', '++occon.store={store}', '++pretrained_feature_extractor={script}']; "
            f"runpy.run_path({str(script)!r}, run_name='__main__')")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root, timeout=300,
                          env={"OCCON_PLUGIN_AUTOREGISTER": "0", "PATH": "/usr/bin:/bin"})
    err = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert len(err) == 1 and "solo-learn is not installed" in err[0] and "pip install" in err[0], err
