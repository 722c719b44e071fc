import json

import numpy as np
import pytest
from PIL import Image

from occon_plugin.images import list_images
from occon_plugin.store import (Store, StoreEntry, StoreError, StoreMismatchError, StoreSettingsMismatchError,
                                StoreWriter, find_mask_collisions, mask_relpath, mask_to_u8, validate_store)

SETTINGS = {"cam": {"iters": 10}, "threshold": 0.5}


def _mask(h, w, seed):
    return mask_to_u8(np.random.default_rng(seed).random((h, w)))


def _entry(path, w=6, h=4, status="ok"):
    return StoreEntry(path=path, width=w, height=h, boxes=[[0.1, 0.2, 0.5, 0.75]] if status == "ok" else [],
                      bg_rect=[0, 0, 3, 2] if status == "ok" else None, status=status)


def test_round_trip_masks_index_manifest(tmp_path):
    out = tmp_path / "store"
    writer = StoreWriter(out, SETTINGS, "abc123")
    masks = {"b/x.jpg": _mask(4, 6, 0), "a.png": _mask(4, 6, 1)}
    for p, m in masks.items():
        writer.write(_entry(p), m)
    writer.write(_entry("bad.jpg", status="bad_image: truncated"), None)
    manifest = writer.close(listed=3)
    assert manifest["counts"] == {"written": 3, "ok": 2, "skipped": 1}
    assert manifest["skipped_images"] == [{"path": "bad.jpg", "status": "bad_image: truncated"}]

    store = Store.open(out)
    assert list(store.entries) == ["a.png", "b/x.jpg", "bad.jpg"]  # close() sorts by path
    assert store.manifest["model_sha256"] == "abc123" and store.manifest["settings"] == SETTINGS
    assert store.manifest["listed"] == 3 and store.manifest["complete"] is True
    for p, m in masks.items():
        assert (out / mask_relpath(p)).is_file()
        got = store.load_mask(p)
        assert got.dtype == np.float32 and got.shape == (4, 6)
        np.testing.assert_array_equal(np.rint(got * 255).astype(np.uint8), m)
    assert store.entries["a.png"].boxes == [[0.1, 0.2, 0.5, 0.75]]
    assert store.entries["a.png"].bg_rect == [0, 0, 3, 2]
    with pytest.raises(KeyError, match="bad_image"):
        store.load_mask("bad.jpg")
    lines = (out / "index.jsonl").read_text().splitlines()
    assert json.loads(lines[0]) == {"path": "a.png", "width": 6, "height": 4, "boxes": [[0.1, 0.2, 0.5, 0.75]],
                                    "bg_rect": [0, 0, 3, 2], "status": "ok", "fingerprint": None}
    assert not list(out.rglob("*.tmp"))


def test_mask_paths_and_collisions():
    assert mask_relpath("dir/img.JPEG") == "masks/dir/img.png"
    assert find_mask_collisions(["a.jpg", "a.png", "b.jpg"]) == [("a.jpg", "a.png")]


def test_write_rejects_wrong_mask_shape_and_duplicates(tmp_path):
    writer = StoreWriter(tmp_path / "s", SETTINGS, "h")
    with pytest.raises(ValueError, match="x.jpg"):
        writer.write(_entry("x.jpg"), _mask(6, 4, 0))
    writer.write(_entry("x.jpg"), _mask(4, 6, 0))
    with pytest.raises(ValueError, match="already"):
        writer.write(_entry("x.jpg"), _mask(4, 6, 0))
    with pytest.raises(ValueError, match="no mask"):
        writer.write(_entry("y.jpg"), None)


