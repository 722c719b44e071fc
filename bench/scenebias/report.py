"""Results of the scene-bias benchmark: collected from the evaluation files, aggregated over seeds (mean and
standard error), checked against the paper's predictions, written as ``docs/science.md`` and a figure.

Standard errors are over seeds (``std(ddof=1) / sqrt(n)``); differences between arms are paired by seed
(same data, same seed) and their standard error is that of the per-seed differences. With one seed no
standard error exists and none is printed.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

from scenebias.protocol import ONESTAGE_EPOCHS, Layout, preset_text, read_json, refresh_preset

BG_VARIANTS = ("original", "only_fg", "only_bg_t", "mixed_same", "mixed_rand", "mixed_next")
ARM_TITLES = {"baseline": "baseline (no object-aware aug.)", "contracam": "ContraCAM of stage 1",
              "oracle": "oracle (ground-truth masks)", "random": "random masks, same areas",
              "hardmix": "BG-HardMix (ContraCAM)", "onestage": "one-stage (occon.refresh, no stage 1)",
              "onestage2x": "one-stage, 2x epochs (two-stage's total)",
              "onestage3x": "one-stage, 3x epochs (about two-stage's compute)"}
METHOD_TITLES = {"mocov2": "MoCo v2", "byol": "BYOL"}


def cpu_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def mean_se(values: Sequence[Optional[float]]) -> dict:
    v = np.array([x for x in values if x is not None], dtype=np.float64)
    if len(v) == 0:
        return {"mean": None, "se": None, "n": 0, "values": []}
    se = float(v.std(ddof=1) / math.sqrt(len(v))) if len(v) > 1 else None
    return {"mean": float(v.mean()), "se": se, "n": int(len(v)), "values": [float(x) for x in v]}


def partner_confusion(confusion: List[List[int]], partners: Dict[int, Optional[int]]) -> dict:
    """From a confusion matrix (rows: true class): mean P(predicted = partner | true) over classes with a
    partner, and the mean P(predicted = j | true) over the other wrong classes j (the chance level of a
    confusion), so entanglement of co-occurring classes shows as ``partner >> other``."""
    c = np.asarray(confusion, dtype=np.float64)
    rows = c / np.maximum(c.sum(1, keepdims=True), 1)
    part, other = [], []
    for k, p in partners.items():
        if p is None:
            continue
        part.append(rows[k, p])
        others = [j for j in range(len(rows)) if j not in (k, p)]
        other.append(rows[k, others].mean())
    return {"partner": float(np.mean(part)), "other": float(np.mean(other))}


def _bg_metrics(path: Path) -> Optional[dict]:
    data = read_json(path)
    if data is None:
        return None
    s = data["summary"]
    out = {v: s.get(f"acc/{v}") for v in BG_VARIANTS}
    out["bg_gap"] = s.get("bg_gap")
    return out


def _ctx_metrics(path: Path, partners: Dict[int, Optional[int]]) -> Optional[dict]:
    data = read_json(path)
    if data is None:
        return None
    pc = partner_confusion(data["confusion"], partners)
    return {"single_acc": data["summary"]["test_acc"], "partner_confusion": pc["partner"],
            "other_confusion": pc["other"]}


def _loc_metrics(path: Path) -> Optional[dict]:
    data = read_json(path)
    if data is None:
        return None
    s = data["summary"]
    return {"miou": s.get("mask_miou@0.5"), "maxboxacc": s.get("max_box_acc_v2")}


def _per_image_iou(path: Path) -> Optional[Dict[str, float]]:
    data = read_json(path)
    if data is None:
        return None
    return {r["path"]: r.get("iou@0.5", r.get("iou")) for r in data["rows"]}


def collect(lay: Layout, seeds, cells, final=()) -> dict:
    """Every metric per (set, method, arm) of ``cells`` ((set, method) -> arms, protocol.Cells) and seed,
    aggregated; localization per (set, what), with the final models' rows of ``final`` ((set, method, arm),
    ``protocol.plan``'s). Results of other cells or final localizations in the folder are not read."""
    from scenebias.protocol import FG_PROBE_REFERENCES

    sets = list(dict.fromkeys(s for s, _ in cells))
    out: dict = {"train": {}, "localization": {}, "object_probe_reference": {}}
    if "bg" in sets:
        for ref in FG_PROBE_REFERENCES:
            accs = [read_json(lay.fg_probe(seed, ref.replace(":", "-")) / "eval_linear.json") for seed in seeds]
            stat = mean_se([a["summary"]["test_acc"] if a else None for a in accs])
            if stat["n"]:
                out["object_probe_reference"][ref] = stat
    for set_ in sets:
        methods = [m for s_, m in cells if s_ == set_]
        for method in methods:
            for arm in cells[(set_, method)]:
                if arm == "hardmix" and set_ != "bg":
                    continue
                per_seed = []
                for seed in seeds:
                    ev = lay.evals(seed, set_, method, arm)
                    if set_ == "bg":
                        m = _bg_metrics(ev / "eval_bgchallenge.json")
                        probe = read_json(lay.fg_probe(seed, f"{method}/{arm}") / "eval_linear.json")
                        if m is not None:
                            m["object_probe"] = probe["summary"]["test_acc"] if probe else None
                    else:
                        meta = read_json(lay.data(seed) / "meta.json") or {}
                        names = meta.get("classes", [])
                        partners = {i: (names.index(p) if p else None)
                                    for i, p in enumerate(meta.get("partners", {}).get(n) for n in names)}
                        m = _ctx_metrics(ev / "eval_linear.json", partners)
                    per_seed.append(m)
                if not any(per_seed):
                    continue
                keys = next(m for m in per_seed if m).keys()
                out["train"][f"{set_}/{method}/{arm}"] = {
                    "per_seed": per_seed, **{k: mean_se([m[k] if m else None for m in per_seed]) for k in keys}}
        whats = (["gaussian", "whole_image", "oracle", "random"]
                 + [f"contracam-{m}" for m in methods if "contracam" in cells[(set_, m)]]
                 + [f"{a}-{m}" for a in ONESTAGE_EPOCHS for m in methods if a in cells[(set_, m)]]
                 + [f"final-{a}-{m}" for m in methods for a in cells[(set_, m)] if (set_, m, a) in final])
        for what in whats:
            per_seed = [_loc_metrics(lay.localization(seed, set_, what) / "eval_localization.json") for seed in seeds]
            if any(per_seed):
                out["localization"][f"{set_}/{what}"] = {
                    "per_seed": per_seed, **{k: mean_se([m[k] if m else None for m in per_seed])
                                             for k in ("miou", "maxboxacc")}}
    return out


