"""Items 5 and 11: which run a command continues, atomic checkpoints, torn-checkpoint fallback, and a
pretraining run killed with SIGKILL that resumes to exactly the weights of an uninterrupted run."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from occon_plugin.errors import ConfigError
from occon_plugin.train.runs import checkpoint_readable, plan_run

from robustness_helpers import pretrain_args, run_cli

pytestmark = pytest.mark.slow


def run_cfg(tmp_path: Path, **changes):
    cfg = OmegaConf.create({"method": "mocov2_occon", "name": "run", "checkpoint": {"dir": str(tmp_path / "t")},
                            "auto_resume": {"enabled": True}, "backbone": {"name": "resnet18"},
                            "optimizer": {"name": "sgd", "lr": 0.03, "batch_size": 4},
                            "method_kwargs": {"temperature": 0.2}, "max_epochs": 10, "seed": 5,
                            "data": {"train_path": "photos", "num_workers": 2}})
    for key, value in changes.items():
        OmegaConf.update(cfg, key, value)
    return cfg


def write_run(cfg, ckpts=("last.ckpt",)) -> Path:
    folder = Path(cfg.checkpoint.dir) / cfg.method / cfg.name
    folder.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(cfg, folder / "config.yaml")
    for name in ckpts:
        torch.save({"state_dict": {"w": torch.ones(3)}, "epoch": 1}, folder / name)
    return folder


@pytest.mark.kind("run.changed-settings")
def test_resume_only_with_the_same_settings(tmp_path):
    folder = write_run(run_cfg(tmp_path))
    config_before = (folder / "config.yaml").read_bytes()
    plan = plan_run(run_cfg(tmp_path, **{"data.num_workers": 8}))  # not run-defining
    assert plan.ckpt_path == str(folder / "last.ckpt") and plan.out_dir == folder
    for key, value in {"optimizer.lr": 0.1, "optimizer.batch_size": 8, "method_kwargs.temperature": 0.5,
                       "max_epochs": 20}.items():
        with pytest.raises(ConfigError, match=rf"{key}: .* -> {value}.*\+\+name=<new name>"):
            plan_run(run_cfg(tmp_path, **{key: value}))
    assert (folder / "config.yaml").read_bytes() == config_before
    # without auto_resume a new folder each time; the old run is never overwritten
    cfg = run_cfg(tmp_path, **{"auto_resume.enabled": False, "optimizer.lr": 0.1})
    plan = plan_run(cfg)
    assert cfg.name == "run-2" and plan.out_dir == folder.with_name("run-2") and plan.ckpt_path is None
    assert "holds an earlier run (kept)" in plan.notes[0]
    write_run(cfg)
    assert plan_run(run_cfg(tmp_path, **{"auto_resume.enabled": False})).out_dir.name == "run-3"


def test_a_folder_with_only_the_settings_of_a_run_that_saved_nothing_starts_over_with_new_settings(tmp_path):
    """A run refused after it wrote its settings (under DDP a rank's batch check comes after ``config.yaml``):
    the corrected command with other settings starts that folder over instead of refusing to resume weights that
    do not exist; once the folder holds a checkpoint or refresh versions, other settings are refused again."""
    folder = write_run(run_cfg(tmp_path), ckpts=())
    plan = plan_run(run_cfg(tmp_path, **{"data.train_path": "other-photos"}))
    assert plan.out_dir == folder and plan.ckpt_path is None and "saved nothing" in plan.notes[-1]
    (folder / "refresh").mkdir()
    with pytest.raises(ConfigError, match=r"data.train_path: .* -> '.*other-photos'"):
        plan_run(run_cfg(tmp_path, **{"data.train_path": "other-photos"}))


@pytest.mark.kind("run.torn-checkpoint")
def test_a_torn_last_checkpoint_falls_back_to_the_newest_readable_one(tmp_path):
    folder = write_run(run_cfg(tmp_path), ckpts=("epoch0.ckpt", "last.ckpt"))
    data = (folder / "last.ckpt").read_bytes()
    (folder / "last.ckpt").write_bytes(data[: len(data) // 2])  # what a killed non-atomic writer leaves
    assert not checkpoint_readable(folder / "last.ckpt") and checkpoint_readable(folder / "epoch0.ckpt")
    plan = plan_run(run_cfg(tmp_path))
    assert plan.ckpt_path == str(folder / "epoch0.ckpt")
    assert any("last.ckpt is damaged" in n and "last.ckpt.damaged" in n for n in plan.notes)
    assert (folder / "last.ckpt.damaged").read_bytes() == data[: len(data) // 2]  # kept, not deleted
    (folder / "epoch0.ckpt").write_bytes(b"")
    plan = plan_run(run_cfg(tmp_path))
    assert plan.ckpt_path is None and "starting it over" in plan.notes[-1]


WRITER = """
import sys, torch
from occon_plugin.train.runs import atomic_checkpoint_io
io = atomic_checkpoint_io()
k = 0
print("ready", flush=True)
while True:
    k += 1
    io.save_checkpoint({"k": k, "w": torch.full((1 << 20,), float(k))}, sys.argv[1])
"""


@pytest.mark.kind("run.torn-checkpoint")
def test_kill_9_while_saving_never_leaves_a_torn_checkpoint(tmp_path):
    target = tmp_path / "last.ckpt"
    for attempt in range(2):
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(target)], stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip() == "ready"
        deadline = time.time() + 60
        while not target.exists() and time.time() < deadline:
            time.sleep(0.01)
        time.sleep(0.05 + 0.1 * attempt)  # somewhere inside a later save
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert checkpoint_readable(target)
        ckpt = torch.load(target, weights_only=True)
        assert torch.equal(ckpt["w"], torch.full((1 << 20,), float(ckpt["k"])))
    assert oct(target.stat().st_mode & 0o777) == oct(0o666 & ~_umask())


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _final_state(folder: Path) -> dict:
    return torch.load(folder / "final.ckpt", map_location="cpu", weights_only=False)["state_dict"]


@pytest.fixture(scope="module")
def eight(mixed, mixed_store, tmp_path_factory):
    """Eight good photos and the store entries for them (2 steps of 4 per epoch)."""
    root = tmp_path_factory.mktemp("resume")
    data = root / "data"
    data.mkdir()
    for name in ["a_rgb.jpg", "b_rgb.png", "c_rgb.jpg", "d_rgb.webp", "e_rgb.bmp", "f_rgb.tif", "k_la.png",
                 "p_exif6.jpg"]:
        shutil.copy(mixed.root / name, data / name)
    return root, data, mixed_store


@pytest.mark.kind("run.resume-exact")
@pytest.mark.kind("run.changed-settings")
def test_pretraining_killed_with_sigkill_resumes_to_the_uninterrupted_weights(eight, tmp_path, monkeypatch, capsys):
    root, data, store = eight
    args = pretrain_args(data, tmp_path / "t", "++auto_resume.enabled=true", "++optimizer.lr=0.3", store=store,
                         steps=4)  # 2 epochs of 2 steps; the store also holds other images (fine)
    full = run_cli("occon_plugin.cli.pretrain", *args, "++name=full", cwd=tmp_path)
    assert full.returncode == 0, full.stderr[-3000:]
    folder = tmp_path / "t" / "mocov2_occon" / "killed"
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.Popen([sys.executable, "-m", "occon_plugin.cli.pretrain", *args, "++name=killed"], cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, start_new_session=True)
    while proc.poll() is None and not (folder / "last.ckpt").exists():
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL, "the run ended before it could be killed"
    assert not (folder / "final.ckpt").exists()
    resumed = run_cli("occon_plugin.cli.pretrain", *args, "++name=killed", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"[occon] resuming from {folder / 'last.ckpt'}" in resumed.stdout
    a, b = _final_state(tmp_path / "t" / "mocov2_occon" / "full"), _final_state(folder)
    differ = [k for k in a if not torch.equal(a[k], b[k])]
    assert not differ, f"{len(differ)} of {len(a)} tensors differ: {differ[:5]}"
    # the same command with another learning rate is refused, naming the key; the run stays as it was
    config = (folder / "config.yaml").read_bytes()
    from test_config_errors import run_pretrain_here

    code, err = run_pretrain_here([*[a for a in args if not a.startswith("++optimizer.lr")], "++optimizer.lr=0.1",
                                   "++name=killed"], monkeypatch, capsys)
    assert code == 2 and "optimizer.base_lr: 0.3 -> 0.1" in err and "Traceback" not in err
    assert (folder / "config.yaml").read_bytes() == config


@pytest.mark.kind("run.resume-exact")
def test_dali_epoch_after_a_resume_equals_the_uninterrupted_epoch(mixed, mixed_store):
    """What a resumed DALI run needs: epoch 1 drawn by a fresh loader that starts there is the very
    epoch 1 of a loader that ran epoch 0 first (same samples, decisions and augmented pixels)."""
    from occon_plugin.augment.dali.datamodule import build_dali_loader
    from test_pipelines import cfg

    c = cfg(mixed.root, mixed_store)
    through = build_dali_loader(c)
    list(through)                                  # epoch 0
    uninterrupted = list(through)                  # epoch 1
    resumed = list(build_dali_loader(c, start_epoch=lambda: 1))
    assert len(resumed) == len(uninterrupted) == 4
    for (ia, va, _, info_a), (ib, vb, _, info_b) in zip(uninterrupted, resumed):
        assert torch.equal(ia, ib) and all(torch.equal(x, y) for x, y in zip(va, vb))
        assert all(torch.equal(info_a[k], info_b[k]) for k in info_a)
    epoch0 = list(build_dali_loader(c))
    assert not torch.equal(epoch0[0][0], uninterrupted[0][0])  # epochs do differ
