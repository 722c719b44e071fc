"""Issue 18 item 12: relative paths after ``hydra.job.chdir=true``, unquoted values Hydra cannot read, and a run
that must resume whether its paths were given relative or absolute."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from robustness_helpers import FAST_LOCALIZE, REPO, pretrain_args, run_cli
from test_training_faults import PHOTOS, one_error_line, run_main_here

CHDIR = ["hydra.job.chdir=true", "hydra.run.dir=job"]


@pytest.mark.kind("paths.chdir")
def test_relative_inputs_are_read_from_the_launch_folder_after_hydra_job_chdir(mixed, tmp_path):
    data = tmp_path / "photos"
    data.mkdir()
    for name in PHOTOS[:4]:
        shutil.copy(mixed.root / name, data / name)
    proc = run_cli("occon_plugin.cli.localize", "data.path=photos", "output_dir=store", *FAST_LOCALIZE, *CHDIR,
                   cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "job" / "store" / "manifest.json").is_file()  # outputs: under the job's folder
    note = [line for line in proc.stderr.splitlines() if "hydra.job.chdir" in line]
    assert note and str(tmp_path) in note[0] and str(tmp_path / "job") in note[0]
    # the evaluator reads the store given relative to the launch folder as well
    masks = tmp_path / "masks"
    masks.mkdir()
    from PIL import Image
    import numpy as np

    for name in PHOTOS[:4]:
        w, h = Image.open(data / name).size
        Image.fromarray(np.full((h, w), 255, np.uint8)).save(masks / (Path(name).stem + ".png"))
    proc = run_cli("occon_plugin.cli.eval_localization", "predictions=job/store", "gt=masks", "image_root=photos",
                   "output_dir=scores", "wandb.enabled=false", "hydra.job.chdir=true", "hydra.run.dir=job2",
                   cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "job2" / "scores" / "eval_localization.json").is_file()


@pytest.mark.kind("paths.chdir")
@pytest.mark.kind("paths.relative-resume")
@pytest.mark.slow
def test_pretraining_with_relative_paths_after_chdir_resumes_with_absolute_ones(mixed, mixed_store, tmp_path):
    data = tmp_path / "photos"
    data.mkdir()
    for name in PHOTOS:
        shutil.copy(mixed.root / name, data / name)
    shutil.copytree(mixed_store, tmp_path / "stores" / "s")
    relative = pretrain_args(Path("photos"), Path("t"), "++auto_resume.enabled=true", store=Path("stores/s"), steps=2)
    first = run_cli("occon_plugin.cli.pretrain", *relative, *(f"++{o}" for o in CHDIR), cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    folder = tmp_path / "job" / "t" / "mocov2_occon" / "mocov2_occon-custom"
    saved = OmegaConf.load(folder / "config.yaml")
    assert saved.data.train_path == str(data) and saved.occon.store == str(tmp_path / "stores" / "s")
    # the same run, its paths now absolute (and the store through a symbolic link): resumed, not refused
    (tmp_path / "link").symlink_to(tmp_path / "stores")
    absolute = pretrain_args(data, tmp_path / "job" / "t", "++auto_resume.enabled=true",
                             store=tmp_path / "link" / "s", steps=4)
    second = run_cli("occon_plugin.cli.pretrain", *absolute, cwd=REPO)
    assert second.returncode == 0, second.stderr[-3000:]
    assert f"resuming from {folder / 'last.ckpt'}" in second.stdout
    assert torch.load(folder / "final.ckpt", map_location="cpu", weights_only=False)["global_step"] == 4


@pytest.mark.kind("paths.relative-resume")
def test_a_run_saved_with_relative_paths_is_the_same_run_given_absolute_ones(tmp_path, monkeypatch):
    from occon_plugin.train.runs import plan_run

    (tmp_path / "photos").mkdir()
    (tmp_path / "store").mkdir()
    cfg = OmegaConf.create({"method": "mocov2_occon", "name": "run", "checkpoint": {"dir": str(tmp_path / "t")},
                            "auto_resume": {"enabled": True}, "seed": 5,
                            "data": {"train_path": "photos"}, "occon": {"store": "./store"}})
    folder = tmp_path / "t" / "mocov2_occon" / "run"
    folder.mkdir(parents=True)
    OmegaConf.save(cfg, folder / "config.yaml")  # an older run: its paths as typed, relative
    torch.save({"state_dict": {"w": torch.ones(2)}}, folder / "last.ckpt")
    monkeypatch.chdir(tmp_path)
    cfg.data.train_path, cfg.occon.store = str(tmp_path / "photos"), str(tmp_path / "store") + "/"
    assert plan_run(cfg).ckpt_path == str(folder / "last.ckpt")
    cfg.occon.store = str(tmp_path / "photos")  # another folder is another run
    with pytest.raises(Exception, match=r"occon.store: .*store' -> .*photos'"):
        plan_run(cfg)


QUOTE_CASES = {
    "occon_plugin.cli.pretrain": ["--config-path", REPO / "scripts" / "pretrain" / "custom", "--config-name",
                                  "mocov2_occon.yaml"],
    "occon_plugin.cli.linear": ["--config-path", REPO / "scripts" / "linear" / "custom", "--config-name",
                                "linear.yaml"],
    "occon_plugin.cli.localize": ["output_dir=x"],
    "occon_plugin.cli.eval_linear": ["train_dir=a", "test_dir=b"],
    "occon_plugin.cli.eval_bgchallenge": ["root=r"],
    "occon_plugin.cli.eval_localization": ["gt=g"],
}
KEYS = {"occon_plugin.cli.pretrain": "++data.train_path", "occon_plugin.cli.linear": "++pretrained_feature_extractor",
        "occon_plugin.cli.localize": "data.path", "occon_plugin.cli.eval_linear": "model",
        "occon_plugin.cli.eval_bgchallenge": "model", "occon_plugin.cli.eval_localization": "predictions"}


@pytest.mark.kind("paths.quoting")
@pytest.mark.parametrize("value, why", [("/data/fotos/été", "non-ASCII letters"),
                                        ("/runs/mocov2-ep=0.ckpt", "'='")])
def test_an_unquoted_value_hydra_cannot_read_names_the_key_and_says_to_quote_it(value, why, monkeypatch, capsys):
    for module, base in QUOTE_CASES.items():
        key = KEYS[module]
        code, err = run_main_here(module, [*base, f"{key}={value}"], monkeypatch, capsys)
        line = one_error_line(err)
        assert code == 2, (module, err)
        for needle in (f"the value of {key.lstrip('+')} holds {why}", "quote it", f"{key}='{value}'",
                       f"\"{key}='{value}'\""):
            assert needle in line, (module, needle, line)
