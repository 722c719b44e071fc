"""``occon.refresh`` (issue 21, first slice): one-stage object-aware training, on CPU with tiny data.

(a) the refresh's store is the one ``occon-localize`` writes with the same checkpoint and preset (bytes);
(b) a run from a folder with no store: warm-up epochs without the object-aware record, later ones with it,
    and its final checkpoint localizes with ``occon-localize``; the switch reaches the next epoch's samples
    (pixels and record) with 0 and 2 loader workers;
(c) what this slice does not do is refused with one line and exit 2 (the host's own script); DDP with
    2 CPU processes writes the store one process writes; the DALI pipeline (CPU) warms up, switches and resumes;
(d) a run stopped after a refresh resumes on the recorded store version and ends with the weights of the
    uninterrupted run; a run killed during a refresh resumes the refresh.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
N_IMAGES, BATCH = 8, 4

pytestmark = pytest.mark.slow


def _photos(root: Path) -> Path:
    """Eight real photos (scikit-image), shrunk to <= 48 px."""
    skdata = pytest.importorskip("skimage.data")
    root.mkdir(parents=True)
    names = ["astronaut", "chelsea", "coffee", "rocket", "cat", "hubble_deep_field", "immunohistochemistry", "colorwheel"]
    for i, name in enumerate(names[:N_IMAGES]):
        image = Image.fromarray(np.ascontiguousarray(getattr(skdata, name)()[..., :3]))
        image.thumbnail((48, 48))
        image.save(root / f"{i}_{name}.jpg", quality=90)
    return root


def _args(data: Path, out: Path, *extra, workers: int = 0) -> list[str]:
    """``occon-pretrain`` with a repository YAML shrunk for CPU, ``occon.refresh`` on, no store."""
    return ["--config-path", str(REPO / "scripts" / "pretrain" / "custom"), "--config-name", "mocov2_occon.yaml",
            f"++data.train_path={data}", f"++data.num_workers={workers}", f"++optimizer.batch_size={BATCH}",
            "++max_epochs=2", "++augmentations.0.crop_size=32", "++accelerator=cpu", f"++checkpoint.dir={out}",
            "++wandb.enabled=false", "++backbone.name=resnet18", "++method_kwargs.queue_size=16",
            "++method_kwargs.proj_hidden_dim=32", "++occon.store=null", "++occon.bg_mixup.p_mix=1.0",
            "++occon.refresh.enabled=true", "++occon.refresh.warmup_epochs=1", "++occon.refresh.image_size=64",
            "++occon.refresh.batch_size=8", "++auto_resume.enabled=true", *extra]


# every run of this file computes with one torch thread: the in-process run would otherwise take whatever thread
# count earlier tests of the session left (localize tests set threads=1), the subprocesses torch's default, and
# float sums over another thread split differ in their last bits (weights "differ" for no fault of the resume)
THREADS = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def _cli(module: str, *args, cwd=None, timeout=300) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "WANDB_MODE": "offline", **THREADS}
    return subprocess.run([sys.executable, "-m", module, *map(str, args)], capture_output=True, text=True, cwd=cwd,
                          env=env, timeout=timeout)


def _main_here(module, args, monkeypatch) -> int:
    """A CLI's ``main`` in this process (as the user runs it); returns the exit status."""
    monkeypatch.setattr(sys, "argv", ["occon", *map(str, args)])
    try:
        module.main()
    except SystemExit as done:
        return int(done.code or 0)
    return 0


def _run_in_process(root: Path, data: Path, name: str, *extra):
    """``occon-pretrain`` in this process with one torch thread; returns (run folder, {epoch: [(oa_crop frac,
    mixed frac) per training batch]}, seconds)."""
    from occon_plugin.cli import pretrain
    from occon_plugin.methods.base import OcconMethodMixin

    seen: dict[int, list] = {}
    original = OcconMethodMixin._log_occon_info

    def spy(self, info):
        seen.setdefault(int(self.trainer.current_epoch), []).append(
            (float(info["oa_crop"].float().mean()), float(info["mixed"].float().mean())))
        return original(self, info)

    threads = torch.get_num_threads()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(OcconMethodMixin, "_log_occon_info", spy)
        torch.set_num_threads(1)  # as the subprocesses (THREADS)
        start = time.perf_counter()
        try:
            code = _main_here(pretrain, _args(data, root / "t", f"++name={name}", *extra), mp)
        finally:
            torch.set_num_threads(threads)
        seconds = time.perf_counter() - start
    assert code == 0
    return root / "t" / "mocov2_occon" / name, seen, seconds


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    """The uninterrupted run (in this process): 2 epochs of 2 steps, a refresh after epoch 0. Records what
    every training batch's object-aware record said, per epoch."""
    root = tmp_path_factory.mktemp("refresh")
    data = _photos(root / "data")
    folder, seen, seconds = _run_in_process(root, data, "full")
    return root, data, folder, seen, seconds


