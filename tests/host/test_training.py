"""The object-aware methods compute exactly what their host parents compute on plain batches."""
import pytest
import torch

from occon_plugin import host
from occon_plugin.config import complete_pretrain_cfg

B, SIZE = 4, 32


class FixedBatches(torch.utils.data.Dataset):
    """Deterministic two-view samples, optionally with the object-aware info record."""

    def __init__(self, n, with_info):
        g = torch.Generator().manual_seed(0)
        self.views = torch.rand(n, 2, 3, SIZE, SIZE, generator=g)
        self.with_info = with_info

    def __len__(self):
        return len(self.views)

    def __getitem__(self, i):
        sample = [i, [self.views[i, 0], self.views[i, 1]], 0]
        if self.with_info:
            sample.append({"oa_crop": torch.tensor(True), "mixed": torch.tensor([i % 2 == 0, False])})
        return sample


class LossRecorder(host.Callback):
    def __init__(self):
        self.losses = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, *args):
        self.losses.append(float(host.training_step_output_loss(outputs)))


def fit(method, cfg, with_info=False, steps=2):
    torch.manual_seed(1)
    model = host.build_method(method, cfg)
    loader = torch.utils.data.DataLoader(FixedBatches(B * steps, with_info), batch_size=B)
    recorder = LossRecorder()
    trainer = host.Trainer(max_steps=steps, accelerator="cpu", devices=1, logger=False,
                           enable_checkpointing=False, enable_progress_bar=False,
                           enable_model_summary=False, callbacks=[recorder])
    torch.manual_seed(2)
    trainer.fit(model, loader)
    return recorder.losses, trainer, model


@pytest.mark.parametrize("method,parent", [("mocov2_occon", "mocov2plus"), ("byol_occon", "byol")])
def test_same_loss_as_parent_without_occon_data(make_cfg, method, parent):
    cfg = complete_pretrain_cfg(make_cfg(method, batch_size=B), host.METHODS)
    ours, _, model = fit(method, cfg)
    theirs, _, _ = fit(parent, cfg)
    assert len(ours) == 2  # two optimizer steps: the momentum hook ran between them
    assert ours == pytest.approx(theirs, rel=0, abs=1e-6)
    assert ours[0] != ours[1]  # weights changed after a step


@pytest.mark.parametrize("method", ["mocov2_occon", "byol_occon"])
def test_occon_info_is_accepted_and_logged(make_cfg, method):
    cfg = complete_pretrain_cfg(make_cfg(method, batch_size=B), host.METHODS)
    plain, _, _ = fit(method, cfg)
    with_info, trainer, _ = fit(method, cfg, with_info=True)
    assert with_info == pytest.approx(plain, abs=1e-6)
    logged = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("occon/")}
    assert logged["occon/oa_crop_frac_epoch"] == pytest.approx(1.0)
    assert logged["occon/bg_mixed_frac_epoch"] == pytest.approx(0.25)  # 2 of 8 views per batch


def test_malformed_batch_is_rejected():
    from occon_plugin.methods.base import split_occon_batch

    with pytest.raises(ValueError, match="expected a batch"):
        split_occon_batch([1, 2])
    with pytest.raises(KeyError, match="mixed"):
        split_occon_batch([0, [], 0, {"oa_crop": None}])
