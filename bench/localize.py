"""Cost of ContraCAM relative to a plain forward pass, measured side by side in one run.

For each backbone and each expansion setting, times on one fixed batch of real photos:
  plain forward (no_grad features + pool + head), ContraCAM T=1, T=iters, T=iters with early exit,
and prints each as a ratio to the plain forward (median over repeats; the variants run round-robin
within each repeat so that load on a shared machine hits them alike; one warm-up round first).
If ``occon_plugin.localize.crf.crf_refine`` exists, the CRF time per image is printed too.

    python bench/localize.py                      # CPU, 1 thread, 8 photos at 224, CPU-time clock
    python bench/localize.py --device cuda --threads 0
"""
from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry",
          "stereo_motorcycle", "camera")


def photo_batch(size: int, count: int) -> torch.Tensor:
    """Real photos shipped with scikit-image, resized to size x size, float in [0,1]."""
    import skimage.data

    images = []
    for name in (PHOTOS * (count // len(PHOTOS) + 1))[:count]:
        array = getattr(skimage.data, name)()
        array = array[0] if isinstance(array, tuple) else array  # stereo pair -> left view
        array = np.stack([array] * 3, -1) if array.ndim == 2 else array[..., :3]
        image = torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1)[None].float() / 255
        images.append(F.interpolate(image, size=(size, size), mode="bilinear", antialias=True))
    return torch.cat(images).clamp(0, 1)


CLOCKS = {"cpu": time.process_time, "wall": time.perf_counter}
CLOCK = CLOCKS["wall"]


def folder_batch(folder: Path, size: int, count: int) -> torch.Tensor:
    """The first ``count`` JPEG/PNG files under ``folder`` (sorted), resized to size x size, in [0,1]."""
    from PIL import Image

    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))[:count]
    if len(files) < 2:
        raise SystemExit(f"--images {folder}: need at least 2 .jpg/.png files, found {len(files)}")
    images = [torch.from_numpy(np.asarray(Image.open(f).convert("RGB"))).permute(2, 0, 1)[None].float() / 255
              for f in files]
    return torch.cat([F.interpolate(i, size=(size, size), mode="bilinear", antialias=True) for i in images]).clamp(0, 1)


