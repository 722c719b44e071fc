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
    (["crf.max_pixels=lots"], ["crf.max_pixels"]),
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
