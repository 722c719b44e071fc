import json
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from PIL import Image

from occon_plugin.cli.eval_common import CONFIG_DIR
from occon_plugin.cli.eval_localization import run as run_localization
from occon_plugin.eval.groundtruth import iter_coco, iter_ground_truth, iter_mask_folder
from occon_plugin.eval.localization import evaluate_localization
from occon_plugin.eval.predictions import CamFolder, StorePredictions, open_predictions
from occon_plugin.store import StoreEntry, StoreWriter


def tiny_coco(tmp_path):
    """One 20x10 image with two rectangle polygons (x 2..6, y 1..4) and (x 10..15, y 5..8)."""
    (tmp_path / "images").mkdir()
    Image.fromarray(np.full((10, 20, 3), 128, np.uint8)).save(tmp_path / "images" / "a.png")
    anns = [{"id": 1, "image_id": 7, "category_id": 1, "iscrowd": 0, "area": 12.0, "bbox": [2, 1, 4, 3],
             "segmentation": [[2, 1, 6, 1, 6, 4, 2, 4]]},
            {"id": 2, "image_id": 7, "category_id": 1, "iscrowd": 0, "area": 15.0, "bbox": [10, 5, 5, 3],
             "segmentation": [[10, 5, 15, 5, 15, 8, 10, 8]]}]
    data = {"images": [{"id": 7, "file_name": "a.png", "width": 20, "height": 10}], "annotations": anns,
            "categories": [{"id": 1, "name": "thing"}]}
    (tmp_path / "annotations").mkdir()
    path = tmp_path / "annotations" / "instances.json"
    path.write_text(json.dumps(data))
    return path


def test_coco_ground_truth_is_union_of_instances_and_xyxy_boxes(tmp_path):
    [gt] = list(iter_coco(tiny_coco(tmp_path)))
    assert (gt.path, gt.width, gt.height) == ("a.png", 20, 10)
    assert gt.boxes.tolist() == [[2, 1, 6, 4], [10, 5, 15, 8]]
    assert gt.mask.shape == (10, 20)
    # both rectangles are foreground, nothing between them
    assert gt.mask[2, 3] and gt.mask[6, 12] and not gt.mask[6, 3] and not gt.mask[0, 0]
    assert gt.mask[:, :8].any() and gt.mask[:, 9:].any() and not gt.mask[:, 8].any()


def write_mask_tree(root, n=3, size=(16, 12)):
    rng = np.random.default_rng(0)
    for i in range(n):
        (root / "images" / "sub").mkdir(parents=True, exist_ok=True)
        (root / "masks" / "sub").mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(
            root / "images" / "sub" / f"im{i}.jpg")
        m = np.zeros((size[1], size[0]), np.uint8)
        m[2:6, 3 + i:9 + i] = 255
        Image.fromarray(m).save(root / "masks" / "sub" / f"im{i}.png")


