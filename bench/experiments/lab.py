"""Exploration lab for localization quality (issue 9): prototypes around the public engine functions.

Nothing here is a result: it caches low-resolution CAMs of candidate operators under a scratch folder
(``--cache``, outside the repository) so that post-processing and combinations can be compared cheaply
with *paired per-image differences and standard errors* on the dev sets. Changes that win are then
implemented in the engine/runner and measured again from scratch by ``bench/localize_quality.py``.

    python bench/experiments/lab.py cams --set horses-dev --cfg expand=none
    python bench/experiments/lab.py check                      # the lab's loop == the engine's contracam
    python bench/experiments/compare.py --set horses-dev --ref 'expand=none|crf=img' --variants 'expand=stride|crf=img'

The iterative loop below is the engine's algorithm (``occon_plugin.localize.contracam``; checked equal
to it by ``check``) with knobs the engine does not have yet: score form, fill colour, negatives, dilated
expansion, flip, input size, sub-batched forwards. It keeps every iteration's low-resolution map, so one
T=10 run also gives T=1..9 (iteration t only depends on iterations <= t).
"""
from __future__ import annotations

import argparse
import contextlib
import ctypes
import hashlib
import json
import os
import sys
import time
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from occon_plugin.eval.groundtruth import iter_coco, iter_mask_folder  # noqa: E402
from occon_plugin.images import load_image  # noqa: E402
from occon_plugin.models import load_cam_model  # noqa: E402
from occon_plugin.localize.cam import normalize_per_image  # noqa: E402
from occon_plugin.localize.score import contrastive_score  # noqa: E402
from occon_plugin.localize.runner import make_batches, to_model_input  # noqa: E402

SHARED = REPO.parent / "shared" / "data"
SETS = ("coco128", "horses-dev", "ecssd-dev")


