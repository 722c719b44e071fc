"""Training-step cost of ``*_occon`` vs its host parent, measured side by side in one run.

Both methods get the same pre-augmented two-view batches; the object-aware one also receives the
per-sample info record its pipeline attaches. Prints the median step time of each and the ratio.

    python bench/train_step.py [--device cpu|cuda] [--batch-size 32] [--size 224] [--steps 12] [--json out.json]
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
from omegaconf import OmegaConf

from occon_plugin import host, register
from occon_plugin.config import complete_pretrain_cfg

PAIRS = (("mocov2_occon", "mocov2plus"), ("byol_occon", "byol"))


class Views(torch.utils.data.Dataset):
    def __init__(self, n, size, with_info):
        self.n, self.size, self.with_info = n, size, with_info
        g = torch.Generator().manual_seed(0)
        self.data = torch.rand(8, 2, 3, size, size, generator=g)

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        v = self.data[i % 8]
        sample = [i, [v[0], v[1]], 0]
        if self.with_info:
            sample.append({"oa_crop": torch.tensor(True), "mixed": torch.tensor([i % 3 == 0, i % 2 == 0])})
        return sample


class StepTimer(host.Callback):
    def __init__(self):
        self.times, self._t = [], None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx, *args):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        self._t = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, *args):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        self.times.append(time.perf_counter() - self._t)


def cfg_for(method: str, batch_size: int):
    root = "scripts/pretrain/coco"
    cfg = OmegaConf.load(f"{root}/{method}.yaml")
    cfg.augmentations = OmegaConf.load(f"{root}/augmentations/symmetric.yaml")
    cfg.data.train_path, cfg.optimizer.batch_size, cfg.wandb = ".", batch_size, {"enabled": False}
    # The batches here are pre-augmented (with the pipelines' record for the object-aware method): the
    # store is not read, so the `occon` section (which makes the method check for a store) is left out.
    cfg.pop("occon", None)
    return complete_pretrain_cfg(cfg, host.METHODS)


def time_method(method: str, batch_size: int, size: int, steps: int, device: str) -> float:
    torch.manual_seed(0)
    model = host.build_method(method, cfg_for(method, batch_size))
    loader = torch.utils.data.DataLoader(Views(batch_size * steps, size, method.endswith("_occon")),
                                         batch_size=batch_size)
    timer = StepTimer()
    trainer = host.Trainer(max_steps=steps, accelerator=device, devices=1, logger=False,
                           enable_checkpointing=False, enable_progress_bar=False,
                           enable_model_summary=False, callbacks=[timer])
    trainer.fit(model, loader)
    return statistics.median(timer.times[2:])  # first steps warm up


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=2, help="interleaved runs per method (the minimum is kept)")
    parser.add_argument("--json", default=None, help="also write the results to this file")
    args = parser.parse_args()
    register()
    print(f"host: {host.describe()}; device={args.device}; batch={args.batch_size}; size={args.size}")
    print(f"{'method':<14}{'parent':<12}{'ours (s/step)':>15}{'parent (s/step)':>17}{'ratio':>8}")
    rows = []
    for ours, parent in PAIRS:
        t_ours, t_parent = [], []
        for _ in range(args.repeats):  # interleaved so drifting machine load hits both sides alike
            t_ours.append(time_method(ours, args.batch_size, args.size, args.steps, args.device))
            t_parent.append(time_method(parent, args.batch_size, args.size, args.steps, args.device))
        t_ours, t_parent = min(t_ours), min(t_parent)
        print(f"{ours:<14}{parent:<12}{t_ours:>15.4f}{t_parent:>17.4f}{t_ours / t_parent:>8.3f}")
        rows.append({"method": ours, "parent": parent, "s_per_step": t_ours, "parent_s_per_step": t_parent,
                     "ratio": t_ours / t_parent})
    if args.json:
        import json

        with open(args.json, "w") as f:
            json.dump({"host": host.describe(), "device": args.device, "batch_size": args.batch_size,
                       "size": args.size, "steps": args.steps, "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