def onestage_compute(timings: dict, seeds, cells) -> dict:
    """Per ``set/method`` (the ``onestage`` arm) and ``set/method/onestage2x``: the one-stage run's wall time
    over the two-stage protocol's (stage-1 pretraining + ``occon-localize`` + stage-2 pretraining), per seed
    from ``timings.json``, aggregated (issue 21's "at <= 60 % of its compute"). Wall times of steps that may
    have shared the machine: a ratio, not a benchmark."""
    out = {}
    for (set_, method), arms in cells.items():
        for arm in ONESTAGE_EPOCHS:
            if arm in arms:
                stat = _compute_ratio(timings, seeds, set_, method, arm)
                if stat["n"]:
                    out[f"{set_}/{method}" + ("" if arm == "onestage" else f"/{arm}")] = stat
    return out


def _compute_ratio(timings: dict, seeds, set_: str, method: str, arm: str) -> dict:
    ratios = []
    for seed in seeds:
        one = timings.get(f"pretrain {set_} {method} {arm} seed{seed}")
        two = [timings.get(f"pretrain {set_} {method} baseline seed{seed}"),
               timings.get(f"localize {set_} {method} seed{seed}"),
               timings.get(f"pretrain {set_} {method} contracam seed{seed}")]
        ratios.append(None if one is None or None in two
                      else one["seconds"] / sum(t["seconds"] for t in two))
    return mean_se(ratios)


def paired(results: dict, key_a: str, key_b: str, metric: str, section: str = "train") -> dict:
    """``a - b`` per seed (both present), mean and standard error."""
    a, b = results[section].get(key_a), results[section].get(key_b)
    if a is None or b is None:
        return mean_se([])
    diffs = [(x[metric] - y[metric]) if (x and y and x.get(metric) is not None and y.get(metric) is not None)
             else None for x, y in zip(a["per_seed"], b["per_seed"])]
    return mean_se(diffs)


