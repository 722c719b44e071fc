"""From one image's ContraCAM mask to its store entry, in worker processes that overlap the next batch's CAMs.

``occon-localize`` spends, per image and after the backbone: resizing the mask to the image, the refinement
(``refine.method``: the dense CRF at 224x224 alone is ~45 ms of CPU), the boxes, the background rectangle and
the PNG encoding. :func:`finish_mask` does all of it for one image and returns what the store needs (PNG bytes,
boxes, rectangle) and the CPU time of each stage; :class:`FinishPool` runs it in ``post_workers`` processes
while the main process computes the next batch's CAMs, so on a GPU machine the CPU post-processing no longer
serialises with the GPU, and on a CPU machine the refinement uses every core. Results come back in order and
the main process writes them (one writer: the index stays a single appending file).

Semantics are exactly the in-process ones (tested: a store written with ``post_workers=0`` equals one
written with workers, byte for byte, for every refinement).
"""
from __future__ import annotations

import multiprocessing
import os
import signal
import sys
import threading
import time
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from typing import Optional

import cv2
import numpy as np

from occon_plugin.errors import ResourceError
from occon_plugin.localize.background import largest_empty_rectangle
from occon_plugin.localize.boxes import mask_to_boxes
from occon_plugin.localize.refine import final_mask
from occon_plugin.localize.refiners import RefineRun
from occon_plugin.store.format import encode_mask_png

MAX_AUTO_WORKERS = 8


@dataclass(frozen=True)
class FinishRules:
    """How a CAM becomes a store entry (the localize settings that matter after the backbone)."""

    refine: RefineRun                # refine.method, refine.resolution and the steps' parameters
    threshold: float                 # boxes: regions of the stored mask >= threshold
    bg_threshold: float              # background rectangle: stored mask < bg_threshold
    box_margin: float
    min_box_area: float
    min_box_area_before_margin: bool
    soft_masks: bool = False         # also return the mask before the refinement as PNG
    overlays: bool = False           # also return an overlay PNG (needs the image)

    @staticmethod
    def from_settings(s) -> "FinishRules":
        """The rules of resolved :class:`~occon_plugin.localize.settings.LocalizeSettings` ``s`` (the preset
        applied: no None left in ``s.refine``'s chosen steps).

        Raises:
            ConfigError: an unknown ``refine.method``.
        """
        return FinishRules(refine=RefineRun.from_settings(s.refine), threshold=s.threshold,
                           bg_threshold=s.bg_threshold, box_margin=s.box_margin, min_box_area=s.min_box_area,
                           min_box_area_before_margin=s.min_box_area_before_margin, soft_masks=s.soft_masks,
                           overlays=s.overlays)


@dataclass
class Finished:
    """One image's store entry parts: ``mask_png`` is the stored 8-bit mask (``height x width``)."""

    width: int
    height: int
    boxes: list              # normalized [x1, y1, x2, y2], largest first
    bg_rect: Optional[list]  # half-open pixel [x1, y1, x2, y2] or None
    mask_png: bytes
    soft_png: Optional[bytes] = None
    overlay_png: Optional[bytes] = None
    seconds: dict = field(default_factory=dict)  # CPU seconds of each stage (STAGES) in the thread that ran it


# the stages of finish_mask, timed: resize (the CAM to the image), refine, boxes, background (rectangle), png
STAGES = ("resize", "refine", "boxes", "background", "png")


def overlay_png(image: np.ndarray, mask_u8: np.ndarray, boxes: list) -> bytes:
    """Heat map of ``mask_u8`` over the RGB ``image`` (same size) with the boxes in white, as PNG bytes."""
    heat = cv2.applyColorMap(mask_u8, cv2.COLORMAP_JET)
    out = cv2.addWeighted(cv2.cvtColor(image, cv2.COLOR_RGB2BGR), 0.5, heat, 0.5, 0.0)
    h, w = mask_u8.shape
    for x1, y1, x2, y2 in boxes:
        cv2.rectangle(out, (int(x1 * w), int(y1 * h)), (int(x2 * w) - 1, int(y2 * h) - 1), (255, 255, 255), 2)
    return cv2.imencode(".png", out)[1].tobytes()


