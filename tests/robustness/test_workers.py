"""Faults of occon-localize's post-processing worker processes (occon_plugin.localize.finish.FinishPool)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from occon_plugin.errors import ResourceError
from occon_plugin.localize.finish import FinishPool, FinishRules
from occon_plugin.localize.refiners import RefineRun


def _rules() -> FinishRules:
    return FinishRules(RefineRun("crf", "input"), threshold=0.5, bg_threshold=0.2, box_margin=0.2,
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


def _localize_script(data, out, extra: str, guard: bool) -> str:
    body = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(Path(__file__).resolve().parent)!r})
        from robustness_helpers import localize_settings
        from occon_plugin.localize.runner import run_localize
    """)
    call = f"summary = run_localize(localize_settings({str(data)!r}, {str(out)!r}, {extra!r}))\n" \
           f"print('written', summary['written_ok'] + summary['written_bad'], 'workers', summary['post_workers'])\n"
    if guard:
        return body + 'if __name__ == "__main__":\n' + textwrap.indent(call, "    ")
    return body + call


@pytest.mark.kind("run.worker-start")
def test_a_guarded_script_fed_on_stdin_runs_in_process_with_one_line(mixed, tmp_path):
    script = _localize_script(mixed.root, tmp_path / "store", "post_workers=1", guard=True)
    proc = subprocess.run([sys.executable, "-"], input=script, capture_output=True, text=True, timeout=300,
                          cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().splitlines()[-1] == "written 22 workers 0"
    notes = [l for l in proc.stderr.splitlines() if l.startswith("[occon]")]
    assert notes == ["[occon] post_workers=1: worker processes cannot start from a main script read from <stdin> "
                     "(they import it again); post-processing runs in this process (post_workers=0)"]
    assert "Traceback" not in proc.stderr


@pytest.mark.kind("run.worker-start")
def test_an_unguarded_script_gets_its_one_useful_line_without_worker_tracebacks(mixed, tmp_path):
    (tmp_path / "unguarded.py").write_text(_localize_script(mixed.root, tmp_path / "store", "post_workers=1",
                                                            guard=False))
    proc = subprocess.run([sys.executable, "unguarded.py"], capture_output=True, text=True, timeout=300,
                          cwd=tmp_path)
    assert proc.returncode != 0 and "written" not in proc.stdout
    lines = proc.stderr.strip().splitlines()
    assert lines[-1].startswith("occon_plugin.errors.ResourceError: the 1 post-processing worker processes did not "
                                "start: a script that calls run_localize needs the 'if __name__ == \"__main__\":' "
                                "guard"), lines[-1]
    assert proc.stderr.count("Traceback") == 1 and "bootstrapping" not in proc.stderr  # was ~130 lines of them
    assert len(proc.stderr[proc.stderr.index("Traceback"):].splitlines()) < 25, proc.stderr  # the script's own


@pytest.mark.kind("run.worker-start")
def test_more_post_workers_than_cores_are_capped_with_one_line(mixed, tmp_path, capsys, monkeypatch):
    from occon_plugin.localize.finish import resolve_post_workers, usable_cores
    from occon_plugin.localize.runner import run_localize

    from robustness_helpers import localize_settings

    cores = usable_cores()
    assert resolve_post_workers(cores, announce=False) == cores and resolve_post_workers(0) == 0
    monkeypatch.setenv("LOCAL_WORLD_SIZE", str(2 * cores))  # torchrun: the ranks share the machine's cores
    assert resolve_post_workers(8, announce=False) == 1
    monkeypatch.delenv("LOCAL_WORLD_SIZE")
    summary = run_localize(localize_settings(mixed.root, tmp_path / "store", "post_workers=64"))
    assert summary["post_workers"] == cores
    err = [l for l in capsys.readouterr().err.splitlines() if l.startswith("[occon]")]
    assert err == [f"[occon] post_workers=64 is more than the {cores} CPU core(s) this process may use: "
                   f"starting {cores}"]
