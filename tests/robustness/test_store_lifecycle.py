"""Issue 18 kinds 6, 10, 11: the life of a store folder. One run writes it at a time (a lock the kernel
releases when its holder dies); what a kill during the very first start leaves is recognised; the rerun the
validator asks for repairs what it found; a store from before fingerprints (schema v1) is refused where
images are paired with masks unless allowed explicitly (then said once)."""
from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest

from occon_plugin.augment.dali.datamodule import build_dali_source
from occon_plugin.augment.dataset import build_pretrain_dataloader
from occon_plugin.images import list_images
from occon_plugin.localize.runner import run_localize
from occon_plugin.store import (Store, StoreFolderError, StoreMismatchError, StoreSettingsMismatchError,
                                StoreWriter, UnverifiableStoreError, mask_relpath, validate_store)
from occon_plugin.store.writer import LOCK_FILE, StoreBusyError

from robustness_helpers import FAST_LOCALIZE, assert_one_line_error, copy_tree, localize_settings, run_cli
from test_pipelines import cfg
from test_store_faults import MASK_FAULTS, damage_masks

SETTINGS = {"test": "lifecycle"}


# ---- kind 10: one writer at a time -----------------------------------------------------------------------
@pytest.mark.kind("store.concurrent-localize")
def test_a_second_writer_is_refused_until_the_first_is_done(tmp_path):
    out = tmp_path / "store"
    first = StoreWriter(out, SETTINGS, "h")
    with pytest.raises(StoreBusyError, match=rf"store {out} is being written by another run \(process {os.getpid()} "
                                             rf"on .*\): wait for it to finish, or choose another output_dir"):
        StoreWriter(out, SETTINGS, "h")
    first.close()
    with StoreWriter(out, SETTINGS, "h") as again:  # released by close(); a with block releases it too
        assert again.done_paths() == set()
    StoreWriter(out, SETTINGS, "h").abandon()


@pytest.mark.kind("store.concurrent-localize")
def test_a_second_occon_localize_is_one_line_and_the_store_stays_untouched(mixed, mixed_store, tmp_path):
    store = copy_tree(mixed_store, tmp_path / "store")
    before = {p.name: p.read_bytes() for p in store.iterdir() if p.is_file() and p.name != LOCK_FILE}
    holder = StoreWriter(store, json.loads((store / "manifest.json").read_text())["settings"],
                         json.loads((store / "manifest.json").read_text())["model_sha256"])
    try:
        proc = run_cli("occon_plugin.cli.localize", f"data.path={mixed.root}", f"output_dir={store}", *FAST_LOCALIZE)
        assert_one_line_error(proc, str(store), "being written by another run", str(os.getpid()))
    finally:
        holder.abandon()
    assert {p.name: p.read_bytes() for p in store.iterdir() if p.is_file() and p.name != LOCK_FILE} == before


@pytest.mark.kind("store.concurrent-localize")
def test_under_torchrun_every_rank_stops_with_rank_0_when_the_store_is_busy(mixed, tmp_path):
    out = tmp_path / "store"
    holder = StoreWriter(out, SETTINGS, "h")
    try:
        proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                               "-m", "occon_plugin.cli.localize", f"data.path={mixed.root}", f"output_dir={out}",
                               "device=cpu", *FAST_LOCALIZE], capture_output=True, text=True, timeout=300,
                              env={**os.environ, "PYTHONWARNINGS": "ignore"})
    finally:
        holder.abandon()
    errors = [l for l in proc.stderr.splitlines() if "[occon] error:" in l]
    assert proc.returncode != 0 and len(errors) == 2, proc.stderr[-3000:]  # both ranks stop (no wait for ever)
    assert all("being written by another run" in l for l in errors)
    assert any("rank 0 stopped:" in l for l in errors)


@pytest.mark.kind("store.concurrent-localize")
def test_an_error_line_is_one_write_so_ranks_sharing_stderr_cannot_splice_it():
    """The ranks of one torchrun share one stderr; ``print`` writes the text and its newline separately, so two
    ranks stopping at once printed one line holding both errors (seen in CI). One write of a short line is
    atomic on a pipe."""
    import io

    from occon_plugin.errors import DataError, print_error

    class Writes(io.StringIO):
        calls: list = []

        def write(self, s):
            self.calls.append(s)
            return super().write(s)

    stream = Writes()
    print_error(DataError("store x is being written\nby another run"), file=stream)
    assert stream.calls == ["[occon] error: store x is being written by another run\n"]


