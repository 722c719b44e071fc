"""``bench/gpu_check.sh --cpu-dry-run``: the GPU check's code paths run on the CPU at toy sizes, so a
syntax, import or API error in the script, its benchmarks or its GPU tests fails CI (issue: GPU truth)."""
import json
import re
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def test_the_gpu_check_dry_run_passes_on_the_cpu(tmp_path):
    out = tmp_path / "gpu-check"
    env = dict(os.environ, OCCON_PYTHON=sys.executable)  # the interpreter running the tests: no setup step
    proc = subprocess.run(["bash", str(REPO / "bench" / "gpu_check.sh"), str(out), "--cpu-dry-run"], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["mode"] == "cpu-dry-run"
    statuses = {name: step["status"] for name, step in summary["steps"].items()}
    assert statuses == {"tests": "ok", "contracam": "ok", "localize": "ok", "refine": "ok", "dali": "ok",
                        "train_step": "ok"}
    refine = summary["steps"]["refine"]
    assert refine["arms"]["default preset"]["refine_method"] == "crf+fgs"
    assert refine["arms"]["refine.method=none"]["refine_method"] == "none"
    assert refine["arms"]["default preset"]["cpu_ms_per_image"]["refine"] > 0
    arm = refine["arms"]["default preset"]
    assert arm["gpu_cam_ms_per_image"] > 0 and arm["cpu_ms_per_image_total"] > arm["cpu_ms_per_image"]["refine"]
    assert arm["model_images_per_second"]["8_cores"] <= arm["model_images_per_second"]["32_cores"]
    tests = summary["steps"]["tests"]
    assert tests["tests"] - tests["skipped"] >= 7 and tests["failures"] == 0  # the GPU tests ran, on the CPU
    assert "GPU check (cpu-dry-run" in proc.stdout and "step" in proc.stdout  # the summary table


def test_the_gpu_check_refuses_without_a_gpu_unless_dry(tmp_path):
    pytest.importorskip("torch")
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "gpu_check.py"), "--out", str(tmp_path)],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and proc.stderr.strip().startswith("[occon] error: no CUDA device")
    bad = subprocess.run([sys.executable, str(REPO / "bench" / "gpu_check.py"), "--out", str(tmp_path),
                          "--cpu-dry-run", "--steps", "tests,nope"], cwd=REPO, capture_output=True, text=True)
    assert bad.returncode == 2 and "unknown step(s) ['nope']" in bad.stderr


def test_every_gpu_marked_test_file_is_collected_by_the_gpu_check():
    """The GPU run collects only ``GPU_TEST_PATHS``: a ``gpu``-marked test elsewhere would never run there."""
    sys.path.insert(0, str(REPO / "bench"))
    try:
        import gpu_check
    finally:
        sys.path.remove(str(REPO / "bench"))
    marked = {p.relative_to(REPO).as_posix() for p in (REPO / "tests").rglob("test_*.py")
              if re.search(r"(?<![\"'])\bpytest\.mark\.gpu\b", p.read_text())}
    assert marked, "no gpu-marked test file found"
    covered = {m for m in marked for path in gpu_check.GPU_TEST_PATHS if m == path or m.startswith(path + "/")}
    assert covered == marked, f"gpu-marked files outside GPU_TEST_PATHS: {sorted(marked - covered)}"
