import pytest
from PIL import Image

from occon_plugin.eval.cococrop import build_coco_crop


@pytest.mark.shared_data
def test_coco128_crop_is_split_by_image(coco128, tmp_path):
    out = build_coco_crop(coco128 / "annotations" / "instances_train2017.json", tmp_path / "crop", min_size=64)
    assert out["bad_images"] == [] and "person" in out["classes"]
    train = {p.name.rsplit("_", 1)[0] for p in (tmp_path / "crop" / "train").rglob("*.jpg")}
    test = {p.name.rsplit("_", 1)[0] for p in (tmp_path / "crop" / "test").rglob("*.jpg")}
    assert train and test and train.isdisjoint(test)  # no photo on both sides
    assert len(list((tmp_path / "crop").rglob("*.jpg"))) == out["train"] + out["test"]
    with Image.open(next((tmp_path / "crop" / "train").rglob("*.jpg"))) as img:
        assert min(img.size) >= 64
