"""The shipped YAMLs work unchanged with the host's own scripts and with the plugin's; a plugin run folder
is what the host's main_knn.py / main_umap.py read (``args.json`` + a checkpoint).

solo-learn main's ``parse_cfg`` (Hydra) exists only on solo-learn main: those cases skip on 1.0.2
(CI) and run in a solo-learn main environment (docs/hosts.md: how it is checked).
"""
from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from PIL import Image

from occon_plugin import host
from occon_plugin.cli.pretrain import save_final_checkpoint, write_run_config
from occon_plugin.config import complete_linear_cfg, complete_pretrain_cfg

REPO = Path(__file__).resolve().parents[2]
PRETRAIN, LINEAR = REPO / "scripts" / "pretrain", REPO / "scripts" / "linear"
PRETRAIN_YAMLS = sorted(p.relative_to(PRETRAIN) for p in PRETRAIN.glob("*/*.yaml"))
LINEAR_YAMLS = sorted(p.relative_to(LINEAR) for p in LINEAR.glob("*/*.yaml"))
MAIN_ONLY = pytest.mark.skipif(host.GENERATION != "main", reason="solo-learn main's Hydra parse_cfg: not in 1.0.2")


def compose_yaml(root: Path, rel: Path, overrides=()):
    with initialize_config_dir(config_dir=str(root / rel.parent), version_base="1.2"):
        cfg = compose(config_name=rel.name, overrides=list(overrides))
    OmegaConf.set_struct(cfg, False)
    return cfg


@pytest.fixture(scope="module")
def labelled(tmp_path_factory):
    root = tmp_path_factory.mktemp("yaml_compat")
    for c in ("a", "b"):
        for i in range(2):
            (root / c).mkdir(exist_ok=True)
            Image.fromarray(np.full((16, 16, 3), 100 * i, np.uint8)).save(root / c / f"{i}.png")
    return root


def test_every_yaml_keeps_devices_a_sequence():
    # solo-learn main's parse_cfg scales the lr by len(cfg.devices): an int fails there
    for rel in PRETRAIN_YAMLS + LINEAR_YAMLS:
        root = PRETRAIN if rel in PRETRAIN_YAMLS else LINEAR
        devices = OmegaConf.load(root / rel).get("devices", "1")
        assert not isinstance(devices, int), f"{rel}: devices: {devices!r} must be a string or a list"


@MAIN_ONLY
@pytest.mark.parametrize("rel", PRETRAIN_YAMLS, ids=str)
def test_host_parse_cfg_accepts_every_pretrain_yaml(rel, labelled):
    from solo.args.pretrain import parse_cfg

    cfg = parse_cfg(compose_yaml(PRETRAIN, rel, [f"++data.train_path={labelled}"]))
    assert cfg.optimizer.lr > 0 and cfg.data.num_large_crops >= 1
    assert cfg.method in host.METHODS  # registered by the startup hook: METHODS[cfg.method](cfg) finds it


@MAIN_ONLY
@pytest.mark.parametrize("rel", LINEAR_YAMLS, ids=str)
def test_host_parse_cfg_accepts_every_linear_yaml(rel, labelled):
    from solo.args.linear import parse_cfg

    cfg = parse_cfg(compose_yaml(LINEAR, rel, [f"++data.train_path={labelled}", f"++data.val_path={labelled}"]))
    assert cfg.data.num_classes == 2 and cfg.backbone.name == "resnet18"


@pytest.mark.parametrize("rel", LINEAR_YAMLS, ids=str)
def test_plugin_accepts_every_linear_yaml(rel, labelled):
    cfg = complete_linear_cfg(compose_yaml(LINEAR, rel, [f"++data.train_path={labelled}",
                                                         f"++pretrained_feature_extractor={labelled / 'a' / '0.png'}"]))
    assert cfg.data.augmentations.crop_size == 224 and cfg.optimizer.batch_size == 256


def test_run_folder_is_what_main_knn_reads(make_cfg, tmp_path):
    """main_knn.py / main_umap.py: cfg = OmegaConf.create(json.load(args.json));
    METHODS[cfg.method].load_from_checkpoint(<the folder's .ckpt>, strict=False, cfg=cfg)."""
    cfg = complete_pretrain_cfg(make_cfg("mocov2_occon", train_path=str(tmp_path)), host.METHODS)
    model = host.build_method("mocov2_occon", cfg)
    write_run_config(cfg, tmp_path, wandb_run_id="abc123")
    save_final_checkpoint(model, SimpleNamespace(global_step=3, current_epoch=0), cfg, tmp_path / "final.ckpt")
    assert torch.load(tmp_path / "final.ckpt", map_location="cpu", weights_only=True)["state_dict"]  # main_linear.py
    args = json.loads((tmp_path / "args.json").read_text())
    assert args["wandb_run_id"] == "abc123" and args["method"] == "mocov2_occon"
    loaded = host.METHODS[args["method"]].load_from_checkpoint(str(tmp_path / "final.ckpt"), strict=False,
                                                               cfg=OmegaConf.create(args))
    for (name, a), b in zip(model.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(a, b), name
