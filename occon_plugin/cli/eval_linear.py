"""``occon-eval-linear``: L-BFGS linear evaluation of a frozen backbone (Hydra CLI).

    occon-eval-linear model=<zoo name | checkpoint> train_dir=<folder> test_dir=<folder> [fast=true]
"""
from __future__ import annotations

import re
from pathlib import Path, PurePosixPath

import hydra
from omegaconf import DictConfig

from occon_plugin.cli._hydra import exit_on_bad_input
from occon_plugin.cli.overrides import exit_on_bad_overrides
from occon_plugin.cli.eval_common import CONFIG_DIR, EvalLinearSettings, finish, linear_probe_settings, setup_torch
from occon_plugin.eval.features import check_training_features, compare_to_training, extract_features
from occon_plugin.eval.linear import linear_eval
from occon_plugin.models import load_feature_model


def run(cfg: DictConfig) -> dict:
    """Extract features of ``train_dir`` / ``test_dir``, fit the L-BFGS probe, write the results. Raises
    :class:`~occon_plugin.errors.ConfigError` / ``DataError`` / ``CheckpointError`` for bad input."""
    s: EvalLinearSettings = linear_probe_settings(EvalLinearSettings, cfg)  # parsed once, typed
    device = setup_torch(s)
    model, info = load_feature_model(s.model, use_momentum=s.use_momentum)
    kw = dict(resize=s.resize, crop=s.crop, batch_size=s.batch_size, num_workers=s.num_workers, device=device,
              progress=s.progress)
    train = extract_features(model, s.train_dir, **kw)
    check_training_features(train)  # one class (or one readable class): refused, 100 % would mean nothing
    test = extract_features(model, s.test_dir, classes=train.classes, **kw)
    note = compare_to_training(train, test)  # a test class never trained: refused; fewer classes: said
    if note:
        print(f"[occon] {note}")
    groups = None
    if s.val_group_regex:  # e.g. COCO-Crop: crops of one photo share the stem before "_<ann id>"
        pattern = re.compile(s.val_group_regex)
        groups = [m.group(1) if (m := pattern.search(PurePosixPath(p).stem)) else p for p in train.paths]
    res = linear_eval(train.X, train.y, test.X, test.y, n_classes=len(train.classes), fast=s.fast,
                      l2_values=s.l2_values, val_fraction=s.val_fraction, seed=s.seed, groups=groups)
    row = {"model": info["model"], "train": Path(s.train_dir).name, "test": Path(s.test_dir).name,
           "test_acc": res["test_acc"], "best_l2": res["best_l2"], "val_acc": res["val_acc"],
           "n_train": res["n_train"], "n_val": res["n_val"], "n_test": res["n_test"],
           "n_bad": len(train.bad) + len(test.bad), "feature_dim": int(train.X.shape[1])}
    details = {"model_info": info, "l2_table": res["l2_table"], "classes": train.classes,
               "confusion": res["confusion"],  # rows: true class, columns: predicted (test set)
               "test_classes": test.present, "notes": [note] if note else [], "bad_images": train.bad + test.bad}
    return finish(cfg, "eval_linear", [row], details, row)


def main() -> None:
    """The console command: overrides checked against eval_linear.yaml (one line, exit 2), then Hydra."""
    exit_on_bad_overrides(Path(CONFIG_DIR) / "eval_linear.yaml")
    _hydra_main()


@hydra.main(config_path=CONFIG_DIR, config_name="eval_linear", version_base="1.2")
@exit_on_bad_input(inputs=("train_dir", "test_dir"), specs=("model",), outputs=("output_dir",),
                   batch_key="batch_size")
def _hydra_main(cfg: DictConfig) -> None:
    run(cfg)


if __name__ == "__main__":
    main()
