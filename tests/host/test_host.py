"""The host adapter hides the solo-learn generation."""
import inspect

import torch

from occon_plugin import host


def test_generation_detected_consistently():
    params = inspect.signature(host.BaseMethod.__init__).parameters
    assert host.GENERATION == ("main" if "cfg" in params else "1.0.2")
    assert host.BACKBONE_ATTR == {"main": "backbone", "1.0.2": "encoder"}[host.GENERATION]
    assert host.CHECKPOINT_LAYOUTS[host.CHECKPOINT_LAYOUT]["backbone"] == host.BACKBONE_ATTR + "."


def test_momentum_batch_end_accepts_lightning_call():
    hook = host.BaseMomentumMethod.on_train_batch_end
    params = inspect.signature(hook).parameters
    # Lightning calls on_train_batch_end(outputs, batch, batch_idx): dataloader_idx must be optional.
    assert "dataloader_idx" not in params or params["dataloader_idx"].default == 0


def test_build_method_from_main_schema_cfg(make_cfg):
    cfg = make_cfg("mocov2_occon")
    from occon_plugin.config import complete_pretrain_cfg

    cfg = complete_pretrain_cfg(cfg, host.METHODS)
    model = host.build_method("mocov2plus", cfg)
    backbone = host.backbone_of(model)
    assert isinstance(backbone, torch.nn.Module)
    assert host.momentum_backbone_of(model) is not backbone
    assert model.temperature == cfg.method_kwargs.temperature
    assert model.queue.shape[-1] == cfg.method_kwargs.queue_size
    # SGD momentum from optimizer.kwargs reaches the host's optimizer
    opt = model.configure_optimizers()
    opt = opt[0][0] if isinstance(opt, tuple) else opt
    opt = opt[0] if isinstance(opt, list) else opt
    assert opt.param_groups[0]["momentum"] == 0.9


def test_legacy_kwargs_translation(make_cfg):
    from occon_plugin.config import complete_pretrain_cfg

    cfg = complete_pretrain_cfg(make_cfg("byol_occon"), host.METHODS)
    kw = host.legacy_kwargs(cfg)
    assert kw["encoder"] == "resnet18"
    assert kw["base_tau_momentum"] == 0.996 and kw["final_tau_momentum"] == 1.0
    assert kw["proj_output_dim"] == 256
    assert kw["extra_optimizer_args"] == {"momentum": 0.9}
    assert kw["lr"] == 0.03 * 4 / 256  # linear scaling rule, batch 4


def test_lightnings_own_sigterm_flag_is_taken_over_once():
    """Lightning 2.x ends fit with SIGTERMException (exit 0) at the end of the step once its signal connector
    set ``received_sigterm``; the plugin's stop callback clears that flag (and saves a resumable checkpoint
    itself). A trainer without the connector (Lightning 1.9) has nothing to take."""
    from types import SimpleNamespace

    trainer = SimpleNamespace(_signal_connector=SimpleNamespace(received_sigterm=True))
    assert host.take_lightning_sigterm(trainer) is True
    assert trainer._signal_connector.received_sigterm is False
    assert host.take_lightning_sigterm(trainer) is False
    assert host.take_lightning_sigterm(SimpleNamespace()) is False
    assert issubclass(host.LightningSigterm, SystemExit)


def test_a_saved_run_config_compares_with_the_method_defaults_filled_in(make_cfg):
    """config.yaml is written after the method completed its cfg; the resume check fills the same defaults into
    the new cfg first (solo-learn main fills optimizer/scheduler keys in place; 1.0.2 fills nothing)."""
    from occon_plugin.config import complete_pretrain_cfg
    from occon_plugin.train.runs import setting_differences

    cfg = complete_pretrain_cfg(make_cfg("mocov2_occon"), host.METHODS)
    filled = host.with_method_defaults(cfg)
    built = cfg.copy()
    host.build_method(str(cfg.method), built)  # what the run does before it writes config.yaml
    assert setting_differences(built, filled) == []
    assert filled is not cfg
