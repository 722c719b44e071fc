"""Cost of ContraCAM relative to a plain forward pass, measured side by side in one run.

For each backbone and each expansion setting, times on one fixed batch of real photos:
  plain forward (no_grad features + pool + head), ContraCAM T=1, T=iters, T=iters with early exit, T=iters
  with the backbone forward in bf16 autocast (``precision=bf16``),
and prints each as a ratio to the plain forward (median over repeats; the variants run round-robin
within each repeat so that load on a shared machine hits them alike; one warm-up round first).
The dense CRF's time per image (``refine.method=crf`` at 224x224, pydensecrf's defaults) is printed too.

    python bench/localize.py                      # CPU, 1 thread, 8 photos at 224, CPU-time clock
    python bench/localize.py --device cuda --threads 0
    python bench/localize.py --end-to-end         # whole occon-localize runs on COCO128 vs their floor

``--end-to-end``: each arm is a whole ``occon-localize`` run (a fresh process: decode, resize, ContraCAM,
CRF, boxes, write) on the COCO128 images, against its *floor* measured in the same session: a fresh
process that decodes and resizes the same images in the same batches and runs exactly as many backbone
forwards (the run reports its forwards per batch, with the run's expansion), nothing else; and against a
*plain forward* (decode + resize + one forward per image of the model as trained: no expansion). Arms run round-robin ``--repeats`` times; each row is the median; wall time,
user and system CPU time (the run's main process; its post-processing workers are children of multiprocessing's
fork server and are not counted) and minor page faults come from the OS. "vs plain forward (CPU)" is the run's
user + system CPU time over the plain forward's: the steadier ratio on a shared machine, and the whole cost when
the run post-processes in its main process (``post_workers=0``, what a CPU-only run gets by default).
"""
from __future__ import annotations

import argparse
import os
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
            f"ContraCAM T={args.iters}, precision=bf16": lambda: contracam(model, x, iters=args.iters, expand=expand,
                                                                          precision="bf16"),
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
    from occon_plugin.localize import contracam
    from occon_plugin.localize.refiners import refine

    def crf_refine(image, mask):
        return refine(image, mask, "crf", {})

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


# ------------------------------------------------------------------------------------ end to end

E2E_ARMS = {
    # name: occon-localize overrides (the rest: the preset's). post_workers unset: the cores the backbone leaves
    # free (on a CPU-only machine with torch's default threads: none, so "default" post-processes in-process)
    "default": [],
    "default, post_workers=2": ["post_workers=2"],
    "default, refine none": ["refine.method=none"],
    "default before issue 19": ["cam.iters=3", "refine.method=crf", "refine.crf.max_pixels=4000000"],
    "default, 1 thread": ["threads=1"],
    "default, bf16": ["precision=bf16"],
    "paper": ["preset=paper"],
    "paper, bf16": ["preset=paper", "precision=bf16"],
    "bg_mixup (T=1)": ["preset=bg_mixup"],
    "bg_mixup (T=1), post_workers=2": ["preset=bg_mixup", "post_workers=2"],
    "T=10 fixed, no refinement": ["cam.iters=10", "cam.early_exit_tol=0", "refine.method=none"],
}


def _rusage() -> dict:
    import resource

    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return {"user": me.ru_utime + kids.ru_utime, "sys": me.ru_stime + kids.ru_stime,
            "faults": me.ru_minflt + kids.ru_minflt, "wall": time.perf_counter()}


def _delta(a: dict, b: dict) -> dict:
    return {k: b[k] - a[k] for k in a}


def child_localize(spec: dict) -> dict:
    """In a fresh process: one occon-localize run (the CLI's config path), timed from after imports."""
    from hydra import compose, initialize_config_dir

    from occon_plugin.cli.localize import CONFIG_DIR, settings_from_config
    from occon_plugin.localize.runner import run_localize

    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.2"):
        settings = settings_from_config(compose("localize", overrides=spec["overrides"]))
    start = _rusage()
    summary = run_localize(settings)
    usage = _delta(start, _rusage())
    return {**usage, "batch_forwards": summary["batch_forwards"], "stage_seconds": summary["stage_seconds"],
            "settings": summary["settings"], "images": summary["written_ok"]}


