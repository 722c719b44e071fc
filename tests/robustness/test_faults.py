"""Items 11-13 and faults found by the battery: killed localization, output inside the input,
quiet failures (all-bad folders, unreported bad images, umask), huge photos, unwritable outputs."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from occon_plugin.atomic import is_temp_file
import pytest

from occon_plugin.images import list_images
from occon_plugin.localize.runner import run_localize
from occon_plugin.store import Store
from occon_plugin.store.writer import LOCK_FILE

from robustness_helpers import (FAST_LOCALIZE, assert_one_line_error, copy_tree, localize_settings, pretrain_args,
                                run_cli)


@pytest.mark.kind("bad.unreadable")
@pytest.mark.kind("list.skipped")
def test_localize_prints_the_first_bad_images_and_what_it_skipped(mixed, tmp_path):
    proc = run_cli("occon_plugin.cli.localize", f"data.path={mixed.root}", f"output_dir={tmp_path / 'store'}",
                   *FAST_LOCALIZE)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert "has 16 masks and 6 skipped images of 22 listed" in out
    assert "6 unreadable image(s) skipped, first 5:" in out
    assert "    q_zero.jpg: bad_image: not an image PIL can identify" in out
    assert "    r_truncated.jpg: bad_image: OSError: image file is truncated" in out
    assert f"... all 6 with reasons in {tmp_path / 'store' / 'manifest.json'}" in out
    assert "6 entries under" in out and "1 dangling symbolic link: x_dangling.jpg" in out and ".gif: 1" in out


@pytest.mark.kind("quiet.all-bad")
def test_localizing_a_folder_of_only_bad_images_fails(mixed, tmp_path):
    root = tmp_path / "only-bad"
    root.mkdir()
    for name in mixed.bad:
        shutil.copy(mixed.root / name, root / name)
    proc = run_cli("occon_plugin.cli.localize", f"data.path={root}", f"output_dir={tmp_path / 'store'}",
                   *FAST_LOCALIZE)
    assert_one_line_error(proc, "none of the 6 images", "could be read", "q_zero.jpg")
    assert "q_zero.jpg: bad_image" in proc.stdout  # the report still says which and why


@pytest.mark.kind("run.kill-localize")
def test_localization_killed_with_sigkill_resumes_to_the_uninterrupted_store(mixed, tmp_path):
    settings = [a if not a.startswith("batch_size") else "batch_size=2" for a in FAST_LOCALIZE]
    reference = tmp_path / "reference"
    run_localize(localize_settings(mixed.root, reference, "batch_size=2"))
    out = tmp_path / "store"
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.Popen([sys.executable, "-m", "occon_plugin.cli.localize", f"data.path={mixed.root}",
                             f"output_dir={out}", *settings], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=env, start_new_session=True)
    index = out / "index.jsonl"
    while proc.poll() is None:
        if index.exists() and index.read_bytes().count(b"\n") >= 2:
            os.killpg(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.002)
    assert proc.wait() == -signal.SIGKILL, "localization ended before it could be killed"
    assert json.loads((out / "manifest.json").read_text())["complete"] is False
    summary = run_localize(localize_settings(mixed.root, out, "batch_size=2"))
    assert summary["already_done"] >= 2
    assert not [p for p in out.rglob(".*") if is_temp_file(p)], "temporary files of the killed run are left"
    assert (out / "index.jsonl").read_bytes() == (reference / "index.jsonl").read_bytes()
    for path, entry in Store.open(reference).entries.items():
        if entry.ok:
            np.testing.assert_array_equal(Store.open(out).load_mask_u8(path), Store.open(reference).load_mask_u8(path))


@pytest.mark.kind("out.inside-input")
def test_a_store_inside_the_image_folder_never_becomes_input(mixed, tmp_path):
    data = copy_tree(mixed.root, tmp_path / "data")
    inside = data / "stores" / "s1"
    run_localize(localize_settings(data, inside))
    again = run_localize(localize_settings(data, inside))  # the second run lists the folder again
    assert again["listed"] == 22 and again["already_done"] == 22 and again["written_ok"] == 0
    assert again["not_listed"]["store"] == ["stores/s1/"]
    assert len(Store.open(inside)) == 22
    assert "stores/s1/" in list_images(data).skipped["store"]
    proc = run_cli("occon_plugin.cli.localize", f"data.path={data}", f"output_dir={data}", *FAST_LOCALIZE)
    assert_one_line_error(proc, f"output_dir {data}", "is not empty and is not an occon store")


@pytest.mark.kind("quiet.umask")
def test_written_files_follow_the_umask(mixed, tmp_path):
    old = os.umask(0o027)
    try:
        out = tmp_path / "store"
        run_localize(localize_settings(mixed.root, out, "overlays=true"))
    finally:
        os.umask(old)
    files = [p for p in out.rglob("*") if p.is_file()]
    assert len(files) > 30
    modes = {oct(p.stat().st_mode & 0o777) for p in files}
    assert modes == {oct(0o640)}, modes


@pytest.mark.kind("quiet.huge-photo")
@pytest.mark.parametrize("method", ["crf", "guided", "fgs"])
def test_each_refinement_works_at_a_bounded_size_on_huge_photos(method):
    """Peak memory of each refinement on a 2400 x 1800 photo, bounded (``max_pixels`` 0.5 MP) vs full size, in
    fresh processes; the bounded result is a full-size mask close to the full-size one."""
    script = """
