import numpy as np
import pytest

from occon_plugin.eval.linear import (
    fit_logreg, fit_with_validation, l2_grid, linear_eval, select_l2, stratified_split)


def blobs(n_per_class, centers, scale, seed):
    rng = np.random.default_rng(seed)
    X = np.concatenate([c + scale * rng.standard_normal((n_per_class, len(c))) for c in centers])
    y = np.repeat(np.arange(len(centers)), n_per_class)
    return X, y


def test_grid_is_the_papers():
    g = l2_grid()
    assert len(g) == 45 and g[0] == pytest.approx(1e-6) and g[-1] == pytest.approx(1e5)


def test_separable_three_classes_reach_full_accuracy():
    centers = [np.array([4.0, 0, 0, 0]), np.array([0, 4.0, 0, 0]), np.array([0, 0, 4.0, 0])]
    Xtr, ytr = blobs(40, centers, 0.5, seed=0)
    Xte, yte = blobs(30, centers, 0.5, seed=1)
    res = linear_eval(Xtr, ytr, Xte, yte, fast=True)
    assert res["test_acc"] == 1.0
    assert res["n_fit"] == 120 and res["n_train"] + res["n_val"] == 120 and res["n_classes"] == 3


def test_overlapping_classes_match_bayes_accuracy():
    # two unit Gaussians 2 apart: the Bayes classifier has accuracy Phi(1) = 0.841
    Xtr, ytr = blobs(1000, [np.array([-1.0, 0]), np.array([1.0, 0])], 1.0, seed=0)
    Xte, yte = blobs(2000, [np.array([-1.0, 0]), np.array([1.0, 0])], 1.0, seed=1)
    res = linear_eval(Xtr, ytr, Xte, yte, fast=True)
    assert res["test_acc"] == pytest.approx(0.841, abs=0.02)


def test_strong_l2_shrinks_weights_and_fit_is_deterministic():
    X, y = blobs(30, [np.array([1.0, 0]), np.array([-1.0, 0])], 1.0, seed=3)
    weak = fit_logreg(X, y, 2, 1e-4)
    strong = fit_logreg(X, y, 2, 1e3)
    assert strong.weight.abs().max() < 0.01 * weak.weight.abs().max()
    again = fit_logreg(X, y, 2, 1e-4)
    assert (again.weight == weak.weight).all() and (again.bias == weak.bias).all()


def test_l2_is_chosen_on_validation_never_on_test():
    # imbalanced training set (80 % class 0): a weak penalty classifies by the feature, a huge one
    # shrinks W to ~0 and predicts the majority class 0 everywhere
    rng = np.random.default_rng(0)
    X = np.concatenate([rng.normal(-2, 0.5, (80, 2)), rng.normal(2, 0.5, (20, 2))])
    y = np.repeat([0, 1], [80, 20])
    # a test set of class-1-looking points labelled 0 would prefer the huge penalty
    Xte, yte = rng.normal(2, 0.5, (30, 2)), np.zeros(30, dtype=int)
    grid = l2_grid(8)
    res = linear_eval(X, y, Xte, yte, l2_values=grid)
    tr, va = stratified_split(y, 0.2, seed=0)
    val_choice, table = select_l2(X[tr], y[tr], X[va], y[va], 2, grid)
    assert res["best_l2"] == val_choice and res["l2_table"] == table
    test_acc_by_l2 = {l2: fit_logreg(X, y, 2, l2).accuracy(Xte, yte) for l2 in grid}
    test_choice = max(test_acc_by_l2, key=test_acc_by_l2.get)
    assert test_acc_by_l2[test_choice] == 1.0 and test_acc_by_l2[grid[-1]] == 1.0
    assert res["best_l2"] < 1.0
    assert res["test_acc"] == test_acc_by_l2[res["best_l2"]] == 0.0


def test_split_is_stratified_and_disjoint():
    y = np.array([0] * 10 + [1] * 5 + [2] * 2)
    tr, va = stratified_split(y, 0.2, seed=0)
    assert set(tr).isdisjoint(va) and len(tr) + len(va) == len(y)
    assert np.bincount(y[va], minlength=3).tolist() == [2, 1, 0]  # round(0.2 * n) per class
    assert all((y[tr] == c).any() for c in range(3))


def test_bad_inputs():
    with pytest.raises(ValueError, match="NaN"):
        fit_with_validation(np.array([[np.nan], [1.0]]), np.array([0, 1]))
    with pytest.raises(ValueError, match="test set"):
        linear_eval(np.zeros((4, 2)), np.array([0, 0, 1, 1]), np.zeros((3, 2)), np.zeros(2))


def test_group_split_keeps_each_group_on_one_side():
    y = np.array([0, 0, 0, 1, 1, 1, 0, 1, 0, 1])
    groups = np.array(["a", "a", "b", "b", "c", "c", "d", "d", "e", "e"])
    tr, va = stratified_split(y, 0.4, seed=1, groups=groups)
    assert set(groups[tr]).isdisjoint(groups[va]) and len(va) == 4 and len(tr) + len(va) == 10
