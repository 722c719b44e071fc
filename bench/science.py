"""Does object-aware contrastive learning debias? The paper's protocol on a controlled scene-bias benchmark.

    python bench/science.py            # standard: 3 seeds, MoCo v2 and BYOL, both sets -> docs/science.md
    python bench/science.py --quick    # 1 seed, MoCo v2, both sets (iteration; prints, writes under --out)
    python bench/science.py --full     # 5 seeds, every arm incl. BG-HardMix, longer training (GPU or long CPU run)

The data (``bench/scenebias/generate.py``): shapes on real photos, where the background bias (a class's
images mostly sit on one group of backgrounds) and the contextual bias (partner classes co-occur in
scenes) are known by construction; ground-truth masks come with it. The protocol
(``bench/scenebias/protocol.py``), per seed, set and method: stage 1 = the host's method from scratch;
``occon-localize`` with the stage-1 checkpoint (ContraCAM of the self-supervised model itself); stage 2 =
the ``*_occon`` method from scratch with that store (BG-Mixup on the background set, OA-Crop on the
contextual set), with the oracle (ground truth) and random-mask controls; then ``occon-eval-bgchallenge``
/ ``occon-eval-linear`` on the frozen backbones and ``occon-eval-localization`` of every store. Every step
is a plugin command; a finished step is not redone (rerun the same command to continue).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
sys.path.insert(0, str(REPO))

from scenebias import protocol, report  # noqa: E402
from scenebias.generate import DEFAULT_BACKGROUNDS, GeneratorError, SceneBiasConfig, generate  # noqa: E402

SIZES = {
    # name: (seeds, methods, arms, recipe changes, data changes)
    "quick": ((0,), ("mocov2",), ("baseline", "contracam", "oracle", "random"), {}, {}),
    "standard": ((0, 1, 2), ("mocov2", "byol"), ("baseline", "contracam", "oracle", "random"), {}, {}),
    "full": ((0, 1, 2, 3, 4), ("mocov2", "byol"), ("baseline", "contracam", "oracle", "random", "hardmix"),
             {"epochs": 200}, {}),
}


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    size = ap.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_const", dest="size", const="quick")
    size.add_argument("--full", action="store_const", dest="size", const="full")
    ap.set_defaults(size="standard")
    ap.add_argument("--seed", type=int, nargs="+", default=None, help="seeds (default: by size)")
    ap.add_argument("--methods", nargs="+", choices=sorted(protocol.METHODS), default=None)
    ap.add_argument("--sets", nargs="+", choices=("bg", "ctx"), default=("bg", "ctx"))
    ap.add_argument("--arms", nargs="+", choices=protocol.ARMS, default=None)
    ap.add_argument("--backgrounds", type=Path, nargs="+", default=None,
                    help="folders of background photos (default: the dev sets under ../shared/data)")
    ap.add_argument("--rho", type=float, default=None, help="background bias P(group = class) (default 0.9)")
    ap.add_argument("--epochs", type=int, default=None, help="pretraining epochs of every arm")
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    ap.add_argument("--out", type=Path, default=REPO / "outputs" / "science")
    ap.add_argument("--docs", type=Path, default=None,
                    help="write the report here (default: docs/science.md for the standard size, else none)")
    ap.add_argument("--plan", action="store_true", help="print the steps and exit")
    return ap.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    seeds, methods, arms, recipe_changes, data_changes = SIZES[args.size]
    seeds = tuple(args.seed) if args.seed else seeds
    methods = tuple(args.methods) if args.methods else methods
    arms = tuple(args.arms) if args.arms else arms
    recipe = protocol.Recipe(**recipe_changes)
    if args.epochs:
        recipe = dataclasses.replace(recipe, epochs=args.epochs)
    if args.device == "cuda":
        recipe = dataclasses.replace(recipe, precision="16-mixed", num_workers=8)
    data_cfg = dict(data_changes, **({"rho": args.rho} if args.rho is not None else {}))
    backgrounds = args.backgrounds or DEFAULT_BACKGROUNDS
    missing = [str(b) for b in backgrounds if not Path(b).is_dir()]
    if missing:
        print(f"[science] error: background folder(s) {missing} not found: pass --backgrounds <folders of photos>",
              file=sys.stderr)
        return 2
    lay = protocol.Layout(args.out)

    def make_data(seed: int) -> None:
        generate(lay.data(seed), SceneBiasConfig(seed=seed, **data_cfg), backgrounds)

    steps = protocol.plan(lay, recipe, seeds, args.sets, methods, arms, make_data)
    todo = [s for s in steps if not s.done.exists()]
    print(f"[science] {args.size}: seeds {list(seeds)}, methods {list(methods)}, sets {list(args.sets)}, "
          f"arms {list(arms)}; {len(steps)} steps, {len(todo)} to run; out {args.out}")
    if args.plan:
        for s in steps:
            print(("  done " if s.done.exists() else "  todo ") + s.label)
        return 0
    from tqdm import tqdm

    started = time.time()
    timings = json.loads((args.out / "timings.json").read_text()) if (args.out / "timings.json").is_file() else {}
    bar = tqdm(todo, unit="step", dynamic_ncols=True)
    try:
        for step in bar:
            bar.set_description(step.label)
            seconds = protocol.run_step(lay, step)
            timings[step.label] = {"stage": step.stage, "seconds": round(seconds, 1)}
            (args.out / "timings.json").write_text(json.dumps(timings, indent=1))
            tqdm.write(f"[science] {step.label}: {seconds:.0f} s")
    except (protocol.StepFailed, GeneratorError) as exc:
        bar.close()
        print(f"[science] error: {exc}", file=sys.stderr)
        return 1
    bar.close()
    wall = time.time() - started
    results = report.collect(lay, seeds, args.sets, methods, arms)
    meta = {"size": args.size, "seeds": list(seeds), "methods": list(methods), "sets": list(args.sets),
            "arms": list(arms), "recipe": protocol.recipe_dict(recipe), "data": dataclasses.asdict(
                SceneBiasConfig(**data_cfg)), "wall_seconds_this_run": round(wall), "timings": timings,
            "machine": f"{platform.machine()}, {report.cpu_count()} cores, Python {platform.python_version()}",
            "device": args.device}
    (args.out / "results.json").write_text(json.dumps({"meta": meta, "results": results}, indent=1))
    print(report.summary_text(results, meta))
    docs = args.docs or (REPO / "docs" / "science.md" if args.size == "standard" else None)
    if docs is not None:
        report.write_markdown(docs, results, meta, lay)
        print(f"[science] wrote {docs}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
