"""Localization presets: which keys they fill, that explicit keys win, and that each model gets one."""
from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from hydra import compose, initialize_config_dir

from occon_plugin.cli.localize import CONFIG_DIR, settings_from_config
from occon_plugin.errors import ConfigError
from occon_plugin.localize import presets
from occon_plugin.localize.presets import PRESETS, Preset, apply_preset, model_preset_name, unresolved
from occon_plugin.localize.refiners import refine_settings
from occon_plugin.localize.settings import CamSettings
from occon_plugin.localize.runner import LocalizeSettings, run_localize


def _cli_settings(*overrides: str) -> LocalizeSettings:
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.2"):
        return settings_from_config(compose("localize", overrides=["data.path=x", "output_dir=y", *overrides]))


def _spec(name: str, family: str, defaults=None):
    return SimpleNamespace(name=name, family=family, defaults=defaults or {})


def test_every_preset_sets_every_preset_key():
    for name, chosen in PRESETS.items():
        assert all(v is not None for v in vars(chosen.cam).values()), name
        assert chosen.refine.method is not None and chosen.refine.resolution is not None, name


def test_a_preset_is_checked_when_it_is_stated():
    full = PRESETS["paper"].cam
    with pytest.raises(ConfigError, match=r"lacks \['cam.score'\]"):
        Preset(CamSettings(**{**vars(full), "score": None}), refine_settings("none", "input"))
    with pytest.raises(ConfigError, match="cam.iters=0"):
        Preset(CamSettings(**{**vars(full), "iters": 0}), refine_settings("none", "input"))
    with pytest.raises(ConfigError, match="refine.crf.bilateral_srgb"):
        Preset(full, refine_settings("crf", "input", crf={"bilateral_srgb": 0.0}))
    with pytest.raises(ConfigError, match="refine.crf takes"):
        refine_settings("crf", "input", crf={"srgb": 3.0})


def test_yaml_leaves_every_preset_key_to_the_preset():
    s = _cli_settings()
    assert s.preset == "auto"
    assert sorted(unresolved(s)) == sorted([f"cam.{k}" for k in vars(CamSettings())] + ["refine.method",
                                                                                       "refine.resolution"])


def test_paper_preset_is_the_papers_operator():
    s = _cli_settings("preset=paper")
    assert apply_preset(s) == "paper"
    assert (s.cam.iters, s.cam.expand, s.cam.nsr, s.refine.method, s.refine.resolution) == (10, True, True, "crf", "input")
    # the paper's CRF: pydensecrf's README defaults at the 224x224 input, never a reduced working size
    assert (s.refine.crf.iters, s.refine.crf.gauss_sxy, s.refine.crf.gauss_compat, s.refine.crf.bilateral_sxy,
            s.refine.crf.bilateral_srgb, s.refine.crf.bilateral_compat) == (5, 3.0, 3.0, 80.0, 13.0, 10.0)
    assert s.refine.crf.max_pixels >= 224 * 224
    b = _cli_settings("preset=bg_mixup")
    apply_preset(b)
    assert (b.cam.iters, b.cam.expand, b.refine.method) == (1, False, "none")


def test_explicit_keys_win_over_the_preset():
    s = _cli_settings("preset=paper", "cam.iters=5", "refine.method=none", "cam.expand=false")
    apply_preset(s)
    assert (s.cam.iters, s.refine.method, s.cam.expand) == (5, "none", False)
    s = _cli_settings("preset=lite", "refine.crf.bilateral_srgb=5", "refine.fgs.lam=10")
    apply_preset(s)
    assert (s.refine.method, s.refine.crf.bilateral_srgb, s.refine.crf.bilateral_compat) == ("crf+fgs", 5.0, 7.0)
    assert (s.refine.fgs.lam, s.refine.fgs.sigma_color) == (10.0, PRESETS["lite"].refine.fgs.sigma_color)
    assert s.refine.guided.radius == 4  # a parameter no preset sets: the method's default
    assert s.cam.temperature == PRESETS["paper"].cam.temperature  # the rest still comes from the preset


def test_auto_follows_the_family_then_attached_defaults():
    assert model_preset_name(_spec("efficientnet-lite0", "efficientnet-lite")) == "lite"
    assert model_preset_name(_spec("resnet50", "resnet")) == "resnet"
    assert model_preset_name(_spec("vit_small", "vit")) == "no_expansion"
    assert model_preset_name(_spec("timm:convnext_tiny", "cnn")) == "no_expansion"
    assert model_preset_name(_spec("convnext_tiny", "convnext")) == "no_expansion"
    assert model_preset_name(_spec("odd", "not-registered")) == presets.FALLBACK
    assert model_preset_name(_spec("resnet18", "resnet", {"localize": {"preset": "bg_mixup"}})) == "bg_mixup"
    s = LocalizeSettings()
    assert apply_preset(s, _spec("vit_small", "vit")) == "no_expansion"
    assert s.cam.expand is False and not unresolved(s)


def test_auto_without_a_model_and_unknown_presets_are_config_errors():
    with pytest.raises(ConfigError, match="needs the model"):
        apply_preset(LocalizeSettings())
    with pytest.raises(ConfigError, match="preset='nope'.*bg_mixup"):
        apply_preset(LocalizeSettings(preset="nope"))


