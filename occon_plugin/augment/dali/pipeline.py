"""The object-aware DALI pipeline: decode -> OA-Crop -> BG-Mixup -> standard ops, per view.

All decisions arrive from ``ObjectAwareSource`` as per-sample external-source data; the graph
only executes them, on the GPU when asked:

* OA-Crop: ``decoders.image_slice`` decodes just the chosen box (the full image for samples
  without one); both views start from that one crop.
* BG-Mixup: the mask and each mixed view's donor background rectangle are decoded (also as slices)
  only where used (the others carry 1x1 stand-ins); ``multi_paste`` tiles the patch to the crop's
  size; views drawn for mixing compute ``m * x + (1 - m) * bg_v`` in a conditional branch.
"""
from __future__ import annotations

from nvidia.dali import fn, pipeline_def, types

from occon_plugin.augment.config import OcconConfig

from .source import REGION_KEYS, ObjectAwareSource, mixed_views_of
from .standard_ops import ViewOps, apply_view_ops


def _decode_window(encoded, anchor, shape, decoder_device: str, output_type):
    return fn.decoders.image_slice(encoded, anchor, shape, axes=[0, 1], device=decoder_device,
                                   output_type=output_type)


def _tiled_background(patches, strip_regions, full_regions):
    """A strip of patch copies (1 x n_cols), then that strip stacked n_rows times."""
    ids, in_anchors, shapes, out_anchors, size = strip_regions
    strip = fn.multi_paste(patches, in_ids=ids, in_anchors=in_anchors, shapes=shapes,
                           out_anchors=out_anchors, output_size=size)
    ids, in_anchors, shapes, out_anchors, size = full_regions
    return fn.multi_paste(strip, in_ids=ids, in_anchors=in_anchors, shapes=shapes,
                          out_anchors=out_anchors, output_size=size)


def _mix_weights(mask_u8, hard: bool, threshold: float):
    """The store's soft mask in [0, 1] (BG-Mixup) or its binarization (BG-HardMix)."""
    m = mask_u8 / 255.0
    return fn.cast(m >= threshold, dtype=types.FLOAT) if hard else m


def _mix(image, weights, background):
    """``w * x1 + (1 - w) * bg``, rounded to uint8."""
    return fn.cast(weights * image + (1.0 - weights) * background, dtype=types.UINT8)


def object_aware_graph(data: dict, settings: OcconConfig, n_views: int, view_fn, decoder_device: str):
    """The graph from the per-sample inputs ``data`` (DataNodes named by ``source.output_names``).
    ``view_fn(image, v)`` applies view ``v``'s standard augmentations to the HWC uint8
    object-aware image."""
    mixed_views = mixed_views_of(settings)
    if settings.oa_crop:
        crop = _decode_window(data["encoded"], data["crop_anchor"], data["crop_shape"], decoder_device, types.RGB)
    else:
        crop = fn.decoders.image(data["encoded"], device=decoder_device, output_type=types.RGB)
    if mixed_views:
        mask = _decode_window(data["mask"], data["mask_anchor"], data["mask_shape"], decoder_device, types.GRAY)
        weights = _mix_weights(mask, settings.bg_mixup.hard, settings.bg_mixup.hard_threshold)
    outputs = []
    for v in range(n_views):
        view = crop
        if v in mixed_views:  # each mixed view has its own donor (semantics.choose_partner per view)
            patches = _decode_window(data[f"bg_{v}"], data[f"bg_anchor_{v}"], data[f"bg_shape_{v}"], decoder_device,
                                     types.RGB)
            background = _tiled_background(patches, [data[f"strip_{v}_{k}"] for k in REGION_KEYS],
                                           [data[f"full_{v}_{k}"] for k in REGION_KEYS])
            if data[f"mixed_{v}"]:  # only views that won their p_mix coin do the arithmetic
                view = _mix(crop, weights, background)
        outputs.append(view_fn(view, v))
    return (*outputs, *(data[k] for k in ("index", "target", "oa_crop", "mixed", "mix_skipped", "no_entry",
                                          "replaced")))


def standard_view_fn(views: list[ViewOps]):
    """``view_fn`` running each view's standard augmentations (``standard_ops``)."""
    def view_fn(image, v: int):
        return apply_view_ops(image, views[v])
    return view_fn


def pipeline_device_id(device: str) -> int | None:
    """``device="gpu"``: the current CUDA device; ``"cpu"``: None (DALI without CUDA).

    Raises:
        ValueError: ``device`` is not gpu/cpu (checked earlier as ``dali.device``; a programming error here).
    """
    if device not in ("cpu", "gpu"):
        raise ValueError(f"dali.device={device!r} must be 'gpu' or 'cpu'")
    if device == "cpu":
        return None
    import torch

    return torch.cuda.current_device()


def build_object_aware_pipeline(source: ObjectAwareSource, view_fn, *, device: str = "cpu",
                                num_threads: int = 2, seed: int = 0, prefetch_queue_depth: int = 2,
                                py_workers: int = 0, **pipeline_kwargs):
    """A built training pipeline fed by ``source``; ``view_fn(image, v)`` = the standard ops of view
    ``v`` (:func:`standard_view_fn`). ``device="gpu"``: mixed decoding and GPU ops on the current
    CUDA device; ``"cpu"``: CPU decoding and ops with ``device_id=None`` (no CUDA needed).
    Outputs: the views, then index, target, oa_crop, mixed, mix_skipped, no_entry, replaced.
    ``py_workers > 0``: the source runs in that many spawned worker processes (DALI's parallel
    external source), off the training loop's thread; each worker imports the plugin once at start.
    ``pipeline_kwargs`` go to the DALI ``Pipeline`` (e.g. ``exec_async=False`` for timing)."""
    device_id = pipeline_device_id(device)
    decoder_device = "mixed" if device == "gpu" else "cpu"

    @pipeline_def(enable_conditionals=True)
    def pipeline():
        names = source.output_names
        data = dict(zip(names, fn.external_source(source, num_outputs=len(names), batch=True,
                                                  batch_info=True, parallel=py_workers > 0)))
        return object_aware_graph(data, source.settings, source.n_views, view_fn, decoder_device)

    if py_workers > 0:
        pipeline_kwargs.update(py_num_workers=py_workers, py_start_method="spawn")
    pipe = pipeline(batch_size=source.batch_size, num_threads=num_threads, device_id=device_id, seed=seed,
                    prefetch_queue_depth=prefetch_queue_depth, **pipeline_kwargs)
    pipe.build()
    return pipe
