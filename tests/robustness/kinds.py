"""The bad-input kinds the battery checks, and the generator of ``docs/robustness.md``.

Every kind is asserted by at least one test marked ``@pytest.mark.kind("<id>")`` in this folder
(``test_docs.py`` checks it and that the page is current). Regenerate the page with::

    .venv/bin/python tests/robustness/kinds.py --write
"""
from __future__ import annotations

import ast
import sys
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
DOC = HERE.parents[1] / "docs" / "robustness.md"


@dataclass(frozen=True)
class Kind:
    id: str
    issue: str        # item of issue 10 ("5"), of issue 18 ("18.5"), or "found" for kinds the battery added
    what: str         # the input or fault
    where: str        # paths it can occur in
    behaviour: str    # what happens now (asserted by the tests)


KINDS = [
    # 1. decoding
    Kind("decode.16bit", "1", "16-bit PNG (grey `I;16` and 16-bit colour)", "every reader",
         "scaled `round(v*255/65535)` (DALI's own rule), never clipped; DALI gets the same pixels"),
    Kind("decode.modes", "1", "PIL modes `I`, `F`, `LA`, `P` with transparency, `CMYK`, `1`, `RGBA`, TIFF, WebP, BMP",
         "every reader", "one decode rule (`occon_plugin/images/decode.py`: alpha dropped as torchvision's loader "
         "does, 32-bit int/float scaled by a documented rule); both pipelines decode identical pixels"),
    Kind("decode.exif", "1", "EXIF orientation 6 (rotated phone photo)", "every reader",
         "applied everywhere (store size, masks, both pipelines); sizes read after orientation"),
    # 2. unreadable files
    Kind("bad.unreadable", "2", "0-byte, truncated JPEG, JPEG broken in the middle, text named `.jpg`, "
         "truncated PNG, decompression-bomb-sized PNG", "localize, both pipelines, eval, features",
         "localize: skipped, counted, first few printed with reasons; pretraining: dropped before the first step "
         "by one shared check, the same files in both pipelines, counted"),
    Kind("bad.failed-entry", "2", "store entries marked failed (w = h = 0)", "both pipelines",
         "dropped with the unreadable images; no record reaches DALI without a size"),
    Kind("bad.runtime", "2", "an image or mask that breaks after the start-up check", "both pipelines",
         "image: replaced by the same seeded stand-in in both pipelines (`replaced` flag, counted); mask: the "
         "sample is not mixed (counted)"),
    # 3. ground truth
    Kind("gt.degenerate-polygon", "3", "COCO polygon with < 3 points", "eval",
         "polygon left out, named (`image annotation id`) in the result and printed"),
    Kind("gt.box-only", "3", "COCO annotations with `\"segmentation\": []`", "eval",
         "scored for MaxBoxAccV2 / CorLoc, left out of mask mIoU (counted: `n_without_gt_mask`)"),
    Kind("gt.bad-bbox", "3", "COCO bbox NaN, empty, inverted or outside the image", "eval",
         "box left out, named in `gt_problems`"),
    Kind("gt.size-mismatch", "3", "GT size differs from the image (json width/height, EXIF rotation, mask file)",
         "eval", "named per image; default stops (exit 2), `mismatch=skip` scores the rest; never resized"),
    Kind("gt.store-mismatch", "3,9", "store mask of another size or computed from another file than the GT's image; "
         "images absent under `image_root` (a wrong folder)", "eval",
         "named per image (exit 2 by default); never resized; images that cannot be compared (absent under "
         "`image_root`) are counted in one line, with the first name, and listed in the JSON (`unverified`)"),
    Kind("gt.missing-prediction", "6", "GT images without a prediction (incl. a store missing entries)", "eval",
         "default stops naming them (exit 2); `missing=skip` scores the rest and prints the count and names"),
    # 4. listing
    Kind("list.imagefolder", "4", "class folders, nested folders, mixed-case extensions", "every listing",
         "same images, classes and order as torchvision's `ImageFolder`"),
    Kind("list.skipped", "4,13", "hidden files and folders, `.gif`/`.txt`, dangling symbolic links, "
         "symbolic-link loops, empty class folders", "every listing",
         "not listed on purpose, counted per kind and reported with the first names (GIF: convert hint)"),
    # 5 / 11. runs
    Kind("run.changed-settings", "5", "rerun under a run name with other lr / batch size / temperature / epochs",
         "pretraining", "`auto_resume=true`: stops with one line naming the differing keys (exit 2), writes nothing; "
         "`auto_resume=false`: a new run folder `<name>-2`; the old config and checkpoints stay"),
    Kind("run.torn-checkpoint", "11", "`kill -9` while `last.ckpt` is written; a torn `last.ckpt`",
         "pretraining", "checkpoints written atomically (temp + fsync + rename); a torn file is kept as "
         "`*.damaged` and the newest readable checkpoint is used, saying so"),
    Kind("run.resume-exact", "11", "`kill -9` during pretraining, then resume", "pretraining",
         "torchvision path: bit-identical to an uninterrupted run (LR scheduler double step, momentum tau and "
         "RNGs restored by `occon_plugin.train.runs`); DALI: each epoch's pipeline seeded from (seed, epoch) and the "
         "sampler resumes at the right epoch"),
    Kind("run.kill-localize", "11", "`kill -9` during localization, then rerun", "localize",
         "resumes; the temporary files the kill left are removed; the final store equals an uninterrupted run's"),
    Kind("run.dead-worker", "9", "a post-processing worker process killed (out of memory), or the main process "
         "killed outright (`kill -9` of its pid only)", "localize",
         "a dead worker: one line saying to rerun (resumes) with fewer `post_workers` (`ResourceError`); a killed "
         "main process leaves no worker process behind"),
    # 6 / 9 / 10. store
    Kind("store.damaged-mask", "6,10", "deleted, empty, truncated, corrupt or wrong-size mask PNG", "both pipelines",
         "found by the validator before the first step, named; `occon.missing` error (exit 2) / skip / "
         "full_image, counted"),
    Kind("store.bad-boxes", "10", "NaN, inverted or far-outside boxes; bg_rect outside the image", "both pipelines",
         "found by the validator before the first step, named; policy as above"),
    Kind("store.torn-index", "6", "`index.jsonl` cut short or with a garbled line", "pretraining, eval",
         "`Store.open` refuses naming the file, the line and the counts, and says how to repair it"),
    Kind("store.swapped", "9", "two same-size images swapped, or one replaced by another photo; a localized photo "
         "deleted or moved since, or read from another folder (a wrong `data.image_root`)", "both pipelines, eval",
         "the entry's file fingerprint differs: named as replaced; a file that cannot be read now: named as gone "
         "(never as replaced); policy decides; the repair command names `data.path=<the COCO json> "
         "data.image_root=...` for a COCO listing"),
    Kind("store.other-folder", "9", "`occon-localize` into a store made from another folder with the same names",
         "localize", "refused, naming the files that differ (exit 2); the store is untouched"),
    # 7. config errors
    Kind("config.pretrain", "7", "unknown `occon.*` key, bad enum, missing store, batch larger than the data, "
         "`batch_size=abc`, `data.train_path` = an image file, BG-Mixup enabled over no view "
         "(`occon.bg_mixup.views=[]`)", "pretraining",
         "one line `[occon] error: ...` naming the key or file, exit 2"),
    Kind("config.cli", "7", "bad keys / values of `occon-localize` and `occon-eval-localization`", "localize, eval",
         "one line naming the key, exit 2"),
    Kind("config.null-section", "found", "`++occon=null`, `occon.oa_crop=null`, `occon.bg_mixup=null` on an "
         "object-aware method (trained the host's baseline without a word)", "pretraining (the plugin's script and "
         "the host's own construction)", "one line naming the key and the switch that does turn it off "
         "(`occon.enabled=false`, `occon.<augmentation>.enabled=false`), exit 2; an absent section stays the "
         "documented baseline"),
    # 8. arrays
    Kind("array.layouts", "8", "read-only, Fortran-order, strided and negative-stride arrays", "public array functions",
         "accepted, same results as a plain C-contiguous array"),
    # 12 / 13
    Kind("out.inside-input", "12", "output folder inside the image folder, or equal to it", "localize, pretraining",
         "stores inside a data folder are skipped by the listing (counted); `output_dir = data.path` is refused"),
    Kind("quiet.all-bad", "13", "a folder of only unreadable images", "localize, pretraining",
         "exit 2 with the first reasons (no store full of nothing, no exit 0)"),
    Kind("quiet.umask", "13", "files written under a umask", "every writer", "permissions `0666 & ~umask` (not 0600)"),
    Kind("quiet.huge-photo", "13", "very large photo with a refinement on", "localize",
         "with `refine.resolution=image` every refinement step runs at a bounded working size "
         "(`refine.<method>.max_pixels`, 4 MP; spatial widths scaled), the mask is stored at full size; 12 MP photo, "
         "CRF: peak memory 3.16 -> 1.71 GiB (`bench/robustness.py crf`); the presets' `refine.resolution=input` "
         "refines at the model input size"),
    # issue 18 (round 2), part A: localization, stores, evaluation
    Kind("store.changed-while-localized", "18.1", "a photo replaced, truncated or still being written while it is "
         "localized (between its read and its entry's write)", "localize; every fingerprint check",
         "the file is read once: decoded and fingerprinted from the same bytes (`read_image`); the writer refuses an "
         "entry whose file changed since (`ImageChangedError`) and the run localizes it again from the new file "
         "(its batch, up to 2 rounds); a file still changing is left out, named in one line and in the manifest "
         "(`changed_during_run`), and the same command adds it; resume, store validation and eval compare with "
         "`file_fingerprint`, the same rule"),
    Kind("gt.encodings", "18.3", "ground-truth mask files: palette with VOC's 255 = void, `L` 0/1, 0/255, label "
         "maps with 255 = void, JPEG (ringing), RGBA opaque or cut-out, colour-coded with VOC's void colour, 16-bit, "
         "1-bit, float; values other than 0/1/255", "eval (mask folders)",
         "one rule (`read_gt_mask`, docs/eval.md): palette = label map, lossy/graded = value >= half scale, alpha "
         "that varies = the mask, colour: black = background; void pixels count in no metric (mIoU, MaxBoxAccV2, "
         "CorLoc); a perfect prediction scores 1.0 on every encoding; one line says what was assumed for masks "
         "that are not plain binary (JSON: `gt_encodings`); a 0/1 JPEG or out-of-range values are refused by name"),
    Kind("run.store-rebuilt", "18", "the store rebuilt in place (other settings, model or entries) between a run's "
         "start and its resume", "occon-pretrain (auto_resume)",
         "the run records the store it started with (`store.json`: model, settings and index hashes); a resume on a "
         "store that differs is one line naming what differs and how to start a new run (never continues the "
         "weights on other masks)"),
    Kind("eval.constant-map", "17", "prediction maps that are one positive value everywhere (a whole-image "
         "baseline saved as a CAM folder), or hold NaN/Inf", "occon-eval-localization",
         "min-max normalization (wsolevaluation) has no ranking there and scores them as no object: one line each "
         "says how many and names one, the JSON lists them (`constant_maps`, `nonfinite_maps`); never a silent 0"),
    Kind("eval.mismatched-sets", "18.4", "one-class training set (one folder, or every image of the other classes "
         "unreadable), a test class without readable training images, class names that differ, a test set or "
         "Background Challenge variant lacking classes; test images that are training images (`test_dir` = "
         "`train_dir`, copies); `variants=[]` without shift sets, `variants=null`, a variant listed twice", "occon-eval-linear, occon-eval-bgchallenge, occon-linear",
         "fewer than 2 training classes: one line, exit 2, in every linear evaluation; a class that can never be "
         "predicted or an unknown class name: one line, exit 2; a set lacking classes: scored over the classes it "
         "has, said in one line and in the JSON; BG-gap over the classes both mixed_same and mixed_rand have, said "
         "in one line (JSON: `bg_gap_classes`, `notes`); test images byte-identical to training images "
         "(`file_fingerprint`): counted with an example in one line and in the JSON (occon-eval-linear, every "
         "Background Challenge set); variants: null = all, nothing to evaluate or a repeat is one line, exit 2"),
    Kind("store.schema-v1", "18.6", "a store from before fingerprints (schema v1)", "both pipelines, the host's "
         "script, eval, localize", "refused with one line naming the command that rebuilds it (`occon-localize ... "
         "resume=false`) unless `occon.allow_v1_store=true` (eval: `allow_v1_store=true`), then said once; "
         "occon-localize does not resume it (resume=false rebuilds it)"),
    Kind("store.concurrent-localize", "18.10", "two `occon-localize` into one store folder; a writer killed with "
         "`kill -9`", "localize (every StoreWriter)", "the second is refused with one line naming the holder's "
         "process (exit 2), the store untouched: rank 0 holds an `flock` on `.occon-localize.lock` until "
         "close/abandon, released by the kernel when its process dies (no stale lock); under torchrun rank 0's "
         "refusal stops every rank"),
    Kind("store.killed-start", "18.11", "a kill during the very first manifest write (`.manifest.json.*` left); "
         "damaged masks or entries found by the validator", "localize, both pipelines",
         "the leftovers are recognised and removed (a user's file still makes the folder \"not a store\"); the "
         "validator's message names the `occon-localize` command, and that rerun redoes every damaged entry "
         "(same masks as an uninterrupted run)"),
    Kind("run.worker-start", "18.13", "a script fed on stdin (`python - <<EOF`), an unguarded script, "
         "`post_workers` above the cores", "localize (FinishPool)",
         "stdin: post-processing in the main process with one line; unguarded: the workers end quietly and the "
         "script's one error line says to add the `__main__` guard or post_workers=0 (no worker tracebacks); more "
         "post_workers than usable cores: capped to the cores with one line (the store is the same)"),
    Kind("cli.small", "18.14", "`occon-zoo convert` of a missing file or a folder; where are the installed YAMLs",
         "occon-zoo, every command taking a checkpoint; host scripts",
         "one line, exit 2 (`CheckpointNotFoundError`); `python -m occon_plugin.configs [pretrain|linear|cli]` prints "
         "the folders (docs/hosts.md, README)"),
    # found by the battery
    Kind("found.unwritable-output", "found", "read-only or full output folder; an output file path that is a "
         "folder (`occon-zoo convert SRC <folder>`); an output folder where no folder can be made (`/proc/x`)", "localize, pretraining, occon-zoo (every atomic writer)",
         "one line naming the file and what to do, exit 2; nothing half-written"),
    Kind("found.store-as-data", "found", "`data.path` pointing at a store", "localize, pretraining",
         "refused: a store is not an image folder"),
    Kind("found.coco-duplicates", "found", "COCO json listing one `file_name` twice", "every COCO listing",
         "refused naming the file name"),
    Kind("found.damaged-manifest", "found", "store `manifest.json` that is not JSON", "pretraining, eval, localize",
         "one line naming the file and how to rebuild"),
    Kind("config.ranges", "found", "a numeric setting out of range or NaN: `refine.crf.gauss_sxy=0`, "
         "`refine.crf.clip=0.7`, `threshold=2`, `boxes.deltas=[5]`, `l2_values=[-1]`, `val_fraction=0`, `crop` > `resize`, `batch_size=0`, "
         "`num_workers=-1`, `seed=-3`, `optimizer.lr=-1`, `max_epochs=0`", "every command",
         "refused before a model or image is loaded: one line naming the key, its value and the values it takes "
         "(exit 2); one rule (`occon_plugin.config.check_ranges`; each refinement's in its `problems()`, which "
         "`refiners.refine` applies too: a width of 0 no longer crashes pydensecrf)"),
    Kind("ckpt.one-encoder", "found", "`use_momentum=true` with a checkpoint that holds one encoder: an "
         "`occon-zoo convert` output (without `--momentum`), a plain state_dict, `random:` / `torchvision:` / "
         "`timm:` / `efficientnet-lite0`", "every command reading a model (`load_model` -> `read_checkpoint`)",
         "refused with one line naming the file and what to give instead (exit 2), never read as the online "
         "encoder; a record converted with `--momentum` and a training checkpoint with both encoders load as asked"),
    Kind("config.trainer", "found", "trainer settings Lightning refuses or mishandles: `accelerator=gpu` without "
         "a GPU, `devices=2` with the YAMLs' `strategy: auto` under Lightning 1.9 (it spawned: a pickling "
         "traceback), `strategy=ddp_spawn`, a device count Lightning refuses", "occon-pretrain, occon-linear "
         "(`host.make_trainer`)", "`strategy: auto` with several processes is DDP in both generations; a spawning "
         "strategy and every Lightning `MisconfigurationException` are one line naming the trainer keys (exit 2)"),
    Kind("model.random-weights", "found", "`model=torchvision:<name>` / `timm:<name>` (read like pretrained "
         "weights; nothing is downloaded)", "every command reading a model (`load_model`)",
         "runs, and says once on stderr that the weights are random and what to give for trained ones "
         "(`random:<name>` is the quiet, explicit spelling)"),
    # issue 18 (round 2), training and tracking
    Kind("train.diverged", "18.2", "training that diverges (NaN/Inf loss: e.g. `optimizer.lr=1e30`); a checkpoint "
         "holding NaN/Inf weights", "pretraining (both pipelines, the host's script too), every evaluator",
         "stops at the first step whose loss and gradients are not finite, before the optimizer step (DDP: all "
         "ranks at the same step; a NaN loss with finite gradients, as DeepClusterV2's first epoch, goes on): one "
         "line naming the step, the loss and the likely key (`optimizer.lr`; `precision` with float16), exit 3; no "
         "checkpoint is written with non-finite weights (the last finite one stays); occon-eval-linear, "
         "occon-eval-bgchallenge, occon-linear, occon-localize refuse such a checkpoint naming the file (exit 2); "
         "one check: `occon_plugin/finite.py`"),
    Kind("wandb.user-switch", "18.5", "`WANDB_MODE=disabled` / `WANDB_DISABLED=true` / `WANDB_MODE=offline|online`; "
         "`WANDB_DIR`; no API key; Hydra multirun (`-m`)", "every command, the host's own script",
         "the user's W&B environment wins (disabled: nothing written; offline over a key and `wandb.offline`; "
         "`WANDB_DIR` holds every command's run files); "
         "without a key an online run goes offline saying so (the host's script too: the method sets `WANDB_MODE` "
         "before the script's `WandbLogger` starts); each multirun job finishes its own run"),
    Kind("wandb.pictures-once", "18.14", "a resumed run (same W&B run)", "pretraining",
         "the `occon/augmentations` pictures are logged once per run (the flag travels in the checkpoints)"),
    Kind("ddp.both-pipelines", "18.7", "`devices=2 strategy=ddp` (CPU, gloo) with a dataset that does not split "
         "evenly; a DALI error that is not a changed file", "both pipelines",
         "each rank trains on every 2nd sample of the single-process order (equal shares, one split: DALI no "
         "longer splits the rank's share again), same BG-Mixup decisions in both pipelines, one run folder; a "
         "batch larger than a process's share is one line naming `optimizer.batch_size` and `devices`; a DALI "
         "error names the files only when they no longer decode, else it is DALI's own error"),
    Kind("run.no-space", "18.8", "disk full or file-size limit (`ulimit -f`) while a checkpoint is saved",
         "pretraining (and every atomic writer)",
         "one line naming the file, the run folder and what to do, exit 2; the previous `last.ckpt` intact byte "
         "for byte, no temp file; the rerun resumes (SIGXFSZ ignored so the write fails instead of killing)"),
    Kind("run.out-of-memory", "18.8", "a batch too large for memory (torch's `DefaultCPUAllocator: can't allocate`, "
         "CUDA out of memory, `MemoryError`)", "every command",
         "one line naming the batch-size key and its value (`optimizer.batch_size`, `batch_size`), exit 2"),
    Kind("run.sigterm", "18.9", "SIGTERM (a scheduler's stop) or Ctrl-C during training, before it, during "
         "localization", "pretraining, every command",
         "pretraining: a resumable `last.ckpt` at the next step boundary (DDP: ranks decide together), one line "
         "naming it, exit 143 (Ctrl-C: 130; never a `final.ckpt` of a stopped run); the rerun resumes mid-epoch on "
         "the remaining batches and ends bit-identical to an uninterrupted run (torchvision path); a second signal "
         "stops at once; elsewhere one line, exit 143, the rerun resumes"),
    Kind("run.concurrent", "18.10", "two pretraining runs with one name (run folder) at once", "pretraining",
         "the second is refused with one line naming the folder and the first run's pid (exit 2); `fcntl.flock`: "
         "a killed run leaves no stale lock"),
    Kind("paths.chdir", "18.12", "relative paths with `hydra.job.chdir=true`", "every command",
         "inputs are read from the launch folder, outputs go under the job's folder; one line names both"),
    Kind("paths.quoting", "18.12", "an unquoted value with `=` or non-ASCII letters", "every command",
         "one line naming the key and the quoted form to type (exit 2)"),
    Kind("paths.relative-resume", "18.12", "the same run given its paths relative, absolute or through a symbolic "
         "link", "pretraining", "resumed: run paths are stored absolute and compared as the folders they name"),
]


