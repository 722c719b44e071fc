"""The scene-bias benchmark's data generator (bench/scenebias): deterministic from a seed, and each variant is
what it claims (issue: does it work?). Backgrounds: tiles of scikit-image's photos, so no ../shared is needed."""
from __future__ import annotations

import hashlib
import json
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "bench"))

from scenebias import generate as gen  # noqa: E402
from scenebias.generate import SceneBiasConfig  # noqa: E402

TINY = dict(classes=6, size=48, train_per_class=3, val_per_class=4, ctx_scenes=6, single_train_per_class=2,
            single_test_per_class=2)


@pytest.fixture(scope="module")
def backgrounds(tmp_path_factory) -> Path:
    """24 background 'photos': 2x3 tiles of four real scikit-image photos."""
    import skimage.data

    out = tmp_path_factory.mktemp("photos")
    for name in ("astronaut", "chelsea", "coffee", "rocket"):
        img = np.ascontiguousarray(getattr(skimage.data, name)()[..., :3])
        h, w = img.shape[:2]
        for i in range(2):
            for j in range(3):
                tile = img[i * h // 2:(i + 1) * h // 2, j * w // 3:(j + 1) * w // 3]
                Image.fromarray(tile).save(out / f"{name}_{i}{j}.jpg", quality=95)
    return out


@pytest.fixture(scope="module")
def data(tmp_path_factory, backgrounds) -> Path:
    out = tmp_path_factory.mktemp("scenebias") / "a"
    gen.generate(out, SceneBiasConfig(seed=3, **TINY), [backgrounds])
    return out


def _digest(root: Path) -> dict:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _records(root: Path, name: str) -> list:
    return [json.loads(line) for line in (root / "records" / f"{name}.jsonl").read_text().splitlines()]


def _rgb(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB")).astype(np.int64)


def _mask(root: Path, rel: str) -> np.ndarray:
    return np.asarray(Image.open(root / "masks" / rel)) > 127


def test_same_seed_same_bytes_other_seed_other_images(data, backgrounds, tmp_path):
    again = tmp_path / "b"
    gen.generate(again, SceneBiasConfig(seed=3, **TINY), [backgrounds])
    assert _digest(again) == _digest(data)
    other = tmp_path / "c"
    gen.generate(other, SceneBiasConfig(seed=4, **TINY), [backgrounds])
    a, c = _digest(data), _digest(other)
    images = [k for k in a if k.endswith(".png") and not k.startswith("masks/")]
    assert sum(a[k] != c.get(k) for k in images) > 0.9 * len(images)


def test_layout_is_the_background_challenge_one_and_the_bgchallenge_eval_accepts_it(data):
    from occon_plugin.eval.bgchallenge import VARIANTS, check_layout

    names = SceneBiasConfig(**TINY).class_names
    wanted = ("original", "only_fg", "only_bg_b", "only_bg_t", "mixed_same", "mixed_rand", "mixed_next")
    train, sets = check_layout(data / "bg", [v for v in VARIANTS if v in wanted])
    assert sorted(p.name for p in train.iterdir()) == sorted(names)
    for variant, folder in sets.items():
        counts = Counter(p.parent.name for p in folder.rglob("*.png"))
        assert counts == {n: TINY["val_per_class"] for n in names}, variant
    assert len(list((data / "bg/original/train").rglob("*.png"))) == 6 * TINY["train_per_class"]


@pytest.mark.parametrize("fill", ["photo", "flat"])
def test_masks_match_the_pasted_objects_and_only_fg_has_no_background(data, backgrounds, tmp_path, fill):
    if fill != SceneBiasConfig.obj_fill:  # the default fill is the module's data set
        data = tmp_path / "d"
        gen.generate(data, SceneBiasConfig(seed=3, obj_fill=fill, **TINY), [backgrounds])
    for row in _records(data, "bg_val"):
        if row["variant"] != "only_fg":
            continue
        img, m = _rgb(data / row["path"]), _mask(data, row["path"])
        assert m.any()
        outside = ~ndimage.binary_dilation(m, structure=np.ones((3, 3)), iterations=2)  # anti-aliased tips
        assert (img[outside] == 0).all(), "only_fg: a non-black pixel outside the object"
        inside = ndimage.binary_erosion(m, structure=np.ones((3, 3)))
        if fill == "flat":  # one shaded colour: never black (a photo texture may have black pixels)
            assert (img[inside].max(axis=1) > 0).all(), "only_fg: a black pixel inside the object"
        else:  # the object is the same pixels as on its backgrounds (mixed_same of the same sample)
            twin = data / row["path"].replace("only_fg", "mixed_same")
            assert (img[inside] == _rgb(twin)[inside]).all(), "only_fg: object pixels differ from mixed_same's"
        ys, xs = np.nonzero(m)
        assert row["boxes"] == [[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]]


def test_variants_of_a_sample_share_the_object_and_differ_in_the_background(data):
    rows = _records(data, "bg_val")
    by_sample = {}
    for r in rows:
        by_sample.setdefault((r["class"], r["sample"]), {})[r["variant"]] = r
    for (k, _), variants in by_sample.items():
        m = _mask(data, variants["only_fg"]["path"])
        core = ndimage.binary_erosion(m, structure=np.ones((3, 3)))
        fg = _rgb(data / variants["only_fg"]["path"])
        for name in ("original", "mixed_same", "mixed_rand", "mixed_next"):
            assert (_rgb(data / variants[name]["path"])[core] == fg[core]).all(), name
            assert (_mask(data, variants[name]["path"]) == m).all()
        # the backgrounds: same = own group, rand = another group, next = k+1, all from validation photos
        K = TINY["classes"]
        assert variants["mixed_same"]["background"]["group"] == k
        assert variants["mixed_rand"]["background"]["group"] != k
        assert variants["mixed_next"]["background"]["group"] == (k + 1) % K
        assert variants["only_bg_t"]["background"]["group"] == k
        assert all(v["background"]["split"] == "val" for n, v in variants.items() if n != "only_fg")
        # only_bg_b is only_bg_t with the object's silhouette black
        bt, bb = _rgb(data / variants["only_bg_t"]["path"]), _rgb(data / variants["only_bg_b"]["path"])
        far = ~ndimage.binary_dilation(m, structure=np.ones((3, 3)), iterations=2)
        assert (bb[core] == 0).all() and (bb[far] == bt[far]).all()


def test_training_and_validation_backgrounds_are_disjoint_photos_in_balanced_groups(data):
    meta = json.loads((data / "meta.json").read_text())
    groups = Counter(v["group"] for v in meta["photos"].values())
    assert len(groups) == TINY["classes"] and max(groups.values()) - min(groups.values()) <= 1
    split = {k: v["split"] for k, v in meta["photos"].items()}
    for row in _records(data, "bg_train") + _records(data, "ctx_train"):
        assert split[row["background"]["photo"]] == "train"
        assert meta["photos"][row["background"]["photo"]]["group"] == row["background"]["group"]


def test_background_bias_and_co_occurrence_rates_are_the_parameters():
    rng = np.random.default_rng(0)
    draws = [gen._background_group(rng, 2, 6, 0.9) for _ in range(4000)]
    p_own = np.mean(np.array(draws) == 2)
    assert abs(p_own - (0.9 + 0.1 / 6)) < 0.02  # rho, plus the random draws that land on the own group
    cfg = SceneBiasConfig(classes=6, ctx_rho=0.8)
    scenes = [gen.scene_classes(rng, cfg) for _ in range(4000)]
    assert abs(np.mean([s[1] == cfg.partner(s[0]) for s in scenes]) - 0.8) < 0.02
    assert {len(s) for s in scenes} == {2, 3, 4}
    assert cfg.partner(0) == 1 and cfg.partner(5) == 4 and SceneBiasConfig(classes=5).partner(4) is None


def test_contextual_scenes_hold_non_overlapping_objects_whose_masks_are_the_union(data):
    for row in _records(data, "ctx_train"):
        m = _mask(data, row["path"])
        labels, n = ndimage.label(m)
        assert n == len(row["classes"]) == len(row["boxes"])  # each object one component: no overlap
        for x1, y1, x2, y2 in row["boxes"]:
            assert m[y1:y2, x1:x2].any()
    singles = list((data / "ctx/single/train").rglob("*.png")) + list((data / "ctx/single/test").rglob("*.png"))
    assert len(singles) == 6 * 2 * 2


def test_bad_parameters_and_too_few_photos_are_one_clear_error(tmp_path, backgrounds):
    with pytest.raises(gen.GeneratorError, match="classes=20"):
        gen.generate(tmp_path / "x", SceneBiasConfig(classes=20), [backgrounds])
    few = tmp_path / "few"
    few.mkdir()
    for p in sorted(backgrounds.iterdir())[:5]:
        (few / p.name).write_bytes(p.read_bytes())
    with pytest.raises(gen.GeneratorError, match="5 background photos for 6 groups"):
        gen.generate(tmp_path / "y", SceneBiasConfig(**TINY), [few])
    with pytest.raises(gen.GeneratorError, match="does not exist"):
        gen.generate(tmp_path / "z", SceneBiasConfig(**TINY), [tmp_path / "nowhere"])


def test_control_stores_oracle_equals_ground_truth_random_keeps_areas(data, tmp_path):
    from scenebias.stores import gt_mask, random_mask, write_store

    from occon_plugin.store import Store

    images, masks = data / "bg/original/train", data / "masks/bg/original/train"
    oracle = Store.open(write_store(images, tmp_path / "oracle", "oracle", gt_mask(masks)))
    rand = Store.open(write_store(images, tmp_path / "random", "random", random_mask(masks, seed=0)))
    moved = 0
    for entry in oracle.entries.values():
        gt = _mask(data, "bg/original/train/" + entry.path)
        assert (oracle.load_mask(entry.path) >= 0.5).tolist() == gt.tolist()
        assert entry.boxes, entry.path
        r = rand.load_mask(entry.path) >= 0.5
        assert abs(int(r.sum()) - int(gt.sum())) <= 0.1 * gt.sum() + 4, entry.path  # same area, an ellipse
        moved += (r & gt).sum() < 0.5 * gt.sum()
    assert moved >= len(oracle) // 3  # at random places: most do not sit on the object


def test_science_data_settings_are_typed_and_bad_ones_name_the_key(science):
    assert science.data_settings(["obj_fill=flat", "obj_extent=0.4,0.6", "train_per_class=7", "bg_blur=0"]) == {
        "obj_fill": "flat", "obj_extent": (0.4, 0.6), "train_per_class": 7, "bg_blur": 0.0}
    for bad, says in (("nope=1", "nope=1: expected KEY=VALUE"), ("obj_extent=0.5", "2 comma-separated values"),
                      ("bg_blur=x", "bg_blur takes float"), ("seed=3", "the seed comes from --seed")):
        with pytest.raises(gen.GeneratorError, match=says):
            science.data_settings([bad])


def test_science_refuses_an_out_folder_of_a_run_with_other_settings(tmp_path, backgrounds, capsys, science):
    """Finished steps are reused by file: a folder holding a run with other data or recipe settings is refused
    (else its data and trainings would silently stand for the new settings)."""
    out = tmp_path / "run"
    out.mkdir()
    same = json.loads(json.dumps({"data": __import__("dataclasses").asdict(SceneBiasConfig()),
                                  "recipe": science.protocol.recipe_dict(science.protocol.Recipe()),
                                  "code": {"bg_mixup_donors": science.DONOR_RULE},
                                  "backgrounds": [str(backgrounds.resolve())]}))
    (out / "settings.json").write_text(json.dumps(same))
    args = ["--plan", "--out", str(out), "--backgrounds", str(backgrounds)]
    assert science.main(args) == 0
    # a folder whose runs drew BG-Mixup donors by the rule before (one per sample, not recorded) is not continued
    (out / "settings.json").write_text(json.dumps({k: v for k, v in same.items() if k != "code"}))
    assert science.main(args) == 2
    assert "other settings (code.bg_mixup_donors)" in capsys.readouterr().err
    (out / "settings.json").write_text(json.dumps(same))
    assert science.main(args + ["--data", "bg_blur=0"]) == 2
    assert "other settings (data.bg_blur)" in capsys.readouterr().err
    assert science.main(args + ["--epochs", "3"]) == 2
    assert "recipe.epochs" in capsys.readouterr().err
    assert science.main(args + ["--data", "nope=1"]) == 2


def test_science_occon_settings_reach_every_object_aware_arm_and_not_the_baseline(tmp_path, capsys, science):
    """``--occon bg_mixup.views=[0]``: every arm but the baseline trains with it; it is part of the recipe, so a
    folder of a run without it is refused; a key written with the ``occon.`` prefix is one clear error."""
    recipe = science.protocol.Recipe(occon=("bg_mixup.views=[0]",))
    lay = science.protocol.Layout(tmp_path)
    for arm in ("oracle", "contracam", "random", "hardmix"):
        assert "++occon.bg_mixup.views=[0]" in science.protocol.pretrain_step(lay, recipe, 0, "bg", "mocov2", arm).argv
    assert not any("views" in a for a in science.protocol.pretrain_step(lay, recipe, 0, "bg", "mocov2",
                                                                         "baseline").argv)
    for item in ("occon.bg_mixup.views=[0]", "=1", " =1"):
        assert science.main(["--plan", "--out", str(tmp_path / "x"), "--occon", item]) == 2
        assert "give KEY=VALUE below occon" in capsys.readouterr().err, item


def test_science_occon_settings_go_through_the_plugins_parser_before_any_step(tmp_path, capsys, science):
    """An unknown key, a value out of range, a refresh preset or precision the localizer lacks, or a value that
    is not YAML used to pass ``--plan`` and fail at the first object-aware pretraining: one line, exit 2,
    nothing written (the plugin's own parser and tables, so the bench cannot drift from them)."""
    for item, said in (("bg_mixup.nosuch=1", "unknown key occon.bg_mixup.nosuch; allowed: occon.bg_mixup.enabled"),
                       ("bg_mixup.p_mix=3", "occon.bg_mixup.p_mix=3 must be in [0, 1]"),
                       ("refresh.precision=fp64", "occon.refresh.precision='fp64': use one of fp32, bf16, fp16"),
                       ("refresh.preset=nope", "occon.refresh.preset='nope': use auto or one of"),
                       ("refresh.fraction=2", "occon.refresh.fraction=2 must be in (0, 1]"),
                       ("bg_mixup.views=[0", "bg_mixup.views=[0: not KEY=VALUE with a YAML value"),
                       # keys the protocol sets per arm (a break-it pass: they passed, then a one-stage step failed
                       # after the baseline had trained, or an arm silently became another)
                       ("refresh.warmup_epochs=5", "occon.refresh.warmup_epochs is set by the benchmark for each arm"),
                       ("refresh.enabled=true", "occon.refresh.enabled is set by the benchmark"),
                       ("store=/tmp", "occon.store is set by the benchmark"),
                       ("bg_mixup.enabled=false", "occon.bg_mixup.enabled is set by the benchmark")):
        assert science.main(["--plan", "--out", str(tmp_path / "x"), "--occon", item]) == 2, item
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and said in err[0], (item, err)
    assert not (tmp_path / "x").exists()
    assert science.main(["--plan", "--out", str(tmp_path / "x"), "--occon", "bg_mixup.views=[0]",
                         "refresh.reuse_iou=0.7"]) == 0


def test_zero_or_negative_epochs_and_negative_seeds_are_usage_errors(tmp_path, capsys, science):
    """``--epochs 0`` used to fall back to the size's epochs silently; a negative seed failed inside a step."""
    for argv, said in ((["--epochs", "0"], "--epochs 0: give 1 or more"), (["--epochs", "-3"], "--epochs -3"),
                       (["--seed", "0", "-1"], "--seed -1: seeds are integers >= 0")):
        assert science.main(["--plan", "--out", str(tmp_path / "x"), *argv]) == 2
        assert said in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_the_report_says_which_donor_rule_its_runs_used(science):
    """Results written before the rule was recorded (no ``bg_mixup_donors``) drew one donor per sample."""
    now = science.markdown.views_note({"bg_mixup_donors": science.DONOR_RULE})
    before = science.markdown.views_note({})
    assert "its own background donor" in now and "one donor per sample" not in now
    assert "shared one donor background" in before and "one donor per sample" in before
    assert "`[0]`" in science.markdown.views_note({"recipe": {"occon": ["bg_mixup.views=[0]"]}})


def test_a_narrowed_standard_run_does_not_replace_docs_science_md(capsys, science):
    """Only the standard run as it is writes docs/science.md by default; one set, seed or arm names its report."""
    assert science.default_docs(science.parse_args([])) == science.REPO / "docs" / "science.md"
    assert science.default_docs(science.parse_args(["--quick"])) is None
    for narrowed in (["--sets", "bg"], ["--seed", "0"], ["--arms", "baseline"], ["--epochs", "45"],
                     ["--occon", "bg_mixup.views=[0]"], ["--device", "cuda"]):
        assert science.default_docs(science.parse_args(narrowed)) is None, narrowed
        assert "docs/science.md not written" in capsys.readouterr().out
    assert science.default_docs(science.parse_args(["--sets", "ctx", "bg"])) is not None


def test_counts_and_ranges_out_of_bounds_and_unbalanced_groups_are_caught(tmp_path, backgrounds):
    """A zero count or a crop/extent beyond the image used to pass the check and fail (or write empty sets)
    inside the run; 13 photos for 6 groups gave groups of one photo (no training background)."""
    for bad, says in (({"train_per_class": 0}, "train_per_class=0: at least 1"),
                      ({"single_test_per_class": -2}, "single_test_per_class=-2"),
                      ({"bg_crop": (0.5, 3.0)}, r"bg_crop=0.5,3.0: 0 < lo <= hi <= 1"),
                      ({"obj_extent": (0.7, 0.5)}, "obj_extent=0.7,0.5"),
                      ({"bg_val_fraction": 1.0}, "bg_val_fraction=1.0")):
        with pytest.raises(gen.GeneratorError, match=says):
            SceneBiasConfig(**{**TINY, **bad}).check()
    thirteen = tmp_path / "thirteen"
    thirteen.mkdir()
    for p in sorted(backgrounds.iterdir())[:13]:
        (thirteen / p.name).write_bytes(p.read_bytes())
    meta = gen.generate(tmp_path / "d", SceneBiasConfig(**TINY), [thirteen])
    assert sorted(Counter(v["group"] for v in meta["photos"].values()).values()) == [2, 2, 2, 2, 2, 3]
    # a meta.json cut short: generated again, not a JSON traceback
    (tmp_path / "d" / "meta.json").write_text('{"digest": "ab')
    assert gen.generate(tmp_path / "d", SceneBiasConfig(**TINY), [thirteen])["digest"] == meta["digest"]
