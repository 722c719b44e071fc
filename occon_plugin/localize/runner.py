"""Localize a dataset into a mask store: seeded global batches -> ContraCAM -> (CRF) -> boxes/bg -> store.

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
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from occon_plugin.errors import ConfigError, DataError, OcconError
from occon_plugin.images import ImageList, ReadImage, list_images, read_image
from occon_plugin.localize.crf import CrfParams
from occon_plugin.localize.finish import (CrfRun, Finished, FinishPool, FinishRules, exit_if_importing_main,
                                          resolve_post_workers)
from occon_plugin.localize.refine import cam_masks, input_u8
from occon_plugin.localize.presets import apply_preset
from occon_plugin.models import load_cam_model
from occon_plugin.store import ImageChangedError, StoreEntry, StoreWriter, find_mask_collisions
from occon_plugin.store.format import atomic_write_bytes

log = logging.getLogger(__name__)


@dataclass
class DataSettings:
    path: str = "???"               # image folder or COCO json
    image_root: Optional[str] = None  # COCO only: folder of the json's file_names
    workers: int = 4                # threads decoding images


@dataclass
class CamSettings:
    """ContraCAM settings. ``None`` = decided by the preset (``occon_plugin.localize.presets``)."""

    iters: Optional[int] = None             # T
    nsr: Optional[bool] = None              # negative-signal removal (ReLU on the channel weights)
    expand: Optional[bool] = None           # expansion trick (stride 1 in the last stage, inference only)
    dilate: Optional[bool] = None           # with expand: dilation 2 in the later convolutions (DeepLab-style)
    temperature: Optional[float] = None     # tau of Eq. (1)
    early_exit_tol: Optional[float] = None  # stop re-encoding an image once its mask moves less (0: fixed T)
    fill: Optional[str] = None              # colour masked pixels fade to: mean, black
    flip: Optional[bool] = None             # test-time flip: mean of the masks of the image and its mirror


CRF_RESOLUTIONS = ("input", "image")


@dataclass
class CrfSettings(CrfParams):
    """The CRF's own parameters (:class:`CrfParams`, pydensecrf's defaults) plus how to run it; the keys
    set to None here are decided by the preset."""

    bilateral_srgb: Optional[float] = None     # colour width of the bilateral kernel (pydensecrf: 13)
    bilateral_compat: Optional[float] = None   # weight of the bilateral kernel (pydensecrf: 10)
    enabled: Optional[bool] = None          # None: the preset decides
    resolution: Optional[str] = None        # input: on the image_size^2 model input (authors); image: image size


@dataclass
class LocalizeSettings:
    data: DataSettings = field(default_factory=DataSettings)
    output_dir: str = "???"
    model: str = "efficientnet-lite0"
    preset: str = "auto"            # auto (the model's measured preset), paper, bg_mixup, ... (presets.py)
    cam: CamSettings = field(default_factory=CamSettings)
    crf: CrfSettings = field(default_factory=CrfSettings)
    threshold: float = 0.5          # box binarization of the stored mask (CRF marginal: 0.5 = MAP label)
    bg_threshold: float = 0.2       # background = stored mask < bg_threshold
    box_margin: float = 0.2
    min_box_area: float = 0.01
    min_box_area_before_margin: bool = True  # the area test on the region's own box (the authors'), not with margin
    batch_size: int = 64
    image_size: int = 224
    device: str = "auto"
    seed: int = 0
    threads: Optional[int] = None   # torch CPU threads (None: torch's default)
    sub_batch: Optional[int] = None  # images per backbone forward (None: 8 on CPU, the whole batch on GPU)
    post_workers: Optional[int] = None  # processes for resize, CRF, boxes, PNG (None: the cores the backbone leaves free)
    overlays: bool = False
    soft_masks: bool = False        # also write soft/<image>.png: the mask before the CRF (same size, 8-bit)
    resume: bool = True
    progress: bool = True


def check_settings(s: LocalizeSettings) -> None:
    """Range checks that types alone cannot express; each error names its key."""
    def need(ok: bool, key: str, what: str, value) -> None:
        if not ok:
            raise ConfigError(f"{key}={value!r} is invalid: {what}")

    need(isinstance(s.data.path, str) and s.data.path not in ("", "???"), "data.path",
         "give an image folder or a COCO json", s.data.path)
    need(isinstance(s.output_dir, str) and s.output_dir not in ("", "???"), "output_dir",
         "give the store folder to write", s.output_dir)
    # None = left to the preset (checked again once the preset has filled it in)
    need(s.cam.iters is None or s.cam.iters >= 1, "cam.iters", "must be >= 1", s.cam.iters)
    need(s.cam.temperature is None or s.cam.temperature > 0, "cam.temperature", "must be > 0", s.cam.temperature)
    need(s.cam.fill in (None, "mean", "black"), "cam.fill", "use mean or black", s.cam.fill)
    need(s.crf.resolution in (None, *CRF_RESOLUTIONS), "crf.resolution", "use input (the image_size^2 model input, "
         "as the authors) or image (the image's own size)", s.crf.resolution)
    need(isinstance(s.preset, str) and bool(s.preset), "preset", "use auto or a preset name", s.preset)
    need(s.cam.early_exit_tol is None or s.cam.early_exit_tol >= 0, "cam.early_exit_tol", "must be >= 0 or null",
         s.cam.early_exit_tol)
    need(s.data.workers >= 1, "data.workers", "must be >= 1", s.data.workers)
    for key, value, what in s.crf.problems():  # one rule with crf_refine (a width of 0 crashes pydensecrf)
        need(False, f"crf.{key}", what, value)
    need(s.post_workers is None or s.post_workers >= 0, "post_workers", "must be >= 0 (0: in the main process) "
         "or null (the cores the backbone leaves free)", s.post_workers)
    need(0.0 < s.threshold <= 1.0, "threshold", "must be in (0, 1]", s.threshold)
    need(0.0 < s.bg_threshold <= 1.0, "bg_threshold", "must be in (0, 1]", s.bg_threshold)
    need(s.box_margin >= 0, "box_margin", "must be >= 0", s.box_margin)
    need(0.0 <= s.min_box_area < 1.0, "min_box_area", "must be in [0, 1)", s.min_box_area)
    need(s.batch_size >= 2, "batch_size", "must be >= 2 (the other images of a batch are the negatives)",
         s.batch_size)
    need(s.image_size >= 32, "image_size", "must be >= 32", s.image_size)
    need(s.threads is None or s.threads >= 1, "threads", "must be >= 1 or null", s.threads)
    need(s.sub_batch is None or s.sub_batch >= 1, "sub_batch", "must be >= 1 or null", s.sub_batch)
    need(s.device in ("auto", "cpu") or s.device.startswith("cuda"), "device", "use auto, cpu, cuda or cuda:N",
         s.device)


def result_settings(s: LocalizeSettings) -> dict:
    """The settings that change what is written (compared when resuming; recorded in the manifest)."""
    crf = asdict(s.crf)
    return {"preset": s.preset, "cam": asdict(s.cam), "crf": crf, "threshold": s.threshold, "bg_threshold": s.bg_threshold,
            "box_margin": s.box_margin, "min_box_area": s.min_box_area,
            "min_box_area_before_margin": s.min_box_area_before_margin, "batch_size": s.batch_size,
            "image_size": s.image_size, "seed": s.seed}


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
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device={name!r} but CUDA is not available here; use device=cpu or device=auto")
    return torch.device(name)


def model_fingerprint(spec: str, model: torch.nn.Module) -> str:
    """sha256 of the checkpoint file, or of the state dict (names + bytes) for zoo names."""
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


def make_batches(n_images: int, batch_size: int, seed: int) -> list[np.ndarray]:
    """Seeded permutation cut into batches; the last one topped up from the permutation's start."""
    order = np.random.default_rng(seed).permutation(n_images)
    batches = [order[i:i + batch_size] for i in range(0, n_images, batch_size)]
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
        self.rules = FinishRules(
            crf=CrfRun(enabled=bool(s.crf.enabled), resolution=str(s.crf.resolution)),
            crf_params=CrfParams(**{k: v for k, v in asdict(s.crf).items() if k not in ("enabled", "resolution")}),
            threshold=s.threshold, bg_threshold=s.bg_threshold, box_margin=s.box_margin,
            min_box_area=s.min_box_area, min_box_area_before_margin=s.min_box_area_before_margin,
            soft_masks=s.soft_masks, overlays=s.overlays)
        self.n_ok = self.n_bad = self.n_new = 0
        self.changed: set[str] = set()  # images whose file changed between their read and their write: redone
        self.batch_forwards: list[int] = []  # backbone image-forwards per batch (top-up images included)
        # wall seconds of the main process, summed: waiting for finished images overlaps nothing
        self.stage_seconds = {"read": 0.0, "cam": 0.0, "submit": 0.0, "wait": 0.0, "write": 0.0}
        self.pending: deque = deque()  # per batch: [(path, future of Finished)]
        self.keep = 1 if pool.workers > 0 else 0  # batches left in flight while the next one is computed
        self.order = np.random.default_rng(s.seed).permutation(len(images))
        self.readers = ThreadPoolExecutor(max_workers=max(1, s.data.workers))

    def _read(self, index: int) -> ReadImage:
        """The file read once: pixels (or why not) and the fingerprint of the bytes decoded."""
        return read_image(self.images.root, self.images.paths[index])

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
        x = torch.stack([to_model_input(img, self.s.image_size) for img in loaded]).to(self.device)
        clock = self._lap("read", clock)
        result = cam_masks(self.model, x, self.s.cam, sub_batch=self.s.sub_batch)
        self.batch_forwards.append(int(result.iterations.sum()))
        cams = result.mask[targets, 0].detach().float().cpu().numpy()
        crf_rgb: list = [None] * len(targets)
        if self.rules.crf.enabled:
            crf_rgb = (input_u8(x[targets]) if self.rules.crf.resolution == "input" else [loaded[k] for k in targets])
        clock = self._lap("cam", clock)
        self.pending.append([
            (self.images.paths[members[k][0]], read_fps[k],
             self.pool.submit(cams[i], *loaded[k].shape[:2], crf_rgb[i], loaded[k] if self.s.overlays else None,
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
        stem = Path(path).with_suffix(".png")
        try:
            self.writer.check_source(path, fingerprint)
            # soft mask and overlay before the index entry: a run stopped in between (disk full, Ctrl-C) redoes the image
            if done.soft_png is not None:  # the pre-CRF soft mask too (e.g. for MaxBoxAccV2 on the CAM)
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


def run_localize(s: LocalizeSettings) -> dict:
    """Localize ``s.data.path`` into the store ``s.output_dir``; returns a summary (rank 0: with the manifest).

    With ``torch.distributed`` initialised, every rank calls this; ranks take disjoint whole batches
    and rank 0 merges the index into one store.
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
    model = load_cam_model(s.model, device)
    s = copy.deepcopy(s)  # the preset fills the unset keys of a copy; the caller's settings stay as given
    apply_preset(s, model.spec)
    check_settings(s)
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
        return _localize(s, images, model, device, writer, rank, world)
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


def _localize(s: LocalizeSettings, images: ImageList, model, device, writer: StoreWriter, rank: int,
              world: int) -> dict:
    writer.attach_images(images.root, images.paths)  # entries from other files than these: refuse, naming them
    _barrier(world)  # every rank has cut its torn tail before anyone reads the done set
    done = writer.refresh_done()

    batches = make_batches(len(images), s.batch_size, s.seed)
    mine = []
    for b, batch in enumerate(batches):
        n_members = min(s.batch_size, len(images) - b * s.batch_size)
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
    manifest = writer.close(listed=len(images), model=s.model, data=s.data.path, world_size=world,
                            device=str(device), software={"torch": torch.__version__}, **extra)
    _barrier(world)
    summary = {"store": str(Path(s.output_dir)), "listed": len(images), "already_done": len(done),
               "written_ok": localizer.n_ok, "written_bad": localizer.n_bad, "seconds": round(seconds, 2),
               "rank": rank, "world_size": world, "preset": s.preset, "post_workers": workers, "settings": result_settings(s),
               "forwards": int(sum(localizer.batch_forwards)), "batch_forwards": localizer.batch_forwards,
               "stage_seconds": {k: round(v, 2) for k, v in localizer.stage_seconds.items()}, "not_listed": images.skipped,
               "changed_during_run": changed, "redone_damaged": dict(sorted(writer.repaired.items()))}
    if manifest is not None:
        summary["manifest"] = manifest
    return summary
