"""Issue 18, training faults: a diverging run, a full disk or file-size limit while saving, a batch too large
for memory, SIGTERM from a scheduler, two runs of one name at once, the W&B pictures after a resume.

Every run is real (solo-learn's MoCo v2 through the plugin's CLI, real photos, real store); the out-of-memory
case raises torch's own allocator error from inside the backbone's forward (a real 1 PiB allocation)."""
from __future__ import annotations

import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from robustness_helpers import FAST_LOCALIZE, REPO, assert_one_line_error, pretrain_args, run_cli

pytestmark = pytest.mark.slow

PHOTOS = ["a_rgb.jpg", "b_rgb.png", "c_rgb.jpg", "d_rgb.webp", "e_rgb.bmp", "f_rgb.tif", "k_la.png", "p_exif6.jpg"]


@pytest.fixture(scope="module")
def photos(mixed, mixed_store, tmp_path_factory):
    """Eight good photos of the battery's folder and its store (which also holds other images: fine)."""
    data = tmp_path_factory.mktemp("faults") / "data"
    data.mkdir()
    for name in PHOTOS:
        shutil.copy(mixed.root / name, data / name)
    return data, mixed_store


def run_main_here(module: str, args, monkeypatch, capsys, prog: str = "occon") -> tuple[int, str]:
    """A console command run in this process (``sys.argv`` patched): its exit status and stderr."""
    import importlib

    main = importlib.import_module(module).main
    monkeypatch.setattr(sys, "argv", [prog, *map(str, args)])
    with pytest.raises(SystemExit) as info:
        main()
    return info.value.code, capsys.readouterr().err


def one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.startswith("[occon] error:")]
    assert len(lines) == 1 and "Traceback" not in err, err[-3000:]
    return lines[0]


def run_folder(out: Path, name: str = "mocov2_occon-custom") -> Path:
    return out / "mocov2_occon" / name


# ---------------------------------------------------------------------------------------------- 2. divergence
@pytest.mark.kind("train.diverged")
@pytest.mark.parametrize("fmt", ["image_folder", "dali"])
def test_a_diverging_run_stops_at_the_first_nonfinite_loss(fmt, photos, tmp_path):
    data, store = photos
    args = pretrain_args(data, tmp_path / "t", "++optimizer.lr=1e30", "++scheduler.name=none", store=store, fmt=fmt,
                         steps=6)
    proc = run_cli("occon_plugin.cli.pretrain", *args)
    text = proc.stdout + proc.stderr
    assert proc.returncode == 3, f"exit {proc.returncode}\n{text[-3000:]}"  # DIVERGED_EXIT_CODE
    line = one_error_line(proc.stderr)
    for needle in ("training diverged at step 1 (epoch 0", "the loss is nan", "optimizer.lr",
                   "Stopped before this step changed the weights"):
        assert needle in line, (needle, line)
    assert not list((tmp_path / "t").rglob("*.ckpt"))  # no checkpoint holds the diverged weights


@pytest.mark.kind("train.diverged")
def test_no_checkpoint_with_nonfinite_weights_is_written(tmp_path):
    from occon_plugin.errors import TrainingDivergedError
    from occon_plugin.train.runs import atomic_checkpoint_io

    io = atomic_checkpoint_io()  # what Lightning's ModelCheckpoint and trainer.save_checkpoint write through
    last = tmp_path / "last.ckpt"
    io.save_checkpoint({"state_dict": {"w": torch.ones(4), "steps": torch.tensor(3)}, "global_step": 3}, last)
    before = last.read_bytes()
    for bad in (float("nan"), float("inf")):
        with pytest.raises(TrainingDivergedError, match=r"weights at step 4 are not finite .* in w\).*last.ckpt was "
                                                        r"not written .*keeps the last finite checkpoint"):
            io.save_checkpoint({"state_dict": {"w": torch.tensor([1.0, bad]), "steps": torch.tensor(4)},
                                "global_step": 4}, last)
    assert last.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]


@pytest.fixture(scope="module")
def diverged_checkpoint(tmp_path_factory) -> Path:
    """A ResNet-18 checkpoint whose weights hold a NaN and an Inf (what a diverged run leaves)."""
    import torchvision

    state = torchvision.models.resnet18(weights=None).state_dict()
    state["layer3.0.conv1.weight"][0, 0, 0, 0] = float("nan")
    state["bn1.running_var"][3] = float("inf")
    path = tmp_path_factory.mktemp("diverged") / "diverged.ckpt"
    torch.save(state, path)
    return path


