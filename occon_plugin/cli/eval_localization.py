"""``occon-eval-localization``: mask mIoU (+ threshold sweep), MaxBoxAccV2 and CorLoc (Hydra CLI).

    occon-eval-localization predictions=<store | CAM folder> gt=<COCO json | mask folder> [image_root=...]
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional

import hydra
from omegaconf import MISSING, DictConfig

from occon_plugin.cli._hydra import exit_on_bad_input
from occon_plugin.cli.overrides import exit_on_bad_overrides
from occon_plugin.cli.eval_common import CONFIG_DIR, EvalWandbSettings, finish
from occon_plugin.config import Range, typed_settings
from occon_plugin.errors import DataError
from occon_plugin.eval.groundtruth import iter_ground_truth
from occon_plugin.eval.localization import evaluate_localization
from occon_plugin.eval.predictions import open_predictions
from occon_plugin.eval.report import write_results


# Maps and thresholds are in [0, 1]; an IoU delta is in (0, 1]; counts are whole numbers.
RANGES = {
    "threshold": Range(0, 1, low_open=True, hint="the mask is pred >= threshold, pred in [0, 1]"),
    "sweep": Range(0, 1, low_open=True, nullable=True, allow_empty=True, hint="thresholds of the mIoU sweep"),
    "boxes.deltas": Range(0, 1, low_open=True, hint="IoU levels of MaxBoxAccV2"),
    "boxes.interval": Range(0, 1, low_open=True, high_open=True, hint="the step of the CAM threshold curve"),
    "boxes.eval_size": Range(1, integer=True, nullable=True, hint="null: at the image size"),
    "limit": Range(1, integer=True, nullable=True, hint="null: every image"),
    "overlays": Range(0, integer=True),
}


@dataclass
class BoxSettings:
    enabled: bool = True
    deltas: List[float] = field(default_factory=lambda: [0.3, 0.5, 0.7])
    interval: float = 0.01              # cam_curve_interval
    eval_size: Optional[int] = 224      # null: at the image size


@dataclass
class EvalLocalizationSettings:
    """``occon-eval-localization`` (occon_plugin/configs/eval_localization.yaml; ranges: :data:`RANGES`)."""

    predictions: str = MISSING          # an occon-localize store, or a folder of maps
    gt: str = MISSING                   # COCO instances json or a folder of binary masks
    image_root: Optional[str] = None
    include_crowd: bool = True
    missing: str = "error"              # error | skip
    mismatch: str = "error"             # error | skip
    allow_v1_store: bool = False
    threshold: float = 0.5
    sweep: Optional[List[float]] = field(default_factory=lambda: [round(0.05 * i, 2) for i in range(1, 20)])
    boxes: BoxSettings = field(default_factory=BoxSettings)
    limit: Optional[int] = None
    overlays: int = 8
    output_dir: str = "outputs/eval_localization"
    progress: bool = True
    wandb: EvalWandbSettings = field(default_factory=EvalWandbSettings)


def _loud_counts(res: dict, json_name: str) -> list[str]:
    """Lines saying what was not scored and why (the lists are in the result JSON)."""
    lines = []
    n_scored = len(res["per_image"])
    left_out = res["n_missing"] + res["n_failed"] + res["n_mismatched"]
    if left_out:
        lines.append(f"[occon] scored {n_scored} of {n_scored + left_out} ground-truth images: "
                     f"{res['n_missing']} without a prediction, {res['n_failed']} unreadable at localization, "
                     f"{res['n_mismatched']} mismatched (names in {json_name})")
    for key, what in (("failed", "unreadable at localization"), ("missing", "without a prediction"),
                      ("mismatched", "mismatched")):
        if res[key]:
            lines.append(f"  {what}: " + ", ".join(res[key][:5]) + (" ..." if len(res[key]) > 5 else ""))
    if res["n_without_gt_mask"]:
        lines.append(f"[occon] {res['n_without_gt_mask']} image(s) have box-only ground truth: scored for boxes, "
                     f"not for mask mIoU")
    if res["gt_problems"]:
        lines.append(f"[occon] {len(res['gt_problems'])} annotation(s) left out of the ground truth, e.g. "
                     + "; ".join(res["gt_problems"][:3]))
    constant = res.get("constant_maps") or []
    if constant:  # never a silent 0: a constant map has no ranking for min-max normalization (wsolevaluation)
        lines.append(f"[occon] {len(constant)} of {n_scored} prediction maps are one value everywhere (e.g. "
                     f"{constant[0]}): min-max normalization (the wsolevaluation protocol) scores them as no box"
                     + (" and no mask" if res.get("kind") == "cam_dir" else "") + "; a whole-image baseline is not "
                     "scored this way (bench/localize_quality.py has it as a row)")
    nonfinite = res.get("nonfinite_maps") or []
    if nonfinite:
        lines.append(f"[occon] {len(nonfinite)} of {n_scored} prediction maps hold NaN or infinite values (e.g. "
                     f"{nonfinite[0]}): scored as no object (as wsolevaluation does); check what wrote them")
    encodings = res.get("gt_encodings") or {}
    if encodings:  # one line: every assumption made about mask files that are not plain binary
        n = sum(len(v) for v in encodings.values())
        lines.append(f"[occon] {n} of {n_scored} ground-truth masks are not plain binary (0/1 or 0/255), read as: "
                     + "; ".join(f"{len(paths)} {rule} (e.g. {paths[0]})" for rule, paths in encodings.items())
                     + f" (docs/eval.md; all in {json_name})")
    return lines


def _store_record(preds) -> Optional[dict]:
    """The store manifest's model, its hash and the settings the masks were made with; None for map folders."""
    store = getattr(preds, "store", None)
    if store is None:
        return None
    manifest = store.manifest
    return {key: manifest.get(key) for key in ("model", "model_sha256", "settings")}