def covered_kinds(folder: Path = HERE) -> dict[str, list[str]]:
    """``kind id -> [test_file::test_name, ...]`` from the ``pytest.mark.kind`` markers (parsed, not imported)."""
    found: dict[str, list[str]] = {}
    for path in sorted(folder.glob("test_*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) or not node.name.startswith("test_"):
                continue
            for dec in node.decorator_list:
                if (isinstance(dec, ast.Call) and isinstance(dec.func, ast.Attribute) and dec.func.attr == "kind"):
                    for arg in dec.args:
                        if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                            found.setdefault(arg.value, []).append(f"{path.name}::{node.name}")
    return found


def render(covered: dict[str, list[str]] | None = None) -> str:
    covered = covered_kinds() if covered is None else covered
    lines = [
        "# Robustness: bad inputs and faults",
        "",
        "What the plugin does with each kind of bad input or fault, in every path it can occur in",
        "(issues 10 and 18). Every row is asserted by the tests named in its last column (`tests/robustness/`);",
        "`tests/robustness/test_docs.py` fails when a row has no test or this page is out of date.",
        "Regenerate it with `.venv/bin/python tests/robustness/kinds.py --write`.",
        "",
        "Shared rules: bad input raises an `occon_plugin.errors.OcconError`; the CLIs print one line",
        "`[occon] error: ...` naming the key or file and exit with status 2. Long runs skip and count bad",
        "images. Everything is written atomically (`occon_plugin.atomic`). The decode rule is in",
        "`occon_plugin/images/decode.py`, the listing rules in `occon_plugin/images/listing.py`, the store",
        "checks in `occon_plugin/store/validate.py`, the run policy in `occon_plugin/train/runs.py`.",
        "",
        "| kind | issue | input / fault | where | behaviour | asserted by |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for k in KINDS:
        tests = "<br>".join(f"`{t}`" for t in covered.get(k.id, [])) or "**none**"
        lines.append(f"| `{k.id}` | {k.issue} | {k.what} | {k.where} | {k.behaviour} | {tests} |")
    return "\n".join(lines) + "\n" + DETAILS


DETAILS = """
## How the shared parts work

**One decode rule, two pipelines.** `occon_plugin.images.load_image` (localization, the torchvision
pipeline, evaluation, features, and the host linear CLI's `ImageFolder` through `load_pil_image`)
applies the rule documented in `occon_plugin/images/decode.py`. The DALI pipeline hands its decoder
the file itself only for (format, mode) pairs measured to decode to the rule's exact pixels (8-bit
JPEG/PNG/BMP/WebP/TIFF modes, EXIF orientation included); every other file (16-bit, 32-bit, float,
unusual modes) reaches DALI as the rule's pixels re-encoded as a lossless PNG. The battery compares
DALI's output with `load_image` pixel by pixel for every mode.

**One start-up check, the same images in both pipelines.** Both pipelines build their samples from one
`OcconPretrainDataset`: the listing (ImageFolder's conventions), the store validation
(`occon.missing`), then the unreadable images are dropped: store entries that failed localization,
and every image the store does not vouch for (no store, or an entry without a fingerprint) is checked
by `inspect_image(decode=True)`. `dataset.startup` holds the counts; one log line summarizes them.
Cost: `bench/robustness.py checks` (see docs/benchmarks.md); images with a fingerprint-verified store
entry only cost two small reads and a header parse.

**Runs.** `occon_plugin/train/runs.py` decides the run folder before anything is written and makes every
checkpoint atomic (a Lightning `CheckpointIO`). What a resumed run would otherwise get wrong, found by
comparing a killed-and-resumed run with an uninterrupted one tensor by tensor: Lightning (1.9 and 2.x)
steps epoch-interval LR schedulers a second time when restarting from an epoch-end checkpoint (the
resumed run trained on with a later epoch's learning rate: 208 of 252 tensors differed); solo-learn
recomputes the momentum encoder's tau only after the next update; the global RNGs are not saved; the
DALI source replayed epoch 0's sample order and DALI's random stream restarted. `ResumeState` (a
callback) restores the first three, the DALI loader builds each epoch's pipeline from `(seed, epoch)`
and starts its source at the resumed epoch. Measured: a `mocov2_occon` run killed with SIGKILL after
epoch 0 and resumed ends bit-identical to an uninterrupted one (0 of 252 tensors differ) with the
torchvision pipeline (asserted in the battery) and with the DALI CPU pipeline (measured once; the
battery asserts the DALI epoch after a resume equals the uninterrupted epoch pixel for pixel).

## Exit codes and stops

Every command ends a stop with one line on stderr and one of these statuses: 2 bad input or a
resource that ran out (`[occon] error: ...`, naming the key or file and what to do; out of memory
names the batch-size key); 3 a training run that diverged (`TrainingDivergedError`: the first step
whose loss and gradients are not finite, stopped before the optimizer step; `occon_plugin/finite.py`
is the one finiteness check, also used before any checkpoint is written and when any checkpoint is
loaded); 130 Ctrl-C;
143 SIGTERM (pretraining first saves a resumable `last.ckpt` at the next step boundary, for Ctrl-C too:
`occon_plugin.train.runs.stop_on_signal_callback`; a second signal stops at once).
A pretraining run holds `fcntl.flock` on `<run folder>/.occon-run.lock` while it runs. Relative
paths on the command line are made absolute at the start (`occon_plugin.cli._hydra.resolve_paths`:
inputs against the launch folder, outputs against the job's folder); W&B's mode follows
`occon_plugin.tracking.wandb_mode` (the user's `WANDB_MODE` / `WANDB_DISABLED` first).

## Known limits

- The start-up decode check costs about half a full decode per image the store does not vouch for;
  a run without a store pays it at every start.
- An image whose content breaks *after* the start-up check (still readable, no longer decodable):
  the torchvision path replaces it (counted); the DALI decoder cannot skip a sample, so the run stops
  with one line naming the files of the last batches; the same holds for a photo used only as a
  BG-Mixup background donor (torchvision leaves that view unmixed, counted). A file that disappears is
  replaced in both (a vanished donor: the view stays unmixed in both).
- The fingerprint reads the first and last 64 KiB and the size: an edit confined to the middle of a
  large file that keeps its size is not seen.
- A resumed localization refuses any *localized* image whose file changed (`resume=false` rebuilds the
  store); only images that were unreadable and have been fixed since are localized again. A file that
  changes *during* a run is redone within the run; pretraining checks fingerprints at its start only (a
  photo replaced during training is not seen: each step reads the file again without a fingerprint).
- Ground-truth masks: a lossless file holding a decoded JPEG (ringing) with at most 32 distinct values is
  read as a label map (its ringing counted as object); the printed line says "label map" for it. A WebP
  mask is taken as lossless.
- The store lock is an `flock` (POSIX): on NFS it is what the client's lock emulation gives; on a platform
  without `fcntl` there is none.
- Unreadable images inside the host's own linear evaluation (`main_linear.py`, torchvision
  `ImageFolder`) stop that run naming the file; they are not skipped.
- The DALI loader builds one pipeline per epoch (with `dali.py_workers > 0`, worker processes start
  each epoch).
- A run resumed mid-epoch after SIGTERM is bit-identical to an uninterrupted one on the torchvision
  path (asserted); on the DALI path the samples and object-aware decisions are the same, but DALI's
  own random stream (standard augmentations) restarts for the rest of that epoch. The mid-epoch
  resume is measured with Lightning 1.9 (solo-learn 1.0.2); Lightning 2.x, whose own SIGTERM
  handler runs beside the plugin's, is not exercised here.
- The DDP runs are tested on CPU with gloo and Lightning's own launcher; under `torchrun` with
  `auto_resume=false` the ranks decide the run folder independently (a race when the name is taken).
- Pixel agreement is measured for DALI's CPU decoder (libjpeg-turbo, as PIL). With `dali.device=gpu`
  JPEGs are decoded by nvJPEG, whose IDCT may differ by a grey level here and there; not measured (no
  GPU in the sessions that built this): `test_decode.py::test_dali_decodes_every_file_to_the_same_pixels[gpu]`
  compares it on a GPU machine and skips elsewhere.
"""


if __name__ == "__main__":
    text = render()
    if "--write" in sys.argv:
        DOC.write_text(text)
        print(f"wrote {DOC}")
    else:
        sys.stdout.write(text)