def _class_folder(root: Path, mixed) -> Path:
    for k, name in enumerate(PHOTOS[:4]):
        (root / f"class{k % 2}").mkdir(parents=True, exist_ok=True)
        shutil.copy(mixed.root / name, root / f"class{k % 2}" / name)
    return root


@pytest.mark.kind("train.diverged")
def test_every_evaluator_refuses_a_checkpoint_with_nonfinite_weights(diverged_checkpoint, mixed, tmp_path,
                                                                     monkeypatch, capsys):
    ckpt = diverged_checkpoint
    folder = _class_folder(tmp_path / "classes", mixed)
    bg = tmp_path / "bg"
    for sub in ("original/train", "original/val", "mixed_rand/val"):
        _class_folder(bg / sub, mixed)
    commands = {
        "occon_plugin.cli.eval_linear": [f"model={ckpt}", f"train_dir={folder}", f"test_dir={folder}",
                                         f"output_dir={tmp_path / 'o1'}", "wandb.enabled=false"],
        "occon_plugin.cli.eval_bgchallenge": [f"model={ckpt}", f"root={bg}", f"output_dir={tmp_path / 'o2'}",
                                              "wandb.enabled=false"],
        "occon_plugin.cli.linear": ["--config-path", REPO / "scripts" / "linear" / "custom", "--config-name",
                                    "linear.yaml", f"++pretrained_feature_extractor={ckpt}",
                                    f"++data.train_path={folder}", f"++checkpoint.dir={tmp_path / 'o3'}",
                                    "++accelerator=cpu", "++max_steps=1"],
        "occon_plugin.cli.localize": [f"data.path={mixed.root}", f"output_dir={tmp_path / 'store'}",
                                      f"model={ckpt}", *FAST_LOCALIZE],
    }
    for module, args in commands.items():
        code, err = run_main_here(module, args, monkeypatch, capsys)
        line = one_error_line(err)
        assert code == 2, (module, code, err[-2000:])
        for needle in (str(ckpt), "non-finite weights (NaN or Inf in 2 of", "diverged", "optimizer.lr"):
            assert needle in line, (module, needle, line)
    assert not (tmp_path / "store").exists() or not list((tmp_path / "store").rglob("*.png"))


# ---------------------------------------------------------------------------------------------- 8. space, memory
def _file_size_limit(limit: int):
    def apply():  # in the child before exec; the CLI itself ignores SIGXFSZ, so the write fails with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


@pytest.mark.kind("run.no-space")
def test_a_file_size_limit_while_saving_a_checkpoint_is_one_line_and_keeps_the_previous_one(photos, tmp_path):
    data, store = photos
    args = pretrain_args(data, tmp_path / "t", "++auto_resume.enabled=true", store=store, steps=2)  # epoch 0
    first = run_cli("occon_plugin.cli.pretrain", *args)
    assert first.returncode == 0, first.stderr[-3000:]
    folder = run_folder(tmp_path / "t")
    last = folder / "last.ckpt"
    before = last.read_bytes()
    (folder / "final.ckpt").unlink()
    # the same run continued for another epoch, under a 32 MiB file-size limit (a checkpoint is ~130 MB)
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "WANDB_MODE": "offline"}
    proc = subprocess.run([sys.executable, "-m", "occon_plugin.cli.pretrain",
                           *pretrain_args(data, tmp_path / "t", "++auto_resume.enabled=true", store=store, steps=4)],
                          capture_output=True, text=True, env=env, preexec_fn=_file_size_limit(32 << 20), timeout=600)
    line = assert_one_line_error(proc, f"cannot write {last}", "File too large", "ulimit -f",
                                 f"Run folder {folder}", "the previous last.ckpt is intact",
                                 "run the same command again to resume")
    assert len(line) < 600
    assert last.read_bytes() == before  # the previous checkpoint, byte for byte
    assert sorted(p.name for p in folder.iterdir() if p.name.endswith(".ckpt") or p.name.startswith(".last")) == \
        ["last.ckpt"]  # no temp file, no half-written checkpoint, no final.ckpt
    resumed = run_cli("occon_plugin.cli.pretrain",
                      *pretrain_args(data, tmp_path / "t", "++auto_resume.enabled=true", store=store, steps=4))
    assert resumed.returncode == 0 and f"resuming from {last}" in resumed.stdout, resumed.stderr[-3000:]


