"""The method table covers the installed host; each derived class is its parent and nothing more;
entry points, registration and the multi-crop view counting follow the table."""
import runpy
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from occon_plugin import host
from occon_plugin.config import ConfigError, complete_pretrain_cfg
from occon_plugin.methods import OCCON_METHODS, PARENT_METHOD, UNAVAILABLE, MethodUnavailable, table
from occon_plugin.methods.base import OcconMethodMixin

REPO = Path(__file__).resolve().parents[2]


def host_pretraining_methods():
    """The installed host's own METHODS (ours removed)."""
    return {name for name, cls in host.METHODS.items() if not issubclass(cls, OcconMethodMixin)}


def test_every_host_method_is_in_the_table_or_excluded_by_a_rule():
    parents = set(table.parents().values())
    unknown = host_pretraining_methods() - parents - set(table.EXCLUDED)
    assert not unknown, (f"solo-learn {host.SOLO_VERSION} has methods the table does not know: {sorted(unknown)}; "
                         "add a row to occon_plugin/methods/table.py (or an EXCLUDED rule)")
    assert not parents & set(table.EXCLUDED)
    assert all(isinstance(why, str) and len(why) > 20 for why in table.EXCLUDED.values())


def test_one_object_aware_method_per_host_pretraining_method():
    expected = {name for name, parent in table.parents().items() if parent in host.METHODS}
    assert set(OCCON_METHODS) == expected
    assert {PARENT_METHOD[n] for n in OCCON_METHODS} == host_pretraining_methods() - set(table.EXCLUDED)
    assert set(UNAVAILABLE) == set(table.parents()) - expected


