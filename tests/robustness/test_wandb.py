"""Issue 18 item 5: the user's own W&B switch, in every command, with real wandb (offline, files in tmp).

``WANDB_MODE=disabled`` / ``WANDB_DISABLED=true``: nothing written anywhere; ``WANDB_MODE=offline`` wins
over a configured key and ``wandb.offline=false``; the host's own script (solo-learn main's
``main_pretrain.py`` W&B sequence) runs offline without a key instead of failing in wandb's login; under
Hydra's multirun every job gets its own W&B run."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf
from PIL import Image

from robustness_helpers import FAST_LOCALIZE, REPO, pretrain_args
from test_training_faults import PHOTOS, _class_folder

pytestmark = pytest.mark.slow


@pytest.fixture
def no_key(monkeypatch, tmp_path):
    """No API key (no WANDB_API_KEY, no ~/.netrc), no W&B environment (no WANDB_DIR: run files next to each
    command's outputs), W&B's own settings under a home in tmp."""
    for key in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_DISABLED", "WANDB_DIR"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    return tmp_path


@pytest.mark.kind("wandb.user-switch")
def test_the_users_wandb_environment_decides_the_mode(no_key, monkeypatch, capsys):
    from occon_plugin.tracking import wandb_mode, wandb_wanted

    cfg = lambda **w: OmegaConf.create({"wandb": {"enabled": True, **w}})  # noqa: E731
    assert wandb_mode(cfg()) == "offline"                      # no key: offline
    assert wandb_mode(cfg(offline=False)) == "offline"         # online without a key cannot work: said once
    assert "no API key is configured" in capsys.readouterr().err
    monkeypatch.setenv("WANDB_API_KEY", "k" * 40)
    assert wandb_mode(cfg()) == "online" and wandb_mode(cfg(offline=True)) == "offline"
    for env, mode in ((("WANDB_MODE", "offline"), "offline"), (("WANDB_MODE", "dryrun"), "offline"),
                      (("WANDB_MODE", "disabled"), "disabled"), (("WANDB_DISABLED", "true"), "disabled"),
                      (("WANDB_DISABLED", "1"), "disabled")):
        monkeypatch.setenv(*env)
        assert wandb_mode(cfg(offline=False)) == mode, env
        assert wandb_wanted(cfg()) == (mode != "disabled")
        monkeypatch.delenv(env[0])
    monkeypatch.delenv("WANDB_API_KEY")
    monkeypatch.setenv("WANDB_MODE", "online")  # the user's choice, even without a key
    assert wandb_mode(cfg(offline=True)) == "online"


def _nothing_written(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if "wandb" in p.name.lower())


@pytest.fixture(scope="module")
def gt_masks(mixed, tmp_path_factory) -> tuple[Path, Path]:
    """Four photos and a binary ground-truth mask per photo (0 / 255, the centre quarter)."""
    root = tmp_path_factory.mktemp("wandb_gt")
    images, masks = root / "images", root / "masks"
    images.mkdir()
    masks.mkdir()
    for name in PHOTOS[:4]:
        shutil.copy(mixed.root / name, images / name)
        w, h = Image.open(images / name).size
        mask = np.zeros((h, w), np.uint8)
        mask[h // 4: 3 * h // 4, w // 4: 3 * w // 4] = 255
        Image.fromarray(mask).save(masks / (Path(name).stem + ".png"))
    return images, masks


@pytest.mark.kind("wandb.user-switch")
@pytest.mark.parametrize("switch", [("WANDB_MODE", "disabled"), ("WANDB_DISABLED", "true")])
def test_wandb_switched_off_by_the_user_writes_nothing_in_any_command(switch, no_key, mixed, mixed_store, gt_masks,
                                                                      monkeypatch, capsys):
    tmp = no_key
    monkeypatch.setenv(*switch)
    images, masks = gt_masks
    data = tmp / "data"
    data.mkdir()
    for name in PHOTOS:
        shutil.copy(mixed.root / name, data / name)
    classes = _class_folder(tmp / "classes", mixed)
    on = ["++wandb.enabled=true", "++wandb.project=occon-test"]
    args = [a for a in pretrain_args(data, tmp / "t", store=mixed_store, steps=1) if a != "++wandb.enabled=false"]
    code, err = _run_ok("occon_plugin.cli.pretrain", [*args, *on], monkeypatch, capsys)
    final = tmp / "t" / "mocov2_occon" / "mocov2_occon-custom" / "final.ckpt"
    assert code in (0, None) and final.is_file(), err[-3000:]
    commands = {
        "occon_plugin.cli.linear": ["--config-path", REPO / "scripts" / "linear" / "custom", "--config-name",
                                    "linear.yaml", f"++pretrained_feature_extractor={final}",
                                    f"++data.train_path={classes}", f"++checkpoint.dir={tmp / 'lin'}",
                                    "++accelerator=cpu", "++max_steps=1", "++optimizer.batch_size=2", *on],
        "occon_plugin.cli.localize": [f"data.path={images}", f"output_dir={tmp / 'store'}", *FAST_LOCALIZE, *on],
        "occon_plugin.cli.eval_linear": [f"model={final}", f"train_dir={classes}", f"test_dir={classes}",
                                         f"output_dir={tmp / 'e1'}", "fast=true", "progress=false", "val_fraction=0.5",
                                         "wandb.enabled=true"],
        "occon_plugin.cli.eval_localization": [f"predictions={tmp / 'store'}", f"gt={masks}", f"image_root={images}",
                                               f"output_dir={tmp / 'e2'}", "wandb.enabled=true"],
    }
    for module, cli_args in commands.items():
        code, err = _run_ok(module, cli_args, monkeypatch, capsys)
        assert code in (0, None), (module, err[-3000:])
    assert _nothing_written(tmp) == []


def _run_ok(module, args, monkeypatch, capsys):
    import importlib

    monkeypatch.setattr(sys, "argv", ["occon", *map(str, args)])
    try:
        importlib.import_module(module).main()
    except SystemExit as exc:
        return exc.code, capsys.readouterr().err
    return 0, capsys.readouterr().err


@pytest.mark.kind("wandb.user-switch")
def test_wandb_mode_offline_wins_over_a_key_and_the_config(no_key, gt_masks, monkeypatch, capsys):
    tmp = no_key
    images, _ = gt_masks
    monkeypatch.setenv("WANDB_API_KEY", "k" * 40)  # a key: the plugin alone would go online
    monkeypatch.setenv("WANDB_MODE", "offline")
    code, err = _run_ok("occon_plugin.cli.localize", [f"data.path={images}", f"output_dir={tmp / 'store'}",
                                                      *FAST_LOCALIZE, "++wandb.enabled=true", "++wandb.offline=false",
                                                      "++wandb.project=occon-test"], monkeypatch, capsys)
    assert code in (0, None), err[-3000:]
    runs = list((tmp / "store" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and list(runs[0].glob("*.wandb")), err[-2000:]


HOST_SCRIPT = '''
"""solo-learn main's main_pretrain.py, its W&B part (the host 1.0.2 installed here has no Hydra script)."""
import os, sys
import hydra
from omegaconf import OmegaConf


@hydra.main(version_base="1.2", config_path=sys.argv.pop(1), config_name="host")
def main(cfg):
    from occon_plugin import host
    from occon_plugin.config import complete_pretrain_cfg
    cfg = complete_pretrain_cfg(cfg, host.METHODS)  # (solo-learn main: parse_cfg)
    cfg.wandb.offline = False if cfg.wandb.offline is None else cfg.wandb.offline  # parse_cfg's default: online
    model = host.METHODS[cfg.method](cfg)
    wandb_logger = host.WandbLogger(name=cfg.name, project=cfg.wandb.project, entity=cfg.wandb.entity,
                               offline=cfg.wandb.offline, resume=None, id=None)
    wandb_logger.watch(model, log="gradients", log_freq=100)
    wandb_logger.log_hyperparams(OmegaConf.to_container(cfg))
    wandb_logger.experiment.finish()
    print("WANDB_MODE", os.environ.get("WANDB_MODE"))


main()
'''


@pytest.mark.kind("wandb.user-switch")
def test_the_hosts_own_script_runs_offline_without_a_key(no_key, mixed_store, mixed):
    import importlib.util

    spec = importlib.util.spec_from_file_location("host_conftest", REPO / "tests" / "host" / "conftest.py")
    host_conftest = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(host_conftest)
    small_cfg = host_conftest.small_cfg

    tmp = no_key
    cfg = small_cfg("mocov2_occon", train_path=str(mixed.root), occon=True)
    cfg.occon.store = str(mixed_store)
    cfg.wandb = {"enabled": True, "project": "occon-test", "entity": None}
    cfg.name = "host-run"
    cfg.pop("defaults", None)  # already composed
    cfg.pop("hydra", None)
    (tmp / "conf").mkdir()
    OmegaConf.save(cfg, tmp / "conf" / "host.yaml")
    (tmp / "main_pretrain.py").write_text(HOST_SCRIPT)
    env = {k: v for k, v in os.environ.items() if k not in ("WANDB_MODE", "WANDB_API_KEY", "WANDB_DISABLED")}
    proc = subprocess.run([sys.executable, "main_pretrain.py", str(tmp / "conf")], cwd=tmp, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert "WANDB_MODE offline" in proc.stdout and "no API key is configured" in proc.stderr
    assert len(list((tmp / "wandb").glob("offline-run-*"))) == 1
    # the user's own switch reaches the host's script too: nothing written
    shutil.rmtree(tmp / "wandb")
    proc = subprocess.run([sys.executable, "main_pretrain.py", str(tmp / "conf")], cwd=tmp,
                          env={**env, "WANDB_DISABLED": "true"}, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0 and "WANDB_MODE disabled" in proc.stdout, proc.stderr[-3000:]
    assert not (tmp / "wandb").exists()


@pytest.mark.kind("wandb.user-switch")
def test_each_multirun_job_gets_its_own_wandb_run(no_key, mixed, mixed_store, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    for name in PHOTOS:
        shutil.copy(mixed.root / name, data / name)
    args = [a for a in pretrain_args(data, tmp_path / "t", store=mixed_store, steps=1) if a != "++wandb.enabled=false"]
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}, "PYTHONWARNINGS": "ignore",
           "HOME": str(tmp_path / "home")}  # no key, no mode: offline
    proc = subprocess.run([sys.executable, "-m", "occon_plugin.cli.pretrain", "-m", *args, "++wandb.enabled=true",
                           "++wandb.project=occon-test", "++name=job-a,job-b"], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    ids = []
    for job in ("job-a", "job-b"):
        folder = tmp_path / "t" / "mocov2_occon" / job
        runs = list((folder / "wandb").glob("offline-run-*"))
        run_id = json.loads((folder / "args.json").read_text())["wandb_run_id"]
        assert len(runs) == 1 and runs[0].name.endswith(run_id), (job, runs, run_id)
        ids.append(run_id)
    assert ids[0] != ids[1]


@pytest.mark.kind("wandb.user-switch")
def test_the_users_wandb_dir_holds_every_commands_run_files(no_key, monkeypatch):
    """``WANDB_DIR`` set: the pretraining logger, the evaluations' run and occon-localize's run all write under it
    (``$WANDB_DIR/wandb/offline-run-*``, as wandb and the host's own script do), nothing under the output folders."""
    from types import SimpleNamespace

    from occon_plugin.eval.report import init_wandb
    from occon_plugin.store import StoreEntry, StoreWriter, mask_to_u8
    from occon_plugin.tracking import log_localize_run
    from occon_plugin.train.tracking import make_wandb_logger

    tmp_path = no_key
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "scratch"))  # not there yet: created
    cfg = OmegaConf.create({"name": "t", "wandb": {"enabled": True, "project": "occon-test"}})
    logger = make_wandb_logger(cfg, tmp_path / "run")
    logger.log_metrics({"x": 1.0})
    logger.experiment.finish()
    run = init_wandb(OmegaConf.create({"wandb": {"project": "occon-test"}}), tmp_path / "eval", "eval")
    run.finish()
    images, store = tmp_path / "images", tmp_path / "store"
    images.mkdir()
    writer = StoreWriter(store, settings={"test": "wandb-dir"}, model_hash="none", resume=False)
    for i in range(2):
        Image.fromarray(np.full((32, 48, 3), 60 * i, np.uint8)).save(images / f"{i}.png")
        mask = np.zeros((32, 48), np.float32)
        mask[8:24, 12:36] = 1.0
        writer.write(StoreEntry(f"{i}.png", 48, 32, boxes=[[0.25, 0.25, 0.75, 0.75]], bg_rect=[0, 0, 48, 8]),
                     mask_to_u8(mask))
    writer.close(listed=2)
    summary = {"store": str(store), "listed": 3, "seconds": 1.0, "manifest": {"counts": {"ok": 2}}}
    run_dir = log_localize_run(cfg, summary, SimpleNamespace(path=str(images), image_root=None))
    runs = sorted((tmp_path / "scratch" / "wandb").glob("offline-run-*"))
    assert len(runs) == 3 and all(any(r.rglob("*.wandb")) for r in runs), runs
    assert run_dir in runs
    assert not [p for p in tmp_path.rglob("wandb") if p.parent != tmp_path / "scratch" and "home" not in p.parts]


@pytest.mark.kind("wandb.user-switch")
def test_an_unwritable_wandb_dir_stops_every_command_before_its_work(no_key, gt_masks, monkeypatch, capsys):
    """``WANDB_DIR`` a file, or a folder that cannot be made: one line naming ``WANDB_DIR``, exit 2, before any work
    (occon-localize used to write its store and send the run to wandb's fallback, the temp folder; an evaluation
    computed everything, wrote its results, then failed, its table unprinted)."""
    tmp = no_key
    images, masks = gt_masks
    (tmp / "a-file").write_text("not a folder")
    for bad in (tmp / "a-file", tmp / "a-file" / "below"):
        monkeypatch.setenv("WANDB_DIR", str(bad))
        for module, args, output in (
                ("occon_plugin.cli.localize", [f"data.path={images}", f"output_dir={tmp / 'store'}", *FAST_LOCALIZE,
                                               "++wandb.enabled=true"], tmp / "store"),
                ("occon_plugin.cli.eval_localization", [f"predictions={masks}", f"gt={masks}", f"image_root={images}",
                                                        f"output_dir={tmp / 'e'}", "wandb.enabled=true"], tmp / "e")):
            code, err = _run_ok(module, args, monkeypatch, capsys)
            lines = [line for line in err.splitlines() if line.startswith("[occon] error:")]
            assert code == 2 and len(lines) == 1 and f"WANDB_DIR={bad}: cannot write" in lines[0], (module, err[-2000:])
            assert not output.exists(), module  # nothing done
    monkeypatch.setenv("WANDB_MODE", "disabled")  # W&B off: the folder is never used, so never checked
    code, err = _run_ok("occon_plugin.cli.localize", [f"data.path={images}", f"output_dir={tmp / 'store'}",
                                                      *FAST_LOCALIZE, "++wandb.enabled=true"], monkeypatch, capsys)
    assert code in (0, None) and (tmp / "store" / "index.jsonl").is_file(), err[-2000:]
