"""StoreWriter: crash-safe, resumable writing of a store (one writer per rank)."""
from __future__ import annotations

import json
import logging
import os
import shutil
import socket
from pathlib import Path

import numpy as np

from occon_plugin.atomic import OUTPUT_ERRNOS, is_temp_file, make_output_dir, output_error, remove_temp_files
from occon_plugin.errors import DataError, examples
from occon_plugin.store.format import (INDEX_FILE, MANIFEST_FILE, MASK_DIR, RANK_INDEX_GLOB, SCHEMA_NAME,
                                       SCHEMA_VERSION, STATUS_OK, StoreEntry, atomic_write_bytes, atomic_write_json,
                                       encode_mask_png, mask_png_problem, mask_relpath, png_size, rank_index_file,
                                       read_index_lines)

_SHOW = 5
log = logging.getLogger(__name__)
LOCK_FILE = ".occon-localize.lock"  # held (flock) by the writing run's rank 0; the kernel releases it when it dies


class StoreSettingsMismatchError(DataError, RuntimeError):
    """Resuming into a store that was started with other settings or another model."""


class StoreSourceMismatchError(DataError, RuntimeError):
    """Resuming into a store whose finished entries were computed from other image files."""


class StoreFolderError(DataError, RuntimeError):
    """``output_dir`` cannot hold a store (not empty and not a store, or a damaged manifest)."""


class StoreBusyError(StoreFolderError):
    """Another run is writing into the same store folder (it holds the store's lock)."""


class ImageChangedError(DataError, RuntimeError):
    """The image file changed between the read an entry was computed from and the entry's write (replaced,
    truncated, fixed or deleted while being localized): nothing is written for it; the caller redoes it."""

    def __init__(self, path: str, message: str):
        self.path = path
        super().__init__(message)


_NOW = object()  # write(): no fingerprint of the bytes read given, take the file's as it is now


EXTRA_DIRS = ("overlays", "soft")  # what occon-localize may write beside the masks (overlays=, soft_masks=)


def _start_leftover(name: str) -> bool:
    """What a run killed before its first manifest was in place leaves in the store's top folder: the
    lock file and ``atomic_path`` temporaries of ``manifest.json`` (``.manifest.json.<8 chars>.json``)."""
    return name == LOCK_FILE or (name.startswith(f".{MANIFEST_FILE}.") and is_temp_file(name))


