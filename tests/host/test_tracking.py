"""W&B: on by config, offline automatically when no API key is configured, files under the run dir."""
from omegaconf import OmegaConf

from occon_plugin.tracking import make_wandb_logger, wandb_offline


def test_offline_without_api_key(monkeypatch, tmp_path):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc from `wandb login`
    assert wandb_offline(OmegaConf.create({"wandb": {"enabled": True}}))
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert not wandb_offline(OmegaConf.create({"wandb": {"enabled": True}}))
    # an explicit setting wins either way
    assert wandb_offline(OmegaConf.create({"wandb": {"enabled": True, "offline": True}}))


def test_netrc_login_counts_as_a_key(monkeypatch, tmp_path):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    netrc = tmp_path / ".netrc"
    netrc.write_text("machine api.wandb.ai\n  login user\n  password " + "k" * 40 + "\n")
    netrc.chmod(0o600)
    assert not wandb_offline(OmegaConf.create({"wandb": {"enabled": True}}))


def test_disabled_gives_no_logger(tmp_path):
    assert make_wandb_logger(OmegaConf.create({"wandb": {"enabled": False}}), tmp_path) is None


def test_real_offline_run_files_land_in_the_run_dir(monkeypatch, tmp_path):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    cfg = OmegaConf.create({"name": "t", "wandb": {"enabled": True, "project": "occon-test"}})
    logger = make_wandb_logger(cfg, tmp_path / "run")
    logger.log_metrics({"x": 1.0})
    logger.experiment.finish()
    runs = list((tmp_path / "run" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and any(runs[0].rglob("*.wandb"))
