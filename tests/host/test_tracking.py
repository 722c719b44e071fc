"""W&B: on by config, offline automatically when no API key is configured, files under the run dir."""
from omegaconf import OmegaConf

from occon_plugin.tracking import wandb_offline
from occon_plugin.train.tracking import make_wandb_logger


def _no_wandb_environment(monkeypatch):
    # the user's W&B environment decides first (tests/robustness/test_wandb.py); Lightning's WandbLogger(offline=True)
    # of an earlier test sets WANDB_MODE in this process
    for key in ("WANDB_MODE", "WANDB_DISABLED", "WANDB_DIR"):
        monkeypatch.delenv(key, raising=False)


def test_offline_without_api_key(monkeypatch, tmp_path):
    _no_wandb_environment(monkeypatch)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc from `wandb login`
    assert wandb_offline(OmegaConf.create({"wandb": {"enabled": True}}))
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert not wandb_offline(OmegaConf.create({"wandb": {"enabled": True}}))
    # an explicit setting wins either way
    assert wandb_offline(OmegaConf.create({"wandb": {"enabled": True, "offline": True}}))


def test_netrc_login_counts_as_a_key(monkeypatch, tmp_path):
    _no_wandb_environment(monkeypatch)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    netrc = tmp_path / ".netrc"
    netrc.write_text("machine api.wandb.ai\n  login user\n  password " + "k" * 40 + "\n")
    netrc.chmod(0o600)
    assert not wandb_offline(OmegaConf.create({"wandb": {"enabled": True}}))


def test_disabled_gives_no_logger(tmp_path):
    assert make_wandb_logger(OmegaConf.create({"wandb": {"enabled": False}}), tmp_path) is None


def test_real_offline_run_files_land_in_the_run_dir(monkeypatch, tmp_path):
    _no_wandb_environment(monkeypatch)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    cfg = OmegaConf.create({"name": "t", "wandb": {"enabled": True, "project": "occon-test"}})
    logger = make_wandb_logger(cfg, tmp_path / "run")
    logger.log_metrics({"x": 1.0})
    logger.experiment.finish()
    runs = list((tmp_path / "run" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and any(runs[0].rglob("*.wandb"))


def _store_and_images(tmp_path):
    import numpy as np
    from PIL import Image

    from occon_plugin.store import StoreEntry, StoreWriter, mask_to_u8

    images = tmp_path / "images"
    images.mkdir()
    writer = StoreWriter(tmp_path / "store", settings={"test": "tracking"}, model_hash="none", resume=False)
    for i in range(3):
        pixels = np.zeros((32, 48, 3), np.uint8)
        pixels[8:24, 12:36] = (200, 40 * i, 90)
        Image.fromarray(pixels).save(images / f"{i}.png")
        mask = np.zeros((32, 48), np.float32)
        mask[8:24, 12:36] = 1.0
        writer.write(StoreEntry(f"{i}.png", 48, 32, boxes=[[0.25, 0.25, 0.75, 0.75]], bg_rect=[0, 0, 48, 8]),
                     mask_to_u8(mask))
    writer.close(listed=3)
    return images, tmp_path / "store"


def test_augmentation_examples_draw_the_oa_crop_and_flag_the_mixed_views(tmp_path):
    import numpy as np

    from occon_plugin.augment.dataset import OcconPretrainDataset, build_view_transforms
    from occon_plugin.train.tracking import CROP_COLOR, augmentation_examples

    images, store = _store_and_images(tmp_path)
    aug = [{"crop_size": 24, "num_crops": 2, "rrc": {"enabled": True, "crop_min_scale": 0.5, "crop_max_scale": 1.0}}]
    dataset = OcconPretrainDataset(images, {"store": str(store), "oa_crop": True,
                                            "bg_mixup": {"enabled": True, "p_mix": 1.0}},
                                   build_view_transforms(aug), seed=1)
    examples = augmentation_examples(dataset, n=2, height=64)
    assert len(examples) == 2
    for picture, caption in examples:
        assert picture.shape[0] == 64 and picture.dtype == np.uint8
        assert "OA-Crop: box 0" in caption and caption.count("BG-mixed") == 2  # p_mix 1: both views mixed
        colours = {tuple(int(v) for v in c) for c in picture.reshape(-1, 3)}
        assert CROP_COLOR in colours  # the OA-Crop rectangle (drawn over the yellow store box, same place)


def test_localize_run_logs_counts_and_overlays_offline(monkeypatch, tmp_path):
    from types import SimpleNamespace

    from occon_plugin.tracking import log_localize_run, split_wandb_settings

    _no_wandb_environment(monkeypatch)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    images, store = _store_and_images(tmp_path)
    rest, wandb_cfg = split_wandb_settings(OmegaConf.create({"data": {"path": str(images)},
                                                             "wandb": {"enabled": True, "project": "occon-test"}}))
    assert "wandb" not in rest and rest.data.path == str(images)
    summary = {"store": str(store), "listed": 3, "seconds": 1.0,
               "manifest": {"counts": {"ok": 3, "skipped": 0}}}
    run_dir = log_localize_run(wandb_cfg, summary, SimpleNamespace(path=str(images), image_root=None))
    assert run_dir is not None and run_dir.parent == store / "wandb"
    overlays = list(run_dir.glob("files/media/images/localize/overlays*"))
    assert len(overlays) == 3
    assert log_localize_run(None, summary, SimpleNamespace(path=str(images), image_root=None)) is None