def fmt(stat: Optional[dict], digits: int = 3, signed: bool = False) -> str:
    if not stat or stat.get("mean") is None:
        return "–"
    m = f"{stat['mean']:+.{digits}f}" if signed else f"{stat['mean']:.{digits}f}"
    return m + (f" ± {stat['se']:.{digits}f}" if stat.get("se") is not None else "")


def targets(results: dict, methods: Sequence[str], sets: Sequence[str]) -> List[dict]:
    """The paper's predictions as the issue states them, each met / missed / not measured, with numbers."""
    rows = []

    def add(name, ok, value):
        rows.append({"target": name, "status": "not measured" if ok is None else ("met" if ok else "missed"),
                     "value": value})

    for set_ in sets:
        for method in methods:
            if f"{set_}/{method}/baseline" not in results["train"]:
                continue  # a cell this run did not train
            d = paired(results, f"{set_}/contracam-{method}", f"{set_}/gaussian", "miou", "localization")
            add(f"{set_}: ContraCAM ({METHOD_TITLES[method]} stage 1) mIoU@0.5 >= centred Gaussian + 0.10",
                None if d["mean"] is None else d["mean"] >= 0.10, f"difference {fmt(d, signed=True)}")
    if "bg" in sets:
        for method in methods:
            base, cc = results["train"].get(f"bg/{method}/baseline"), results["train"].get(f"bg/{method}/contracam")
            orc = results["train"].get(f"bg/{method}/oracle")
            if base and cc:
                gb, gc = base["bg_gap"]["mean"], cc["bg_gap"]["mean"]
                ok = gc <= 0.5 * gb if gb is not None and gb > 0 else None
                add(f"bg, {METHOD_TITLES[method]}: BG-Gap(contracam) <= 1/2 BG-Gap(baseline)", ok,
                    f"{fmt(cc['bg_gap'])} vs {fmt(base['bg_gap'])}")
                d = paired(results, f"bg/{method}/contracam", f"bg/{method}/baseline", "mixed_rand")
                ok = (d["mean"] >= 2 * d["se"]) if d["se"] is not None else None
                add(f"bg, {METHOD_TITLES[method]}: mixed_rand accuracy up by >= 2 s.e.", ok,
                    f"paired difference {fmt(d, signed=True)}")
                if orc:
                    go = orc["bg_gap"]["mean"]
                    denom = gb - go
                    frac = (gb - gc) / denom if denom and denom > 0 else None
                    add(f"bg, {METHOD_TITLES[method]}: ContraCAM closes >= 1/2 of the BG-Gap between baseline "
                        "and oracle", None if frac is None else frac >= 0.5,
                        "oracle gap not below the baseline's" if frac is None else f"{frac:.2f} of it")
    for set_, metric, name, better in (("bg", "bg_gap", "BG-Gap", -1), ("ctx", "single_acc", "single-object accuracy", 1)):
        for method in methods if set_ in sets else ():
            two = f"{set_}/{method}/contracam"
            ones = [a for a in ONESTAGE_EPOCHS if f"{set_}/{method}/{a}" in results["train"]]
            if not ones or two not in results["train"]:
                continue
            for arm in ones:
                which = "one-stage" if arm == "onestage" else f"one-stage at {ONESTAGE_EPOCHS[arm]}x epochs" + (
                    " (equal total epochs)" if ONESTAGE_EPOCHS[arm] == 2 else "")
                d = paired(results, f"{set_}/{method}/{arm}", two, metric)
                add(f"{set_}, {METHOD_TITLES[method]}: {which} {name} within 1 s.e. of two-stage (paired)",
                    None if d["se"] is None else abs(d["mean"]) <= d["se"], f"{arm} − two-stage {fmt(d, signed=True)}")
                c = results.get("compute", {}).get(f"{set_}/{method}" + ("" if arm == "onestage" else f"/{arm}"))
                add(f"{set_}, {METHOD_TITLES[method]}: {which} at <= 60 % of two-stage's compute (wall time)",
                    None if not c else c["mean"] <= 0.6, f"{fmt(c, 2)} of it" if c else "step times not recorded")
            for arm in ones + ["contracam"]:
                b = paired(results, f"{set_}/{method}/{arm}", f"{set_}/{method}/baseline", metric)
                add(f"{set_}, {METHOD_TITLES[method]}: {ARM_TITLES[arm]} better than the baseline ({name}, >= 2 s.e.)",
                    None if b["se"] is None else better * b["mean"] >= 2 * b["se"], f"− baseline {fmt(b, signed=True)}")
    if "ctx" in sets:
        for method in methods:
            if f"ctx/{method}/baseline" not in results["train"]:
                continue
            d = paired(results, f"ctx/{method}/contracam", f"ctx/{method}/baseline", "single_acc")
            ok = (d["mean"] >= 2 * d["se"]) if d["se"] is not None else None
            add(f"ctx, {METHOD_TITLES[method]}: single-object accuracy of OA-Crop (ContraCAM) above the baseline "
                "by >= 2 s.e.", ok, f"paired difference {fmt(d, signed=True)}")
            r = paired(results, f"ctx/{method}/random", f"ctx/{method}/baseline", "single_acc")
            if r["mean"] is not None and d["mean"] is not None:
                add(f"ctx, {METHOD_TITLES[method]}: random boxes do not give the same gain", r["mean"] < d["mean"],
                    f"random - baseline {fmt(r, signed=True)} vs ContraCAM - baseline {fmt(d, signed=True)}")
    return rows


