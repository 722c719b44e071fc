"""Localize a dataset into a mask store: seeded global batches -> ContraCAM -> refinement -> boxes/bg -> store.

Batches are a seeded permutation of all images cut into ``batch_size`` pieces; each image's
negatives are the rest of its batch, so a batch never depends on how many ranks run: rank ``r``
of ``w`` takes batches ``r, r + w, ...``. The last batch is topped up to ``batch_size`` with the
first images of the permutation, used as negatives only (their own batch writes them); a batch
left with fewer than two readable images borrows negatives the same way. A resumed run skips batches whose
images are all written and recomputes partly written ones with the same members.
"""
from __future__ import annotations

import copy
import hashlib
import logging
import sys
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from occon_plugin.errors import ConfigError, DataError, OcconError
from occon_plugin.images import ImageList, ReadImage, file_fingerprint, list_images, read_image
from occon_plugin.localize.finish import (STAGES, Finished, FinishPool, FinishRules, exit_if_importing_main,
                                          resolve_post_workers)
from occon_plugin.localize.presets import apply_preset, preset
from occon_plugin.localize.refine import cam_masks, input_u8
from occon_plugin.localize.refiners import (DEFAULT_MAX_PIXELS, canonical_method, explicit_params, parse_method,
                                            unused_params)
from occon_plugin.localize.settings import (CamSettings, DataSettings, LocalizeSettings,  # noqa: F401 (re-exported)
                                            check_settings)
from occon_plugin.models import load_cam_model
from occon_plugin.store import ImageChangedError, StoreEntry, StoreWriter, find_mask_collisions
from occon_plugin.store.format import atomic_write_bytes

log = logging.getLogger(__name__)


def result_settings(s: LocalizeSettings) -> dict:
    """The settings that change what is written (compared when resuming; recorded in the manifest)."""
    steps = parse_method(s.refine.method) if s.refine.method is not None else ()
    refine = {"method": s.refine.method, "resolution": s.refine.resolution,
              **{name: asdict(getattr(s.refine, name)) for name in steps}}  # only the parameters in use
    return {"preset": s.preset, "cam": s.cam.record(), "refine": refine, "threshold": s.threshold, "bg_threshold": s.bg_threshold,
            "box_margin": s.box_margin, "min_box_area": s.min_box_area,
            "min_box_area_before_margin": s.min_box_area_before_margin, "batch_size": s.batch_size,
            "image_size": s.image_size, "seed": s.seed,
            **({"use_momentum": True} if s.use_momentum else {}),  # absent when false: older stores still resume
            **({"precision": s.precision} if s.precision != "fp32" else {})}  # likewise


def keep_freed_memory() -> bool:
    """Ask glibc's malloc to keep freed blocks below 1 GiB (no ``mmap``/``munmap`` or heap trimming per
    allocation): the backbone's large activations are then reused across forwards instead of being
    mapped, zero-filled by the kernel and returned on every forward (on CPU that page-fault work cost
    more system time than the convolutions' user time; docs/benchmarks.md). Process-wide and only on
    glibc; returns whether it was applied."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    if not name or "libc" not in name:
        return False
    try:
        libc = ctypes.CDLL(name)
        m_trim_threshold, m_mmap_threshold = -1, -3
        return bool(libc.mallopt(m_mmap_threshold, 1 << 30)) and bool(libc.mallopt(m_trim_threshold, 1 << 30))
    except (OSError, AttributeError):
        return False


def resolve_device(name: str) -> torch.device:
    """``auto``, ``cpu``, ``cuda`` or ``cuda:N`` -> a torch device.

    Raises:
        ConfigError: a CUDA device asked for where CUDA is not available.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device={name!r} but CUDA is not available here; use device=cpu or device=auto")
    return torch.device(name)


