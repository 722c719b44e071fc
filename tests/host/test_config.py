"""Every shipped YAML composes with Hydra; bad values fail fast naming the key."""
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from occon_plugin import host
from occon_plugin.config import ConfigError, complete_pretrain_cfg
from occon_plugin.methods import UNAVAILABLE
from occon_plugin.methods import table as METHOD_TABLE

REPO = Path(__file__).resolve().parents[2]
PRETRAIN = REPO / "scripts" / "pretrain"
ALL_YAMLS = sorted(p.relative_to(PRETRAIN) for p in PRETRAIN.glob("*/*.yaml"))


def compose_yaml(rel: Path, overrides=()):
    with initialize_config_dir(config_dir=str(PRETRAIN / rel.parent), version_base="1.2"):
        return compose(config_name=rel.name, overrides=list(overrides))


def test_every_dataset_has_the_four_methods():
    for dataset in ("coco", "imagenet-9", "custom"):
        names = {p.stem for p in (PRETRAIN / dataset).glob("*.yaml")}
        assert {"mocov2plus", "byol", "mocov2_occon", "byol_occon"} <= names, dataset


def test_custom_has_a_yaml_for_every_object_aware_method():
    names = {p.stem for p in (PRETRAIN / "custom").glob("*.yaml")}
    assert set(METHOD_TABLE.parents()) <= names


def parent_of(method: str) -> str:
    """The host method a YAML trains: itself, or the parent of an object-aware method (the table)."""
    return METHOD_TABLE.parents().get(method, method)


@pytest.mark.parametrize("rel", ALL_YAMLS, ids=str)
def test_yaml_composes_and_validates(rel, tmp_path):
    cfg = compose_yaml(rel, [f"++data.train_path={tmp_path}"])
    OmegaConf.set_struct(cfg, False)
    if cfg.method in UNAVAILABLE:  # e.g. mocov3_occon on solo-learn 1.0.2: refused, naming the method
        with pytest.raises(ConfigError, match=f"method={cfg.method}"):
            complete_pretrain_cfg(cfg, host.METHODS)
        assert parent_of(cfg.method) not in host.METHODS
        return
    cfg = complete_pretrain_cfg(cfg, host.METHODS)
    parent = parent_of(cfg.method)
    if parent in PAPER_METHODS:
        check_paper_settings(cfg, parent)
    else:  # the other methods: solo-learn's own recipe, at the paper's total batch
        assert cfg.optimizer.batch_size == 256 and cfg.optimizer.base_lr > 0
        assert cfg.data.num_large_crops == (1 if parent == "mae" else 2) and cfg.data.num_small_crops == 0
    if cfg.method.endswith("_occon"):
        family = next(f for name, _, _, f in METHOD_TABLE.ROWS if name == cfg.method)
        assert cfg.occon.bg_mixup.p_mix == METHOD_TABLE.P_MIX[family]


# The two methods the paper trains (App. B): MoCo v2 and BYOL.
PAPER_METHODS = ("mocov2plus", "byol")


def check_paper_settings(cfg, parent):
    assert cfg.optimizer.base_lr == pytest.approx(0.03) and cfg.optimizer.batch_size == 256
    assert cfg.optimizer.weight_decay == pytest.approx(1e-4) and cfg.max_epochs == 800
    aug = cfg.augmentations[0]
    assert (aug.rrc.crop_min_scale, aug.rrc.crop_max_scale) == (0.08, 1.0)
    assert (aug.color_jitter.brightness, aug.color_jitter.hue, aug.color_jitter.prob) == (0.4, 0.1, 0.8)
    assert aug.grayscale.prob == 0.2 and aug.gaussian_blur.prob == 0.5 and aug.gaussian_blur.kernel_size == 23
    if parent == "mocov2plus":
        assert cfg.method_kwargs.queue_size == 65536 and cfg.method_kwargs.temperature == 0.2
        assert cfg.method_kwargs.proj_output_dim == 128 and cfg.momentum.base_tau == 0.999
    else:
        assert parent == "byol"
        assert cfg.momentum.base_tau == 0.996
        assert (cfg.method_kwargs.proj_hidden_dim, cfg.method_kwargs.proj_output_dim) == (4096, 256)
    if cfg.method.endswith("_occon"):
        assert cfg.occon.bg_mixup.p_mix == (0.4 if parent == "mocov2plus" else 0.3)


def test_occon_pairing_follows_the_paper():
    coco = compose_yaml(Path("coco/mocov2_occon.yaml"))
    in9 = compose_yaml(Path("imagenet-9/byol_occon.yaml"))
    assert coco.occon.oa_crop.enabled and not coco.occon.bg_mixup.enabled
    assert in9.occon.bg_mixup.enabled and not in9.occon.oa_crop.enabled


@pytest.mark.parametrize(
    "override,key",
    [
        ("method=not_a_method", "method=not_a_method"),
        ("++occon.bg_mixup.p_mix=1.5", "occon.bg_mixup.p_mix"),
        ("++data.train_path=/nonexistent/images", "data.train_path"),
        ("++optimizer.batch_size=7", "method_kwargs.queue_size"),
        # these reached the host's configure_optimizers: a ValueError / TypeError traceback once training began
        ("optimizer.name=adamx", "optimizer.name=adamx"),
        ("scheduler.name=cosin", "scheduler.name=cosin"),
        ("optimizer.name=adamw", "optimizer.kwargs.momentum"),  # sgd's momentum left in optimizer.kwargs
    ],
)
def test_bad_values_fail_fast_naming_the_key(override, key, tmp_path):
    cfg = compose_yaml(Path("coco/mocov2_occon.yaml"), [f"++data.train_path={tmp_path}", override])
    OmegaConf.set_struct(cfg, False)
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        complete_pretrain_cfg(cfg, host.METHODS)


def test_every_optimizer_with_its_own_kwargs_passes(tmp_path):
    for name, kwargs in (("sgd", {"momentum": 0.9}), ("lars", {"momentum": 0.9, "eta": 0.02, "clip_lr": True}),
                         ("adam", {"betas": [0.9, 0.99]}), ("adamw", {})):
        cfg = compose_yaml(Path("coco/mocov2_occon.yaml"), [f"++data.train_path={tmp_path}", f"optimizer.name={name}"])
        OmegaConf.set_struct(cfg, False)
        cfg.optimizer.kwargs = kwargs
        complete_pretrain_cfg(cfg, host.METHODS)


def test_cli_reports_config_errors_with_the_key(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(PRETRAIN / "main_pretrain.py"), "--config-path", str(PRETRAIN / "coco"),
         "--config-name", "mocov2_occon.yaml", f"++data.train_path={tmp_path}", "++occon.bg_mixup.p_mix=-0.1"],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "occon.bg_mixup.p_mix=-0.1" in proc.stderr and "[0, 1]" in proc.stderr