def test_the_acceptance_command_lists_them():
    code = ("import occon_plugin, solo.methods as m; "
            "print(sorted(k for k in m.METHODS if k.endswith('_occon')))")
    proc = subprocess.run([sys.executable, "-W", "ignore", "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().splitlines()[-1] == str(sorted(OCCON_METHODS))


@pytest.mark.parametrize("name", sorted(OCCON_METHODS))
def test_each_class_is_its_parent_plus_the_mixin_only(name):
    cls = OCCON_METHODS[name]
    parent = host.METHODS[PARENT_METHOD[name]]
    assert cls.__mro__[1:3] == (OcconMethodMixin, parent) and cls.__mro__[3:] == parent.__mro__[1:]
    # no loss, network, hook or hyperparameter of its own: only the names derive() sets
    own = dict(vars(cls))
    if not own.get("__annotations__", True):
        del own["__annotations__"]  # an empty dict Python adds when something reads cls.__annotations__
    assert set(own) <= {"__module__", "__qualname__", "__doc__", "occon_name", "occon_parent"}
    assert host.METHODS[name] is cls and cls.occon_parent == PARENT_METHOD[name]
    from occon_plugin import methods

    assert getattr(methods, cls.__name__) is cls  # where the entry point and pickle look


def test_a_method_the_host_lacks_fails_clearly():
    from occon_plugin import methods

    class_of = {name: cls for name, _, cls, _ in table.ROWS}
    for name, why in UNAVAILABLE.items():
        with pytest.raises(MethodUnavailable, match=table.parents()[name]):
            getattr(methods, class_of[name])
        assert "solo-learn main" in why
    with pytest.raises(AttributeError, match="NoSuchOccon"):
        methods.NoSuchOccon  # noqa: B018


def test_setup_py_reads_the_table_without_torch():
    # -S: no site-packages, so the table must not import anything installed (torch, solo-learn)
    proc = subprocess.run([sys.executable, "-S", "-c",
                           "import runpy, sys; t = runpy.run_path(sys.argv[1]); "
                           "assert 'torch' not in sys.modules; print(len(t['entry_points']()))",
                           str(REPO / "occon_plugin" / "methods" / "table.py")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert int(proc.stdout) == len(table.ROWS)
    assert "METHOD_TABLE" in (REPO / "setup.py").read_text()


def test_installed_entry_points_follow_the_table():
    eps = {ep.name: ep.value for ep in entry_points(group=table.ENTRY_POINT_GROUP)}
    expected = dict(line.split(" = ") for line in table.entry_points())
    assert eps == expected, "the installed metadata is stale: reinstall (./run setup or pip install -e .)"
    for name in OCCON_METHODS:
        ep = next(ep for ep in entry_points(group=table.ENTRY_POINT_GROUP) if ep.name == name)
        assert ep.load() is OCCON_METHODS[name]


def test_representatives_are_rows_of_their_family():
    family_of = {name: family for name, _, _, family in table.ROWS}
    assert set(table.FAMILIES) == set(family_of.values()) == set(table.P_MIX)
    for family, (meaning, representative) in table.FAMILIES.items():
        assert family_of[representative] == family and meaning


# ---------------------------------------------------------------- views: count, multi-crop, every view
def cfg_with_views(method, sizes_and_counts, tmp_path, **data):
    views = [{"crop_size": size, "num_crops": count} for size, count in sizes_and_counts]
    return OmegaConf.create({"method": method, "backbone": {"name": "resnet18"},
                             "data": {"train_path": str(tmp_path), **data},
                             "optimizer": {"name": "sgd", "batch_size": 4, "lr": 0.1},
                             "scheduler": {"name": "none"}, "augmentations": views})


def test_multi_crop_views_are_counted_as_solo_learn_main_does(tmp_path):
    cfg = complete_pretrain_cfg(cfg_with_views("byol_occon", [(224, 2), (96, 6)], tmp_path), host.METHODS)
    assert (cfg.data.num_large_crops, cfg.data.num_small_crops) == (2, 6)
    cfg = complete_pretrain_cfg(cfg_with_views("byol_occon", [(224, 1), (224, 1)], tmp_path), host.METHODS)
    assert (cfg.data.num_large_crops, cfg.data.num_small_crops) == (2, 0)


@pytest.mark.parametrize("method,views,data,match", [
    ("mocov2_occon", [(224, 1), (96, 2)], {}, "needs exactly 2 large views"),
    ("byol_occon", [(224, 3)], {}, "needs exactly 2 large views"),
    ("byol_occon", [(224, 2), (96, 2)], {"num_small_crops": 6}, r"data\.num_small_crops=6"),
    ("byol_occon", [(224, 2), (96, 0)], {}, r"augmentations\[1\]\.num_crops=0"),
])
def test_bad_view_counts_fail_naming_the_key(method, views, data, match, tmp_path):
    with pytest.raises(ConfigError, match=match):
        complete_pretrain_cfg(cfg_with_views(method, views, tmp_path, **data), host.METHODS)


def test_wmse_and_mae_take_another_number_of_large_views(tmp_path):
    for method in ("wmse_occon", "mae_occon"):
        if method in OCCON_METHODS:
            cfg = complete_pretrain_cfg(cfg_with_views(method, [(224, 1)], tmp_path), host.METHODS)
            assert cfg.data.num_large_crops == 1


def test_bg_mixup_defaults_to_every_view_including_small_crops():
    from occon_plugin.augment.config import parse_occon_config

    settings = parse_occon_config({"bg_mixup": {"enabled": True}}, n_views=8, check_store=False)
    assert settings.bg_mixup.views == tuple(range(8))
    settings = parse_occon_config({"bg_mixup": {"enabled": True, "views": [0]}}, n_views=8, check_store=False)
    assert settings.bg_mixup.views == (0,)


def test_table_module_is_the_one_setup_py_runs():
    ran = runpy.run_path(str(REPO / "occon_plugin" / "methods" / "table.py"))
    assert ran["ROWS"] == table.ROWS and ran["entry_points"]() == table.entry_points()


def test_multicrop_group_composes_with_a_method_yaml(tmp_path):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(REPO / "scripts" / "pretrain" / "custom"), version_base="1.2"):
        cfg = compose(config_name="swav_occon.yaml",
                      overrides=["augmentations=multicrop", f"++data.train_path={tmp_path}"])
    OmegaConf.set_struct(cfg, False)
    cfg = complete_pretrain_cfg(cfg, host.METHODS)
    assert (cfg.data.num_large_crops, cfg.data.num_small_crops) == (2, 6)
    assert [int(a.crop_size) for a in cfg.augmentations] == [224, 96]
