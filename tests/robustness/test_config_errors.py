"""Item 7: config errors end in one line naming the key or file, exit 2 (no traceback), in every CLI.

The pretraining cases run the real entry point in this process (``occon_plugin.cli.pretrain.main``
with a patched ``sys.argv``: what a console command does); one runs as a subprocess to check the
real exit status and stderr end to end."""
from __future__ import annotations

import sys

import pytest

from robustness_helpers import FAST_LOCALIZE, assert_one_line_error, pretrain_args, run_cli

PRETRAIN_CASES = {
    "unknown occon key": (["++occon.bg_mixup.pmix=0.3"], ["occon.bg_mixup.pmix"]),
    "bad enum": (["++occon.missing=skipp"], ["occon.missing", "skipp"]),
    "missing store": (["++occon.store=/nonexistent/store"], ["occon.store", "/nonexistent/store"]),
    "batch larger than the data": (["++optimizer.batch_size=32", "++method_kwargs.queue_size=64"],
                                   ["optimizer.batch_size=32"]),
    "batch larger than the usable data": (["++optimizer.batch_size=20", "++method_kwargs.queue_size=40"],
                                          ["optimizer.batch_size=20", "16 usable images"]),
    "batch not a number": (["++optimizer.batch_size=abc"], ["optimizer.batch_size", "abc"]),
    "BG-Mixup enabled over no view": (["++occon.bg_mixup.views=[]"], ["occon.bg_mixup.views=[]", "enabled=false"]),
    "BG-Mixup view beyond the views": (["++occon.bg_mixup.views=[0,2]"], ["occon.bg_mixup.views=[0, 2]", "[0, 1]"]),
    # issue 20: the DALI pipeline's view checks raised ValueError (a traceback) before
    "DALI: equalization": (["++data.format=dali", "++augmentations.0.equalization.prob=0.5"],
                           ["augmentations[0].equalization.prob", "torchvision"]),
    "DALI: hue out of range": (["++data.format=dali", "++augmentations.0.color_jitter.hue=0.7"],
                               ["augmentations[0].color_jitter.hue=0.7", "[0, 0.5]"]),
    "DALI: bad device": (["++data.format=dali", "++dali.device=tpu"], ["dali.device", "tpu"]),
}


def run_pretrain_here(args, monkeypatch, capsys) -> tuple[int, str]:
    from occon_plugin.cli.pretrain import main

    monkeypatch.setattr(sys, "argv", ["occon-pretrain", *args])
    with pytest.raises(SystemExit) as info:
        main()
    return info.value.code, capsys.readouterr().err


@pytest.mark.kind("config.pretrain")
@pytest.mark.parametrize("case", list(PRETRAIN_CASES))
def test_pretraining_config_errors_are_one_line(case, mixed, mixed_store, tmp_path, monkeypatch, capsys):
    extra, needles = PRETRAIN_CASES[case]
    code, err = run_pretrain_here(pretrain_args(mixed.root, tmp_path / "t", *extra, store=mixed_store),
                                  monkeypatch, capsys)
    lines = [l for l in err.splitlines() if l.startswith("[occon] error:")]
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err[-2000:]
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    assert not (tmp_path / "t").exists() or not any((tmp_path / "t").rglob("*.ckpt"))  # nothing trained


@pytest.mark.kind("config.pretrain")
def test_train_path_pointing_to_an_image_file_end_to_end(mixed, mixed_store, tmp_path):
    proc = run_cli("occon_plugin.cli.pretrain",
                   *pretrain_args(mixed.root / "a_rgb.jpg", tmp_path / "t", store=mixed_store))
    assert_one_line_error(proc, "data.train_path", "a_rgb.jpg")


@pytest.mark.kind("config.cli")
@pytest.mark.parametrize("args,needles", [
    (["cam.iterz=3"], ["cam.iterz"]),
    (["batch_size=1"], ["batch_size=1"]),
    (["refine.crf.max_pixels=lots"], ["refine.crf.max_pixels"]),
    (["data.path=/nonexistent/photos"], ["/nonexistent/photos"]),
], ids=["unknown key", "bad value", "bad type", "missing data"])
def test_localize_config_errors_are_one_line(args, needles, mixed, tmp_path):
    base = [f"data.path={mixed.root}", f"output_dir={tmp_path / 'store'}", *FAST_LOCALIZE]
    overridden = {a.split("=")[0] for a in args}
    proc = run_cli("occon_plugin.cli.localize", *[a for a in base if a.split("=")[0] not in overridden], *args)
    assert_one_line_error(proc, *needles)


