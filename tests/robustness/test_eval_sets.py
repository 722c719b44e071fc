"""Issue 18 kind 4: evaluations over mismatched sets. A linear evaluation over one class is refused (one line,
exit 2) in every command; a class that has images to evaluate but no readable training image is refused; a set
lacking some classes is said in one line (accuracy over the classes it has); the Background Challenge BG-gap
compares mixed_same and mixed_rand over the classes both have, and says so."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from occon_plugin.eval.bgchallenge import background_challenge
from occon_plugin.images import DatasetError

from robustness_helpers import REPO, assert_one_line_error, run_cli

RED, BLUE, YELLOW, GREEN = (220, 20, 20), (20, 20, 220), (220, 220, 20), (30, 160, 30)
COLOURS = {"00_red": RED, "01_blue": BLUE, "02_yellow": YELLOW}


class MeanColour(torch.nn.Module):
    """A real (tiny) feature extractor: the mean of each channel; the three colours are separable."""

    def forward(self, x):
        return x.mean(dim=(2, 3))


def scene(rng, fg, size=32):
    img = np.empty((size, size, 3), np.uint8)
    img[:] = GREEN
    y, x = rng.integers(0, size - 12, 2)
    if fg is not None:
        img[y:y + 12, x:x + 12] = fg
    return np.clip(img.astype(int) + rng.integers(-3, 4, img.shape), 0, 255).astype(np.uint8)


def write(folder, arrays):
    folder.mkdir(parents=True, exist_ok=True)
    for i, a in enumerate(arrays):
        Image.fromarray(a).save(folder / f"{i:03d}.png")


def tree(root, classes, n, seed=0):
    rng = np.random.default_rng(seed)
    for name in classes:
        write(root / name, [scene(rng, COLOURS[name]) for _ in range(n)])
    return root


EVAL = ["model=random:resnet18", "resize=32", "crop=32", "num_workers=0", "progress=false", "fast=true", "threads=1",
        "wandb.enabled=false"]


def compose(config_dir, name, overrides):
    from hydra import compose as hydra_compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(config_dir), version_base="1.2"):
        return hydra_compose(config_name=name, overrides=overrides)


def eval_linear(train, test, out, *extra):
    from occon_plugin.cli.eval_common import CONFIG_DIR
    from occon_plugin.cli.eval_linear import run

    return run(compose(CONFIG_DIR, "eval_linear", [*EVAL, f"train_dir={train}", f"test_dir={test}",
                                                   f"output_dir={out}", *extra]))


@pytest.mark.kind("eval.mismatched-sets")
def test_a_one_class_linear_evaluation_is_refused_in_every_command(tmp_path):
    one = tree(tmp_path / "one", ["00_red"], 6)
    two = tree(tmp_path / "two", ["00_red", "01_blue"], 6, seed=1)
    proc = run_cli("occon_plugin.cli.eval_linear", *EVAL, f"train_dir={one}", f"test_dir={one}",
                   f"output_dir={tmp_path / 'o1'}")
    assert_one_line_error(proc, str(one), "1 class sub-folder", "at least 2")  # was: test_acc 1.0, exit 0
    # two class folders, but every image of one unreadable: one class of training images
    for f in (two / "01_blue").iterdir():
        f.write_bytes(b"not an image")
    with pytest.raises(DatasetError, match=rf"{two}: .*at least 2 classes; it has 1 \(00_red\); no readable image "
                                           rf"in 01_blue"):
        eval_linear(two, one, tmp_path / "o2")
    # the Background Challenge's linear evaluation
    from occon_plugin.cli.eval_bgchallenge import run as run_bg
    from occon_plugin.cli.eval_common import CONFIG_DIR

    (tmp_path / "in9" / "original").mkdir(parents=True)
    (tmp_path / "in9" / "original" / "train").symlink_to(one)
    tree(tmp_path / "in9" / "mixed_same" / "val", ["00_red"], 2)
    tree(tmp_path / "in9" / "mixed_rand" / "val", ["00_red"], 2)
    with pytest.raises(DatasetError, match="1 class sub-folder.*at least 2"):
        run_bg(compose(CONFIG_DIR, "eval_bgchallenge", [*[a for a in EVAL if not a.startswith("threads")],
                                                        f"root={tmp_path / 'in9'}", "variants=[mixed_same,mixed_rand]",
                                                        f"output_dir={tmp_path / 'o3'}"]))
    # the host's LinearModel (occon-linear)
    pytest.importorskip("solo")
    import torchvision

    from occon_plugin.cli.linear import linear_eval
    from occon_plugin.errors import ConfigError

    net = torchvision.models.resnet18(weights=None)
    net.fc = torch.nn.Identity()
    torch.save({"state_dict": {f"backbone.{k}": v for k, v in net.state_dict().items()}}, tmp_path / "solo.ckpt")
    cfg = compose(REPO / "scripts" / "linear" / "custom", "linear", [
        f"++pretrained_feature_extractor={tmp_path / 'solo.ckpt'}", f"++data.train_path={two}", "++max_steps=1",
        "++accelerator=cpu", "++wandb.enabled=false", f"++checkpoint.dir={tmp_path / 'runs'}",
        "++data.num_workers=0"])
    with pytest.raises(ConfigError, match=r"data.train_path=.*readable images of 1 class\(es\) \(00_red; 2 class "
                                          r"sub-folder\(s\)\): linear evaluation needs at least 2"):
        linear_eval(cfg)


@pytest.mark.kind("eval.mismatched-sets")
def test_classes_that_differ_between_train_and_test_are_named(tmp_path):
    train = tree(tmp_path / "train", ["00_red", "01_blue", "02_yellow"], 6)
    for f in (train / "02_yellow").iterdir():  # a training class with no readable image ...
        f.write_bytes(b"")
    test = tree(tmp_path / "test", ["00_red", "02_yellow"], 3, seed=1)  # ... that the test set has
    with pytest.raises(DatasetError, match=r"class\(es\) \['02_yellow'\] have images to evaluate but no readable "
                                           r"training image"):
        eval_linear(train, test, tmp_path / "o1")
    renamed = tmp_path / "renamed"
    tree(renamed, ["00_red"], 3)
    (renamed / "00_red").rename(renamed / "00_Red")  # a class name spelled differently
    with pytest.raises(DatasetError, match=r"classes \['00_Red'\] are not among the training classes"):
        eval_linear(train, renamed, tmp_path / "o2")


@pytest.mark.kind("eval.mismatched-sets")
def test_a_test_set_lacking_classes_is_said_once_and_in_the_json(tmp_path, capsys):
    train = tree(tmp_path / "train", ["00_red", "01_blue", "02_yellow"], 6)
    test = tree(tmp_path / "test", ["00_red", "01_blue"], 3, seed=1)
    (test / "02_yellow").mkdir()  # an empty class folder: not a class of the test set
    eval_linear(train, test, tmp_path / "o")
    notes = [l for l in capsys.readouterr().out.splitlines() if "training classes" in l]
    assert notes == [f"[occon] {test} has images of 2 of the 3 training classes (none of 02_yellow): its accuracy "
                     f"is over those"]
    saved = json.loads((tmp_path / "o" / "eval_linear.json").read_text())
    assert saved["test_classes"] == ["00_red", "01_blue"] and len(saved["notes"]) == 1


@pytest.mark.kind("eval.mismatched-sets")
def test_test_images_that_are_training_images_are_said_once_and_in_the_json(tmp_path, capsys):
    """test_dir = train_dir (or a test folder holding copies of training photos) scored the training set with
    exit 0 and no word; now the count and an example are said in one line and in the JSON."""
    import shutil

    train = tree(tmp_path / "train", ["00_red", "01_blue"], 5)
    eval_linear(train, train, tmp_path / "o1")
    notes = [l for l in capsys.readouterr().out.splitlines() if "training images" in l]
    assert notes == [f"[occon] 10 of the 10 images of {train} are training images of {train} (the same files or "
                     f"copies, e.g. 00_red/000.png): its accuracy is measured on the training set, not on unseen "
                     f"images"]
    test = tree(tmp_path / "test", ["00_red", "01_blue"], 3, seed=7)
    shutil.copy(train / "01_blue" / "004.png", test / "01_blue" / "copy.png")  # one copy among 7
    eval_linear(train, test, tmp_path / "o2")
    notes = [l for l in capsys.readouterr().out.splitlines() if "training images" in l]
    assert len(notes) == 1 and "1 of the 7 images" in notes[0] and "01_blue/copy.png" in notes[0] \
        and "partly measured" in notes[0], notes
    saved = json.loads((tmp_path / "o2" / "eval_linear.json").read_text())
    assert saved["notes"] == [notes[0].removeprefix("[occon] ")]
    shutil.rmtree(test / "01_blue")  # disjoint sets: no note
    tree(test, ["01_blue"], 3, seed=8)
    eval_linear(train, test, tmp_path / "o3")
    assert "training images" not in capsys.readouterr().out


@pytest.mark.kind("eval.mismatched-sets")
def test_background_challenge_variants_that_select_nothing_or_twice_are_one_line(tmp_path):
    """variants=[] (no shift set) and variants=null ended in tracebacks after the features were computed;
    a variant listed twice was scored once without a word."""
    root = _in9(tmp_path / "in9", ["00_red", "01_blue", "02_yellow"])
    base = [f"root={root}", f"output_dir={tmp_path / 'o'}"]
    for variants, needle in (("variants=[]", "variants=[] and no shift_sets: nothing to evaluate"),
                             ("variants=[mixed_same,mixed_same]", "variants lists ['mixed_same'] more than once"),
                             ("variants=null", "no <variant>/val folder for ['original', 'only_bg_b'")):
        proc = run_cli("occon_plugin.cli.eval_bgchallenge", *EVAL, *base, variants)
        assert_one_line_error(proc, needle)


def _in9(root, mixed_rand_classes):
    """original/train: 3 separable colours; mixed_same: red and blue right, the yellow folder holds blue
    objects (all wrong); mixed_rand: half of each class carries another colour, only ``mixed_rand_classes``."""
    rng = np.random.default_rng(0)
    for name, colour in COLOURS.items():
        write(root / "original" / "train" / name, [scene(rng, colour) for _ in range(8)])
        write(root / "mixed_same" / "val" / name, [scene(rng, BLUE if name == "02_yellow" else colour)
                                                     for _ in range(4)])
    for name in mixed_rand_classes:
        other = BLUE if name == "00_red" else RED
        write(root / "mixed_rand" / "val" / name, [scene(rng, COLOURS[name]) for _ in range(2)]
              + [scene(rng, other) for _ in range(2)])
    return root


@pytest.mark.kind("eval.mismatched-sets")
def test_the_bg_gap_is_over_the_classes_both_variants_have_and_says_so(tmp_path):
    kw = dict(resize=32, crop=32, batch_size=16, progress=False, fast=True, variants=["mixed_same", "mixed_rand"])
    out = background_challenge(MeanColour(), _in9(tmp_path / "lacking", ["00_red", "01_blue"]), **kw)
    acc = {r["set"]: r["accuracy"] for r in out["rows"]}
    assert acc["mixed_same"] == pytest.approx(8 / 12) and acc["mixed_rand"] == 0.5  # over different classes
    assert out["bg_gap"] == pytest.approx(1.0 - 0.5)      # red + blue only: 8/8 right vs 4/8 (was 8/12 - 4/8)
    assert out["bg_gap_classes"] == ["00_red", "01_blue"]
    assert "BG-gap over the 2 classes both mixed_same and mixed_rand have images of (only mixed_same has " \
           "02_yellow): 8 and 8 images" in out["notes"]
    rand = next(r for r in out["rows"] if r["set"] == "mixed_rand")
    assert rand["n_classes"] == 2 and rand["classes_without_images"] == ["02_yellow"]
    full = background_challenge(MeanColour(), _in9(tmp_path / "full", list(COLOURS)), **kw)
    assert full["bg_gap_classes"] == list(COLOURS) and not any("BG-gap" in n for n in full["notes"])
    assert full["bg_gap"] == pytest.approx(8 / 12 - 6 / 12)  # every class: the plain difference
    with pytest.raises(DatasetError, match="no common class"):
        root = _in9(tmp_path / "disjoint", ["02_yellow"])
        for name in ("02_yellow",):
            for f in (root / "mixed_same" / "val" / name).iterdir():
                f.unlink()
        background_challenge(MeanColour(), root, **kw)
