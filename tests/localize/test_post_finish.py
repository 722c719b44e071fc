"""FinishPool: the post-processing worker processes of occon-localize (occon_plugin.localize.finish).

The store written through workers equals the in-process one (tests/localize/test_cli_localize.py); here:
what a worker returns equals the in-process computation, errors reach the caller, a dead worker and an
unguarded script gives one actionable error (a dead worker and a killed main process: tests/robustness/test_workers.py).
"""
from __future__ import annotations

import os
import subprocess
import sys

import cv2
import numpy as np
import pytest

from occon_plugin.localize.background import largest_empty_rectangle
from occon_plugin.localize.boxes import mask_to_boxes
from occon_plugin.localize.crf import CrfParams
from occon_plugin.localize.finish import STAGES, FinishPool, FinishRules, default_post_workers, finish_mask
from occon_plugin.localize.refine import final_mask
from occon_plugin.localize.refiners import REFINERS, RefineRun, parse_method


def _rules(method: str = "crf", resolution: str = "input", **kw) -> FinishRules:
    params = {"crf": CrfParams(bilateral_srgb=8.0, bilateral_compat=7.0)}
    steps = tuple((n, params.get(n) or REFINERS[n].params()) for n in parse_method(method))
    return FinishRules(RefineRun(method, resolution, steps), threshold=0.5, bg_threshold=0.2, box_margin=0.2,
                       min_box_area=0.01, min_box_area_before_margin=True, **kw)


@pytest.fixture(scope="module")
def job():
    """A smooth off-centre blob on a 64x64 input of a real photo, for a 90 x 120 image."""
    import skimage.data

    photo = skimage.data.chelsea()
    rgb = np.ascontiguousarray(cv2.resize(photo, (64, 64), interpolation=cv2.INTER_AREA))
    yy, xx = np.mgrid[0:64, 0:64]
    cam = np.exp(-((xx - 36.0) ** 2 + (yy - 30.0) ** 2) / 600.0).astype(np.float32)
    image = np.ascontiguousarray(cv2.resize(photo, (120, 90), interpolation=cv2.INTER_AREA))
    return cam, image, rgb


def test_finish_mask_is_final_mask_plus_boxes_rectangle_and_png(job):
    cam, image, rgb = job
    rules = _rules(soft_masks=True, overlays=True)
    done = finish_mask(cam, 90, 120, rgb, image, rules)
    soft, final = final_mask(cam, 90, 120, rgb, rules.refine)
    stored = cv2.imdecode(np.frombuffer(done.mask_png, np.uint8), cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(stored, final)
    np.testing.assert_array_equal(cv2.imdecode(np.frombuffer(done.soft_png, np.uint8), cv2.IMREAD_UNCHANGED), soft)
    assert (done.width, done.height) == (120, 90)
    assert done.boxes == mask_to_boxes(final / np.float32(255), 0.5, 0.2, 0.01, True) and done.boxes
    assert done.bg_rect == list(largest_empty_rectangle(final / np.float32(255) >= 0.2))
    assert cv2.imdecode(np.frombuffer(done.overlay_png, np.uint8), cv2.IMREAD_COLOR).shape == (90, 120, 3)
    assert set(done.seconds) == set(STAGES) and all(v >= 0 for v in done.seconds.values())
    plain = finish_mask(cam, 90, 120, None, None, _rules("none"))
    assert plain.soft_png is None and plain.overlay_png is None


def test_workers_return_what_the_main_process_computes(job):
    cam, image, rgb = job
    rules = [_rules(), _rules("none"), _rules(resolution="image"), _rules("crf+fgs"), _rules("guided", "image")]
    pictures = [rgb, None, image, rgb, image]
    with FinishPool(2) as pool:
        futures = [pool.submit(cam, 90, 120, pic, None, r) for r, pic in zip(rules, pictures)]
        remote = [pool.result(f) for f in futures]
    assert pool.workers == 2
    local = [finish_mask(cam, 90, 120, pic, None, r) for r, pic in zip(rules, pictures)]
    assert [d.mask_png for d in remote] == [d.mask_png for d in local]
    assert [(d.boxes, d.bg_rect) for d in remote] == [(d.boxes, d.bg_rect) for d in local]
    assert len({d.mask_png for d in remote}) == len(remote)  # each refinement changed something


def test_a_worker_error_reaches_the_caller(job):
    cam, _, rgb = job
    for workers in (0, 1):
        with FinishPool(workers) as pool:
            future = pool.submit(cam, 90, 120, rgb, None, _rules(resolution="full"))
            with pytest.raises(ValueError, match="refine.resolution"):
                pool.result(future)


@pytest.mark.parametrize("start", ["FinishPool(1).close()",  # waits for the workers
                                   "p = FinishPool(1, wait=False); p.result(p.submit(None, 1, 1, None, None, None))"])
def test_an_unguarded_script_is_told_about_the_main_guard(tmp_path, start):
    script = tmp_path / "unguarded.py"
    script.write_text(f"from occon_plugin.localize.finish import FinishPool\n{start}\nprint('done')\n")
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert out.returncode != 0 and "done" not in out.stdout
    assert "ResourceError" in out.stderr and "if __name__ == \"__main__\":" in out.stderr
    assert "post_workers=0" in out.stderr


def test_default_workers_are_the_cores_the_backbone_leaves_free(monkeypatch):
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    assert default_post_workers("cuda") == min(8, cores)  # the GPU computes: every core is free
    assert default_post_workers("cpu", torch_threads=cores) == 0  # torch's threads use them all
    assert default_post_workers("cpu", torch_threads=1) == min(8, cores - 1)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", str(cores * 4))
    assert default_post_workers("cuda") == 1 and default_post_workers("cpu", torch_threads=1) == 0
