"""Does object-aware contrastive learning debias? The paper's protocol on a controlled scene-bias benchmark.

    python bench/science.py            # standard: 3 seeds, MoCo v2 (both sets) and BYOL (bg) -> docs/science.md
    python bench/science.py --quick    # 1 seed, MoCo v2, both sets (iteration; prints, writes under --out)
    python bench/science.py --onestage --out <the standard run's out>   # issue 21: -> docs/science-onestage.md
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
is a plugin command; a finished step is not redone (rerun the same command to continue). Independent steps
run ``--jobs`` at a time (CPU: 2, each with half the cores; measured faster than one at a time with every core,
docs/benchmarks.md).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import shlex
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Dict, NamedTuple, Optional, Tuple

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
sys.path.insert(0, str(REPO))

from scenebias import markdown, protocol, report  # noqa: E402
from scenebias.generate import (DEFAULT_BACKGROUNDS, PHOTO_EXTENSIONS, GeneratorError, SceneBiasConfig,  # noqa: E402
                                generate, list_photos)
from occon_plugin.augment.semantics import DONOR_RULE  # noqa: E402

ALL_ARMS = ("baseline", "contracam", "oracle", "random", "onestage", "onestage2x", "onestage3x")


class Size(NamedTuple):
    """One size of the benchmark: ``--quick``, the standard run, ``--onestage``, ``--full``."""

    seeds: Tuple[int, ...]
    table: Dict[str, Dict[str, Tuple[str, ...]]]  # method -> set -> arms
    recipe: dict = {}                             # Recipe changes
    data: dict = {}                               # SceneBiasConfig changes
    final: Tuple[Tuple[str, str, str], ...] = ()  # (set, method, arm) whose final model is localized too
    docs: Optional[str] = None                    # the page it writes (under docs/) when not narrowed


SIZES = {
    "quick": Size((0,), {"mocov2": {"bg": ("baseline", "contracam", "oracle", "random"),
                                    "ctx": ("baseline", "contracam", "oracle", "random")}},
                  {"epochs": 8}, {"train_per_class": 100, "ctx_scenes": 600}),
    # what fits 90 min on 2 cores (24 pretrainings, ~4.7 min each with two side by side): the arms the issue's
    # targets compare. Background set: MoCo v2 baseline / ContraCAM / oracle (the gap ContraCAM should close) /
    # one-stage (issue 21); contextual set: baseline / ContraCAM (OA-Crop's gain); BYOL on the background set:
    # baseline and ContraCAM ("same direction"). The controls that only tell something once ContraCAM gains
    # (random masks or boxes) and the BYOL oracle ran in the 2026-12-06 standard run (33 pretrainings, 117 min):
    # docs/science-2026-12-06.md. Everything else: --arms, or --full
    "standard": Size((0, 1, 2), {"mocov2": {"bg": ("baseline", "contracam", "oracle", "onestage"),
                                            "ctx": ("baseline", "contracam")},
                                 "byol": {"bg": ("baseline", "contracam")}}, docs="science.md"),
    # issue 21's comparison: one-stage vs two-stage vs baseline on both sets and both methods, one-stage also at
    # the two-stage protocol's total epochs, and ContraCAM of the final models (MoCo v2, background set). With
    # the standard run's --out it reuses its steps: 9 pretrainings and 9 localizations more (~55 min on 2 cores)
    "onestage": Size((0, 1, 2), {"mocov2": {"bg": ("baseline", "contracam", "onestage", "onestage2x", "onestage3x"),
                                            "ctx": ("baseline", "contracam", "onestage")},
                                 "byol": {"bg": ("baseline", "contracam", "onestage")}},
                     final=(("bg", "mocov2", "contracam"), ("bg", "mocov2", "onestage"),
                            ("bg", "mocov2", "onestage2x")), docs="science-onestage.md"),
    "full": Size((0, 1, 2, 3, 4), {m: {"bg": ALL_ARMS + ("hardmix",), "ctx": ALL_ARMS} for m in ("mocov2", "byol")},
                 {"epochs": 200}),
}


def size_cells(size: str, sets=None, methods=None, arms=None) -> protocol.Cells:
    """The (set, method) -> arms a run trains: the size's table, narrowed by ``--sets`` / ``--methods``;
    ``--arms`` replaces the arms of every cell. A set or method named on the command line that the table
    lacks for a cell gets that set's arms of the table's first method (``--methods byol --sets ctx`` runs
    BYOL on the contextual set)."""
    table = SIZES[size].table
    first = next(iter(table.values()))
    out: protocol.Cells = {}
    for set_ in sets or ("bg", "ctx"):
        for method in methods or table:
            listed = table.get(method, {}).get(set_)
            if listed is None and not ((methods and method not in table) or (methods and sets)):
                continue
            chosen = tuple(arms) if arms else (listed or first.get(set_, ALL_ARMS))
            chosen = tuple(a for a in chosen if not (a == "hardmix" and set_ != "bg"))
            if chosen:
                out[(set_, method)] = chosen
    return out


def final_cells(size: Size, cells: protocol.Cells, every: bool = False) -> Tuple[Tuple[str, str, str], ...]:
    """The ``(set, method, arm)`` whose final model is localized too: the size's, those of ``cells`` only (a
    narrowed run keeps the ones it still trains); ``every`` (``--localize-final``): every arm but the baseline."""
    return tuple((s, m, a) for (s, m), arms in cells.items() for a in arms
                 if a != "baseline" and (every or (s, m, a) in size.final))


def default_jobs(device: str) -> int:
    """Steps at a time: one on a GPU (it runs one training well), else two (each with half the cores)."""
    return 1 if device == "cuda" else min(2, report.cpu_count())


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    size = ap.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_const", dest="size", const="quick")
    size.add_argument("--onestage", action="store_const", dest="size", const="onestage",
                      help="issue 21's one-stage study (docs/science-onestage.md); give the standard run's --out "
                           "to reuse its steps")
    size.add_argument("--full", action="store_const", dest="size", const="full")
    ap.set_defaults(size="standard")
    ap.add_argument("--seed", type=int, nargs="+", default=None, help="seeds (default: by size)")
    ap.add_argument("--methods", nargs="+", choices=sorted(protocol.METHODS), default=None)
    ap.add_argument("--sets", nargs="+", choices=("bg", "ctx"), default=None)
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
    ap.add_argument("--jobs", type=int, default=None,
                    help="steps run at once, each with cores/jobs threads (default: 2 on CPU, 1 on a GPU)")
    ap.add_argument("--out", type=Path, default=None, help="working folder (default: outputs/science-<size>)")
    ap.add_argument("--docs", type=Path, default=None,
                    help="write the report here (default: docs/science.md for the standard size, else none)")
    ap.add_argument("--localize-final", action="store_true",
                    help="also localize every object-aware arm's final model (occon-localize with the stage-1 "
                         "settings) and score it: one localization per arm and seed more")
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
            kind = type(default[0] if isinstance(default, tuple) else default).__name__
            raise GeneratorError(f"--data {item}: {key} takes {kind} value(s) like "
                                 f"{','.join(map(str, default)) if isinstance(default, tuple) else default} ({exc})")
    return out


# occon keys the protocol sets per arm and set (protocol.pretrain_step, the set's YAML): an --occon value would
# silently turn one arm into another (a store for the one-stage arm, no augmentation for ContraCAM, ...) or
# stop a one-stage run after the steps before it ran
PROTOCOL_OCCON_KEYS = ("enabled", "store", "oa_crop.enabled", "bg_mixup.enabled", "bg_mixup.hard", "refresh.enabled",
                       "refresh.warmup_epochs", "refresh.every_epochs", "refresh.image_size")


def occon_problem(items) -> Optional[str]:
    """Why the ``--occon KEY=VALUE`` items are not a valid ``occon`` section for the plugin (its own parser:
    unknown keys, types, ranges), or name a key the protocol sets per arm (:data:`PROTOCOL_OCCON_KEYS`), or
    None: found before any step runs, not at the first object-aware pretraining."""
    owned = [item.split("=", 1)[0] for item in items if item.split("=", 1)[0].strip() in PROTOCOL_OCCON_KEYS]
    if owned:
        return (f"occon.{owned[0]} is set by the benchmark for each arm (its store, the set's augmentation, the "
                f"one-stage schedule; bench/scenebias/protocol.py): --occon takes the other occon keys")
    import yaml
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    from occon_plugin.augment.config import occon_settings
    from occon_plugin.errors import ConfigError
    from occon_plugin.train.refresh import check_preset

    try:
        settings = occon_settings(OmegaConf.to_container(OmegaConf.from_dotlist(list(items))))
        check_preset(settings.refresh)  # the one-stage arms' refresh: preset and precision names
    except (OmegaConfBaseException, yaml.YAMLError) as exc:  # a value that is not YAML, e.g. "[0"
        return f"{' '.join(items)}: not KEY=VALUE with a YAML value ({str(exc).splitlines()[0]})"
    except ConfigError as exc:
        return str(exc)
    for key, value, what in settings.refresh.problems():
        return f"occon.refresh.{key}={value!r}: {what}"
    return None


def default_docs(args: argparse.Namespace) -> Path | None:
    """The size's page (``docs/science.md`` for the standard size, ``docs/science-onestage.md`` for
    ``--onestage``) as it is; a narrowed or changed run (other seeds, methods, sets, arms, epochs, data, occon
    settings or final localizations) writes no report unless ``--docs`` names one: it must not replace the
    page with a part of it."""
    page = SIZES[args.size].docs
    if page is None:
        return None
    narrowed = [flag for flag, value in (("--seed", args.seed), ("--methods", args.methods), ("--arms", args.arms),
                                         ("--epochs", args.epochs), ("--rho", args.rho), ("--data", args.data),
                                         ("--occon", args.occon), ("--backgrounds", args.backgrounds),
                                         ("--localize-final", args.localize_final),
                                         ("--device", args.device != "cpu" or None))
                if value] + (["--sets"] if args.sets and set(args.sets) != {"bg", "ctx"} else [])
    if narrowed:
        print(f"[science] docs/{page} not written: {' '.join(narrowed)} narrow or change the {args.size} run "
              f"(name a report with --docs)")
        return None
    return REPO / "docs" / page


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
    size = SIZES[args.size]
    recipe_changes, data_changes = size.recipe, size.data
    seeds = tuple(dict.fromkeys(args.seed)) if args.seed else size.seeds
    cells = size_cells(args.size, args.sets, args.methods, args.arms)
    final = final_cells(size, cells, every=args.localize_final)
    if not cells:
        print("[science] error: no set x method x arm left to train (--arms hardmix runs on the bg set only)",
              file=sys.stderr)
        return 2
    sets = tuple(dict.fromkeys(s for s, _ in cells))
    methods = tuple(dict.fromkeys(m for _, m in cells))
    arms = tuple(a for a in ALL_ARMS + ("hardmix",) if any(a in c for c in cells.values()))
    jobs = args.jobs if args.jobs is not None else default_jobs(args.device)
    if jobs < 1:
        print(f"[science] error: --jobs {jobs}: give 1 or more", file=sys.stderr)
        return 2
    threads = max(1, report.cpu_count() // jobs) if jobs > 1 else None
    if jobs > report.cpu_count():
        print(f"[science] note: --jobs {jobs} on {report.cpu_count()} cores: the steps share cores (1 thread each) "
              f"and each takes longer; the wall times on the page are of this setting", file=sys.stderr)
    bad_seeds = [seed for seed in seeds if seed < 0]
    if bad_seeds:
        print(f"[science] error: --seed {bad_seeds[0]}: seeds are integers >= 0", file=sys.stderr)
        return 2
    if args.epochs is not None and args.epochs < 1:
        print(f"[science] error: --epochs {args.epochs}: give 1 or more (pretraining epochs of every arm)",
              file=sys.stderr)
        return 2
    recipe = protocol.Recipe(**recipe_changes)
    if args.epochs:
        recipe = dataclasses.replace(recipe, epochs=args.epochs)
    if args.occon:
        bad = [item for item in args.occon if "=" not in item or not item.split("=", 1)[0].strip()
               or item.startswith(("occon.", "+"))]
        if bad:
            print(f"[science] error: --occon {bad[0]!r}: give KEY=VALUE below occon, e.g. bg_mixup.views=[0]",
                  file=sys.stderr)
            return 2
        problem = occon_problem(args.occon)
        if problem:
            print(f"[science] error: --occon: {problem}", file=sys.stderr)
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
    cfg = SceneBiasConfig(**data_cfg)
    # a training batch larger than the data: every pretraining would stop (occon-pretrain), after the data and
    # the object probes had run
    short = [f"{key}={n}: {n * per} images" for set_, key, n, per in (
        ("bg", "train_per_class", cfg.train_per_class, cfg.classes), ("ctx", "ctx_scenes", cfg.ctx_scenes, 1))
        if set_ in sets and n * per < recipe.batch_size]
    if short:
        print(f"[science] error: --data {short[0]} for a training batch of {recipe.batch_size}: give at least "
              f"{recipe.batch_size} training images per set", file=sys.stderr)
        return 2
    backgrounds = args.backgrounds or DEFAULT_BACKGROUNDS
    missing = [str(b) for b in backgrounds if not Path(b).is_dir()]
    if missing:
        print(f"[science] error: background folder(s) {missing} not found: pass --backgrounds <folders of photos>",
              file=sys.stderr)
        return 2
    photos = len(list_photos(backgrounds))
    if photos < 2 * cfg.classes:  # else the data step fails, after the run folder was made
        print(f"[science] error: --backgrounds: {photos} photos ({', '.join(PHOTO_EXTENSIONS)}) in "
              f"{[str(b) for b in backgrounds]}; the generator needs at least {2 * cfg.classes} (2 per background "
              f"group): pass --backgrounds <folders of photos>", file=sys.stderr)
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
    elif not args.plan and not args.report_only:  # --report-only of a folder without a run makes nothing
        args.out.mkdir(parents=True, exist_ok=True)
        report.atomic_write(known, json.dumps(settings, indent=1))

    lock = None
    if not args.plan and not args.report_only:  # two runs in one folder would train the same steps at once
        import fcntl

        args.out.mkdir(parents=True, exist_ok=True)
        lock = open(args.out / ".lock", "w")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            lock.close()
            print(f"[science] error: another bench/science.py runs in {args.out}: wait for it (or stop it), or "
                  f"pass another --out", file=sys.stderr)
            return 2

    def make_data(seed: int) -> None:
        generate(lay.data(seed), SceneBiasConfig(seed=seed, **data_cfg), backgrounds)

    steps = protocol.plan(lay, recipe, seeds, cells, make_data, final=final)
    todo = [s for s in steps if not protocol.step_done(s)]
    print(f"[science] {args.size}: seeds {list(seeds)}, "
          + "; ".join(f"{set_} {method}: {list(a)}" + ("" if "baseline" in a else " (+ its baseline: stage 1)")
                      for (set_, method), a in cells.items())
          + f"; {len(steps)} steps, {len(todo)} to run, {jobs} at a time"
          + (f" ({threads} thread(s) each)" if threads else "") + f"; out {args.out}")
    if args.report_only and len(todo) == len(steps):
        print(f"[science] error: --report-only: {args.out} holds no finished step of this plan (nothing to report)",
              file=sys.stderr)
        return 2
    if args.plan:
        for s in steps:
            print(("  done " if protocol.step_done(s) else "  todo ") + s.label)
        return 0
    from tqdm import tqdm

    started = time.time()
    timings = json.loads((args.out / "timings.json").read_text()) if (args.out / "timings.json").is_file() else {}
    bar = tqdm(total=0 if args.report_only else len(todo), unit="step", dynamic_ncols=True)

    def finished(step, seconds: float) -> None:
        timings[step.label] = {"stage": step.stage, "seconds": round(seconds, 1), "jobs": jobs}
        report.atomic_write(args.out / "timings.json", json.dumps(timings, indent=1))
        bar.update(1)
        tqdm.write(f"[science] {step.label}: {seconds:.0f} s")

    failed = None

    def stop(signum, frame):  # `kill <pid>`: stop the running commands too (rerun the command to continue)
        raise KeyboardInterrupt(f"signal {signum}")
    main_thread = threading.current_thread() is threading.main_thread()
    before = signal.signal(signal.SIGTERM, stop) if main_thread else None
    try:
        if not args.report_only:
            protocol.run_steps(lay, steps, jobs=jobs, threads=threads, on_done=finished)
    except (protocol.StepFailed, GeneratorError) as exc:
        failed = exc
    except KeyboardInterrupt:
        bar.close()
        print(f"[science] stopped; the running commands were stopped too. Run the same command again to continue "
              f"(finished steps are kept in {args.out})", file=sys.stderr)
        return 130
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, before)
    bar.close()
    wall = time.time() - started
    results = report.collect(lay, seeds, cells, final)
    # the report's times are those of this plan's steps (a folder may also hold steps of other arms)
    timings = {label: t for label, t in timings.items() if label in {st.label for st in steps}}
    results["compute"] = report.onestage_compute(timings, seeds, cells)
    meta = {"size": args.size, "seeds": list(seeds), "methods": list(methods), "sets": list(sets),
            "arms": list(arms), "cells": [[set_, method, list(a)] for (set_, method), a in cells.items()],
            "final": [list(f) for f in final],
            "jobs": jobs, "threads_per_step": threads, "recipe": protocol.recipe_dict(recipe), "data": dataclasses.asdict(
                SceneBiasConfig(**data_cfg)), "wall_seconds_this_run": round(wall), "timings": timings,
            "machine": f"{platform.machine()}, {report.cpu_count()} cores, Python {platform.python_version()}",
            "device": args.device, "not_run": [st.label for st in steps if not protocol.step_done(st)],
            "bg_mixup_donors": DONOR_RULE}
    meta["command"] = shown_command(argv if argv is not None else sys.argv[1:])
    how = f"{jobs} steps at a time" + (f", {threads} thread(s) each" if threads else "")
    meta["wall_text"] = (f"{wall / 60:.0f} min wall for all {len(steps)} steps, {how}" if todo and len(todo) == len(steps)
                         and not args.report_only else
                         f"{len(todo)} of {len(steps)} steps run by the last invocation in {wall / 60:.0f} min wall, "
                         f"{how}; the others reused from an earlier one" if todo and not args.report_only else None)
    earlier = args.out / "results.json"
    if meta["wall_text"] is None and earlier.is_file():  # nothing run now (--report-only): the run that ran them
        before = json.loads(earlier.read_text())["meta"]
        if (before.get("cells") == meta["cells"] and before.get("seeds") == meta["seeds"]
                and before.get("final", []) == meta["final"]):
            meta["wall_text"] = before.get("wall_text")
    meta.update(report.describe(lay, seeds, recipe, cells, timings, results))
    report.atomic_write(args.out / "results.json", json.dumps({"meta": meta, "results": results}, indent=1))
    print(report.summary_text(results, meta))
    docs = args.docs or default_docs(args)
    if failed is not None:
        failures = getattr(failed, "failures", {})
        for label, exc in failures.items():  # a step's own error (an in-process step's) gets its label
            print(f"[science] failed: {exc if str(exc).startswith(label) else f'{label}: {exc}'}", file=sys.stderr)
        what = (f"{len(failures)} step(s) failed (above); {len(failed.skipped)} step(s) that need them did not run"
                if failures else str(failed))  # each failure once
        print(f"[science] error: {what}" + (f"; {docs} not written (fix the step and rerun the same command: "
                                            "finished steps are kept)" if docs else ""), file=sys.stderr)
        return 1
    if docs is not None and meta["not_run"] and args.docs is None:
        print(f"[science] {docs} not written: {len(meta['not_run'])} steps of this plan have not run (rerun the same "
              f"command to finish them, or name a page with --docs)")
        docs = None
    if docs is not None:
        markdown.write_markdown(docs, results, meta, lay)
        print(f"[science] wrote {docs}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