def test_write_takes_an_encoded_mask_and_checks_its_header(tmp_path):
    from occon_plugin.store.format import decode_mask_png, encode_mask_png

    writer = StoreWriter(tmp_path / "s", SETTINGS, "h")
    mask = _mask(4, 6, 1)
    writer.write(_entry("a.jpg"), None, mask_png=encode_mask_png(mask))
    np.testing.assert_array_equal(decode_mask_png(writer.mask_file("a.jpg")), mask)
    with pytest.raises(ValueError, match=r"b.jpg has header .*\(6, 4, 8, 0\)"):
        writer.write(_entry("b.jpg"), None, mask_png=encode_mask_png(_mask(6, 4, 1)))  # transposed
    with pytest.raises(ValueError, match=r"b.jpg has header \(width, height, depth, colour\) None"):
        writer.write(_entry("b.jpg"), None, mask_png=b"not a png")
    with pytest.raises(ValueError, match="not both"):
        writer.write(_entry("b.jpg"), mask, mask_png=encode_mask_png(mask))
    assert not writer.mask_file("b.jpg").exists()


def test_resume_ignores_torn_line_and_matches_uninterrupted(tmp_path):
    paths = [f"img{i}.jpg" for i in range(5)]
    full = tmp_path / "full"
    w = StoreWriter(full, SETTINGS, "h")
    for i, p in enumerate(paths):
        w.write(_entry(p), _mask(4, 6, i))
    w.close()

    part = tmp_path / "part"
    w = StoreWriter(part, SETTINGS, "h")
    for i, p in enumerate(paths[:3]):
        w.write(_entry(p), _mask(4, 6, i))
    w._fh.write(b'{"path":"img3.jpg","wid')  # a crash in the middle of a line
    w._fh.flush()
    w.abandon()  # the process dies: the kernel releases its lock
    with pytest.raises(StoreError, match="incomplete"):
        Store.open(part)

    w = StoreWriter(part, SETTINGS, "h")  # resume
    assert w.done_paths() == set(paths[:3])
    for i, p in enumerate(paths):
        if p not in w.done_paths():
            w.write(_entry(p), _mask(4, 6, i))
    w.close()
    assert (part / "index.jsonl").read_bytes() == (full / "index.jsonl").read_bytes()
    for p in paths:
        assert (part / mask_relpath(p)).read_bytes() == (full / mask_relpath(p)).read_bytes()


def test_resume_with_other_settings_or_model_fails_and_resume_false_restarts(tmp_path):
    out = tmp_path / "s"
    w = StoreWriter(out, SETTINGS, "h")
    w.write(_entry("a.jpg"), _mask(4, 6, 0))
    w.close()
    with pytest.raises(StoreSettingsMismatchError, match="threshold"):
        StoreWriter(out, {**SETTINGS, "threshold": 0.3}, "h")
    with pytest.raises(StoreSettingsMismatchError, match="model"):
        StoreWriter(out, SETTINGS, "other")
    w = StoreWriter(out, {**SETTINGS, "threshold": 0.3}, "h", resume=False)
    assert w.done_paths() == set() and not (out / "masks" / "a.png").exists()
    w.close()


def test_refuses_non_store_folder(tmp_path):
    (tmp_path / "keep.txt").write_text("user data")
    with pytest.raises(RuntimeError, match="not empty"):
        StoreWriter(tmp_path, SETTINGS, "h", resume=False)
    assert (tmp_path / "keep.txt").exists()
    with pytest.raises(StoreError, match="no manifest.json"):
        Store.open(tmp_path)


def test_ranks_write_separate_index_files_merged_by_rank0(tmp_path):
    out = tmp_path / "s"
    w0 = StoreWriter(out, SETTINGS, "h", rank=0, world_size=2)
    w1 = StoreWriter(out, SETTINGS, "h", rank=1, world_size=2)
    w1.write(_entry("b.jpg"), _mask(4, 6, 1))
    w0.write(_entry("c.jpg"), _mask(4, 6, 2))
    w1.write(_entry("a.jpg"), _mask(4, 6, 0))
    assert w0.refresh_done() == {"a.jpg", "b.jpg", "c.jpg"}
    assert w1.close() is None
    w0.close()
    assert not list(out.glob("index.rank*.jsonl"))
    assert list(Store.open(out).entries) == ["a.jpg", "b.jpg", "c.jpg"]


