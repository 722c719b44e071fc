"""The localize runner and CLI end to end on real photos (skimage) with the real EfficientNet-Lite0."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import skimage.data
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from PIL import Image

from occon_plugin.cli.localize import CONFIG_DIR, settings_from_config
from occon_plugin.localize.runner import LocalizeSettings, make_batches, run_localize
from occon_plugin.store import Store, mask_relpath

PHOTOS = ["astronaut", "chelsea", "coffee", "rocket", "cat", "hubble_deep_field", "immunohistochemistry",
          "retina", "horse", "camera"]
# Small, quick, but every part on: 3 batches of 4 (the last topped up), CRF, one bad image.
OVERRIDES = ["batch_size=4", "image_size=64", "cam.iters=3", "threads=1", "progress=false"]


def _photo(name: str) -> np.ndarray:
    img = np.asarray(getattr(skimage.data, name)())
    if img.dtype == bool:
        img = img.astype(np.uint8) * 255
    if img.ndim == 2:
        img = np.stack([img] * 3, -1)
    return img[..., :3].astype(np.uint8)


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("photos")
    for k, name in enumerate(PHOTOS):
        img = Image.fromarray(_photo(name))
        img.thumbnail((120 - 4 * k, 120 - 4 * k))  # several sizes and aspect ratios
        (root / ("sub" if k % 3 == 0 else "")).mkdir(exist_ok=True)
        img.save(root / ("sub" if k % 3 == 0 else "") / f"{name}.jpg", quality=90)
    data = (root / "astronaut.jpg").read_bytes() if (root / "astronaut.jpg").exists() else \
        (root / "sub" / "astronaut.jpg").read_bytes()
    (root / "truncated.jpg").write_bytes(data[: len(data) // 3])  # a corrupt JPEG: skipped and counted
    return root


def _cli(*args: str, **kw) -> subprocess.Popen:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.Popen([sys.executable, *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=env, **kw)


def _settings(*overrides: str) -> LocalizeSettings:
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.2"):
        return settings_from_config(compose("localize", overrides=list(overrides)))


@pytest.fixture(scope="module")
def reference(photos, tmp_path_factory) -> Path:
    """One uninterrupted single-process run: what every other run must reproduce exactly."""
    out = tmp_path_factory.mktemp("ref") / "store"
    summary = run_localize(_settings(f"data.path={photos}", f"output_dir={out}", *OVERRIDES))
    assert summary["written_ok"] == 10 and summary["written_bad"] == 1
    return out


def _assert_same_store(a: Path, b: Path) -> None:
    assert (a / "index.jsonl").read_bytes() == (b / "index.jsonl").read_bytes()
    masks_a = sorted(p.relative_to(a).as_posix() for p in (a / "masks").rglob("*.png"))
    masks_b = sorted(p.relative_to(b).as_posix() for p in (b / "masks").rglob("*.png"))
    assert masks_a == masks_b and len(masks_a) == 10
    for rel in masks_a:
        assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel
    ma, mb = (json.loads((d / "manifest.json").read_text()) for d in (a, b))
    for key in ("settings", "model_sha256", "counts", "skipped_images", "complete"):
        assert ma[key] == mb[key], key


def test_yaml_defaults_equal_the_settings_schema():
    yaml_cfg = OmegaConf.load(Path(CONFIG_DIR) / "localize.yaml")
    for key in ("defaults", "hydra"):
        yaml_cfg.pop(key)
    assert OmegaConf.to_container(yaml_cfg) == OmegaConf.to_container(OmegaConf.structured(LocalizeSettings))


def test_bad_keys_and_values_name_the_key(tmp_path):
    with pytest.raises(Exception, match="cam.iterz"):
        _settings("data.path=x", "output_dir=y", "cam.iterz=3")
    with pytest.raises(ValueError, match="batch_size"):
        _settings("data.path=x", "output_dir=y", "batch_size=many")
    with pytest.raises(ValueError, match="batch_size=1"):
        _settings("data.path=x", "output_dir=y", "batch_size=1")
    with pytest.raises(ValueError, match="bg_threshold"):
        _settings("data.path=x", "output_dir=y", "bg_threshold=1.5")
    with pytest.raises(ValueError, match="data.path"):
        _settings("output_dir=y")
    with pytest.raises(ValueError, match="post_workers"):
        _settings("data.path=x", "output_dir=y", "post_workers=-1")


def test_renamed_key_names_its_new_name():
    from occon_plugin.cli.overrides import override_problem

    problem = override_problem(Path(CONFIG_DIR) / "localize.yaml", ["crf.workers=2"])
    assert problem == "'crf.workers' was renamed 'post_workers'; use post_workers=2 (see localize.yaml)"


def test_replaced_crf_keys_name_the_refine_keys():
    from occon_plugin.cli.overrides import override_problem

    def problem(*args):
        return override_problem(Path(CONFIG_DIR) / "localize.yaml", list(args))

    assert problem("crf.enabled=false") == ("'crf.enabled' was replaced by 'refine.method'; use refine.method=none "
                                            "(see localize.yaml)")
    assert problem("crf.enabled=true").endswith("use refine.method=crf (see localize.yaml)")
    assert problem("crf.bilateral_srgb=8") == ("'crf.bilateral_srgb' was renamed 'refine.crf.bilateral_srgb'; use "
                                               "refine.crf.bilateral_srgb=8 (see localize.yaml)")
    assert "'refine.resolution'" in problem("crf.resolution=image") and "refine.crf.max_pixels" in problem(
        "crf.max_pixels=100")
    assert problem("refine.method=crf+fgs", "refine.crf.iters=3", "refine.fgs.lam=10") is None


def test_batches_are_a_seeded_permutation_topped_up():
    batches = make_batches(10, 4, seed=3)
    assert [len(b) for b in batches] == [4, 4, 4]
    assert sorted(np.concatenate(batches)[:10].tolist()) == list(range(10))
    np.testing.assert_array_equal(batches[2][2:], batches[0][:2])  # top-up = start of the permutation
    assert all((a == b).all() for a, b in zip(batches, make_batches(10, 4, seed=3)))
    # a subset (occon.refresh.reuse_iou): only those images, in the full permutation's order, topped up from them
    order = np.concatenate(batches)[:10]
    part = make_batches(10, 4, seed=3, subset=[1, 3, 5, 7, 9])
    kept = [i for i in order.tolist() if i % 2]
    assert [b.tolist() for b in part] == [kept[:4], kept[4:] + kept[:3]]
    assert [b.tolist() for b in make_batches(10, 4, seed=3, subset=[6])] == [[6]]
    assert make_batches(10, 4, seed=3, subset=[]) == []


def test_reference_store_content(reference, photos):
    store = Store.open(reference)
    assert len(store) == 11
    bad = store.entries["truncated.jpg"]
    assert bad.status.startswith("bad_image:") and "truncated" in bad.status
    assert store.manifest["counts"] == {"written": 11, "ok": 10, "skipped": 1}
    assert store.manifest["skipped_images"][0]["path"] == "truncated.jpg"
    for path, entry in store.entries.items():
        if not entry.ok:
            continue
        with Image.open(photos / path) as img:
            assert (entry.width, entry.height) == img.size
        mask = store.load_mask(path)
        assert mask.shape == (entry.height, entry.width) and 0 <= mask.min() and mask.max() <= 1
        for x1, y1, x2, y2 in entry.boxes:
            assert 0 <= x1 < x2 <= 1 and 0 <= y1 < y2 <= 1
        if entry.bg_rect is not None:
            x1, y1, x2, y2 = entry.bg_rect
            assert (mask[y1:y2, x1:x2] < 0.2).all()


def test_cli_kill_then_resume_equals_uninterrupted(reference, photos, tmp_path):
    out = tmp_path / "store"
    args = ["-m", "occon_plugin.cli.localize", f"data.path={photos}", f"output_dir={out}", *OVERRIDES]
    proc = _cli(*args, start_new_session=True)
    index = out / "index.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if index.exists() and index.read_bytes().count(b"\n") >= 2:
            os.killpg(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.002)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, proc.stdout.read()
    n_lines = index.read_bytes().count(b"\n")
    assert 2 <= n_lines < 11
    assert json.loads((out / "manifest.json").read_text())["complete"] is False

    summary = run_localize(_settings(f"data.path={photos}", f"output_dir={out}", *OVERRIDES))  # resume
    assert summary["already_done"] == n_lines and summary["written_ok"] + summary["written_bad"] == 11 - n_lines
    _assert_same_store(reference, out)


def test_post_processing_in_the_main_process_equals_the_workers(reference, photos, tmp_path):
    """The reference ran with post_workers=null (one worker per core); in-process must give the same bytes."""
    out = tmp_path / "store"
    summary = run_localize(_settings(f"data.path={photos}", f"output_dir={out}", "post_workers=0", *OVERRIDES))
    assert summary["post_workers"] == 0 and summary["written_ok"] == 10
    _assert_same_store(reference, out)
    one = tmp_path / "one"
    assert run_localize(_settings(f"data.path={photos}", f"output_dir={one}", "post_workers=1",
                                  *OVERRIDES))["post_workers"] == 1
    _assert_same_store(reference, one)


# every method alone, the default chain (crf+fgs), and chains at the image's own size, where the photos (up to
# 512x512) exceed refine.crf.max_pixels=4096 and the bounded (reduced, then resized back) path runs
@pytest.mark.parametrize("method", ["crf", "guided", "fgs", "none", "crf+fgs", "crf+fgs, image", "guided+fgs, image"])
def test_every_refinement_writes_the_same_store_with_and_without_workers(photos, tmp_path, method):
    method, _, resolution = method.partition(", ")
    keys = [*OVERRIDES, "cam.iters=1", f"refine.method={method}", f"refine.resolution={resolution or 'input'}",
            "refine.crf.max_pixels=4096"]
    stores = []
    for workers in (0, 1, 2):
        out = tmp_path / f"w{workers}"
        summary = run_localize(_settings(f"data.path={photos}", f"output_dir={out}", f"post_workers={workers}", *keys))
        assert summary["post_workers"] == workers and summary["settings"]["refine"]["method"] == method
        stores.append(out)
    for other in stores[1:]:
        _assert_same_store(stores[0], other)


# Ctrl-C at an exact point: the run sends SIGINT to its whole process group (the terminal's Ctrl-C: workers
# included) right after its STOP_AFTER-th index entry, whatever the machine's load (a test that polled the index
# and signalled from outside raced the run on a busy machine: the run could finish first)
SELF_SIGINT = """
import os, runpy, signal, sys
signal.signal(signal.SIGINT, signal.default_int_handler)  # Ctrl-C works as in a terminal (a job started in the
# background of a non-interactive shell, e.g. `nohup ... &`, inherits SIGINT ignored)
from occon_plugin.store import writer
after, real, done = int(os.environ["STOP_AFTER"]), writer.StoreWriter.write, [0]
def write(self, *args, **kwargs):
    out = real(self, *args, **kwargs)
    done[0] += 1
    if done[0] == after:
        os.killpg(os.getpgrp(), signal.SIGINT)
    return out
