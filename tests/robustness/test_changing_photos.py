"""Issue 18 kind 1: a photo that changes while it is being localized. The entry's fingerprint describes
the bytes that were decoded (``read_image``: one read, decoded and fingerprinted); a file that changed
between its read and its entry's write is localized again, or left out and reported - never stored with
a fingerprint of other content. Every checker (resume, store validation, eval) uses the same rule."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from occon_plugin.images import bytes_fingerprint, file_fingerprint, fingerprints, list_images, read_image
from occon_plugin.localize import runner
from occon_plugin.localize.runner import run_localize
from occon_plugin.store import Store, mask_relpath, validate_store

from robustness_helpers import jpeg_bytes, localize_settings, photo

NAMES = ["astronaut", "chelsea", "coffee", "rocket", "camera", "coins"]


@pytest.fixture
def folder(tmp_path):
    root = tmp_path / "data"
    root.mkdir()
    for k, name in enumerate(NAMES):
        Image.fromarray(photo(name)).save(root / f"{k}_{name}.png")
    return root


def _patch_reads(monkeypatch, on_read):
    """Call ``on_read(rel, count)`` right after each read of the runner (the bytes are already decoded)."""
    counts: dict[str, int] = {}
    real = runner.read_image

    def reading(root, rel):
        result = real(root, rel)
        counts[rel] = counts.get(rel, 0) + 1
        on_read(root / rel, rel, counts[rel])
        return result

    monkeypatch.setattr(runner, "read_image", reading)
    return counts


def _store_rows(store):
    return {r["path"]: r for r in map(json.loads, (store / "index.jsonl").read_text().splitlines())}


@pytest.mark.parametrize("size", [0, 1, 65535, 65536, 65537, 131072, 131073, 300001])
def test_the_fingerprint_of_bytes_read_is_the_files(tmp_path, size):
    data = np.random.default_rng(size).integers(0, 256, size, dtype=np.uint8).tobytes()
    (tmp_path / "f").write_bytes(data)
    assert bytes_fingerprint(data) == file_fingerprint(tmp_path / "f")
    read = read_image(tmp_path, "f")  # not an image: the error and the fingerprint of what was read
    assert read.pixels is None and read.error is not None and read.fingerprint == bytes_fingerprint(data)


@pytest.mark.kind("store.changed-while-localized")
@pytest.mark.parametrize("workers", [0, 1])
def test_a_photo_replaced_while_localized_is_redone_from_the_new_file(folder, tmp_path, monkeypatch, workers):
    target, other = "2_coffee.png", jpeg_bytes(photo("moon"))

    def replace_once(path, rel, count):
        if rel == target and count == 1:
            path.write_bytes(other)  # same name, another photo (same size), after its bytes were decoded

    counts = _patch_reads(monkeypatch, replace_once)
    summary = run_localize(localize_settings(folder, tmp_path / "store", f"post_workers={workers}"))
    assert counts[target] >= 2 and summary["changed_during_run"] == []
    rows = _store_rows(tmp_path / "store")
    assert rows[target]["fingerprint"] == file_fingerprint(folder / target) == bytes_fingerprint(other)
    # the redone entry is what a run on the final files computes for it
    monkeypatch.undo()
    fresh = tmp_path / "fresh"
    run_localize(localize_settings(folder, fresh))
    assert rows[target] == _store_rows(fresh)[target]
    assert (tmp_path / "store" / mask_relpath(target)).read_bytes() == (fresh / mask_relpath(target)).read_bytes()
    # every checker agrees: nothing replaced
    report = validate_store(Store.open(tmp_path / "store"), list_images(folder), policy="skip")
    assert report.ok and not report.replaced


@pytest.mark.kind("store.changed-while-localized")
def test_a_photo_truncated_while_localized_is_recorded_as_what_it_is_now(folder, tmp_path, monkeypatch):
    target = "3_rocket.png"

    def truncate_once(path, rel, count):
        if rel == target and count == 1:
            path.write_bytes(path.read_bytes()[:200])

    _patch_reads(monkeypatch, truncate_once)
    summary = run_localize(localize_settings(folder, tmp_path / "store"))
    row = _store_rows(tmp_path / "store")[target]
    assert row["status"].startswith("bad_image") and row["fingerprint"] == file_fingerprint(folder / target)
    assert summary["written_bad"] == 1 and summary["changed_during_run"] == []


@pytest.mark.kind("store.changed-while-localized")
def test_a_photo_that_keeps_changing_is_left_out_named_and_added_by_the_rerun(folder, tmp_path, monkeypatch, capsys):
    target = "4_camera.png"
    pictures = [photo(n) for n in ("moon", "page", "clock", "horse", "brick")]

    def change_always(path, rel, count):
        if rel == target:
            Image.fromarray(pictures[count % len(pictures)]).save(path, format="PNG")

    _patch_reads(monkeypatch, change_always)
    store = tmp_path / "store"
    summary = run_localize(localize_settings(folder, store))
    assert summary["changed_during_run"] == [target]
    manifest = json.loads((store / "manifest.json").read_text())
    assert manifest["changed_during_run"] == [target] and target not in _store_rows(store)
    from occon_plugin.cli.localize import _report

    _report(summary)
    out = capsys.readouterr().out
    assert f"1 image(s) changed while being localized (replaced or still being written) and are not in the store: " \
           f"{target}" in out
    report = validate_store(Store.open(store), list_images(folder), policy="skip")
    assert report.missing == [target]
    monkeypatch.undo()  # the file stays as it is now: the same command adds it
    again = run_localize(localize_settings(folder, store))
    assert again["written_ok"] == 1 and again["changed_during_run"] == []
    assert _store_rows(store)[target]["fingerprint"] == file_fingerprint(folder / target)
    assert validate_store(Store.open(store), list_images(folder)).ok


def test_every_checker_uses_the_one_fingerprint_rule(folder):
    paths = sorted(p.name for p in folder.iterdir())
    by_file = {p: file_fingerprint(folder / p) for p in paths}
    assert fingerprints(folder, paths) == by_file
    assert {p: read_image(folder, p).fingerprint for p in paths} == by_file
