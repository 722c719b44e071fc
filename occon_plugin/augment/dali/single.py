"""Run the object-aware DALI graph on one in-memory sample (CPU): inspection and the shared
semantic test suite (``tests/augment/test_semantics.py``'s ``sample_views`` contract).

The sample goes through the same code as training (``resolve_decision`` -> ``batch_arrays`` ->
``object_aware_graph``); only the input differs: PNG-encoded arrays fed with ``feed_input``
instead of files read by ``ObjectAwareSource``. Masks pass through the store's uint8
quantization (``mask_to_u8``), as they do on disk.
"""
from __future__ import annotations

from typing import Any, Callable

import cv2
import numpy as np
import torch
from nvidia.dali import fn, pipeline_def, types

from occon_plugin.augment.config import OcconConfig, parse_occon_config
from occon_plugin.augment.semantics import per_view
from occon_plugin.store import mask_to_u8

from .pipeline import object_aware_graph, standard_view_fn
from .source import SampleRecord, batch_arrays, output_names, resolve_decision
from .standard_ops import ViewOps

ViewFn = Callable[[Any, int], Any]


def _png(array: np.ndarray) -> np.ndarray:
    if array.ndim == 3:
        array = cv2.cvtColor(array, cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(".png", array)
    if not ok:
        raise ValueError(f"cannot PNG-encode an array of shape {array.shape}")
    return buf.ravel()


def identity_view(image, v: int):
    """No standard augmentation: the object-aware image itself (HWC uint8)."""
    return image


def nearest_rrc_view(size: int) -> ViewFn:
    """RandomResizedCrop(size, scale (0.08, 1), ratio (3/4, 4/3)) with nearest-neighbour sampling:
    every output pixel is a pixel of the object-aware image (geometry checks)."""
    def view(image, v: int):
        return fn.random_resized_crop(image, size=size, random_area=(0.08, 1.0),
                                      random_aspect_ratio=(3 / 4, 4 / 3), interp_type=types.INTERP_NN)
    return view


class SingleSampleDALI:
    """``sample_views(image, entry, mask, partner, seed) -> (views, info)`` through DALI on the CPU.

    ``views``: ``n_views`` float32 ``3 x h x w`` tensors; ``info``: bool tensors ``oa_crop`` (scalar),
    ``mixed`` and ``mix_skipped`` (``(n_views,)``). ``random_views``: the view function draws random
    numbers, so the pipeline is rebuilt per call with its DALI seed taken from the sample's plan
    (same seed -> same views); otherwise one pipeline serves every call.
    """

    def __init__(self, settings: OcconConfig, n_views: int, view_fn: ViewFn, random_views: bool):
        self.settings, self.n_views = settings, n_views
        self.view_fn, self.random_views = view_fn, random_views
        self.names = output_names(settings)
        self._pipe = None

    def _build(self, seed: int):
        @pipeline_def(enable_conditionals=True, exec_async=False, exec_pipelined=False)
        def pipeline():
            data = {name: fn.external_source(name=name) for name in self.names}
            return object_aware_graph(data, self.settings, self.n_views, self.view_fn, "cpu")

        pipe = pipeline(batch_size=1, num_threads=1, device_id=None, seed=seed, prefetch_queue_depth=1)
        pipe.build()
        return pipe

    def record(self, image: np.ndarray, entry: Any, mask: np.ndarray | None) -> SampleRecord:
        height, width = image.shape[:2]
        usable = entry is not None and entry.ok
        return SampleRecord(
            image_file=_png(image), width=width, height=height,
            boxes=tuple(tuple(b) for b in entry.boxes) if usable else (),
            bg_rect=tuple(entry.bg_rect) if usable and entry.bg_rect is not None else None,
            mask_file=_png(mask_to_u8(mask)) if mask is not None and self.settings.bg_mixup.enabled else None,
            has_entry=entry is not None)

    @staticmethod
    def partner_record(partner: Any) -> SampleRecord | None:
        if partner is None or not partner.has_background:
            return None
        image = partner.load_image()
        return SampleRecord(image_file=_png(image), width=image.shape[1], height=image.shape[0],
                            bg_rect=tuple(partner.bg_rect))

    def sample_views(self, image: np.ndarray, entry: Any, mask: np.ndarray | None, partners: Any,
                     seed: int) -> tuple[list[torch.Tensor], dict[str, torch.Tensor]]:
        """``partners``: one ``Partner`` (every view) or one per view (``semantics.per_view``)."""
        rec = self.record(image, entry, mask)
        records: dict[int, SampleRecord | None] = {}  # a donor of two views is encoded once
        for p in per_view(partners, self.n_views):
            if id(p) not in records:
                records[id(p)] = self.partner_record(p)
        decision = resolve_decision(self.settings, self.n_views, seed, rec,
                                    [records[id(p)] for p in per_view(partners, self.n_views)])
        if self._pipe is None or self.random_views:
            self._pipe = self._build(decision.plan.transform_seed % 2**31 if self.random_views else 0)
        arrays = batch_arrays(self.settings, [0], [rec], [decision])
        for name in self.names:
            self._pipe.feed_input(name, arrays[name])
        outputs = self._pipe.run()
        views = []
        for v in range(self.n_views):
            out = outputs[v]
            array = torch.from_numpy(np.array(out[0])).float()
            views.append(array.permute(2, 0, 1).contiguous() if out.layout() == "HWC" else array)
        info = {key: torch.from_numpy(np.array(outputs[self.n_views + 2 + i][0]))
                for i, key in enumerate(("oa_crop", "mixed", "mix_skipped"))}
        return views, info


def semantic_suite_sample_views(occon: dict, standard: str, n_views: int, *, rrc_size: int,
                                host_aug: dict | None = None):
    """The DALI pipeline under the shared semantic suite's contract (``tests/augment/test_semantics.py``):
    ``standard`` = "identity" | "rrc_nearest" | "host" (``host_aug``: one ``augmentations`` entry).

    Raises:
        ValueError: ``standard`` is not identity, rrc_nearest or host (test helper).
    """
    settings = parse_occon_config(occon, n_views=n_views, check_store=False)
    if standard == "identity":
        runner = SingleSampleDALI(settings, n_views, identity_view, random_views=False)
    elif standard == "rrc_nearest":
        runner = SingleSampleDALI(settings, n_views, nearest_rrc_view(rrc_size), random_views=True)
    elif standard == "host":
        runner = SingleSampleDALI(settings, n_views, standard_view_fn([ViewOps.from_cfg(host_aug)] * n_views),
                                  random_views=True)
    else:
        raise ValueError(f"unknown standard augmentation {standard!r}: identity, rrc_nearest or host")
    return runner.sample_views
