"""The shared semantic suite of the object-aware augmentations, run for every pipeline.

Contract (what a pipeline must provide to join the suite)
---------------------------------------------------------
A factory ``factory(occon: dict, standard: str, n_views: int) -> sample_views`` registered in
``PIPELINE_FACTORIES`` below, where

    sample_views(image, entry, mask, partner, seed) -> (views, info)

* ``image``: ``H x W x 3`` uint8 numpy; ``entry``: ``occon_plugin.store.StoreEntry`` (``.boxes``
  normalized ``[x1, y1, x2, y2]``) or None; ``mask``: ``H x W`` float32 in [0, 1] or None;
  ``partner``: ``occon_plugin.augment.semantics.Partner`` (``.bg_rect`` pixel rectangle of the
  partner image or None, ``.background(h, w)`` = bg(x2) tiled) or None; ``seed``: int.
* ``views``: list of ``n_views`` float32 tensors ``3 x h x w``; ``info``: dict of bool tensors
  ``"oa_crop"`` (scalar), ``"mixed"`` ``(n_views,)``, ``"mix_skipped"`` ``(n_views,)``.
* The object-aware decisions must come from ``occon_plugin.augment.semantics.plan_sample``
  (same seed -> same box, same mixed views in every pipeline).
* ``standard`` names the per-view augmentation that follows the object-aware step:
  - ``"identity"``: none; the view is the object-aware image itself, values 0..255, no resize.
  - ``"rrc_nearest"``: RandomResizedCrop(32, scale=(0.08, 1), ratio=(3/4, 4/3)) with NEAREST
    interpolation, values 0..255 (so every output pixel is a source pixel).
  - ``"host"``: the pipeline's real standard augmentations for ``HOST_AUG`` (MoCo v2 style,
    crop 64, normalized); only shape, finiteness and determinism are checked.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torchvision.transforms import v2

from occon_plugin.augment.config import OcconConfigError, parse_occon_config
from occon_plugin.augment.semantics import Partner, box_to_pixels, choose_partner, plan_sample, sample_seed
from occon_plugin.store import StoreEntry, mask_from_u8, mask_to_u8

RRC_SIZE = 32
HOST_SIZE = 64
HOST_AUG = {"rrc": {"enabled": True, "crop_min_scale": 0.08, "crop_max_scale": 1.0},
            "color_jitter": {"prob": 0.8, "brightness": 0.4, "contrast": 0.4, "saturation": 0.4, "hue": 0.1},
            "grayscale": {"prob": 0.2}, "gaussian_blur": {"prob": 0.5, "sigma_min": 0.1, "sigma_max": 2.0},
            "solarization": {"prob": 0.0}, "equalization": {"prob": 0.0}, "horizontal_flip": {"prob": 0.5},
            "crop_size": HOST_SIZE, "num_crops": 2}


# ----------------------------------------------------------------------------------------------
# Pipeline factories
# ----------------------------------------------------------------------------------------------
def _torchvision_factory(occon: dict, standard: str, n_views: int):
    from occon_plugin.augment.torchvision_pipeline import TorchvisionObjectAware

    if standard == "identity":
        transform = v2.Compose([v2.PILToTensor(), v2.ToDtype(torch.float32)])
    elif standard == "rrc_nearest":
        transform = v2.Compose([v2.PILToTensor(),
                                v2.RandomResizedCrop(RRC_SIZE, scale=(0.08, 1.0),
                                                     interpolation=v2.InterpolationMode.NEAREST),
                                v2.ToDtype(torch.float32)])
    elif standard == "host":
        from omegaconf import OmegaConf

        from occon_plugin.host import build_view_transform

        transform = build_view_transform(OmegaConf.create(HOST_AUG))
    else:
        raise ValueError(standard)
    cfg = parse_occon_config(occon, n_views=n_views, check_store=False)
    return TorchvisionObjectAware(cfg, [transform] * n_views).sample_views


def _dali_factory(occon: dict, standard: str, n_views: int):
    from occon_plugin.augment.dali.single import semantic_suite_sample_views

    return semantic_suite_sample_views(occon, standard, n_views, rrc_size=RRC_SIZE, host_aug=HOST_AUG)


PIPELINE_FACTORIES = {"torchvision": _torchvision_factory, "dali": _dali_factory}


@pytest.fixture(params=sorted(PIPELINE_FACTORIES))
def make_views(request):
    """``make_views(occon, standard="identity", n_views=2) -> sample_views`` for one pipeline."""
    factory = PIPELINE_FACTORIES[request.param]

    def make(occon: dict, standard: str = "identity", n_views: int = 2):
        return factory(occon, standard, n_views)

    return make


# ----------------------------------------------------------------------------------------------
# Constructed inputs with hand-checkable answers
# ----------------------------------------------------------------------------------------------
def coordinate_image(height: int, width: int) -> np.ndarray:
    """Pixel (y, x) holds (x, y, 7): a view's pixels tell where in the source they came from."""
    assert height <= 256 and width <= 256
    image = np.zeros((height, width, 3), np.uint8)
    image[..., 0] = np.arange(width, dtype=np.uint8)[None, :]
    image[..., 1] = np.arange(height, dtype=np.uint8)[:, None]
    image[..., 2] = 7
    return image