def run(cfg: DictConfig) -> dict:
    """Score ``predictions`` against ``gt``; write the results. Raises :class:`~occon_plugin.errors.ConfigError`
    / ``DataError`` / ``StoreError`` for bad input (one line from the CLI)."""
    s: EvalLocalizationSettings = typed_settings(EvalLocalizationSettings, cfg, RANGES)  # parsed once, typed
    preds = open_predictions(s.predictions, s.allow_v1_store, s.image_root)
    if preds.note:  # a schema-v1 store, allowed: said once
        print(f"[occon] {preds.note}")
    gts = iter_ground_truth(s.gt, s.image_root, include_crowd=s.include_crowd)
    out_dir = Path(s.output_dir)
    res = evaluate_localization(
        preds, gts, threshold=s.threshold, sweep=list(s.sweep or []),
        boxes=s.boxes.enabled, deltas=list(s.boxes.deltas), interval=s.boxes.interval,
        eval_size=s.boxes.eval_size, limit=s.limit, overlay_dir=out_dir / "overlays",
        overlay_count=s.overlays, progress=s.progress, missing=s.missing, mismatch=s.mismatch)
    m = res["mask"]
    box = res.get("boxes")
    n_images = m["n_images"] if m else (box["n_images"] if box else len(res["per_image"]))
    summary = {"predictions": preds.kind, "n_images": n_images, "n_missing": res["n_missing"],
               "n_failed": res["n_failed"], "n_mismatched": res["n_mismatched"],
               "n_without_gt_mask": res["n_without_gt_mask"]}
    rows = []
    if m is not None:
        summary[f"mask_miou@{m['threshold']:g}"] = m["miou"]
        rows.append({"metric": f"mask_miou@{m['threshold']:g}", "value": m["miou"], "n_images": m["n_images"]})
        if "best_miou" in m:
            summary.update(best_threshold=m["best_threshold"], best_miou=m["best_miou"])
            rows.append({"metric": f"mask_miou@best({m['best_threshold']:g}, oracle)", "value": m["best_miou"],
                         "n_images": m["n_images"]})
    if box is not None:
        summary.update(max_box_acc_v2=box["max_box_acc_v2"], corloc=box["corloc"],
                       n_without_gt_box=res["n_without_gt_box"])
        rows.append({"metric": "max_box_acc_v2", "value": box["max_box_acc_v2"], "n_images": box["n_images"]})
        rows += [{"metric": f"box_acc@iou{d:g} (cam t={box['best_threshold'][d]:.2f})", "value": a,
                  "n_images": box["n_images"]} for d, a in box["box_acc"].items()]
        rows.append({"metric": f"corloc (largest contour, iou>=0.5, cam t={box['corloc_threshold']:.2f})",
                     "value": box["corloc"], "n_images": box["n_images"]})
    if not rows:
        raise DataError("nothing to score: the ground truth has neither masks nor boxes for the predicted images")
    write_results(out_dir, "per_image", res["per_image"])
    details = {"mask": m, "boxes": box, "missing": res["missing"], "failed": res["failed"],
               "mismatched": res["mismatched"], "gt_problems": res["gt_problems"], "gt_encodings": res["gt_encodings"],
               "store_note": preds.note, "overlays": res["overlays"], "constant_maps": res["constant_maps"],
               "nonfinite_maps": res["nonfinite_maps"],
               "unverified": list(getattr(preds, "unverified", [])),
               # what made the masks (model, preset, refine.method and its parameters...): the store's own record,
               # so a result still says which localization it scored after the store is rebuilt with other settings
               "store": _store_record(preds)}
    res["kind"] = preds.kind

    def images(wandb):
        return {"overlays": [wandb.Image(p, caption=Path(p).name) for p in res["overlays"]]} if res["overlays"] else {}

    out = finish(cfg, "eval_localization", rows, details, summary, wandb_extra=images)
    for line in _loud_counts(res, str(out_dir / "eval_localization.json")):
        print(line)
    unverified = details["unverified"]
    if unverified:  # e.g. a wrong image_root: the check that each mask was computed from this photo did not run
        root = s.image_root if s.image_root else "the COCO json's default image folder (<json dir>/../images)"
        print(f"[occon] {len(unverified)} of the scored images are not under {root} (e.g. {unverified[0]}): their "
              f"store masks were checked by size only, not that they were computed from these photos; give "
              f"image_root=<the folder localized> to check them (JSON: unverified)")
    return out


def main() -> None:
    """The console command: overrides checked against eval_localization.yaml (one line, exit 2), then Hydra."""
    exit_on_bad_overrides(Path(CONFIG_DIR) / "eval_localization.yaml")
    _hydra_main()


@hydra.main(config_path=CONFIG_DIR, config_name="eval_localization", version_base="1.2")
@exit_on_bad_input(inputs=("predictions", "gt", "image_root"), outputs=("output_dir",))
def _hydra_main(cfg: DictConfig) -> None:
    run(cfg)


if __name__ == "__main__":
    main()
