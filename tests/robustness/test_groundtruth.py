"""Item 3 (+6, 9): ground truth is validated; any disagreement between ground truth, image file and
store mask is named per image, never resolved by resizing; box-only data still gives box metrics."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from PIL import Image

from occon_plugin.cli.eval_common import CONFIG_DIR
from occon_plugin.cli.eval_localization import run as run_eval
from occon_plugin.errors import DataError
from occon_plugin.eval.groundtruth import iter_coco

from robustness_helpers import assert_one_line_error, copy_tree, photo, run_cli

NAMES = ["a_rgb.jpg", "b_rgb.png", "c_rgb.jpg", "d_rgb.webp", "p_exif6.jpg"]


def square(x, y, s):
    return [x, y, x + s, y, x + s, y + s, x, y + s]


def coco_json(path: Path, images: list[dict], anns: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"images": images, "annotations": anns, "categories": [{"id": 1, "name": "thing"}]}))
    return path


def good_gt(tmp_path: Path, sizes=None, extra_anns=(), names=NAMES) -> Path:
    sizes = sizes or {}
    images, anns = [], []
    for i, name in enumerate(names, start=1):
        w, h = sizes.get(name, (48, 40))
        images.append({"id": i, "file_name": name, "width": w, "height": h})
        anns.append({"id": 100 + i, "image_id": i, "category_id": 1, "iscrowd": 0, "bbox": [10, 8, 20, 16],
                     "area": 320, "segmentation": [square(10, 8, 16)]})
    return coco_json(tmp_path / "annotations" / "gt.json", images, [*anns, *extra_anns])


def evaluate(tmp_path, gt, predictions, image_root, *extra):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.2"):
        cfg = compose("eval_localization", overrides=[f"predictions={predictions}", f"gt={gt}",
                                                      f"image_root={image_root}", f"output_dir={tmp_path / 'out'}",
                                                      "progress=false", "overlays=0", "wandb.enabled=false",
                                                      "boxes.interval=0.1", *extra])
    return run_eval(cfg)


@pytest.mark.kind("gt.degenerate-polygon")
@pytest.mark.kind("gt.bad-bbox")
def test_degenerate_polygons_and_bad_boxes_are_left_out_by_name(tmp_path, mixed, mixed_store, capsys):
    bad = [{"id": 901, "image_id": 1, "category_id": 1, "iscrowd": 0, "bbox": [1, 1, 5, 5], "area": 1,
            "segmentation": [[3, 3, 9, 9], square(1, 1, 5)]},                                  # a 2-point polygon
           {"id": 902, "image_id": 2, "category_id": 1, "iscrowd": 0, "bbox": [30, 20, -4, 5], "area": 1,
            "segmentation": [square(30, 20, 4)]},                                              # inverted box
           {"id": 903, "image_id": 3, "category_id": 1, "iscrowd": 0, "bbox": [float("nan"), 1, 2, 2],
            "area": 1, "segmentation": [square(1, 1, 2)]}]
    gt = good_gt(tmp_path, extra_anns=bad)
    records = {g.path: g for g in iter_coco(gt, mixed.root)}
    assert records["a_rgb.jpg"].problems == ["a_rgb.jpg annotation 901: 1 degenerate polygon(s) (fewer than 3 "
                                             "points, odd or non-finite coordinates) left out"]
    assert "annotation 902: bbox [30, 20, -4, 5] is empty or inverted" in records["b_rgb.png"].problems[0]
    assert "annotation 903: bbox" in records["c_rgb.jpg"].problems[0]
    assert records["a_rgb.jpg"].mask[1:6, 1:6].all()  # the annotation's good polygon is kept
    summary = evaluate(tmp_path, gt, mixed_store, mixed.root)
    assert summary["n_images"] == 5 and summary["max_box_acc_v2"] >= 0
    assert "[occon] 3 annotation(s) left out of the ground truth, e.g. a_rgb.jpg annotation 901" in \
        capsys.readouterr().out


@pytest.mark.kind("gt.box-only")
def test_box_only_ground_truth_still_gives_box_metrics(tmp_path, mixed, mixed_store, capsys):
    gt = good_gt(tmp_path)
    data = json.loads(gt.read_text())
    for ann in data["annotations"]:
        ann["segmentation"] = []
    gt.write_text(json.dumps(data))
    assert all(g.mask is None and len(g.boxes) == 1 for g in iter_coco(gt, mixed.root))
    summary = evaluate(tmp_path, gt, mixed_store, mixed.root)
    assert summary["n_without_gt_mask"] == 5 and "mask_miou@0.5" not in summary
    assert 0 <= summary["max_box_acc_v2"] <= 1 and 0 <= summary["corloc"] <= 1
    assert "5 image(s) have box-only ground truth" in capsys.readouterr().out
    # mixed: one box-only image among annotated ones -> mask mIoU over the other four
    data["annotations"][0]["segmentation"] = [square(10, 8, 16)]
    gt.write_text(json.dumps(data))
    summary = evaluate(tmp_path, gt, mixed_store, mixed.root)
    assert summary["n_without_gt_mask"] == 4 and "mask_miou@0.5" in summary


@pytest.mark.kind("gt.size-mismatch")
def test_ground_truth_of_another_size_or_orientation_is_named(tmp_path, mixed, mixed_store):
    gt = good_gt(tmp_path, sizes={"b_rgb.png": (50, 40), "p_exif6.jpg": (40, 48)})  # EXIF: raw pixel frame
    with pytest.raises(DataError) as info:
        evaluate(tmp_path, gt, mixed_store, mixed.root)
    msg = str(info.value)
    assert msg.startswith("2 image(s) where ground truth, image and prediction disagree")
    assert "b_rgb.png (ground truth says 50x40, the image is 48x40)" in msg
    assert "p_exif6.jpg (ground truth is 40x48 = the file's stored pixels, but its EXIF orientation 6" in msg
    summary = evaluate(tmp_path, gt, mixed_store, mixed.root, "mismatch=skip")
    assert summary["n_mismatched"] == 2 and summary["n_images"] == 3
    out = json.loads((tmp_path / "out" / "eval_localization.json").read_text())
    assert [m.split(" ")[0] for m in out["mismatched"]] == ["b_rgb.png", "p_exif6.jpg"]
    proc = run_cli("occon_plugin.cli.eval_localization", f"predictions={mixed_store}", f"gt={gt}",
                   f"image_root={mixed.root}", f"output_dir={tmp_path / 'cli'}", "wandb.enabled=false",
                   "progress=false")
    assert_one_line_error(proc, "b_rgb.png", "p_exif6.jpg", "mismatch=skip")


@pytest.mark.kind("gt.size-mismatch")
def test_mask_folder_of_another_size_is_one_line(tmp_path, mixed):
    images = tmp_path / "images"
    images.mkdir()
    masks = tmp_path / "masks"
    masks.mkdir()
    for name in ["a.png", "b.png"]:
        Image.fromarray(photo("coffee")).save(images / name)
        Image.fromarray(np.zeros((40, 48), np.uint8)).save(masks / name)
    Image.fromarray(np.zeros((30, 30), np.uint8)).save(masks / "b.png")
    (tmp_path / "cams").mkdir()
    proc = run_cli("occon_plugin.cli.eval_localization", f"predictions={tmp_path / 'cams'}", f"gt={masks}",
                   f"image_root={images}", f"output_dir={tmp_path / 'cli'}", "wandb.enabled=false")
    assert_one_line_error(proc, "b.png is 30x30", "48x40")


@pytest.mark.kind("gt.store-mismatch")
def test_store_of_other_photos_or_sizes_is_never_resized(tmp_path, mixed, mixed_store):
    root = copy_tree(mixed.root, tmp_path / "data")
    Image.fromarray(photo("coins")).save(root / "a_rgb.jpg")            # same size, another photo
    Image.fromarray(photo("clock", (96, 80))).save(root / "b_rgb.png")  # another size (GT says so too)
    gt = good_gt(tmp_path, sizes={"b_rgb.png": (96, 80)})
    with pytest.raises(DataError) as info:
        evaluate(tmp_path, gt, mixed_store, root)
    msg = str(info.value)
    assert "a_rgb.jpg (store mask was computed from another file than this image" in msg
    assert "b_rgb.png (store mask is 48x40, ground truth 96x80)" in msg


@pytest.mark.kind("gt.store-mismatch")
def test_images_absent_under_image_root_are_said_checked_by_size_only(tmp_path, mixed, mixed_store, capsys):
    """A wrong image_root (a typo, another copy) left the 'computed from this photo' check out without a word."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "a_rgb.jpg").write_bytes((mixed.root / "a_rgb.jpg").read_bytes())  # only one of the five is here
    evaluate(tmp_path, good_gt(tmp_path), mixed_store, elsewhere)
    lines = [l for l in capsys.readouterr().out.splitlines() if "checked by size only" in l]
    assert lines == [f"[occon] 4 of the scored images are not under {elsewhere} (e.g. b_rgb.png): their store masks "
                     f"were checked by size only, not that they were computed from these photos; give "
                     f"image_root=<the folder localized> to check them (JSON: unverified)"]
    saved = json.loads((tmp_path / "out" / "eval_localization.json").read_text())
    assert saved["unverified"] == ["b_rgb.png", "c_rgb.jpg", "d_rgb.webp", "p_exif6.jpg"]
    evaluate(tmp_path, good_gt(tmp_path), mixed_store, mixed.root)  # the right folder: every mask checked
    assert "checked by size only" not in capsys.readouterr().out