class StoreWriter:
    """Write masks + index lines into ``out_dir``; resume a killed run; ``close()`` finalizes.

    Each mask is written atomically before its index line; each index line is flushed and
    fsync'ed, so after a crash every line in the index has its mask and at most the last line
    is torn (ignored and cut off on resume). In a distributed run every rank appends to its own
    index file; rank 0's ``close()`` merges them (call it after a barrier).

    One run writes a store at a time: rank 0 holds an exclusive ``flock`` on ``<out_dir>/.occon-localize.lock``
    from its constructor to :meth:`close` / :meth:`abandon` (or the end of a ``with`` block); a second writer
    is refused with :class:`StoreBusyError`. The kernel releases the lock when the holding process dies
    (``kill -9``, out of memory), so a killed run never leaves a stale lock. Other ranks of the same run
    do not take it.

    Raises (constructor): StoreBusyError (another run writes it), StoreFolderError / StoreSourceMismatchError
    (the folder is not a store of these images and settings), OutputError (it cannot be written); each one line
    naming the folder and what to do.
    """

    def __init__(self, out_dir: str | Path, settings: dict, model_hash: str, *, resume: bool = True,
                 rank: int = 0, world_size: int = 1):
        self.out_dir = Path(out_dir)
        self.settings = json.loads(json.dumps(settings))  # plain JSON types, comparable after a round trip
        self.model_hash = model_hash
        self.rank, self.world_size = rank, world_size
        self.image_root: Path | None = None
        self.gone_paths: list[str] = []
        self.retry_paths: set[str] = set()  # bad images whose file changed since: localized again
        self.repaired: dict[str, str] = {}  # damaged entries (mask file, boxes) localized again: path -> problem
        self._reopen: dict | None = None
        self._lock_fh = None
        # Rank 0 creates/clears the store and writes the first manifest; other ranks only append.
        try:
            if rank == 0:
                self._prepare(resume)
            else:
                self._check_manifest(self._read_manifest())
            self._index_path = self.out_dir / rank_index_file(rank)
            self._cut_torn_tail(self._index_path)
            self._done = self._read_done()
            self._fh = open(self._index_path, "ab")
        except BaseException as exc:
            self._unlock()
            if isinstance(exc, OSError) and exc.errno in OUTPUT_ERRNOS and not isinstance(exc, DataError):
                raise output_error(self.out_dir, exc) from exc
            raise

    def attach_images(self, root: str | Path, paths) -> None:
        """Bind the store to the image folder ``root``: every later :meth:`write` records the
        fingerprint of ``root/<path>``, and every entry already in the store (a resumed run) must
        have been computed from the same file as ``root/<path>`` now. Raises
        :class:`StoreSourceMismatchError` naming the files that differ (another folder with the
        same file names, swapped or replaced photos). Localized again (their new line supersedes
        the old): an entry of an image that was unreadable and whose file changed since (fixed),
        and every entry the store validator finds damaged (mask file missing, empty, truncated,
        corrupt or of the wrong size; NaN, inverted or outside boxes; see :attr:`repaired`)."""
        from occon_plugin.images import fingerprints
        from occon_plugin.images.check import parallel_map

        self.image_root = Path(root)
        listed = set(paths)
        latest: dict[str, dict] = {}
        for f in self._index_files():
            for row in read_index_lines(f)[0]:
                latest[row["path"]] = row  # a later line of the same image supersedes (a retried bad image)
        rows = list(latest.values())
        changed, gone, retry = [], [], set()
        current = fingerprints(root, [r["path"] for r in rows if r["path"] in listed and r.get("fingerprint")])
        for row in rows:
            path, recorded = row["path"], row.get("fingerprint")
            if path not in listed:
                gone.append(path)
            elif recorded and current.get(path) != recorded:
                if row.get("status", STATUS_OK) == STATUS_OK:
                    changed.append(path)
                else:
                    retry.add(path)
        if changed:
            raise StoreSourceMismatchError(
                f"store {self.out_dir} holds {len(rows)} entries computed from other image files than the ones "
                f"under {root}: {len(changed)} differ ({examples(changed, show=_SHOW)}). Resuming would keep "
                f"masks of other photos: use a new output_dir, or resume=false to rebuild this store")
        self.gone_paths = sorted(gone)  # in the store, no longer listed: kept (reported by validation)

        def damage(row: dict) -> str | None:  # the validator's checks (store/validate.py), on one entry
            try:
                entry = StoreEntry.from_dict(row)
            except (KeyError, TypeError, ValueError) as exc:
                return f"malformed entry ({type(exc).__name__}: {exc})"
            if not entry.ok:
                return None
            return entry.problem() or mask_png_problem(self.mask_file(entry.path), entry.width, entry.height)

        kept = [r for r in rows if r["path"] in listed and r["path"] not in retry]
        self.repaired = {r["path"]: why for r, why in zip(kept, parallel_map(damage, kept)) if why}
        if self.repaired and self.rank == 0:
            shown = [f"{p} ({why})" for p, why in sorted(self.repaired.items())]
            log.warning("store %s: %d damaged entr%s localized again: %s", self.out_dir, len(shown),
                        "y is" if len(shown) == 1 else "ies are", examples(shown, show=_SHOW))
        self.retry_paths = retry | set(self.repaired)
        self._done -= self.retry_paths

    def _fingerprint(self, path: str) -> str | None:
        if self.image_root is None:
            return None
        from occon_plugin.images import file_fingerprint

        try:
            return file_fingerprint(self.image_root / path)
        except OSError:
            return None

    def check_source(self, path: str, fingerprint_read: str | None) -> None:
        """Raise :class:`ImageChangedError` when the image file ``path`` no longer is the content whose
        fingerprint was ``fingerprint_read`` (None: the file could not be read then). No-op before
        :meth:`attach_images`."""
        if self.image_root is None:
            return
        now = self._fingerprint(path)
        if now != fingerprint_read:
            raise ImageChangedError(path, f"{self.image_root / path} changed while it was being localized (read as "
                                          f"{fingerprint_read or 'unreadable'}, now {now or 'unreadable'})")

    # ---- setup -------------------------------------------------------------------------
    def _read_manifest(self) -> dict | None:
        path = self.out_dir / MANIFEST_FILE
        if not path.exists():
            return None
        try:
            manifest = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise StoreFolderError(f"{path} is not valid JSON ({exc}); use a new output_dir or resume=false "
                                   f"to rebuild the store") from exc
        if not isinstance(manifest, dict):
            raise StoreFolderError(f"{path} is not an occon store manifest; choose another output_dir")
        return manifest

    def _lock(self) -> None:
        """Take the store's lock (rank 0) or raise :class:`StoreBusyError` naming the holder."""
        try:
            import fcntl
        except ImportError:  # not POSIX: no lock
            return
        path = self.out_dir / LOCK_FILE
        fh = open(path, "a+")
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            fh.seek(0)
            holder = " ".join(fh.read().split()) or "unknown"
            fh.close()
            raise StoreBusyError(f"store {self.out_dir} is being written by another run (process {holder}; it holds "
                                 f"{path}): wait for it to finish, or choose another output_dir") from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"{os.getpid()} on {socket.gethostname()}\n")
        fh.flush()
        self._lock_fh = fh

    def _unlock(self) -> None:
        fh, self._lock_fh = self._lock_fh, None
        if fh is not None:
            fh.close()  # closing the file releases the flock (the file itself stays: no unlink race)

    def _prepare(self, resume: bool) -> None:
        manifest = self._read_manifest()
        if manifest is not None and manifest.get("schema") != SCHEMA_NAME:
            raise StoreFolderError(f"{self.out_dir} holds a manifest.json that is not an occon store; "
                                   f"choose another output_dir")
        if self.out_dir.exists() and not self.out_dir.is_dir():
            raise StoreFolderError(f"output_dir {self.out_dir} is a file; choose a new or empty folder")
        if manifest is None and self.out_dir.exists() and any(not _start_leftover(p.name)
                                                              for p in self.out_dir.iterdir()):
            raise StoreFolderError(f"output_dir {self.out_dir} exists, is not empty and is not an occon store; "
                                   f"choose a new or empty folder")
        make_output_dir(self.out_dir)
        self._lock()
        manifest = self._read_manifest()  # again, under the lock (a run that started first may have made it)
        if manifest is None:  # a run killed before its first manifest was in place: nothing else was written
            for leftover in self.out_dir.iterdir():
                if leftover.name != LOCK_FILE and _start_leftover(leftover.name):
                    leftover.unlink(missing_ok=True)
        if manifest is not None and not resume:
            self._clear()  # resume=false: start over, deleting only what a store consists of
            manifest = None
        if manifest is not None:
            self._check_manifest(manifest)
            for folder in (MASK_DIR, *EXTRA_DIRS):  # what a run killed mid-write left (atomic_path temporaries)
                remove_temp_files(self.out_dir / folder)
            for leftover in self.out_dir.iterdir():  # ... and a kill while close() rewrote the index / manifest
                if leftover.name.startswith((f".{MANIFEST_FILE}.", f".{INDEX_FILE}.")) and is_temp_file(leftover.name):
                    leftover.unlink(missing_ok=True)
            if manifest.get("complete"):  # finishing again (e.g. more images): marked incomplete at the
                self._reopen = manifest   # first write, so a refused resume leaves the store as it was
            return
        make_output_dir(self.out_dir)
        atomic_write_json(self.out_dir / MANIFEST_FILE, self._manifest(complete=False))

    def _clear(self) -> None:
        shutil.rmtree(self.out_dir / MASK_DIR, ignore_errors=True)
        for folder in EXTRA_DIRS:
            shutil.rmtree(self.out_dir / folder, ignore_errors=True)
        for p in [self.out_dir / INDEX_FILE, self.out_dir / MANIFEST_FILE, *self.out_dir.glob(RANK_INDEX_GLOB)]:
            p.unlink(missing_ok=True)

    def _check_manifest(self, manifest: dict | None) -> None:
        if manifest is None:
            raise StoreFolderError(f"{self.out_dir / MANIFEST_FILE} missing: rank 0 must create the store first")
        if manifest.get("schema_version") == 1:
            raise StoreSettingsMismatchError(
                f"store {self.out_dir} was written before stores recorded image fingerprints (schema v1): its "
                f"entries cannot be verified against the images, so it is not resumed; rebuild it with resume=false "
                f"(or use a new output_dir)")
        if manifest.get("schema_version") != SCHEMA_VERSION:
            raise StoreSettingsMismatchError(
                f"store {self.out_dir} has schema version {manifest.get('schema_version')}, this code writes "
                f"{SCHEMA_VERSION}; use a new output_dir or resume=false to rebuild it")
        diffs = sorted(k for k in set(manifest.get("settings", {})) | set(self.settings)
                       if manifest.get("settings", {}).get(k) != self.settings.get(k))
        if manifest.get("model_sha256") != self.model_hash:
            diffs.insert(0, "model (checkpoint sha256)")
        if diffs:
            raise StoreSettingsMismatchError(
                f"store {self.out_dir} was started with different settings ({', '.join(diffs)}); "
                f"resuming would mix results. Use a new output_dir, the same settings, or resume=false to rebuild")

    def _manifest(self, complete: bool, **extra) -> dict:
        return {"schema": SCHEMA_NAME, "schema_version": SCHEMA_VERSION, "complete": complete,
                "model_sha256": self.model_hash, "settings": self.settings, **extra}

    @staticmethod
    def _cut_torn_tail(path: Path) -> None:
        _, good_end = read_index_lines(path)
        if path.exists() and path.stat().st_size != good_end:
            with open(path, "r+b") as fh:
                fh.truncate(good_end)

    def _index_files(self) -> list[Path]:
        return [self.out_dir / INDEX_FILE, *sorted(self.out_dir.glob(RANK_INDEX_GLOB))]

    def _read_done(self) -> set[str]:
        done = set()
        for path in self._index_files():
            rows, _ = read_index_lines(path)
            done.update(r["path"] for r in rows)
        return done - self.retry_paths

    # ---- writing -----------------------------------------------------------------------
    def done_paths(self) -> set[str]:
        """Images already in the store (from every rank's index), for resuming."""
        return set(self._done)

    def refresh_done(self) -> set[str]:
        """Re-read every index file (other ranks may have written since)."""
        self._done = self._read_done()
        return self.done_paths()

    def mask_file(self, path: str) -> Path:
        return self.out_dir / mask_relpath(path)

    def write(self, entry: StoreEntry, mask_u8: np.ndarray | None, mask_png: bytes | None = None, *,
              fingerprint_read=_NOW) -> None:
        """Write one image: its mask (None for a failed image) then its index line.

        The mask comes as a uint8 ``height x width`` array, or already encoded as ``mask_png`` (8-bit
        grayscale PNG bytes of that size, e.g. from a worker process: its header is checked).

        After :meth:`attach_images` the entry records an image fingerprint. ``fingerprint_read``: the
        fingerprint of the bytes the entry was computed from (:func:`occon_plugin.images.read_image`;
        None: the file could not be read); when the file now differs, :class:`ImageChangedError` is
        raised and nothing is written (so an entry never carries another content's fingerprint). Left
        out, the caller vouches that the entry was computed from the file as it is now."""
        if entry.path in self._done:
            raise ValueError(f"{entry.path} is already in the store {self.out_dir}")
        if fingerprint_read is not _NOW:
            self.check_source(entry.path, fingerprint_read)
            entry.fingerprint = fingerprint_read
        if self._reopen is not None:  # a finished store gets new entries: incomplete until close()
            self._reopen["complete"] = False
            atomic_write_json(self.out_dir / MANIFEST_FILE, self._reopen)
            self._reopen = None
        if mask_u8 is not None and mask_png is not None:
            raise ValueError("give the mask as an array or as PNG bytes, not both")
        if mask_u8 is not None:
            if mask_u8.shape != (entry.height, entry.width):
                raise ValueError(f"mask for {entry.path} is {mask_u8.shape}, image is "
                                 f"{entry.height}x{entry.width} (height x width)")
            mask_png = encode_mask_png(mask_u8)
        elif mask_png is not None:
            header = png_size(mask_png)
            if header != (entry.width, entry.height, 8, 0):
                raise ValueError(f"mask PNG for {entry.path} has header (width, height, depth, colour) {header}, "
                                 f"expected ({entry.width}, {entry.height}, 8, 0)")
        if mask_png is not None:
            atomic_write_bytes(self.mask_file(entry.path), mask_png)
        elif entry.ok:
            raise ValueError(f"entry {entry.path} has status ok but no mask")
        if entry.fingerprint is None and self.image_root is not None:
            entry.fingerprint = self._fingerprint(entry.path)
        try:
            self._fh.write((entry.to_json() + "\n").encode())
            self._fh.flush()
            os.fsync(self._fh.fileno())
        except OSError as exc:
            if exc.errno in OUTPUT_ERRNOS:
                raise output_error(self._index_path, exc) from exc
            raise
        self._done.add(entry.path)
        self.retry_paths.discard(entry.path)

    def abandon(self) -> None:
        """Stop writing without finishing: close the index file and release the lock, as a killed run
        would (the store stays incomplete; a rerun resumes it). Idempotent."""
        if not self._fh.closed:
            self._fh.close()
        self._unlock()

    def close(self, **extra) -> dict | None:
        """Rank 0: merge all index files, sort by path, write the final manifest (atomically), release the lock.

        ``extra`` (JSON-able) goes into the manifest, e.g. ``listed=<number of images listed>``.
        Other ranks only close their file. Returns the manifest on rank 0.
        """
        self._fh.close()
        if self.rank != 0:
            return None
        try:
            return self._finish(extra)
        finally:
            self._unlock()

    def _finish(self, extra: dict) -> dict:
        merged: dict[str, dict] = {}
        rank_files = sorted(self.out_dir.glob(RANK_INDEX_GLOB))
        for path in [self.out_dir / INDEX_FILE, *rank_files]:
            for row in read_index_lines(path)[0]:
                merged[row["path"]] = row  # the last line of an image wins (a retried bad image)
        rows = [StoreEntry.from_dict(merged[p]) for p in sorted(merged)]
        atomic_write_bytes(self.out_dir / INDEX_FILE, "".join(r.to_json() + "\n" for r in rows).encode())
        for path in rank_files:
            path.unlink()
        skipped = [{"path": r.path, "status": r.status} for r in rows if not r.ok]
        counts = {"written": len(rows), "ok": len(rows) - len(skipped), "skipped": len(skipped)}
        manifest = self._manifest(complete=True, counts=counts, skipped_images=skipped, **extra)
        atomic_write_json(self.out_dir / MANIFEST_FILE, manifest)
        return manifest

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.abandon()
