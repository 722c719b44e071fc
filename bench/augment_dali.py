"""Per-sample cost of the object-aware DALI pipeline vs a host-style DALI pipeline, side by side.

* host-style: what solo-learn's DALI builder does: ``fn.readers.file`` -> decode -> the standard
  per-view ops (random resized crop, colour jitter, grayscale, blur, solarization, flip +
  normalize) for two views; no masks.
* object-aware: ``occon_plugin.augment.dali`` with OA-Crop + BG-Mixup (p_mix per view): files read
  by the external source with the shared decisions, the box decoded as a slice, the mask and the
  partner's background rectangle decoded for samples with a mixed view, the tiling and the mix,
  then the same standard ops.

Object-aware arms: OA-Crop only, BG-Mixup only (the paper uses them in separate experiments), and
both. All run on the same JPEG photos (scikit-image's, copied to fill batches) and the same
constructed store as ``bench/augment.py``. Arms alternate block by block so that load on a shared
machine hits all alike; all run synchronously (``exec_async=False, exec_pipelined=False``), so a
block's time is its own work. Printed: median per-sample wall time and process CPU time (less
sensitive to other processes on a shared machine), and their ratios to the host-style arm.

    python bench/augment_dali.py                      # CPU (device_id=None), 1 DALI thread
    python bench/augment_dali.py --device gpu --threads 4 --batch-size 128   # mixed decoding, GPU ops
"""
from __future__ import annotations

import argparse
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--device", choices=("cpu", "gpu"), default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="DALI CPU threads per pipeline (default 1)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--copies", type=int, default=8,
                        help="copies of each photo in the image folder (default 8; raised to fill two batches)")
    parser.add_argument("--blocks", type=int, default=8, help="alternating blocks per arm (default 8)")
    parser.add_argument("--per-block", type=int, default=2, help="batches per block (default 2)")
    parser.add_argument("--p-mix", type=float, default=0.4, help="BG-Mixup probability per view (default 0.4)")
    parser.add_argument("--crop-size", type=int, default=224)
    parser.add_argument("--json", type=Path, default=None, help="also write the medians and ratios to this file")
    return parser.parse_args(argv)


# Each run() does its batch's whole work before returning: no prefetching in the background while the
# other arm is timed (per-sample cost, not overlap).
SYNCHRONOUS = {"exec_async": False, "exec_pipelined": False, "prefetch_queue_depth": 1}


def host_style_pipeline(files: list[str], views, batch_size: int, device: str, threads: int, seed: int):
    from nvidia.dali import fn, pipeline_def, types

    from occon_plugin.augment.dali.pipeline import pipeline_device_id
    from occon_plugin.augment.dali.standard_ops import apply_view_ops

    @pipeline_def(enable_conditionals=True)
    def pipeline():
        encoded, _ = fn.readers.file(files=files, random_shuffle=True, name="Reader")
        images = fn.decoders.image(encoded, device="mixed" if device == "gpu" else "cpu", output_type=types.RGB)
        return tuple(apply_view_ops(images, ops) for ops in views)

    pipe = pipeline(batch_size=batch_size, num_threads=threads, device_id=pipeline_device_id(device), seed=seed,
                    **SYNCHRONOUS)
    pipe.build()
    return pipe


def epoch_runner(pipe):
    """``run(mixed)``: one batch of an object-aware pipeline, starting a new epoch when the source
    ends one; counts mixed views into ``mixed`` = [mixed, total] when given."""
    import numpy as np

    def run(mixed) -> None:
        try:
            out = pipe.run()
        except StopIteration:
            pipe.reset()
            out = pipe.run()
        if mixed is not None:
            n_views = len(out) - 6
            flags = np.stack([np.array(out[n_views + 3][i]) for i in range(len(out[0]))])
            mixed[0] += int(flags.sum())
            mixed[1] += flags.size
    return run


