"""Items 6, 9, 10: a damaged or misaligned store is found before the first training step (named),
and the ``occon.missing`` policy decides; localization never silently resumes another folder's store."""
from __future__ import annotations

import json
import math

import cv2
import numpy as np
import pytest

from occon_plugin.augment.dali.datamodule import build_dali_source
from occon_plugin.augment.dataset import build_pretrain_dataloader
from occon_plugin.localize.runner import run_localize
from occon_plugin.images import list_images
from occon_plugin.store import (Store, StoreError, StoreFolderError, StoreMismatchError, StoreSourceMismatchError,
                                mask_relpath, validate_store)

from robustness_helpers import FAST_LOCALIZE, assert_one_line_error, copy_tree, localize_settings, photo, run_cli
from test_pipelines import cfg

MASK_FAULTS = {
    "a_rgb.jpg": ("delete", "mask file missing"),
    "b_rgb.png": ("empty", "mask file is empty"),
    "c_rgb.jpg": ("truncate", "truncated"),
    "d_rgb.webp": ("flip-bytes", "bad CRC"),
    "e_rgb.bmp": ("wrong-size", "mask is 7x5, the index says 48x40"),
    "f_rgb.tif": ("16-bit", "not 8-bit grayscale"),
}


def damage_masks(store):
    for path, (how, _) in MASK_FAULTS.items():
        mask = store / mask_relpath(path)
        data = mask.read_bytes()
        if how == "delete":
            mask.unlink()
        elif how == "empty":
            mask.write_bytes(b"")
        elif how == "truncate":
            mask.write_bytes(data[: len(data) // 2])
        elif how == "flip-bytes":
            mask.write_bytes(data[:40] + bytes([data[40] ^ 0xFF]) + data[41:])
        elif how == "wrong-size":
            cv2.imwrite(str(mask), np.zeros((5, 7), np.uint8))
        elif how == "16-bit":
            cv2.imwrite(str(mask), np.zeros((40, 48), np.uint16))


@pytest.mark.kind("store.damaged-mask")
def test_damaged_masks_are_found_before_training_and_the_policy_decides(mixed, mixed_store, tmp_path):
    store = copy_tree(mixed_store, tmp_path / "store")
    damage_masks(store)
    report = validate_store(Store.open(store), list_images(mixed.root), policy="skip")
    found = dict(report.damaged)
    assert sorted(found) == sorted(MASK_FAULTS)
    for path, (_, reason) in MASK_FAULTS.items():
        assert reason in found[path], (path, found[path])
    # the default policy stops both pipelines before the first step, naming the files
    for build in (build_pretrain_dataloader, build_dali_source):
        with pytest.raises(StoreMismatchError, match=r"6 damaged store entries: a_rgb.jpg \(mask file missing\)"):
            build(cfg(mixed.root, store))
    skip = build_pretrain_dataloader(cfg(mixed.root, store, missing="skip")).dataset
    assert len(skip) == 10 and not set(MASK_FAULTS) & set(skip.paths) and skip.startup["store_unusable"] == 6
    full = build_pretrain_dataloader(cfg(mixed.root, store, missing="full_image")).dataset
    assert len(full) == 16 and full.counts["no_entry"] == 6
    source, _ = build_dali_source(cfg(mixed.root, store, missing="full_image"))
    assert sum(not r.has_entry for r in source.records) == 6 and all(r.mask_file is None or r.has_entry
                                                                      for r in source.records)


@pytest.mark.kind("store.bad-boxes")
def test_nan_inverted_and_outside_boxes_are_found_before_training(mixed, mixed_store, tmp_path):
    store = copy_tree(mixed_store, tmp_path / "store")
    rows = [json.loads(l) for l in (store / "index.jsonl").read_text().splitlines()]
    faults = {"a_rgb.jpg": ("boxes", [[math.nan, 0.1, 0.5, 0.5]], "not 4 finite numbers"),
              "b_rgb.png": ("boxes", [[0.6, 0.1, 0.2, 0.5]], "inverted, empty or outside"),
              "c_rgb.jpg": ("boxes", [[0.1, 0.1, 7.5, 0.5]], "inverted, empty or outside"),
              "d_rgb.webp": ("bg_rect", [0, 0, 480, 400], "outside the 48x40 image")}
    for row in rows:
        if row["path"] in faults:
            key, value, _ = faults[row["path"]]
            row[key] = value
    (store / "index.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    report = validate_store(Store.open(store), list_images(mixed.root), policy="skip")
    found = dict(report.damaged)
    assert sorted(found) == sorted(faults)
    for path, (_, _, reason) in faults.items():
        assert reason in found[path], found[path]
    with pytest.raises(StoreMismatchError, match="4 damaged store entries"):
        build_dali_source(cfg(mixed.root, store))


@pytest.mark.kind("store.torn-index")
def test_torn_index_is_refused_by_name_and_repaired_by_resuming(mixed, mixed_store, tmp_path):
    store = copy_tree(mixed_store, tmp_path / "store")
    index = store / "index.jsonl"
    lines = index.read_bytes().splitlines(keepends=True)
    index.write_bytes(b"".join(lines[:6]) + lines[6][:20])  # a torn copy: 6 lines and a half
    with pytest.raises(StoreError, match=r"holds 6 valid entries but its finished run wrote 22 .*line 7: torn last "
                                         r"line.*resume=true"):
        Store.open(store)
    proc = run_cli("occon_plugin.cli.eval_localization", f"predictions={store}", f"gt={mixed_store}",
                   f"image_root={mixed.root}", f"output_dir={tmp_path / 'eval'}", "wandb.enabled=false")
    assert_one_line_error(proc, "index.jsonl", "22")
    garbled = b"".join(lines[:3]) + b'{"path": "x.jpg", "width": \n' + b"".join(lines[4:])
    index.write_bytes(garbled)
    with pytest.raises(StoreError, match="index.jsonl line 4"):
        Store.open(store)
    index.write_bytes(b"".join(lines[:6]))
    summary = run_localize(localize_settings(mixed.root, store))  # resume=true recomputes only the lost ones
    assert summary["already_done"] == 6 and summary["written_ok"] + summary["written_bad"] == 16
    assert len(Store.open(store)) == 22


@pytest.mark.kind("store.swapped")
def test_swapped_or_replaced_photos_are_named_before_training(mixed, mixed_store, tmp_path):
    root = copy_tree(mixed.root, tmp_path / "data")
    a, b = (root / "a_rgb.jpg").read_bytes(), (root / "c_rgb.jpg").read_bytes()
    (root / "a_rgb.jpg").write_bytes(b)
    (root / "c_rgb.jpg").write_bytes(a)                     # two same-size photos swap names
    from PIL import Image

    Image.fromarray(photo("coins")).save(root / "b_rgb.png")  # one replaced by another photo, same size
    report = validate_store(Store.open(mixed_store), list_images(root), policy="skip")
    assert report.replaced == ["a_rgb.jpg", "b_rgb.png", "c_rgb.jpg"] and not report.changed
    for build in (build_pretrain_dataloader, build_dali_source):
        with pytest.raises(StoreMismatchError, match=r"3 replaced \(same name, other file content.*a_rgb.jpg, "
                                                     r"b_rgb.png, c_rgb.jpg"):
            build(cfg(root, mixed_store))


@pytest.mark.kind("store.swapped")
def test_localized_photos_that_are_gone_are_named_as_gone_not_as_replaced(mixed, mixed_store, tmp_path):
    """A COCO run given the wrong data.image_root (or photos deleted since) was told its photos were
    "replaced (same name, other file content)" and to rerun occon-localize with data.path=<image_root>."""
    import dataclasses

    root = copy_tree(mixed.root, tmp_path / "data")
    (root / "a_rgb.jpg").unlink()
    images = dataclasses.replace(list_images(mixed.root), root=root)  # the same listing, read from elsewhere
    report = validate_store(Store.open(mixed_store), images, policy="skip")
    assert report.gone == ["a_rgb.jpg"] and report.replaced == [] and "a_rgb.jpg" in report.unusable
    with pytest.raises(StoreMismatchError, match=r"1 localized but not found or unreadable now \(deleted or moved "
                                                 r"since, or another data folder / data.image_root\): a_rgb.jpg;.* "
                                                 rf"Repair it with `occon-localize data.path={root} "):
        validate_store(Store.open(mixed_store), images)
    coco = dataclasses.replace(images, image_ids=list(range(len(images.paths))))
    with pytest.raises(StoreMismatchError, match=r"`occon-localize data.path=<the COCO json> "
                                                 rf"data.image_root={root} output_dir="):
        validate_store(Store.open(mixed_store), coco)


@pytest.mark.kind("store.other-folder")
def test_localizing_another_folder_into_a_store_is_refused(mixed, mixed_store, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    from PIL import Image

    for k, name in enumerate(mixed.good[:4]):  # the same file names, other photos
        Image.fromarray(photo(["coins", "clock", "moon", "page"][k])).save(other / name)
    store = copy_tree(mixed_store, tmp_path / "store")
    before = (store / "index.jsonl").read_bytes(), (store / "manifest.json").read_bytes()
    with pytest.raises(StoreSourceMismatchError, match=r"4 differ \(a_rgb.jpg, b_rgb.png"):
        run_localize(localize_settings(other, store))
    assert ((store / "index.jsonl").read_bytes(), (store / "manifest.json").read_bytes()) == before
    proc = run_cli("occon_plugin.cli.localize", f"data.path={other}", f"output_dir={store}", *FAST_LOCALIZE)
    assert_one_line_error(proc, str(store), "a_rgb.jpg", "resume=false")


@pytest.mark.kind("found.damaged-manifest")
def test_a_manifest_that_is_not_json_is_named(mixed, mixed_store, tmp_path):
    store = copy_tree(mixed_store, tmp_path / "store")
    (store / "manifest.json").write_text('{"schema": "occon-store", "compl')
    with pytest.raises(StoreError, match="manifest.json is not valid JSON"):
        Store.open(store)
    with pytest.raises(StoreFolderError, match="manifest.json is not valid JSON"):
        run_localize(localize_settings(mixed.root, store))
    with pytest.raises(StoreError, match="manifest.json is not valid JSON"):
        build_pretrain_dataloader(cfg(mixed.root, store))


@pytest.mark.kind("bad.unreadable")
def test_a_bad_image_fixed_later_is_localized_on_the_next_run(mixed, mixed_store, tmp_path):
    data = copy_tree(mixed.root, tmp_path / "data")
    store = copy_tree(mixed_store, tmp_path / "store")
    from PIL import Image

    Image.fromarray(photo("coffee")).save(data / "t_text.jpg")  # the text file replaced by a real photo
    summary = run_localize(localize_settings(data, store))
    assert (summary["written_ok"], summary["written_bad"]) == (1, 0) and summary["already_done"] == 21
    fixed = Store.open(store)
    assert fixed.entries["t_text.jpg"].ok and fixed.load_mask("t_text.jpg").shape == (40, 48)
    assert fixed.manifest["counts"] == {"written": 22, "ok": 17, "skipped": 5}
    assert len((store / "index.jsonl").read_text().splitlines()) == 22  # one line per image after close
    before = Store.open(mixed_store)
    assert all(fixed.entries[p] == e for p, e in before.entries.items() if p != "t_text.jpg")