def child_floor(spec: dict) -> dict:
    """In a fresh process: the floor of a run: list, decode (the runner's reader threads) and resize the
    images in the runner's batches, then exactly ``batch_forwards[b]`` image-forwards of batch b through
    the backbone (no_grad, eval, the run's expansion and sub-batching), nothing else."""
    from concurrent.futures import ThreadPoolExecutor

    from occon_plugin.images import list_images, load_image
    from occon_plugin.localize.engine import batched_activations, default_sub_batch, expansion
    from occon_plugin.localize.runner import keep_freed_memory, make_batches, to_model_input
    from occon_plugin.models import load_cam_model

    if spec["threads"]:
        torch.set_num_threads(spec["threads"])
    keep_freed_memory()  # the runner does this on CPU too
    start = _rusage()
    model = load_cam_model(spec["model"], "cpu")
    images = list_images(spec["data"])
    sub = spec["sub_batch"] or default_sub_batch(torch.device("cpu"))
    readers = ThreadPoolExecutor(max_workers=4)
    with torch.no_grad(), expansion(model, spec["expand"], bool(spec.get("dilate"))):
        model.eval()
        batches = make_batches(len(images), spec["batch_size"], 0)
        for batch, forwards in zip(batches, spec["batch_forwards"] or [len(b) for b in batches]):
            loaded = list(readers.map(lambda i: load_image(images.root, images.paths[int(i)]), batch))
            x = torch.stack([to_model_input(img, spec["image_size"]) for img in loaded])
            while forwards > 0:
                part = x[:min(forwards, len(x))]
                batched_activations(model, part, sub)
                forwards -= len(part)
    readers.shutdown()
    return {**_delta(start, _rusage()), "images": len(images)}