def main(argv=None) -> int:
    args = parse_args(argv)
    sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/augment.py: photos, store, augmentations
    import nvidia.dali
    from PIL import Image
    from skimage import data as skdata

    from augment import PHOTOS, aug_config, constructed_store
    from occon_plugin.augment.config import parse_occon_config
    from occon_plugin.augment.dali.pipeline import build_object_aware_pipeline, standard_view_fn
    from occon_plugin.augment.dali.source import ObjectAwareSource, SampleRecord
    from occon_plugin.augment.dali.standard_ops import views_from_cfg
    from occon_plugin.store import mask_relpath

    sync = lambda: None  # noqa: E731
    if args.device == "gpu":
        import torch

        sync = torch.cuda.synchronize
        gpu = torch.cuda.get_device_name()
    copies = max(args.copies, -(-2 * args.batch_size // len(PHOTOS)))  # at least two batches per epoch
    photos = {f"{name}_{k}": getattr(skdata, name)() for name in PHOTOS for k in range(copies)}
    views = views_from_cfg(aug_config(args.crop_size))
    print(f"machine: {platform.machine()}, {platform.processor() or 'cpu'}"
          f"{', GPU ' + gpu if args.device == 'gpu' else ''}; DALI {nvidia.dali.__version__}, device {args.device}, "
          f"{args.threads} thread(s), batch {args.batch_size}, python {platform.python_version()}")
    print(f"{len(photos)} JPEGs ({len(PHOTOS)} photos x {copies}); two views {args.crop_size}px (MoCo v2 ops); "
          f"BG-Mixup p_mix={args.p_mix}")

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        folder = tmp / "photos"
        folder.mkdir()
        for name, image in photos.items():
            Image.fromarray(image).save(folder / f"{name}.jpg", quality=90)
        entries, _ = constructed_store(photos, tmp / "store")
        records = [SampleRecord(folder / e.path, e.width, e.height, boxes=tuple(map(tuple, e.boxes)),
                                bg_rect=tuple(e.bg_rect), mask_file=tmp / "store" / mask_relpath(e.path),
                                has_entry=True)
                   for e in (entries[n] for n in sorted(entries))]
        host = host_style_pipeline([str(r.image_file) for r in records], views, args.batch_size, args.device,
                                   args.threads, seed=0)
        arms = {"host-style DALI (no masks)": (lambda mixed: host.run(), None)}
        variants = {"OA-Crop": {"oa_crop": {"enabled": True}},
                    "BG-Mixup": {"bg_mixup": {"enabled": True, "p_mix": args.p_mix}},
                    "OA-Crop + BG-Mixup": {"oa_crop": {"enabled": True},
                                           "bg_mixup": {"enabled": True, "p_mix": args.p_mix}}}
        for name, occon in variants.items():
            settings = parse_occon_config({"store": str(tmp / "store"), **occon}, n_views=len(views))
            source = ObjectAwareSource(records, args.batch_size, len(views), settings, seed=0)
            pipe = build_object_aware_pipeline(source, standard_view_fn(views), device=args.device,
                                               num_threads=args.threads, seed=0, **SYNCHRONOUS)
            arms[name] = (epoch_runner(pipe), [0, 0])

        for run, _ in arms.values():  # warm-up: first runs allocate
            for _ in range(2):
                run(None)
        sync()
        wall = {name: [] for name in arms}
        cpu = {name: [] for name in arms}
        for _ in range(args.blocks):
            for name, (run, mixed) in arms.items():
                start, start_cpu = time.perf_counter(), time.process_time()
                for _ in range(args.per_block):
                    run(mixed)
                sync()
                samples = args.per_block * args.batch_size
                wall[name].append((time.perf_counter() - start) / samples)
                cpu[name].append((time.process_time() - start_cpu) / samples)
    base = list(arms)[0]
    print(f"  {'arm':<28} {'wall ms/sample':>15} {'ratio':>7} {'CPU ms/sample':>14} {'ratio':>7}  (medians of "
          f"{args.blocks} blocks)")
    rows = []
    for name, (_, mixed) in arms.items():
        w, c = statistics.median(wall[name]), statistics.median(cpu[name])
        note = f"  views mixed {mixed[0]}/{mixed[1]}" if mixed and mixed[1] and mixed[0] else ""
        print(f"  {name:<28} {w * 1e3:15.3f} {w / statistics.median(wall[base]):7.3f} {c * 1e3:14.3f} "
              f"{c / statistics.median(cpu[base]):7.3f}{note}")
        rows.append({"arm": name, "wall_ms_per_sample": w * 1e3, "wall_ratio": w / statistics.median(wall[base]),
                     "cpu_ms_per_sample": c * 1e3, "cpu_ratio": c / statistics.median(cpu[base])})
    if args.json is not None:
        import json

        args.json.write_text(json.dumps({"device": args.device, "threads": args.threads,
                                         "batch_size": args.batch_size, "crop_size": args.crop_size,
                                         "p_mix": args.p_mix, "blocks": args.blocks, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing
    sys.exit(main())