def patterned_partner(height: int = 30, width: int = 40) -> np.ndarray:
    """A partner image whose every pixel differs from coordinate_image's (channel 2 is 100+)."""
    yy, xx = np.mgrid[0:height, 0:width]
    return np.stack([(3 * xx + 5) % 256, (7 * yy + 11) % 256, 100 + (xx + yy) % 100], axis=-1).astype(np.uint8)


OCCON_OA = {"oa_crop": {"enabled": True}}
OCCON_MIX = {"bg_mixup": {"enabled": True, "p_mix": 1.0}}


def to_hwc(view: torch.Tensor) -> np.ndarray:
    return view.permute(1, 2, 0).numpy()


# ----------------------------------------------------------------------------------------------
# OA-Crop
# ----------------------------------------------------------------------------------------------
def test_oa_crop_windows_lie_inside_one_box_shared_by_both_views(make_views):
    sample_views = make_views(OCCON_OA, "rrc_nearest")
    height, width = 160, 200
    image = coordinate_image(height, width)
    boxes = [[0.05, 0.10, 0.35, 0.50], [0.55, 0.50, 0.95, 0.90]]  # disjoint
    rects = [box_to_pixels(b, width, height) for b in boxes]
    entry = StoreEntry("a.jpg", width, height, boxes=boxes)
    chosen = []
    for seed in range(60):
        views, info = sample_views(image, entry, None, None, seed)
        assert bool(info["oa_crop"])
        assert all(v.shape == (3, RRC_SIZE, RRC_SIZE) for v in views)
        inside = []
        for left, top, right, bottom in rects:
            inside.append(all(
                (to_hwc(v)[..., 0] >= left).all() and (to_hwc(v)[..., 0] < right).all()
                and (to_hwc(v)[..., 1] >= top).all() and (to_hwc(v)[..., 1] < bottom).all()
                for v in views))
        assert sum(inside) == 1, f"seed {seed}: views are not both inside exactly one box"
        chosen.append(inside.index(True))
    # each box is chosen with probability 1/2: 60 draws, P(count < 15) < 1e-4
    assert 15 <= sum(chosen) <= 45, chosen


def test_oa_crop_no_boxes_or_no_entry_gives_the_full_image(make_views):
    sample_views = make_views(OCCON_OA, "identity")
    image = coordinate_image(24, 36)
    for entry in (StoreEntry("a.jpg", 36, 24, boxes=[]), None):
        views, info = sample_views(image, entry, None, None, 3)
        assert not bool(info["oa_crop"])
        for view in views:
            np.testing.assert_array_equal(to_hwc(view), image)


def test_oa_crop_identity_view_is_exactly_the_box(make_views):
    sample_views = make_views(OCCON_OA, "identity")
    image = coordinate_image(40, 50)
    entry = StoreEntry("a.jpg", 50, 40, boxes=[[0.1, 0.25, 0.5, 0.8]])
    views, _ = sample_views(image, entry, None, None, 0)
    # x: floor(5.0)=5 .. ceil(25.0)=25; y: floor(10.0)=10 .. ceil(32.0)=32
    for view in views:
        np.testing.assert_array_equal(to_hwc(view), image[10:32, 5:25])


# ----------------------------------------------------------------------------------------------
# BG-Mixup / BG-HardMix
# ----------------------------------------------------------------------------------------------
def _mask_with_levels(height: int, width: int) -> np.ndarray:
    mask = np.zeros((height, width), np.float32)
    mask[4:12, 6:20] = 1.0      # object
    mask[12:16, 6:20] = 0.5     # soft edge
    mask[16:18, 6:20] = 0.1     # weak
    mask[18:20, 6:20] = 0.3
    return mask