import sys, numpy as np
from occon_plugin.localize.refiners import REFINERS, refine

def peak_kib():  # VmHWM: this process's own peak (ru_maxrss would include the forking parent's)
    return int(next(l for l in open("/proc/self/status") if l.startswith("VmHWM:")).split()[1])
rng = np.random.default_rng(0)
h, w = 1800, 2400
yy, xx = np.mgrid[0:h, 0:w]
blob = (((yy - h / 2) / (0.3 * h)) ** 2 + ((xx - w / 2) / (0.3 * w)) ** 2) < 1
image = np.where(blob[..., None], 200, 40).astype(np.uint8) + rng.integers(0, 20, (h, w, 3), dtype=np.uint8)
soft = np.clip(blob * 0.7 + 0.15 + rng.normal(0, 0.05, (h, w)), 0, 1).astype(np.float32)
before = peak_kib()
method = sys.argv[3]
extra = {"iters": 2} if method == "crf" else {}
params = REFINERS[method].params(max_pixels=0 if sys.argv[1] == "full" else 500_000, **extra)
out = refine(image, soft, method, {method: params})
peak = peak_kib()
np.save(sys.argv[2], (out >= 0.5))
print(out.shape[0], out.shape[1], peak - before)
"""
    import tempfile

    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for mode in ("bounded", "full"):
            target = f"{tmp}/{mode}.npy"
            proc = subprocess.run([sys.executable, "-c", script, mode, target, method], capture_output=True, text=True,
                                  timeout=600)
            assert proc.returncode == 0, proc.stderr[-2000:]
            h, w, grown_kb = map(int, proc.stdout.split())
            results[mode] = (h, w, grown_kb, np.load(target))
    (hb, wb, grown_bounded, mask_b), (hf, wf, grown_full, mask_f) = results["bounded"], results["full"]
    assert (hb, wb) == (hf, wf) == (1800, 2400)
    # KiB above the process's start: the CRF's working memory (~200 bytes per pixel) dwarfs the full-size input and
    # output arrays; the filters' (~20-40 bytes per pixel) less so
    assert grown_bounded * (4 if method == "crf" else 2) < grown_full, (grown_bounded, grown_full)
    assert (mask_b == mask_f).mean() > 0.98


def _can_mount_tmpfs() -> str | None:
    try:
        proc = subprocess.run(["unshare", "-rm", "sh", "-c", "mount -t tmpfs -o size=64k tmpfs /mnt && echo ok"],
                              capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"unshare not available ({exc})"
    return None if proc.stdout.strip() == "ok" else f"cannot mount a tmpfs in a user namespace: {proc.stderr.strip()}"


def _in_tmpfs(target: Path, options: str, copy_to: Path | None = None) -> tuple[str, ...]:
    """A command prefix running the command with a fresh private tmpfs (``options``) mounted on
    ``target``; ``copy_to``: the tmpfs's content is copied there afterwards (the mount dies with the
    command's namespace)."""
    target.mkdir(parents=True, exist_ok=True)
    after = f'cp -a "{target}/." "{copy_to}/";' if copy_to is not None else ""
    script = f'mount -t tmpfs -o {options} tmpfs "{target}" || exit 99; "$0" "$@"; rc=$?; {after} exit $rc'
    return ("unshare", "-rm", "sh", "-c", script)


