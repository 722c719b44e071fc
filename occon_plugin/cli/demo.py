"""The README's main job (``./run demo`` / ``occon-demo``): the whole method on real photos, on CPU.

1. writes scikit-image's bundled real photos (or uses ``--data <folder>``) as a dataset;
2. ``scripts/localize/main_localize.py`` with the embedded EfficientNet-Lite0 model: masks, boxes,
   background rectangles and overlay pictures in a store (the default preset measured best for the
   model, ``preset=auto``; the paper pairs BG-Mixup with T=1 masks on single-object ImageNet-9 —
   ``preset=bg_mixup`` — the demo uses one store for both), and the README picture from four overlays;
3. ``scripts/pretrain/main_pretrain.py``: ``mocov2_occon`` and ``byol_occon`` with OA-Crop + BG-Mixup
   from those stores, a few CPU optimizer steps each, checkpoints written;
4. ``scripts/linear/main_linear.py`` loads the ``mocov2_occon`` checkpoint and trains the host's
   linear classifier; ``scripts/eval/main_linear.py`` runs the paper's L-BFGS linear evaluation on
   its frozen features;
5. prints where every output went.

Each stage is the real command a user would type (printed before it runs).
"""
from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from occon_plugin.atomic import atomic_path, make_output_dir
from occon_plugin.images.bundled import export_skimage_photos

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = REPO / "scripts"

def make_probe_dataset(images: list[Path], dst: Path, crops_per_split=(6, 3), seed: int = 0) -> Path:
    """Photo-identity probe: each photo is a class, its random crops are the samples.

    The photos carry no labels; this small labelled set only lets the linear evaluations run on
    real pixels end to end (it is a smoke check, not a benchmark).
    """
    from PIL import Image

    rng = np.random.default_rng(seed)
    for split, n in zip(("train", "val"), crops_per_split):
        for path in images:
            out = dst / split / path.stem
            out.mkdir(parents=True, exist_ok=True)
            image = Image.open(path).convert("RGB")
            w, h = image.size
            for i in range(n):
                target = out / f"{i}.jpg"
                if target.is_file():
                    continue
                side = int(min(w, h) * rng.uniform(0.4, 0.9))
                x, y = int(rng.integers(0, w - side + 1)), int(rng.integers(0, h - side + 1))
                with atomic_path(target) as tmp:
                    image.crop((x, y, x + side, y + side)).resize((160, 160)).save(tmp, quality=90)
    return dst


def run(cmd: list[str], log: Path) -> None:
    """Run one stage, echoing its command; its output goes to ``log`` (tail shown on failure).

    Raises:
        SystemExit: a stage failed (names its log).
    """
    shown = " ".join(shlex.quote(str(c)) for c in cmd)
    print(f"\n$ {shown}", flush=True)
    start = time.time()
    with open(log, "w") as fh:
        proc = subprocess.run([str(c) for c in cmd], stdout=fh, stderr=subprocess.STDOUT, cwd=REPO)
    if proc.returncode != 0:
        tail = log.read_text()[-4000:]
        raise SystemExit(f"[occon demo] stage failed (exit {proc.returncode}); log {log}:\n{tail}")
    print(f"  done in {time.time() - start:.0f} s (log: {log})", flush=True)


README_PHOTOS = ("astronaut", "coffee", "chelsea", "rocket")


def readme_picture(overlays: Path, target: Path, names=README_PHOTOS, height: int = 200) -> Path | None:
    """The README picture (``docs/img/demo-overlay.jpg``): the store overlays of ``names`` side by side,
    ``height`` px high, 4 px white gaps, JPEG; None when an overlay is missing (``--data`` photos)."""
    from PIL import Image

    tiles = []
    for name in names:
        found = sorted(overlays.rglob(f"{name}.png"))
        if not found:
            return None
        tile = Image.open(found[0]).convert("RGB")
        tiles.append(tile.resize((round(tile.width * height / tile.height), height), Image.BICUBIC))
    canvas = Image.new("RGB", (sum(t.width for t in tiles) + 4 * (len(tiles) - 1), height), "white")
    x = 0
    for tile in tiles:
        canvas.paste(tile, (x, 0))
        x += tile.width + 4
    with atomic_path(target) as tmp:
        canvas.save(tmp, format="JPEG", quality=85)
    return target


