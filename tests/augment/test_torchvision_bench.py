"""bench/augment.py runs (a tiny run: this checks the script, not the numbers)."""
from __future__ import annotations

import importlib.util

import pytest


def _bench(repo_root):
    spec = importlib.util.spec_from_file_location("bench_augment", repo_root / "bench" / "augment.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bench_help(repo_root, capsys):
    with pytest.raises(SystemExit) as done:
        _bench(repo_root).main(["--help"])
    assert done.value.code == 0 and "--p-mix" in capsys.readouterr().out


def test_bench_tiny_run_prints_both_ratios(repo_root, capsys):
    pytest.importorskip("skimage.data")
    import cv2
    import torch

    threads = torch.get_num_threads(), cv2.getNumThreads()
    try:
        assert _bench(repo_root).main(["--blocks", "1", "--per-block", "2", "--crop-size", "64"]) == 0
    finally:  # the bench pins one thread; give the rest of the session its threads back
        torch.set_num_threads(threads[0])
        cv2.setNumThreads(threads[1])
    out = capsys.readouterr().out
    assert out.count("ratio object-aware / baseline") == 2 and "views mixed:" in out