def model_fingerprint(spec: str, model: Optional[torch.nn.Module]) -> str:
    """sha256 of the checkpoint file (``model`` unused: may be None), or of the state dict (names + bytes) for zoo names."""
    digest = hashlib.sha256()
    if Path(spec).is_file():
        with open(spec, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
        return digest.hexdigest()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def make_batches(n_images: int, batch_size: int, seed: int, subset=None) -> list[np.ndarray]:
    """Seeded permutation cut into batches; the last one topped up from the permutation's start.
    ``subset`` (image indexes): only those, in the permutation's order (the same seed, the same order)."""
    order = np.random.default_rng(seed).permutation(n_images)
    if subset is not None:
        order = order[np.isin(order, np.asarray(sorted(subset), dtype=order.dtype))]
    batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    if len(batches) > 1 and len(batches[-1]) < batch_size:
        short = batch_size - len(batches[-1])
        batches[-1] = np.concatenate([batches[-1], order[:short]])
    return batches


def _dist_info() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def _barrier(world_size: int) -> None:
    if world_size > 1:
        torch.distributed.barrier()


REDO_ROUNDS = 2  # images whose file changed during the run are localized again at most this often


def to_model_input(image: np.ndarray, size: int) -> torch.Tensor:
    """uint8 HWC image -> float (3, size, size) in [0, 1] (antialiased bilinear), the ContraCAM input."""
    x = torch.from_numpy(image).permute(2, 0, 1).unsqueeze(0).float().div_(255.0)
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return x.clamp_(0.0, 1.0)[0]




class _Localizer:
    """One rank's loop: read a batch, ContraCAM it here, hand each image to the :class:`FinishPool` and
    write the previous batch's finished images (their post-processing overlapped this batch's CAMs)."""

    def __init__(self, s: LocalizeSettings, images: ImageList, model, device, writer: StoreWriter, pool: FinishPool):
        self.s, self.images, self.model, self.device = s, images, model, device
        self.writer, self.pool = writer, pool
        self.rules = FinishRules.from_settings(s)
        self.n_ok = self.n_bad = self.n_new = 0
        self.changed: set[str] = set()  # images whose file changed between their read and their write: redone
        self.batch_forwards: list[int] = []  # backbone image-forwards per batch (top-up images included)
        # wall seconds of the main process, summed: waiting for finished images overlaps nothing
        self.stage_seconds = {"read": 0.0, "cam": 0.0, "submit": 0.0, "wait": 0.0, "write": 0.0}
        # CPU seconds summed over images: decoding (reader threads) and each post-processing stage (workers)
        self.cpu_seconds = {"decode": 0.0, "model_input": 0.0, **{k: 0.0 for k in STAGES}}
        self.cpu_lock = threading.Lock()
        self.pending: deque = deque()  # per batch: [(path, future of Finished)]
        self.keep = 1 if pool.workers > 0 else 0  # batches left in flight while the next one is computed
        self.order = np.random.default_rng(s.seed).permutation(len(images))
        self.readers = ThreadPoolExecutor(max_workers=max(1, s.data.workers))

    def _read(self, index: int) -> ReadImage:
        """The file read once: pixels (or why not) and the fingerprint of the bytes decoded."""
        clock = time.thread_time()
        try:
            return read_image(self.images.root, self.images.paths[index])
        finally:
            with self.cpu_lock:  # reader threads
                self.cpu_seconds["decode"] += time.thread_time() - clock

    def _record_bad(self, read: ReadImage, index: int) -> None:
        path = self.images.paths[index]
        if path not in self.writer.done_paths():
            try:
                self.writer.write(StoreEntry(path=path, width=0, height=0, boxes=[], bg_rect=None,
                                             status=f"bad_image: {read.error.reason}"), None,
                                  fingerprint_read=read.fingerprint)
            except ImageChangedError as err:
                self.changed.add(path)  # being written right now? read again at the end of the run
                log.info("%s", err)
                return
            log.warning("skipping %s", read.error)
            self.n_bad += 1
            self.n_new += 1

    def run_batch(self, batch: np.ndarray, n_members: int) -> int:
        """Localize one batch; only the first ``n_members`` entries are written (the rest are top-up).
        Returns how many entries (masks and bad images) were written by this call (finished images of
        earlier batches included)."""
        done = self.writer.done_paths()
        self.n_new = 0
        members, loaded, read_fps = [], [], []
        clock = time.perf_counter()
        # Decoding runs in threads (PIL releases the GIL); results are used in batch order.
        for k, read in enumerate(self.readers.map(self._read, [int(i) for i in batch])):
            if read.pixels is None:
                if k < n_members:  # a top-up image's own batch records it
                    self._record_bad(read, int(batch[k]))
                continue
            members.append((int(batch[k]), k < n_members))
            loaded.append(read.pixels)
            read_fps.append(read.fingerprint)
        # Fewer than two readable images: borrow more from the start of the permutation as negatives.
        in_batch = set(int(i) for i in batch)
        for index in self.order:
            if len(loaded) >= 2 or len(in_batch) == len(self.order):
                break
            if int(index) in in_batch:
                continue
            in_batch.add(int(index))
            read = self._read(int(index))
            if read.pixels is not None:
                members.append((int(index), False))
                loaded.append(read.pixels)
                read_fps.append(read.fingerprint)
        targets = [k for k, (index, own) in enumerate(members) if own and self.images.paths[index] not in done]
        if not targets:
            return self.n_new + self.drain(self.keep)
        if len(loaded) < 2:
            raise DataError(f"ContraCAM needs at least 2 readable images (the negatives); {self.images.root} has "
                            f"{len(loaded)} of {len(self.images)}: the unreadable ones are listed in "
                            f"{self.writer.out_dir / 'index.jsonl'}")
        cpu = time.thread_time()
        x = torch.stack([to_model_input(img, self.s.image_size) for img in loaded]).to(self.device)
        self.cpu_seconds["model_input"] += time.thread_time() - cpu
        clock = self._lap("read", clock)
        result = cam_masks(self.model, x, self.s.cam, sub_batch=self.s.sub_batch, precision=self.s.precision)
        self.batch_forwards.append(int(result.iterations.sum()))
        cams = result.mask[targets, 0].detach().float().cpu().numpy()
        guides: list = [None] * len(targets)
        if self.rules.refine.enabled:
            guides = (input_u8(x[targets]) if self.rules.refine.resolution == "input" else [loaded[k] for k in targets])
        clock = self._lap("cam", clock)
        self.pending.append([
            (self.images.paths[members[k][0]], read_fps[k],
             self.pool.submit(cams[i], *loaded[k].shape[:2], guides[i], loaded[k] if self.s.overlays else None,
                              self.rules))
            for i, k in enumerate(targets)])
        self._lap("submit", clock)  # post_workers=0: the whole post-processing happens here
        return self.n_new + self.drain(self.keep)

    def drain(self, keep: int = 0) -> int:
        """Write the finished images of all but the newest ``keep`` pending batches, in order; returns
        how many were written."""
        written = 0
        while len(self.pending) > keep:
            for path, fingerprint, future in self.pending.popleft():
                clock = time.perf_counter()
                finished = self.pool.result(future)
                clock = self._lap("wait", clock)
                written += self._write(path, fingerprint, finished)
                self._lap("write", clock)
        return written

    def _lap(self, stage: str, since: float) -> float:
        now = time.perf_counter()
        self.stage_seconds[stage] += now - since
        return now

    def _write(self, path: str, fingerprint: str, done: Finished) -> int:
        """Write one finished image (1), or nothing when its file changed since it was read (0: redone
        at the end of the run, :meth:`redo_changed`)."""
        for stage, secs in done.seconds.items():
            self.cpu_seconds[stage] += secs
        stem = Path(path).with_suffix(".png")
        try:
            self.writer.check_source(path, fingerprint)
            # soft mask and overlay before the index entry: a run stopped in between (disk full, Ctrl-C) redoes the image
            if done.soft_png is not None:  # the soft mask before the refinement too (e.g. for MaxBoxAccV2 on the CAM)
                atomic_write_bytes(self.writer.out_dir / "soft" / stem, done.soft_png)
            if done.overlay_png is not None:
                atomic_write_bytes(self.writer.out_dir / "overlays" / stem, done.overlay_png)
            self.writer.write(StoreEntry(path=path, width=done.width, height=done.height, boxes=done.boxes,
                                         bg_rect=done.bg_rect), None, mask_png=done.mask_png,
                              fingerprint_read=fingerprint)
        except ImageChangedError as err:
            self.changed.add(path)
            log.info("%s", err)
            return 0
        self.n_ok += 1
        return 1

    def redo_changed(self, mine: list, rounds: int = REDO_ROUNDS) -> int:
        """Localize again the images whose file changed while they were localized (their batches, same
        members, the files as they are now), up to ``rounds`` times; returns how many were written. Images
        still changing after that stay in :attr:`changed` (not in the store; the caller reports them)."""
        written = 0
        for _ in range(rounds):
            if not self.changed:
                break
            changed, self.changed = self.changed, set()
            for batch, n_members in mine:
                if any(self.images.paths[i] in changed for i in batch[:n_members]):
                    written += self.run_batch(batch, n_members)
            written += self.drain(0)
        return written


@dataclass(frozen=True)
class Carry:
    """Entries an update of a store keeps from its previous version instead of localizing them again
    (``occon.refresh.fraction``, :mod:`occon_plugin.train.refresh`).

    By batch (``occon.refresh.fraction``): the localization batches (the seeded permutation cut into
    ``batch_size`` pieces) are dealt into ``groups`` groups by batch index ``b % groups``; the batches of group
    ``turn % groups`` are localized, and every image of the other batches keeps the entry and mask of
    ``store``. By image (``keep``, ``occon.refresh.reuse_iou``): the images named in ``keep`` keep theirs, and
    the others are localized in batches of their own (the seeded permutation restricted to them; their
    negatives are each other). Either way an entry is checked against the image file's fingerprint: an image
    that changed is localized again."""

    store: Path   # the previous version: a complete store of the same images
    groups: int   # >= 1 (1: nothing is carried by batch)
    turn: int     # >= 0
    keep: Optional[frozenset] = None  # image paths (relative, as listed) whose entries are kept; then groups=1
    rule: str = "fraction"            # what chose them, recorded in the manifest (carried_from.rule)

    @property
    def carries(self) -> bool:
        return self.groups > 1 or bool(self.keep)


def run_localize(s: LocalizeSettings, carry: Optional[Carry] = None) -> dict:
    """Localize ``s.data.path`` into the store ``s.output_dir``; returns a summary (rank 0: with the manifest).

    ``carry``: keep the entries of the batches outside ``carry``'s group from an earlier store version
    (rank 0 writes them); rank 0's summary ``carried`` counts them and the manifest records ``carried_from``.

    With ``torch.distributed`` initialised, every rank calls this; ranks take disjoint whole batches
    and rank 0 merges the index into one store.

    Raises:
        ConfigError: a setting out of range or an unknown name (preset, variant, model).
        DataError: fewer than 2 images, two images sharing a mask file, none readable, or rank 0's start error.
        DataError (StoreSettingsMismatchError, StoreBusyError, ...): the store cannot be resumed with these
            settings or this data, or another run holds it.
        ResourceError: a post-processing worker died; CheckpointError / MissingDependencyError from the model.
    """
    exit_if_importing_main()  # a worker importing an unguarded script: it ends quietly, the main process says why
    check_settings(s)
    rank, world = _dist_info()
    if s.threads is not None:
        torch.set_num_threads(s.threads)
    images = list_images(s.data.path, s.data.image_root)
    if len(images) < 2:  # before anything is written: no store is left behind
        raise DataError(f"ContraCAM needs at least 2 images (the other images of a batch are the negatives); "
                        f"{images.root} lists {len(images)}: add images to data.path")
    clashes = find_mask_collisions(images.paths)
    if clashes:
        a, b = clashes[0]
        raise DataError(f"{len(clashes)} image pairs would share a mask file (same path but extension), "
                         f"e.g. {a} and {b}; rename them")
    device = resolve_device(s.device)
    if device.type == "cpu":
        keep_freed_memory()
    model = load_cam_model(s.model, device, use_momentum=s.use_momentum)
    s = copy.deepcopy(s)  # the preset fills the unset keys of a copy; the caller's settings stay as given
    given = explicit_params(s.refine)
    method_given = s.refine.method is not None
    apply_preset(s, model.spec)
    check_settings(s)
    unused = unused_params(given, s.refine.method)
    if unused and rank == 0:  # e.g. refine.guided.radius=4 with refine.method=crf: said, not silently dropped
        print(f"[occon] note: {', '.join(unused)} not used: refine.method={s.refine.method} (preset {s.preset}) does "
              f"not run {' or '.join(sorted({k.split('.')[1] for k in unused}))} (to use them, add the method to refine.method)",
              file=sys.stderr, flush=True)
    if method_given and rank == 0:
        # a preset's working-size bound belongs to its own chain (lite: the CRF at 64x64 before fgs): said when
        # another chain inherits it, e.g. refine.method=crf under lite runs the CRF at 64x64 with no fgs after it
        own = canonical_method(preset(s.preset).refine.method)
        for name in parse_method(s.refine.method) if s.refine.method != own else ():
            bound = getattr(s.refine, name).max_pixels
            if f"refine.{name}.max_pixels" not in given and bound is not None and bound < DEFAULT_MAX_PIXELS:
                print(f"[occon] note: refine.method={s.refine.method} takes refine.{name}.max_pixels={bound} from "
                      f"preset {s.preset} (chosen for its {own} chain): {name} runs at <= {bound} pixels; "
                      f"refine.{name}.max_pixels={DEFAULT_MAX_PIXELS} runs it at the model input's size",
                      file=sys.stderr, flush=True)
    model_hash = model_fingerprint(s.model, model)
    settings = result_settings(s)
    error = None
    if rank == 0:
        try:
            writer = StoreWriter(s.output_dir, settings, model_hash, resume=s.resume, rank=0, world_size=world)
        except OcconError as err:  # e.g. another run holds the store: every rank stops with it
            error = err
    _share_error(world, rank, error)
    if rank != 0:
        writer = StoreWriter(s.output_dir, settings, model_hash, rank=rank, world_size=world)
    try:
        return _localize(s, images, model, device, writer, rank, world, carry)
    except BaseException:
        writer.abandon()  # what a killed run leaves (the lock released): the same command resumes
        raise


def _share_error(world: int, rank: int, error: OcconError | None) -> None:
    """Raise rank 0's start error on every rank (the others would wait at the next barrier for ever)."""
    if world > 1:
        box = [None if error is None else str(error)]
        torch.distributed.broadcast_object_list(box, src=0)
        if rank != 0 and box[0] is not None:
            raise DataError(f"rank 0 stopped: {box[0]}")
    if error is not None:
        raise error


def _carry_entries(carry: Carry, writer: StoreWriter, images: ImageList, batches, batch_size: int,
                   done: set) -> tuple[set, Optional[str]]:
    """Write the entries :class:`Carry` keeps (those not in the store yet); returns the paths whose earlier
    entry the store holds (written now or by the resumed run before) and the model fingerprint of the version
    they come from. An image whose file no longer is the earlier entry's is not kept, also when resuming (its
    entry in the store is then a new one: the same images are localized as by the update that stopped)."""
    from occon_plugin.store import Store

    if not carry.carries:
        return set(), None
    old = Store.open(carry.store)
    if carry.keep:
        kept_paths = [p for p in images.paths if p in carry.keep]
    else:
        kept_paths = [images.paths[i] for b, batch in enumerate(batches) if b % carry.groups != carry.turn % carry.groups
                      for i in batch[:min(batch_size, len(images) - b * batch_size)]]
    kept = set()
    for path in kept_paths:
        entry = old.entries.get(path)
        if entry is None:
            continue
        if path in done:  # a resumed update: carried by the run that stopped, unless the file changed since
            try:
                same = entry.fingerprint is None or file_fingerprint(Path(images.root) / path) == entry.fingerprint
            except OSError:
                same = False
            if same:
                kept.add(path)
            continue
        try:
            png = old.mask_file(path).read_bytes() if entry.ok else None
            writer.write(replace(entry), None, mask_png=png, fingerprint_read=entry.fingerprint)
        except (ImageChangedError, OSError):  # changed since, or its mask is gone: localized again
            continue
        kept.add(path)
    return kept, old.manifest.get("model_sha256")


def _localize(s: LocalizeSettings, images: ImageList, model, device, writer: StoreWriter, rank: int,
              world: int, carry: Optional[Carry] = None) -> dict:
    writer.attach_images(images.root, images.paths)  # entries from other files than these: refuse, naming them
    _barrier(world)  # every rank has cut its torn tail before anyone reads the done set
    done = writer.refresh_done()

    batches = make_batches(len(images), s.batch_size, s.seed)
    n_order = len(images)  # images in the batches' permutation (the last batch's top-up is not written)
    resumed = len(done)
    carried, carried_model = 0, None
    if carry is not None:  # rank 0 writes the kept entries; every rank then reads them as done
        kept: Optional[set] = None
        if rank == 0:
            kept, carried_model = _carry_entries(carry, writer, images, batches, s.batch_size, done)
            carried = len(kept)
        if world > 1:  # every rank cuts the same batches
            box = [kept]
            torch.distributed.broadcast_object_list(box, src=0)
            kept = box[0]
        _barrier(world)
        done = writer.refresh_done()
        if carry.keep:  # the kept images are not localized: the others (and any that could not be kept) in batches
            # of their own; the same batches when the update resumes
            subset = [i for i, p in enumerate(images.paths) if p not in kept]
            batches, n_order = make_batches(len(images), s.batch_size, s.seed, subset), len(subset)
    mine = []
    for b, batch in enumerate(batches):
        n_members = min(s.batch_size, n_order - b * s.batch_size)
        if b % world == rank and any(images.paths[i] not in done for i in batch[:n_members]):
            mine.append((batch, n_members))
    todo = sum(sum(images.paths[i] not in done for i in batch[:n]) for batch, n in mine)

    workers = resolve_post_workers(s.post_workers, device.type, torch.get_num_threads(), announce=rank == 0)
    start = time.perf_counter()
    with FinishPool(workers if mine else 0, wait=False) as pool:  # the workers start during the first batch
        workers = pool.workers if mine else workers  # 0 when they cannot start from this main script (stdin)
        localizer = _Localizer(s, images, model, device, writer, pool)
        localizer.stage_seconds["start"] = time.perf_counter() - start  # the worker processes' start
        try:
            with tqdm(total=todo, unit="img", desc=f"localize[{rank}]", disable=not s.progress or rank != 0,
                      dynamic_ncols=True) as bar:
                for batch, n_members in mine:
                    bar.update(localizer.run_batch(batch, n_members))
                bar.update(localizer.drain(0))
                bar.update(localizer.redo_changed(mine))
        finally:
            localizer.readers.shutdown()
    changed = sorted(localizer.changed)
    if world > 1:  # rank 0's manifest names every rank's
        gathered: list = [None] * world
        torch.distributed.all_gather_object(gathered, changed)
        changed = sorted(p for part in gathered for p in part)
    if changed:
        log.warning("%d image(s) kept changing while being localized and are not in the store: %s", len(changed),
                    ", ".join(changed[:5]))
    seconds = time.perf_counter() - start
    _barrier(world)
    extra = {"changed_during_run": changed} if changed else {}
    if carry is not None and carry.carries:  # which entries come from the earlier version's model
        extra["carried_from"] = {"store": str(carry.store), "model_sha256": carried_model, "images": carried,
                                 "rule": carry.rule, "groups": carry.groups, "turn": carry.turn}
    manifest = writer.close(listed=len(images), model=s.model, data=s.data.path, world_size=world,
                            device=str(device), software={"torch": torch.__version__}, **extra)
    _barrier(world)
    summary = {"store": str(Path(s.output_dir)), "listed": len(images), "already_done": resumed,
               "written_ok": localizer.n_ok, "written_bad": localizer.n_bad, "seconds": round(seconds, 2),
               "rank": rank, "world_size": world, "preset": s.preset, "post_workers": workers, "settings": result_settings(s),
               "forwards": int(sum(localizer.batch_forwards)), "batch_forwards": localizer.batch_forwards,
               "stage_seconds": {k: round(v, 2) for k, v in localizer.stage_seconds.items()},
               "cpu_seconds": {k: round(v, 4) for k, v in localizer.cpu_seconds.items()}, "not_listed": images.skipped,
               "changed_during_run": changed, "redone_damaged": dict(sorted(writer.repaired.items())),
               "carried": carried}
    if manifest is not None:
        summary["manifest"] = manifest
    return summary
