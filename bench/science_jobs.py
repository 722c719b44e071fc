"""Why ``bench/science.py`` runs two steps at a time on a CPU: two pretraining runs one after the other (every
core each, torch's default) vs side by side (``OMP_NUM_THREADS`` = cores / 2 each), measured in one script.

Each run is the scene-bias benchmark's stage-1 command (``bench/scenebias/protocol.py``: ``occon-pretrain``, MoCo v2,
its recipe, ``data.num_workers=2``) for ``--epochs`` epochs on ``--data`` (a science run's training folder).

    python bench/science_jobs.py --data <science out>/data/seed0/bg/original/train --out <tmp>

Prints the wall time of each way and the ratio (one at a time / side by side). Wall times: run it alone.
"""
from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))

from scenebias.protocol import BIN, Recipe  # noqa: E402
from scenebias.report import cpu_count  # noqa: E402


def command(data: Path, out: Path, name: str, epochs: int) -> list:
    return [str(BIN / "occon-pretrain"), "--config-name", "imagenet-9/mocov2plus", f"++name={name}", "++seed=0",
            f"++data.train_path={data}", f"++checkpoint.dir={out / name}", "++auto_resume.enabled=false",
            *Recipe(epochs=epochs).pretrain_overrides("mocov2")]


def run(names: list, data: Path, out: Path, epochs: int, threads: int | None) -> float:
    """Start one run per name at once; wait for all. Returns the wall time."""
    env = {**os.environ, "WANDB_MODE": "disabled"}
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    start = time.perf_counter()
    procs = [subprocess.Popen(command(data, out, name, epochs), stdout=open(out / f"{name}.log", "w"),
                              stderr=subprocess.STDOUT, env=env) for name in names]
    codes = [p.wait() for p in procs]
    if any(codes):
        sys.exit(f"[science_jobs] a run failed (exit {codes}); logs in {out}")
    return time.perf_counter() - start


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--epochs", type=int, default=5)
    args = ap.parse_args(argv)
    if not args.data.is_dir():
        print(f"[science_jobs] error: --data {args.data} is not a folder of images", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    cores = cpu_count()
    seq = sum(run([f"seq{i}"], args.data, args.out, args.epochs, None) for i in range(2))
    par = run(["par0", "par1"], args.data, args.out, args.epochs, max(1, cores // 2))
    print(f"machine: {platform.machine()}, {cores} cores, Python {platform.python_version()}; two {args.epochs}-epoch "
          f"MoCo v2 runs")
    print(f"one at a time (every core each): {seq:.0f} s; side by side ({max(1, cores // 2)} thread(s) each): "
          f"{par:.0f} s; ratio {seq / par:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
