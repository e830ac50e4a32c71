"""Each distance's own mathematics: Minkowski orders 1, 2 and inf are the named metrics, Mahalanobis invariance under
linear maps, its covariances (given, pooled, total, Ledoit-Wolf) and whitening, the nearest enemy, and the options each
metric takes. Exactness of every metric on every engine against the oracle is test_kstar_properties.py."""
from __future__ import annotations

import math

import numpy as np
import pytest

from kstar_utils import compute_kstar
from kstar_utils.method.metrics import covariance, metric_space
from kstar_data import random_lattice


def test_minkowski_orders_one_two_and_inf_are_the_named_metrics():
    X, y = random_lattice(4, n=120)
    for p, name in ((1, "manhattan"), (2, "euclidean"), (math.inf, "chebyshev")):
        a = compute_kstar(X, y, metric="minkowski", p=p, return_enemy=True)
        b = compute_kstar(X, y, metric=name, return_enemy=True)
        assert all(np.array_equal(u, v) for u, v in zip(a, b)), name


def test_mahalanobis_is_invariant_under_invertible_linear_maps():
    rng = np.random.default_rng(6)
    X, y = rng.normal(size=(200, 5)) + 2.0 * rng.normal(size=(4, 5))[rng.integers(0, 4, 200)], None
    y = rng.integers(0, 4, 200)
    A = rng.normal(size=(5, 5)) + 3 * np.eye(5)  # invertible, anisotropic
    for cov in ("pooled", "total"):
        base = compute_kstar(X, y, metric="mahalanobis", cov=cov, shrinkage=0.0)
        assert np.array_equal(compute_kstar(X @ A, y, metric="mahalanobis", cov=cov, shrinkage=0.0), base), cov
    # Euclidean is not: the map changes its k*
    assert not np.array_equal(compute_kstar(X @ A, y), compute_kstar(X, y))


def test_mahalanobis_given_matrix_and_its_units():
    rng = np.random.default_rng(7)
    X, y = rng.normal(size=(80, 3)) * [1.0, 10.0, 0.1], rng.integers(0, 2, 80)
    sigma = np.diag([1.0, 100.0, 0.01])
    got = compute_kstar(X, y, metric="mahalanobis", cov=sigma)
    assert np.array_equal(got, compute_kstar(X / [1.0, 10.0, 0.1], y))  # whitening by a diagonal = standardising
    assert np.array_equal(compute_kstar(X * 2.0**-400, y, metric="mahalanobis", cov=sigma * 2.0**-800), got)
    with pytest.raises(ValueError, match=r"\(3, 3\)"):
        compute_kstar(X, y, metric="mahalanobis", cov=np.eye(4))
    with pytest.raises(ValueError, match="not positive definite"):
        compute_kstar(X, y, metric="mahalanobis", cov=np.diag([1.0, 0.0, 1.0]))
    X0 = X.copy()
    X0[:, 1] = 3.0  # a constant dimension: the estimate is singular without shrinkage
    with pytest.raises(ValueError, match="shrinkage"):
        compute_kstar(X0, y, metric="mahalanobis", shrinkage=0.0)
    assert compute_kstar(X0, y, metric="mahalanobis").shape == (80,)  # Ledoit-Wolf makes it positive definite


def test_pooled_covariance_and_ledoit_wolf():
    rng = np.random.default_rng(8)
    y = np.repeat([0, 1], 500)
    X = rng.normal(size=(1000, 3)) * [1.0, 2.0, 3.0] + np.array([[0, 0, 0], [50, 50, 50]])[y]
    sigma, info = covariance(X, y, "pooled", shrinkage=0.0)
    assert np.allclose(np.diag(sigma), [1.0, 4.0, 9.0], rtol=0.15)  # the class offset is not variance
    total, _ = covariance(X, y, "total", shrinkage=0.0)
    assert total[0, 0] > 500  # ... but it is for the total covariance
    _, auto = covariance(X, y, "pooled", shrinkage="auto")
    assert 0 <= auto["shrinkage"] < 0.05  # N >> D: Ledoit-Wolf barely shrinks
    Xw = rng.normal(size=(12, 10))
    _, small = covariance(Xw, np.repeat([0, 1], 6), "pooled", shrinkage="auto")
    assert small["shrinkage"] > auto["shrinkage"]  # D close to N: it shrinks much more