def test_a_run_without_a_store_warms_up_then_trains_object_aware_and_localizes(full_run, tmp_path, monkeypatch):
    from occon_plugin.cli import localize

    root, data, folder, seen, seconds = full_run
    print(f"tiny refresh run: {seconds:.1f} s")
    # epoch 0 (warm-up): every batch without OA-Crop / BG-Mixup; epoch 1: with both (p_mix = 1)
    assert sorted(seen) == [0, 1] and len(seen[0]) == len(seen[1]) == N_IMAGES // BATCH
    assert all(oa == 0.0 and mixed == 0.0 for oa, mixed in seen[0]), seen
    assert all(oa > 0.5 for oa, _ in seen[1]) and all(mixed > 0.5 for _, mixed in seen[1]), seen
    record = json.loads((folder / "refresh" / "refresh.json").read_text())
    assert record["epochs"] == {"0": None, "1": "store-e0"}
    assert list(record["refreshes"]) == ["0"]  # none after the last epoch
    stats = record["refreshes"]["0"]
    assert stats["images"] == N_IMAGES and stats["written_ok"] == N_IMAGES and stats["images_per_s"] > 0
    assert 0 < stats["epoch_fraction"] and stats["preset"] == "bg_mixup"
    assert (folder / "refresh" / "store-e0" / "manifest.json").is_file() and (folder / "final.ckpt").is_file()
    # the weights of a refresh are no *.ckpt: solo-learn main's auto-resume takes a folder holding one for a run
    assert (folder / "refresh" / "model-e0.pt").is_file() and not list((folder / "refresh").rglob("*.ckpt"))
    # the final checkpoint localizes with occon-localize (the command's own main)
    code = _main_here(localize, [f"data.path={data}", f"model={folder / 'final.ckpt'}", f"output_dir={tmp_path / 's'}",
                                 "preset=bg_mixup", "image_size=64", "batch_size=8", "progress=false",
                                 "use_momentum=true"], monkeypatch)
    assert code == 0
    lines = (tmp_path / "s" / "index.jsonl").read_text().splitlines()
    assert len(lines) == N_IMAGES and all(json.loads(l).get("status", "ok") == "ok" for l in lines)


def test_the_refreshed_store_is_the_one_occon_localize_writes(full_run, tmp_path):
    from occon_plugin.localize.runner import run_localize
    from occon_plugin.localize.settings import DataSettings, LocalizeSettings

    root, data, folder, _, _ = full_run
    refreshed = folder / "refresh" / "store-e0"
    out = tmp_path / "store"
    run_localize(LocalizeSettings(data=DataSettings(path=str(data)), output_dir=str(out),
                                  model=str(folder / "refresh" / "model-e0.pt"), use_momentum=True,
                                  preset="bg_mixup", image_size=64,
                                  batch_size=8, device="cpu", progress=False))
    assert (out / "index.jsonl").read_bytes() == (refreshed / "index.jsonl").read_bytes()
    masks = sorted(p.relative_to(out) for p in (out / "masks").rglob("*.png"))
    assert len(masks) == N_IMAGES
    assert masks == sorted(p.relative_to(refreshed) for p in (refreshed / "masks").rglob("*.png"))
    assert all((out / m).read_bytes() == (refreshed / m).read_bytes() for m in masks)
    a, b = (json.loads((d / "manifest.json").read_text()) for d in (out, refreshed))
    assert a["settings"] == b["settings"] and a["model_sha256"] == b["model_sha256"]
    assert b["settings"]["use_momentum"] is True  # MoCo: ContraCAM of the momentum (key) encoder


def _store_bytes(store: Path, path: str) -> tuple:
    """An image's index line and mask bytes in ``store``."""
    from occon_plugin.store import Store

    s = Store.open(store)
    return s.entries[path].to_json(), s.mask_file(path).read_bytes()


def test_a_partial_update_keeps_the_other_batches_and_localizes_its_group_as_a_full_run(full_run, tmp_path):
    """``occon.refresh.fraction`` (issue 21, cost control): with ``Carry(groups=2, turn=0)`` the store holds, for
    the images of batch 0, exactly what a full run with the new model writes (same batch, same negatives) and,
    for batch 1, the earlier version's entries and masks byte for byte; the manifest says so."""
    from occon_plugin.images import list_images
    from occon_plugin.localize.runner import Carry, make_batches, run_localize
    from occon_plugin.localize.settings import DataSettings, LocalizeSettings

    root, data, folder, _, _ = full_run

    def settings(model: str, out: Path) -> LocalizeSettings:
        return LocalizeSettings(data=DataSettings(path=str(data)), output_dir=str(out), model=model,
                                use_momentum=True, preset="bg_mixup", image_size=64, batch_size=4, device="cpu",
                                progress=False)

    old, new = str(folder / "refresh" / "model-e0.pt"), str(folder / "final.ckpt")
    run_localize(settings(old, tmp_path / "old"))
    run_localize(settings(new, tmp_path / "full"))
    summary = run_localize(settings(new, tmp_path / "part"), carry=Carry(tmp_path / "old", groups=2, turn=0))
    paths = list_images(data).paths
    batch0, batch1 = ([paths[i] for i in b] for b in make_batches(len(paths), 4, 0))
    assert summary["carried"] == 4 and summary["written_ok"] == 4
    for p in batch0:
        assert _store_bytes(tmp_path / "part", p) == _store_bytes(tmp_path / "full", p), p
    for p in batch1:
        assert _store_bytes(tmp_path / "part", p) == _store_bytes(tmp_path / "old", p), p
    assert any(_store_bytes(tmp_path / "old", p)[1] != _store_bytes(tmp_path / "full", p)[1] for p in paths)
    manifest = json.loads((tmp_path / "part" / "manifest.json").read_text())
    old_manifest = json.loads((tmp_path / "old" / "manifest.json").read_text())
    assert manifest["carried_from"] == {"store": str(tmp_path / "old"), "model_sha256": old_manifest["model_sha256"],
                                        "images": 4, "rule": "fraction", "groups": 2, "turn": 0}
    assert manifest["model_sha256"] != old_manifest["model_sha256"] and manifest["counts"]["written"] == N_IMAGES


def _binary_iou(a: Path, b: Path) -> float:
    """IoU of two 8-bit mask PNGs binarized at 0.5 (value >= 128), both empty = 1."""
    x, y = (np.asarray(Image.open(m)) >= 128 for m in (a, b))
    union = np.count_nonzero(x | y)
    return np.count_nonzero(x & y) / union if union else 1.0


