"""Every ``<method>_occon`` of the installed host, trained for real on CPU:

* without object-aware data it computes exactly what its solo-learn parent computes (same losses,
  step by step, from the same seed, on the same batches);
* with the object-aware record appended to the batch it trains the same and logs the fractions;
* from a store, with OA-Crop and BG-Mixup on, it trains a few steps with finite losses and weights.

Plus multi-crop (the object-aware step on every view), the DALI pipeline, and the ViT constructors
solo-learn main picks by method name. Each family's representative (``table.FAMILIES``) is unmarked; the
other methods carry ``@pytest.mark.slow`` (``-m "not slow"`` skips them; ``./run test`` runs all).
"""
import math

import pytest
import torch

from occon_plugin import host
from occon_plugin.augment.dataset import build_pretrain_dataloader
from occon_plugin.methods import PARENT_METHOD

B = 4


def fixed_loader(kit, cfg, with_info=False):
    """One batch per epoch: two steps also run the per-epoch hooks (DeepClusterV2's k-means, DINO's
    teacher temperature, SwAV's prototype freezing) between them."""
    dataset = kit.FixedBatches(B, kit.view_shapes(cfg), with_info=with_info)
    return torch.utils.data.DataLoader(dataset, batch_size=B)


def as_parent(cfg, occon_method):
    """The same cfg for the parent method (solo-learn main picks ViT constructors by ``cfg.method``)."""
    cfg = cfg.copy()
    cfg.method = PARENT_METHOD[occon_method]
    return cfg


def assert_same(ours, theirs):
    """Equal step by step (NaN where the parent has NaN: DeepClusterV2's first epoch has no cluster
    assignments yet, so solo-learn's loss is 0/0 there by design)."""
    torch.testing.assert_close(torch.tensor(ours), torch.tensor(theirs), rtol=0, atol=1e-6, equal_nan=True)


def test_same_as_parent_and_the_object_aware_record_changes_nothing(kit, occon_method, tmp_path):
    cfg = kit.tiny_cfg(occon_method, tmp_path, batch_size=B)  # occon.enabled: false
    theirs, _, _ = kit.fit(PARENT_METHOD[occon_method], as_parent(cfg, occon_method), fixed_loader(kit, cfg))
    ours, _, _ = kit.fit(occon_method, cfg, fixed_loader(kit, cfg))
    assert len(ours) == 2  # two optimizer steps: every hook (momentum, queues, prototypes) ran in between
    assert_same(ours, theirs)
    assert ours[0] != ours[1]  # the weights changed after a step
    assert math.isfinite(ours[-1])
    # the same batches carrying the pipelines' record (4th element): same losses, fractions logged
    with_info, trainer, _ = kit.fit(occon_method, cfg, fixed_loader(kit, cfg, with_info=True))
    assert_same(with_info, theirs)
    logged = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("occon/")}
    n_views = len(kit.view_shapes(cfg))
    assert logged["occon/oa_crop_frac_epoch"] == pytest.approx(1.0)
    assert logged["occon/bg_mixed_frac_epoch"] == pytest.approx(0.5 / n_views)  # view 0 of every other sample


def test_trains_with_oa_crop_and_bg_mixup_from_a_store(kit, occon_method, photo_store):
    data, store = photo_store
    cfg = kit.tiny_cfg(occon_method, data, batch_size=B, store=store, p_mix=0.5)
    loader = build_pretrain_dataloader(cfg)
    losses, trainer, model = kit.fit(occon_method, cfg, loader, steps=3)  # 2 batches per epoch: 2 epochs
    assert len(losses) == 3 and math.isfinite(losses[-1]), losses
    if PARENT_METHOD[occon_method] != "deepclusterv2":  # (no cluster assignments in its first epoch: NaN)
        assert all(math.isfinite(loss) for loss in losses), losses
    logged = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("occon/")}
    assert logged["occon/oa_crop_frac_epoch"] == pytest.approx(1.0)  # every image has a box
    assert 0.0 < logged["occon/bg_mixed_frac_epoch"] < 1.0  # p_mix 0.5 over 3 x 4 x n_views views
    assert all(torch.isfinite(p).all() for p in host.backbone_of(model).parameters())


