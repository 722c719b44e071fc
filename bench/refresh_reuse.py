"""What ``occon.refresh.reuse_iou`` saves: one one-stage run with it and one without, one after the other.

Both runs are ``occon-pretrain`` with the scene-bias benchmark's recipe (``bench/scenebias/protocol.py``,
MoCo v2, its background-set YAML) on the same images and seed, ``occon.refresh`` on with a refresh every
``--every`` epochs after ``--warmup``; they differ only in ``occon.refresh.reuse_iou``. Printed per refresh:
images localized, masks kept, refresh seconds; then the ratio of the summed refresh seconds (with / without)
and of the whole runs' wall times. The first two refreshes of both runs localize every image (two versions
are needed before a mask can count as settled), so they are the same work and show the run-to-run noise.
First, from the run without it: how many masks moved less than each threshold between consecutive refreshes
(``train/refresh.py::mask_ious``, the rule's own IoU), i.e. what other ``--reuse-iou`` values would keep.

    python bench/refresh_reuse.py --data <out>/data/seed0/bg/original/train --out <tmp>
    # --data: any image folder; a scene-bias run's training set (python bench/science.py --plan shows --out)

Wall times on a shared machine: run it alone.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))

from scenebias.protocol import BIN, Recipe  # noqa: E402
from occon_plugin.train.refresh import mask_ious  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--data", type=Path, required=True, help="folder of training images")
    ap.add_argument("--out", type=Path, required=True, help="working folder (both runs go under it)")
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--warmup", type=int, default=5, help="occon.refresh.warmup_epochs (default 5)")
    ap.add_argument("--every", type=int, default=2, help="occon.refresh.every_epochs (default 2)")
    ap.add_argument("--reuse-iou", type=float, default=0.9, help="occon.refresh.reuse_iou of the second run")
    ap.add_argument("--seed", type=int, default=0)
    return ap.parse_args(argv)


def run(args, name: str, extra: list) -> tuple[float, dict]:
    recipe = Recipe(epochs=args.epochs)
    argv = [str(BIN / "occon-pretrain"), "--config-name", "imagenet-9/mocov2_occon", f"++name={name}",
            f"++seed={args.seed}", f"++data.train_path={args.data}", f"++checkpoint.dir={args.out / name}",
            "++auto_resume.enabled=false", *recipe.pretrain_overrides("mocov2"), "++occon.store=null",
            "++occon.refresh.enabled=true", f"++occon.refresh.warmup_epochs={args.warmup}",
            f"++occon.refresh.every_epochs={args.every}", f"++occon.refresh.image_size={recipe.localize_size}",
            *extra]
    log = args.out / f"{name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with open(log, "w") as fh:
        proc = subprocess.run(argv, stdout=fh, stderr=subprocess.STDOUT, env={**os.environ, "WANDB_MODE": "disabled"})
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"[refresh_reuse] {name} failed (exit {proc.returncode}); log {log}")
    record = json.loads((args.out / name / "mocov2_occon" / name / "refresh" / "refresh.json").read_text())
    return wall, record["refreshes"]


def main(argv=None) -> int:
    args = parse_args(argv)
    if not args.data.is_dir():
        print(f"[refresh_reuse] error: --data {args.data} is not a folder of images", file=sys.stderr)
        return 2
    results = {}
    for name, extra in (("off", []), ("reuse", [f"++occon.refresh.reuse_iou={args.reuse_iou}"])):
        results[name] = run(args, name, extra)
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; "
          f"{args.epochs} epochs, warm-up {args.warmup}, refresh every {args.every}, reuse_iou={args.reuse_iou:g}")
    print(f"{'refresh after epoch':>20} | {'off: localized':>14} {'s':>6} | {'reuse: localized':>16} {'kept':>5} {'s':>6}")
    for epoch in sorted(results["off"][1], key=int):
        a, b = results["off"][1][epoch], results["reuse"][1].get(epoch, {})
        print(f"{epoch:>20} | {a['images'] - a.get('carried', 0):>14} {a['seconds']:>6.1f} | "
              f"{b.get('images', 0) - b.get('carried', 0):>16} {b.get('carried', 0):>5} {b.get('seconds', 0):>6.1f}")
    folder = args.out / "off" / "mocov2_occon" / "off" / "refresh"
    versions = sorted(results["off"][1], key=int)
    thresholds = (0.5, 0.6, 0.7, 0.8, 0.9)
    print("masks of the run without reuse whose IoU with the previous refresh's is >= threshold:")
    print(f"{'refresh after epoch':>20} | " + " ".join(f"{t:>6g}" for t in thresholds) + " | median IoU")
    for older, newer in zip(versions, versions[1:]):
        ious = [v for v in mask_ious(folder / f"store-e{newer}", folder / f"store-e{older}").values() if v is not None]
        if ious:
            print(f"{newer:>20} | " + " ".join(f"{sum(v >= t for v in ious) / len(ious):>6.2f}" for t in thresholds)
                  + f" | {statistics.median(ious):.2f} ({len(ious)} images)")
    off_s = sum(r["seconds"] for r in results["off"][1].values())
    re_s = sum(r["seconds"] for r in results["reuse"][1].values())
    kept = sum(r.get("carried", 0) for r in results["reuse"][1].values())
    total = sum(r["images"] for r in results["reuse"][1].values())
    print(f"refresh seconds, summed: off {off_s:.1f}, reuse {re_s:.1f} -> ratio {re_s / off_s:.2f} "
          f"({kept} of {total} masks kept over all refreshes)")
    print(f"whole run wall: off {results['off'][0]:.0f} s, reuse {results['reuse'][0]:.0f} s -> ratio "
          f"{results['reuse'][0] / results['off'][0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