@pytest.mark.kind("config.cli")
def test_eval_config_errors_are_one_line(mixed_store, tmp_path):
    proc = run_cli("occon_plugin.cli.eval_localization", f"predictions={mixed_store}",
                   f"gt={tmp_path / 'nope.json'}", f"output_dir={tmp_path / 'out'}", "wandb.enabled=false")
    assert_one_line_error(proc, "nope.json")
    proc = run_cli("occon_plugin.cli.eval_localization", f"predictions={tmp_path / 'no-such-store'}",
                   f"gt={tmp_path}", f"image_root={tmp_path}", f"output_dir={tmp_path / 'out'}",
                   "wandb.enabled=false")
    assert_one_line_error(proc, "no-such-store")


@pytest.mark.kind("config.pretrain")
def test_equalization_on_solo_learn_1_0_2_is_one_line(mixed, mixed_store, tmp_path, monkeypatch, capsys):
    """solo-learn 1.0.2's transform has no equalization: the host adapter raised ValueError (a traceback);
    now one line naming the key (issue 20). On solo-learn main equalization exists: nothing to refuse."""
    from occon_plugin import host

    if host.GENERATION != "1.0.2":
        pytest.skip(f"solo-learn {host.SOLO_VERSION} ({host.GENERATION}) has equalization: nothing to refuse")
    code, err = run_pretrain_here(pretrain_args(mixed.root, tmp_path / "t", "++augmentations.0.equalization.prob=0.5",
                                                store=mixed_store), monkeypatch, capsys)
    lines = [l for l in err.splitlines() if l.startswith("[occon] error:")]
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err[-2000:]
    assert "equalization.prob" in lines[0] and "1.0.2" in lines[0], lines[0]


@pytest.mark.kind("config.cli")
@pytest.mark.parametrize("module, args, needles", [
    ("occon_plugin.cli.linear", ["--config-path", "{repo}/scripts/linear/custom", "--config-name", "linear.yaml",
                                 "++wandb.enabled=false", "++pretrained_feature_extractor={data}/none.ckpt",
                                 "++data.train_path={data}", "++checkpoint.dir={out}", "++optimizer.batch_size=abc"],
     ["optimizer.batch_size", "abc"]),
    ("occon_plugin.cli.linear", ["--config-path", "{repo}/scripts/linear/custom", "--config-name", "linear.yaml",
                                 "++wandb.enabled=false", "++pretrained_feature_extractor={data}/none.ckpt",
                                 "++data.train_path={data}", "++checkpoint.dir={out}", "++data.format=tfrecord"],
     ["data.format", "image_folder, dali"]),
    ("occon_plugin.cli.eval_linear", ["model=random:resnet18", "wandb.enabled=false", "train_dir={data}",
                                      "test_dir={data}", "output_dir={out}", "resize=big"], ["resize", "big"]),
    ("occon_plugin.cli.eval_bgchallenge", ["model=random:resnet18", "wandb.enabled=false", "root={data}",
                                           "output_dir={out}", "val_fraction=1.5"], ["val_fraction=1.5"]),
    ("occon_plugin.cli.eval_localization", ["predictions={data}", "gt={data}", "wandb.enabled=false",
                                            "output_dir={out}", "threshold=high"], ["threshold", "high"]),
], ids=["linear: batch not a number", "linear: unknown data.format", "eval_linear: int as text",
        "eval_bgchallenge: val_fraction", "eval_localization: float as text"])
def test_the_other_commands_config_errors_are_one_line(module, args, needles, mixed, tmp_path):
    """A bad value of each command this issue owns: one line naming the key, exit 2 (subprocess: the real exit)."""
    from robustness_helpers import REPO

    filled = [a.format(repo=REPO, data=mixed.root, out=tmp_path / "out") for a in args]
    assert_one_line_error(run_cli(module, *filled), *needles)