def summary_text(results: dict, meta: dict) -> str:
    lines = ["", "Scene-bias benchmark: " + ", ".join(f"{k}={meta[k]}" for k in ("size", "seeds", "methods"))]
    for key, r in results["train"].items():
        if key.startswith("bg/"):
            lines.append(f"  {key:28s} orig {fmt(r['original'])}  only_fg {fmt(r['only_fg'])}  "
                         f"obj.probe {fmt(r.get('object_probe'))}  "
                         f"same {fmt(r['mixed_same'])}  rand {fmt(r['mixed_rand'])}  gap {fmt(r['bg_gap'])}")
        else:
            lines.append(f"  {key:28s} single {fmt(r['single_acc'])}  partner conf {fmt(r['partner_confusion'])}  "
                         f"other {fmt(r['other_confusion'])}")
    for ref, r in results.get("object_probe_reference", {}).items():
        lines.append(f"  object probe of {ref:18s} {fmt(r)}")
    for key, r in results["localization"].items():
        lines.append(f"  loc {key:24s} mIoU@0.5 {fmt(r['miou'])}  MaxBoxAccV2 {fmt(r['maxboxacc'])}")
    for t in targets(results, meta["methods"], meta["sets"]):
        lines.append(f"  [{t['status']}] {t['target']}: {t['value']}")
    return "\n".join(lines)


