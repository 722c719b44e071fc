"""GPU truth in one run: the GPU tests, then the GPU benchmarks, one summary table, JSON files.

    bench/gpu_check.sh OUT_DIR                 # on a machine with a CUDA GPU (< 8 min on one H100/H200)
    bench/gpu_check.sh OUT_DIR --cpu-dry-run   # anywhere: the same code paths on the CPU at toy sizes (CI)

Steps (each one's result lands in ``OUT_DIR/<step>.json``; ``OUT_DIR/summary.json`` has them all):

1. ``tests``: ``pytest -m gpu`` — DALI GPU pipeline semantics identical to the CPU/torchvision ones,
   CUDA ContraCAM equal to CPU within tolerance, a CUDA training step of ``mocov2_occon``/``byol_occon``.
   In the dry run they run on the CPU (``OCCON_GPU_DRY_RUN=1``); the DALI GPU cases skip there.
2. ``contracam``: ContraCAM T=1 / T=10 / early exit, each as a ratio to a plain forward of the same
   batch, in fp32 and bf16 (the embedded EfficientNet-Lite0, 224 px, batch 64).
3. ``localize``: ``occon-localize`` images/s on COCO128 (``../shared/data/coco128/images``; the
   bundled photos where that folder is absent) repeated to >= 2,000 images, ResNet-50 + expansion,
   T=10, no CRF; extrapolated to COCO train2017 (118,287 images) on 1 and 8 GPUs.
4. ``refine``: the default preset end to end (the embedded EfficientNet-Lite0, T=2 with expansion on the GPU,
   the refinement ``crf+fgs`` and the rest of the post-processing in the ``post_workers`` CPU processes) vs the
   same run with ``refine.method=none``, on COCO128 repeated to >= 2,000 images: images/s, how long the main
   process waited for the workers, the CPU ms per image of each post-processing stage; extrapolated to
   COCO train2017 (whether the GPU waits for the CPU's refinement, and by how much).
5. ``dali``: the object-aware DALI pipeline per sample vs a host-style DALI pipeline
   (``bench/augment_dali.py --device gpu``), target <= 1.05x.
6. ``train_step``: a training step with vs without object-aware data (``bench/train_step.py
   --device cuda``), target <= 1.03x.

A step that cannot run here (no DALI, no solo-learn) is reported as ``skipped`` with the reason; the
exit status is 1 when a step failed, else 0.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Dict

REPO = Path(__file__).resolve().parents[1]
COCO128_IMAGES = REPO.parent / "shared" / "data" / "coco128" / "images"
COCO_TRAIN2017 = 118_287
# The test files holding ``gpu``-marked tests (tests/bench/test_gpu_check.py checks this list is complete).
# Collecting only these keeps the GPU run independent of the optional parts the other tests import
# (wandb, pydensecrf) on a GPU image that lacks them.
GPU_TEST_PATHS = ("tests/gpu", "tests/augment/test_dali_pipeline.py")

# Sizes of the real run and of the CPU dry run (same code, toy sizes).
FULL = {"batch": 64, "size": 224, "reps": 5, "localize_images": 2048, "localize_batch": 64,
        "dali": ["--device", "gpu", "--threads", "4", "--batch-size", "128"],
        "train": ["--device", "cuda", "--batch-size", "256", "--size", "224", "--steps", "12"]}
DRY = {"batch": 4, "size": 64, "reps": 1, "localize_images": 8, "localize_batch": 4,
       "dali": ["--device", "cpu", "--threads", "1", "--batch-size", "4", "--copies", "1", "--blocks", "1",
                "--per-block", "1", "--crop-size", "64"],
       "train": ["--device", "cpu", "--batch-size", "4", "--size", "32", "--steps", "4", "--repeats", "1"]}


class Skip(Exception):
    """A step that cannot run on this machine; the message says why."""


def environment() -> Dict[str, Any]:
    import torch

    info = {"python": platform.python_version(), "machine": platform.machine(), "torch": torch.__version__,
            "cuda": torch.cuda.is_available(), "cpu_count": os.cpu_count()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
        info["gpu_memory_gib"] = round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1)
    try:
        import nvidia.dali

        info["dali"] = nvidia.dali.__version__
    except ImportError:
        info["dali"] = None
    try:
        from occon_plugin import host

        info["host"] = host.describe()
    except ImportError as err:
        info["host"] = f"not installed ({err})"
    return info


def photo_batch(batch: int, size: int):
    """(batch, 3, size, size) float in [0,1]: the bundled real photos, resized, repeated to fill the batch."""
    import numpy as np
    import torch
    import torch.nn.functional as F

    from occon_plugin.images.bundled import SKIMAGE_PHOTOS, _skimage_photo

    photos = []
    for name in SKIMAGE_PHOTOS:
        image = np.asarray(_skimage_photo(name))
        image = np.stack([image] * 3, -1) if image.ndim == 2 else image[..., :3]
        tensor = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float() / 255
        photos.append(F.interpolate(tensor, size=(size, size), mode="bilinear", antialias=True).clamp(0, 1))
    return torch.cat([photos[i % len(photos)] for i in range(batch)])


# ------------------------------------------------------------------------------------------------ steps
def step_tests(out: Path, dry: bool, sizes: dict) -> Dict[str, Any]:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    if dry:
        env["OCCON_GPU_DRY_RUN"] = "1"
    junit = out / "gpu-tests.xml"
    cmd = [sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider", "-rs",
           f"--junitxml={junit}", *GPU_TEST_PATHS]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    (out / "gpu-tests.log").write_text(proc.stdout + proc.stderr)
    counts = _junit_counts(junit)
    result = {"command": " ".join(cmd[1:]), "returncode": proc.returncode, **counts}
    if proc.returncode not in (0, 5) or counts.get("failures", 0) or counts.get("errors", 0):
        raise RuntimeError(f"pytest -m gpu failed ({counts}); see {out / 'gpu-tests.log'}")
    if counts.get("tests", 0) == 0:
        raise RuntimeError("pytest -m gpu collected no test")
    return result


def _junit_counts(path: Path) -> Dict[str, int]:
    import xml.etree.ElementTree as ET

    if not path.is_file():
        return {}
    root = ET.parse(path).getroot()
    suite = root if root.tag == "testsuite" else root.find("testsuite")
    return {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}


def _timed(fn: Callable[[], Any], reps: int, sync: Callable[[], None]) -> float:
    fn()  # warm-up (allocations, cuDNN algorithm search)
    sync()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def step_contracam(out: Path, dry: bool, sizes: dict) -> Dict[str, Any]:
    import torch

    from occon_plugin.localize import contracam, load_cam_model
    device = "cpu" if dry else "cuda"
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    images = photo_batch(sizes["batch"], sizes["size"]).to(device)
    rows = []
    for dtype_name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        model = load_cam_model("efficientnet-lite0").to(device=device, dtype=dtype)
        x = images.to(dtype)

        def forward():
            with torch.no_grad():
                return model.head(model.pooled(model.activations(x)))

        t_forward = _timed(forward, sizes["reps"], sync)
        arms = {"T=1": dict(iters=1), "T=10": dict(iters=10),
                "T=10 early exit 0.05": dict(iters=10, early_exit_tol=0.05),
                "T=10 + expansion": dict(iters=10, expand=True)}
        for name, kwargs in arms.items():
            t = _timed(lambda: contracam(model, x, **kwargs), sizes["reps"], sync)
            rows.append({"dtype": dtype_name, "arm": name, "seconds": t, "forward_seconds": t_forward,
                         "ratio_to_forward": t / t_forward})
    return {"model": "efficientnet-lite0", "batch": sizes["batch"], "size": sizes["size"], "device": device,
            "rows": rows}


def _image_folder(tmp: Path, n: int) -> tuple[Path, str]:
    """A folder of ``n`` links to the COCO128 images (the bundled photos where that folder is absent), repeated."""
    sources = sorted(p for p in COCO128_IMAGES.glob("*.jpg")) if COCO128_IMAGES.is_dir() else []
    source_name = "coco128"
    if not sources:
        from occon_plugin.images.bundled import export_skimage_photos

        sources = export_skimage_photos(tmp / "bundled")
        source_name = "bundled photos (../shared/data/coco128 absent)"
    folder = tmp / "images"
    folder.mkdir()
    for i in range(n):  # links, not copies: the decode cost stays real, the disk use does not grow
        src = sources[i % len(sources)]
        (folder / f"{i:05d}_{src.name}").symlink_to(src.resolve())
    return folder, source_name


def step_localize(out: Path, dry: bool, sizes: dict) -> Dict[str, Any]:
    from occon_plugin.localize.refiners import RefineSettings
    from occon_plugin.localize.runner import CamSettings, DataSettings, LocalizeSettings, run_localize

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        n = sizes["localize_images"]
        folder, source_name = _image_folder(tmp, n)
        settings = LocalizeSettings(
            data=DataSettings(path=str(folder), workers=min(16, os.cpu_count() or 1)),
            output_dir=str(tmp / "store"), model="torchvision:resnet50", preset="paper",
            cam=CamSettings(iters=10 if not dry else 2, expand=True), refine=RefineSettings(method="none"),
            batch_size=sizes["localize_batch"], image_size=224 if not dry else 64,
            device="cpu" if dry else "cuda", progress=False)
        start = time.perf_counter()
        summary = run_localize(settings)
        seconds = time.perf_counter() - start
    per_second = n / seconds
    return {"images": n, "source": source_name, "model": "torchvision:resnet50 (random init: timing only)",
            "settings": "T=10, expansion, no CRF, batch 64, 224 px" if not dry else "dry run: T=2, 64 px",
            "seconds": seconds, "images_per_second": per_second,
            "written_ok": summary.get("written_ok"),
            "coco_train2017_minutes_1_gpu": COCO_TRAIN2017 / per_second / 60,
            "coco_train2017_minutes_8_gpus_linear": COCO_TRAIN2017 / per_second / 60 / 8}


def step_refine(out: Path, dry: bool, sizes: dict) -> Dict[str, Any]:
    from occon_plugin.localize.refiners import RefineSettings
    from occon_plugin.localize.runner import DataSettings, LocalizeSettings, run_localize

    n = sizes["localize_images"]
    arms = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        folder, source_name = _image_folder(tmp, n)
        for arm, method in (("default preset", None), ("refine.method=none", "none")):
            settings = LocalizeSettings(
                data=DataSettings(path=str(folder), workers=min(16, os.cpu_count() or 1)),
                output_dir=str(tmp / f"store-{len(arms)}"), refine=RefineSettings(method=method),
                batch_size=sizes["localize_batch"], image_size=224 if not dry else 64,
                device="cpu" if dry else "cuda", post_workers=1 if dry else None, progress=False)
            start = time.perf_counter()
            summary = run_localize(settings)
            seconds = time.perf_counter() - start
            done = max(1, summary["written_ok"])
            cpu_ms = {k: 1000 * v / done for k, v in summary["cpu_seconds"].items()}
            # the GPU part: the CAM stage's wall time per image (forwards, backwards, the masks' copy to the host)
            gpu_ms = 1000 * summary["stage_seconds"].get("cam", 0.0) / done
            # throughput model (docs/benchmarks.md): C cores do decode + model input + post-processing at
            # sum(cpu_ms) per image per core, the GPU its CAMs; the slower of the two sets the pace
            model = {f"{c}_cores": min(1000 / max(gpu_ms, 1e-9), c * 1000 / max(sum(cpu_ms.values()), 1e-9))
                     for c in (8, 16, 32)}
            arms[arm] = {"seconds": seconds, "images_per_second": n / seconds, "post_workers": summary["post_workers"],
                         "refine_method": summary["settings"]["refine"]["method"],
                         "main_waited_for_workers_s": summary["stage_seconds"].get("wait", 0.0),
                         "cam_s": summary["stage_seconds"].get("cam", 0.0), "gpu_cam_ms_per_image": gpu_ms,
                         "cpu_ms_per_image": cpu_ms, "cpu_ms_per_image_total": sum(cpu_ms.values()),
                         "model_images_per_second": model,
                         "coco_train2017_minutes": COCO_TRAIN2017 / (n / seconds) / 60}
    base, plain = arms["default preset"], arms["refine.method=none"]
    return {"images": n, "source": source_name, "model": "efficientnet-lite0 (the default preset)", "arms": arms,
            "default_over_none_wall": base["seconds"] / plain["seconds"]}


def _bench_script(script: str, args: list, out: Path, name: str) -> Dict[str, Any]:
    target = out / f"{name}-raw.json"
    cmd = [sys.executable, str(REPO / "bench" / script), *args, "--json", str(target)]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    (out / f"{name}.log").write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        raise RuntimeError(f"{script} exited {proc.returncode}; see {out / (name + '.log')}: "
                           f"{(proc.stderr.strip().splitlines() or [''])[-1]}")
    return {"command": "python bench/" + script + " " + " ".join(args), **json.loads(target.read_text())}


def step_dali(out: Path, dry: bool, sizes: dict) -> Dict[str, Any]:
    try:
        import nvidia.dali  # noqa: F401
    except ImportError:
        raise Skip("nvidia-dali is not installed (pip install 'occon-plugin[dali]')") from None
    return _bench_script("augment_dali.py", sizes["dali"], out, "dali")


def step_train_step(out: Path, dry: bool, sizes: dict) -> Dict[str, Any]:
    try:
        from occon_plugin import host  # noqa: F401
    except ImportError as err:
        raise Skip(f"solo-learn is not installed ({err})") from None
    return _bench_script("train_step.py", sizes["train"], out, "train_step")


STEPS = {"tests": step_tests, "contracam": step_contracam, "localize": step_localize, "refine": step_refine,
         "dali": step_dali, "train_step": step_train_step}


# ------------------------------------------------------------------------------------------------ report
def headline(name: str, result: Dict[str, Any]) -> str:
    """One line per step for the summary table."""
    if name == "tests":
        return f"{result['tests']} tests: {result['tests'] - result['skipped']} ran, {result['skipped']} skipped"
    if name == "contracam":
        return "; ".join(f"{r['dtype']} {r['arm']} {r['ratio_to_forward']:.2f}x" for r in result["rows"])
    if name == "localize":
        return (f"{result['images_per_second']:.1f} images/s on {result['images']} images -> train2017 "
                f"{result['coco_train2017_minutes_1_gpu']:.1f} min on 1 GPU, "
                f"{result['coco_train2017_minutes_8_gpus_linear']:.1f} min on 8 (linear scaling)")
    if name == "refine":
        a, b = result["arms"]["default preset"], result["arms"]["refine.method=none"]
        return (f"default {a['images_per_second']:.1f} images/s ({a['post_workers']} post_workers, main waited "
                f"{a['main_waited_for_workers_s']:.1f} s, refine {a['cpu_ms_per_image'].get('refine', 0):.1f} CPU "
                f"ms/image) vs refine none {b['images_per_second']:.1f}: {result['default_over_none_wall']:.2f}x wall; "
                f"train2017 {a['coco_train2017_minutes']:.1f} min on 1 GPU; model: CAM {a['gpu_cam_ms_per_image']:.2f} "
                f"GPU ms/image, CPU {a['cpu_ms_per_image_total']:.1f} ms/image/core -> "
                f"{a['model_images_per_second']['16_cores']:.0f} images/s with 16 cores")
    if name == "dali":
        return "; ".join(f"{r['arm']} {r['wall_ratio']:.3f}x" for r in result["rows"][1:]) + " (target <= 1.05x)"
    if name == "train_step":
        return "; ".join(f"{r['method']} {r['ratio']:.3f}x" for r in result["rows"]) + " (target <= 1.03x)"
    return ""


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="folder for the JSON results and logs")
    parser.add_argument("--cpu-dry-run", action="store_true", help="run the same code paths on the CPU, toy sizes")
    parser.add_argument("--steps", default=",".join(STEPS), help=f"comma-separated subset of {','.join(STEPS)}")
    args = parser.parse_args(argv)
    steps = [s.strip() for s in args.steps.split(",") if s.strip()]
    unknown = [s for s in steps if s not in STEPS]
    if unknown:
        print(f"[occon] error: --steps: unknown step(s) {unknown}; choose from {list(STEPS)}", file=sys.stderr)
        return 2
    import torch

    if not args.cpu_dry_run and not torch.cuda.is_available():
        print("[occon] error: no CUDA device: run bench/gpu_check.sh on a GPU machine, or add --cpu-dry-run",
              file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    sizes = DRY if args.cpu_dry_run else FULL
    summary: Dict[str, Any] = {"mode": "cpu-dry-run" if args.cpu_dry_run else "gpu", "environment": environment(),
                               "steps": {}}
    print(f"[gpu_check] {summary['mode']}: {json.dumps(summary['environment'])}", flush=True)
    for name in steps:
        start = time.perf_counter()
        print(f"[gpu_check] {name} ...", flush=True)
        try:
            result = {"status": "ok", **STEPS[name](args.out, args.cpu_dry_run, sizes)}
        except Skip as why:
            result = {"status": "skipped", "reason": str(why)}
        except Exception as err:  # a failed step is reported and the others still run
            result = {"status": "failed", "error": f"{type(err).__name__}: {err}",
                      "traceback": traceback.format_exc()}
            print(result["traceback"], file=sys.stderr, flush=True)
        result["wall_seconds"] = round(time.perf_counter() - start, 2)
        (args.out / f"{name}.json").write_text(json.dumps(result, indent=2, default=str))
        summary["steps"][name] = result
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))

    print(f"\nGPU check ({summary['mode']}; {summary['environment'].get('gpu', 'CPU')}; "
          f"torch {summary['environment']['torch']})")
    print(f"{'step':<11} {'status':<8} {'wall s':>7}  result")
    for name, result in summary["steps"].items():
        detail = headline(name, result) if result["status"] == "ok" else result.get("reason") or result.get("error")
        print(f"{name:<11} {result['status']:<8} {result['wall_seconds']:>7.1f}  {detail}")
    print(f"JSON: {args.out / 'summary.json'}")
    return 1 if any(r["status"] == "failed" for r in summary["steps"].values()) else 0


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))  # run from a checkout without installing
    sys.exit(main())