def test_every_family_names_a_known_preset_and_importing_the_presets_writes_nothing_into_models():
    import subprocess
    import sys

    from occon_plugin.models import FAMILIES

    for family in FAMILIES.values():
        assert family.preset is None or family.preset in PRESETS, family.name
    # presets are plain data: importing them leaves the model package as it was (no import side effect)
    code = ("import occon_plugin.models as m, copy; before = {k: (f.preset, f.build, f.cam) for k, f in "
            "m.FAMILIES.items()}; import occon_plugin.localize.presets; assert before == {k: (f.preset, f.build, "
            "f.cam) for k, f in m.FAMILIES.items()}; assert not hasattr(m, 'MODEL_DEFAULTS')")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_bad_preset_values_are_rejected_naming_the_key():
    with pytest.raises(ConfigError, match="refine.resolution"):
        _cli_settings("refine.resolution=full")
    with pytest.raises(ConfigError, match="refine.method"):
        _cli_settings("refine.method=crf+sharpen")
    with pytest.raises(ConfigError, match="refine.fgs.lam"):
        _cli_settings("refine.fgs.lam=-1")
    with pytest.raises(ConfigError, match="cam.fill"):
        _cli_settings("cam.fill=pink")


def test_runner_records_the_resolved_preset(tmp_path, capsys):
    from PIL import Image

    from occon_plugin.images.bundled import export_skimage_photos

    photos = export_skimage_photos(tmp_path / "photos")[:3]
    folder = tmp_path / "three"
    folder.mkdir()
    for p in photos:
        Image.open(p).convert("RGB").resize((64, 48)).save(folder / f"{p.stem}.jpg")
    s = LocalizeSettings(preset="bg_mixup", image_size=64, threads=1, progress=False)
    s.data.path, s.output_dir = str(folder), str(tmp_path / "store")
    s.refine.crf.iters = 3  # a parameter of a method bg_mixup's chain (none) does not run: said, not dropped silently
    summary = run_localize(s)
    assert summary["preset"] == "bg_mixup" and s.cam.iters is None  # the caller's settings are left as given
    assert "refine.crf.iters not used: refine.method=none" in capsys.readouterr().err
    manifest = json.loads((tmp_path / "store" / "manifest.json").read_text())
    assert json.dumps(manifest).count('"bg_mixup"') >= 1
    assert summary["settings"]["cam"]["iters"] == 1 and summary["settings"]["refine"] == {"method": "none",
                                                                                         "resolution": "input"}


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
    cam, refine = summary["settings"]["cam"], summary["settings"]["refine"]
    assert (cam["iters"], cam["expand"], refine["method"], refine["resolution"]) == (10, True, "crf", "input")
    s2 = LocalizeSettings(model=str(ckpt), image_size=64, threads=1, progress=False, resume=False)
    s2.data.path, s2.output_dir = str(folder), str(tmp_path / "store2")
    s2.cam.iters, s2.refine.method = 2, "none"
    summary = run_localize(s2)
    assert summary["settings"]["cam"]["iters"] == 2 and summary["settings"]["refine"]["method"] == "none"
    assert summary["settings"]["cam"]["expand"] is True  # the rest still from the model's preset


def test_a_chain_is_recorded_in_one_spelling():
    # 'crf + fgs' ran but was recorded as typed, so resuming with crf+fgs (the same chain) was refused
    from occon_plugin.localize.refiners import canonical_method

    s = _cli_settings("preset=paper", "refine.method=' crf + fgs '")
    apply_preset(s)
    assert s.refine.method == "crf+fgs"
    assert canonical_method(" none ") == "none" and canonical_method("fgs+crf") == "fgs+crf"
    with pytest.raises(ConfigError, match="refine.method"):
        canonical_method("crf+")


def test_parameters_of_a_method_not_in_the_chain_are_named():
    from occon_plugin.localize.refiners import explicit_params, unused_params

    s = _cli_settings("preset=bg_mixup", "refine.method=crf", "refine.guided.radius=4", "refine.crf.iters=3")
    given = explicit_params(s.refine)
    assert set(given) == {"refine.guided.radius", "refine.crf.iters"}
    apply_preset(s)
    assert unused_params(given, s.refine.method) == ("refine.guided.radius",)
    assert unused_params(given, "guided+crf") == () and unused_params(given, "none") == given


def test_non_finite_or_negative_settings_are_rejected_naming_the_key():
    # cam.temperature=inf gave all-zero masks with status ok; seed=-1 a numpy traceback
    for override, key in (("cam.temperature=inf", "cam.temperature"), ("cam.early_exit_tol=nan", "cam.early_exit_tol"),
                          ("seed=-1", "seed"), ("box_margin=inf", "box_margin")):
        with pytest.raises(ConfigError, match=key):
            _cli_settings(override)


def test_another_chain_inheriting_the_presets_working_size_bound_is_said(tmp_path, capsys):
    """lite bounds its CRF to 64x64 pixels for its crf+fgs chain; refine.method=crf alone under lite inherits that
    bound (the preset fills the unset keys): the run says so once, and not when the bound is set or the chain is
    the preset's own."""
    from PIL import Image

    from occon_plugin.images.bundled import export_skimage_photos

    folder = tmp_path / "three"
    folder.mkdir()
    for p in export_skimage_photos(tmp_path / "photos")[:3]:
        Image.open(p).convert("RGB").resize((64, 48)).save(folder / f"{p.stem}.jpg")

    def run(name: str, **refine) -> str:
        s = LocalizeSettings(preset="lite", image_size=64, threads=1, progress=False, post_workers=0)
        s.data.path, s.output_dir = str(folder), str(tmp_path / name)
        s.cam.iters = 1
        for key, value in refine.items():
            if key == "method":
                s.refine.method = value
            else:
                setattr(s.refine.crf, key, value)
        run_localize(s)
        return capsys.readouterr().err

    note = "refine.method=crf takes refine.crf.max_pixels=4096 from preset lite (chosen for its crf+fgs chain)"
    assert note in run("crf", method="crf")
    assert "max_pixels" not in run("bound", method="crf", max_pixels=4_000_000)
    assert "max_pixels" not in run("own") + run("own_explicit", method="crf+fgs")