def test_enemy_is_foreign_and_at_the_nearest_foreign_score():
    rng = np.random.default_rng(10)
    X, y = rng.normal(size=(300, 8)), rng.integers(0, 5, 300)
    k, enemy = compute_kstar(X, y, return_enemy=True)
    assert (y[enemy] != y).all()
    d = ((X[:, None, :] - X[None, :, :]) ** 2).sum(-1)
    d[y[:, None] == y[None, :]] = np.inf
    assert np.allclose(d[np.arange(300), enemy], d.min(1))
    X2 = np.concatenate([X, X[:5]])  # exact foreign duplicates of samples 0..4: distance 0, k* = 1
    y2 = np.concatenate([y, (y[:5] + 1) % 5])
    k2, e2 = compute_kstar(X2, y2, return_enemy=True)
    assert (k2[:5] == 1).all() and np.array_equal(e2[:5], np.arange(300, 305))
    assert np.array_equal(e2[300:], np.arange(5))


def test_metric_space_records_what_was_chosen():
    rng = np.random.default_rng(11)
    X, y = rng.normal(size=(40, 3)), np.repeat([0, 1], 20)
    space = metric_space(X, "mahalanobis", codes=y)
    assert space.details["cov"] == "pooled" and 0 <= space.details["shrinkage"] <= 1
    assert 1 <= np.abs(space.queries).max() < 2
    assert metric_space(X, "minkowski(p=3)").metric.p == 3.0


def blobs(seed=0, n_per_class=20, n_classes=3, dim=4, sep=1.2):
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(n_classes), n_per_class)
    X = rng.normal(size=(y.size, dim)) + sep * rng.normal(size=(n_classes, dim))[y]
    return X, y


def slow_mahalanobis_kstar(X, y):
    """k* from the definition with d(p, q)^2 = (x_p - x_q)^T S^-1 (x_p - x_q), S the pooled within-class covariance."""
    classes = np.unique(y)
    resid = X - np.stack([X[y == c].mean(axis=0) for c in classes])[np.searchsorted(classes, y)]
    S_inv = np.linalg.inv(resid.T @ resid / (len(y) - classes.size))
    k = np.empty(len(y), dtype=int)
    for p in range(len(y)):
        diff = X - X[p]
        d = np.einsum("qi,ij,qj->q", diff, S_inv, diff)
        d_enemy = d[y != y[p]].min()
        same = (y == y[p]) & (np.arange(len(y)) != p)
        k[p] = 1 + int(np.sum(same & (d < d_enemy)))
    return k


def test_whitened_euclidean_kstar_is_mahalanobis_kstar():
    X, y = blobs(seed=1)
    got = compute_kstar(X, y, metric="mahalanobis", shrinkage=0.0)
    np.testing.assert_array_equal(got, slow_mahalanobis_kstar(X, y))


def test_whitening_gives_identity_within_class_covariance():
    X, y = blobs(seed=4, n_per_class=40, dim=3)
    W = metric_space(X, "mahalanobis(shrinkage=0)", codes=y).queries
    resid = W - np.stack([W[y == c].mean(axis=0) for c in np.unique(y)])[y]
    cov = resid.T @ resid / (len(y) - 3)
    np.testing.assert_allclose(cov / cov[0, 0], np.eye(3), atol=1e-10)  # the identity up to the canonical scale
    T = metric_space(X, "mahalanobis(cov=total, shrinkage=0)").queries
    tc = np.cov(T, rowvar=False)
    np.testing.assert_allclose(tc / tc[0, 0], np.eye(3), atol=1e-10)
