"""Faults of occon-localize's post-processing worker processes (occon_plugin.localize.finish.FinishPool)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from occon_plugin.errors import ResourceError
from occon_plugin.localize.crf import CrfParams
from occon_plugin.localize.finish import CrfRun, FinishPool, FinishRules


def _rules() -> FinishRules:
    return FinishRules(CrfRun(True, "input"), CrfParams(), threshold=0.5, bg_threshold=0.2, box_margin=0.2,
                       min_box_area=0.01, min_box_area_before_margin=True)


@pytest.fixture
def job():
    yy, xx = np.mgrid[0:32, 0:32]
    cam = np.exp(-((xx - 16.0) ** 2 + (yy - 14.0) ** 2) / 60.0).astype(np.float32)
    rgb = np.dstack([(cam * 255).astype(np.uint8)] * 3)
    return cam, rgb


@pytest.mark.kind("run.dead-worker")
def test_a_dead_worker_is_a_resource_error(job):
    cam, rgb = job
    pool = FinishPool(1)
    try:
        for pid in list(pool._pool._processes):
            os.kill(pid, signal.SIGKILL)
        time.sleep(0.5)
        with pytest.raises(ResourceError, match="post-processing worker process died.*post_workers"):
            pool.result(pool.submit(cam, 90, 120, rgb, None, _rules()))
    finally:
        pool.close(cancel=True)


@pytest.mark.kind("run.dead-worker")
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_main_process_killed_outright_leaves_no_worker(tmp_path):
    script = tmp_path / "main.py"
    script.write_text(textwrap.dedent("""
        import time
        from occon_plugin.localize.finish import FinishPool
        if __name__ == "__main__":
            pool = FinishPool(2)
            print(*pool._pool._processes, flush=True)
            time.sleep(600)
    """))
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True, cwd=tmp_path)
    pids = [int(p) for p in proc.stdout.readline().split()]
    assert len(pids) == 2
    proc.kill()  # SIGKILL to the main process only, as the OOM killer would
    proc.wait()

    def alive(pid: int) -> bool:
        try:
            with open(f"/proc/{pid}/stat") as fh:
                return fh.read().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has exited
        except FileNotFoundError:
            return False

    deadline = time.time() + 30
    while time.time() < deadline and any(alive(p) for p in pids):
        time.sleep(0.1)
    assert not any(alive(p) for p in pids), "orphaned post-processing workers"