def _allocator_failure(monkeypatch):
    """Every convolution asks torch's CPU allocator for 1 PiB: its real "DefaultCPUAllocator: can't allocate
    memory" RuntimeError, raised where a batch too large for memory fails (the backbone's activations)."""
    original = torch.nn.functional.conv2d

    def conv2d(*args, **kwargs):
        torch.empty(1 << 50, dtype=torch.uint8)
        return original(*args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "conv2d", conv2d)


@pytest.mark.kind("run.out-of-memory")
def test_a_batch_too_large_for_memory_is_one_line_naming_the_batch_size(photos, mixed, tmp_path, monkeypatch,
                                                                       capsys):
    data, store = photos
    _allocator_failure(monkeypatch)
    code, err = run_main_here("occon_plugin.cli.pretrain", pretrain_args(data, tmp_path / "t", store=store, batch=4),
                              monkeypatch, capsys)
    line = one_error_line(err)
    assert code == 2
    for needle in ("out of CPU memory", "DefaultCPUAllocator", "optimizer.batch_size=4", "lower optimizer.batch_size",
                   "resume"):
        assert needle in line, (needle, line)
    code, err = run_main_here("occon_plugin.cli.localize", [f"data.path={mixed.root}", f"output_dir={tmp_path / 's'}",
                                                            *FAST_LOCALIZE], monkeypatch, capsys)
    line = one_error_line(err)
    assert code == 2 and "batch_size=8" in line and "lower batch_size" in line, line


# ---------------------------------------------------------------------------------------------- 9. SIGTERM
def _final_state(folder: Path) -> dict:
    return torch.load(folder / "final.ckpt", map_location="cpu", weights_only=False)["state_dict"]


def _sigterm_after_first_batch(args, cwd, signum=signal.SIGTERM) -> tuple[int, str, str]:
    """Start the run, send SIGTERM (to its pid only, as ``kill`` does) once its progress bar (Lightning prints
    it on stdout) shows the first batch done; return its exit status, stdout and stderr."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.Popen([sys.executable, "-m", "occon_plugin.cli.pretrain", *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    seen, deadline = b"", time.time() + 600
    os.set_blocking(proc.stdout.fileno(), False)
    while not re.search(rb"\| 1/\d+ \[", seen) and proc.poll() is None and time.time() < deadline:
        chunk = proc.stdout.read() or b""
        seen += chunk
        time.sleep(0.01 if chunk else 0.05)
    proc.send_signal(signum)
    os.set_blocking(proc.stdout.fileno(), True)
    rest, err = proc.communicate(timeout=600)
    return proc.returncode, (seen + (rest or b"")).decode(errors="replace"), err.decode(errors="replace")


# ``python -m occon_plugin.cli.pretrain ...`` that sends itself SIGTERM (as ``kill <pid>`` does) from inside the
# optimizer step number STOP_AFTER: the signal lands at an exact step whatever the machine's load (a signal sent
# from outside on seeing the progress bar raced the next batch's start on a busy machine)
SELF_SIGTERM = """
import os, runpy, signal, sys
from torch.optim.optimizer import register_optimizer_step_post_hook
after, steps = int(os.environ["STOP_AFTER"]), [0]
def hook(optimizer, args, kwargs):
    steps[0] += 1
    if steps[0] == after:
        os.kill(os.getpid(), signal.SIGTERM)
