"""Python side of the object-aware DALI pipeline: which samples form a batch, and the
object-aware decisions for each, as per-sample arrays for ``fn.external_source``.

The decisions (box, p_mix coins, background partner) come from the shared semantics module, with
the same sample order and per-sample seeds as the torchvision path (``SeededRandomSampler``), so
for the same run seed both pipelines crop the same boxes and mix the same views with the same
partners. DALI then only executes them: integer windows in (y, x) order, and paste regions.
"""
from __future__ import annotations

import logging
from collections import Counter, deque
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np

from occon_plugin.augment.config import OcconConfig
from occon_plugin.augment.dataset import MAX_BAD_IN_A_ROW, SeededRandomSampler
from occon_plugin.augment.semantics import (SamplePlan, choose_partner, clip_rect, per_view, plan_sample,
                                            replacement_index)
from occon_plugin.errors import DataError
from occon_plugin.images import BadImageError, load_image

log = logging.getLogger(__name__)

from .regions import EMPTY_REGIONS, background_regions

REGION_KEYS = ("ids", "in_anchors", "shapes", "out_anchors", "size")


@dataclass(frozen=True, eq=False)
class SampleRecord:
    """One image as the source needs it. ``image_file``/``mask_file``: a path, or the encoded
    bytes themselves (uint8 array; used for in-memory samples)."""

    image_file: Path | np.ndarray
    width: int
    height: int
    boxes: tuple = ()  # normalized (x1, y1, x2, y2) store boxes
    bg_rect: tuple | None = None  # half-open pixel (x1, y1, x2, y2) of this image's background
    mask_file: Path | np.ndarray | None = None  # None: no soft mask (no entry, failed, or mixing off)
    target: int = -1
    has_entry: bool = False  # the store has an entry for this image
    decode_here: bool = False  # DALI's decoder would not give the shared rule's pixels: feed those instead


@dataclass
class SampleDecision:
    """A sample's shared-semantics plan plus its resolved background donors, one per view."""

    plan: SamplePlan
    partners: tuple  # view k's donor x2 (SampleRecord), set iff view k is mixed, else None
    bg_rects: tuple  # view k's donor rectangle clipped to its image, set iff view k is mixed, else None

    @classmethod
    def of(cls, plan: SamplePlan, partners, bg_rects) -> "SampleDecision":
        """Keep the donors and rectangles of the views ``plan`` mixes only."""
        return cls(plan, tuple(p if m else None for p, m in zip(partners, plan.mixed)),
                   tuple(r if m else None for r, m in zip(bg_rects, plan.mixed)))

    def without_mixing(self, views=None) -> "SampleDecision":
        """``views`` (default: every view) unmixed: the mask or a donor's photo could not be read."""
        return SampleDecision.of(self.plan.without_mixing(views), self.partners, self.bg_rects)


def resolve_decision(settings: OcconConfig, n_views: int, seed: int, rec: SampleRecord,
                     partners) -> SampleDecision:
    """``plan_sample`` for ``rec`` and its per-view donors ``partners`` (``semantics.per_view``: one
    ``SampleRecord`` or None per view); a donor rectangle that lies outside the donor image unmixes
    its view (as ``Partner.background`` returning None does)."""
    partners = per_view(partners, n_views)
    plan = plan_sample(seed, settings, n_views, rec.width, rec.height, boxes=rec.boxes,
                       has_mask=rec.mask_file is not None,
                       has_background=[p is not None and p.bg_rect is not None for p in partners])
    rects = [clip_rect(p.bg_rect, p.width, p.height) if m else None for p, m in zip(partners, plan.mixed)]
    plan = plan.without_mixing([k for k, m in enumerate(plan.mixed) if m and rects[k] is None])
    return SampleDecision.of(plan, partners, rects)


@lru_cache(maxsize=1)
def _white_pixel_png() -> np.ndarray:
    """Stand-in for a mask or background nobody uses: a 1x1 PNG is all DALI has to decode."""
    ok, buf = cv2.imencode(".png", np.full((1, 1), 255, np.uint8))
    assert ok
    return buf.ravel()


def _bytes_of(file: Path | np.ndarray) -> np.ndarray:
    if isinstance(file, np.ndarray):
        return file
    try:
        return np.fromfile(file, dtype=np.uint8)
    except OSError as exc:
        raise OSError(f"cannot read {file}: {exc}; check data.train_path and occon.store") from exc