def end_to_end(args) -> None:
    import json
    import os
    import shutil
    import subprocess
    import tempfile

    data = Path(args.e2e_data)
    if not data.is_dir():
        raise SystemExit(f"--e2e-data {data}: not a folder of images (default: ../shared/data/coco128/images)")
    arms = {name: E2E_ARMS[name] for name in args.arms} if args.arms else E2E_ARMS
    tmp = Path(tempfile.mkdtemp(prefix="bench_e2e."))
    if args.limit:
        sub = tmp / "images"
        sub.mkdir()
        for f in sorted(p for p in data.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))[:args.limit]:
            os.symlink(f.resolve(), sub / f.name)
        data = sub

    def child(kind: str, spec: dict) -> dict:
        out = subprocess.run([sys.executable, __file__, "--child", kind, json.dumps(spec)], capture_output=True,
                             text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
        if out.returncode:
            raise SystemExit(f"child {kind} failed:\n{out.stdout[-2000:]}\n{out.stderr[-3000:]}")
        return json.loads(out.stdout.strip().splitlines()[-1])

    results: dict[str, list] = {}
    load = []
    for repeat in range(args.repeats):
        load.append(os.getloadavg()[0])
        for name, overrides in arms.items():
            spec = {"overrides": [f"data.path={data}", f"output_dir={tmp / 'store'}", "resume=false",
                                  "progress=false", "device=cpu", *overrides]}
            run = child("localize", spec)
            cam = run["settings"]["cam"]
            floor_spec = {"model": "efficientnet-lite0", "data": str(data), "expand": cam["expand"],
                          "dilate": bool(cam.get("dilate")),
                          "batch_size": run["settings"]["batch_size"], "image_size": run["settings"]["image_size"],
                          "batch_forwards": run["batch_forwards"],
                          "threads": next((int(o.split("=")[1]) for o in overrides if o.startswith("threads=")), None),
                          "sub_batch": next((int(o.split("=")[1]) for o in overrides if o.startswith("sub_batch=")),
                                            None)}
            floor = child("floor", floor_spec)
            # plain forward: the model as trained (no expansion), one forward per image, same decode + resize
            plain = child("floor", {**floor_spec, "batch_forwards": None, "expand": False, "dilate": False})
            results.setdefault(name, []).append({"run": run, "floor": floor, "plain": plain})
            print(f"[e2e] repeat {repeat + 1} {name}: {run['wall']:.1f} s (floor {floor['wall']:.1f} s, "
                  f"plain {plain['wall']:.1f} s), load {os.getloadavg()[0]:.1f}", flush=True)
        # the table so far after every round (a long run interrupted still leaves its medians)
        e2e_table(results, data, repeat + 1, load + [os.getloadavg()[0]])
    shutil.rmtree(tmp, ignore_errors=True)  # the runs' stores and the --limit links


def e2e_table(results: dict, data: Path, repeats: int, load: list) -> None:
    """The --end-to-end table: per arm, medians over the rounds so far."""
    print(f"\nimages: {data} ({results[next(iter(results))][0]['run']['images']}), rounds: {repeats}, "
          f"load average (1 min) at each round: {', '.join(f'{v:.1f}' for v in load)}", flush=True)
    print("| arm | s/image | forwards/image | vs floor (wall) | vs plain forward (wall) | vs plain forward (CPU) | "
          "user s (main process) | floor user s | sys/user | CAM s | post-processing in main s | worker start s |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, rs in results.items():
        med = lambda f: statistics.median(f(r) for r in rs)  # noqa: E731
        stage = lambda r, k: r["run"]["stage_seconds"].get(k, 0.0)  # noqa: E731
        n = rs[0]["run"]["images"]
        print(f"| {name} | {med(lambda r: r['run']['wall']) / n:.3f} | "
              f"{sum(rs[0]['run']['batch_forwards']) / n:.2f} | "
              f"{med(lambda r: r['run']['wall'] / r['floor']['wall']):.2f}x | "
              f"{med(lambda r: r['run']['wall'] / r['plain']['wall']):.2f}x | "
              f"{med(lambda r: (r['run']['user'] + r['run']['sys']) / (r['plain']['user'] + r['plain']['sys'])):.2f}x | "
              f"{med(lambda r: r['run']['user']):.1f} | "
              f"{med(lambda r: r['floor']['user']):.1f} | {med(lambda r: r['run']['sys'] / r['run']['user']):.2f} | "
              f"{med(lambda r: stage(r, 'cam')):.1f} | {med(lambda r: stage(r, 'wait') + stage(r, 'submit')):.1f} | "
              f"{med(lambda r: stage(r, 'start')):.1f} |", flush=True)


FINISH_ARMS = {
    # name: (refine.method, parameters of its steps; None: the default preset's refinement as resolved)
    "default preset": None,
    "crf (224, preset=paper)": ("crf", {}),
    "crf (224, srgb 8 compat 7: the default before issue 19)": ("crf", {"crf": {"bilateral_srgb": 8.0,
                                                                                "bilateral_compat": 7.0}}),
    "guided": ("guided", {}),
    "fgs": ("fgs", {}),
    "none": ("none", {}),
}
COCO_TRAIN2017 = 118_287


def finish_scaling(args) -> None:
    """Post-processing (``finish_mask``: resize, refinement, boxes, background rectangle, PNG) of the same images'
    default-preset CAMs, per refinement: the CPU time of each stage per image in one worker process (= per core:
    a worker is single-threaded), and the wall time per image with ``FinishPool``s of 0 (in this process), 1 and
    2 workers, round-robin, medians of ``--repeats`` (pool start inside the timing, after one warm-up start of
    the fork server). Then the per-image CPU cost of the other CPU stages (decode, model-input resize, the
    store's writes) and the throughput model of ``docs/benchmarks.md``: images/s that C cores can feed."""
    import dataclasses
    import tempfile

    from occon_plugin.images import list_images, load_image
    from occon_plugin.localize import load_cam_model
    from occon_plugin.localize.finish import STAGES, FinishPool, FinishRules
    from occon_plugin.localize.presets import apply_preset
    from occon_plugin.localize.refine import cam_masks, input_u8
    from occon_plugin.localize.refiners import REFINERS, RefineRun, parse_method
    from occon_plugin.localize.runner import LocalizeSettings, to_model_input
    from occon_plugin.store.format import atomic_write_bytes

    import cv2

    torch.set_num_threads(max(1, args.threads))  # per core: the in-process arms and the CPU stages timed here
    cv2.setNumThreads(max(1, args.threads))
    data = Path(args.e2e_data)
    listing = list_images(str(data))
    paths = listing.paths[:args.limit] if args.limit else listing.paths
    cpu = {"decode": 0.0, "model input": 0.0, "write": 0.0}
    images = []
    for p in paths:
        clock = time.thread_time()
        images.append(load_image(listing.root, p))
        cpu["decode"] += time.thread_time() - clock
    clock = time.thread_time()
    x = torch.stack([to_model_input(im, 224) for im in images])
    cpu["model input"] += time.thread_time() - clock
    model = load_cam_model("efficientnet-lite0")
    settings = LocalizeSettings()
    preset = apply_preset(settings, model.spec)
    cams = torch.cat([cam_masks(model, x[i:i + 64], settings.cam).mask for i in range(0, len(x), 64)])[:, 0].numpy()
    rgbs = input_u8(x)
    common = dict(threshold=0.5, bg_threshold=0.2, box_margin=0.2, min_box_area=0.01, min_box_area_before_margin=True)
    rules = {}
    for name, arm in FINISH_ARMS.items():
        if arm is None:
            run = RefineRun.from_settings(settings.refine)
            name = f"{name} ({preset}: {run.method})"
            print(f"{name}: " + "; ".join(f"{n} {dataclasses.asdict(p)}" for n, p in run.params))
        else:
            method, params = arm
            run = RefineRun(method, "input", tuple((n, REFINERS[n].params(**params.get(n, {})))
                                                   for n in parse_method(method)))
        rules[name] = FinishRules(run, **common)
    with FinishPool(1):  # warm-up: the fork server starts once per process (imports torch, OpenCV, pydensecrf)
        pass
    workers = (0, 1, 2)
    times = {(r, w): [] for r in rules for w in workers}
    stage_cpu = {r: {k: [] for k in STAGES} for r in rules}
    for _ in range(args.repeats):
        for rname, rule in rules.items():
            for w in workers:
                start = time.perf_counter()
                with FinishPool(w) as pool:
                    futures = [pool.submit(c, *im.shape[:2], rgb if rule.refine.enabled else None, None, rule)
                               for c, im, rgb in zip(cams, images, rgbs)]
                    done = [pool.result(f) for f in futures]
                times[(rname, w)].append(time.perf_counter() - start)
                if w == 1:
                    for k in STAGES:
                        stage_cpu[rname][k].append(sum(d.seconds.get(k, 0.0) for d in done))
    with tempfile.TemporaryDirectory() as tmp:  # the store's writes: one mask PNG per image, temp file + rename
        for k, d in enumerate(done):
            clock = time.thread_time()
            atomic_write_bytes(Path(tmp) / "masks" / f"{k:06d}.png", d.mask_png)
            cpu["write"] += time.thread_time() - clock
    n = len(images)
    print(f"images: {data} ({n}), default preset CAMs, rounds: {args.repeats}, cores: {os.cpu_count()}, "
          f"load average (1 min): {os.getloadavg()[0]:.1f}")
    print("\nCPU ms per image in one worker process (single-threaded: ms per image per core), median of rounds:\n")
    print("| refinement | " + " | ".join(STAGES) + " | **total** |")
    print("| --- |" + " ---: |" * (len(STAGES) + 1))
    totals = {}
    for rname in rules:
        per = {k: 1000 * statistics.median(stage_cpu[rname][k]) / n for k in STAGES}
        totals[rname] = sum(per.values())
        print(f"| {rname} | " + " | ".join(f"{per[k]:.1f}" for k in STAGES) + f" | **{totals[rname]:.1f}** |")
    print("\nWall ms per image by post_workers (pool start included):\n")
    print("| refinement | post_workers | ms/image (wall) | speed-up vs 1 worker | vs in-process |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for rname in rules:
        one, inproc = statistics.median(times[(rname, 1)]), statistics.median(times[(rname, 0)])
        for w in workers:
            t = statistics.median(times[(rname, w)])
            print(f"| {rname} | {w} | {1000 * t / n:.1f} | {one / t:.2f}x | {inproc / t:.2f}x |")
    other = {k: 1000 * v / n for k, v in cpu.items()}
    print("\nOther CPU stages, ms per image (one thread): " + ", ".join(f"{k} {v:.1f}" for k, v in other.items()))
    print("\nThroughput model: CPU work per image = decode + model input + post-processing + write; C cores feed "
          "C x 1000 / that images/s (the backbone on a GPU, its time not counted here):\n")
    print("| refinement | CPU ms/image | images/s, 8 cores | 16 cores | 32 cores | COCO train2017 (118,287), 16 cores |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for rname in rules:
        ms = sum(other.values()) + totals[rname]
        rate = {c: c * 1000 / ms for c in (8, 16, 32)}
        print(f"| {rname} | {ms:.1f} | {rate[8]:.0f} | {rate[16]:.0f} | {rate[32]:.0f} | "
              f"{COCO_TRAIN2017 / rate[16] / 60:.1f} min |")


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
                        help="also time the dense CRF (refine.method=crf) per image (default: on)")
    parser.add_argument("--end-to-end", action="store_true",
                        help="time whole occon-localize runs against their floor and a plain forward")
    parser.add_argument("--e2e-data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "coco128"
                                                  / "images"), help="image folder for --end-to-end")
    parser.add_argument("--limit", type=int, default=None, help="--end-to-end: only the first N images")
    parser.add_argument("--arms", nargs="+", default=None, choices=sorted(E2E_ARMS), help="--end-to-end arms")
    parser.add_argument("--finish", action="store_true",
                        help="post-processing (resize, refinement, boxes, PNG) per refinement: CPU ms per stage, "
                             "wall with 0, 1 and 2 worker processes, and the throughput model")
    parser.add_argument("--child", nargs=2, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        import json

        kind, spec = args.child[0], json.loads(args.child[1])
        print(json.dumps(child_localize(spec) if kind == "localize" else child_floor(spec)))
        return
    if args.finish:
        finish_scaling(args)
        return
    if args.end_to_end:
        if args.repeats == 5 and "--repeats" not in (argv or sys.argv):
            args.repeats = 3
        end_to_end(args)
        return

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