def test_bg_mixup_keeps_object_where_mask_is_one_and_tiles_background_where_zero(make_views):
    sample_views = make_views(OCCON_MIX, "identity")
    height, width = 24, 30
    image = coordinate_image(height, width)
    mask = _mask_with_levels(height, width)
    partner_image = patterned_partner()
    partner = Partner.from_image(partner_image, bg_rect=[10, 5, 17, 10])  # 7 wide, 5 high
    patch = partner_image[5:10, 10:17].astype(np.float64)
    tiled = np.tile(patch, (5, 5, 1))[:height, :width]  # hand tiling from the top-left corner
    views, info = sample_views(image, StoreEntry("a.jpg", width, height), mask, partner, 1)
    assert info["mixed"].tolist() == [True, True] and not info["mix_skipped"].any()
    expected = np.rint(mask[..., None] * image + (1 - mask[..., None]) * tiled)
    for view in views:
        got = to_hwc(view)
        np.testing.assert_array_equal(got[mask == 1], image[mask == 1])
        np.testing.assert_array_equal(got[mask == 0], tiled[mask == 0])
        np.testing.assert_allclose(got, expected, atol=1)  # soft levels: rounding may differ by 1


def test_bg_hardmix_binarizes_the_mask(make_views):
    sample_views = make_views({"bg_mixup": {"enabled": True, "p_mix": 1.0, "hard": True, "hard_threshold": 0.2}})
    height, width = 24, 30
    image = coordinate_image(height, width)
    mask = _mask_with_levels(height, width)
    partner_image = patterned_partner()
    partner = Partner.from_image(partner_image, bg_rect=[0, 0, 40, 30])
    views, _ = sample_views(image, StoreEntry("a.jpg", width, height), mask, partner, 2)
    keep = mask >= 0.2  # 1.0, 0.5 and 0.3 -> object; 0.1 and 0 -> background
    for view in views:
        got = to_hwc(view)
        np.testing.assert_array_equal(got[keep], image[keep])
        np.testing.assert_array_equal(got[~keep], partner_image[:height, :width][~keep])


def test_oa_crop_then_bg_mixup_tiles_from_the_crop_corner(make_views):
    sample_views = make_views({**OCCON_OA, **OCCON_MIX}, "identity")
    height, width = 40, 50
    image = coordinate_image(height, width)
    mask = np.zeros((height, width), np.float32)
    mask[15:20, 10:15] = 1.0
    entry = StoreEntry("a.jpg", width, height, boxes=[[0.1, 0.25, 0.5, 0.8]])  # pixels x 5..25, y 10..32
    partner_image = patterned_partner()
    partner = Partner.from_image(partner_image, bg_rect=[0, 0, 3, 4])
    views, info = sample_views(image, entry, mask, partner, 0)
    assert bool(info["oa_crop"]) and info["mixed"].all()
    crop_img, crop_mask = image[10:32, 5:25], mask[10:32, 5:25]
    tiled = tile_reference(partner_image[0:4, 0:3], *crop_mask.shape)
    expected = np.where(crop_mask[..., None] == 1, crop_img, tiled)
    for view in views:
        np.testing.assert_array_equal(to_hwc(view), expected)


def tile_reference(patch: np.ndarray, height: int, width: int) -> np.ndarray:
    ys, xs = np.arange(height) % patch.shape[0], np.arange(width) % patch.shape[1]
    return patch[ys[:, None], xs[None, :]]


def test_partner_without_background_or_sample_without_mask_stays_unmixed(make_views):
    sample_views = make_views(OCCON_MIX, "identity")
    image = coordinate_image(20, 20)
    mask = np.full((20, 20), 0.5, np.float32)
    no_bg = Partner.from_image(patterned_partner(), bg_rect=None)
    empty_bg = Partner.from_image(patterned_partner(), bg_rect=[50, 50, 60, 60])  # outside the partner image
    cases = [(mask, no_bg), (mask, None), (None, Partner.from_image(patterned_partner(), [0, 0, 5, 5])),
             (mask, empty_bg)]
    for m, partner in cases:
        views, info = sample_views(image, StoreEntry("a.jpg", 20, 20), m, partner, 5)
        assert not info["mixed"].any()
        assert info["mix_skipped"].all()  # p_mix = 1: both views drew a mix and could not do it
        for view in views:
            np.testing.assert_array_equal(to_hwc(view), image)


