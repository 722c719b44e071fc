"""Does object-aware contrastive learning debias? The paper's protocol on a controlled scene-bias benchmark.

    python bench/science.py            # standard: 3 seeds, MoCo v2, both sets -> docs/science.md
    python bench/science.py --quick    # 1 seed, MoCo v2, both sets (iteration; prints, writes under --out)
    python bench/science.py --full     # 5 seeds, every arm incl. BG-HardMix, longer training (GPU or long CPU run)
    python bench/science.py --sets bg --arms baseline oracle --docs <page.md>   # a part: names its own report

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
import shlex
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
sys.path.insert(0, str(REPO))

from scenebias import markdown, protocol, report  # noqa: E402
from scenebias.generate import DEFAULT_BACKGROUNDS, GeneratorError, SceneBiasConfig, generate  # noqa: E402
from occon_plugin.augment.semantics import DONOR_RULE  # noqa: E402

SIZES = {
    # name: (seeds, methods, arms, recipe changes, data changes)
    "quick": ((0,), ("mocov2",), ("baseline", "contracam", "oracle", "random"), {"epochs": 8},
              {"train_per_class": 100, "ctx_scenes": 600}),
    # BYOL doubles the cost: in the standard size only where it fits (--methods mocov2 byol), always in --full
    "standard": ((0, 1, 2), ("mocov2",), ("baseline", "contracam", "oracle", "random", "onestage"), {}, {}),
    "full": ((0, 1, 2, 3, 4), ("mocov2", "byol"), ("baseline", "contracam", "oracle", "random", "hardmix", "onestage"),
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
    ap.add_argument("--data", nargs="+", default=[], metavar="KEY=VALUE",
                    help="generator settings (SceneBiasConfig fields; ranges as lo,hi), e.g. obj_fill=flat "
                         "bg_blur=0 obj_extent=0.45,0.65")
    ap.add_argument("--occon", nargs="+", default=[], metavar="KEY=VALUE",
                    help="occon settings of every object-aware arm (the baseline has none), e.g. "
                         "bg_mixup.views=[0]; part of the recipe: another value needs another --out")
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    ap.add_argument("--out", type=Path, default=None, help="working folder (default: outputs/science-<size>)")
    ap.add_argument("--docs", type=Path, default=None,
                    help="write the report here (default: docs/science.md for the standard size, else none)")
    ap.add_argument("--plan", action="store_true", help="print the steps and exit")
    ap.add_argument("--report-only", action="store_true",
                    help="run nothing: write the report from the steps finished so far (the others are listed)")
    return ap.parse_args(argv)


def data_settings(items) -> dict:
    """``["obj_fill=flat", "obj_extent=0.45,0.65"]`` -> SceneBiasConfig keyword arguments, typed as the
    defaults. Raises GeneratorError naming a key that is not a field or a value of the wrong type."""
    defaults = {f.name: getattr(SceneBiasConfig, f.name) for f in dataclasses.fields(SceneBiasConfig)}
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or key not in defaults or key == "seed":
            raise GeneratorError(f"--data {item}: expected KEY=VALUE with KEY one of "
                                 f"{', '.join(k for k in defaults if k != 'seed')} (the seed comes from --seed)")
        default = defaults[key]
        try:
            if isinstance(default, tuple):
                parts = value.split(",")
                if len(parts) != len(default):
                    raise ValueError(f"{len(default)} comma-separated values")
                out[key] = tuple(type(d)(x) for d, x in zip(default, parts))
            else:
                out[key] = type(default)(value)
        except ValueError as exc:
            raise GeneratorError(f"--data {item}: {key} takes {type(default).__name__} value(s) like "
                                 f"{','.join(map(str, default)) if isinstance(default, tuple) else default} ({exc})")
    return out


def default_docs(args: argparse.Namespace) -> Path | None:
    """docs/science.md for the standard size as it is; a narrowed run (other seeds, methods, sets, arms,
    epochs, data or occon settings) writes no report unless ``--docs`` names one: it must not replace the
    page with a part of it."""
    if args.size != "standard":
        return None
    narrowed = [flag for flag, value in (("--seed", args.seed), ("--methods", args.methods), ("--arms", args.arms),
                                         ("--epochs", args.epochs), ("--rho", args.rho), ("--data", args.data),
                                         ("--occon", args.occon), ("--backgrounds", args.backgrounds),
                                         ("--device", args.device != "cpu" or None))
                if value] + (["--sets"] if set(args.sets) != {"bg", "ctx"} else [])
    if narrowed:
        print(f"[science] docs/science.md not written: {' '.join(narrowed)} narrow or change the standard run "
              f"(name a report with --docs)")
        return None
    return REPO / "docs" / "science.md"


def shown_command(argv) -> str:
    """The command as the report shows it: where files go (``--out``, ``--docs``) is left out (a path of the
    machine that ran it), everything that changes the numbers is kept."""
    shown, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == "--report-only":
            continue
        elif a in ("--out", "--docs"):
            skip = True
        elif not a.startswith(("--out=", "--docs=")):
            shown.append(shlex.quote(a))
    return " ".join(["python bench/science.py", *shown])


def main(argv=None) -> int:
    args = parse_args(argv)
    args.out = args.out or REPO / "outputs" / f"science-{args.size}"
    seeds, methods, arms, recipe_changes, data_changes = SIZES[args.size]
    seeds = tuple(args.seed) if args.seed else seeds
    methods = tuple(args.methods) if args.methods else methods
    arms = tuple(args.arms) if args.arms else arms
    recipe = protocol.Recipe(**recipe_changes)
    if args.epochs:
        recipe = dataclasses.replace(recipe, epochs=args.epochs)
    if args.occon:
        bad = [item for item in args.occon if "=" not in item or item.startswith(("occon.", "+"))]
        if bad:
            print(f"[science] error: --occon {bad[0]!r}: give KEY=VALUE below occon, e.g. bg_mixup.views=[0]",
                  file=sys.stderr)
            return 2
        recipe = dataclasses.replace(recipe, occon=tuple(args.occon))
    if args.device == "cuda":
        recipe = dataclasses.replace(recipe, precision="16-mixed", num_workers=8)
    try:
        data_cfg = {**data_changes, **data_settings(args.data), **({"rho": args.rho} if args.rho is not None else {})}
        SceneBiasConfig(**data_cfg).check()
    except GeneratorError as exc:
        print(f"[science] error: {exc}", file=sys.stderr)
        return 2
    backgrounds = args.backgrounds or DEFAULT_BACKGROUNDS
    missing = [str(b) for b in backgrounds if not Path(b).is_dir()]
    if missing:
        print(f"[science] error: background folder(s) {missing} not found: pass --backgrounds <folders of photos>",
              file=sys.stderr)
        return 2
    lay = protocol.Layout(args.out)
    # one --out folder holds one experiment: finished steps are reused only under the same settings
    # "code": rules of the plugin that change the numbers without a setting (a run folder made under another
    # rule is not continued: its finished steps would be mixed with new ones)
    settings = {"data": dataclasses.asdict(SceneBiasConfig(**data_cfg)), "recipe": protocol.recipe_dict(recipe),
                "code": {"bg_mixup_donors": DONOR_RULE},
                "backgrounds": sorted(str(Path(b).resolve()) for b in backgrounds)}
    settings = json.loads(json.dumps(settings))  # tuples as lists, as read back
    known = args.out / "settings.json"
    if known.is_file():
        before = json.loads(known.read_text())
        changed = [f"{part}.{k}" for part in settings for k in sorted(set(settings[part]) | set(before.get(part, {})))
                   if isinstance(settings[part], dict) and settings[part].get(k) != before.get(part, {}).get(k)]
        if settings["backgrounds"] != before.get("backgrounds"):
            changed.append("backgrounds")
        if changed:
            print(f"[science] error: {args.out} holds a run with other settings ({', '.join(changed)}): its finished "
                  f"steps would be reused; pass another --out (or delete that folder)", file=sys.stderr)
            return 2
    elif not args.plan:
        args.out.mkdir(parents=True, exist_ok=True)
        report.atomic_write(known, json.dumps(settings, indent=1))

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
    bar = tqdm([] if args.report_only else todo, unit="step", dynamic_ncols=True)
    try:
        for step in bar:
            bar.set_description(step.label)
            seconds = protocol.run_step(lay, step)
            timings[step.label] = {"stage": step.stage, "seconds": round(seconds, 1)}
            report.atomic_write(args.out / "timings.json", json.dumps(timings, indent=1))
            tqdm.write(f"[science] {step.label}: {seconds:.0f} s")
    except (protocol.StepFailed, GeneratorError) as exc:
        bar.close()
        print(f"[science] error: {exc}", file=sys.stderr)
        return 1
    bar.close()
    wall = time.time() - started
    results = report.collect(lay, seeds, args.sets, methods, arms)
    # the report's times are those of this plan's steps (a folder may also hold steps of other arms)
    timings = {label: t for label, t in timings.items() if label in {st.label for st in steps}}
    results["compute"] = report.onestage_compute(timings, seeds, args.sets, methods) if "onestage" in arms else {}
    meta = {"size": args.size, "seeds": list(seeds), "methods": list(methods), "sets": list(args.sets),
            "arms": list(arms), "recipe": protocol.recipe_dict(recipe), "data": dataclasses.asdict(
                SceneBiasConfig(**data_cfg)), "wall_seconds_this_run": round(wall), "timings": timings,
            "machine": f"{platform.machine()}, {report.cpu_count()} cores, Python {platform.python_version()}",
            "device": args.device, "not_run": [st.label for st in steps if not st.done.exists()],
            "bg_mixup_donors": DONOR_RULE}
    meta["command"] = shown_command(argv if argv is not None else sys.argv[1:])
    meta.update(report.describe(lay, seeds, recipe, methods, args.sets, arms, timings, results))
    report.atomic_write(args.out / "results.json", json.dumps({"meta": meta, "results": results}, indent=1))
    print(report.summary_text(results, meta))
    docs = args.docs or default_docs(args)
    if docs is not None:
        markdown.write_markdown(docs, results, meta, lay)
        print(f"[science] wrote {docs}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