def keep_allocations() -> None:
    """glibc: keep freed large blocks instead of returning them to the OS on every forward."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 1 << 30)  # M_MMAP_THRESHOLD
        libc.mallopt(-1, 1 << 30)  # M_TRIM_THRESHOLD


# ----------------------------------------------------------------------------------------------- data

@dataclass
class Sample:
    rel: str
    image: np.ndarray  # uint8 HWC
    mask: np.ndarray   # bool HW
    boxes: np.ndarray  # (K,4) x0y0x1y1 pixels


def load_set(name: str, root: Path = SHARED, limit: int | None = None) -> list[Sample]:
    base = root / name
    if name == "coco128":
        gts = iter_coco(base / "annotations" / "instances_train2017.json", base / "images")
    else:
        gts = iter_mask_folder(base / "images", base / "masks")
    out = []
    for g in gts:
        out.append(Sample(g.path, load_image(g.root, g.path), g.mask, g.boxes))
    if limit:
        out = quick_subset(out, limit)
    return out


def quick_subset(samples: list, n: int) -> list:
    """Every k-th image (deterministic, spread over the sorted list)."""
    if n >= len(samples):
        return samples
    idx = np.linspace(0, len(samples) - 1, n).round().astype(int)
    return [samples[i] for i in dict.fromkeys(idx.tolist())]


# ----------------------------------------------------------------------------------------------- CAMs

@dataclass(frozen=True)
class Cfg:
    expand: str = "stride"      # none | stride (engine's expansion) | dilate (stride 1 + dilation 2 after)
    iters: int = 10
    temperature: float = 0.2
    fill: str = "mean"          # mean | black | batchmean (authors: per-channel batch mean) | blur
    score: str = "paper"        # paper (Eq. 1) | authors (numerator summed over batch, self pairs kept, tau=1)
    negatives: str = "all"      # all (Eq. 3) | first (only the originals B^1) | current (only B^t)
    nsr: bool = True
    size: int = 224
    flip: bool = False
    batch: int = 64
    model: str = "efficientnet-lite0"

    def key(self) -> str:
        default = Cfg()
        parts = [f"{f.name}={getattr(self, f.name)}" for f in fields(self)
                 if getattr(self, f.name) != getattr(default, f.name)]
        return ",".join(parts) or "default"

    @staticmethod
    def parse(text: str) -> "Cfg":
        cfg = Cfg()
        if text in ("", "default"):
            return cfg
        for part in text.split(","):
            k, v = part.split("=")
            typ = type(getattr(cfg, k))
            val = (v.lower() in ("1", "true", "yes")) if typ is bool else typ(v)
            cfg = replace(cfg, **{k: val})
        return cfg


@contextlib.contextmanager
def dilated_expansion(model):
    """Stride 1 in the last stride-2 depthwise conv of EfficientNet-Lite and dilation 2 in every later
    depthwise conv (DeepLab-style: later layers see the receptive field they were trained with)."""
    net = model.trunk
    blocks = list(net._blocks)
    last = max(i for i, b in enumerate(blocks) if 2 in tuple(b._depthwise_conv.stride))
    saved = [(b._depthwise_conv.stride, b._depthwise_conv.dilation) for b in blocks]
    try:
        blocks[last]._depthwise_conv.stride = [1, 1]
        for b in blocks[last + 1:]:
            b._depthwise_conv.dilation = (2, 2)
        yield model
    finally:
        for b, (s, d) in zip(blocks, saved):
            b._depthwise_conv.stride, b._depthwise_conv.dilation = s, d


def _features(model, x: torch.Tensor, sub: int) -> torch.Tensor:
    return torch.cat([model.features(x[i:i + sub]) for i in range(0, len(x), sub)])


def _score(cfg: Cfg, z, key, bank, mask):
    if cfg.score == "paper":
        return contrastive_score(z, key, bank, cfg.temperature, mask)
    # authors' GradCAM._contrastive_score on L2-normalized projections, no temperature:
    # log( sum_b exp(q_b.k_b) / sum_n exp(q.n) ) with self pairs set to exp(0) instead of removed.
    q = F.normalize(z, dim=-1)
    k = F.normalize(key.detach(), dim=-1)
    n = F.normalize(bank.detach(), dim=-1)
    pos = torch.logsumexp((q * k).sum(-1) / cfg.temperature, dim=0)
    neg = (q @ n.T / cfg.temperature).masked_fill(~mask, 0.0)
    return pos - torch.logsumexp(neg, dim=1)


def lab_contracam(model, images: torch.Tensor, cfg: Cfg, sub: int = 8) -> torch.Tensor:
    """Low-resolution ReLU'd CAMs of every iteration, (B, T, h, w) float32 (before upsampling/min-max)."""
    if cfg.flip:
        images = images.flip(-1)
    b, _, height, width = images.shape
    if cfg.fill == "mean":
        fill = torch.tensor(model.mean).view(1, 3, 1, 1)
    elif cfg.fill == "black":
        fill = torch.zeros(1, 3, 1, 1)
    elif cfg.fill == "batchmean":
        fill = images.mean(dim=(0, 2, 3), keepdim=True)
    elif cfg.fill == "blur":
        import torchvision.transforms.v2.functional as TF
        fill = TF.gaussian_blur(images, kernel_size=[31, 31], sigma=[10.0, 10.0])
    else:
        raise ValueError(cfg.fill)
    not_self = ~torch.eye(b, dtype=torch.bool)
    expansion = (dilated_expansion(model) if cfg.expand == "dilate" else model.expansion(cfg.expand == "stride"))
    lows, keys, key = [], [], None
    mask = None
    with torch.no_grad(), expansion:
        for t in range(cfg.iters):
            masked = images if t == 0 else images * (1 - mask) + fill * mask
            acts = _features(model, masked, sub)
            pooled = model.pool(acts)
            with torch.enable_grad():
                p = pooled.detach().requires_grad_(True)
                z = model.head(p)
                now = z.detach()
                if cfg.negatives == "all":
                    bank, bmask = torch.cat([*keys, now]), not_self.repeat(1, len(keys) + 1)
                elif cfg.negatives == "first":
                    bank, bmask = (keys[0] if keys else now), not_self
                else:
                    bank, bmask = now, not_self
                s = _score(cfg, z, now if key is None else key, bank, bmask)
                (grad,) = torch.autograd.grad(s.sum(), p)
            if t == 0:
                key = now
            keys.append(now)
            h, w = acts.shape[-2:]
            alpha = grad / (h * w)
            if cfg.nsr:
                alpha = alpha.clamp_min(0)
            low = torch.einsum("bk,bkhw->bhw", alpha, acts).clamp_min(0)
            lows.append(low)
            cam = normalize_per_image(F.interpolate(low[:, None], size=(height, width), mode="bilinear",
                                                    align_corners=False))
            mask = cam if t == 0 else torch.maximum(mask, cam)
    out = torch.stack(lows, 1)
    return out.flip(-1) if cfg.flip else out


