"""Permutation p-values (exact where every pairing can be enumerated), percentile intervals and the partial rank
correlation, each against a slow obvious version or a reference implementation."""
from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from kstar_utils.analysis.correlate import (EXACT_PERMUTATIONS, _all_permutations, correlate, partial_correlation,
                                            permutation_p)

REFERENCE = {"spearman": lambda a, b: stats.spearmanr(a, b).statistic,
             "kendall": lambda a, b: stats.kendalltau(a, b).statistic,
             "pearson": lambda a, b: stats.pearsonr(a, b).statistic}


def _brute_force_p(x, y, method):
    """Every ordering of y, scipy's statistic, the share at least as extreme: the definition, slowly."""
    fn = REFERENCE[method]
    observed = abs(fn(x, y))
    orders = list(itertools.permutations(range(len(y))))
    return sum(abs(fn(x, y[list(o)])) >= observed - 1e-12 for o in orders) / len(orders)


@pytest.mark.parametrize("method", ["spearman", "kendall", "pearson"])
def test_exact_p_is_the_share_of_all_pairings(method):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 4, size=7).astype(float)  # ties in x and y
    y = x + rng.integers(0, 3, size=7)
    p, exact, p_min = permutation_p(x, y, method=method)
    assert exact and p_min == 1 / math.factorial(7)
    assert p == pytest.approx(_brute_force_p(x, y, method), abs=1e-12)


def test_every_permutation_once():
    for n in range(1, 8):
        perms = _all_permutations(n)
        assert perms.shape == (math.factorial(n), n)
        assert len({tuple(r) for r in perms}) == math.factorial(n)
        assert (np.sort(perms, axis=1) == np.arange(n)).all()


def test_ten_models_are_exact_and_more_are_drawn():
    assert math.factorial(10) == EXACT_PERMUTATIONS
    x = np.arange(10.0)
    p, exact, p_min = permutation_p(x, x, method="spearman")
    # only the identity and the reversal are as extreme as a perfect rank agreement: p = 2 / 10!
    assert exact and p == pytest.approx(2 / math.factorial(10)) and p_min == 1 / math.factorial(10)
    x = np.arange(11.0)
    p, exact, p_min = permutation_p(x, x, method="spearman", n_perm=999, seed=1)
    assert not exact and p == p_min == 1 / 1000  # (0 + 1) / (999 + 1): never below what 999 draws can show
    y = np.random.default_rng(2).normal(size=11)
    assert permutation_p(x, y, n_perm=999, seed=3) == permutation_p(x, y, n_perm=999, seed=3)
    assert np.isnan(permutation_p(x, y, n_perm=0)[0])


def test_drawn_p_agrees_with_the_exact_one():
    rng = np.random.default_rng(4)
    x = rng.normal(size=9)
    y = 0.5 * x + rng.normal(size=9)
    exact, was_exact, _ = permutation_p(x, y)
    # the same statistic over 20,000 random pairings estimates the exact share
    from kstar_utils.analysis import correlate as module

    prepare, score = module._scores("spearman", x)
    perms = rng.permuted(np.broadcast_to(np.arange(9), (20000, 9)), axis=1)
    hits = int(np.sum(np.abs(score(prepare(y), perms)) >= abs(stats.spearmanr(x, y).statistic) - 1e-12))
    drawn = module._p_from(hits, False, 20000)[0]
    assert was_exact and drawn == pytest.approx(exact, abs=0.02)


def test_correlate_reports_how_its_p_was_computed():
    x = np.arange(8.0)
    y = np.array([0, 2, 1, 3, 5, 4, 7, 6], dtype=float)
    row = correlate(x, y, methods=("spearman",), n_boot=200).iloc[0]
    assert bool(row["p_exact"]) and row["p_min"] == 1 / math.factorial(8)
    assert row["p_value"] == pytest.approx(_brute_force_p(x, y, "spearman"), abs=1e-12)
    big = correlate(np.arange(30.0), np.arange(30.0) ** 2, methods=("spearman",), n_boot=200, n_perm=499).iloc[0]
    assert not bool(big["p_exact"]) and big["p_value"] == big["p_min"] == 1 / 500