def tol_sweep(spec: str, x: torch.Tensor, args, device: torch.device) -> None:
    """What early exit saves (backbone forwards) and what it changes (agreement with the fixed-T mask)."""
    from occon_plugin.localize import contracam, load_cam_model

    model = load_cam_model(spec, device)
    print(f"| model | expansion | early_exit_tol | backbone forwards / image | mean abs diff | max abs diff | "
          f"IoU of masks > 0.5 vs fixed T={args.iters} |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    for expand in (False, True):
        fixed = contracam(model, x, iters=args.iters, expand=expand).mask
        for tol in args.tol_sweep:
            result = contracam(model, x, iters=args.iters, expand=expand, early_exit_tol=tol)
            diff = (result.mask - fixed).abs()
            a, b = result.mask > 0.5, fixed > 0.5
            iou = ((a & b).flatten(1).sum(1) / (a | b).flatten(1).sum(1).clamp_min(1)).mean().item()
            print(f"| {spec} | {'14x14' if expand else '7x7'} | {tol:g} | {result.iterations.float().mean():.2f} | "
                  f"{diff.mean():.4f} | {diff.max():.3f} | {iou:.3f} |")


def timed(fn, device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = CLOCK()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return CLOCK() - start


def bench_model(spec: str, x: torch.Tensor, args, device: torch.device) -> list[dict]:
    from occon_plugin.localize import contracam, load_cam_model

    model = load_cam_model(spec, device)
    rows = []
    for expand in (False, True):
        def plain():
            with torch.no_grad(), model.expansion(expand):
                model.head(model.pool(model.features(x)))

        forwards = {}

        def early():
            forwards["early"] = contracam(model, x, iters=args.iters, expand=expand,
                                          early_exit_tol=args.tol).iterations.float().mean().item()

        variants = {
            "plain forward": plain,
            "ContraCAM T=1": lambda: contracam(model, x, iters=1, expand=expand),
            f"ContraCAM T={args.iters}": lambda: contracam(model, x, iters=args.iters, expand=expand),
            f"ContraCAM T={args.iters}, early exit tol={args.tol}": early,
        }
        for fn in variants.values():  # warm-up
            fn()
        times = {name: [] for name in variants}
        for _ in range(args.repeats):
            for name, fn in variants.items():
                times[name].append(timed(fn, device))
        base = statistics.median(times["plain forward"])
        for name in variants:
            median = statistics.median(times[name])
            rows.append({"model": spec, "expand": expand, "variant": name, "ms": 1000 * median,
                         "ratio": median / base,
                         "forwards": forwards["early"] if "early" in name else None})
    if args.crf:
        rows.extend(bench_crf(model, spec, x, args, device))
    return rows


def bench_crf(model, spec: str, x: torch.Tensor, args, device: torch.device) -> list[dict]:
    try:
        from occon_plugin.localize.crf import crf_refine
    except ImportError:
        print("(occon_plugin.localize.crf.crf_refine not available: CRF not timed)")
        return []
    from occon_plugin.localize import contracam

    masks = contracam(model, x, iters=args.iters, expand=True).mask[:, 0].cpu().numpy()
    images = (x.permute(0, 2, 3, 1).cpu().numpy() * 255).round().astype(np.uint8)

    def plain_one():
        with torch.no_grad():
            model.head(model.pool(model.features(x[:1])))

    crf_refine(images[0], masks[0])  # warm-up
    plain_one()
    crf, plain = [], []
    for _ in range(args.repeats):
        for image, mask in zip(images, masks):
            crf.append(timed(lambda: crf_refine(image, mask), device))
        plain.append(timed(plain_one, device))
    return [{"model": spec, "expand": True, "variant": "CRF per image (vs plain forward of 1 image)",
             "ms": 1000 * statistics.median(crf), "ratio": statistics.median(crf) / statistics.median(plain),
             "forwards": None}]


def print_table(rows: list[dict]) -> None:
    print("| model | expansion | variant | median ms | ratio to plain forward | backbone forwards / image |")
    print("| --- | --- | --- | ---: | ---: | ---: |")
    for r in rows:
        forwards = "" if r["forwards"] is None else f"{r['forwards']:.2f}"
        print(f"| {r['model']} | {'14x14' if r['expand'] else '7x7'} | {r['variant']} | {r['ms']:.1f} | "
              f"{r['ratio']:.2f}x | {forwards} |")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N] (default: cpu)")
    parser.add_argument("--models", nargs="+", default=["efficientnet-lite0", "torchvision:resnet18"],
                        help="load_cam_model specs (default: efficientnet-lite0 torchvision:resnet18)")
    parser.add_argument("--batch", type=int, default=8, help="images per batch (default: 8)")
    parser.add_argument("--size", type=int, default=224, help="image side in pixels (default: 224)")
    parser.add_argument("--iters", type=int, default=10, help="T for the iterative runs (default: 10)")
    parser.add_argument("--tol", type=float, default=0.05, help="early_exit_tol for the early-exit run (default: 0.05)")
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats after one warm-up (default: 5)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads; 0 = torch's default (default: 1)")
    parser.add_argument("--clock", choices=sorted(CLOCKS), default=None,
                        help="cpu = this process's CPU time (steadier on a shared machine), wall = elapsed "
                             "(default: cpu on --device cpu, wall on cuda)")
    parser.add_argument("--images", type=Path, default=None,
                        help="folder of .jpg/.png images to use instead of the scikit-image photos (first --batch, sorted)")
    parser.add_argument("--tol-sweep", type=float, nargs="+", default=None, metavar="TOL",
                        help="instead of timing: for each TOL, backbone forwards per image and agreement with fixed T")
    parser.add_argument("--crf", action=argparse.BooleanOptionalAction, default=True,
                        help="also time crf_refine per image if occon_plugin.localize.crf exists (default: on)")
    args = parser.parse_args(argv)

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda asked for, but torch sees no CUDA device")
    global CLOCK
    clock = args.clock or ("wall" if device.type == "cuda" else "cpu")
    CLOCK = CLOCKS[clock]
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    x = (folder_batch(args.images, args.size, args.batch) if args.images else photo_batch(args.size, args.batch)).to(device)
    machine = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    print(f"device={device} ({machine}), clock={clock}, torch threads={torch.get_num_threads()}, batch={args.batch}x{args.size}^2, "
          f"repeats={args.repeats}, torch {torch.__version__}")
    if args.tol_sweep:
        for spec in args.models:
            tol_sweep(spec, x, args, device)
        return
    rows = []
    for spec in args.models:
        rows.extend(bench_model(spec, x, args, device))
    print_table(rows)


if __name__ == "__main__":
    main()
