"""Paired comparisons of localization variants on the dev sets, from the lab's cached CAMs.

    python bench/experiments/compare.py --ref 'expand=stride|t=10|crf=img' \
        --variants 'expand=none|t=10|crf=img' 'expand=none|t=10' --set horses-dev ecssd-dev coco128

A variant is ``<lab Cfg>|<post-processing keys>``; the Cfg part may join several Cfgs with ``+`` (their
aggregated masks are averaged at 224, e.g. a flip TTA ``expand=none+expand=none,flip=True``).
Post-processing keys: ``t`` (iterations used), ``up`` (runner: 224 bilinear then bilinear to the image,
8-bit; bicubic: the authors' bicubic low->224), ``crf`` (none | img: the runner's CRF at image size | 224:
CRF on the 224x224 resized image, marginal upsampled | 224a: the authors' CRF at 224 (unary -log(p+1e-20))),
``gamma`` (mask ** gamma before the CRF/threshold), ``bc``/``bsxy``/``srgb``/``gc``/``it`` (CRF bilateral
compat, bilateral sxy, srgb, gaussian compat, iterations), ``guided`` (radius of an image-guided filter
applied to the soft map at image size, eps in ``geps``).

Prints, per set, mIoU@0.5 of each variant and its paired difference to the reference with the standard
error of the mean difference (per-image IoU differences), plus the oracle-threshold mIoU apart.
"""
from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from lab import SETS, Cfg, aggregate, keep_allocations, load_or_compute, load_set, quick_subset  # noqa: E402
from occon_plugin.eval.masks import DEFAULT_SWEEP, iou_curve  # noqa: E402
from occon_plugin.localize.crf import CrfParams  # noqa: E402
from occon_plugin.localize.refiners import refine  # noqa: E402
from occon_plugin.localize.runner import to_model_input  # noqa: E402
from occon_plugin.store import mask_to_u8  # noqa: E402


@dataclass
class Variant:
    text: str
    cfgs: list
    post: dict = field(default_factory=dict)

    @staticmethod
    def parse(text: str) -> "Variant":
        head, *rest = text.split("|")
        post = {}
        cfg_text = head
        # allow the Cfg part to be absent: "t=3|crf=img" uses the default Cfg
        if any(head.startswith(k + "=") for k in ("t", "up", "crf", "gamma")):
            cfg_text, rest = "default", [head, *rest]
        for part in rest:
            for kv in part.split(","):
                if kv:
                    k, v = kv.split("=")
                    post[k] = v
        return Variant(text, [Cfg.parse(c) for c in cfg_text.split("+")], post)


def _crf_params(post: dict) -> CrfParams:
    p = CrfParams()
    for key, attr in (("bc", "bilateral_compat"), ("bsxy", "bilateral_sxy"), ("srgb", "bilateral_srgb"),
                      ("gc", "gauss_compat"), ("gsxy", "gauss_sxy"), ("it", "iters"), ("clip", "clip")):
        if key in post:
            setattr(p, attr, type(getattr(p, attr))(post[key]))
    return p


def crf_refine(image: np.ndarray, soft: np.ndarray, params: CrfParams) -> np.ndarray:
    """The runner's CRF step (refine.method=crf)."""
    return refine(image, soft, "crf", {"crf": params})


def authors_crf(image_u8: np.ndarray, fg: np.ndarray, params: CrfParams) -> np.ndarray:
    """The authors' apply_crf: unary -log(p + 1e-20) for (fg, bg), pydensecrf defaults."""
    import pydensecrf.densecrf as dcrf

    h, w = fg.shape
    prob = np.stack([fg, 1 - fg]).reshape(2, -1).astype(np.float32)
    d = dcrf.DenseCRF2D(w, h, 2)
    d.setUnaryEnergy(np.ascontiguousarray(-np.log(prob + 1e-20), dtype=np.float32))
    d.addPairwiseGaussian(sxy=params.gauss_sxy, compat=params.gauss_compat)
    d.addPairwiseBilateral(sxy=params.bilateral_sxy, srgb=params.bilateral_srgb, rgbim=np.ascontiguousarray(image_u8),
                           compat=params.bilateral_compat)
    q = np.asarray(d.inference(params.iters), dtype=np.float32)
    return q[0].reshape(h, w)


def guided_filter(guide: np.ndarray, src: np.ndarray, radius: int, eps: float) -> np.ndarray:
    """He et al. guided filter (grey guide), box filters from OpenCV."""
    import cv2

    g = cv2.cvtColor(guide, cv2.COLOR_RGB2GRAY).astype(np.float32) / 255.0
    k = (2 * radius + 1, 2 * radius + 1)
    mean = lambda a: cv2.boxFilter(a, -1, k)  # noqa: E731
    mg, ms = mean(g), mean(src)
    a = (mean(g * src) - mg * ms) / (mean(g * g) - mg * mg + eps)
    b = ms - a * mg
    return np.clip(mean(a) * g + mean(b), 0, 1)