@pytest.mark.kind("gt.missing-prediction")
def test_ground_truth_without_predictions_is_never_a_silent_partial_score(tmp_path, mixed, mixed_store, capsys):
    gt = good_gt(tmp_path, names=[*NAMES, "q_zero.jpg"])                   # failed at localization
    store = copy_tree(mixed_store, tmp_path / "store")
    lines = (store / "index.jsonl").read_text().splitlines(keepends=True)
    (store / "index.jsonl").write_text("".join(l for l in lines if '"c_rgb.jpg"' not in l))
    manifest = json.loads((store / "manifest.json").read_text())
    manifest["counts"]["written"] -= 1  # a store that never had c_rgb.jpg (not a torn one)
    (store / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(DataError, match=r"1 ground-truth image\(s\) have no prediction: c_rgb.jpg.*missing=skip"):
        evaluate(tmp_path, gt, store, mixed.root)
    summary = evaluate(tmp_path, gt, store, mixed.root, "missing=skip")
    assert (summary["n_images"], summary["n_missing"], summary["n_failed"]) == (4, 1, 1)
    out = capsys.readouterr().out
    assert "[occon] scored 4 of 6 ground-truth images: 1 without a prediction, 1 unreadable at localization" in out
    assert "without a prediction: c_rgb.jpg" in out and "unreadable at localization: q_zero.jpg" in out
