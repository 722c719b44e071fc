"""The localization report (scripts/eval/localization_report.py) on a COCO128 subset, and the report helpers."""
from __future__ import annotations

import importlib.util
import json
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from occon_plugin.eval.report import image_grid, markdown_table, save_png_palette

SUBSET = 6
VARIANTS = "contracam_t3,classifier_cam,gaussian_prior,whole_image"


@pytest.fixture(scope="module")
def report(repo_root):
    spec = importlib.util.spec_from_file_location("localization_report",
                                                  repo_root / "scripts" / "eval" / "localization_report.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    threads = torch.get_num_threads()
    yield module
    torch.set_num_threads(threads)  # the report pins torch to --threads
    sys.modules.pop(spec.name, None)


def _run(report, coco128, folder):
    return report.main(["--data", str(coco128), "--out", str(folder / "out"), "--limit", str(SUBSET),
                        "--batch-size", "4", "--variants", VARIANTS, "--results-md", str(folder / "results.md"),
                        "--figure", str(folder / "img" / "overlays.png"), "--figure-images", "3"])


@pytest.mark.slow
@pytest.mark.shared_data
def test_report_numbers_repeat_exactly_and_are_written(report, coco128, tmp_path):
    first = _run(report, coco128, tmp_path / "a")
    second = _run(report, coco128, tmp_path / "b")
    assert first["rows"] == second["rows"]  # bit-identical numbers on a rerun
    rows = {r["variant"]: r for r in first["rows"]}
    assert list(rows) == VARIANTS.split(",")
    for row in rows.values():
        assert row["n_images"] == SUBSET and row["n_missing"] == 0
        for key in ("miou@0.5", "max_box_acc_v2", "box_acc@0.3", "box_acc@0.5", "box_acc@0.7", "corloc"):
            assert 0.0 <= row[key] <= 1.0, (row["variant"], key, row[key])
        assert row["box_acc@0.3"] >= row["box_acc@0.5"] >= row["box_acc@0.7"]

    saved = json.loads((tmp_path / "a" / "out" / "localization_report.json").read_text())
    assert saved["rows"] == json.loads(json.dumps(first["rows"]))
    md = (tmp_path / "a" / "results.md").read_text()
    assert "| variant | mIoU@0.5 |" in md and "![overlays](img/overlays.png)" in md
    assert f"| ContraCAM T=3 | {rows['contracam_t3']['miou@0.5']:.3f} |" in md
    assert "--limit 6" in md and "/tmp/" not in md  # the command, without machine paths
    figure = tmp_path / "a" / "img" / "overlays.png"
    assert 0 < figure.stat().st_size < 300_000


@pytest.mark.shared_data
def test_whole_image_miou_is_the_mean_object_fraction(report, coco128, tmp_path):
    # Hand-checkable: IoU(all pixels, GT) = |GT| / |image|; computed here straight from pycocotools.
    from pycocotools.coco import COCO

    out = report.main(["--data", str(coco128), "--out", str(tmp_path), "--limit", "5", "--variants", "whole_image",
                       "--results-md", str(tmp_path / "r.md"), "--figure", ""])
    coco = COCO(str(coco128 / "annotations" / "instances_train2017.json"))
    first = sorted(coco.dataset["images"], key=lambda im: im["file_name"])[:5]
    fractions = []
    for info in first:
        union = np.zeros((info["height"], info["width"]), dtype=bool)
        for ann in coco.loadAnns(coco.getAnnIds(imgIds=[info["id"]])):
            union |= coco.annToMask(ann).astype(bool)
        fractions.append(union.mean())
    assert out["rows"][0]["miou@0.5"] == pytest.approx(float(np.mean(fractions)), abs=1e-12)


@pytest.mark.slow
@pytest.mark.shared_data
def test_crf_of_the_stored_soft_mask_equals_the_runners_crf(report, coco128, tmp_path):
    # The report refines the CRF-off store; that must be what the runner writes with crf.enabled=true.
    from occon_plugin.localize.runner import CamSettings, CrfSettings, DataSettings, LocalizeSettings, run_localize
    from occon_plugin.images import load_image
    from occon_plugin.store import Store

    json_path = report.dataset_json(coco128, 4, tmp_path)
    images_dir = coco128 / "images"
    args = SimpleNamespace(batch_size=4, seed=0, threads=1, progress=False)
    soft = report.run_contracam(report.CamRun(1), json_path, images_dir, tmp_path / "soft", args)
    images = {rel: load_image(images_dir, rel) for rel in soft}
    ours = report.crf_maps(soft, images, workers=1)
    run_localize(LocalizeSettings(data=DataSettings(path=str(json_path), image_root=str(images_dir)),
                                  output_dir=str(tmp_path / "crf"), cam=CamSettings(iters=1),
                                  crf=CrfSettings(enabled=True), batch_size=4, device="cpu", threads=1,
                                  progress=False))
    store = Store.open(tmp_path / "crf")
    assert sorted(store.entries) == sorted(ours) and len(ours) == 4
    for rel, mask in ours.items():
        np.testing.assert_array_equal(mask, store.load_mask(rel), err_msg=rel)
    assert any((ours[r] != soft[r]).any() for r in ours)  # the CRF did change the masks


def test_markdown_table_formats_floats_and_missing_values():
    text = markdown_table([{"a": "x|y", "b": 0.12345}, {"a": "z", "b": None}], [("a", "name"), ("b", "score")],
                          digits=2)
    assert text == "| name | score |\n| --- | --- |\n| x\\|y | 0.12 |\n| z | – |\n"


def test_image_grid_layout_and_small_png(tmp_path):
    red = np.zeros((20, 40, 3), np.uint8)
    red[..., 0] = 255
    blue = np.zeros((10, 10, 3), np.uint8)
    blue[..., 2] = 255
    grid = image_grid([[red, blue], [blue, red]], ["a", "b"], tile_height=10, gap=2, title_height=5)
    # columns as wide as their widest tile (20 px for a 40x20 tile at height 10), 2 px gaps
    assert grid.shape == (5 + 2 * (10 + 2) + 2, 2 + 20 + 2 + 20 + 2, 3)
    assert tuple(grid[5 + 2 + 5, 2 + 10]) == (255, 0, 0)  # first row, first column: the red tile
    assert tuple(grid[5 + 2 + 12 + 5, 2 + 10]) == (0, 0, 255)  # second row, first column: blue, centred
    assert tuple(grid[5 + 2 + 12 + 5, 2]) == (255, 255, 255)  # left of the narrower blue tile: background
    path = save_png_palette(grid, tmp_path / "g.png")
    from PIL import Image

    with Image.open(path) as img:
        assert img.mode == "P" and img.size == (grid.shape[1], grid.shape[0])
        np.testing.assert_array_equal(np.asarray(img.convert("RGB")), grid)  # 3 colours: lossless
