"""Who fractures whom: the fracture matrix, its pairs and differences, and the samples behind a class's skew."""
from __future__ import annotations

import numpy as np
import pytest

from kstar_utils import compute_kstar
from kstar_utils.analysis.fracture import (extreme_samples, fracture_difference, fracture_matrix, fracture_pairs,
                                           fracture_pivot, samples_behind)


def slow_matrix(labels, enemy_labels, khat, C):
    share = np.zeros((C, C))
    mean = np.full((C, C), np.nan)
    for c in range(C):
        members = [i for i in range(len(labels)) if labels[i] == c]
        for d in range(C):
            hit = [i for i in members if enemy_labels[i] == d]
            share[c, d] = len(hit) / len(members)
            if hit:
                mean[c, d] = sum(khat[i] for i in hit) / len(hit)
    return share, mean


def test_matrix_against_a_slow_count():
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(240, 6)) + rng.normal(size=(4, 6))[rng.integers(0, 4, 240)] * 0.8, None
    y = rng.integers(0, 4, 240)
    k, enemy = compute_kstar(X, y, return_enemy=True)
    khat = k / np.bincount(y)[y]
    tidy = fracture_matrix(y, y[enemy], khat, ["a", "b", "c", "d"])
    assert len(tidy) == 16 and list(tidy.columns) == ["class", "enemy_class", "n", "share", "mean_khat"]
    share, mean = slow_matrix(y, y[enemy], khat, 4)
    np.testing.assert_allclose(fracture_pivot(tidy).to_numpy(dtype=float), share)
    np.testing.assert_allclose(fracture_pivot(tidy, "mean_khat").to_numpy(dtype=float), mean)
    assert np.allclose(fracture_pivot(tidy).sum(axis=1), 1.0)
    assert (np.diag(fracture_pivot(tidy, "n").to_numpy()) == 0).all()  # an enemy is never of the own class
    with pytest.raises(ValueError, match="another class"):
        fracture_matrix(y, y, khat)


def test_pairs_and_difference():
    # classes 0 and 1 cut into each other; class 2 is far away from both
    labels = np.array([0, 0, 0, 1, 1, 2, 2])
    enemy_labels = np.array([1, 1, 2, 0, 0, 0, 1])
    khat = np.array([0.2, 0.4, 1.0, 0.5, 0.5, 1.0, 1.0])
    tidy = fracture_matrix(labels, enemy_labels, khat, ["cat", "dog", "ship"])
    pairs = fracture_pairs(tidy)
    assert (pairs.iloc[0]["class_a"], pairs.iloc[0]["class_b"]) == ("cat", "dog")
    assert pairs.iloc[0]["mutual"] == pytest.approx(2 / 3 + 1.0)
    assert pairs.iloc[0]["n_ab"] == 2 and pairs.iloc[0]["n_ba"] == 2
    other = fracture_matrix(labels, np.array([2, 2, 2, 2, 0, 0, 1]), khat, ["cat", "dog", "ship"])
    diff = fracture_difference(tidy, other).set_index(["class", "enemy_class"])
    assert diff.loc[("cat", "dog"), "delta_share"] == pytest.approx(-2 / 3)
    assert diff.loc[("cat", "ship"), "delta_share"] == pytest.approx(2 / 3)
    assert np.allclose(diff.groupby(level=0)["delta_share"].sum(), 0.0)


def test_extreme_samples_and_the_table_behind_a_class():
    kstar = np.array([1, 3, 2, 2, 1, 4, 1, 1])
    labels = np.array([0, 0, 0, 0, 1, 0, 1, 1])
    enemy = np.array([4, 6, 7, 4, 0, 7, 1, 2])
    assert extreme_samples(kstar / 5, labels, 0, 2, "fractured").tolist() == [0, 2]  # ties by index
    assert extreme_samples(kstar / 5, labels, 0, 2, "clustered").tolist() == [5, 1]
    t = samples_behind(kstar, labels, enemy, 0, n=2, class_names=["cat", "dog"])
    assert t["which"].tolist() == ["fractured", "fractured", "clustered", "clustered"]
    assert t["index"].tolist() == [0, 2, 5, 1]
    assert (t["enemy_label"] == "dog").all() and t["khat"].iloc[0] == pytest.approx(0.2)
    small = samples_behind(kstar, labels, enemy, 1, n=3)
    assert sorted(small["index"]) == [4, 6, 7]  # 3 samples: each shown once
    with pytest.raises(ValueError, match="no samples"):
        extreme_samples(kstar, labels, 5)
