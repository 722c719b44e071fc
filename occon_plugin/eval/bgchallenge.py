"""Background Challenge (Xiao et al., ICLR 2021) and distribution-shift sets, as in Mo et al. Table 5.

Layout (the published ImageNet-9 one)::

    <root>/original/train/<class>/*.JPEG        # the linear classifier is trained here
    <root>/<variant>/val/<class>/*.JPEG         # and evaluated on each variant

with variants ``original, only_bg_b, only_bg_t, only_fg, mixed_same, mixed_rand, mixed_next``.
BG-Gap = accuracy(mixed_same) - accuracy(mixed_rand). Distribution-shift sets (ImageNet-9 versions of
Sketch, Stylized, R, C) are plain ``<folder>/<class>/*`` trees with the same class names.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, Optional, Sequence

import torch

from occon_plugin.errors import ConfigError
from occon_plugin.eval.features import Features, extract_features
from occon_plugin.eval.linear import FAST_GRID_SIZE, FULL_GRID_SIZE, fit_with_validation, l2_grid
from occon_plugin.images import DatasetNotFoundError

VARIANTS = ("original", "only_bg_b", "only_bg_t", "only_fg", "mixed_same", "mixed_rand", "mixed_next")


def check_layout(root, variants: Sequence[str] = VARIANTS) -> tuple[Path, Dict[str, Path]]:
    """``(train folder, {variant: val folder})``; a clear error for the first thing out of place."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetNotFoundError(f"Background Challenge root {root} does not exist: "
                                   "pass root=<the bg_challenge folder>")
    train = root / "original" / "train"
    if not train.is_dir():
        raise DatasetNotFoundError(f"{root}: expected the training set at {train} (<root>/original/train/<class>/...), "
                                "the layout of the published ImageNet-9 (bg_challenge) archive")
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise ConfigError(f"unknown Background Challenge variants {unknown}; known: {list(VARIANTS)}")
    missing = [v for v in variants if not (root / v / "val").is_dir()]
    if missing:
        raise DatasetNotFoundError(f"{root}: no <variant>/val folder for {missing} (expected e.g. "
                                f"{root / missing[0] / 'val'}/<class>/...); pass variants=[...] to evaluate a subset")
    return train, {v: root / v / "val" for v in variants}


def evaluate_sets(model: torch.nn.Module, train: Features, sets: Dict[str, Path], fast: bool = False,
                  l2_values: Optional[Sequence[float]] = None, val_fraction: float = 0.2, seed: int = 0,
                  feature_kwargs: Optional[dict] = None) -> dict:
    """Fit the validated linear classifier on ``train`` features, then its accuracy on every folder of ``sets``."""
    feature_kwargs = feature_kwargs or {}
    if l2_values is None:
        l2_values = l2_grid(FAST_GRID_SIZE if fast else FULL_GRID_SIZE)
    clf, selection = fit_with_validation(train.X, train.y, len(train.classes), l2_values, val_fraction, seed,
                                         max_iter=100 if fast else 1000)
    rows = []
    for name, folder in sets.items():
        feats = extract_features(model, folder, classes=train.classes, **feature_kwargs)
        rows.append({"set": name, "accuracy": clf.accuracy(feats.X, feats.y), "n_images": int(len(feats.y)),
                     "n_bad": len(feats.bad)})
    return {"rows": rows, "selection": selection}


def background_challenge(model: torch.nn.Module, root, variants: Sequence[str] = VARIANTS,
                         shift_sets: Optional[Dict[str, str]] = None, fast: bool = False,
                         l2_values: Optional[Sequence[float]] = None, val_fraction: float = 0.2, seed: int = 0,
                         **feature_kwargs) -> dict:
    """Accuracy per variant and shift set, BG-Gap, and the l2 selection; accuracies are fractions."""
    train_dir, sets = check_layout(root, variants)
    shift_sets = {name: Path(folder) for name, folder in (shift_sets or {}).items()}
    for name, folder in shift_sets.items():
        if name in sets:
            raise ConfigError(f"shift set name {name!r} clashes with a Background Challenge variant")
        if not folder.is_dir():
            raise DatasetNotFoundError(f"shift set {name!r}: folder {folder} does not exist (<folder>/<class>/...)")
    train = extract_features(model, train_dir, **feature_kwargs)
    out = evaluate_sets(model, train, {**sets, **shift_sets}, fast, l2_values, val_fraction, seed, feature_kwargs)
    for row in out["rows"]:
        row["kind"] = "shift" if row["set"] in shift_sets else "bg_challenge"
    acc = {r["set"]: r["accuracy"] for r in out["rows"]}
    out["bg_gap"] = acc["mixed_same"] - acc["mixed_rand"] if {"mixed_same", "mixed_rand"} <= set(acc) else None
    out["classes"] = train.classes
    out["n_train_bad"] = len(train.bad)
    return out