def aggregate(low: torch.Tensor, t: int, size: tuple[int, int], mode: str = "bilinear") -> torch.Tensor:
    """The aggregated mask of iteration t (1-based) at ``size`` from low-res maps (B,T,h,w): (B,1,H,W)."""
    kw = {} if mode == "nearest" else {"align_corners": False}
    out = None
    for k in range(t):
        cam = normalize_per_image(F.interpolate(low[:, k:k + 1].float(), size=size, mode=mode, **kw))
        out = cam if out is None else torch.maximum(out, cam)
    return out


def cache_path(cache: Path, set_name: str, cfg: Cfg) -> Path:
    return cache / set_name / f"{cfg.key()}.npz"


def compute_cams(samples: list[Sample], cfg: Cfg, seed: int = 0, threads: int = 1) -> dict:
    """Runner-identical batches (seeded permutation, last batch topped up); returns rel -> (T,h,w) float16."""
    torch.set_num_threads(threads)
    model = load_cam_model(cfg.model)
    out = {}
    for batch in make_batches(len(samples), cfg.batch, seed):
        own = [int(i) for i in batch if samples[int(i)].rel not in out]
        x = torch.stack([to_model_input(samples[int(i)].image, cfg.size) for i in batch])
        low = lab_contracam(model, x, cfg)
        for k, i in enumerate(batch):
            if int(i) in own and samples[int(i)].rel not in out:
                out[samples[int(i)].rel] = low[k].numpy().astype(np.float32)
    return out


def load_or_compute(cache: Path, set_name: str, samples: list[Sample], cfg: Cfg, threads: int = 1) -> dict:
    path = cache_path(cache, set_name, cfg)
    if path.is_file():
        data = np.load(path)
        got = {k: data[k] for k in data.files}
        if all(s.rel in got for s in samples):
            return got
    t0 = time.perf_counter()
    got = compute_cams(samples, cfg, threads=threads)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, **got)
    os.replace(tmp, path)
    print(f"[lab] {set_name} {cfg.key()}: {len(got)} images in {time.perf_counter() - t0:.0f} s", flush=True)
    return got


# ------------------------------------------------------------------------------------------ evaluation

def iou_at(pred: np.ndarray, gt: np.ndarray, t: float = 0.5) -> float:
    p = pred >= t
    union = (p | gt).sum()
    return float((p & gt).sum() / union) if union else 1.0


def paired(a: np.ndarray, b: np.ndarray) -> str:
    d = np.asarray(a) - np.asarray(b)
    se = d.std(ddof=1) / np.sqrt(len(d))
    return f"{d.mean():+.4f} ± {se:.4f} (z={d.mean() / se if se else 0:+.1f})"


def main(argv=None) -> None:
    p = argparse.ArgumentParser()
    p.add_argument("cmd", choices=["cams", "check"])
    p.add_argument("--set", nargs="+", default=list(SETS))
    p.add_argument("--cfg", nargs="+", default=["default"])
    p.add_argument("--cache", default=os.environ.get("OCCON_LAB_CACHE", str(Path(__file__).resolve().parents[2] / "outputs" / "lab_cache")),
                   help="folder of cached CAMs (outside git; env OCCON_LAB_CACHE)")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    keep_allocations()
    if args.cmd == "check":
        from occon_plugin.localize.engine import contracam
        torch.set_num_threads(args.threads)
        samples = load_set("horses-dev", limit=6)
        x = torch.stack([to_model_input(s.image, 224) for s in samples])
        model = load_cam_model()
        for expand in (False, True):
            ref = contracam(model, x, iters=3, expand=expand).mask
            low = lab_contracam(model, x, Cfg(expand="stride" if expand else "none", iters=3))
            mine = aggregate(low, 3, (224, 224))
            print("expand", expand, "max abs diff vs engine", float((ref - mine).abs().max()))
        return
    for set_name in args.set:
        samples = load_set(set_name)
        for text in args.cfg:
            load_or_compute(Path(args.cache), set_name, samples, Cfg.parse(text), args.threads)


if __name__ == "__main__":
    main()