# Multi-crop: a method whose host class consumes small crops (solo-learn main: SwAV's multicrop_forward;
# 1.0.2: BYOL, whose loss runs over every view).
MULTI_CROP_METHOD = "swav_occon" if host.GENERATION == "main" else "byol_occon"


def test_multi_crop_gets_the_object_aware_step_on_every_view(kit, photo_store, tmp_path):
    data, store = photo_store
    plain = kit.tiny_cfg(MULTI_CROP_METHOD, tmp_path, batch_size=B, small_crops=2)
    assert (plain.data.num_large_crops, plain.data.num_small_crops) == (2, 2)
    ours, _, _ = kit.fit(MULTI_CROP_METHOD, plain, fixed_loader(kit, plain))
    theirs, _, _ = kit.fit(PARENT_METHOD[MULTI_CROP_METHOD], as_parent(plain, MULTI_CROP_METHOD),
                           fixed_loader(kit, plain))
    assert_same(ours, theirs)

    cfg = kit.tiny_cfg(MULTI_CROP_METHOD, data, batch_size=B, small_crops=2, store=store, p_mix=1.0)
    loader = build_pretrain_dataloader(cfg)
    _, views, _, info = next(iter(loader))
    assert [tuple(v.shape) for v in views] == [(B, 3, 32, 32)] * 2 + [(B, 3, 16, 16)] * 2
    assert info["oa_crop"].all()  # one OA-Crop per image, every view cut from it
    assert info["mixed"].shape == (B, 4) and info["mixed"].all()  # p_mix 1: small crops mixed too
    losses, trainer, _ = kit.fit(MULTI_CROP_METHOD, cfg, loader, steps=2)
    assert all(math.isfinite(loss) for loss in losses), losses
    assert float(trainer.callback_metrics["occon/bg_mixed_frac_epoch"]) == pytest.approx(1.0)


VIT_BY_METHOD = ("mae_occon", "mocov3_occon")  # solo-learn main builds their own ViT variants by method name


@pytest.mark.parametrize("name", [m for m in VIT_BY_METHOD if m in PARENT_METHOD])
def test_vit_backbone_is_the_parents_own(kit, name, tmp_path):
    cfg = kit.tiny_cfg(name, tmp_path, batch_size=B)
    cfg.backbone = {"name": "vit_tiny", "kwargs": {"img_size": kit.LARGE, "patch_size": 8}}
    ours = host.build_method(name, cfg)
    theirs = host.build_method(PARENT_METHOD[name], as_parent(cfg, name))
    assert type(host.backbone_of(ours)) is type(host.backbone_of(theirs))
    assert cfg.method == name  # restored after the parent's __init__


@pytest.mark.parametrize("name,small_crops", [
    pytest.param(MULTI_CROP_METHOD, 2, id=f"{MULTI_CROP_METHOD}-multicrop"),
    # DeepClusterV2 sizes its assignment memory by len(trainer.train_dataloader.dataset)
    pytest.param("deepclusterv2_occon", 0, id="deepclusterv2_occon", marks=pytest.mark.slow),
])
def test_dali_pipeline_feeds_the_method(kit, photo_store, name, small_crops):
    pytest.importorskip("nvidia.dali")
    from occon_plugin.augment.dali import build_dali_datamodule

    data, store = photo_store
    cfg = kit.tiny_cfg(name, data, batch_size=B, small_crops=small_crops, store=store, p_mix=1.0)
    cfg.data.format, cfg.dali = "dali", {"device": "cpu"}
    losses, trainer, _ = kit.fit(name, cfg, None, steps=3, datamodule=build_dali_datamodule(cfg))
    assert len(losses) == 3 and math.isfinite(losses[-1]), losses  # (DeepClusterV2: NaN in epoch 0, see above)
    logged = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("occon/")}
    assert logged["occon/oa_crop_frac_epoch"] == 1.0 and logged["occon/bg_mixed_frac_epoch"] == 1.0  # every view
