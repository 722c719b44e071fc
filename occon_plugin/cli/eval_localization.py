"""``occon-eval-localization``: mask mIoU (+ threshold sweep), MaxBoxAccV2 and CorLoc (Hydra CLI).

    occon-eval-localization predictions=<store | CAM folder> gt=<COCO json | mask folder> [image_root=...]
"""
from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig

from occon_plugin.cli._hydra import exit_on_bad_input
from occon_plugin.cli.eval_common import CONFIG_DIR, as_list, finish
from occon_plugin.eval.groundtruth import iter_ground_truth
from occon_plugin.eval.localization import evaluate_localization
from occon_plugin.eval.predictions import open_predictions
from occon_plugin.eval.report import write_results


def run(cfg: DictConfig) -> dict:
    preds = open_predictions(cfg.predictions)
    gts = iter_ground_truth(cfg.gt, cfg.image_root, include_crowd=bool(cfg.include_crowd))
    out_dir = Path(cfg.output_dir)
    res = evaluate_localization(
        preds, gts, threshold=float(cfg.threshold), sweep=as_list(cfg.sweep) or [],
        boxes=bool(cfg.boxes.enabled), deltas=as_list(cfg.boxes.deltas), interval=float(cfg.boxes.interval),
        eval_size=cfg.boxes.eval_size, limit=cfg.limit, overlay_dir=out_dir / "overlays",
        overlay_count=int(cfg.overlays), progress=bool(cfg.progress))
    m = res["mask"]
    summary = {"predictions": preds.kind, "n_images": m["n_images"], "n_missing": res["n_missing"],
               f"mask_miou@{m['threshold']:g}": m["miou"]}
    rows = [{"metric": f"mask_miou@{m['threshold']:g}", "value": m["miou"], "n_images": m["n_images"]}]
    if "best_miou" in m:
        summary.update(best_threshold=m["best_threshold"], best_miou=m["best_miou"])
        rows.append({"metric": f"mask_miou@best({m['best_threshold']:g}, oracle)", "value": m["best_miou"],
                     "n_images": m["n_images"]})
    box = res.get("boxes")
    if box is not None:
        summary.update(max_box_acc_v2=box["max_box_acc_v2"], corloc=box["corloc"],
                       n_without_gt_box=res["n_without_gt_box"])
        rows.append({"metric": "max_box_acc_v2", "value": box["max_box_acc_v2"], "n_images": box["n_images"]})
        rows += [{"metric": f"box_acc@iou{d:g} (cam t={box['best_threshold'][d]:.2f})", "value": a,
                  "n_images": box["n_images"]} for d, a in box["box_acc"].items()]
        rows.append({"metric": f"corloc (largest contour, iou>=0.5, cam t={box['corloc_threshold']:.2f})",
                     "value": box["corloc"], "n_images": box["n_images"]})
    write_results(out_dir, "per_image", res["per_image"])
    details = {"mask": m, "boxes": box, "missing": res["missing"], "overlays": res["overlays"]}

    def images(wandb):
        return {"overlays": [wandb.Image(p, caption=Path(p).name) for p in res["overlays"]]} if res["overlays"] else {}

    return finish(cfg, "eval_localization", rows, details, summary, wandb_extra=images)


@hydra.main(config_path=CONFIG_DIR, config_name="eval_localization", version_base="1.2")
@exit_on_bad_input
def main(cfg: DictConfig) -> None:
    run(cfg)


if __name__ == "__main__":
    main()
