"""What the authors' post-processing rules would change on our masks (docs/fidelity.md).

    python bench/experiments/post_rules.py --variant 'expand=none|crf=224'

On the final masks of one lab variant (see compare.py) for every dev set:

* mask mIoU protocol: ours (image resolution, mask >= 0.5) vs the authors' ``seg`` (224x224, GT resized
  bilinearly and > 0.5; prediction = every 4-connected component of the 8-bit marginal > 0 larger than 0.1 %
  of the image, i.e. ``clean_mask`` then ``> 0.5``);
* boxes: ours (mask >= 0.5, external contours, +20 % margins, boxes under 1 % of the image dropped before the
  margin: ``min_box_area_before_margin=true``; after it: ``false``) vs the authors' ``save_box`` (components of the 8-bit marginal > 0 larger than 1 %, all contours
  incl. holes (RETR_TREE), boxes with w*h <= 1 % dropped before the margin, then +20 %), and each rule alone;
  scored before the margin against GT boxes: boxes per image, precision (share of boxes with IoU >= 0.5 with a
  GT box), largest-box CorLoc;
* background patch for BG-Mixup: ours (largest empty rectangle of mask >= 0.2) vs the authors' (the largest of
  the four side strips outside the bounding box of mask >= 0.2): area fraction, share of the patch that is
  GT object (leak), images without a patch.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from compare import Variant, final_map  # noqa: E402
from lab import SETS, keep_allocations, load_or_compute, load_set  # noqa: E402
from occon_plugin.eval.boxes import box_iou_inclusive  # noqa: E402
from occon_plugin.localize.background import largest_empty_rectangle  # noqa: E402
from occon_plugin.localize.boxes import mask_to_boxes  # noqa: E402


def components(binary: np.ndarray, min_frac: float) -> np.ndarray:
    """The authors' clean_mask: keep 4-connected components with more than min_frac of the pixels."""
    n, labels, stats, _ = cv2.connectedComponentsWithStats(binary.astype(np.uint8), connectivity=4)
    keep = np.zeros(n, bool)
    keep[1:] = stats[1:, cv2.CC_STAT_AREA] > min_frac * binary.size
    return keep[labels]


def raw_boxes(binary: np.ndarray, mode: int, min_frac: float, before_margin: bool, margin: float = 0.2):
    """Pixel boxes x0y0x1y1 (pre-margin) of the contours kept by a rule."""
    h, w = binary.shape
    contours = cv2.findContours(binary.astype(np.uint8), mode, cv2.CHAIN_APPROX_SIMPLE)[0]
    out = []
    for c in contours:
        x, y, bw, bh = cv2.boundingRect(c)
        if before_margin:
            ok = bw * bh > min_frac * h * w
        else:
            x1, x2 = max(0.0, x - margin * bw), min(float(w), x + bw + margin * bw)
            y1, y2 = max(0.0, y - margin * bh), min(float(h), y + bh + margin * bh)
            ok = (x2 - x1) * (y2 - y1) >= min_frac * w * h
        if ok:
            out.append([x, y, x + bw, y + bh])
    return np.asarray(out, dtype=np.float64).reshape(-1, 4)


def box_scores(boxes_per_image, gts) -> dict:
    n_boxes, hits, total, corloc, counted = 0, 0, 0, 0, 0
    for boxes, gt in zip(boxes_per_image, gts):
        if len(gt.boxes) == 0:
            continue
        counted += 1
        n_boxes += len(boxes)
        if len(boxes):
            iou = box_iou_inclusive(boxes, gt.boxes).max(axis=1)
            hits += int((iou >= 0.5).sum())
            areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
            corloc += int(iou[int(np.argmax(areas))] >= 0.5)
        total += len(boxes)
    return {"boxes/image": n_boxes / counted, "precision": hits / max(total, 1), "corloc": corloc / counted}


def author_strip(binary: np.ndarray):
    """The authors' background patch: the largest side strip outside the bounding box of the foreground."""
    ys, xs = np.nonzero(binary)
    h, w = binary.shape
    if len(ys) == 0:
        return (0, 0, w, h)
    y0, y1, x0, x1 = ys.min(), ys.max(), xs.min(), xs.max()
    strips = [(y0 * w, (0, 0, w, y0)), (x0 * h, (0, 0, x0, h)), ((w - x1 - 1) * h, (x1 + 1, 0, w, h)),
              ((h - y1 - 1) * w, (0, y1 + 1, w, h))]
    area, rect = max(strips, key=lambda s: s[0])
    return rect if area > 0 else None