def encode_rgb_png(image: np.ndarray) -> np.ndarray:
    """An ``H x W x 3`` uint8 RGB array as lossless PNG bytes (fast compression) for DALI's decoder.

    Raises:
        ValueError: the array is not an encodable H x W x 3 uint8 image.
    """
    ok, buf = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, 1])
    if not ok:
        raise ValueError(f"cannot PNG-encode an image of shape {image.shape}")
    return buf.ravel()


def image_bytes(rec: SampleRecord) -> np.ndarray:
    """What DALI decodes for ``rec``: the file itself, or (``decode_here``) the shared decode rule's
    pixels as a PNG. Raises OSError / BadImageError when the file cannot be read."""
    if rec.decode_here and not isinstance(rec.image_file, np.ndarray):
        path = Path(rec.image_file)
        return encode_rgb_png(load_image(path.parent, path.name))
    data = _bytes_of(rec.image_file)
    if data.size == 0:
        raise OSError(f"{rec.image_file} is empty")
    return data


def _window(rect) -> tuple[np.ndarray, np.ndarray]:
    left, top, right, bottom = rect
    return np.array([top, left], np.int32), np.array([bottom - top, right - left], np.int32)


_UNIT_WINDOW = (np.zeros(2, np.int32), np.ones(2, np.int32))


def mixed_views_of(settings: OcconConfig) -> tuple[int, ...]:
    return tuple(settings.bg_mixup.views) if settings.bg_mixup.enabled else ()


def output_names(settings: OcconConfig) -> list[str]:
    """Names of the per-sample arrays, in external-source output order (per mixed view ``v``: its
    donor's encoded photo ``bg_{v}``, window and paste regions, and its coin ``mixed_{v}``)."""
    names = ["encoded"] + (["crop_anchor", "crop_shape"] if settings.oa_crop else [])
    if mixed_views_of(settings):
        names += ["mask", "mask_anchor", "mask_shape"]
        for v in mixed_views_of(settings):
            names += [f"bg_{v}", f"bg_anchor_{v}", f"bg_shape_{v}"]
            names += [f"strip_{v}_{k}" for k in REGION_KEYS] + [f"full_{v}_{k}" for k in REGION_KEYS]
            names += [f"mixed_{v}"]
    return names + ["index", "target", "oa_crop", "mixed", "mix_skipped", "no_entry", "replaced"]


def batch_arrays(settings: OcconConfig, indices, records: list[SampleRecord],
                 decisions: list[SampleDecision], encoded: list[np.ndarray] | None = None,
                 masks: list[np.ndarray | None] | None = None, backgrounds: list[tuple] | None = None,
                 replaced: list[bool] | None = None) -> dict[str, list]:
    """Per-sample arrays of one batch, keyed by :func:`output_names`. ``encoded`` / ``masks`` /
    ``backgrounds`` (per sample: one donor photo's bytes or None per view): bytes already read per
    sample (default: read here)."""
    mixed_views = mixed_views_of(settings)
    out: dict[str, list] = {name: [] for name in output_names(settings)}
    for b, (index, rec, dec) in enumerate(zip(indices, records, decisions)):
        plan = dec.plan
        out["encoded"].append(encoded[b] if encoded is not None else image_bytes(rec))
        crop = plan.crop_rect or (0, 0, rec.width, rec.height)
        anchor, shape = _window(crop)
        if settings.oa_crop:
            out["crop_anchor"].append(anchor)
            out["crop_shape"].append(shape)
        if mixed_views:
            mixing = any(plan.mixed)
            mask = (masks[b] if masks is not None else _bytes_of(rec.mask_file)) if mixing else None
            out["mask"].append(mask if mixing else _white_pixel_png())
            for key, arr in zip(("mask_anchor", "mask_shape"), (anchor, shape) if mixing else _UNIT_WINDOW):
                out[key].append(arr)
            for v in mixed_views:  # each mixed view tiles its own donor's background to the crop's size
                on = plan.mixed[v]
                background = ((backgrounds[b][v] if backgrounds is not None else image_bytes(dec.partners[v]))
                              if on else None)
                out[f"bg_{v}"].append(background if on else _white_pixel_png())
                for key, arr in zip((f"bg_anchor_{v}", f"bg_shape_{v}"), _window(dec.bg_rects[v]) if on else _UNIT_WINDOW):
                    out[key].append(arr)
                regions = background_regions(b, dec.bg_rects[v], tuple(shape)) if on else (EMPTY_REGIONS,) * 2
                for k, strip, full in zip(REGION_KEYS, *regions):
                    out[f"strip_{v}_{k}"].append(strip)
                    out[f"full_{v}_{k}"].append(full)
                out[f"mixed_{v}"].append(np.array(on))
        out["index"].append(np.array(index, np.int64))
        out["target"].append(np.array(rec.target, np.int64))
        out["oa_crop"].append(np.array(plan.oa_crop))
        out["mixed"].append(np.array(plan.mixed, bool))
        out["mix_skipped"].append(np.array(plan.mix_skipped, bool))
        out["no_entry"].append(np.array(settings.active and not rec.has_entry))
        out["replaced"].append(np.array(bool(replaced[b]) if replaced is not None else False))
    return out