def test_p_mix_is_honoured_per_view_independently(make_views):
    p_mix, n = 0.4, 400
    sample_views = make_views({"bg_mixup": {"enabled": True, "p_mix": p_mix}}, "identity")
    image = coordinate_image(6, 6)
    mask = np.zeros((6, 6), np.float32)
    partner = Partner.from_image(patterned_partner(), bg_rect=[0, 0, 6, 6])
    mixed = []
    for seed in range(n):
        views, info = sample_views(image, StoreEntry("a.jpg", 6, 6), mask, partner, seed)
        flags = info["mixed"].tolist()
        # the flag tells the truth: mask 0 -> a mixed view is all partner background
        for view, flag in zip(views, flags):
            assert np.array_equal(to_hwc(view), image) != flag
        mixed.append(flags)
    mixed = np.array(mixed)
    sd = np.sqrt(n * p_mix * (1 - p_mix))
    for k in range(2):  # 4.5 standard deviations: a false alarm once in ~150k runs
        assert abs(mixed[:, k].sum() - n * p_mix) < 4.5 * sd, mixed[:, k].sum()
    both = (mixed[:, 0] & mixed[:, 1]).sum()
    sd_both = np.sqrt(n * p_mix**2 * (1 - p_mix**2))
    assert abs(both - n * p_mix**2) < 4.5 * sd_both, both


def test_only_the_configured_views_are_mixed(make_views):
    sample_views = make_views({"bg_mixup": {"enabled": True, "p_mix": 1.0, "views": [1]}}, "identity")
    image = coordinate_image(8, 8)
    partner = Partner.from_image(patterned_partner(), bg_rect=[0, 0, 8, 8])
    views, info = sample_views(image, StoreEntry("a.jpg", 8, 8), np.zeros((8, 8), np.float32), partner, 0)
    assert info["mixed"].tolist() == [False, True]
    np.testing.assert_array_equal(to_hwc(views[0]), image)
    np.testing.assert_array_equal(to_hwc(views[1]), patterned_partner()[:8, :8])



def test_each_mixed_view_takes_its_own_donors_background(make_views):
    """Per-view donors (a positive pair must not share a background): view k is mixed with donor k."""
    sample_views = make_views(OCCON_MIX, "identity")
    image = coordinate_image(8, 8)
    donor_a, donor_b = patterned_partner(), 255 - patterned_partner()
    partners = (Partner.from_image(donor_a, bg_rect=[0, 0, 8, 8]), Partner.from_image(donor_b, bg_rect=[2, 3, 10, 11]))
    views, info = sample_views(image, StoreEntry("a.jpg", 8, 8), np.zeros((8, 8), np.float32), partners, 0)
    assert info["mixed"].tolist() == [True, True]
    np.testing.assert_array_equal(to_hwc(views[0]), donor_a[:8, :8])
    np.testing.assert_array_equal(to_hwc(views[1]), donor_b[3:11, 2:10])
    # view 1's donor has no background: only view 1 stays unmixed (and says so)
    partners = (partners[0], Partner.from_image(donor_b, bg_rect=None))
    views, info = sample_views(image, StoreEntry("a.jpg", 8, 8), np.zeros((8, 8), np.float32), partners, 0)
    assert info["mixed"].tolist() == [True, False] and info["mix_skipped"].tolist() == [False, True]
    np.testing.assert_array_equal(to_hwc(views[1]), image)

# ----------------------------------------------------------------------------------------------
# Determinism, real photos
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("standard", ["rrc_nearest", "host"])
def test_deterministic_under_a_seed(make_views, standard):
    sample_views = make_views({**OCCON_OA, "bg_mixup": {"enabled": True, "p_mix": 0.5}}, standard)
    image = coordinate_image(60, 80)
    mask = np.zeros((60, 80), np.float32)
    mask[10:40, 10:50] = 0.8
    entry = StoreEntry("a.jpg", 80, 60, boxes=[[0.1, 0.1, 0.6, 0.7], [0.4, 0.3, 1.0, 1.0]])
    partner = Partner.from_image(patterned_partner(), bg_rect=[0, 0, 9, 9])
    first = [sample_views(image, entry, mask, partner, seed) for seed in range(6)]
    again = [sample_views(image, entry, mask, partner, seed) for seed in range(6)]
    for (views_a, info_a), (views_b, info_b) in zip(first, again):
        for a, b in zip(views_a, views_b):
            assert torch.equal(a, b)
        assert all(torch.equal(info_a[k], info_b[k]) for k in ("oa_crop", "mixed", "mix_skipped"))
    assert not torch.equal(first[0][0][0], first[1][0][0]), "different seeds gave the same view"