@pytest.mark.kind("store.concurrent-localize")
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="flock and kill -9")
def test_a_writer_killed_with_sigkill_leaves_no_stale_lock(tmp_path):
    out = tmp_path / "store"
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import time
        from occon_plugin.store import StoreWriter
        w = StoreWriter({str(out)!r}, {SETTINGS!r}, "h")
        print("locked", flush=True)
        time.sleep(600)
    """)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    with pytest.raises(StoreBusyError, match=f"process {holder.pid} "):
        StoreWriter(out, SETTINGS, "h")
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    StoreWriter(out, SETTINGS, "h").close()  # at once: the kernel released the dead process's lock


@pytest.mark.kind("store.concurrent-localize")
def test_run_localize_releases_the_lock_when_it_stops(mixed, tmp_path, monkeypatch):
    from occon_plugin.localize import runner

    def boom(*a, **k):
        raise RuntimeError("stopped mid-run")

    monkeypatch.setattr(runner._Localizer, "run_batch", boom)
    with pytest.raises(RuntimeError, match="stopped mid-run"):
        run_localize(localize_settings(mixed.root, tmp_path / "store"))
    monkeypatch.undo()
    summary = run_localize(localize_settings(mixed.root, tmp_path / "store"))  # same process: not refused
    assert summary["written_ok"] + summary["written_bad"] == 22


# ---- kind 11: leftovers of a killed start, and repairs ---------------------------------------------------
@pytest.mark.kind("store.killed-start")
def test_leftovers_of_a_kill_during_the_first_manifest_write_are_recognised(mixed, tmp_path):
    out = tmp_path / "store"
    out.mkdir()
    for _ in range(2):  # what atomic_path leaves when the process dies before its rename (two killed starts)
        fd, _name = tempfile.mkstemp(dir=out, prefix=".manifest.json.", suffix=".json")
        os.write(fd, b'{"schema": "occon-st')
        os.close(fd)
    (out / LOCK_FILE).write_text("12345 on somewhere\n")
    summary = run_localize(localize_settings(mixed.root, out))
    assert summary["written_ok"] + summary["written_bad"] == 22
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == [LOCK_FILE]
    assert len(Store.open(out)) == 22
    # a user's file next to such leftovers is still a folder that is not a store
    other = tmp_path / "other"
    other.mkdir()
    tempfile.mkstemp(dir=other, prefix=".manifest.json.", suffix=".json")
    (other / "notes.txt").write_text("mine")
    with pytest.raises(StoreFolderError, match="is not empty and is not an occon store"):
        run_localize(localize_settings(mixed.root, other))
    # a kill while the finished run rewrote its index and manifest: the next run removes those temporaries
    for target in ("index.jsonl", "manifest.json"):
        fd, _name = tempfile.mkstemp(dir=out, prefix=f".{target}.", suffix=Path(target).suffix)
        os.close(fd)
    run_localize(localize_settings(mixed.root, out))
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == [LOCK_FILE]


@pytest.mark.kind("store.killed-start")
def test_the_rerun_the_validator_asks_for_repairs_damaged_masks_and_boxes(mixed, mixed_store, tmp_path):
    store = copy_tree(mixed_store, tmp_path / "store")
    (store / LOCK_FILE).unlink(missing_ok=True)
    damage_masks(store)
    rows = [json.loads(l) for l in (store / "index.jsonl").read_text().splitlines()]
    for row in rows:
        if row["path"] == "g16_grey.png":
            row["boxes"] = [[math.nan, 0.1, 0.5, 0.5]]
    (store / "index.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(StoreMismatchError, match=rf"7 damaged store entries.*Repair it with `occon-localize "
                                                 rf"data.path={mixed.root} output_dir={store}`"):
        build_pretrain_dataloader(cfg(mixed.root, store))
    proc = run_cli("occon_plugin.cli.localize", f"data.path={mixed.root}", f"output_dir={store}", *FAST_LOCALIZE)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "7 damaged store entries localized again: a_rgb.jpg (mask file missing)" in proc.stdout
    report = validate_store(Store.open(store), list_images(mixed.root))
    assert report.ok and not report.damaged
    assert len((store / "index.jsonl").read_text().splitlines()) == 22
    for path in [*MASK_FAULTS, "g16_grey.png"]:  # the same masks an uninterrupted run wrote
        assert (store / mask_relpath(path)).read_bytes() == (mixed_store / mask_relpath(path)).read_bytes()
    assert Store.open(store).entries == Store.open(mixed_store).entries
    build_pretrain_dataloader(cfg(mixed.root, store))  # trains now


# ---- kind 6: schema-v1 stores -----------------------------------------------------------------------------
def _as_v1(mixed_store, to):
    """A copy of the store as written before fingerprints: schema_version 1, no fingerprint per entry."""
    store = copy_tree(mixed_store, to)
    manifest = json.loads((store / "manifest.json").read_text())
    manifest["schema_version"] = 1
    (store / "manifest.json").write_text(json.dumps(manifest))
    rows = [json.loads(l) for l in (store / "index.jsonl").read_text().splitlines()]
    (store / "index.jsonl").write_text("".join(json.dumps({k: v for k, v in r.items() if k != "fingerprint"}) + "\n"
                                               for r in rows))
    return store


@pytest.mark.kind("store.schema-v1")
def test_a_v1_store_is_refused_for_training_unless_allowed_then_said_once(mixed, mixed_store, tmp_path, capsys):
    store = _as_v1(mixed_store, tmp_path / "v1")
    for build in (build_pretrain_dataloader, build_dali_source):
        with pytest.raises(UnverifiableStoreError, match=rf"store {store} was written before stores recorded image "
                                                         rf"fingerprints \(schema v1\).*`occon-localize data.path="
                                                         rf"{mixed.root} output_dir={store} resume=false`.*"
                                                         rf"occon.allow_v1_store=true"):
            build(cfg(mixed.root, store))
    capsys.readouterr()
    allowed = cfg(mixed.root, store)
    allowed.occon.allow_v1_store = True
    dataset = build_pretrain_dataloader(allowed).dataset
    assert len(dataset) == 16 and dataset.report.unverified == 16
    err = capsys.readouterr().err
    assert err.count("schema v1") == 1 and "checked by size only" in err
    with pytest.raises(Exception, match="occon.allow_v1_store='maybe' must be true or false"):
        bad = cfg(mixed.root, store)
        bad.occon.allow_v1_store = "maybe"
        build_pretrain_dataloader(bad)


@pytest.mark.kind("store.schema-v1")
def test_a_v1_store_in_evaluation_and_localization_is_one_line(mixed, mixed_store, tmp_path):
    store = _as_v1(mixed_store, tmp_path / "v1")
    images = tmp_path / "images"  # the readable images, scored against the store's own masks as ground truth
    images.mkdir()
    for name in mixed.good:
        (images / name).write_bytes((mixed.root / name).read_bytes())
    args = [f"predictions={store}", f"gt={mixed_store / 'masks'}", f"image_root={images}",
            f"output_dir={tmp_path / 'e'}", "wandb.enabled=false", "progress=false"]
    proc = run_cli("occon_plugin.cli.eval_localization", *args)
    assert_one_line_error(proc, str(store), "schema v1", "allow_v1_store=true")
    proc = run_cli("occon_plugin.cli.eval_localization", *args, "allow_v1_store=true")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sum("is schema v1 (no image fingerprints" in l for l in proc.stdout.splitlines()) == 1
    # occon-localize does not resume it (its entries cannot be verified); resume=false rebuilds it
    with pytest.raises(StoreSettingsMismatchError, match=r"schema v1.*rebuild it with resume=false"):
        run_localize(localize_settings(mixed.root, store))
    run_localize(localize_settings(mixed.root, store, "resume=false"))
    rebuilt = Store.open(store)
    assert rebuilt.schema_version == 2 and all(e.fingerprint for e in rebuilt.entries.values())
