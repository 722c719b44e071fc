"""A misspelled key given without ``++`` (``max_epoch=1``), a malformed override or an unknown backbone name
on the pretraining / linear commands: one line naming the key, exit 2 (found by trying them: Hydra's
multi-line message with exit 1, and a bare ``AssertionError`` from the host for the backbone)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
PRETRAIN = REPO / "scripts" / "pretrain" / "main_pretrain.py"
LINEAR = REPO / "scripts" / "linear" / "main_linear.py"


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    root = tmp_path_factory.mktemp("typos") / "images"
    root.mkdir()
    for i in range(4):
        Image.fromarray(np.full((32, 32, 3), 40 * i, np.uint8)).save(root / f"{i}.png")
    return root


CASES = {
    "pretrain key without ++": (PRETRAIN, "custom/mocov2_occon", ["max_epoch=1"], ["'max_epoch'", "++max_epoch="]),
    "pretrain nested key": (PRETRAIN, "custom/mocov2_occon", ["optimizer.lrr=0.1"], ["'optimizer.lrr'"]),
    "pretrain malformed": (PRETRAIN, "custom/mocov2_occon", ["a=="], ["'a=='"]),
    "pretrain backbone": (PRETRAIN, "custom/mocov2_occon", ["++backbone.name=resnet19"],
                          ["backbone.name=resnet19", "resnet18"]),
    "linear key without ++": (LINEAR, "custom/linear", ["max_epoch=1"], ["'max_epoch'"]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_typos_are_one_line_exit_2(case, images):
    script, name, extra, needles = CASES[case]
    args = [sys.executable, str(script), "--config-name", name, f"++data.train_path={images}",
            f"++occon.store={images.parent / 'store'}", "++occon.oa_crop.enabled=false",
            "++occon.bg_mixup.enabled=false", "++optimizer.batch_size=2", "++wandb.enabled=false",
            f"++checkpoint.dir={images.parent / 'runs'}", f"++pretrained_feature_extractor={images / '0.png'}",
            *extra]
    proc = subprocess.run(args, capture_output=True, text=True, cwd=images.parent, timeout=300)
    lines = [line for line in proc.stderr.splitlines() if line.startswith("[occon] error:")]
    assert proc.returncode == 2 and len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    assert not (images.parent / "runs").exists()