register_optimizer_step_post_hook(hook)
sys.argv = ["occon-pretrain", *sys.argv[1:]]
runpy.run_module("occon_plugin.cli.pretrain", run_name="__main__", alter_sys=True)
"""


@pytest.mark.kind("run.sigterm")
def test_sigterm_saves_a_resumable_checkpoint_and_the_rerun_ends_as_if_uninterrupted(photos, tmp_path):
    """Stopped inside an epoch (after step 1 of 3) and before its LAST batch (after step 2 of 3: Lightning's
    restored ``is_last_batch`` used to end the resumed epoch before that batch, the run trained a batch less in
    epoch 0 and went on into epoch 3), the resumed run ends with the uninterrupted run's weights, bit for bit."""
    data, store = photos
    six = tmp_path / "six"
    six.mkdir()
    for name in PHOTOS[:6]:
        shutil.copy(data / name, six / name)
    # 3 steps of 2 per epoch, 5 steps
    args = pretrain_args(six, tmp_path / "t", "++auto_resume.enabled=true", "++optimizer.lr=0.3", store=store, steps=5,
                         batch=2)
    full = run_cli("occon_plugin.cli.pretrain", *args, "++name=full", cwd=tmp_path)
    assert full.returncode == 0, full.stderr[-3000:]
    expected = _final_state(run_folder(tmp_path / "t", "full"))
    for after in (1, 2):
        name = f"stopped{after}"
        folder = run_folder(tmp_path / "t", name)
        env = {**os.environ, "PYTHONWARNINGS": "ignore", "STOP_AFTER": str(after)}
        stopped = subprocess.run([sys.executable, "-c", SELF_SIGTERM, *args, f"++name={name}"], cwd=tmp_path,
                                 env=env, capture_output=True, text=True, timeout=600)
        out, err = stopped.stdout, stopped.stderr
        assert stopped.returncode == 143, f"exit {stopped.returncode}\n{err[-3000:]}"
        assert "[occon] SIGTERM received: saving a resumable checkpoint at the end of this step" in out
        assert "Traceback" not in err, err[-3000:]
        lines = [line for line in err.replace("\r", "\n").splitlines() if line.startswith("[occon] terminated")]
        assert len(lines) == 1, err[-3000:]
        assert f"saved a resumable checkpoint at step {after} (epoch 0)" in lines[0], lines[0]
        assert str(folder / "last.ckpt") in lines[0]
        assert not (folder / "final.ckpt").exists()
        resumed = run_cli("occon_plugin.cli.pretrain", *args, f"++name={name}", cwd=tmp_path)
        assert resumed.returncode == 0, resumed.stderr[-3000:]
        assert f"[occon] resuming from {folder / 'last.ckpt'}" in resumed.stdout
        got = torch.load(folder / "final.ckpt", map_location="cpu", weights_only=False)
        assert got["epoch"] == torch.load(run_folder(tmp_path / "t", "full") / "final.ckpt", map_location="cpu",
                                          weights_only=False)["epoch"], "the resumed run ended in another epoch"
        differ = [k for k in expected if not torch.equal(expected[k], got["state_dict"][k])]
        assert not differ, f"{len(differ)} of {len(expected)} tensors differ after a stop at step {after}: {differ[:5]}"


@pytest.mark.kind("run.sigterm")
def test_ctrl_c_during_pretraining_saves_a_resumable_checkpoint_and_never_a_final_one(photos, tmp_path):
    # Lightning 1.9 swallows KeyboardInterrupt: the run used to go on to write final.ckpt and exit 0
    data, store = photos
    args = pretrain_args(data, tmp_path / "t", "++auto_resume.enabled=true", store=store, steps=40, batch=2)
    code, out, err = _sigterm_after_first_batch(args, tmp_path, signal.SIGINT)
    folder = run_folder(tmp_path / "t")
    assert code == 130 and "Traceback" not in err, f"exit {code}\n{err[-3000:]}"
    assert "[occon] interrupted (SIGINT): saved a resumable checkpoint at step " in err
    assert (folder / "last.ckpt").is_file() and not (folder / "final.ckpt").exists()


@pytest.mark.kind("run.sigterm")
def test_sigterm_before_training_and_during_localization_is_one_line_143(mixed, tmp_path):
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.Popen([sys.executable, "-m", "occon_plugin.cli.localize", f"data.path={mixed.root}",
                             f"output_dir={tmp_path / 'store'}", *FAST_LOCALIZE], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while proc.poll() is None and not (tmp_path / "store" / "manifest.json").exists() and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=300)
    if proc.returncode == 0:
        pytest.fail("the localization ended before the signal; it must take longer than its start")
    assert proc.returncode == 143 and "Traceback" not in err, (proc.returncode, err[-3000:])
    assert "[occon] terminated (SIGTERM): nothing is half-written; run the same command again to resume" in err
    rerun = run_cli("occon_plugin.cli.localize", f"data.path={mixed.root}", f"output_dir={tmp_path / 'store'}",
                    *FAST_LOCALIZE)
    assert rerun.returncode == 0, rerun.stderr[-3000:]