def _dataset(root, sizes):
    for name, (w, h) in sizes.items():
        Image.new("RGB", (w, h)).save(root / name)
    return list_images(root)


def test_validation_reports_missing_extra_changed(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    out = tmp_path / "s"
    w = StoreWriter(out, SETTINGS, "h")
    for name in ["a.png", "b.png", "gone.png"]:
        w.write(_entry(name), _mask(4, 6, 0))
    w.close()
    images = _dataset(data, {"a.png": (6, 4), "b.png": (7, 4), "new.png": (6, 4)})
    store = Store.open(out)
    with pytest.raises(StoreMismatchError) as info:
        validate_store(store, images)
    msg = str(info.value)
    assert "1 missing" in msg and "new.png" in msg
    assert "1 extra" in msg and "gone.png" in msg
    assert "1 changed" in msg and "b.png (store 6x4, image 7x4)" in msg
    assert "occon-localize" in msg
    report = validate_store(store, images, policy="skip")
    assert report.counts == {"images": 3, "missing": 1, "extra": 1, "changed": 1, "failed": 0, "damaged": 0,
                             "replaced": 0, "gone": 0}
    assert not report.ok
    with pytest.raises(ValueError, match="policy"):
        validate_store(store, images, policy="ignore")


def test_validation_lists_first_ten_and_counts_all(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    images = _dataset(data, {f"i{k:02d}.png": (6, 4) for k in range(25)})
    out = tmp_path / "s"
    w = StoreWriter(out, SETTINGS, "h")
    w.write(_entry("i00.png"), _mask(4, 6, 0))
    w.close()
    with pytest.raises(StoreMismatchError, match=r"24 missing .*i10\.png, \.\.\. \(\+14 more\)"):
        validate_store(Store.open(out), images)
    report = validate_store(Store.open(out), list_images(data), policy="full_image")
    assert len(report.missing) == 24


def test_resume_removes_what_a_killed_write_left(tmp_path):
    """atomic_path temporaries of a killed run (``.<name>.<8 chars><suffix>``) go on resume; other files stay."""
    from occon_plugin.atomic import is_temp_file

    writer = StoreWriter(tmp_path / "s", SETTINGS, "h")
    writer.write(_entry("sub/x.jpg"), _mask(4, 6, 0))
    writer.abandon()  # killed
    masks = tmp_path / "s" / "masks"
    stale = [masks / "sub" / ".y.png.k2_9xq0a.png", tmp_path / "s" / "soft" / ".z.png.abcdefgh.png"]
    keep = [masks / "sub" / ".y.png", masks / "notes.txt"]
    for p in stale + keep:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"partial")
    assert all(is_temp_file(p) for p in stale) and not any(is_temp_file(p) for p in keep)
    StoreWriter(tmp_path / "s", SETTINGS, "h").abandon()
    assert not any(p.exists() for p in stale) and all(p.exists() for p in keep)
    assert (masks / "sub" / "x.png").exists()


def test_an_image_folder_given_as_the_store_says_to_build_one_in_a_new_folder(tmp_path):
    """occon-localize refuses output_dir = data.path, so the hint for an image folder given as the store
    names a new folder; a folder without images keeps the build-it-here hint."""
    photos = tmp_path / "photos" / "cat"
    photos.mkdir(parents=True)
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(photos / "a.jpg")
    with pytest.raises(StoreError, match=r"photos holds images, not a mask store .*output_dir=<a new folder>"):
        Store.open(tmp_path / "photos")
    (tmp_path / "empty").mkdir()
    with pytest.raises(StoreError, match=r"empty is not a mask store .*output_dir=.*empty`"):
        Store.open(tmp_path / "empty")