def figure(results: dict, meta: dict, path: Path) -> Optional[Path]:
    """Bar charts (mean ± s.e. over seeds): background set accuracy per variant and arm; contextual set
    single-object accuracy and partner confusion per arm."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    methods = meta["methods"]
    panels = [(s, m) for s in meta["sets"] for m in methods
              if any(k.startswith(f"{s}/{m}/") for k in results["train"])]
    if not panels:  # no training evaluated yet (--report-only of a run stopped early): no figure
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 3.6), squeeze=False)
    for ax, (set_, method) in zip(axes[0], panels):
        arms = [a for a in meta["arms"] if f"{set_}/{method}/{a}" in results["train"]]
        if set_ == "bg":
            metrics = ["object_probe", "only_fg", "mixed_same", "mixed_rand", "bg_gap"]
        else:
            metrics = ["single_acc", "partner_confusion", "other_confusion"]
        width = 0.8 / max(len(arms), 1)
        for i, arm in enumerate(arms):
            r = results["train"][f"{set_}/{method}/{arm}"]
            means = [(r.get(k) or {}).get("mean") or 0 for k in metrics]
            errs = [(r.get(k) or {}).get("se") or 0 for k in metrics]
            ax.bar(np.arange(len(metrics)) + i * width, means, width, yerr=errs, capsize=2, label=arm)
        ax.set_xticks(np.arange(len(metrics)) + width * (len(arms) - 1) / 2)
        ax.set_xticklabels(metrics, fontsize=8)
        ax.set_title(f"{'background' if set_ == 'bg' else 'contextual'} set, {METHOD_TITLES[method]}", fontsize=9)
        ax.set_ylim(0, 1)
        if arms:
            ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name("." + path.name + ".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)
    return path


def atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name("." + path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _significance(d: dict) -> str:
    if d.get("mean") is None:
        return "not measured"
    if d.get("se") is None:
        return f"{d['mean']:+.3f} (one seed: no standard error)"
    verdict = ("|difference| ≥ 2 s.e." if abs(d["mean"]) >= 2 * d["se"]
               else "|difference| < 2 s.e.: not distinguishable from zero")
    return f"{fmt(d, signed=True)} ({verdict})"


def findings(results: dict, methods: Sequence[str], sets: Sequence[str], arms: Sequence[str], classes: int,
             preset: Optional[str] = None) -> str:
    """Plain sentences computed from the numbers (no hand-written claims): per method, what each arm changed
    against the baseline (paired by seed), the object probe against the reference representations, and
    ContraCAM against the centred Gaussian."""
    preset = preset or refresh_preset(())  # the one-stage arms' refresh preset (None: the plugin's default)
    out = []
    refs = results.get("object_probe_reference", {})
    ref_txt = "; ".join(f"{k}: {fmt(v)}" for k, v in refs.items())
    for method in methods:
        title = METHOD_TITLES[method]
        base = results["train"].get(f"bg/{method}/baseline")
        if base:
            out.append(f"- **{title}, background set.** The stage-1 model's object probe reads "
                       f"{fmt(base.get('object_probe'))} (chance {1 / classes:.3f}; {ref_txt}); its probe fitted on "
                       f"`original` gets {fmt(base['only_fg'])} on `only_fg`, BG-Gap {fmt(base['bg_gap'])}.")
            lo, hi, mid = (refs.get("random:resnet18") or {}).get("mean"), \
                (refs.get("efficientnet-lite0") or {}).get("mean"), (base.get("object_probe") or {}).get("mean")
            if None not in (lo, hi, mid) and hi > lo:
                out.append(f"  - Shape information in the stage-1 representation: {(mid - lo) / (hi - lo):.0%} of the "
                           f"way from a randomly initialised ResNet-18 ({lo:.3f}) to ImageNet-supervised features "
                           f"({hi:.3f}). BG-Mixup and OA-Crop can only change what the representation uses among the "
                           f"things it encodes; the BG-Gap below is read against that.")
            for arm in arms:
                if arm == "baseline" or f"bg/{method}/{arm}" not in results["train"]:
                    continue
                parts = [f"{name} {_significance(paired(results, f'bg/{method}/{arm}', f'bg/{method}/baseline', k))}"
                         for name, k in (("BG-Gap", "bg_gap"), ("mixed_rand", "mixed_rand"),
                                         ("object probe", "object_probe"))]
                out.append(f"  - {ARM_TITLES[arm]} − baseline: " + "; ".join(parts) + ".")
        if results["train"].get(f"ctx/{method}/baseline"):
            out.append(f"- **{title}, contextual set** (arm − baseline):")
            for arm in arms:
                if arm == "baseline" or f"ctx/{method}/{arm}" not in results["train"]:
                    continue
                d = paired(results, f"ctx/{method}/{arm}", f"ctx/{method}/baseline", "single_acc")
                pc = paired(results, f"ctx/{method}/{arm}", f"ctx/{method}/baseline", "partner_confusion")
                out.append(f"  - {ARM_TITLES[arm]}: single-object accuracy {_significance(d)}; partner confusion "
                           f"{_significance(pc)}.")
        for set_, metric, name in (("bg", "bg_gap", "BG-Gap"), ("ctx", "single_acc", "single-object accuracy")):
            for arm in ONESTAGE_EPOCHS:
                if f"{set_}/{method}/{arm}" in results["train"] and f"{set_}/{method}/contracam" in results["train"]:
                    d = paired(results, f"{set_}/{method}/{arm}", f"{set_}/{method}/contracam", metric)
                    which = "One-stage" if arm == "onestage" else f"One-stage at {ONESTAGE_EPOCHS[arm]}x epochs"
                    out.append(f"- **{which} − two-stage ({title}, {set_} set):** {name} {_significance(d)}.")
        for set_ in sets:
            cc = results["localization"].get(f"{set_}/contracam-{method}")
            for arm in arms:  # ContraCAM of an arm's final model against that of stage 1 (the baseline's)
                fin = results["localization"].get(f"{set_}/final-{arm}-{method}")
                if cc and fin:
                    d = paired(results, f"{set_}/final-{arm}-{method}", f"{set_}/contracam-{method}", "miou",
                               "localization")
                    out.append(f"- **ContraCAM (preset auto) of the final `{arm}` model ({title}, {set_} set):** "
                               f"mIoU@0.5 {fmt(fin['miou'])} vs stage 1's {fmt(cc['miou'])}: difference "
                               f"{_significance(d)}.")
                    last = results["localization"].get(f"{set_}/{arm}-{method}") if arm in ONESTAGE_EPOCHS else None
                    if last:  # a one-stage arm's own last refresh: another preset, another epoch
                        out.append(f"  - Its last refresh's store (preset {preset_text(preset)}, of the model at "
                                   f"that refresh, before its last epochs) scores {fmt(last['miou'])}: the two rows differ in the "
                                   f"preset and in the model, and which of the two makes the difference is not "
                                   f"measured here.")
            ga = results["localization"].get(f"{set_}/gaussian")
            if cc and ga:
                d = paired(results, f"{set_}/contracam-{method}", f"{set_}/gaussian", "miou", "localization")
                out.append(f"- **ContraCAM of the {title} stage-1 model, {set_} set:** mIoU@0.5 {fmt(cc['miou'])} "
                           f"vs the centred Gaussian's {fmt(ga['miou'])}: difference {_significance(d)}.")
    return "\n".join(out)


def describe(lay: Layout, seeds, recipe, cells, timings: dict, results: dict) -> dict:
    """The report's descriptive fields, read from the generated data and the run itself."""
    from scenebias.protocol import FG_PROBE_REFERENCES

    sets = list(dict.fromkeys(s for s, _ in cells))
    methods = list(dict.fromkeys(m for _, m in cells))
    arms = [a for a in dict.fromkeys(a for c in cells.values() for a in c)]

    data_meta = read_json(lay.data(seeds[0]) / "meta.json") or {}
    names = data_meta.get("classes", [])
    pairs = sorted({tuple(sorted((a, b))) for a, b in data_meta.get("partners", {}).items() if b})
    by_stage: Dict[str, float] = {}
    for t in timings.values():
        by_stage[t["stage"]] = by_stage.get(t["stage"], 0.0) + t["seconds"]
    pretrains = [t["seconds"] for t in timings.values() if t["stage"] == "pretrain"]
    total = sum(by_stage.values())
    cost = (f"Sum of the step times recorded in `<out>/timings.json` (wall time of each step as it ran; a step "
            f"that shared the machine with other work took longer): {total / 60:.0f} min ("
            + ", ".join(f"{k} {v / 60:.0f} min" for k, v in sorted(by_stage.items())) + ")"
            + (f"; one pretraining run {float(np.median(pretrains)) / 60:.1f} min (median of {len(pretrains)})"
               if pretrains else "") + ".")
    for key, c in results.get("compute", {}).items():
        cost += (f" One-stage {key}: its run took {fmt(c, 2)} of the two-stage protocol's time (stage-1 pretraining "
                 f"+ occon-localize + stage-2 pretraining; per seed " + ", ".join(f"{v:.2f}" for v in c["values"])
                 + ": a seed whose steps shared the machine differs).")
    overrides = sorted({o for m in methods for o in recipe.pretrain_overrides(m)})
    return {"class_names": names, "n_photos": len(data_meta.get("photos", {})) or "the",
            "partners_text": ", ".join(f"{a}–{b}" for a, b in pairs),
            "recipe_text": "`" + " ".join(overrides) + "`",
            "references_text": "reference representations: " + ", ".join(f"`{r}`" for r in FG_PROBE_REFERENCES),
            "cost_text": cost,
            "findings": findings(results, methods, sets, arms, len(names) or 6, refresh_preset(recipe.occon)),
            "wall_seconds_total": total}