def test_real_photos_mix_exactly_and_host_views_are_well_formed(make_views):
    skdata = pytest.importorskip("skimage.data")
    photo, donor = skdata.astronaut(), skdata.coffee()  # 512x512, 400x600 real photos
    height, width = photo.shape[:2]
    yy, xx = np.mgrid[0:height, 0:width]
    mask = np.clip(1.5 - np.hypot((xx - 250) / 110, (yy - 200) / 150), 0, 1).astype(np.float32)  # soft face blob
    mask = mask_from_u8(mask_to_u8(mask))  # as stored (8-bit PNG): what both pipelines read
    entry = StoreEntry("astronaut.png", width, height, boxes=[[0.2, 0.05, 0.8, 0.8]], bg_rect=[0, 0, 60, 60])
    partner = Partner.from_image(donor, bg_rect=[400, 0, 600, 120])

    views, info = make_views(OCCON_MIX, "identity")(photo, entry, mask, partner, 11)
    tiled = tile_reference(donor[0:120, 400:600].astype(np.float64), height, width)
    expected = mask[..., None] * photo + (1 - mask[..., None]) * tiled
    for view in views:
        np.testing.assert_allclose(to_hwc(view), expected, atol=1.0)  # uint8: rounded or truncated

    views, info = make_views({**OCCON_OA, "bg_mixup": {"enabled": True, "p_mix": 0.4}}, "host")(
        photo, entry, mask, partner, 11)
    assert bool(info["oa_crop"])
    for view in views:
        assert view.shape == (3, HOST_SIZE, HOST_SIZE) and view.dtype == torch.float32
        assert torch.isfinite(view).all() and view.std() > 0.05


# ----------------------------------------------------------------------------------------------
# Shared helpers and config (pipeline-independent)
# ----------------------------------------------------------------------------------------------
def test_box_to_pixels_covers_the_box_and_stays_in_the_image():
    assert box_to_pixels([0.1, 0.25, 0.5, 0.8], 50, 40) == (5, 10, 25, 32)
    assert box_to_pixels([0.101, 0.0, 0.499, 1.0], 50, 40) == (5, 0, 25, 40)
    assert box_to_pixels([-0.2, -0.1, 1.3, 1.2], 50, 40) == (0, 0, 50, 40)
    assert box_to_pixels([0.5, 0.5, 0.5, 0.5], 50, 40) == (25, 20, 26, 21)  # degenerate -> 1 pixel
    assert box_to_pixels([1.0, 1.0, 1.0, 1.0], 50, 40) == (49, 39, 50, 40)


def test_partner_background_tiles_its_rectangle_from_the_corner():
    image = np.zeros((6, 8, 3), np.uint8)
    image[1:3, 2:5, 0] = np.arange(6, dtype=np.uint8).reshape(2, 3)  # the rectangle x 2..5, y 1..3
    out = Partner.from_image(image, bg_rect=[2, 1, 5, 3]).background(5, 7)[..., 0]
    assert out.shape == (5, 7)
    assert out[0].tolist() == [0, 1, 2, 0, 1, 2, 0]
    assert out[:, 0].tolist() == [0, 3, 0, 3, 0]
    assert Partner.from_image(image, bg_rect=[6, 0, 9, 2]).background(5, 7).shape == (5, 7, 3)  # clipped to x 6..8
    assert Partner.from_image(image, bg_rect=[9, 0, 12, 2]).background(5, 7) is None  # outside the image
    assert Partner(bg_rect=[0, 0, 2, 2], load_image=lambda: None).background(5, 7) is None  # unreadable