writer.StoreWriter.write = write
sys.argv = ["occon-localize", *sys.argv[1:]]
runpy.run_module("occon_plugin.cli.localize", run_name="__main__", alter_sys=True)
"""


def test_ctrl_c_is_one_line_and_the_rerun_resumes(photos, tmp_path):
    many = tmp_path / "many"
    many.mkdir()
    jpgs = sorted(p for p in photos.rglob("*.jpg") if p.name != "truncated.jpg")
    for k in range(40):
        (many / f"{k:02d}_{jpgs[k % len(jpgs)].name}").symlink_to(jpgs[k % len(jpgs)])
    out = tmp_path / "store"
    index = out / "index.jsonl"
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "STOP_AFTER": "5"}
    proc = subprocess.Popen([sys.executable, "-c", SELF_SIGINT, f"data.path={many}", f"output_dir={out}",
                             "post_workers=2", *OVERRIDES], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env=env, start_new_session=True)
    output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130, output
    assert output.strip().splitlines()[-1] == ("[occon] interrupted: nothing is half-written; run the same "
                                               "command again to resume"), output
    assert 5 <= index.read_bytes().count(b"\n") < 40
    run_localize(_settings(f"data.path={many}", f"output_dir={out}", *OVERRIDES))
    whole = tmp_path / "whole"
    run_localize(_settings(f"data.path={many}", f"output_dir={whole}", *OVERRIDES))
    assert (out / "index.jsonl").read_bytes() == (whole / "index.jsonl").read_bytes()
    for mask in (whole / "masks").rglob("*.png"):
        assert (out / mask.relative_to(whole)).read_bytes() == mask.read_bytes()


def test_a_run_stopped_at_an_overlay_redoes_that_image(photos, tmp_path, monkeypatch):
    """The overlay is written before the index entry: a run stopped there (disk full) leaves no image without it."""
    import errno

    from occon_plugin.errors import OutputError
    from occon_plugin.localize import runner

    real, calls = runner.atomic_write_bytes, []

    def full_disk_at_the_third_overlay(path, data):
        if "overlays" in Path(path).parts:
            calls.append(path)
            if len(calls) == 3:
                raise OutputError(f"cannot write {path}: {os.strerror(errno.ENOSPC)} (free some space)")
        return real(path, data)

    out = tmp_path / "store"
    monkeypatch.setattr(runner, "atomic_write_bytes", full_disk_at_the_third_overlay)
    with pytest.raises(OutputError):
        run_localize(_settings(f"data.path={photos}", f"output_dir={out}", "overlays=true", "post_workers=0", *OVERRIDES))
    monkeypatch.setattr(runner, "atomic_write_bytes", real)
    run_localize(_settings(f"data.path={photos}", f"output_dir={out}", "overlays=true", "post_workers=0", *OVERRIDES))
    ok = [p for p, e in Store.open(out).entries.items() if e.ok]
    assert len(ok) == 10
    assert all((out / "overlays" / Path(p).with_suffix(".png")).exists() for p in ok)


def test_cli_with_workers_prints_no_warning(reference, photos, tmp_path):
    """The workers run the CLI module again (multiprocessing's fork server): nothing of that reaches the user."""
    out = tmp_path / "store"
    proc = subprocess.run([sys.executable, "-m", "occon_plugin.cli.localize", f"data.path={photos}",
                           f"output_dir={out}", "post_workers=2", *OVERRIDES], capture_output=True, text=True,
                          timeout=300, env={k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"})
    assert proc.returncode == 0, proc.stderr
    assert "Warning" not in proc.stdout + proc.stderr, proc.stdout + proc.stderr
    _assert_same_store(reference, out)


def test_two_ranks_equal_one_rank(reference, photos, tmp_path):
    out = tmp_path / "store"
    proc = _cli("-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m",
                "occon_plugin.cli.localize", f"data.path={photos}", f"output_dir={out}", "device=cpu", *OVERRIDES)
    log = proc.communicate(timeout=300)[0]
    assert proc.returncode == 0, log
    assert f"store {out} has 10 masks and 1 skipped images of 11 listed" in log  # rank 0 reports once
    assert log.count("occon-localize: store") == 1 and str(out / "index.jsonl") in log
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["world_size"] == 2
    assert not list(out.glob("index.rank*.jsonl"))
    _assert_same_store(reference, out)


def test_resume_with_changed_settings_is_refused(reference, photos, tmp_path):
    import shutil

    out = tmp_path / "store"
    shutil.copytree(reference, out)
    with pytest.raises(RuntimeError, match="cam"):
        run_localize(_settings(f"data.path={photos}", f"output_dir={out}", *OVERRIDES, "cam.iters=4"))
    summary = run_localize(_settings(f"data.path={photos}", f"output_dir={out}", *OVERRIDES))
    assert summary["written_ok"] == 0 and summary["already_done"] == 11  # nothing left to do
    _assert_same_store(reference, out)


def test_overlays_written(photos, tmp_path):
    out = tmp_path / "store"
    run_localize(_settings(f"data.path={photos}", f"output_dir={out}", "batch_size=4", "image_size=64",
                           "cam.iters=1", "cam.expand=false", "refine.method=none", "overlays=true",
                           "progress=false"))
    overlays = sorted(p.relative_to(out / "overlays").as_posix() for p in (out / "overlays").rglob("*.png"))
    assert overlays == sorted(mask_relpath(p)[len("masks/"):] for p, e in Store.open(out).entries.items() if e.ok)


def test_batch_left_with_one_readable_image_borrows_negatives(photos, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    for name in ["a", "b", "c"]:
        src = next(photos.rglob(f"{PHOTOS[['a', 'b', 'c'].index(name)]}.jpg"))
        (data / f"{name}.jpg").write_bytes(src.read_bytes())
    for name in ["x", "y", "z"]:
        (data / f"{name}.jpg").write_bytes(b"not a jpeg")
    s = _settings(f"data.path={data}", f"output_dir={tmp_path / 'store'}", "batch_size=2", "image_size=32",
                  "cam.iters=1", "cam.expand=false", "refine.method=none", "progress=false")
    summary = run_localize(s)
    store = Store.open(tmp_path / "store")
    assert (summary["written_ok"], summary["written_bad"]) == (3, 3)  # each image written exactly once
    assert sorted(p for p, e in store.entries.items() if e.ok) == ["a.jpg", "b.jpg", "c.jpg"]
    assert store.manifest["counts"] == {"written": 6, "ok": 3, "skipped": 3}


def test_a_folder_of_one_image_is_refused_before_anything_is_written(tmp_path):
    from occon_plugin.errors import DataError

    folder = tmp_path / "one"
    folder.mkdir()
    Image.fromarray(_photo("astronaut")).resize((64, 64)).save(folder / "astronaut.jpg")
    out = tmp_path / "store"
    with pytest.raises(DataError, match=r"at least 2 images .* lists 1: add images to data.path"):
        run_localize(_settings(f"data.path={folder}", f"output_dir={out}", *OVERRIDES))
    assert not out.exists()
