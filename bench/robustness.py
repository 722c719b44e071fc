"""Costs of the robustness checks (issue 10), measured side by side in one run.

1. ``checks``: per-image CPU time of what the pretraining pipelines do before the first step for an
   image the store does not vouch for (``inspect_image(decode=True)``: header + a decode check that
   walks the whole JPEG stream at 1/8 scale / every PNG chunk's CRC), for a store entry
   (``file_fingerprint`` + header), and of one full decode by the shared rule (``load_image``, what a
   training step pays per sample anyway). Ratios are to the full decode.
2. ``crf``: peak memory (max RSS) of ``occon-localize`` with the CRF on one large photo, with the CRF's
   working size bounded (``refine.crf.max_pixels``, default 4 MP) and unbounded (``refine.crf.max_pixels=0``),
   each in a fresh process.

    python bench/robustness.py checks [--images <folder>]      # default: ../shared/data/coco128/images
    python bench/robustness.py crf --size 4000x3000             # both arms
    python bench/robustness.py crf --size 8000x6000 --bounded-only
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def machine() -> str:
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"


def bench_checks(folder: Path, rounds: int) -> None:
    from occon_plugin.images import file_fingerprint, inspect_image, list_images, load_image

    images = list_images(folder)
    arms = {"decode check (no store entry)": lambda r: inspect_image(images.root, r, decode=True),
            "fingerprint + header (store entry)": lambda r: (file_fingerprint(images.root / r),
                                                             inspect_image(images.root, r)),
            "full decode (load_image)": lambda r: load_image(images.root, r)}
    per_image: dict[str, list[float]] = {k: [] for k in arms}
    for _ in range(rounds):  # arms alternate; each round visits every image once per arm
        for name, fn in arms.items():
            start = time.process_time()
            for rel in images.paths:
                fn(rel)
            per_image[name].append((time.process_time() - start) / len(images))
    full = statistics.median(per_image["full decode (load_image)"])
    print(f"# checks: {len(images)} images under {folder}, {rounds} rounds, CPU time per image; {machine()}")
    for name, times in per_image.items():
        med = statistics.median(times)
        print(f"{name:40s} {med * 1e3:8.3f} ms/image   x{med / full:5.2f} of a full decode")


def _photo(size: tuple[int, int], path: Path) -> None:
    import numpy as np
    import skimage.data
    from PIL import Image

    img = Image.fromarray(np.asarray(skimage.data.astronaut())).resize(size, Image.BICUBIC)
    img.save(path, quality=90)


def bench_crf(size: tuple[int, int], bounded_only: bool) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "photos"
        data.mkdir()
        _photo(size, data / "large.jpg")
        _photo((320, 240), data / "small.jpg")
        arms = [("bounded (refine.crf.max_pixels=4000000)", [])]
        if not bounded_only:
            arms.append(("unbounded (refine.crf.max_pixels=0)", ["refine.crf.max_pixels=0"]))
        print(f"# crf: occon-localize on one {size[0]}x{size[1]} photo (+ one small), T=1, CRF at image size; {machine()}")
        results = {}
        for name, extra in arms:
            # VmHWM: the process's own peak RSS (ru_maxrss would include the parent's at fork time)
            code = ("import sys; sys.argv = ['occon-localize'] + sys.argv[1:]; "
                    "from occon_plugin.cli.localize import main\n"
                    "try:\n    main()\nfinally:\n"
                    "    print('PEAK_KB', next(l for l in open('/proc/self/status') if l.startswith('VmHWM:'))"
                    ".split()[1], file=sys.stderr)")
            start = time.perf_counter()
            proc = subprocess.run([sys.executable, "-c", code, f"data.path={data}",
                                   f"output_dir={Path(tmp) / name.split()[0]}", "cam.iters=1", "batch_size=2", "refine.method=crf",
                                   "refine.resolution=image",
                                   "progress=false", "threads=1", *extra], capture_output=True, text=True)
            seconds = time.perf_counter() - start
            peak = next((int(l.split()[1]) for l in proc.stderr.splitlines() if l.startswith("PEAK_KB")), None)
            if proc.returncode != 0 or peak is None:
                print(f"{name}: failed (exit {proc.returncode}): {proc.stderr[-500:]}")
                continue
            results[name] = peak
            print(f"{name:36s} peak RSS {peak / 2**20:6.2f} GiB   {seconds:6.1f} s wall")
        if len(results) == 2:
            bounded, unbounded = results.values()
            print(f"unbounded / bounded peak memory: x{unbounded / bounded:.2f}")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="what", required=True)
    checks = sub.add_parser("checks")
    checks.add_argument("--images", type=Path, default=REPO.parent / "shared" / "data" / "coco128" / "images")
    checks.add_argument("--rounds", type=int, default=3)
    crf = sub.add_parser("crf")
    crf.add_argument("--size", default="4000x3000")
    crf.add_argument("--bounded-only", action="store_true")
    args = parser.parse_args(argv)
    if args.what == "checks":
        bench_checks(args.images, args.rounds)
    else:
        w, h = (int(v) for v in args.size.lower().split("x"))
        bench_crf((w, h), args.bounded_only)


if __name__ == "__main__":
    main()