def last_json_line(log: Path, marker: str) -> dict:
    """The JSON after ``marker`` on the last line of ``log`` that has it (a stage's one-line result).

    Raises:
        SystemExit: the stage's log has no result line.
    """
    for line in reversed(log.read_text().splitlines()):
        if marker in line:
            return json.loads(line.split(marker, 1)[1])
    raise SystemExit(f"[occon demo] no '{marker}' line in {log}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="outputs/demo", help="output folder (default: outputs/demo)")
    parser.add_argument("--data", default=None,
                        help="image folder to use instead of scikit-image's bundled photos")
    parser.add_argument("--steps", type=int, default=6, help="optimizer steps per pretraining (default 6)")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--crop-size", type=int, default=128)
    args = parser.parse_args(argv)

    start = time.time()
    out = Path(args.out).resolve()
    logs = out / "logs"
    make_output_dir(logs)
    py = sys.executable

    if args.data:
        images_dir = Path(args.data).resolve()
        photos = sorted(p for p in images_dir.rglob("*") if p.suffix.lower() in {".jpg", ".jpeg", ".png"})
    else:
        images_dir = out / "photos"
        photos = export_skimage_photos(images_dir)
    print(f"[occon demo] {len(photos)} real photos in {images_dir}")

    # 1. ContraCAM store: masks, boxes, background rectangles, overlays (the default preset). The demo
    # rebuilds its own store on every run (resume=false): a store left by an older version or other
    # settings would otherwise be refused for resuming.
    store = out / "store"
    run([py, SCRIPTS / "localize" / "main_localize.py", f"data.path={images_dir}", f"output_dir={store}",
         "overlays=true", f"batch_size={min(len(photos), 64)}", "resume=false"], logs / "localize.log")
    picture = readme_picture(store / "overlays", out / "demo-overlay.jpg")  # the README's picture

    # 2. Pretraining through the solo-learn-style script, both methods, OA-Crop + BG-Mixup.
    checkpoints = {}
    for method in ("mocov2_occon", "byol_occon"):
        small = (["++method_kwargs.queue_size=" + str(16 * args.batch_size), "++method_kwargs.proj_hidden_dim=512"]
                 if method == "mocov2_occon" else
                 ["++method_kwargs.proj_hidden_dim=512", "++method_kwargs.pred_hidden_dim=512"])
        cmd = [py, SCRIPTS / "pretrain" / "main_pretrain.py",
               "--config-path", SCRIPTS / "pretrain" / "custom", "--config-name", f"{method}.yaml",
               "++name=demo", f"++data.train_path={images_dir}", "++data.num_workers=0",
               f"++occon.store={store}",
               "++occon.oa_crop.enabled=true", "++occon.bg_mixup.enabled=true",
               f"++optimizer.batch_size={args.batch_size}", f"++max_steps={args.steps}", "++max_epochs=100",
               f"++augmentations.0.crop_size={args.crop_size}", "++accelerator=cpu",
               f"++checkpoint.dir={out / 'trained_models'}", "++auto_resume.enabled=false",
               "++wandb.enabled=true", "++wandb.offline=true", "++log_every_n_steps=1", *small]
        log = logs / f"pretrain-{method}.log"
        run(cmd, log)
        checkpoints[method] = last_json_line(log, "[occon] pretraining done: ")

    # 3. Linear evaluation: the host's LinearModel (SGD) and the paper's L-BFGS protocol.
    probe = make_probe_dataset(photos, out / "probe")
    log = logs / "linear.log"
    run([py, SCRIPTS / "linear" / "main_linear.py", "--config-path", SCRIPTS / "linear" / "custom",
         "--config-name", "linear.yaml", f"++pretrained_feature_extractor={checkpoints['mocov2_occon']['checkpoint']}",
         f"++data.train_path={probe / 'train'}", f"++data.val_path={probe / 'val'}", "++data.num_workers=0",
         "++optimizer.batch_size=16", "++max_steps=5", "++max_epochs=3",
         f"++data.augmentations.crop_size={args.crop_size}", "++accelerator=cpu",
         f"++checkpoint.dir={out / 'trained_models'}", "++wandb.enabled=true", "++wandb.offline=true",
         "++log_every_n_steps=1"], log)
    linear = last_json_line(log, "[occon] linear evaluation done: ")
    log = logs / "eval-linear-lbfgs.log"
    run([py, SCRIPTS / "eval" / "main_linear.py", f"model={checkpoints['mocov2_occon']['checkpoint']}",
         f"train_dir={probe / 'train'}", f"test_dir={probe / 'val'}", "fast=true", "num_workers=0",
         f"crop={args.crop_size}", f"resize={args.crop_size}", f"output_dir={out / 'eval_linear'}",
         "progress=false"], log)
    lbfgs = last_json_line(log, "[occon] eval_linear done: ")

    overlays = sorted((store / "overlays").rglob("*.png"))
    summary = {
        "photos": str(images_dir),
        "ContraCAM store (masks, boxes, bg rects)": str(store),
        "overlay pictures": f"{len(overlays)} in {store / 'overlays'}",
        "README picture (docs/img/demo-overlay.jpg)": str(picture) if picture else None,
        "checkpoints": {m: c["checkpoint"] for m, c in checkpoints.items()},
        "optimizer steps": {m: c["global_step"] for m, c in checkpoints.items()},
        "linear (host LinearModel, photo-identity probe)": {"steps": linear["global_step"],
                                                            "metrics": linear["metrics"]},
        "linear (paper protocol: L-BFGS on frozen features, photo-identity probe)": {
            "test_acc": lbfgs["test_acc"], "best_l2": lbfgs["best_l2"], "results": str(out / "eval_linear")},
        "W&B offline runs": [str(out / "trained_models"), str(out / "eval_linear")],
        "logs": str(logs),
        "wall time (s)": round(time.time() - start),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print("\n[occon demo] outputs:\n" + json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
