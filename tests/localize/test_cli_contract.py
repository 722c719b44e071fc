"""The contract of ``occon-localize`` and ``occon-zoo`` on config mistakes: every known bad key or value is one
line ``[occon] error: ...`` naming the key (or file) with exit status 2 — never a ValueError/RuntimeError
traceback — and nothing is written. Run in this process through each command's ``main`` (what the console
script runs); ``tests/robustness/test_config_errors.py`` runs a few of them as real subprocesses."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

LOCALIZE_CASES = {
    "cam.iters=0": "cam.iters=0", "cam.iters=abc": "cam.iters", "cam.temperature=0": "cam.temperature=0",
    "cam.fill=pink": "cam.fill='pink'", "cam.early_exit_tol=-1": "cam.early_exit_tol=-1",
    "cam.weights=nope": "cam.weights='nope'", "cam.score=nope": "cam.score='nope'",
    "cam.iterz=3": "cam.iterz", "preset=nope": "preset='nope'", "preset=": "preset",
    "refine.method=sharpen": "refine.method='sharpen'", "refine.resolution=full": "refine.resolution='full'",
    "refine.crf.bilateral_srgb=0": "refine.crf.bilateral_srgb=0", "refine.fgs.lam=-1": "refine.fgs.lam=-1",
    "refine.guided.radius=0": "refine.guided.radius=0", "refine.crf.max_pixels=-1": "refine.crf.max_pixels=-1",
    "refine.crf.clip=0.7": "refine.crf.clip=0.7", "crf.enabled=false": "refine.method",
    "threshold=2": "threshold=2", "bg_threshold=0": "bg_threshold=0", "box_margin=-1": "box_margin=-1",
    "min_box_area=1": "min_box_area=1", "batch_size=1": "batch_size=1", "image_size=8": "image_size=8",
    "image_size=4097": "image_size=4097", "image_size=1e3": "image_size=1000.0 is not an integer",
    "image_size=null": "image_size=null` is invalid: give a value, or drop the key for its default (224)",
    "image_size='64'": "image_size='64' is not an integer",
    "threads=0": "threads=0", "sub_batch=0": "sub_batch=0", "post_workers=-1": "post_workers=-1",
    "device=tpu": "device='tpu'", "data.workers=0": "data.workers=0", "model=no-such-model": "no-such-model",
    "data.path=": "data.path", "use_momentum=true": "use_momentum=true, but model='efficientnet-lite0' has one encoder",
    "use_momentum=maybe": "use_momentum", "precision=fp64": "precision='fp64'",
}


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("contract") / "images"
    root.mkdir()
    rng = np.random.default_rng(1)
    for k in range(3):
        Image.fromarray(rng.integers(0, 255, size=(40, 48, 3), dtype=np.uint8)).save(root / f"{k}.png")
    return root


def _run(main, argv: list, monkeypatch, capsys, prog: str) -> tuple[int, str]:
    monkeypatch.setattr(sys, "argv", [prog, *argv])
    with pytest.raises(SystemExit) as stop:
        main()
    return stop.value.code, capsys.readouterr().err


def _assert_one_line(code, err: str, needle: str) -> None:
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("[occon] error:"), err[-2000:]
    assert needle in lines[0], (needle, lines[0])


@pytest.mark.parametrize("override", list(LOCALIZE_CASES))
def test_every_localize_config_mistake_is_one_line_and_exit_2(override, folder, tmp_path, monkeypatch, capsys):
    from occon_plugin.cli.localize import main

    args = [f"data.path={folder}", f"output_dir={tmp_path / 'store'}", "image_size=64", "batch_size=3",
            "threads=1", "progress=false", "post_workers=0"]
    key = override.split("=")[0]
    args = [a for a in args if a.split("=")[0] != key] + [override]
    code, err = _run(main, args, monkeypatch, capsys, "occon-localize")
    _assert_one_line(code, err, LOCALIZE_CASES[override])
    assert not (tmp_path / "store" / "index.jsonl").exists()  # nothing localized


def _zoo_cases(tmp: Path) -> dict:
    (tmp / "junk.ckpt").write_text("junk")
    (tmp / "bad.yaml").write_text("entries: [1")
    (tmp / "short.yaml").write_text("entries:\n - {name: a}\n")
    (tmp / "list.yaml").write_text("entries: {}\n")
    (tmp / "folder").mkdir()
    return {
        "unknown name (fetch)": (["fetch", "nope"], "no zoo entry named 'nope'"),
        "unknown name (verify)": (["verify", "nope"], "no zoo entry named 'nope'"),
        "missing checkpoint": (["convert", str(tmp / "missing.ckpt"), str(tmp / "out.pt")], "missing.ckpt"),
        "not a checkpoint": (["convert", str(tmp / "junk.ckpt"), str(tmp / "out.pt")], "junk.ckpt"),
        "a folder as the checkpoint": (["convert", str(tmp / "folder"), str(tmp / "out.pt")], "folder"),
        "manifest not YAML": (["--manifest", str(tmp / "bad.yaml"), "list"], "bad.yaml"),
        "manifest entry short": (["--manifest", str(tmp / "short.yaml"), "list"], "entry #0 lacks"),
        "manifest entries not a list": (["--manifest", str(tmp / "list.yaml"), "list"], "'entries' list"),
        "manifest missing": (["--manifest", str(tmp / "nope.yaml"), "list"], "nope.yaml"),
        "unknown command": (["frob"], "invalid choice: 'frob'"),
        "missing argument": (["fetch"], "the following arguments are required: name"),
    }


def test_every_zoo_mistake_is_one_line_and_exit_2(tmp_path, capsys):
    from occon_plugin.cli.zoo import main

    for case, (argv, needle) in _zoo_cases(tmp_path).items():
        try:
            code = main(argv)
        except SystemExit as stop:
            code = stop.code
        _assert_one_line(code, capsys.readouterr().err, needle)
        assert not (tmp_path / "out.pt").exists(), case
