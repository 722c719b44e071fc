"""Localization presets: which keys they fill, that explicit keys win, and that each model gets one."""
from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from hydra import compose, initialize_config_dir

from occon_plugin.cli.localize import CONFIG_DIR, settings_from_config
from occon_plugin.errors import ConfigError
from occon_plugin.localize import presets
from occon_plugin.localize.presets import PRESET_KEYS, PRESETS, apply_preset, model_preset_name, unresolved
from occon_plugin.localize.runner import LocalizeSettings, run_localize


def _cli_settings(*overrides: str) -> LocalizeSettings:
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.2"):
        return settings_from_config(compose("localize", overrides=["data.path=x", "output_dir=y", *overrides]))


def _spec(name: str, family: str, defaults=None):
    return SimpleNamespace(name=name, family=family, defaults=defaults or {})


def test_every_preset_sets_every_preset_key():
    for name, values in PRESETS.items():
        for section, keys in PRESET_KEYS.items():
            assert set(keys) <= set(values[section]), (name, section)


def test_yaml_leaves_every_preset_key_to_the_preset():
    s = _cli_settings()
    assert s.preset == "auto"
    assert sorted(unresolved(s)) == sorted(f"{sec}.{k}" for sec, keys in PRESET_KEYS.items() for k in keys)


def test_paper_preset_is_the_papers_operator():
    s = _cli_settings("preset=paper")
    assert apply_preset(s) == "paper"
    assert (s.cam.iters, s.cam.expand, s.cam.nsr, s.crf.enabled, s.crf.resolution) == (10, True, True, True, "input")
    b = _cli_settings("preset=bg_mixup")
    apply_preset(b)
    assert (b.cam.iters, b.cam.expand, b.crf.enabled) == (1, False, False)


def test_explicit_keys_win_over_the_preset():
    s = _cli_settings("preset=paper", "cam.iters=5", "crf.enabled=false", "cam.expand=false")
    apply_preset(s)
    assert (s.cam.iters, s.crf.enabled, s.cam.expand) == (5, False, False)
    assert s.cam.temperature == PRESETS["paper"]["cam"]["temperature"]  # the rest still comes from the preset


def test_auto_follows_the_model_name_then_family_then_attached_defaults():
    assert model_preset_name(_spec("efficientnet-lite0", "efficientnet-lite")) == presets.BY_NAME["efficientnet-lite0"]
    assert model_preset_name(_spec("resnet50", "resnet")) == "resnet"
    assert model_preset_name(_spec("vit_small", "vit")) == "no_expansion"
    assert model_preset_name(_spec("timm:convnext_tiny", "cnn")) == "no_expansion"
    assert model_preset_name(_spec("resnet18", "resnet", {"localize": {"preset": "bg_mixup"}})) == "bg_mixup"
    s = LocalizeSettings()
    assert apply_preset(s, _spec("vit_small", "vit")) == "no_expansion"
    assert s.cam.expand is False and not unresolved(s)


def test_auto_without_a_model_and_unknown_presets_are_config_errors():
    with pytest.raises(ConfigError, match="needs the model"):
        apply_preset(LocalizeSettings())
    with pytest.raises(ConfigError, match="preset='nope'.*bg_mixup"):
        apply_preset(LocalizeSettings(preset="nope"))


def test_model_specs_carry_their_preset():
    from occon_plugin.models import MODEL_DEFAULTS

    presets.register_model_defaults()
    for key, name in {**presets.BY_FAMILY, **presets.BY_NAME}.items():
        assert MODEL_DEFAULTS[key]["localize"]["preset"] == name


def test_bad_preset_values_are_rejected_naming_the_key():
    with pytest.raises(ConfigError, match="crf.resolution"):
        _cli_settings("crf.resolution=full")
    with pytest.raises(ConfigError, match="cam.fill"):
        _cli_settings("cam.fill=pink")


def test_runner_records_the_resolved_preset(tmp_path):
    from PIL import Image

    from occon_plugin.images.bundled import export_skimage_photos

    photos = export_skimage_photos(tmp_path / "photos")[:3]
    folder = tmp_path / "three"
    folder.mkdir()
    for p in photos:
        Image.open(p).convert("RGB").resize((64, 48)).save(folder / f"{p.stem}.jpg")
    s = LocalizeSettings(preset="bg_mixup", image_size=64, threads=1, progress=False)
    s.data.path, s.output_dir = str(folder), str(tmp_path / "store")
    summary = run_localize(s)
    assert summary["preset"] == "bg_mixup" and s.cam.iters is None  # the caller's settings are left as given
    manifest = json.loads((tmp_path / "store" / "manifest.json").read_text())
    assert json.dumps(manifest).count('"bg_mixup"') >= 1
    assert summary["settings"]["cam"]["iters"] == 1 and summary["settings"]["crf"]["enabled"] is False


def test_a_user_resnet_checkpoint_gets_the_resnet_preset(tmp_path):
    # A user's own contrastive ResNet (the plugin's checkpoint format, random weights): preset=auto resolves
    # through the checkpoint's family to the paper's operator, the whole run works, explicit keys still win.
    import torch
    import torchvision
    from PIL import Image

    from occon_plugin.images.bundled import export_skimage_photos
    from occon_plugin.models import load_cam_model

    torch.manual_seed(0)
    net = torchvision.models.resnet18()
    ckpt = tmp_path / "mine.pt"
    torch.save({"format": "occon-ckpt/1", "arch": "resnet18", "meta": {"method": "mocov2"},
                "backbone": {k: v for k, v in net.state_dict().items() if not k.startswith("fc.")},
                "projector": None, "projector_dims": None}, ckpt)
    spec = load_cam_model(str(ckpt)).spec
    assert spec.family == "resnet" and model_preset_name(spec) == "resnet"
    folder = tmp_path / "three"
    folder.mkdir()
    for p in export_skimage_photos(tmp_path / "photos")[:3]:
        Image.open(p).convert("RGB").resize((64, 48)).save(folder / f"{p.stem}.jpg")
    s = LocalizeSettings(model=str(ckpt), image_size=64, threads=1, progress=False)
    s.data.path, s.output_dir = str(folder), str(tmp_path / "store")
    summary = run_localize(s)
    assert summary["preset"] == "resnet" and summary["written_ok"] == 3
    cam, crf = summary["settings"]["cam"], summary["settings"]["crf"]
    assert (cam["iters"], cam["expand"], crf["enabled"], crf["resolution"]) == (10, True, True, "input")
    s2 = LocalizeSettings(model=str(ckpt), image_size=64, threads=1, progress=False, resume=False)
    s2.data.path, s2.output_dir = str(folder), str(tmp_path / "store2")
    s2.cam.iters, s2.crf.enabled = 2, False
    summary = run_localize(s2)
    assert summary["settings"]["cam"]["iters"] == 2 and summary["settings"]["crf"]["enabled"] is False
    assert summary["settings"]["cam"]["expand"] is True  # the rest still from the model's preset