def donor_candidates(records: list[SampleRecord]) -> np.ndarray:
    """Sorted indexes of the records with a background rectangle (``choose_partner``'s candidates)."""
    return np.array([i for i, r in enumerate(records) if r.bg_rect is not None], np.int64)


class ObjectAwareSource:
    """Batch-mode ``fn.external_source`` callable (``batch_info=True``) over ``records``.

    Order and per-sample seeds come from the torchvision path's ``SeededRandomSampler`` (same run
    seed and epoch: same batches, same decisions). Each epoch is cut into full batches (the last
    partial batch is dropped, as solo-learn's pretraining loaders do), then ``StopIteration`` is
    raised. With ``num_shards > 1`` shard ``k`` takes every ``num_shards``-th sample of the order, as
    the torchvision sampler does under DDP (equal shares: ``len(records) // num_shards`` each, the
    remainder of the epoch's order is dropped).
    Raises:
        ValueError: the per-view settings do not match the number of views (a caller's bug).
    """

    def __init__(self, records: list[SampleRecord], batch_size: int, n_views: int, settings: OcconConfig,
                 seed: int, shard_id: int = 0, num_shards: int = 1):
        if len(records) // num_shards < batch_size:
            raise ValueError(f"{len(records)} images over {num_shards} process(es) is fewer than one batch each "
                             f"(optimizer.batch_size={batch_size})")
        self.records = records
        self.batch_size = batch_size
        self.n_views = n_views
        self.settings = settings
        self.shard_id, self.num_shards = shard_id, num_shards
        self.batches_per_epoch = len(records) // num_shards // batch_size
        self.output_names = output_names(settings)
        # the shard is this source's (shard_id, num_shards), never read again from the process group:
        # the sampler is the one implementation of the split (each rank its every num_shards-th sample
        # of the global order, equal shares), so the data is split once
        self._sampler = SeededRandomSampler(len(records), seed, rank=shard_id, num_replicas=num_shards)
        self.start_epoch = 0  # the sampler epoch of DALI's epoch 0 (a resumed run starts later)
        self.start_batch = 0  # batches of DALI's epoch 0 already trained (a run resumed mid-epoch)
        self.counts: Counter = Counter()  # this process's runtime counts (unreadable images / masks)
        # files of the last batches handed to DALI's decoder (images, masks, background donors)
        self.recent: deque = deque(maxlen=12 * batch_size)
        self._epoch_cache: tuple[int, np.ndarray] | None = None
        self.candidates = donor_candidates(records)

    def use(self, records: list[SampleRecord], settings: OcconConfig) -> None:
        """``occon.refresh``: the next pipeline built on this source reads ``records`` (the same images in
        the same order, with a new store's entries) under ``settings`` (the augmentations the run switches
        on after its warm-up). The epoch under way keeps what it had: call between epochs.

        Raises:
            ValueError: ``records`` are not the same number of images (a caller's bug: the order must stay).
        """
        if len(records) != len(self.records):
            raise ValueError(f"{len(records)} records for a source of {len(self.records)} images")
        self.records, self.settings = records, settings
        self.output_names = output_names(settings)
        self.candidates = donor_candidates(records)

    def epoch_plan(self, epoch: int) -> np.ndarray:
        """``(n, 2)`` int64 rows ``(index, sample seed)`` of this shard in ``epoch`` (cached)."""
        if self._epoch_cache is None or self._epoch_cache[0] != epoch:
            self._sampler.set_epoch(epoch)
            pairs = np.array(list(self._sampler), dtype=np.int64).reshape(-1, 2)
            self._epoch_cache = (epoch, pairs)
        return self._epoch_cache[1]

    def batch_plan(self, epoch: int, iteration: int) -> np.ndarray:
        start = iteration * self.batch_size
        return self.epoch_plan(epoch)[start:start + self.batch_size]

    def decide(self, index: int, seed: int) -> SampleDecision:
        """The shared-semantics decisions of dataset sample ``index`` drawn from its ``seed``."""
        mixed_views = mixed_views_of(self.settings)
        donors = [choose_partner(seed, index, self.candidates, v) if v in mixed_views else None
                  for v in range(self.n_views)]
        return resolve_decision(self.settings, self.n_views, seed, self.records[index],
                                [None if d is None else self.records[d] for d in donors])

    def _read_sample(self, index: int, seed: int) -> tuple[int, np.ndarray, bool]:
        """``(index, bytes, replaced)``: an image that became unreadable after the start-up check
        is replaced by :func:`replacement_index`, exactly as the torchvision path does (counted)."""
        replaced = False
        for attempt in range(MAX_BAD_IN_A_ROW + 1):
            try:
                return index, image_bytes(self.records[index]), replaced
            except (OSError, BadImageError) as exc:
                self.counts["bad_images"] += 1
                log.warning("skipping %s (%d bad so far in this process)", exc, self.counts["bad_images"])
                index, replaced = replacement_index(seed, attempt + 1, len(self.records)), True
        raise DataError(f"{MAX_BAD_IN_A_ROW} unreadable images in a row (last: {self.records[index].image_file}); "
                        f"check the dataset")

    def _read_optional(self, what: str, read) -> np.ndarray | None:
        try:
            return read()
        except (OSError, BadImageError) as exc:
            self.counts[f"{what}_unreadable"] += 1
            log.warning("%s unreadable, sample not mixed: %s", what, exc)
            return None

    def _remember(self, file) -> None:
        if not isinstance(file, np.ndarray):  # in-memory samples cannot change
            self.recent.append(str(file))

    def __call__(self, info):
        iteration = info.iteration + (self.start_batch if info.epoch_idx == 0 else 0)
        if iteration >= self.batches_per_epoch:
            raise StopIteration
        rows = self.batch_plan(self.start_epoch + info.epoch_idx, iteration)
        indices, encoded, decisions, masks, backgrounds, replaced = [], [], [], [], [], []
        for index, seed in rows:
            index, data, was_replaced = self._read_sample(int(index), int(seed))
            decision = self.decide(index, int(seed))
            mask, background = None, [None] * self.n_views
            if any(decision.plan.mixed):
                mask = self._read_optional("mask", lambda: _bytes_of(self.records[index].mask_file))
                if mask is None:
                    decision = decision.without_mixing()
                read: dict[int, np.ndarray | None] = {}  # a donor of two views is read once
                for v, donor in enumerate(decision.partners):
                    if donor is not None:
                        if id(donor) not in read:
                            read[id(donor)] = self._read_optional("background", lambda: image_bytes(donor))
                        background[v] = read[id(donor)]
                decision = decision.without_mixing(
                    [v for v, d in enumerate(decision.partners) if d is not None and background[v] is None])
            indices.append(index)
            self._remember(self.records[index].image_file)
            if any(decision.plan.mixed):  # mixed: its mask and the donors' photos go to the decoder too
                self._remember(self.records[index].mask_file)
                for donor in decision.partners:
                    if donor is not None:
                        self._remember(donor.image_file)
            encoded.append(data)
            decisions.append(decision)
            masks.append(mask)
            backgrounds.append(tuple(background))
            replaced.append(was_replaced)
        out = batch_arrays(self.settings, indices, [self.records[i] for i in indices], decisions, encoded=encoded,
                           masks=masks, backgrounds=backgrounds, replaced=replaced)
        return tuple(out[name] for name in self.output_names)
