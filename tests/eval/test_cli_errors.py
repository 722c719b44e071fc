"""Bad input to the evaluation CLIs ends in one line ``[occon] error: ...`` naming the key or folder, exit 2.

Found by trying the commands as a new user would: a misspelled key or a value of the wrong type gave
Hydra's multi-line message or a Python traceback with exit 1, and a train folder without class
sub-folders or a missing Background Challenge root a traceback. Each case runs the real console
entry point in a subprocess (the model is never loaded: every case fails before that, or uses the
embedded-weights-free ``torchvision:resnet18``)."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from PIL import Image


def run_cli(module: str, *args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module, *map(str, args)], capture_output=True, text=True,
                          timeout=300, cwd=cwd)


def assert_one_line_error(proc: subprocess.CompletedProcess, *needles: str) -> None:
    err = proc.stderr
    lines = [line for line in err.splitlines() if line.startswith("[occon] error:")]
    assert proc.returncode == 2 and len(lines) == 1 and "Traceback" not in err, (proc.returncode, err[-3000:])
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


def flat_folder(root):
    """Images directly in the folder (no <class>/ sub-folders)."""
    root.mkdir(parents=True)
    for i in range(2):
        Image.fromarray(np.full((16, 16, 3), 40 * i, np.uint8)).save(root / f"{i}.png")
    return root


CASES = {
    "eval-linear misspelled key": ("occon_plugin.cli.eval_linear", ["modle=x"], ["modle", "model"]),
    "eval-linear int as text": ("occon_plugin.cli.eval_linear",
                                ["model=torchvision:resnet18", "train_dir=a", "test_dir=b", "batch_size=abc"],
                                ["batch_size=abc", "integer"]),
    "eval-linear bool as text": ("occon_plugin.cli.eval_linear",
                                 ["model=torchvision:resnet18", "train_dir=a", "test_dir=b", "fast=maybe"],
                                 ["fast=maybe"]),
    "eval-bgchallenge misspelled key": ("occon_plugin.cli.eval_bgchallenge", ["roo=x"], ["roo", "root"]),
    "eval-bgchallenge missing root": ("occon_plugin.cli.eval_bgchallenge",
                                      ["model=torchvision:resnet18", "root={tmp}/no-such-bg", "wandb.enabled=false"],
                                      ["no-such-bg", "does not exist"]),
    "eval-localization float as text": ("occon_plugin.cli.eval_localization",
                                        ["predictions=p", "gt=g", "threshold=abc"], ["threshold=abc", "number"]),
    "eval-linear flat train folder": ("occon_plugin.cli.eval_linear",
                                      ["model=torchvision:resnet18", "train_dir={tmp}/flat", "test_dir={tmp}/flat",
                                       "wandb.enabled=false", "output_dir={tmp}/out", "num_workers=0"],
                                      ["flat", "one sub-folder per class"]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_eval_cli_bad_input_is_one_line(case, tmp_path):
    module, args, needles = CASES[case]
    flat_folder(tmp_path / "flat")
    proc = run_cli(module, *[a.format(tmp=tmp_path) for a in args], cwd=tmp_path)
    assert_one_line_error(proc, *needles)
    assert not (tmp_path / "out").exists()


def test_type_check_accepts_what_the_cli_accepts(tmp_path):
    """The type check is no stricter than the command's schema: ints for floats, null, and new keys added with ``+``
    stay allowed; a misspelled or mistyped key is named, an integral float for an int too (``crop=224.0``: the schema
    refuses it, in OmegaConf's words, after the check passed it)."""
    from occon_plugin.cli.eval_common import CONFIG_DIR
    from occon_plugin.cli.overrides import override_problem
    from pathlib import Path

    yaml = Path(CONFIG_DIR) / "eval_linear.yaml"
    assert "crop=224.0 is not an integer" in override_problem(yaml, ["crop=224.0"])
    assert override_problem(yaml, ["val_fraction=1", "batch_size=32", "crop=224", "fast=true",
                                   "threads=4", "l2_values=[0.1,1]", "val_fraction=null", "+extra=abc",
                                   "output_dir=123"]) is None
    assert "val_fraction=abc" in override_problem(yaml, ["val_fraction=abc"])
    assert "batch_size=1.5" in override_problem(yaml, ["batch_size=1.5"])
    assert "fast=1" in override_problem(yaml, ["fast=1"])