def finish_mask(cam: np.ndarray, height: int, width: int, guide: Optional[np.ndarray],
                image: Optional[np.ndarray], rules: FinishRules) -> Finished:
    """One image: ``cam`` (S,S) float32 in [0,1] (ContraCAM at the model input size) -> :class:`Finished`.

    ``guide``: the uint8 RGB picture the refinement sees (S x S x 3 for ``refine.resolution=input``, the image
    for ``image``; None without refinement); ``image``: the uint8 RGB image (only for overlays). The stored
    mask is :func:`~occon_plugin.localize.refine.final_mask`; boxes and the background rectangle come from the
    stored (8-bit) mask, so anyone can recompute them from the store. ``Finished.seconds``: the CPU time
    (``time.thread_time``) of each stage: exact in a worker process, which runs single-threaded.
    """
    clock, seconds = time.thread_time(), {}

    def lap(stage: str) -> None:
        nonlocal clock
        now = time.thread_time()
        seconds[stage] = seconds.get(stage, 0.0) + now - clock
        clock = now

    soft_u8, mask_u8 = final_mask(cam, height, width, guide, rules.refine, soft=rules.soft_masks, lap=lap)
    mask = mask_u8.astype(np.float32) / np.float32(255.0)
    boxes = mask_to_boxes(mask, rules.threshold, rules.box_margin, rules.min_box_area,
                          rules.min_box_area_before_margin)
    lap("boxes")
    rect = largest_empty_rectangle(mask >= rules.bg_threshold)
    lap("background")
    mask_png = encode_mask_png(mask_u8)
    soft_png = encode_mask_png(soft_u8) if rules.soft_masks else None
    lap("png")
    return Finished(width=width, height=height, boxes=boxes, bg_rect=None if rect is None else list(rect),
                    mask_png=mask_png, soft_png=soft_png,
                    overlay_png=overlay_png(image, mask_u8, boxes) if rules.overlays and image is not None else None,
                    seconds=seconds)


