"""Issue 18 kind 3: ground-truth masks in every encoding a mask file can have, read by ONE rule
(``occon_plugin.eval.groundtruth.read_gt_mask``, docs/eval.md): a perfect prediction scores 1.0 whatever
the encoding, void labels count in no metric, and one line says what was assumed for masks that are not
plain binary."""
from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image

from occon_plugin.eval.groundtruth import GroundTruthError, iter_mask_folder, read_gt_mask
from occon_plugin.eval.localization import evaluate_localization
from occon_plugin.eval.masks import mask_iou
from occon_plugin.eval.predictions import CamFolder

from robustness_helpers import assert_one_line_error, photo, run_cli

H, W = 60, 80
OBJECT = np.zeros((H, W), bool)
OBJECT[20:40, 16:56] = True                     # 20 x 40 = 800 object pixels
VOID = np.zeros((H, W), bool)
VOID[17:43, 13:59] = True
VOID &= ~OBJECT                                 # a 3-pixel void band around the object (VOC style)


def _palette_voc() -> Image.Image:
    indices = np.where(OBJECT, 13, 0).astype(np.uint8)  # class 13 (horse), 255 = void
    indices[VOID] = 255
    img = Image.fromarray(indices, "L").convert("P")
    img.putpalette([0, 0, 0] * 13 + [192, 128, 128] + [0, 0, 0] * 241 + [224, 224, 192])
    return img


def _rgb(colour, background=(0, 0, 0)) -> np.ndarray:
    out = np.zeros((H, W, 3), np.uint8)
    out[:] = background
    out[OBJECT] = colour
    return out


def _jpeg(array: np.ndarray, quality: int = 75) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


# name -> (file bytes or PIL image, expected void?, expected encoding note (substring) or None)
def encodings() -> dict:
    voc_grey = np.where(OBJECT, 1, 0).astype(np.uint8)
    voc_grey[VOID] = 255
    voc_colour = _rgb((128, 0, 0))
    voc_colour[VOID] = (224, 224, 192)
    cutout = np.dstack([photo("chelsea", (W, H)), np.where(OBJECT, 255, 0).astype(np.uint8)])
    label16 = np.where(OBJECT, 7, 0).astype(np.uint16)
    label16[VOID] = 65535
    return {
        "voc_palette.png": (_palette_voc(), True, "palette indices, label map: 0 = background, 255 = void"),
        "voc_grey.png": (Image.fromarray(voc_grey), True, "label map: 0 = background, 255 = void"),
        "voc_colour.png": (Image.fromarray(voc_colour), True, "(224, 224, 192) = VOC void"),
        "lossy.jpg": (_jpeg((OBJECT * 255).astype(np.uint8)), False, "lossy (JPEG): object = value >= 128 of 255"),
        "lossy_colour.jpg": (_jpeg(_rgb((255, 40, 40))), False, "colour, lossy (JPEG)"),
        "rgba_opaque.png": (Image.fromarray(np.dstack([_rgb((255, 255, 255)), np.full((H, W), 255, np.uint8)])),
                            False, None),
        "rgba_cutout.png": (Image.fromarray(cutout), False, "alpha channel used as the mask"),
        "la_opaque.png": (Image.fromarray((OBJECT * 255).astype(np.uint8)).convert("LA"), False, None),
        "zero_one.png": (Image.fromarray(OBJECT.astype(np.uint8)), False, None),           # horses-dev style
        "zero_255.png": (Image.fromarray((OBJECT * 255).astype(np.uint8)), False, None),  # ECSSD style
        "one_bit.png": (Image.fromarray(OBJECT).convert("1"), False, None),
        "sixteen.png": (Image.fromarray((OBJECT * 65535).astype(np.uint16)), False, None),
        "label16.png": (Image.fromarray(label16), True, "65535 = void"),
        "other_value.png": (Image.fromarray((OBJECT * 100).astype(np.uint8)), False,
                            "label map: 0 = background, other values = object"),
        "float.tif": (Image.fromarray(OBJECT.astype(np.float32)), False, None),
    }


def _write(folder, name, content):
    if isinstance(content, bytes):
        (folder / name).write_bytes(content)
    else:
        content.save(folder / name)