@pytest.fixture(scope="module")
def tmpfs_ok():
    reason = _can_mount_tmpfs()
    if reason:
        pytest.skip(f"read-only / full output folders need a private tmpfs mount: {reason}")


@pytest.mark.kind("found.unwritable-output")
def test_read_only_output_folder_is_one_line(mixed, tmp_path, tmpfs_ok):
    out = tmp_path / "ro"
    proc = run_cli("occon_plugin.cli.localize", f"data.path={mixed.root}", f"output_dir={out / 'store'}",
                   *FAST_LOCALIZE, prefix=_in_tmpfs(out, "ro,size=64k"))
    assert_one_line_error(proc, str(out / "store"), "Read-only file system", "writable output folder")


@pytest.mark.kind("found.unwritable-output")
def test_full_output_folder_is_one_line_and_leaves_nothing_half_written(mixed, tmp_path, tmpfs_ok):
    out, copy = tmp_path / "full", tmp_path / "copy"
    copy.mkdir()
    store = out / "store"
    # 20 KiB: the manifest and the first masks fit, then the disk is full
    proc = run_cli("occon_plugin.cli.localize", f"data.path={mixed.root}", f"output_dir={store}", *FAST_LOCALIZE,
                   prefix=_in_tmpfs(out, "size=20k", copy_to=copy))
    line = assert_one_line_error(proc, "No space left on device", "free some space")
    assert str(store) in line
    left = copy / "store"
    assert not [p.name for p in left.rglob(".*") if p.name != LOCK_FILE]  # no temp file left behind (the lock: no data)
    written = [json.loads(l) for l in (left / "index.jsonl").read_text().splitlines()]
    from occon_plugin.store.format import decode_mask_png, mask_relpath

    for row in written:  # every index line has its whole mask
        if row["status"] == "ok":
            assert decode_mask_png(left / mask_relpath(row["path"])).shape == (row["height"], row["width"])
    assert json.loads((left / "manifest.json").read_text())["complete"] is False  # a rerun resumes it


@pytest.mark.kind("found.unwritable-output")
@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux's /proc (a place that holds no new folders)")
def test_an_output_folder_where_no_folder_can_be_made_is_one_line_in_every_command(mixed, mixed_store, tmp_path):
    """``output_dir=/proc/x``: mkdir says ENOENT though its parent exists; it was a FileNotFoundError traceback
    (break-it pass). Every command creates its output folders through one helper (atomic.make_output_dir)."""
    bad = Path("/proc") / f"occon-no-folder-{os.getpid()}"
    proc = run_cli("occon_plugin.cli.localize", f"data.path={mixed.root}", f"output_dir={bad / 'store'}",
                   *FAST_LOCALIZE)
    assert_one_line_error(proc, f"cannot write {bad}", "writable output folder")
    proc = run_cli("occon_plugin.cli.pretrain", *pretrain_args(mixed.root, bad / "t", store=mixed_store))
    assert_one_line_error(proc, f"cannot write {bad}", "writable output folder")


@pytest.mark.kind("found.unwritable-output")
def test_pretraining_into_a_read_only_folder_is_one_line(mixed, mixed_store, tmp_path, tmpfs_ok):
    out = tmp_path / "ro"
    proc = run_cli("occon_plugin.cli.pretrain", *pretrain_args(mixed.root, out / "t", store=mixed_store),
                   prefix=_in_tmpfs(out, "ro,size=64k"))
    assert_one_line_error(proc, str(out / "t"), "Read-only file system")
