"""Exploration lab for the refinement step (issue 19): which edge-aware refinement, with which parameters.

Nothing here is a result. ``cams`` caches, per dev set, the default preset's ContraCAM masks at the model input
size exactly as ``occon-localize`` computes them (the runner's seeded batches of 64, ``cam_masks`` with the
preset's settings, 2 torch threads) under a scratch folder outside the repository; ``eval`` then turns them into
final masks with :func:`occon_plugin.localize.refine.final_mask` (the function the runner's workers call) for each
variant and prints mIoU@0.5 with the paired per-image difference to the first variant (mean ± standard error)
and the refinement's cost per image. A variant is ``method[,key=value...]`` with the ``refine.*`` keys of
``occon-localize`` (e.g. ``guided,radius=8,eps=0.01,resolution=input``). The measured choice is then checked
from scratch by ``bench/localize_quality.py``.

    export OCCON_LAB_CACHE=<scratch folder outside the repository>
    python bench/experiments/refine_lab.py cams
    python bench/experiments/refine_lab.py eval crf none guided,radius=8 --set horses-dev
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from occon_plugin.eval.groundtruth import iter_coco, iter_mask_folder  # noqa: E402
from occon_plugin.eval.masks import DEFAULT_SWEEP, iou_curve  # noqa: E402
from occon_plugin.images import list_images, load_image  # noqa: E402
from occon_plugin.localize.presets import apply_preset  # noqa: E402
from occon_plugin.localize.refine import cam_masks, input_u8  # noqa: E402
from occon_plugin.localize.runner import LocalizeSettings, keep_freed_memory, make_batches, to_model_input  # noqa: E402
from occon_plugin.models import load_cam_model  # noqa: E402

SHARED = REPO.parent / "shared" / "data"
SETS = ("coco128", "horses-dev", "ecssd-dev")


def sources(name: str, root: Path = SHARED):
    """(data.path, data.image_root, ground truth iterator) as bench/localize_quality.py reads the set."""
    base = root / name
    if name == "coco128":
        src = base / "annotations" / "instances_train2017.json"
        return src, base / "images", iter_coco(src, base / "images")
    return base / "images", None, iter_mask_folder(base / "images", base / "masks")


def cache_file(cache: Path, name: str, preset: str) -> Path:
    return cache / "refine_lab" / f"{name}.{preset}.npz"


def compute_cams(name: str, cache: Path, preset: str = "auto", threads: int = 2, iters: int | None = None) -> Path:
    torch.set_num_threads(threads)
    keep_freed_memory()
    src, image_root, _ = sources(name)
    listing = list_images(src, image_root)
    model = load_cam_model("efficientnet-lite0")
    s = LocalizeSettings(preset=preset)
    if iters is not None:
        s.cam.iters = iters
    apply_preset(s, model.spec)
    paths, cams, rgbs = [], [], []
    for batch in make_batches(len(listing), s.batch_size, s.seed):
        n_members = len(batch)
        images = [load_image(listing.root, listing.paths[int(i)]) for i in batch]
        x = torch.stack([to_model_input(im, s.image_size) for im in images])
        result = cam_masks(model, x, s.cam)
        done = set(paths)
        for k in range(n_members):
            rel = listing.paths[int(batch[k])]
            if rel in done:  # a top-up image: its own batch wrote it
                continue
            paths.append(rel)
            cams.append(result.mask[k, 0].float().numpy())
            rgbs.append(input_u8(x[k:k + 1])[0])
        print(f"[lab] {name}: {len(paths)}/{len(listing)}", flush=True)
    out = cache_file(cache, name, preset if iters is None else f"{preset}-t{iters}")
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(out, paths=np.array(paths), cams=np.stack(cams), rgbs=np.stack(rgbs),
             root=str(listing.root))
    return out


def parse_variant(text: str):
    """``crf+fgs,crf.max_pixels=6400,fgs.lam=300[,resolution=input]`` -> a RefineRun: the default preset's
    parameters for the methods named, with the keys given replacing them."""
    import dataclasses

    from occon_plugin.localize.presets import preset
    from occon_plugin.localize.refiners import REFINERS, RefineRun, parse_method

    method, *rest = text.split(",")
    lite = preset("lite").refine
    keys = {name: {k: v for k, v in dataclasses.asdict(getattr(lite, name)).items() if v is not None}
            for name in REFINERS}
    resolution = "input"
    for kv in rest:
        k, v = kv.split("=")
        if k == "resolution":
            resolution = v
            continue
        name, key = k.split(".")
        kind = {f.name: f.type for f in dataclasses.fields(REFINERS[name].params)}[key]
        keys[name][key] = int(v) if "int" in str(kind) else float(v)
    params = tuple((n, REFINERS[n].params(**keys[n])) for n in parse_method(method))
    return RefineRun(method=method, resolution=resolution, params=params)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("cams")
    c.add_argument("--set", nargs="+", default=list(SETS))
    c.add_argument("--preset", default="auto")
    c.add_argument("--iters", type=int, default=None)
    e = sub.add_parser("eval")
    e.add_argument("variants", nargs="+")
    e.add_argument("--set", nargs="+", default=list(SETS))
    e.add_argument("--preset", default="auto", help="which cached CAMs: auto, auto-t2 (cams --iters 2), ...")
    e.add_argument("--limit", type=int, default=None)
    for q in (c, e):
        q.add_argument("--cache", default=os.environ.get("OCCON_LAB_CACHE", str(REPO / "outputs" / "lab_cache")))
    args = p.parse_args(argv)
    cache = Path(args.cache)
    if args.cmd == "cams":
        for name in args.set:
            print(compute_cams(name, cache, args.preset, iters=args.iters))
        return
    evaluate(args, cache)


def evaluate(args, cache: Path) -> None:
    from occon_plugin.localize.refine import final_mask

    torch.set_num_threads(1)
    import cv2

    cv2.setNumThreads(1)
    variants = [(v, parse_variant(v)) for v in args.variants]
    for name in args.set:
        data = np.load(cache_file(cache, name, args.preset))
        root = Path(str(data["root"]))
        index = {str(p): k for k, p in enumerate(data["paths"])}
        all_cams, all_rgbs = data["cams"], data["rgbs"]
        _, _, gts = sources(name)
        gts = list(gts)
        if args.limit:
            idx = np.linspace(0, len(gts) - 1, args.limit).round().astype(int)
            gts = [gts[i] for i in dict.fromkeys(idx.tolist())]
        ious = {v: [] for v, _ in variants}
        best = {v: [] for v, _ in variants}
        secs = {v: 0.0 for v, _ in variants}
        for g in gts:
            k = index[g.path]
            image = load_image(root, g.path)
            h, w = image.shape[:2]
            cam, rgb = all_cams[k], all_rgbs[k]
            for v, rule in variants:
                guide = rgb if rule.resolution == "input" else image
                start = time.thread_time()
                _, final = final_mask(cam, h, w, guide if rule.enabled else None, rule, soft=False)
                secs[v] += time.thread_time() - start
                curve = iou_curve(final, g.mask, [0.5, *DEFAULT_SWEEP])
                ious[v].append(curve[0])
                best[v].append(curve[1:])
        print(f"== {name} ({len(gts)} images)", flush=True)
        ref = np.array(ious[variants[0][0]])
        for v, _ in variants:
            a = np.array(ious[v])
            d = a - ref
            se = d.std(ddof=1) / np.sqrt(len(d))
            sweep = np.mean(best[v], 0)
            print(f"  {a.mean():.4f}  {d.mean():+.4f} ± {se:.4f}  oracle {sweep.max():.3f}@{DEFAULT_SWEEP[int(sweep.argmax())]:.2f}"
                  f"  {1000 * secs[v] / len(gts):6.1f} ms/img  {v}", flush=True)


if __name__ == "__main__":
    main()
