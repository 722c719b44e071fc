"""Real data: ContraCAM masks from the CLI on COCO128 against the union of the instance masks.

Kept cheap for 2 CPU cores: the first 64 images (one batch of negatives), 128 px input,
3 iterations, no CRF. The full default run is reported in the localize docs/report, not here.
"""
import contextlib
import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from pycocotools.coco import COCO

from occon_plugin.cli.localize import CONFIG_DIR, settings_from_config
from occon_plugin.eval.masks import best_threshold_sweep, mask_miou
from occon_plugin.localize.runner import run_localize
from occon_plugin.store import Store

N_IMAGES = 64
SETTINGS = ["image_size=128", "cam.iters=3", "refine.method=none", "batch_size=64", "progress=false"]


def _centre_gaussian(height: int, width: int, sigma: float = 0.25) -> np.ndarray:
    yy, xx = np.mgrid[:height, :width]
    return np.exp(-0.5 * (((yy - (height - 1) / 2) / (sigma * height)) ** 2
                          + ((xx - (width - 1) / 2) / (sigma * width)) ** 2))


@pytest.mark.slow
@pytest.mark.shared_data
def test_contracam_beats_centre_prior_and_no_nsr_on_coco128(coco128, tmp_path):
    ann = json.loads((coco128 / "annotations" / "instances_train2017.json").read_text())
    images = sorted(ann["images"], key=lambda i: i["file_name"])[:N_IMAGES]
    ids = {i["id"] for i in images}
    subset = {**ann, "images": images, "annotations": [a for a in ann["annotations"] if a["image_id"] in ids]}
    subset_json = tmp_path / "subset.json"
    subset_json.write_text(json.dumps(subset))
    data = [f"data.path={subset_json}", f"data.image_root={coco128 / 'images'}"]

    nsr_store = tmp_path / "nsr"
    proc = subprocess.run([sys.executable, "-m", "occon_plugin.cli.localize", *data, f"output_dir={nsr_store}",
                           *SETTINGS], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    no_nsr_store = tmp_path / "no_nsr"
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.2"):
        cfg = compose("localize", overrides=[*data, f"output_dir={no_nsr_store}", *SETTINGS, "cam.nsr=false"])
    run_localize(settings_from_config(cfg))

    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(str(subset_json))
    by_name = {i["file_name"]: i["id"] for i in images}

    def union_of_instances(name: str) -> np.ndarray:
        info = coco.imgs[by_name[name]]
        gt = np.zeros((info["height"], info["width"]), dtype=bool)
        for a in coco.loadAnns(coco.getAnnIds(imgIds=by_name[name])):
            gt |= coco.annToMask(a) > 0
        return gt

    names = sorted(by_name)
    gts = [union_of_instances(n) for n in names]
    nsr, no_nsr = Store.open(nsr_store), Store.open(no_nsr_store)
    assert all(nsr.entries[n].ok for n in names)
    scores = {}
    for label, preds in [("contracam", [nsr.load_mask(n) for n in names]),
                         ("no_nsr", [no_nsr.load_mask(n) for n in names]),
                         ("centre_gaussian", [_centre_gaussian(*g.shape) for g in gts])]:
        scores[label] = (mask_miou(preds, gts, 0.5), best_threshold_sweep(preds, gts)[1])
    print("mIoU at 0.5 / at each method's best threshold:", scores)
    for other in ("no_nsr", "centre_gaussian"):
        assert scores["contracam"][0] > scores[other][0] + 0.05, (other, scores)
        assert scores["contracam"][1] > scores[other][1], (other, scores)
