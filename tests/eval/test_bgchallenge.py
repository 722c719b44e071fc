import numpy as np
import pytest
import torch
from PIL import Image

from occon_plugin.eval.bgchallenge import VARIANTS, background_challenge, check_layout

RED, BLUE, GREEN = (220, 20, 20), (20, 20, 220), (30, 160, 30)
CLASSES = {"00_red": RED, "01_blue": BLUE}
OTHER = {"00_red": BLUE, "01_blue": RED}


class MeanColour(torch.nn.Module):
    """A real (tiny) feature extractor: the mean of each normalized channel."""

    def forward(self, x):
        return x.mean(dim=(2, 3))


def scene(rng, fg, bg=GREEN, size=32):
    img = np.empty((size, size, 3), np.uint8)
    img[:] = bg
    y, x = rng.integers(0, size - 12, 2)
    if fg is not None:
        img[y:y + 12, x:x + 12] = fg
    noise = rng.integers(-3, 4, img.shape)
    return np.clip(img.astype(int) + noise, 0, 255).astype(np.uint8)


def write(folder, arrays):
    folder.mkdir(parents=True, exist_ok=True)
    for i, a in enumerate(arrays):
        Image.fromarray(a).save(folder / f"{i:03d}.png")


def build_in9(root, seed=0, variants=VARIANTS):
    rng = np.random.default_rng(seed)
    for cls, colour in CLASSES.items():
        write(root / "original" / "train" / cls, [scene(rng, colour) for _ in range(12)])
        for v in variants:
            if v == "mixed_rand":  # half of each class carries the other class's foreground
                imgs = [scene(rng, colour) for _ in range(2)] + [scene(rng, OTHER[cls]) for _ in range(2)]
            elif v.startswith("only_bg"):
                imgs = [scene(rng, None) for _ in range(4)]
            else:
                imgs = [scene(rng, colour) for _ in range(4)]
            write(root / v / "val" / cls, imgs)
    return root


FEAT = dict(resize=32, crop=32, batch_size=16, progress=False)


def test_accuracies_and_bg_gap_on_a_constructed_tree(tmp_path):
    root = build_in9(tmp_path / "bg_challenge")
    write(tmp_path / "sketch9" / "01_blue", [scene(np.random.default_rng(5), BLUE) for _ in range(3)])
    (root / "only_fg" / "val" / "00_red" / "broken.png").write_bytes(b"not a png")
    out = background_challenge(MeanColour(), root, shift_sets={"sketch-9": str(tmp_path / "sketch9")},
                               fast=True, **FEAT)
    acc = {r["set"]: r for r in out["rows"]}
    assert [r["set"] for r in out["rows"]] == [*VARIANTS, "sketch-9"]
    assert acc["original"]["accuracy"] == 1.0 and acc["mixed_same"]["accuracy"] == 1.0
    assert acc["mixed_rand"]["accuracy"] == 0.5
    assert out["bg_gap"] == pytest.approx(0.5)
    assert acc["sketch-9"]["accuracy"] == 1.0 and acc["sketch-9"]["kind"] == "shift"
    assert acc["sketch-9"]["n_images"] == 3  # one class only: labels are mapped by class name
    assert acc["only_fg"]["n_bad"] == 1 and acc["only_fg"]["n_images"] == 8
    assert out["classes"] == ["00_red", "01_blue"]
    assert out["selection"]["n_fit"] == 24


def test_layout_errors_name_what_was_expected(tmp_path):
    root = tmp_path / "in9"
    with pytest.raises(FileNotFoundError, match="does not exist"):
        check_layout(root)
    build_in9(root, variants=("original", "mixed_same"))
    with pytest.raises(FileNotFoundError, match=r"\['only_bg_b', 'only_bg_t', 'only_fg', 'mixed_rand', 'mixed_next'\]"):
        check_layout(root)
    train, sets = check_layout(root, variants=("original", "mixed_same"))
    assert train == root / "original" / "train" and sets["mixed_same"] == root / "mixed_same" / "val"
    write(root / "mixed_same" / "val" / "02_cat", [np.zeros((8, 8, 3), np.uint8)])
    with pytest.raises(ValueError, match=r"classes \['02_cat'\] are not among the training classes"):
        background_challenge(MeanColour(), root, variants=("original", "mixed_same"), fast=True, **FEAT)