# ---------------------------------------------------------------------------------------------- 10. one run per name
@pytest.mark.kind("run.concurrent")
def test_a_second_run_of_the_same_name_is_refused_and_a_killed_run_leaves_no_stale_lock(photos, tmp_path,
                                                                                        monkeypatch, capsys):
    data, store = photos
    args = pretrain_args(data, tmp_path / "t", "++auto_resume.enabled=false", store=store, steps=400)
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    first = subprocess.Popen([sys.executable, "-m", "occon_plugin.cli.pretrain", *args], env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    folder = run_folder(tmp_path / "t")
    try:
        deadline = time.time() + 300
        while not (folder / "config.yaml").exists() and first.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        assert first.poll() is None, "the first run ended early"
        # auto_resume=false would move a later run to <name>-2; while the first one trains, it is refused
        code, err = run_main_here("occon_plugin.cli.pretrain", args, monkeypatch, capsys)
        line = one_error_line(err)
        assert code == 2 and f"another pretraining run (pid {first.pid}) is training in {folder}" in line, line
        assert "++name=" in line and not run_folder(tmp_path / "t", "mocov2_occon-custom-2").exists()
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    # killed outright: the lock went with the process; the next run of the name starts (in <name>-2)
    from occon_plugin.train.runs import lock_and_plan
    from omegaconf import OmegaConf

    cfg = OmegaConf.create({"method": "mocov2_occon", "name": "mocov2_occon-custom",
                            "checkpoint": {"dir": str(tmp_path / "t")}, "auto_resume": {"enabled": False}})
    plan, locks = lock_and_plan(cfg)
    try:
        assert plan.out_dir == run_folder(tmp_path / "t", "mocov2_occon-custom-2") and len(locks) == 2
        with pytest.raises(Exception, match="another pretraining run"):
            lock_and_plan(OmegaConf.create({**OmegaConf.to_container(cfg), "name": "mocov2_occon-custom"}))
    finally:
        for lock in locks:
            lock.release()


# ---------------------------------------------------------------------------------------------- 14. pictures
@pytest.mark.kind("wandb.pictures-once")
def test_the_augmentation_pictures_are_logged_once_per_run_across_a_resume(photos, tmp_path):
    data, store = photos
    base = pretrain_args(data, tmp_path / "t", "++auto_resume.enabled=true", store=store, steps=2)
    args = [a for a in base if a != "++wandb.enabled=false"] + ["++wandb.enabled=true", "++wandb.project=occon-test"]
    env = {"WANDB_MODE": "offline", "HOME": str(tmp_path)}
    first = run_cli("occon_plugin.cli.pretrain", *args, env=env)
    assert first.returncode == 0, first.stderr[-3000:]
    more = [a if not a.startswith("++max_steps=") else "++max_steps=4" for a in args]
    second = run_cli("occon_plugin.cli.pretrain", *more, env=env)
    assert second.returncode == 0 and "resuming from" in second.stdout, second.stderr[-3000:]
    folder = run_folder(tmp_path / "t")
    runs = sorted((folder / "wandb").glob("offline-run-*"))
    run_id = (folder / "wandb_run_id").read_text().strip()
    assert runs and all(r.name.endswith(run_id) for r in runs)  # the resumed run continues the same W&B run
    pictures = sorted(p.name for r in runs for p in r.glob("files/media/images/occon/augmentations*"))
    assert len(pictures) == 4, pictures  # N_PICTURES samples, logged once (not again after the resume)


# ------------------------------------------------------------------------------------ a store rebuilt in place
@pytest.mark.kind("run.store-rebuilt")
def test_a_run_is_not_resumed_on_a_store_rebuilt_in_place(photos, tmp_path):
    """The store a run started with is recorded (store.json); a store rebuilt at the same path with other
    settings before the resume is refused in one line (it would continue the weights on other masks), while
    the same store resumes."""
    data, mixed_store = photos
    store = shutil.copytree(mixed_store, tmp_path / "store")
    args = pretrain_args(data, tmp_path / "t", "++auto_resume.enabled=true", store=store, steps=2)
    first = run_cli("occon_plugin.cli.pretrain", *args)
    assert first.returncode == 0, first.stderr[-3000:]
    assert (run_folder(tmp_path / "t") / "store.json").is_file()
    again = run_cli("occon_plugin.cli.pretrain", *args)
    assert again.returncode == 0 and "resuming from" in again.stdout, again.stderr[-3000:]
    rebuilt = run_cli("occon_plugin.cli.localize", f"data.path={data}", f"output_dir={store}", "resume=false",
                      *FAST_LOCALIZE, "threshold=0.3")
    assert rebuilt.returncode == 0, rebuilt.stderr[-3000:]
    proc = run_cli("occon_plugin.cli.pretrain", *args)
    assert_one_line_error(proc, f"occon.store={store} was rebuilt", "the localization settings and the entries differ",
                          "++name=<new name>")
