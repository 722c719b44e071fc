"""Non-finite numbers (NaN, +-Inf) in training losses and in weights: the one check.

* Training stops at the first step whose loss is NaN/Inf *and* whose gradients are not all finite,
  before the optimizer step, so the weights are never updated with them (:func:`note_loss` from
  ``on_before_backward``, :func:`check_step` from ``on_before_optimizer_step``: every object-aware
  method's own hooks, in any script, and :func:`finite_loss_callback` for the host's plain methods
  under ``occon-pretrain``). A NaN loss whose gradients are all finite trains nothing and harms
  nothing: solo-learn's DeepClusterV2 has one through its whole first epoch (every k-means
  assignment is the ignore index -1 until the first clustering: 0/0), as has an online classifier
  whose every target is ignored (unlabelled data): such steps go on. Gradients are inspected only
  after a non-finite loss (no cost otherwise). Under DDP the decision is shared by all processes
  (one boolean all-reduce per step), so every rank stops at the same step. The CLIs print one line
  naming the step, the loss and the likely key (``optimizer.lr``; ``precision`` with float16) and
  exit with status 3 (:data:`occon_plugin.errors.DIVERGED_EXIT_CODE`).
* No checkpoint with non-finite weights is written (``occon_plugin.train.runs`` checks before saving
  ``last.ckpt`` / ``epoch*.ckpt``; ``occon-pretrain`` before ``final.ckpt``): the last finite
  checkpoint stays.
* Every model loaded from a checkpoint file (``occon_plugin.models.load_model``: occon-eval-linear,
  occon-eval-bgchallenge, occon-linear, occon-localize) is refused when its weights hold a
  non-finite number, naming the file.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, List, Mapping, Optional

from occon_plugin.errors import CheckpointError, TrainingDivergedError, examples

_SHOW = 3


def nonfinite_tensors(tensors: Mapping[str, Any], prefix: str = "") -> List[str]:
    """Names (dotted, ``prefix`` first) of the floating-point tensors in ``tensors`` (nested dicts
    followed) holding at least one NaN or +-Inf. Integer tensors and non-tensors are ignored.
    Cost: one ``isfinite`` pass over the weights (~10 ms for a ResNet-50 on a CPU)."""
    import torch

    bad: List[str] = []
    for name, value in tensors.items():
        key = f"{prefix}{name}"
        if isinstance(value, Mapping):
            bad.extend(nonfinite_tensors(value, key + "."))
        elif torch.is_tensor(value) and (value.is_floating_point() or value.is_complex()):
            if not bool(torch.isfinite(value).all()):
                bad.append(key)
    return bad


def _tensor_count(tensors: Mapping[str, Any]) -> int:
    import torch

    return sum(_tensor_count(v) if isinstance(v, Mapping) else int(torch.is_tensor(v)) for v in tensors.values())


def require_finite_weights(tensors: Mapping[str, Any], where: str) -> None:
    """Raise :class:`~occon_plugin.errors.CheckpointError` naming ``where`` (the checkpoint file) when
    a tensor of ``tensors`` holds NaN or Inf: such weights come from a training run that diverged,
    and any score computed from them is meaningless."""
    bad = nonfinite_tensors(tensors)
    if bad:
        raise CheckpointError(
            f"{where} holds non-finite weights (NaN or Inf in {len(bad)} of {_tensor_count(tensors)} tensors, e.g. "
            f"{examples(bad, show=_SHOW)}): the training that wrote it diverged; use an earlier checkpoint of that "
            f"run, or train again with a lower optimizer.lr")


def _current_lr(trainer: Any) -> Optional[float]:
    try:
        return float(trainer.optimizers[0].param_groups[0]["lr"])
    except (AttributeError, IndexError, KeyError, TypeError, ValueError):
        return None


def last_checkpoint(trainer: Any) -> Optional[Path]:
    """``last.ckpt`` of the trainer's checkpoint callback when it exists (written before this step)."""
    callback = getattr(trainer, "checkpoint_callback", None)
    dirpath = getattr(callback, "dirpath", None)
    if not dirpath:
        return None
    path = Path(dirpath) / "last.ckpt"
    return path if path.is_file() else None