def test_mask_folder_ground_truth_and_layout_errors(tmp_path):
    write_mask_tree(tmp_path)
    gts = list(iter_ground_truth(tmp_path / "masks", tmp_path / "images"))
    assert [g.path for g in gts] == ["sub/im0.jpg", "sub/im1.jpg", "sub/im2.jpg"]
    assert gts[1].boxes.tolist() == [[4, 2, 10, 6]] and gts[1].mask.sum() == 24
    (tmp_path / "masks" / "sub" / "im2.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"1 of 3 images .* have no mask in .*masks.*sub/im2\.png"):
        list(iter_mask_folder(tmp_path / "images", tmp_path / "masks"))
    Image.fromarray(np.zeros((5, 5), np.uint8)).save(tmp_path / "masks" / "sub" / "im2.png")
    with pytest.raises(ValueError, match="is 5x5 but image .* is 16x12"):
        list(iter_mask_folder(tmp_path / "images", tmp_path / "masks"))
    with pytest.raises(ValueError, match="also pass the image folder"):
        iter_ground_truth(tmp_path / "masks")


def test_store_and_cam_folder_predictions(tmp_path):
    write_mask_tree(tmp_path)
    gts = list(iter_ground_truth(tmp_path / "masks", tmp_path / "images"))
    # a store holding the exact GT masks for two images, a failed entry for the third
    with StoreWriter(tmp_path / "store", settings={"test": 1}, model_hash="none") as w:
        for g in gts[:2]:
            w.write(StoreEntry(g.path, g.width, g.height), g.mask.astype(np.uint8) * 255)
        w.write(StoreEntry(gts[2].path, gts[2].width, gts[2].height, status="bad_image"), None)
        w.close()
    preds = open_predictions(tmp_path / "store")
    assert isinstance(preds, StorePredictions)
    res = evaluate_localization(preds, gts, sweep=[0.3, 0.6], eval_size=None, progress=False)
    assert res["mask"]["miou"] == 1.0 and res["n_failed"] == 1 and res["failed"] == ["sub/im2.jpg"]
    assert res["n_missing"] == 0  # a bad image is counted as failed, not as a missing prediction
    assert res["boxes"]["box_acc"][0.7] == 1.0  # a single rectangle: its contour box is the GT box
    # a CAM folder with low-resolution maps of another range, resized + normalized per image
    cams = tmp_path / "cams" / "sub"
    cams.mkdir(parents=True)
    for g in gts:
        np.save(cams / (Path(g.path).stem + ".npy"), 5.0 + 3.0 * g.mask.astype(np.float32))
    preds = open_predictions(tmp_path / "cams")
    assert isinstance(preds, CamFolder)
    res = evaluate_localization(preds, gts, progress=False)
    assert res["mask"]["miou"] == 1.0 and res["n_missing"] == 0


def test_no_matching_prediction_is_a_clear_error(tmp_path):
    write_mask_tree(tmp_path)
    (tmp_path / "cams").mkdir()
    with pytest.raises(ValueError, match="no image had a prediction"):
        evaluate_localization(CamFolder(tmp_path / "cams"),
                              iter_ground_truth(tmp_path / "masks", tmp_path / "images"), progress=False)


def compose_cfg(name, overrides):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.2"):
        return compose(config_name=name, overrides=overrides)


@pytest.mark.shared_data
def test_cli_on_coco128_oracle_and_centre_prior(coco128, tmp_path):
    """Real COCO ground truth: the GT masks themselves score mIoU 1; a centre prior scores far less."""
    json_path = coco128 / "annotations" / "instances_train2017.json"
    oracle, prior = tmp_path / "oracle", tmp_path / "prior"
    oracle.mkdir(), prior.mkdir()
    for i, gt in enumerate(iter_coco(json_path)):
        if i == 12:
            break
        np.save(oracle / Path(gt.path).with_suffix(".npy"), gt.mask.astype(np.float32))
        yy, xx = np.mgrid[0:gt.height, 0:gt.width]
        np.save(prior / Path(gt.path).with_suffix(".npy"),
                np.exp(-(((yy / gt.height - 0.5) ** 2) + ((xx / gt.width - 0.5) ** 2)) / 0.08).astype(np.float32))
    base = [f"gt={json_path}", "limit=12", "progress=false", "overlays=2"]
    res = run_localization(compose_cfg("eval_localization", base + [f"predictions={oracle}",
                                                                    f"output_dir={tmp_path / 'out_oracle'}"]))
    assert res["mask_miou@0.5"] == 1.0 and res["n_images"] == 12 and res["n_missing"] == 0
    assert res["max_box_acc_v2"] > 0.8
    res_prior = run_localization(compose_cfg("eval_localization", base + [f"predictions={prior}",
                                                                          f"output_dir={tmp_path / 'out_prior'}"]))
    assert 0.1 < res_prior["mask_miou@0.5"] < 0.8
    out = tmp_path / "out_oracle"
    table = json.loads((out / "eval_localization.json").read_text())
    assert table["summary"]["mask_miou@0.5"] == 1.0 and (out / "eval_localization.csv").is_file()
    assert len(list((out / "overlays").glob("*.png"))) == 2
    assert list((out / "wandb").glob("offline-run-*"))


def test_the_result_records_what_made_the_store_masks(tmp_path):
    # eval_localization.json named only the store folder: rebuilt with another refine.method, a result could no
    # longer say which localization it scored. It now copies the store's model and settings.
    write_mask_tree(tmp_path)
    gts = list(iter_ground_truth(tmp_path / "masks", tmp_path / "images"))
    settings = {"preset": "lite", "refine": {"method": "crf+fgs", "resolution": "input"}}
    with StoreWriter(tmp_path / "store", settings=settings, model_hash="abc") as w:
        for g in gts:
            w.write(StoreEntry(g.path, g.width, g.height), g.mask.astype(np.uint8) * 255)
        w.close()
    out = tmp_path / "out"
    run_localization(compose_cfg("eval_localization", [
        f"predictions={tmp_path / 'store'}", f"gt={tmp_path / 'masks'}", f"image_root={tmp_path / 'images'}",
        f"output_dir={out}", "progress=false", "overlays=0", "wandb.enabled=false"]))
    record = json.loads((out / "eval_localization.json").read_text())["store"]
    assert record["settings"] == settings and record["model_sha256"] == "abc"


def test_a_constant_map_is_no_box_at_every_size_not_boxes_of_resampling_noise(tmp_path):
    """A store mask that is one value everywhere (the whole image is object): the protocol's min-max
    normalization scores it as no box. Resized to wsolevaluation's 224 by bicubic, a constant used to pick up
    1-ulp noise that normalization blew up into thousands of contours (boxes of noise, minutes per image)."""
    from occon_plugin.eval.boxes import boxes_at_threshold, normalize_cam
    from occon_plugin.eval.predictions import resize_map

    for value in (1.0, 0.5, 0.0):
        big = resize_map(np.full((64, 64), value, np.float32), 224, 224)
        assert big.shape == (224, 224) and (big == value).all()
        boxes, _ = boxes_at_threshold((normalize_cam(big) * 255).astype(np.uint8), 0.5)
        assert boxes.tolist() == [[0, 0, 0, 0]]  # no contour: the protocol's "no box"
    write_mask_tree(tmp_path)
    gts = list(iter_ground_truth(tmp_path / "masks", tmp_path / "images"))
    with StoreWriter(tmp_path / "store", settings={"test": 1}, model_hash="none") as w:
        for g in gts:
            w.write(StoreEntry(g.path, g.width, g.height), np.full((g.height, g.width), 255, np.uint8))
        w.close()
    at_224 = evaluate_localization(open_predictions(tmp_path / "store"), gts, progress=False)
    at_size = evaluate_localization(open_predictions(tmp_path / "store"), gts, eval_size=None, progress=False)
    assert at_224["boxes"]["max_box_acc_v2"] == at_size["boxes"]["max_box_acc_v2"]  # the resize changes nothing
