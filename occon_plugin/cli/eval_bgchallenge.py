"""``occon-eval-bgchallenge``: Background Challenge + distribution-shift accuracy and BG-Gap (Hydra CLI).

    occon-eval-bgchallenge model=<zoo name | checkpoint> root=<bg_challenge> [+shift_sets.sketch-9=<folder>]
"""
from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig

from occon_plugin.cli._hydra import exit_on_bad_input
from occon_plugin.cli.overrides import exit_on_bad_overrides
from occon_plugin.cli.eval_common import CONFIG_DIR, BgChallengeSettings, finish, linear_probe_settings, setup_torch
from occon_plugin.eval.bgchallenge import background_challenge
from occon_plugin.models import load_feature_model


def run(cfg: DictConfig) -> dict:
    """Fit the probe on ``<root>/original/train``, score every variant and shift set, write the results.
    Raises :class:`~occon_plugin.errors.ConfigError` / ``DataError`` / ``CheckpointError`` for bad input."""
    s: BgChallengeSettings = linear_probe_settings(BgChallengeSettings, cfg)  # parsed once, typed
    device = setup_torch(s)
    model, info = load_feature_model(s.model, use_momentum=s.use_momentum)
    out = background_challenge(
        model, s.root, variants=s.variants, shift_sets=dict(s.shift_sets) if s.shift_sets else None,
        fast=s.fast, l2_values=s.l2_values, val_fraction=s.val_fraction, seed=s.seed, resize=s.resize,
        crop=s.crop, batch_size=s.batch_size, num_workers=s.num_workers, device=device, progress=s.progress)
    rows = [{"model": info["model"], **r} for r in out["rows"]]
    summary = {"model": info["model"], "bg_gap": out["bg_gap"], "best_l2": out["selection"]["best_l2"],
               **{f"acc/{r['set']}": r["accuracy"] for r in out["rows"]}}
    details = {"model_info": info, "selection": out["selection"], "classes": out["classes"],
               "bg_gap_classes": out["bg_gap_classes"], "notes": out["notes"], "n_train_bad": out["n_train_bad"]}
    for note in out["notes"]:  # a BG-gap over fewer classes, sets without some classes: said, and in the JSON
        print(f"[occon] {note}")
    return finish(cfg, "eval_bgchallenge", rows, details, summary)


def main() -> None:
    """The console command: overrides checked against eval_bgchallenge.yaml (one line, exit 2), then Hydra."""
    exit_on_bad_overrides(Path(CONFIG_DIR) / "eval_bgchallenge.yaml")
    _hydra_main()


@hydra.main(config_path=CONFIG_DIR, config_name="eval_bgchallenge", version_base="1.2")
@exit_on_bad_input(inputs=("root",), specs=("model",), outputs=("output_dir",), batch_key="batch_size")
def _hydra_main(cfg: DictConfig) -> None:
    run(cfg)


if __name__ == "__main__":
    main()