def default_post_workers(device_type: str = "cuda", torch_threads: int = 0) -> int:
    """``post_workers=null``: the CPU cores the backbone leaves free, at most :data:`MAX_AUTO_WORKERS`.

    The cores this process may use are shared among the ranks of this machine (``LOCAL_WORLD_SIZE``). With
    the backbone on a GPU every one of them is free; on the CPU its forwards already use ``torch_threads``
    of them (torch's intra-op threads), and workers on the same cores only take time from the forwards
    (measured on 2 cores: ``docs/benchmarks.md``), so only the cores beyond those get a worker (0: the
    post-processing runs in the main process)."""
    cores = usable_cores()
    ranks = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1))
    free = max(1, cores // ranks)
    if device_type == "cpu":
        free -= max(1, torch_threads)
    return max(0, min(MAX_AUTO_WORKERS, free))


def usable_cores() -> int:
    """The CPU cores this process may run on (its affinity mask; ``os.cpu_count()`` where there is none)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def resolve_post_workers(requested: Optional[int], device_type: str = "cuda", torch_threads: int = 0,
                         announce: bool = True) -> int:
    """The number of post-processing processes to start for ``post_workers=requested``.

    ``None``: :func:`default_post_workers`. An explicit number above the cores this process may use
    (:func:`usable_cores`, shared among the ranks of this machine, ``LOCAL_WORLD_SIZE``) is capped to them,
    with one line on stderr saying so (``announce``): more processes than cores cannot run at once, and each
    one holds its own copy of the libraries (~200 MB). The store is the same whatever the number (byte for byte)."""
    if requested is None:
        return default_post_workers(device_type, torch_threads)
    ranks = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1))
    cores = max(1, usable_cores() // ranks)
    if requested > cores:
        if announce:
            shared = f" (its share of {usable_cores()} among {ranks} ranks)" if ranks > 1 else ""
            print(f"[occon] post_workers={requested} is more than the {cores} CPU core(s) this process may "
                  f"use{shared}: starting {cores}", file=sys.stderr, flush=True)
        return cores
    return requested


def exit_if_importing_main() -> None:
    """In a worker process that is importing an unguarded main script (which calls ``run_localize`` or
    starts a :class:`FinishPool` at import): end that worker quietly. Without this every worker prints the
    same ~40-line multiprocessing traceback; the main process then reports the cause in one line
    (:meth:`FinishPool._check_started`).

    Raises:
        SystemExit: only in such a worker (exit status 1, nothing printed).
    """
    if getattr(multiprocessing.current_process(), "_inheriting", False):
        raise SystemExit(1)  # not an Exception: the fork server's child exits without printing anything


def main_script_unimportable() -> Optional[str]:
    """The main script's name when worker processes cannot import it (a script fed on stdin:
    ``python - <<EOF``), else None. Workers started by spawn or the fork server run the main script
    again from its file; ``<stdin>`` has none."""
    main = sys.modules.get("__main__")
    if main is None or getattr(main, "__spec__", None) is not None:
        return None  # python -m module: imported by name
    path = getattr(main, "__file__", None)
    if path is None or os.path.isfile(path):
        return None  # interactive / python -c: nothing to import; a real file: imported again
    return path


def _exit_with(main_pid: int) -> None:
    """Block until process ``main_pid`` has exited, then end this process (a daemon thread's job)."""
    import select
    import time

    try:
        fd = os.pidfd_open(main_pid)  # Linux >= 5.3: readable once the process has exited
    except (AttributeError, OSError):
        fd = None
    if fd is not None:
        select.select([fd], [], [])
    else:
        while True:
            try:
                os.kill(main_pid, 0)
            except ProcessLookupError:
                break
            except PermissionError:
                pass
            time.sleep(1.0)
    os._exit(1)


def _worker_init(main_pid: int) -> None:
    # One thread per process (the workers are the parallelism); Ctrl-C is the main process's to handle;
    # a worker ends when the main process does, so a main process killed outright (kill -9, the OOM
    # killer) leaves no worker behind (the fork server, not the main process, is a worker's parent).
    import threading

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(target=_exit_with, args=(main_pid,), daemon=True, name="occon-main-watch").start()
    cv2.setNumThreads(1)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(1)


def _ready(_: int) -> int:
    return os.getpid()


# imported once by the fork server, so a worker inherits them; the main module itself is not preloaded (a worker
# runs it again under "__mp_main__", and runpy warns when the module is already imported)
_PRELOAD = ["occon_plugin.localize.finish", "occon_plugin.localize.runner", "hydra", "omegaconf"]


def process_context():
    """The fork server where the platform has one (Linux, macOS): it starts once per process from a fresh
    interpreter that imports this module (torch, OpenCV, pydensecrf) and forks every worker from it, so a
    worker starts in milliseconds and inherits no thread pool (forking the main process itself, whose
    OpenMP/OpenCV pools are running, deadlocks OpenCV in the child). Elsewhere spawn. As with any
    multiprocessing start method but fork, a worker imports the main script again: a script that calls
    ``run_localize`` needs the ``if __name__ == "__main__":`` guard (``post_workers=0`` does not)."""
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(_PRELOAD)
    return ctx


class FinishPool:
    """:func:`finish_mask` in ``workers`` processes (0: in the calling process, at submit).

    ``submit(...)`` returns a Future; ``result(future)`` turns a dead worker (killed for memory) into a
    :class:`~occon_plugin.errors.ResourceError` that says what to do. Use as a context manager.
    Raises:
        ValueError: ``workers`` < 0 (the CLI checks ``post_workers`` first: ConfigError).
    """

    def __init__(self, workers: int, wait: bool = True):
        """``wait=False`` returns at once: the workers start in a background thread (the fork server is a fresh
        interpreter importing torch, OpenCV and pydensecrf, ~1-2 s) while the caller computes; the first
        :meth:`submit` waits for them, and a start that failed is reported there."""
        if workers < 0:
            raise ValueError(f"workers must be >= 0, got {workers}")
        exit_if_importing_main()
        unimportable = main_script_unimportable() if workers > 0 else None
        if unimportable is not None:
            print(f"[occon] post_workers={workers}: worker processes cannot start from a main script read from "
                  f"{unimportable} (they import it again); post-processing runs in this process (post_workers=0)",
                  file=sys.stderr, flush=True)
            workers = 0
        self.workers = workers
        self._pool: Optional[ProcessPoolExecutor] = None
        self._starting: list = []
        self._starter: Optional[threading.Thread] = None
        if workers > 0:
            if wait:
                self._start()
                self._started()
                self._check_started()
            else:
                self._starter = threading.Thread(target=self._start, name="occon-post-start", daemon=True)
                self._starter.start()

    def _start(self) -> None:
        try:
            self._pool = ProcessPoolExecutor(max_workers=self.workers, mp_context=process_context(),
                                             initializer=_worker_init, initargs=(os.getpid(),))
            self._starting = [self._pool.submit(_ready, k) for k in range(self.workers)]
        except (OSError, RuntimeError, BrokenProcessPool) as exc:  # no processes left, no fork server, ...
            self._start_error = exc

    def _started(self) -> None:
        if self._starter is not None:
            self._starter.join()
            self._starter = None
        error, self._start_error = getattr(self, "_start_error", None), None
        if error is not None:
            raise ResourceError(f"the {self.workers} post-processing worker processes could not be created "
                                f"({type(error).__name__}: {error}); set post_workers=0") from error

    def _check_started(self) -> None:
        """Raise the start error (e.g. an unguarded main script) if the workers did not start."""
        starting, self._starting = self._starting, []
        try:
            for future in starting:
                future.result()
        except BrokenProcessPool:
            self._pool.shutdown(wait=False, cancel_futures=True)
            raise ResourceError(f"the {self.workers} post-processing worker processes did not start: a script that "
                                f"calls run_localize needs the 'if __name__ == \"__main__\":' guard (the workers "
                                f"import it again), or set post_workers=0") from None  # the cause says nothing more

    def submit(self, *args) -> Future:
        """Run :func:`finish_mask` on ``args`` (in a worker, or here with ``post_workers=0``); returns its future.

        Raises:
            ResourceError: the worker processes could not start or a worker died (one line: rerun to resume).
        """
        self._started()
        if self._pool is not None:
            try:
                return self._pool.submit(finish_mask, *args)
            except BrokenProcessPool as exc:
                self._check_started()
                raise self._died() from exc
        future: Future = Future()
        try:
            future.set_result(finish_mask(*args))
        except Exception as exc:  # noqa: BLE001 - handed to the caller through the future, like a pool
            future.set_exception(exc)
        return future

    def result(self, future: Future) -> Finished:
        """The :class:`Finished` of a future :meth:`submit` returned (in submission order when called so).

        Raises:
            ResourceError: a worker died or the workers could not start.
            Exception: whatever :func:`finish_mask` raised for that image (ValueError for a bad guide).
        """
        self._started()
        if self._starting:
            self._check_started()
        try:
            return future.result()
        except BrokenProcessPool as exc:
            raise self._died() from exc

    @staticmethod
    def _died() -> ResourceError:
        return ResourceError("a post-processing worker process died (out of memory?): rerun the same command to "
                             "resume, with fewer post_workers or post_workers=0")

    def close(self, cancel: bool = False) -> None:
        if self._starter is not None:
            self._starter.join()
            self._starter = None
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=cancel)
            self._pool = None

    def __enter__(self) -> "FinishPool":
        return self

    def __exit__(self, exc_type, *exc) -> None:
        self.close(cancel=exc_type is not None)
