"""Images the pretraining dataset drops at start-up are reported where the user sees them.

Found by trying it: the YAMLs turn Hydra's logging off (``hydra/job_logging: disabled``: root level
ERROR), so the warning with the count and names of skipped images was swallowed and a pretraining
run over a folder with a 0-byte and a truncated JPEG, hidden files and a dangling link said nothing
about them. The notes now go to stderr as ``[occon] ...`` lines too."""
from __future__ import annotations

import logging
import logging.config

import numpy as np
import torch
from PIL import Image
from torchvision.transforms import v2

from occon_plugin.augment.dataset import OcconPretrainDataset

IDENTITY = v2.Compose([v2.PILToTensor(), v2.ToDtype(torch.float32)])


def test_skipped_images_are_printed_with_hydra_logging_disabled(tmp_path, capsys):
    data = tmp_path / "data"
    data.mkdir()
    for name in ("a.png", "b.png"):
        Image.fromarray(np.full((20, 24, 3), 90, np.uint8)).save(data / name)
    (data / "zero.jpg").write_bytes(b"")
    (data / ".DS_Store").write_bytes(b"\0junk")
    (data / "gone.jpg").symlink_to(data / "nowhere.jpg")
    saved = logging.getLogger().level
    try:  # what Hydra's `disabled` job_logging does
        logging.config.dictConfig({"version": 1, "root": {"level": "ERROR"}, "disable_existing_loggers": True})
        ds = OcconPretrainDataset(data, None, [IDENTITY, IDENTITY])
    finally:
        logging.getLogger().setLevel(saved)
        for logger in logging.Logger.manager.loggerDict.values():
            if isinstance(logger, logging.Logger) and logger.name.startswith("occon_plugin"):
                logger.disabled = False
    err = capsys.readouterr().err
    assert sorted(ds.paths) == ["a.png", "b.png"]
    assert "[occon] 1 unreadable image(s)" in err and "zero.jpg" in err, err
    assert ".DS_Store" in err and "gone.jpg" in err, err
