"""``occon-localize``'s settings, typed once: the dataclasses the YAML is merged into, with their checks.

``configs/localize.yaml`` is merged into :class:`LocalizeSettings` at the command's edge
(:func:`occon_plugin.cli.localize.settings_from_config`); everything below receives these objects. The
presets (:mod:`occon_plugin.localize.presets`) are stated in the same types: a preset is a
:class:`CamSettings` and a ``RefineSettings`` with every key set. ``None`` in a setting means "left to
the preset"; each class checks its own fields (``problems()``: ``(key, value, what it must be)``), and
:func:`check_settings` turns the first problem into a one-line :class:`~occon_plugin.errors.ConfigError`.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, List, Optional, Tuple

from occon_plugin.cfgkeys import CAM_IMAGE_SIZE
from occon_plugin.errors import ConfigError
from occon_plugin.localize.cam import WEIGHTS
from occon_plugin.localize.engine import PRECISIONS, SCORES
from occon_plugin.localize.refiners import RefineSettings, check_refine

Problem = Tuple[str, Any, str]  # (key, value, what it must be)
FILLS = ("mean", "black")


@dataclass
class DataSettings:
    path: str = "???"               # image folder or COCO json
    image_root: Optional[str] = None  # COCO only: folder of the json's file_names
    workers: int = 4                # threads decoding images

    def problems(self) -> List[Problem]:
        """``(key, value, what)`` for every field out of range (keys relative to ``data``)."""
        out = []
        if not (isinstance(self.path, str) and self.path not in ("", "???")):
            out.append(("path", self.path, "give an image folder or a COCO json"))
        if self.workers < 1:
            out.append(("workers", self.workers, "must be >= 1"))
        return out


@dataclass
class CamSettings:
    """ContraCAM settings (``cam.*``). ``None`` = decided by the preset (``occon_plugin.localize.presets``).

    ``weights`` and ``score`` name a CAM variant: a channel-weight function of
    :data:`occon_plugin.localize.cam.WEIGHTS` and a score of :data:`occon_plugin.localize.engine.SCORES`
    (the paper's: ``mean`` with ``nsr``, Eq. 2, and ``contrastive``, Eq. 1)."""

    iters: Optional[int] = None             # T
    nsr: Optional[bool] = None              # negative-signal removal (ReLU on the channel weights)
    expand: Optional[bool] = None           # expansion trick (stride 1 in the last stage, inference only)
    dilate: Optional[bool] = None           # with expand: dilation 2 in the later convolutions (DeepLab-style)
    temperature: Optional[float] = None     # tau of Eq. (1)
    early_exit_tol: Optional[float] = None  # stop re-encoding an image once its mask moves less (0: fixed T)
    fill: Optional[str] = None              # colour masked pixels fade to: mean, black
    flip: Optional[bool] = None             # test-time flip: mean of the masks of the image and its mirror
    weights: Optional[str] = None           # channel weights by name (WEIGHTS): mean, ...
    score: Optional[str] = None             # what the CAM explains, by name (SCORES): contrastive, ...

    def problems(self) -> List[Problem]:
        """``(key, value, what)`` for every set field out of range (keys relative to ``cam``); None passes."""
        out = []
        if self.iters is not None and self.iters < 1:
            out.append(("iters", self.iters, "must be >= 1"))
        if self.temperature is not None and not (math.isfinite(self.temperature) and self.temperature > 0):
            out.append(("temperature", self.temperature, "must be finite and > 0"))
        if self.fill not in (None, *FILLS):
            out.append(("fill", self.fill, "use mean or black"))
        if self.early_exit_tol is not None and not (math.isfinite(self.early_exit_tol) and self.early_exit_tol >= 0):
            out.append(("early_exit_tol", self.early_exit_tol, "must be >= 0 or null"))
        if self.weights is not None and self.weights not in WEIGHTS:
            out.append(("weights", self.weights, f"use one of {sorted(WEIGHTS)}"))
        if self.score is not None and self.score not in SCORES:
            out.append(("score", self.score, f"use one of {sorted(SCORES)}"))
        return out

    def record(self) -> dict:
        """The settings as recorded in a store's manifest. The variant names are recorded only when they are
        not the paper's (``weights=mean``, ``score=contrastive``): stores written before the variants could
        be chosen were made with exactly those, and stay resumable."""
        out = dataclasses.asdict(self)
        for key, paper in (("weights", "mean"), ("score", "contrastive")):
            if out[key] in (None, paper):
                del out[key]
        return out


@dataclass
class LocalizeSettings:
    data: DataSettings = field(default_factory=DataSettings)
    output_dir: str = "???"
    model: str = "efficientnet-lite0"
    use_momentum: bool = False      # a solo-learn / authors' checkpoint: localize with its momentum (key) encoder
    preset: str = "auto"            # auto (the model's measured preset), paper, bg_mixup, ... (presets.py)
    cam: CamSettings = field(default_factory=CamSettings)
    refine: RefineSettings = field(default_factory=RefineSettings)  # refine.method, .resolution, per-method params
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
    precision: str = "fp32"         # the backbone forward's autocast: fp32 (none), bf16, fp16 (engine.PRECISIONS)
    post_workers: Optional[int] = None  # processes for resize, refinement, boxes, PNG (None: the cores the backbone leaves free)
    overlays: bool = False
    soft_masks: bool = False        # also write soft/<image>.png: the mask before the refinement (same size, 8-bit)
    resume: bool = True
    progress: bool = True

    def problems(self) -> List[Problem]:
        """``(key, value, what)`` for every top-level field out of range, then those of ``data`` and ``cam``
        (dotted keys). ``refine.*`` is checked by :func:`occon_plugin.localize.refiners.check_refine`."""
        out = [(f"data.{k}", v, what) for k, v, what in self.data.problems()]
        if not (isinstance(self.output_dir, str) and self.output_dir not in ("", "???")):
            out.append(("output_dir", self.output_dir, "give the store folder to write"))
        out += [(f"cam.{k}", v, what) for k, v, what in self.cam.problems()]
        if not (isinstance(self.preset, str) and self.preset):
            out.append(("preset", self.preset, "use auto or a preset name"))
        if self.precision not in PRECISIONS:
            out.append(("precision", self.precision, f"use one of {', '.join(PRECISIONS)}"))
        if self.post_workers is not None and self.post_workers < 0:
            out.append(("post_workers", self.post_workers, "must be >= 0 (0: in the main process) or null (the "
                                                           "cores the backbone leaves free)"))
        for key, ok, what in (
                ("threshold", 0.0 < self.threshold <= 1.0, "must be in (0, 1]"),
                ("bg_threshold", 0.0 < self.bg_threshold <= 1.0, "must be in (0, 1]"),
                ("box_margin", math.isfinite(self.box_margin) and self.box_margin >= 0, "must be finite and >= 0"),
                ("min_box_area", 0.0 <= self.min_box_area < 1.0, "must be in [0, 1)"),
                ("batch_size", self.batch_size >= 2, "must be >= 2 (the other images of a batch are the negatives)"),
                ("image_size", CAM_IMAGE_SIZE.accepts(self.image_size), CAM_IMAGE_SIZE.describe()),
                ("seed", self.seed >= 0, "must be >= 0"),
                ("threads", self.threads is None or self.threads >= 1, "must be >= 1 or null"),
                ("sub_batch", self.sub_batch is None or self.sub_batch >= 1, "must be >= 1 or null"),
                ("device", self.device in ("auto", "cpu") or self.device.startswith("cuda"),
                 "use auto, cpu, cuda or cuda:N")):
            if not ok:
                out.append((key, getattr(self, key), what))
        return out


def check_settings(s: LocalizeSettings) -> None:
    """Range checks that types alone cannot express (each class's ``problems()``, and ``refine.*``).

    Raises:
        ConfigError: one line naming the first bad key, its value and what it must be.
    """
    problems = s.problems()
    if problems:
        key, value, what = problems[0]
        raise ConfigError(f"{key}={value!r} is invalid: {what}")
    check_refine(s.refine)


__all__ = ["DataSettings", "CamSettings", "LocalizeSettings", "check_settings", "FILLS"]
