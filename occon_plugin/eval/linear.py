"""Linear evaluation as in Mo et al. (App. B.2), following Chen et al. / Kornblith et al.

An l2-regularized multinomial logistic regression on frozen features, fitted with full-batch
L-BFGS (float64, zero init, no randomness: the same inputs give the same classifier). The
regularization strength is chosen among ``logspace(-6, 5, 45)`` by accuracy on a validation split
held out from the TRAINING set only; the classifier is then refitted on train + validation with
that strength and its test accuracy is reported.

Objective: ``mean cross-entropy + (l2 / 2) * ||W||^2`` (bias not regularized), on features
standardized with the fitting set's mean and standard deviation.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from occon_plugin.errors import DataError

FULL_GRID_SIZE = 45
FAST_GRID_SIZE = 8


def l2_grid(n: int = FULL_GRID_SIZE) -> np.ndarray:
    """The paper's grid: ``n`` values log-spaced over [1e-6, 1e5] (45 in the paper)."""
    return np.logspace(-6, 5, n)


@dataclass
class LinearClassifier:
    mean: torch.Tensor
    std: torch.Tensor
    weight: torch.Tensor  # (dim, classes)
    bias: torch.Tensor
    l2: float

    def logits(self, X) -> torch.Tensor:
        X = torch.as_tensor(np.asarray(X), dtype=torch.float64)
        return ((X - self.mean) / self.std) @ self.weight + self.bias

    def predict(self, X) -> np.ndarray:
        return self.logits(X).argmax(dim=1).numpy()

    def accuracy(self, X, y) -> float:
        """Top-1 accuracy of the classifier on ``X`` (N x D float) against ``y`` (N int).

        Raises:
            ValueError: an empty set.
        """
        y = np.asarray(y)
        if len(y) == 0:
            raise ValueError("accuracy of an empty set")
        return float((self.predict(X) == y).mean())


def _check(X, y, what: str) -> tuple[np.ndarray, np.ndarray]:
    X, y = np.asarray(X), np.asarray(y)
    if X.ndim != 2 or y.ndim != 1 or len(X) != len(y):
        raise ValueError(f"{what}: features must be (N, D) and labels (N,); got {X.shape} and {y.shape}")
    if len(y) == 0:
        raise ValueError(f"{what}: no samples")
    if not np.isfinite(X).all():
        raise ValueError(f"{what}: features contain NaN or inf")
    return X, y.astype(np.int64)