def final_map(sample, lows: list[np.ndarray], post: dict) -> np.ndarray:
    """The variant's final soft mask at the image's size (float in [0,1], 8-bit levels like the store)."""
    t = int(post.get("t", lows[0].shape[0]))
    mode = "bicubic" if post.get("up") == "bicubic" else "bilinear"
    masks = [aggregate(torch.from_numpy(low[None]), t, (224, 224), mode) for low in lows]
    mask224 = torch.stack(masks).mean(0) if post.get("tta", "mean") == "mean" else torch.stack(masks).amax(0)
    if "gamma" in post:
        mask224 = mask224.clamp(0, 1) ** float(post["gamma"])
    h, w = sample.image.shape[:2]
    crf = post.get("crf", "none")
    params = _crf_params(post)
    if crf in ("224", "224a"):
        image224 = (to_model_input(sample.image, 224).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        soft = mask224[0, 0].clamp(0, 1).numpy()
        ref = authors_crf(image224, soft, params) if crf == "224a" else crf_refine(image224, soft, params)
        up = F.interpolate(torch.from_numpy(ref)[None, None], size=(h, w), mode="bilinear", align_corners=False)
        return mask_to_u8(up[0, 0].clamp(0, 1).numpy()) / np.float32(255)
    if crf.startswith(("long", "short", "scale")):
        # CRF at the image's aspect ratio: long/short side = N pixels, or scale = N/100 of the image size
        n = float(crf.lstrip("longshortscale"))
        f = n / max(h, w) if crf.startswith("long") else n / min(h, w) if crf.startswith("short") else n / 100
        hh, ww = max(1, round(h * f)), max(1, round(w * f))
        x = torch.from_numpy(sample.image).permute(2, 0, 1)[None].float() / 255
        img = F.interpolate(x, size=(hh, ww), mode="bilinear", align_corners=False, antialias=True)
        img = (img[0].permute(1, 2, 0).clamp(0, 1).numpy() * 255).round().astype(np.uint8)
        soft = F.interpolate(mask224, size=(hh, ww), mode="bilinear", align_corners=False)[0, 0].clamp(0, 1).numpy()
        soft = mask_to_u8(soft) / np.float32(255)
        ref = crf_refine(np.ascontiguousarray(img), soft, params)
        up = F.interpolate(torch.from_numpy(ref)[None, None], size=(h, w), mode="bilinear", align_corners=False)
        return mask_to_u8(up[0, 0].clamp(0, 1).numpy()) / np.float32(255)
    up = F.interpolate(mask224, size=(h, w), mode="bilinear", align_corners=False)[0, 0].clamp(0, 1).numpy()
    soft = mask_to_u8(up) / np.float32(255)
    if "guided" in post:
        soft = guided_filter(sample.image, soft.astype(np.float32), int(post["guided"]), float(post.get("geps", 1e-3)))
    if crf == "img":
        soft = mask_to_u8(crf_refine(sample.image, soft, params)) / np.float32(255)
    return soft


def evaluate(samples, variant: Variant, cache: Path, set_name: str, threshold: float = 0.5) -> dict:
    """Per-image IoU curves of a variant (memoized under ``cache/evals``: the CAM cache does not change)."""
    import hashlib

    tag = hashlib.sha1(f"{variant.text}|{threshold}|{[s.rel for s in samples]}".encode()).hexdigest()[:16]
    memo = cache / "evals" / set_name / f"{tag}.npy"
    if memo.is_file():
        curves = np.load(memo)
    else:
        curves = _curves(samples, variant, cache, set_name, threshold)
        memo.parent.mkdir(parents=True, exist_ok=True)
        np.save(memo, curves)
    sweep = curves[:, 1:].mean(0)
    best = int(np.argmax(sweep))
    return {"iou": curves[:, 0], "miou": float(curves[:, 0].mean()), "best_t": DEFAULT_SWEEP[best],
            "best_miou": float(sweep[best])}


def _curves(samples, variant: Variant, cache: Path, set_name: str, threshold: float) -> np.ndarray:
    caches = [load_or_compute(cache, set_name, samples, cfg) for cfg in variant.cfgs]
    thresholds = [threshold, *DEFAULT_SWEEP]
    return np.stack([iou_curve(final_map(s, [c[s.rel] for c in caches], variant.post), s.mask, thresholds)
                     for s in samples])


def main(argv=None) -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--ref", required=True)
    p.add_argument("--variants", nargs="*", default=[])
    p.add_argument("--set", nargs="+", default=list(SETS))
    p.add_argument("--limit", type=int, default=None, help="quick subset: every k-th image")
    p.add_argument("--cache", default=os.environ.get("OCCON_LAB_CACHE", str(Path(__file__).resolve().parents[2] / "outputs" / "lab_cache")),
                   help="folder of cached CAMs (outside git; env OCCON_LAB_CACHE)")
    args = p.parse_args(argv)
    keep_allocations()
    torch.set_num_threads(1)
    variants = [Variant.parse(args.ref)] + [Variant.parse(v) for v in args.variants]
    for set_name in args.set:
        samples = load_set(set_name)
        if args.limit:
            samples = quick_subset(samples, args.limit)
        print(f"== {set_name} ({len(samples)} images)", flush=True)
        ref = None
        for v in variants:
            r = evaluate(samples, v, Path(args.cache), set_name)
            ref = ref or r
            d = r["iou"] - ref["iou"]
            se = d.std(ddof=1) / np.sqrt(len(d)) if len(d) > 1 else 0.0
            diff = "(ref)" if r is ref else f"{d.mean():+.4f} ± {se:.4f}"
            print(f"  {r['miou']:.4f}  {diff:>18}   oracle {r['best_miou']:.3f}@{r['best_t']:.2f}   {v.text}",
                  flush=True)


if __name__ == "__main__":
    main()