def test_choose_partner_is_another_sample_with_a_background_uniformly():
    candidates = np.array([2, 5, 7, 9])
    picks = [choose_partner(seed, 5, candidates) for seed in range(600)]
    assert set(picks) == {2, 7, 9}
    counts = np.bincount(picks, minlength=10)[[2, 7, 9]]
    assert (abs(counts - 200) < 4.5 * np.sqrt(600 * (1 / 3) * (2 / 3))).all(), counts
    assert choose_partner(0, 3, candidates) in {2, 5, 7, 9}
    assert choose_partner(0, 5, np.array([5])) is None and choose_partner(0, 1, np.array([], dtype=int)) is None
    assert choose_partner(4, 5, candidates) == choose_partner(4, 5, candidates)


def test_each_view_draws_its_donor_from_its_own_stream():
    """View 0 keeps the stream [seed, 1]; view v > 0 draws from [seed, 1, v]: the two views of a sample
    get independent donors (equal only by chance, 1 / pool), each uniform over the other samples."""
    candidates = np.arange(10)
    n = 1000
    view0 = np.array([choose_partner(seed, 3, candidates, 0) for seed in range(n)])
    view1 = np.array([choose_partner(seed, 3, candidates, 1) for seed in range(n)])
    assert view0.tolist() == [choose_partner(seed, 3, candidates) for seed in range(n)]
    assert 3 not in view1 and set(view1.tolist()) == set(range(10)) - {3}
    same, p_same = int((view0 == view1).sum()), 1 / 9
    assert abs(same - n * p_same) < 4.5 * np.sqrt(n * p_same * (1 - p_same)), same
    with pytest.raises(ValueError, match="view"):
        choose_partner(0, 3, candidates, -1)


def test_plan_draws_are_shared_and_stable():
    cfg = parse_occon_config({**OCCON_OA, "bg_mixup": {"enabled": True, "p_mix": 0.5}}, check_store=False)
    boxes = [[0, 0, 0.5, 0.5], [0.5, 0.5, 1, 1], [0, 0.5, 0.5, 1]]
    plans = [plan_sample(s, cfg, 2, 100, 80, boxes, True, True) for s in range(300)]
    assert plans[7] == plan_sample(7, cfg, 2, 100, 80, boxes, True, True)
    assert {p.box_index for p in plans} == {0, 1, 2}
    assert len({p.transform_seed for p in plans}) == 300
    # no mask -> drawn but skipped
    plan = plan_sample(0, parse_occon_config(OCCON_MIX, check_store=False), 2, 10, 10, (), False, True)
    assert plan.drawn == (True, True) and plan.mixed == (False, False) and plan.mix_skipped == (True, True)
    assert sample_seed(0, 1) != sample_seed(0, 2) and sample_seed(0, 1) == sample_seed(0, 1)


@pytest.mark.parametrize("occon, message", [
    ({"bg_mixup": {"enabled": True, "p_mix": 1.5}}, "occon.bg_mixup.p_mix=1.5 must be in [0, 1]"),
    ({"bg_mixup": {"enabled": True, "views": [0, 2]}}, "occon.bg_mixup.views=[0, 2]"),
    ({"bg_mixup": {"enabled": True, "hard_threshold": -1}}, "occon.bg_mixup.hard_threshold=-1"),
    ({"bg_mixup": {"enabled": True, "pmix": 0.3}}, "occon.bg_mixup.pmix"),
    ({"oa_crop": {"enabled": True}, "missing": "ignore"}, "occon.missing='ignore'"),
    ({"oa_crop": {"enabled": True}}, "occon.store is required"),
    ({"oa_crop": {"enabled": True}, "store": "no/such/store/dir"}, "occon.store=no/such/store/dir does not exist"),
    ({"oa_crop": {"enabled": "yes"}, "store": "."}, "occon.oa_crop.enabled='yes'"),
])
def test_config_errors_name_the_key(occon, message):
    with pytest.raises(OcconConfigError) as err:
        parse_occon_config(occon, n_views=2)
    assert message in str(err.value)


def test_config_defaults_and_off_switches(tmp_path):
    cfg = parse_occon_config({"store": str(tmp_path), "oa_crop": {"enabled": True},
                              "bg_mixup": {"enabled": True}}, n_views=2)
    assert cfg.active and cfg.oa_crop and cfg.bg_mixup.p_mix == 0.4 and cfg.bg_mixup.hard_threshold == 0.2
    assert cfg.bg_mixup.views == (0, 1) and cfg.missing == "error"
    assert not parse_occon_config(None).active
    assert not parse_occon_config({"enabled": False, "oa_crop": {"enabled": True}}).active
    assert not parse_occon_config({"oa_crop": {"enabled": False}}).active  # no store needed when off