def bg_scores(rects, gts) -> dict:
    areas, leaks, none = [], [], 0
    for rect, gt in zip(rects, gts):
        if rect is None:
            none += 1
            continue
        x1, y1, x2, y2 = rect
        areas.append((x2 - x1) * (y2 - y1) / gt.mask.size)
        leaks.append(gt.mask[y1:y2, x1:x2].mean())
    return {"area": float(np.mean(areas)), "object share": float(np.mean(leaks)), "no patch": none / len(gts)}


def main(argv=None) -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--variant", default="expand=none|crf=224")
    p.add_argument("--set", nargs="+", default=list(SETS))
    p.add_argument("--cache", default=os.environ.get("OCCON_LAB_CACHE", str(Path(__file__).resolve().parents[2] / "outputs" / "lab_cache")),
                   help="folder of cached CAMs (outside git; env OCCON_LAB_CACHE)")
    args = p.parse_args(argv)
    keep_allocations()
    torch.set_num_threads(1)
    variant = Variant.parse(args.variant)
    for set_name in args.set:
        samples = load_set(set_name)
        caches = [load_or_compute(Path(args.cache), set_name, samples, cfg) for cfg in variant.cfgs]
        from occon_plugin.eval.groundtruth import GroundTruth  # noqa: F401
        ours_iou, auth_iou, auth_proto, auth_both = [], [], [], []
        rules = {"area after margin": [], "authors": [], "authors' binarization only": [], "RETR_TREE only": [],
                 "ours (area before margin)": []}
        bg = {"ours": [], "authors": []}
        for s in samples:
            m = final_map(s, [c[s.rel] for c in caches], variant.post)
            u8 = np.rint(m * 255).astype(np.uint8)
            ours_bin = m >= 0.5
            auth_bin = components(u8 > 0, 0.001)
            inter = lambda a, b: (a & b).sum() / max((a | b).sum(), 1) if (a | b).any() else 1.0  # noqa: E731
            ours_iou.append(inter(ours_bin, s.mask))
            auth_iou.append(inter(auth_bin, s.mask))
            # the authors' resolution: 224x224 for both
            m224 = F.interpolate(torch.from_numpy(m)[None, None].float(), size=(224, 224), mode="bilinear",
                                 align_corners=False)[0, 0].numpy()
            g224 = F.interpolate(torch.from_numpy(s.mask.astype(np.float32))[None, None], size=(224, 224),
                                 mode="bilinear", align_corners=False)[0, 0].numpy() > 0.5
            auth_proto.append(inter(m224 >= 0.5, g224))
            auth_both.append(inter(components(np.rint(m224 * 255) > 0, 0.001), g224))
            box_bin = components(u8 > 0, 0.01)
            rules["area after margin"].append(raw_boxes(ours_bin, cv2.RETR_EXTERNAL, 0.01, False))
            rules["authors"].append(raw_boxes(box_bin, cv2.RETR_TREE, 0.01, True))
            rules["authors' binarization only"].append(raw_boxes(box_bin, cv2.RETR_EXTERNAL, 0.01, False))
            rules["RETR_TREE only"].append(raw_boxes(ours_bin, cv2.RETR_TREE, 0.01, False))
            rules["ours (area before margin)"].append(raw_boxes(ours_bin, cv2.RETR_EXTERNAL, 0.01, True))
            # the same rules as the runner's mask_to_boxes (min_box_area_before_margin false / true)
            assert len(mask_to_boxes(u8 / 255.0, 0.5, 0.2, 0.01)) == len(rules["area after margin"][-1])
            assert len(mask_to_boxes(u8 / 255.0, 0.5, 0.2, 0.01, True)) == len(rules["ours (area before margin)"][-1])
            bg["ours"].append(largest_empty_rectangle(u8 / 255.0 >= 0.2))
            bg["authors"].append(author_strip(u8 / 255.0 >= 0.2))
        d = np.array(auth_iou) - np.array(ours_iou)
        d2 = np.array(auth_proto) - np.array(ours_iou)
        d3 = np.array(auth_both) - np.array(ours_iou)
        se = lambda x: x.std(ddof=1) / np.sqrt(len(x))  # noqa: E731
        print(f"== {set_name} ({len(samples)} images), {args.variant}")
        print(f"  mIoU ours {np.mean(ours_iou):.4f}; authors' binarization {d.mean():+.4f} ± {se(d):.4f}; "
              f"224x224 protocol {d2.mean():+.4f} ± {se(d2):.4f}; both {d3.mean():+.4f} ± {se(d3):.4f}")
        for name, boxes in rules.items():
            sc = box_scores(boxes, samples)
            print(f"  boxes {name:30s} " + "  ".join(f"{k} {v:.3f}" for k, v in sc.items()))
        for name, rects in bg.items():
            sc = bg_scores(rects, samples)
            print(f"  background {name:8s} " + "  ".join(f"{k} {v:.3f}" for k, v in sc.items()))


if __name__ == "__main__":
    main()