@pytest.fixture(scope="module")
def gt_set(tmp_path_factory):
    """images/<k>.png + masks/<k>.<ext> (one per encoding) + cams/<k>.npy (the perfect prediction)."""
    root = tmp_path_factory.mktemp("gt_encodings")
    for sub in ("images", "masks", "cams"):
        (root / sub).mkdir()
    names = {}
    for k, (name, (content, _, _)) in enumerate(encodings().items()):
        stem = f"{k:02d}_{name.split('.')[0]}"
        Image.fromarray(photo("astronaut", (W, H))).save(root / "images" / f"{stem}.png")
        _write(root / "masks", f"{stem}.{name.split('.')[1]}", content)
        np.save(root / "cams" / f"{stem}.npy", OBJECT.astype(np.float32))
        names[name] = stem
    return root, names


@pytest.mark.kind("gt.encodings")
@pytest.mark.parametrize("name", list(encodings()))
def test_every_encoding_is_read_by_the_one_rule(tmp_path, name):
    content, has_void, note = encodings()[name]
    _write(tmp_path, name, content)
    got = read_gt_mask(tmp_path / name)
    assert (got.object == OBJECT).all(), f"{name}: {(got.object != OBJECT).sum()} pixels differ"
    if has_void:
        assert got.ignore is not None and (got.ignore == VOID).all()
    else:
        assert got.ignore is None
    if note is None:
        assert got.encoding is None, got.encoding
    else:
        assert note in got.encoding, got.encoding


@pytest.mark.kind("gt.encodings")
def test_a_perfect_prediction_scores_one_on_every_encoding(gt_set):
    root, names = gt_set
    res = evaluate_localization(CamFolder(root / "cams"), iter_mask_folder(root / "images", root / "masks"),
                                progress=False)
    assert res["mask"]["n_images"] == len(names) and res["mask"]["miou"] == 1.0
    assert all(row["iou@0.5"] == 1.0 for row in res["per_image"]), res["per_image"]
    assert res["boxes"]["max_box_acc_v2"] == 1.0 and res["boxes"]["corloc"] == 1.0
    noted = {p for paths in res["gt_encodings"].values() for p in paths}
    expected = {f"{names[n]}.png" for n, (_, _, note) in encodings().items() if note is not None}
    assert noted == expected


@pytest.mark.kind("gt.encodings")
def test_void_pixels_count_in_no_metric_and_the_rest_is_scored_as_by_hand():
    half = OBJECT.copy()
    half[:, 36:] = False                               # 400 of the 800 object pixels
    assert mask_iou(OBJECT | VOID, OBJECT, ignore=VOID) == 1.0    # what it says on void never counts
    assert mask_iou(half, OBJECT, ignore=VOID) == 0.5             # 400 / 800
    assert mask_iou(half | VOID, OBJECT, ignore=VOID) == 0.5
    assert mask_iou(OBJECT | VOID, OBJECT) == 800 / (800 + VOID.sum())  # without the ignore label: penalized


@pytest.mark.kind("gt.encodings")
def test_the_cli_scores_voc_jpeg_and_rgba_masks_one_and_says_what_it_assumed_in_one_line(gt_set, tmp_path):
    root, names = gt_set
    chosen = [names[n] for n in ("voc_palette.png", "lossy.jpg", "rgba_opaque.png", "voc_grey.png")]
    for sub in ("images", "masks", "cams"):
        (tmp_path / sub).mkdir()
        for stem in chosen:
            for f in (root / sub).glob(f"{stem}.*"):
                (tmp_path / sub / f.name).write_bytes(f.read_bytes())
    proc = run_cli("occon_plugin.cli.eval_localization", f"predictions={tmp_path / 'cams'}",
                   f"gt={tmp_path / 'masks'}", f"image_root={tmp_path / 'images'}", f"output_dir={tmp_path / 'out'}",
                   "wandb.enabled=false", "progress=false")
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [l for l in proc.stdout.splitlines() if "not plain binary" in l]
    assert len(lines) == 1, proc.stdout
    assert "3 of 4 ground-truth masks" in lines[0] and "lossy (JPEG): object = value >= 128 of 255" in lines[0]
    assert "255 = void (ignored)" in lines[0]
    summary = json.loads((tmp_path / "out" / "eval_localization.json").read_text())
    assert summary["summary"]["mask_miou@0.5"] == 1.0 and summary["summary"]["max_box_acc_v2"] == 1.0
    assert sum(len(v) for v in summary["gt_encodings"].values()) == 3