def test_the_interval_is_the_percentile_interval_of_the_model_resamples():
    rng = np.random.default_rng(6)
    x = rng.normal(size=12)
    y = x + rng.normal(size=12)
    row = correlate(x, y, methods=("spearman",), n_boot=999, n_perm=0, seed=5).iloc[0]
    seed = np.random.SeedSequence(5).spawn(2)[0]
    ref = stats.bootstrap((x, y), lambda a, b, axis=-1: np.asarray([stats.spearmanr(u, v).statistic
                                                                     for u, v in zip(np.atleast_2d(a),
                                                                                     np.atleast_2d(b))]).squeeze(),
                          paired=True, vectorized=True, n_resamples=999, method="percentile",
                          rng=np.random.default_rng(seed))
    assert row["ci_low"] == pytest.approx(ref.confidence_interval.low, abs=1e-9)
    assert row["ci_high"] == pytest.approx(ref.confidence_interval.high, abs=1e-9)


@pytest.mark.parametrize("n, seed", [(8, 0), (20, 1), (30, 2)])
def test_partial_rank_correlation_matches_pingouin(n, seed):
    pg = pytest.importorskip("pingouin")
    rng = np.random.default_rng(seed)
    z = rng.normal(size=n)
    x = z + rng.normal(size=n)
    y = 0.8 * z + 0.3 * x + rng.normal(size=n)
    res = partial_correlation(x, y, z, n_boot=300, n_perm=999)
    ref = pg.partial_corr(pd.DataFrame({"x": x, "y": y, "z": z}), x="x", y="y", covar="z", method="spearman")
    assert res["statistic"] == pytest.approx(float(ref["r"].iloc[0]), abs=1e-10)
    assert res["n"] == n and res["ci_low"] <= res["statistic"] <= res["ci_high"]


def test_partial_correlation_is_the_correlation_of_rank_residuals_and_its_p_is_freedman_lane():
    rng = np.random.default_rng(8)
    z = rng.normal(size=7)
    x, y = z + rng.normal(size=7), z + rng.normal(size=7)
    res = partial_correlation(x, y, z, n_boot=0)
    rx, ry, rz = (stats.rankdata(v) for v in (x, y, z))
    design = np.column_stack([np.ones(7), rz])
    fit = lambda v: design @ np.linalg.lstsq(design, v, rcond=None)[0]  # noqa: E731
    ex, ey = rx - fit(rx), ry - fit(ry)
    assert res["statistic"] == pytest.approx(stats.pearsonr(ex, ey).statistic, abs=1e-12)
    # Freedman-Lane by hand: y* = fit(ry) + residuals in every order, partial correlation recomputed each time
    observed = abs(res["statistic"])
    hits = 0
    for order in itertools.permutations(range(7)):
        ystar = fit(ry) + ey[list(order)]
        hits += abs(stats.pearsonr(ex, ystar - fit(ystar)).statistic) >= observed - 1e-12
    assert res["p_exact"] and res["p_value"] == pytest.approx(hits / math.factorial(7), abs=1e-12)


def test_partial_correlation_refuses_bad_input():
    with pytest.raises(ValueError, match="differ in length"):
        partial_correlation([1.0, 2.0, 3.0, 4.0], [1.0, 3.0, 2.0, 4.0], [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="z is constant"):
        partial_correlation([1.0, 2.0, 3.0, 4.0], [1.0, 3.0, 2.0, 4.0], [1.0, 1.0, 1.0, 1.0])


@pytest.mark.parametrize("method", ["spearman", "kendall"])
def test_the_exact_p_of_untied_rankings_from_the_shared_null_equals_enumerating_every_pairing(method):
    from kstar_utils.analysis import correlate

    rng = np.random.default_rng(3)
    for n in range(3, 9):
        for _ in range(4):
            x, y = rng.normal(size=n), rng.normal(size=n)
            p, exact, p_min = correlate.permutation_p(x, y, method=method)
            prepare, score = correlate._scores(method, x)
            state = prepare(y)
            observed = abs(float(score(state, np.arange(n)[None, :])[0]))
            every = correlate._all_permutations(n).astype(np.intp)
            brute = np.mean(np.abs(score(state, every)) >= observed - 1e-12)
            assert exact and p == pytest.approx(brute, abs=1e-12) and p_min == pytest.approx(1 / math.factorial(n))
    # with ties the null depends on the data: the enumeration, not the shared table
    x, y = np.array([1.0, 1, 2, 3, 4]), np.array([5.0, 3, 3, 1, 0])
    prepare, score = correlate._scores(method, x)
    state = prepare(y)
    observed = abs(float(score(state, np.arange(5)[None, :])[0]))
    brute = np.mean(np.abs(score(state, correlate._all_permutations(5).astype(np.intp))) >= observed - 1e-12)
    assert correlate.permutation_p(x, y, method=method)[0] == pytest.approx(brute, abs=1e-12)
