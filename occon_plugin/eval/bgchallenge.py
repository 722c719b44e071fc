"""Background Challenge (Xiao et al., ICLR 2021) and distribution-shift sets, as in Mo et al. Table 5.

Layout (the published ImageNet-9 one)::

    <root>/original/train/<class>/*.JPEG        # the linear classifier is trained here
    <root>/<variant>/val/<class>/*.JPEG         # and evaluated on each variant

with variants ``original, only_bg_b, only_bg_t, only_fg, mixed_same, mixed_rand, mixed_next``.
BG-Gap = accuracy(mixed_same) - accuracy(mixed_rand), over the classes both variants have images of
(:func:`bg_gap`: said in one line when a variant lacks a class). Distribution-shift sets (ImageNet-9 versions of
Sketch, Stylized, R, C) are plain ``<folder>/<class>/*`` trees with the same class names.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, Optional, Sequence

import numpy as np
import torch

from occon_plugin.errors import ConfigError
from occon_plugin.eval.features import Features, check_training_features, compare_to_training, extract_features
from occon_plugin.eval.linear import FAST_GRID_SIZE, FULL_GRID_SIZE, fit_with_validation, l2_grid
from occon_plugin.images import DatasetError, DatasetNotFoundError

VARIANTS = ("original", "only_bg_b", "only_bg_t", "only_fg", "mixed_same", "mixed_rand", "mixed_next")


def check_layout(root, variants: Sequence[str] = VARIANTS) -> tuple[Path, Dict[str, Path]]:
    """``(train folder, {variant: val folder})``; a clear error for the first thing out of place.

    Raises:
        DatasetNotFoundError: ``root`` or its ``original/train`` / variant folders are missing.
        ConfigError: a variant repeated or unknown.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetNotFoundError(f"Background Challenge root {root} does not exist: "
                                   "pass root=<the bg_challenge folder>")
    train = root / "original" / "train"
    if not train.is_dir():
        raise DatasetNotFoundError(f"{root}: expected the training set at {train} (<root>/original/train/<class>/...), "
                                "the layout of the published ImageNet-9 (bg_challenge) archive")
    variants = list(VARIANTS if variants is None else variants)  # None: every variant (the config's default)
    repeated = sorted({v for v in variants if variants.count(v) > 1})
    if repeated:
        raise ConfigError(f"variants lists {repeated} more than once; list each variant once")
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
    check_training_features(train)
    clf, selection = fit_with_validation(train.X, train.y, len(train.classes), l2_values, val_fraction, seed,
                                         max_iter=100 if fast else 1000)
    rows, notes, predictions = [], [], {}
    for name, folder in sets.items():
        feats = extract_features(model, folder, classes=train.classes, **feature_kwargs)
        note = compare_to_training(train, feats)
        if note:
            notes.append(f"{name}: {note}")
        predictions[name] = (feats.y, clf.predict(feats.X))
        rows.append({"set": name, "accuracy": clf.accuracy(feats.X, feats.y), "n_images": int(len(feats.y)),
                     "n_bad": len(feats.bad), "n_classes": len(feats.present),
                     "classes_without_images": [c for c in train.classes if c not in feats.present]})
    return {"rows": rows, "selection": selection, "notes": notes, "predictions": predictions}


def bg_gap(predictions: Dict[str, tuple], classes: Sequence[str]) -> tuple[Optional[float], list[str], Optional[str]]:
    """BG-Gap = accuracy(mixed_same) - accuracy(mixed_rand) over the classes BOTH sets have images of.

    ``predictions``: set name -> (labels, predicted labels). Returns ``(gap, the classes it is over, a
    one-line note when those are not every class either set has, else None)``; ``(None, [], None)``
    without both sets. Raises :class:`~occon_plugin.images.DatasetError` when they share no class."""
    if not {"mixed_same", "mixed_rand"} <= set(predictions):
        return None, [], None
    (y_same, p_same), (y_rand, p_rand) = predictions["mixed_same"], predictions["mixed_rand"]
    have_same, have_rand = set(np.unique(y_same).tolist()), set(np.unique(y_rand).tolist())
    common = sorted(have_same & have_rand)
    if not common:
        raise DatasetError("mixed_same and mixed_rand have images of no common class: the BG-gap compares the "
                           "same classes with their background kept and swapped; fix the variant folders")
    keep_same, keep_rand = np.isin(y_same, common), np.isin(y_rand, common)
    gap = float((p_same[keep_same] == y_same[keep_same]).mean() - (p_rand[keep_rand] == y_rand[keep_rand]).mean())
    names = [classes[i] for i in common]
    note = None
    if have_same != have_rand:
        only = {v: [classes[i] for i in sorted(h - set(common))] for v, h in (("mixed_same", have_same),
                                                                               ("mixed_rand", have_rand))}
        note = (f"BG-gap over the {len(common)} classes both mixed_same and mixed_rand have images of ("
                + "; ".join(f"only {v} has {', '.join(c)}" for v, c in only.items() if c)
                + f"): {len(np.flatnonzero(keep_same))} and {len(np.flatnonzero(keep_rand))} images")
    return gap, names, note


def background_challenge(model: torch.nn.Module, root, variants: Sequence[str] = VARIANTS,
                         shift_sets: Optional[Dict[str, str]] = None, fast: bool = False,
                         l2_values: Optional[Sequence[float]] = None, val_fraction: float = 0.2, seed: int = 0,
                         **feature_kwargs) -> dict:
    """Accuracy per variant and shift set, BG-Gap (:func:`bg_gap`), the l2 selection, and ``notes``: one line per
    set that lacks training classes and for a BG-gap over fewer classes; accuracies are fractions. A training
    set with readable images of fewer than two classes raises :class:`~occon_plugin.images.DatasetError`."""
    train_dir, sets = check_layout(root, variants)
    shift_sets = {name: Path(folder) for name, folder in (shift_sets or {}).items()}
    if not sets and not shift_sets:
        raise ConfigError("variants=[] and no shift_sets: nothing to evaluate; list variants (null: all of "
                          f"{', '.join(VARIANTS)}) or give shift_sets")
    for name, folder in shift_sets.items():
        if name in sets:
            raise ConfigError(f"shift set name {name!r} clashes with a Background Challenge variant")
        if not folder.is_dir():
            raise DatasetNotFoundError(f"shift set {name!r}: folder {folder} does not exist (<folder>/<class>/...)")
    train = extract_features(model, train_dir, **feature_kwargs)
    out = evaluate_sets(model, train, {**sets, **shift_sets}, fast, l2_values, val_fraction, seed, feature_kwargs)
    for row in out["rows"]:
        row["kind"] = "shift" if row["set"] in shift_sets else "bg_challenge"
    out["bg_gap"], out["bg_gap_classes"], note = bg_gap(out.pop("predictions"), train.classes)
    if note:
        out["notes"].append(note)
    out["classes"] = train.classes
    out["n_train_bad"] = len(train.bad)
    return out