def test_settled_images_are_those_whose_mask_barely_moved_and_a_kept_copy_is_never_settled(full_run, tmp_path):
    """``occon.refresh.reuse_iou``: an image is settled when its masks of two versions overlap with IoU >= the
    threshold (binarized at 0.5); a byte-identical mask is a copy kept at the last refresh, so never settled."""
    import shutil

    from occon_plugin.localize.runner import run_localize
    from occon_plugin.localize.settings import DataSettings, LocalizeSettings
    from occon_plugin.store import Store
    from occon_plugin.train.refresh import settled_images

    root, data, folder, _, _ = full_run
    for model, out in ((folder / "refresh" / "model-e0.pt", tmp_path / "old"), (folder / "final.ckpt", tmp_path / "new")):
        run_localize(LocalizeSettings(data=DataSettings(path=str(data)), output_dir=str(out), model=str(model),
                                      use_momentum=True, preset="bg_mixup", image_size=64, batch_size=4, device="cpu",
                                      progress=False))
    old, new = Store.open(tmp_path / "old"), Store.open(tmp_path / "new")
    ious = {p: _binary_iou(new.mask_file(p), old.mask_file(p)) for p in new.entries}
    assert len(ious) == N_IMAGES and len(set(ious.values())) > 1, ious  # the two models' masks differ
    threshold = sorted(ious.values())[N_IMAGES // 2]
    settled = settled_images(tmp_path / "new", tmp_path / "old", threshold)
    assert settled == {p for p, iou in ious.items() if iou >= threshold}
    assert 0 < len(settled) < N_IMAGES
    assert settled_images(tmp_path / "new", tmp_path / "old", 1.0) == {p for p, iou in ious.items() if iou == 1.0}
    shutil.copytree(tmp_path / "new", tmp_path / "copy")
    assert settled_images(tmp_path / "copy", tmp_path / "new", 0.01) == frozenset()


@pytest.mark.parametrize("n_keep", [3, N_IMAGES - 1])
def test_a_reuse_update_keeps_the_named_images_and_localizes_the_others_in_batches_of_their_own(
        full_run, tmp_path, n_keep):
    """``Carry(keep=...)``: the kept images' entries and masks are the earlier version's byte for byte; the others
    are localized with the new model (one left alone borrows a negative, and only its own entry is written)."""
    from occon_plugin.images import list_images
    from occon_plugin.localize.runner import Carry, run_localize
    from occon_plugin.localize.settings import DataSettings, LocalizeSettings

    root, data, folder, _, _ = full_run

    def settings(model: Path, out: Path) -> LocalizeSettings:
        return LocalizeSettings(data=DataSettings(path=str(data)), output_dir=str(out), model=str(model),
                                use_momentum=True, preset="bg_mixup", image_size=64, batch_size=4, device="cpu",
                                progress=False)

    run_localize(settings(folder / "refresh" / "model-e0.pt", tmp_path / "old"))
    paths = list_images(data).paths
    keep = frozenset(paths[:n_keep])
    summary = run_localize(settings(folder / "final.ckpt", tmp_path / "part"),
                           carry=Carry(tmp_path / "old", groups=1, turn=0, keep=keep, rule="reuse_iou=0.5"))
    assert summary["carried"] == n_keep and summary["written_ok"] == N_IMAGES - n_keep
    for p in paths:
        same = _store_bytes(tmp_path / "part", p) == _store_bytes(tmp_path / "old", p)
        assert same == (p in keep) or (p not in keep and _store_bytes(tmp_path / "part", p)[1] ==
                                       _store_bytes(tmp_path / "old", p)[1]), p
    manifest = json.loads((tmp_path / "part" / "manifest.json").read_text())
    assert manifest["carried_from"]["rule"] == "reuse_iou=0.5" and manifest["carried_from"]["images"] == n_keep
    assert manifest["counts"]["written"] == N_IMAGES
    # resumed with the same keep set: nothing is localized again
    again = run_localize(settings(folder / "final.ckpt", tmp_path / "part"),
                         carry=Carry(tmp_path / "old", groups=1, turn=0, keep=keep, rule="reuse_iou=0.5"))
    assert again["written_ok"] == 0 and again["already_done"] == N_IMAGES


def test_a_reuse_update_resumed_after_a_kept_image_changed_is_the_uninterrupted_one(full_run, tmp_path):
    """A kept image whose file changed since the earlier version is localized instead of kept; an update stopped
    after its first batch and resumed writes the same store as the uninterrupted update (same batches: the
    changed image is not taken for kept when resuming), and ``carried`` counts only what was kept."""
    import shutil

    from occon_plugin.images import list_images
    from occon_plugin.localize import runner
    from occon_plugin.localize.runner import Carry, run_localize
    from occon_plugin.localize.settings import DataSettings, LocalizeSettings

    root, data0, folder, _, _ = full_run
    data = tmp_path / "data"
    shutil.copytree(data0, data)

    def settings(model: Path, out: Path) -> LocalizeSettings:
        return LocalizeSettings(data=DataSettings(path=str(data)), output_dir=str(out), model=str(model),
                                use_momentum=True, preset="bg_mixup", image_size=64, batch_size=4, device="cpu",
                                progress=False, post_workers=0)

    run_localize(settings(folder / "refresh" / "model-e0.pt", tmp_path / "old"))
    paths = list_images(data).paths
    order = runner.make_batches(len(paths), len(paths), 0)[0]
    changed = paths[order[0]]
    keep = frozenset([changed, paths[order[-1]], paths[order[-2]]])
    Image.open(data / changed).save(data / changed, quality=50)  # the file changed since the earlier version
    carry = Carry(tmp_path / "old", groups=1, turn=0, keep=keep, rule="reuse_iou=0.5")
    full = run_localize(settings(folder / "final.ckpt", tmp_path / "full"), carry=carry)
    assert full["carried"] == 2 and full["written_ok"] == N_IMAGES - 2

    original, calls = runner._Localizer.run_batch, []

    def stop_at_the_second_batch(self, batch, n):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt("killed")
        return original(self, batch, n)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(runner._Localizer, "run_batch", stop_at_the_second_batch)
        with pytest.raises(KeyboardInterrupt):
            run_localize(settings(folder / "final.ckpt", tmp_path / "part"), carry=carry)
    again = run_localize(settings(folder / "final.ckpt", tmp_path / "part"), carry=carry)
    assert again["carried"] == 2
    for p in paths:
        assert _store_bytes(tmp_path / "part", p) == _store_bytes(tmp_path / "full", p), p


def test_a_run_with_reuse_iou_keeps_the_settled_masks_from_the_third_refresh_on(tmp_path):
    from occon_plugin.store import Store
    from occon_plugin.train.refresh import settled_images

    data = _photos(tmp_path / "data")
    proc = _cli("occon_plugin.cli.pretrain", *_args(data, tmp_path / "t", "++name=reuse", "++max_epochs=4",
                                                    "++occon.refresh.reuse_iou=0.3", "++occon.refresh.batch_size=4"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    folder = tmp_path / "t" / "mocov2_occon" / "reuse" / "refresh"
    record = json.loads((folder / "refresh.json").read_text())
    assert list(record["refreshes"]) == ["0", "1", "2"]
    assert record["refreshes"]["0"]["carried"] == record["refreshes"]["1"]["carried"] == 0  # two versions needed
    settled = settled_images(folder / "store-e1", folder / "store-e0", 0.3)
    third = record["refreshes"]["2"]
    assert third["carried"] == len(settled) and third["written_ok"] == N_IMAGES - len(settled)
    for p in settled:
        assert _store_bytes(folder / "store-e2", p) == _store_bytes(folder / "store-e1", p), p
    assert Store.open(folder / "store-e2").manifest["carried_from"]["rule"] == "reuse_iou=0.3"
    print(f"reuse_iou=0.3: {len(settled)} of {N_IMAGES} masks kept at the third refresh")


def test_a_run_with_fraction_localizes_one_group_per_later_refresh(tmp_path):
    """(With ``occon.refresh.precision=bf16``: every version records it, the carried one too.)"""
    from occon_plugin.store import Store

    data = _photos(tmp_path / "data")
    proc = _cli("occon_plugin.cli.pretrain", *_args(data, tmp_path / "t", "++name=frac", "++max_epochs=3",
                                                    "++occon.refresh.fraction=0.5", "++occon.refresh.batch_size=4",
                                                    "++occon.refresh.precision=bf16"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    folder = tmp_path / "t" / "mocov2_occon" / "frac" / "refresh"
    record = json.loads((folder / "refresh.json").read_text())
    assert record["epochs"] == {"0": None, "1": "store-e0", "2": "store-e1"}
    first, second = record["refreshes"]["0"], record["refreshes"]["1"]
    assert first["carried"] == 0 and first["written_ok"] == N_IMAGES  # the first refresh: every image
    assert second["carried"] == N_IMAGES // 2 and second["written_ok"] == N_IMAGES // 2
    assert "4 of 8 images localized, 4 kept from store-e0" in proc.stdout + proc.stderr
    assert Store.open(folder / "store-e1").manifest["carried_from"]["images"] == N_IMAGES // 2
    assert all(Store.open(folder / f"store-e{e}").manifest["settings"]["precision"] == "bf16" for e in (0, 1))


def test_under_ddp_two_processes_write_the_store_one_process_writes(tmp_path):
    """``devices=2 strategy=ddp`` on CPU (gloo, Lightning's own launcher): both ranks localize their batches into
    one store version, which is byte for byte the store ``occon-localize`` writes from the run's refresh
    checkpoint in one process; both ranks train the next epoch object-aware; a later refresh with
    ``fraction=0.5`` keeps the other half (rank 0 writes the kept entries, the ranks split the rest)."""
    from occon_plugin.localize.runner import run_localize
    from occon_plugin.localize.settings import DataSettings, LocalizeSettings

    data = _photos(tmp_path / "data")
    driver = tmp_path / "driver.py"  # Lightning's launcher starts rank 1 by running the same script again
    # (guarded: the localizer's post-processing workers import the main script again)
    driver.write_text('from occon_plugin.cli.pretrain import main\n\nif __name__ == "__main__":\n    main()\n')
    env = {**os.environ, "PYTHONWARNINGS": "ignore", **THREADS}
    args = _args(data, tmp_path / "t", "++name=ddp", "++devices=2", "++strategy=ddp", "++max_epochs=3",
                 "++occon.refresh.fraction=0.5", "++occon.refresh.batch_size=4", f"++optimizer.batch_size={BATCH // 2}")
    proc = subprocess.run([sys.executable, str(driver), *args], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=900)
    text = proc.stdout + proc.stderr
    assert proc.returncode == 0 and "Traceback" not in text, text[-4000:]
    folder = tmp_path / "t" / "mocov2_occon" / "ddp"
    record = json.loads((folder / "refresh" / "refresh.json").read_text())
    assert record["epochs"] == {"0": None, "1": "store-e0", "2": "store-e1"}
    assert record["refreshes"]["0"]["written_ok"] == N_IMAGES and record["refreshes"]["0"]["carried"] == 0
    assert record["refreshes"]["1"]["written_ok"] == N_IMAGES // 2 and record["refreshes"]["1"]["carried"] == N_IMAGES // 2
    assert text.count("[occon] refresh after epoch") == 2  # rank 0 says it, once per refresh
    out = tmp_path / "single"
    run_localize(LocalizeSettings(data=DataSettings(path=str(data)), output_dir=str(out),
                                  model=str(folder / "refresh" / "model-e0.pt"), use_momentum=True,
                                  preset="bg_mixup", image_size=64, batch_size=4, device="cpu", progress=False))
    refreshed = folder / "refresh" / "store-e0"
    assert (out / "index.jsonl").read_bytes() == (refreshed / "index.jsonl").read_bytes()
    masks = sorted(p.relative_to(out) for p in (out / "masks").rglob("*.png"))
    assert len(masks) == N_IMAGES and all((out / m).read_bytes() == (refreshed / m).read_bytes() for m in masks)
    assert (folder / "final.ckpt").is_file()


def _state(folder: Path) -> dict:
    return torch.load(folder / "final.ckpt", map_location="cpu", weights_only=False)["state_dict"]


def _kill_when(args, folder: Path, ready, cwd) -> None:
    env = {**os.environ, "PYTHONWARNINGS": "ignore", **THREADS}
    proc = subprocess.Popen([sys.executable, "-m", "occon_plugin.cli.pretrain", *args], cwd=cwd, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    while proc.poll() is None and not ready():
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL, "the run ended before it could be killed"
    assert not (folder / "final.ckpt").exists()


DALI = ("++data.format=dali", "++dali.device=cpu")


@pytest.fixture(scope="module")
def dali_run(tmp_path_factory):
    """The uninterrupted run with the DALI pipeline (CPU), as ``full_run``."""
    root = tmp_path_factory.mktemp("refresh_dali")
    data = _photos(root / "data")
    folder, seen, _ = _run_in_process(root, data, "dali", *DALI)
    return root, data, folder, seen


def test_the_dali_pipeline_warms_up_then_trains_on_the_refreshed_store(dali_run):
    """data.format=dali: epoch 0 without OA-Crop / BG-Mixup (no store), epoch 1 with both on the store the
    refresh wrote (the next epoch's DALI pipeline reads the switched records)."""
    root, data, folder, seen = dali_run
    assert sorted(seen) == [0, 1] and len(seen[0]) == len(seen[1]) == N_IMAGES // BATCH
    assert all(oa == 0.0 and mixed == 0.0 for oa, mixed in seen[0]), seen
    assert all(oa > 0.5 for oa, _ in seen[1]) and all(mixed > 0.5 for _, mixed in seen[1]), seen
    record = json.loads((folder / "refresh" / "refresh.json").read_text())
    assert record["epochs"] == {"0": None, "1": "store-e0"}
    assert record["refreshes"]["0"]["written_ok"] == N_IMAGES and (folder / "final.ckpt").is_file()


def test_a_dali_run_stopped_after_a_refresh_resumes_on_it_identically(dali_run, tmp_path):
    root, data, full, _ = dali_run
    args = _args(data, root / "t", "++name=dali_stopped", *DALI)
    folder = root / "t" / "mocov2_occon" / "dali_stopped"
    _kill_when(args, folder, lambda: (folder / "last.ckpt").exists(), tmp_path)
    resumed = _cli("occon_plugin.cli.pretrain", *args, cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"the resumed run continues on the store version {folder / 'refresh' / 'store-e0'}" in resumed.stdout
    assert "refresh after epoch" not in resumed.stdout
    a, b = _state(full), _state(folder)
    differ = [k for k in a if not torch.equal(a[k], b[k])]
    assert not differ, f"{len(differ)} of {len(a)} tensors differ from the uninterrupted run: {differ[:5]}"


@pytest.mark.parametrize("workers", [0, 2])
def test_a_resumed_run_trains_on_the_recorded_store_version(full_run, tmp_path, workers):
    """With loader workers too: the switch happens while the checkpoint is restored, before the first resumed
    epoch's workers copy the dataset (the weights then equal the uninterrupted run's, which used none)."""
    root, data, full, _, _ = full_run
    args = _args(data, root / "t", f"++name=stopped{workers}", workers=workers)
    folder = root / "t" / "mocov2_occon" / f"stopped{workers}"
    # killed after epoch 0 (its refresh done, its last.ckpt written): epoch 1 must train on store-e0 again
    _kill_when(args, folder, lambda: (folder / "last.ckpt").exists(), tmp_path)
    record = json.loads((folder / "refresh" / "refresh.json").read_text())
    assert list(record["refreshes"]) == ["0"]
    resumed = _cli("occon_plugin.cli.pretrain", *args, cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resuming from {folder / 'last.ckpt'}" in resumed.stdout
    assert f"the resumed run continues on the store version {folder / 'refresh' / 'store-e0'}" in resumed.stdout
    assert "refresh after epoch" not in resumed.stdout  # nothing localized again
    assert json.loads((folder / "refresh" / "refresh.json").read_text())["epochs"] == {"0": None, "1": "store-e0"}
    a, b = _state(full), _state(folder)
    differ = [k for k in a if not torch.equal(a[k], b[k])]
    assert not differ, f"{len(differ)} of {len(a)} tensors differ from the uninterrupted run: {differ[:5]}"


def test_a_store_version_deleted_or_rebuilt_from_other_weights_is_one_line_naming_the_rebuild(full_run, tmp_path):
    """The store version a resumed run switches to must be the one written from ``model-e<e>.pt``: missing, or
    rebuilt by hand from another model, is one line naming the command that writes it again; that command run
    as printed gives the uninterrupted run's weights."""
    import shlex
    import shutil

    root, data, full, _, _ = full_run
    args = _args(data, root / "t", "++name=deleted")
    folder = root / "t" / "mocov2_occon" / "deleted"
    _kill_when(args, folder, lambda: (folder / "last.ckpt").exists(), tmp_path)
    store = folder / "refresh" / "store-e0"
    shutil.rmtree(store)
    gone = _cli("occon_plugin.cli.pretrain", *args, cwd=tmp_path)
    line = _one_line(gone.stderr, gone.returncode, str(store), "missing", "occon-localize", "model-e0.pt")
    # the supervised default model under the version's name: refused, not trained on
    made = _cli("occon_plugin.cli.localize", f"data.path={data}", f"output_dir={store}", "image_size=64",
                "batch_size=8", "progress=false", cwd=tmp_path)
    assert made.returncode == 0, made.stderr[-2000:]
    other = _cli("occon_plugin.cli.pretrain", *args, cwd=tmp_path)
    _one_line(other.stderr, other.returncode, str(store), "was not written from model-e0.pt")
    rebuild = shlex.split(line.split("`")[1])
    assert rebuild[0] == "occon-localize"
    again = _cli("occon_plugin.cli.localize", *rebuild[1:], "progress=false", cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-2000:]
    resumed = _cli("occon_plugin.cli.pretrain", *args, cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    a, b = _state(full), _state(folder)
    differ = [k for k in a if not torch.equal(a[k], b[k])]
    assert not differ, f"{len(differ)} of {len(a)} tensors differ from the uninterrupted run: {differ[:5]}"


def test_a_run_killed_during_a_refresh_resumes_it(full_run, tmp_path):
    root, data, full, _, _ = full_run
    args = _args(data, root / "t", "++name=killed")
    folder = root / "t" / "mocov2_occon" / "killed"
    store = folder / "refresh" / "store-e0"
    _kill_when(args, folder, lambda: (store / "index.jsonl").is_file() and (store / "index.jsonl").stat().st_size > 0,
               tmp_path)
    assert not (folder / "refresh" / "refresh.json").is_file() or \
        not json.loads((folder / "refresh" / "refresh.json").read_text())["refreshes"]
    resumed = _cli("occon_plugin.cli.pretrain", *args, cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    stats = json.loads((folder / "refresh" / "refresh.json").read_text())["refreshes"]["0"]
    assert stats["already_done"] > 0, stats  # the localizer resumed the store the killed run began
    assert (folder / "refresh" / "store-e0" / "index.jsonl").read_bytes() == \
        (full / "refresh" / "store-e0" / "index.jsonl").read_bytes()
    a, b = _state(full), _state(folder)
    assert all(torch.equal(a[k], b[k]) for k in a)


# ------------------------------------------------------------------ the switch reaches the workers' samples
def _square_images(root: Path) -> tuple[Path, list[str]]:
    """Black images with a white square; a store whose box and background rectangle are the square."""
    from occon_plugin.store import StoreEntry, StoreWriter, mask_to_u8

    size, (left, top, right, bottom) = 48, (16, 16, 32, 32)
    names = [f"img{i}.png" for i in range(N_IMAGES)]
    root.mkdir(parents=True)
    for i, name in enumerate(names):
        image = np.zeros((size, size, 3), np.uint8)
        image[top:bottom, left:right] = 255 - 4 * i
        Image.fromarray(image).save(root / name)
    store = root.parent / "store"
    writer = StoreWriter(store, settings={"test": "refresh"}, model_hash="none", resume=False)
    for name in names:
        writer.write(StoreEntry(name, size, size, boxes=[[left / size, top / size, right / size, bottom / size]],
                                bg_rect=[left, top, right, bottom]), mask_to_u8(np.zeros((size, size), np.float32)))
    writer.close(listed=len(names))
    return store, names


def _augmentations():
    augmentations = OmegaConf.load(REPO / "scripts" / "pretrain" / "custom" / "augmentations" / "symmetric.yaml")
    augmentations[0].crop_size = 32
    return augmentations


def _run(data: Path, workers: int, **occon):
    from occon_plugin import host
    from occon_plugin.config import parse_pretrain_cfg

    cfg = OmegaConf.load(REPO / "scripts" / "pretrain" / "custom" / "mocov2_occon.yaml")
    cfg.pop("defaults", None)
    cfg.augmentations = _augmentations()
    cfg.data.train_path, cfg.data.num_workers, cfg.optimizer.batch_size = str(data), workers, BATCH
    cfg.method_kwargs.queue_size, cfg.wandb = 16, {"enabled": False}
    cfg.occon.bg_mixup.p_mix = 1.0
    for key, value in occon.items():
        OmegaConf.update(cfg, f"occon.{key}", value, force_add=True)
    return parse_pretrain_cfg(cfg, host.METHODS, check_store=True)


def _loader(data: Path, workers: int, **occon):
    from occon_plugin.augment.dataset import build_pretrain_dataloader

    run = _run(data, workers, **occon)
    return build_pretrain_dataloader(run.cfg, occon=run.occon)


@pytest.mark.parametrize("workers", [0, 2])
def test_the_next_epoch_draws_from_the_switched_store(tmp_path, workers):
    store, _ = _square_images(tmp_path / "data")
    loader = _loader(tmp_path / "data", workers, store=None, **{"refresh.enabled": True})
    assert not loader.persistent_workers  # workers holding the old dataset would never see the switch
    epoch0 = list(loader)
    assert not any(info["oa_crop"].any() or info["mixed"].any() for *_, info in epoch0)
    loader.dataset.use_store(store)
    epoch1 = list(loader)
    # the same samples, decisions and pixels as a run that trains on that store from the start (epoch 1)
    reference = _loader(tmp_path / "data", workers, store=str(store))
    reference.sampler.set_epoch(1)
    expected = list(reference)
    assert len(epoch1) == len(expected) == N_IMAGES // BATCH
    for (ia, va, _, info_a), (ib, vb, _, info_b) in zip(epoch1, expected):
        assert info_a["oa_crop"].all() and info_a["mixed"].all()
        assert torch.equal(ia, ib) and all(torch.equal(x, y) for x, y in zip(va, vb))
        assert all(torch.equal(info_a[k], info_b[k]) for k in info_a)


def test_each_refresh_is_logged_to_wandb_with_counts_and_overlays(tmp_path):
    """Real wandb, offline (no key, HOME in tmp): the refresh's counts in the run's history and N_PICTURES
    overlays of the new store version under ``occon/refresh_overlays``."""
    from occon_plugin.tracking import N_PICTURES

    data = _photos(tmp_path / "data")
    args = [a for a in _args(data, tmp_path / "t", "++name=wb") if a != "++wandb.enabled=false"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    proc = subprocess.run([sys.executable, "-m", "occon_plugin.cli.pretrain", *args, "++wandb.enabled=true",
                           "++wandb.offline=true", "++wandb.project=occon-test"], capture_output=True, text=True,
                          env={**env, "HOME": str(tmp_path), "PYTHONWARNINGS": "ignore", **THREADS}, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = list(tmp_path.rglob("offline-run-*"))
    assert len(runs) == 1, runs
    pictures = list(runs[0].glob("files/media/images/occon/refresh_overlays*"))
    assert len(pictures) == N_PICTURES, pictures
    history = b"".join(p.read_bytes() for p in runs[0].glob("*.wandb"))
    for key in (b"occon/refresh_written_ok", b"occon/refresh_images_per_s", b"occon/refresh_epoch_fraction"):
        assert key in history, key


# ------------------------------------------------------------------ not in this slice: one line, exit 2
def _one_line(text: str, code: int, *needles: str) -> str:
    lines = [l for l in text.splitlines() if l.startswith("[occon] error:")]
    assert code == 2 and len(lines) == 1 and "Traceback" not in text, text[-3000:]
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


@pytest.mark.parametrize("extra, needles", [
    (["++occon.store=/somewhere"], ["occon.store=/somewhere", "drop occon.store"]),
    (["++occon.refresh.every_epochs=0"], ["occon.refresh.every_epochs=0", ">= 1"]),
    (["++occon.refresh.preset=nope"], ["occon.refresh.preset='nope'", "bg_mixup"]),
    (["++occon.refresh.precision=fp64"], ["occon.refresh.precision='fp64'", "bf16"]),
    (["++occon.refresh.fraction=0"], ["occon.refresh.fraction=0", "(0, 1]"]),
    (["++occon.refresh.image_size=4097"], ["occon.refresh.image_size=4097", "[32, 2048]"]),
    (["++occon.refresh.fraction=1.5"], ["occon.refresh.fraction=1.5", "(0, 1]"]),
    (["++occon.refresh.reuse_iou=0"], ["occon.refresh.reuse_iou=0", "(0, 1]"]),
    (["++occon.refresh.reuse_iou=0.5", "++occon.refresh.fraction=0.5"],
     ["occon.refresh.reuse_iou=0.5", "fraction=0.5", "set one of them"]),
    (["++occon.refresh.warmup_epochs=2"], ["occon.refresh.warmup_epochs=2 >= max_epochs=2", "below max_epochs"]),
])
def test_what_this_slice_does_not_do_is_one_line_exit_2(tmp_path, monkeypatch, capsys, extra, needles):
    from occon_plugin.cli import pretrain

    data = _photos(tmp_path / "data")
    code = _main_here(pretrain, _args(data, tmp_path / "t", *extra), monkeypatch)
    _one_line(capsys.readouterr().err, code, *needles)
    assert not (tmp_path / "t").exists() or not any((tmp_path / "t").rglob("*.ckpt"))  # nothing trained


HOST_SCRIPT = '''
"""Stands in for solo-learn main's Hydra main_pretrain.py (the 1.0.2 installed here has none): it builds the
method from the YAML and fits it on the host's own loader, with a Checkpointer like solo-learn main's (its run
folder chosen in on_train_start, a checkpoint at each epoch's end)."""
import os
import sys
from pathlib import Path

import hydra


def main(cfg):
    from occon_plugin import host
    from occon_plugin.config import complete_pretrain_cfg

    class Checkpointer(host.Callback):
        def on_train_start(self, trainer, _):
            self.path = Path(cfg.checkpoint.dir) / "offline-abcd1234"
            os.makedirs(self.path, exist_ok=True)

        def on_train_epoch_end(self, trainer, _):
            trainer.save_checkpoint(self.path / f"ep={trainer.current_epoch}.ckpt")

    cfg = complete_pretrain_cfg(cfg, host.METHODS)
    model = host.METHODS[cfg.method](cfg)
    trainer = host.Trainer(max_epochs=2, accelerator="cpu", logger=False, enable_checkpointing=False,
                           callbacks=[Checkpointer()])
    trainer.fit(model, host.build_host_pretrain_loader(cfg))


if __name__ == "__main__":  # as solo-learn's: the localizer's worker processes import this file again
    hydra.main(version_base="1.2", config_path=sys.argv.pop(1), config_name="host")(main)()
'''


def test_the_hosts_own_script_runs_a_refresh_from_the_method(tmp_path):
    """solo-learn's own script: the method brings the refresh step (``configure_callbacks``); the refresh goes
    into the host's run folder and happens before the host's epoch-end checkpoint, which names the new store."""
    cfg = OmegaConf.load(REPO / "scripts" / "pretrain" / "custom" / "mocov2_occon.yaml")
    cfg.pop("defaults", None)
    cfg.augmentations = _augmentations()
    cfg.data.train_path = str(_photos(tmp_path / "data"))
    cfg.data.num_workers = 0
    cfg.optimizer.batch_size = BATCH
    cfg.backbone.name = "resnet18"
    cfg.method_kwargs.queue_size = 16
    cfg.wandb = {"enabled": False}
    cfg.checkpoint.dir = str(tmp_path / "trained")
    cfg.occon.store = None
    cfg.occon.bg_mixup.p_mix = 1.0
    cfg.occon.refresh = {"enabled": True, "warmup_epochs": 1, "image_size": 64, "batch_size": 8}
    (tmp_path / "conf").mkdir()
    OmegaConf.save(cfg, tmp_path / "conf" / "host.yaml")
    (tmp_path / "main_pretrain.py").write_text(HOST_SCRIPT)
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "WANDB_MODE": "offline", **THREADS}
    proc = subprocess.run([sys.executable, "main_pretrain.py", str(tmp_path / "conf")], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    folder = tmp_path / "trained" / "offline-abcd1234"
    assert f"refresh after epoch 0: {N_IMAGES} of {N_IMAGES} images localized" in proc.stdout
    record = json.loads((folder / "refresh" / "refresh.json").read_text())
    assert record["epochs"] == {"0": None, "1": "store-e0"} and list(record["refreshes"]) == ["0"]
    after_epoch_0 = torch.load(folder / "ep=0.ckpt", map_location="cpu", weights_only=False)
    assert after_epoch_0["occon_refresh"] == {"store": str(folder / "refresh" / "store-e0")}


def test_a_hand_built_trainer_gets_the_refresh_step_from_the_method(tmp_path):
    """Library use (a hand-built trainer, no occon-pretrain): the method adds the refresh step itself, so the
    run warms up and refreshes instead of training without OA-Crop / BG-Mixup all along."""
    from occon_plugin import host
    from occon_plugin.augment.dataset import build_pretrain_dataloader
    from occon_plugin.methods.base import OcconMethodMixin

    data = _photos(tmp_path / "data")
    run = _run(data, 0, store=None, **{"refresh.enabled": True, "refresh.warmup_epochs": 1,
                                       "refresh.image_size": 64, "refresh.batch_size": 8, "bg_mixup.p_mix": 1.0})
    run.cfg.accelerator, run.cfg.scheduler.name = "cpu", "none"
    run.cfg.optimizer.batch_size = BATCH
    run.cfg.checkpoint.dir, run.cfg.name = str(tmp_path / "ck"), "byhand"
    model = host.build_method(run.cfg.method, run.cfg, occon=run.occon)
    seen: dict[int, list] = {}
    original = OcconMethodMixin._log_occon_info

    def spy(self, info):
        seen.setdefault(int(self.trainer.current_epoch), []).append(float(info["mixed"].float().mean()))
        return original(self, info)

    OcconMethodMixin._log_occon_info = spy
    try:
        trainer = host.Trainer(max_epochs=2, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                               enable_progress_bar=False, enable_model_summary=False,
                               default_root_dir=str(tmp_path / "root"))
        assert sum(getattr(c, "occon_refresh", False) for c in trainer.callbacks) == 0
        trainer.fit(model, build_pretrain_dataloader(run.cfg, occon=run.occon))
    finally:
        OcconMethodMixin._log_occon_info = original
    assert sum(getattr(c, "occon_refresh", False) for c in trainer.callbacks) == 1
    assert all(m == 0.0 for m in seen[0]) and all(m > 0.5 for m in seen[1]), seen
    # no Checkpointer: <checkpoint.dir>/<method>/occon_refresh-<name>, the run's own place
    record = json.loads((tmp_path / "ck" / "mocov2_occon" / "occon_refresh-byhand" / "refresh" / "refresh.json").read_text())
    assert record["epochs"] == {"0": None, "1": "store-e0"}


def test_the_earlier_versions_of_a_host_run_resumed_into_a_new_folder_include_the_borrowed_folders(tmp_path):
    """solo-learn main resumes into a new run folder: the refreshes before the resume are in the old folder,
    whose version the new record names by path. ``fraction`` / ``reuse_iou`` keep masks from both folders'
    versions (the new folder's where both have one), as the uninterrupted run would: before, the resumed run
    saw no earlier refresh and localized every image again at its next two refreshes."""
    from occon_plugin.train.refresh import earlier_versions

    def record(folder: Path, refreshes, epochs) -> Path:
        (folder / "refresh").mkdir(parents=True)
        (folder / "refresh" / "refresh.json").write_text(json.dumps(
            {"refreshes": {str(e): {"store": f"store-e{e}"} for e in refreshes}, "epochs": epochs}))
        return folder / "refresh"

    old = record(tmp_path / "run3", [0, 1, 2], {"0": None, "1": "store-e0", "2": "store-e1"})  # killed in epoch 3
    new = record(tmp_path / "run4", [2], {"2": str(old / "store-e1"), "3": "store-e2"})  # resumed from epoch 2
    assert earlier_versions(tmp_path / "run4", 2) == [(0, old / "store-e0"), (1, old / "store-e1")]
    assert earlier_versions(tmp_path / "run4", 3) == [(0, old / "store-e0"), (1, old / "store-e1"),
                                                     (2, new / "store-e2")]  # its own e2, not the killed run's
    assert earlier_versions(tmp_path / "run3", 2) == [(0, old / "store-e0"), (1, old / "store-e1")]
    assert earlier_versions(tmp_path / "none", 5) == []


def test_the_refresh_line_says_how_many_images_got_no_mask(tmp_path):
    """A training folder with an unreadable file named like an image: the refresh wrote no mask for it, and its
    line says so (it used to print "9 of 9 images localized" with one written bad)."""
    data = _photos(tmp_path / "data")
    (data / "zz-broken.jpg").write_bytes(b"not a jpeg")
    proc = _cli("occon_plugin.cli.pretrain", *_args(data, tmp_path / "t", "++name=bad"))
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    record = json.loads((tmp_path / "t" / "mocov2_occon" / "bad" / "refresh" / "refresh.json").read_text())
    first = record["refreshes"]["0"]
    assert first["images"] == N_IMAGES + 1 and first["written_ok"] == N_IMAGES and first["written_bad"] == 1
    assert f"refresh after epoch 0: {N_IMAGES} of {N_IMAGES + 1} images localized, 1 unreadable (no mask, skipped)" in out