@pytest.mark.kind("gt.encodings")
def test_masks_that_cannot_be_read_unambiguously_are_refused_by_name(tmp_path):
    (tmp_path / "dim.jpg").write_bytes(_jpeg((OBJECT * 60).astype(np.uint8), quality=50))  # 0/60 as JPEG
    with pytest.raises(GroundTruthError, match=r"dim.jpg looks lossy .* no pixel reaches half"):
        read_gt_mask(tmp_path / "dim.jpg")
    (tmp_path / "zero_one.jpg").write_bytes(_jpeg(OBJECT.astype(np.uint8), quality=75))  # 40 pixels flip
    with pytest.raises(GroundTruthError, match=r"zero_one.jpg looks lossy .* no pixel reaches half"):
        read_gt_mask(tmp_path / "zero_one.jpg")
    Image.fromarray((OBJECT * 70000).astype(np.int32)).save(tmp_path / "wide.tif")
    with pytest.raises(GroundTruthError, match=r"wide.tif holds 32-bit values outside 0..65535"):
        read_gt_mask(tmp_path / "wide.tif")
    Image.fromarray(np.where(OBJECT, np.nan, 0).astype(np.float32)).save(tmp_path / "nan.tif")
    with pytest.raises(GroundTruthError, match="nan.tif holds NaN"):
        read_gt_mask(tmp_path / "nan.tif")
    # through the CLI: one line, exit 2
    for sub in ("images", "masks"):
        (tmp_path / sub).mkdir()
    Image.fromarray(photo("astronaut", (W, H))).save(tmp_path / "images" / "a.png")
    (tmp_path / "masks" / "a.jpg").write_bytes((tmp_path / "dim.jpg").read_bytes())
    np.save(tmp_path / "a.npy", OBJECT.astype(np.float32))
    proc = run_cli("occon_plugin.cli.eval_localization", f"predictions={tmp_path}", f"gt={tmp_path / 'masks'}",
                   f"image_root={tmp_path / 'images'}", f"output_dir={tmp_path / 'out'}", "wandb.enabled=false")
    assert_one_line_error(proc, "a.jpg", "losslessly")


@pytest.mark.kind("eval.constant-map")
def test_constant_and_nan_prediction_maps_are_said_in_one_line_never_a_silent_zero(tmp_path):
    """A CAM folder of whole-image maps (255 everywhere): min-max normalization (wsolevaluation) has nothing
    to rank and scores them as no object; the command says so in one line and lists them in the JSON."""
    for sub in ("images", "masks", "cams"):
        (tmp_path / sub).mkdir()
    mask = np.zeros((40, 48), np.uint8)
    mask[10:30, 12:36] = 255
    for k, name in enumerate(("astronaut", "coffee", "chelsea")):
        Image.fromarray(photo(name)).save(tmp_path / "images" / f"{name}.png")
        Image.fromarray(mask).save(tmp_path / "masks" / f"{name}.png")
        cam = np.full((40, 48), 255, np.uint8) if k < 2 else mask  # two constant maps, one real one
        Image.fromarray(cam).save(tmp_path / "cams" / f"{name}.png")
    Image.fromarray(photo("rocket")).save(tmp_path / "images" / "rocket.png")  # and one of NaN
    Image.fromarray(mask).save(tmp_path / "masks" / "rocket.png")
    np.save(tmp_path / "cams" / "rocket.npy", np.full((40, 48), np.nan, np.float32))
    proc = run_cli("occon_plugin.cli.eval_localization", f"predictions={tmp_path / 'cams'}",
                   f"gt={tmp_path / 'masks'}", f"image_root={tmp_path / 'images'}", f"output_dir={tmp_path / 'out'}",
                   "wandb.enabled=false", "progress=false", "overlays=0")
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [l for l in proc.stdout.splitlines() if "one value everywhere" in l]
    assert len(lines) == 1, proc.stdout
    assert "2 of 4 prediction maps" in lines[0] and "no box and no mask" in lines[0]
    nan_lines = [l for l in proc.stdout.splitlines() if "NaN or infinite" in l]
    assert len(nan_lines) == 1 and "1 of 4" in nan_lines[0] and "rocket.png" in nan_lines[0], proc.stdout
    result = json.loads((tmp_path / "out" / "eval_localization.json").read_text())
    assert sorted(result["constant_maps"]) == ["astronaut.png", "coffee.png"]
    assert result["nonfinite_maps"] == ["rocket.png"]
    assert result["summary"]["mask_miou@0.5"] == pytest.approx(1 / 4)  # the real map scores 1, the others 0
