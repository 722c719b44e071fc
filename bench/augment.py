"""Per-sample cost of the object-aware augmentations vs the host's baseline transform (CPU).

Two side-by-side comparisons on real photos (scikit-image) with a constructed store:

1. transforms: the host's standard transform applied to two views of an in-memory image
   (baseline) vs OA-Crop + BG-Mixup + the same two views (``TorchvisionObjectAware.sample_views``).
2. dataset: ``OcconPretrainDataset.__getitem__`` from JPEG files with ``occon`` off (baseline,
   the host transform) vs on (store entry, mask PNG and each mixed view's donor image read).

Times are CPU seconds of this process by default (``--clock cpu``: ``time.process_time``, one
torch/OpenCV thread), which other load on a shared machine disturbs far less than wall time
(``--clock wall``); the arms alternate in blocks, each block's per-sample time is recorded and
the ratio of medians is printed.

    python bench/augment.py                       # defaults: 20 blocks x 20 samples, p_mix 0.4
    python bench/augment.py --blocks 5 --quick    # smoke run

The DALI comparison lives in ``bench/augment_dali.py`` (a separate script, same photos and store).
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "immunohistochemistry")
BOXES = [[0.10, 0.10, 0.60, 0.70], [0.40, 0.30, 0.95, 0.95]]


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--blocks", type=int, default=20, help="alternating blocks per arm (default 20)")
    parser.add_argument("--per-block", type=int, default=20, help="samples per block (default 20)")
    parser.add_argument("--p-mix", type=float, default=0.4, help="BG-Mixup probability per view (default 0.4)")
    parser.add_argument("--crop-size", type=int, default=224, help="view size (default 224)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1: one data worker)")
    parser.add_argument("--clock", choices=("cpu", "wall"), default="cpu",
                        help="cpu: process CPU time (default, robust to other load); wall: perf_counter")
    parser.add_argument("--quick", action="store_true", help="transforms comparison only (skip the dataset one)")
    return parser.parse_args(argv)


def aug_config(crop_size: int) -> list[dict]:
    """MoCo v2 standard augmentation (paper: RandomResizedCrop scale 0.08..1), two views."""
    return [{"rrc": {"enabled": True, "crop_min_scale": 0.08, "crop_max_scale": 1.0},
             "color_jitter": {"prob": 0.8, "brightness": 0.4, "contrast": 0.4, "saturation": 0.4, "hue": 0.1},
             "grayscale": {"prob": 0.2}, "gaussian_blur": {"prob": 0.5, "sigma_min": 0.1, "sigma_max": 2.0},
             "solarization": {"prob": 0.0}, "equalization": {"prob": 0.0}, "horizontal_flip": {"prob": 0.5},
             "crop_size": crop_size, "num_crops": 2}]


def constructed_store(photos: dict, out: Path):
    """A store for the photos: two boxes, a soft elliptic mask and a corner background rectangle each."""
    import numpy as np

    from occon_plugin.store import StoreEntry, StoreWriter, mask_to_u8

    entries, masks = {}, {}
    writer = StoreWriter(out, settings={"bench": "augment"}, model_hash="constructed", resume=False)
    for name, image in photos.items():
        height, width = image.shape[:2]
        yy, xx = np.mgrid[0:height, 0:width]
        masks[name] = np.clip(1.5 - np.hypot((xx - width / 2) / (width / 4), (yy - height / 2) / (height / 3)),
                              0, 1).astype(np.float32)
        entry = StoreEntry(f"{name}.jpg", width, height, boxes=BOXES, bg_rect=[0, 0, width // 4, height // 5])
        writer.write(entry, mask_to_u8(masks[name]))
        entries[name] = entry
    writer.close(listed=len(photos))
    return entries, masks


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown cpu"


def timed_blocks(arms: dict, blocks: int, per_block: int, clock=time.process_time) -> dict:
    """Alternate the arms block by block; per-sample seconds of every block."""
    times = {name: [] for name in arms}
    step = 0
    for _ in range(blocks):
        for name, run in arms.items():
            start = clock()
            for _ in range(per_block):
                run(step)
                step += 1
            times[name].append((clock() - start) / per_block)
    return times


def report(title: str, times: dict, clock_name: str) -> None:
    base_name, oa_name = list(times)
    base, oa = statistics.median(times[base_name]), statistics.median(times[oa_name])
    print(f"{title}")
    print(f"  {base_name:<34} {base * 1e3:8.2f} ms/sample {clock_name} (median of {len(times[base_name])} blocks)")
    print(f"  {oa_name:<34} {oa * 1e3:8.2f} ms/sample")
    print(f"  ratio object-aware / baseline       {oa / base:8.3f}x")


def main(argv=None) -> int:
    args = parse_args(argv)
    import cv2
    import torch
    from omegaconf import OmegaConf
    from PIL import Image
    from skimage import data as skdata

    from occon_plugin.augment.config import parse_occon_config
    from occon_plugin.augment.dataset import OcconPretrainDataset, build_view_transforms
    from occon_plugin.augment.semantics import Partner
    from occon_plugin.augment.torchvision_pipeline import TorchvisionObjectAware

    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)  # OpenCV (the BG-Mixup blend) on the same budget
    photos = {name: getattr(skdata, name)() for name in PHOTOS}
    names = list(photos)
    augmentations = OmegaConf.create(aug_config(args.crop_size))
    transforms = build_view_transforms(augmentations)
    print(f"machine: {platform.machine()} {cpu_name()}, {os.cpu_count()} cores, torch threads {args.threads}, "
          f"python {platform.python_version()}, torch {torch.__version__}")
    print(f"photos: {', '.join(f'{n} {photos[n].shape[1]}x{photos[n].shape[0]}' for n in names)}; "
          f"views {args.crop_size}px; OA-Crop on; BG-Mixup p_mix={args.p_mix}")

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        entries, masks = constructed_store(photos, tmp / "store")
        occon = {"store": str(tmp / "store"), "oa_crop": {"enabled": True},
                 "bg_mixup": {"enabled": True, "p_mix": args.p_mix}}
        pipeline = TorchvisionObjectAware(parse_occon_config(occon, n_views=len(transforms)), transforms)
        pils = {n: Image.fromarray(photos[n]) for n in names}

        def baseline(step: int) -> None:
            pil = pils[names[step % len(names)]]  # the host's own path: PIL in, one call per view
            [t(pil) for t in transforms]

        def object_aware(step: int) -> None:
            name = names[step % len(names)]
            donors = [names[(step + 1 + v) % len(names)] for v in range(len(transforms))]  # one donor per view
            partners = [Partner.from_image(photos[d], entries[d].bg_rect) for d in donors]
            pipeline.sample_views(photos[name], entries[name], masks[name], partners, seed=step)

        report("transforms (in-memory photos, two views):",
               timed_blocks({"host baseline": baseline, "OA-Crop + BG-Mixup": object_aware},
                            args.blocks, args.per_block, clock), args.clock)
        if args.quick:
            return 0

        folder = tmp / "photos"
        folder.mkdir()
        for name in names:
            Image.fromarray(photos[name]).save(folder / f"{name}.jpg", quality=90)
        plain = OcconPretrainDataset(folder, None, transforms, seed=0)
        aware = OcconPretrainDataset(folder, occon, transforms, seed=0)
        mixed = [0, 0]

        def count_mixed(step: int) -> None:
            info = aware[(step % len(aware), step)][3]  # (index, sample seed): fresh draws every step
            mixed[0] += int(info["mixed"].sum())
            mixed[1] += 2

        report("dataset __getitem__ (JPEG decode + mask PNG + partner image when mixed):",
               timed_blocks({"occon off (host baseline)": lambda s: plain[(s % len(plain), s)],
                             "occon on": count_mixed}, args.blocks, args.per_block, clock), args.clock)
        print(f"  views mixed: {mixed[0]}/{mixed[1]} ({mixed[0] / max(mixed[1], 1):.2f}; p_mix {args.p_mix})")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing
    sys.exit(main())