def fit_logreg(X, y, n_classes: int, l2: float, max_iter: int = 1000,
               init: Optional[LinearClassifier] = None) -> LinearClassifier:
    """Fit one l2-regularized multinomial logistic regression with L-BFGS (strong-Wolfe line search)."""
    X, y = _check(X, y, "fit_logreg")
    Xt = torch.as_tensor(X, dtype=torch.float64)
    mean = Xt.mean(dim=0)
    std = Xt.std(dim=0, unbiased=False).clamp_min(1e-8)
    Z = (Xt - mean) / std
    yt = torch.as_tensor(y)
    if init is not None:  # warm start along the grid: same result for the same call sequence
        W = init.weight.clone().requires_grad_(True)
        b = init.bias.clone().requires_grad_(True)
    else:
        W = torch.zeros(X.shape[1], n_classes, dtype=torch.float64, requires_grad=True)
        b = torch.zeros(n_classes, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([W, b], lr=1.0, max_iter=max_iter, history_size=20, tolerance_grad=1e-6,
                            tolerance_change=1e-8, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(Z @ W + b, yt) + 0.5 * l2 * (W * W).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return LinearClassifier(mean, std, W.detach(), b.detach(), float(l2))


def stratified_split(y, val_fraction: float, seed: int = 0, groups=None) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, val): ``val_fraction`` of each class held out (at least one sample stays in train).

    With ``groups`` (one id per sample, e.g. the source photo of a crop), whole groups are held out
    instead (about ``val_fraction`` of the samples), so no group is on both sides.

    Raises:
        ValueError: ``val_fraction`` outside (0, 1), an empty split, or ``groups`` of another length.
    """
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must be in (0, 1); got {val_fraction}")
    y = np.asarray(y)
    rng = np.random.default_rng(seed)
    train, val = [], []
    if groups is not None:
        groups = np.asarray(groups)
        if len(groups) != len(y):
            raise ValueError(f"{len(groups)} group ids for {len(y)} samples")
        target = int(round(len(y) * val_fraction))
        for g in rng.permutation(np.unique(groups)):
            members = np.flatnonzero(groups == g)
            (val if len(val) < target else train).extend(members)
    else:
        for c in np.unique(y):
            idx = rng.permutation(np.flatnonzero(y == c))
            n_val = min(int(round(len(idx) * val_fraction)), len(idx) - 1)
            val.extend(idx[:n_val])
            train.extend(idx[n_val:])
    if not val or not train:
        raise ValueError(f"the validation split is empty or takes everything ({len(y)} samples, "
                         f"val_fraction={val_fraction}); use more training images or another val_fraction")
    return np.sort(np.array(train)), np.sort(np.array(val))


def select_l2(X_train, y_train, X_val, y_val, n_classes: int, l2_values: Sequence[float],
              max_iter: int = 1000) -> tuple[float, list[dict]]:
    """The l2 value with the best validation accuracy (ties: the stronger regularization)."""
    table = []
    previous = None
    for l2 in sorted(l2_values, reverse=True):  # strong to weak, each warm-started from the last
        previous = fit_logreg(X_train, y_train, n_classes, l2, max_iter, init=previous)
        table.append({"l2": float(l2), "val_acc": previous.accuracy(X_val, y_val)})
    best = max(table, key=lambda row: row["val_acc"])  # first max = largest l2 among ties
    table.sort(key=lambda row: row["l2"])
    return best["l2"], table


def fit_with_validation(X, y, n_classes: Optional[int] = None, l2_values: Sequence[float] = tuple(l2_grid()),
                        val_fraction: float = 0.2, seed: int = 0, max_iter: int = 1000, groups=None
                        ) -> tuple[LinearClassifier, dict]:
    """Choose l2 on a split of (X, y), then refit on all of (X, y). Returns (classifier, selection info).
    Raises :class:`~occon_plugin.errors.DataError` when ``y`` holds fewer than 2 classes."""
    X, y = _check(X, y, "training set")
    if np.unique(y).size < 2:  # a one-class fit predicts that class: 100 % on a one-class test set
        raise DataError(f"linear evaluation needs training samples of at least 2 classes; got only class "
                        f"{int(y[0])} ({len(y)} samples)")
    n_classes = int(n_classes if n_classes is not None else y.max() + 1)
    tr, va = stratified_split(y, val_fraction, seed, groups)
    best_l2, table = select_l2(X[tr], y[tr], X[va], y[va], n_classes, l2_values, max_iter)
    clf = fit_logreg(X, y, n_classes, best_l2, max_iter)
    info = {"best_l2": best_l2, "val_acc": max(r["val_acc"] for r in table), "l2_table": table,
            "n_train": int(len(tr)), "n_val": int(len(va)), "n_fit": int(len(y)), "n_classes": n_classes}
    return clf, info


def linear_eval(X_train, y_train, X_test, y_test, n_classes: Optional[int] = None, fast: bool = False,
                l2_values: Optional[Sequence[float]] = None, val_fraction: float = 0.2, seed: int = 0,
                max_iter: Optional[int] = None, groups=None) -> dict:
    """Test accuracy of the validated, refitted classifier; ``fast`` uses 8 l2 values and 100 iterations.
    ``groups``: see :func:`stratified_split`. ``confusion[i][j]``: test images of class ``i`` predicted as
    ``j`` (counts; rows sum to the class sizes), so per-class accuracy and which classes are confused
    (e.g. objects that co-occurred in pretraining) can be read off."""
    X_test, y_test = _check(X_test, y_test, "test set")
    if l2_values is None:
        l2_values = l2_grid(FAST_GRID_SIZE if fast else FULL_GRID_SIZE)
    if max_iter is None:
        max_iter = 100 if fast else 1000
    clf, info = fit_with_validation(X_train, y_train, n_classes, l2_values, val_fraction, seed, max_iter, groups)
    pred = clf.predict(X_test)
    confusion = np.zeros((info["n_classes"], info["n_classes"]), dtype=np.int64)
    np.add.at(confusion, (y_test.astype(np.int64), pred.astype(np.int64)), 1)
    return {"test_acc": clf.accuracy(X_test, y_test), "n_test": int(len(y_test)), "confusion": confusion.tolist(),
            **info}
