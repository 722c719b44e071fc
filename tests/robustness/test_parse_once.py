"""Issue 20: a pretraining run's ``occon`` section is parsed once, and the data pipeline (torchvision and DALI) and
the method receive that same frozen object; solo-learn's own script (``METHODS[name](cfg)``) parses it once too."""
from __future__ import annotations

import pytest
from hydra import compose, initialize_config_dir

from robustness_helpers import pretrain_args


def _compose(args: list[str]):
    assert args[0] == "--config-path" and args[2] == "--config-name"
    with initialize_config_dir(config_dir=str(args[1]), version_base="1.2"):
        return compose(config_name=str(args[3]).removesuffix(".yaml"), overrides=list(args[4:]))


@pytest.fixture
def count_parses(monkeypatch):
    """How many times the ``occon`` section is validated (every parse goes through ``occon_settings``)."""
    import occon_plugin.augment.config as occon_config

    calls = []
    original = occon_config.occon_settings

    def counting(cfg):
        calls.append(cfg)
        return original(cfg)

    monkeypatch.setattr(occon_config, "occon_settings", counting)
    return calls


@pytest.mark.parametrize("fmt", ["image_folder", "dali"])
def test_the_pipeline_and_the_method_receive_the_one_parsed_occon(fmt, mixed, mixed_store, tmp_path, count_parses):
    from occon_plugin import host, register
    from occon_plugin.augment.config import OcconConfig
    from occon_plugin.cli.pretrain import build_train_data
    from occon_plugin.config import parse_pretrain_cfg

    if fmt == "dali":
        pytest.importorskip("nvidia.dali", reason="DALI is not installed")
    register()
    cfg = _compose(pretrain_args(mixed.root, tmp_path / "t", store=mixed_store, fmt=fmt))
    run = parse_pretrain_cfg(cfg, host.METHODS, check_store=True)
    assert isinstance(run.occon, OcconConfig) and run.occon.oa_crop and run.occon.bg_mixup.enabled
    model = host.build_method(run.cfg.method, run.cfg, occon=run.occon)
    loader, datamodule = build_train_data(run)
    if fmt == "dali":
        datamodule.setup()
        used_by_pipeline = datamodule.loader.source.settings
    else:
        used_by_pipeline = loader.dataset.cfg
    assert model.occon is run.occon and used_by_pipeline is run.occon
    assert len(count_parses) == 1, f"the occon section was parsed {len(count_parses)} times"
    assert not hasattr(model, "_occon_run_cfg")  # no side channel: the method has its constructor's cfg
    assert model._occon_cfg is run.cfg


def test_the_hosts_own_construction_parses_occon_once(mixed, mixed_store, tmp_path, count_parses):
    """solo-learn main's main_pretrain.py calls ``METHODS[cfg.method](cfg)``: the method parses the section itself."""
    from occon_plugin import host, register
    from occon_plugin.config import complete_pretrain_cfg

    register()
    cfg = complete_pretrain_cfg(_compose(pretrain_args(mixed.root, tmp_path / "t", store=mixed_store)), host.METHODS)
    count_parses.clear()
    model = host.METHODS[cfg.method](cfg)
    assert len(count_parses) == 1 and model.occon.oa_crop and model.occon.bg_mixup.views == (0, 1)


def test_a_plain_host_method_takes_no_occon(mixed, tmp_path):
    from occon_plugin import host, register
    from occon_plugin.augment.config import OcconConfig
    from occon_plugin.config import parse_pretrain_cfg

    register()
    cfg = _compose(pretrain_args(mixed.root, tmp_path / "t", "++method=mocov2plus"))
    run = parse_pretrain_cfg(cfg, host.METHODS)
    with pytest.raises(TypeError, match="solo-learn's own"):
        host.build_method("mocov2plus", run.cfg, occon=OcconConfig())


@pytest.mark.kind("config.null-section")
def test_an_object_aware_run_with_occon_null_is_refused_not_trained_as_the_baseline(mixed, mixed_store, tmp_path):
    """``++occon=null`` on a ``*_occon`` method trained the host's baseline without a word: now one line, through
    the plugin's parse and the host's own construction (``complete_pretrain_cfg`` + ``METHODS[name](cfg)``); an
    absent section and ``occon.enabled=false`` stay the documented baseline, and a host method ignores the key."""
    from occon_plugin import host, register
    from occon_plugin.config import complete_pretrain_cfg, parse_pretrain_cfg
    from occon_plugin.errors import ConfigError

    register()
    args = pretrain_args(mixed.root, tmp_path / "t", store=mixed_store)
    with pytest.raises(ConfigError, match=r"^occon=null is invalid: give the occon section .* occon.enabled=false"):
        parse_pretrain_cfg(_compose([*args, "++occon=null"]), host.METHODS)
    with pytest.raises(ConfigError, match=r"^occon=null is invalid"):
        complete_pretrain_cfg(_compose([*args, "++occon=null"]), host.METHODS)
    for name in ("oa_crop", "bg_mixup"):
        with pytest.raises(ConfigError, match=rf"^occon.{name}=null is invalid: give occon.{name}.enabled=true or "):
            parse_pretrain_cfg(_compose([*args, f"++occon.{name}=null"]), host.METHODS)
    assert not parse_pretrain_cfg(_compose([*args, "++occon.enabled=false"]), host.METHODS).occon.active
    assert not parse_pretrain_cfg(_compose([*args, "~occon"]), host.METHODS).occon.active
    assert not parse_pretrain_cfg(_compose([*args, "++method=mocov2plus", "++occon=null"]), host.METHODS).occon.active