def _given_lr(trainer: Any) -> Optional[float]:
    """``optimizer.lr`` as the user gave it (the plugin's configs keep it as ``optimizer.base_lr`` when they
    scale it by the batch size), from the run's cfg on the module; None when unknown."""
    from omegaconf import OmegaConf

    module = getattr(trainer, "lightning_module", None)
    cfg = getattr(module, "_occon_cfg", None) or getattr(module, "cfg", None)
    if not OmegaConf.is_config(cfg):
        return None
    value = OmegaConf.select(cfg, "optimizer.base_lr", default=None)
    value = OmegaConf.select(cfg, "optimizer.lr", default=None) if value is None else value
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def likely_cause(trainer: Any) -> str:
    """The keys most likely behind a divergence, with the values in use."""
    lr, given = _current_lr(trainer), _given_lr(trainer)
    values = "; ".join(v for v in (f"optimizer.lr={given:g}" if given is not None else "",
                                   f"{lr:g} in the optimizer at this step" if lr is not None else "") if v)
    cause = "a learning rate too high (" + (values or "optimizer.lr") + "): lower optimizer.lr"
    precision = str(getattr(trainer, "precision", getattr(getattr(trainer, "precision_plugin", None),
                                                          "precision", "32")))
    if precision.startswith("16"):
        cause += f", or train with precision=32 (precision={precision} overflows above 65504)"
    return cause


def divergence_message(trainer: Any, loss: Any) -> str:
    """One line: where training diverged, the loss value, the likely key and which checkpoint is kept."""
    step, epoch = int(getattr(trainer, "global_step", 0)), int(getattr(trainer, "current_epoch", 0))
    try:
        value = f"{float(loss):g}"
    except (TypeError, ValueError, RuntimeError):
        value = str(loss)
    last = last_checkpoint(trainer)
    kept = (f"{last} (written before this step, finite) is kept" if last is not None
            else "no checkpoint was written (none is written with non-finite weights)")
    return (f"training diverged at step {step} (epoch {epoch}; after {step} optimizer step{'' if step == 1 else 's'}): "
            f"the loss is "
            f"{value} and its gradients are not finite; likely cause: {likely_cause(trainer)}. Stopped before this "
            f"step changed the weights; {kept}")


_BAD_LOSS = "_occon_nonfinite_loss"


def note_loss(holder: Any, loss: Any) -> None:
    """Remember on ``holder`` (the module or a callback) the first non-finite loss since the last
    optimizer step (``on_before_backward``; no collective, no cost beyond one ``isfinite``)."""
    import torch

    value = loss.detach() if torch.is_tensor(loss) else torch.tensor(float(loss))
    if getattr(holder, _BAD_LOSS, None) is None and not bool(torch.isfinite(value).all()):
        setattr(holder, _BAD_LOSS, value.float().mean().item() if value.numel() else float("nan"))


def gradients_finite(optimizer: Any) -> bool:
    """Whether every gradient of ``optimizer``'s parameters is finite (one device sync)."""
    import torch

    grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
    return not grads or bool(torch.stack([torch.isfinite(g).all() for g in grads]).all())


def check_step(trainer: Any, holder: Any, optimizer: Any) -> None:
    """Before an optimizer step (``on_before_optimizer_step``): raise
    :class:`~occon_plugin.errors.TrainingDivergedError` when a loss since the last step was NaN/Inf and
    the gradients are not all finite, on any process (DDP: decided together, one boolean all-reduce
    per step, on every rank, so the collectives stay aligned)."""
    bad_loss = getattr(holder, _BAD_LOSS, None)
    setattr(holder, _BAD_LOSS, None)
    ok = bad_loss is None or gradients_finite(optimizer)
    strategy = getattr(trainer, "strategy", None)
    if strategy is not None and int(getattr(trainer, "world_size", 1) or 1) > 1:
        ok = bool(strategy.reduce_boolean_decision(ok))
    if not ok:
        raise TrainingDivergedError(divergence_message(trainer, bad_loss if bad_loss is not None
                                                       else "finite here, not finite in another process"))


def finite_loss_callback():
    """A Lightning callback running :func:`note_loss` / :func:`check_step` for methods that do not check
    themselves (the object-aware methods do, in any script)."""
    from occon_plugin import host

    class FiniteLoss(host.Callback):
        def on_before_backward(self, trainer, pl_module, loss):
            if not getattr(pl_module, "occon_checks_loss", False):
                note_loss(self, loss)

        def on_before_optimizer_step(self, trainer, pl_module, optimizer, *args):
            if not getattr(pl_module, "occon_checks_loss", False):
                check_step(trainer, self, optimizer)

    return FiniteLoss()
