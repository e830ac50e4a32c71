"""Statistics of kstar_utils.analysis.correlate: oracles from scipy, behaviour on monotone and independent data, bad input."""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from kstar_utils.analysis.correlate import (
    RESULT_COLUMNS,
    TABLE_COLUMNS,
    _kendall,
    _pearson,
    _spearman,
    agreement,
    correlate,
    correlation_table,
)

FAST = dict(n_boot=300, n_perm=300)


def test_vectorised_statistics_match_scipy_with_ties_and_batches():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 4, size=(6, 25)).astype(float)  # many ties
    y = rng.normal(size=(6, 25))
    y[:, :5] = 1.0
    for a, b in zip(x, y):
        assert _spearman(a, b) == pytest.approx(stats.spearmanr(a, b).statistic, abs=1e-12)
        assert _kendall(a, b) == pytest.approx(stats.kendalltau(a, b).statistic, abs=1e-12)
        assert _pearson(a, b) == pytest.approx(stats.pearsonr(a, b).statistic, abs=1e-12)
    ref = [stats.kendalltau(a, b).statistic for a, b in zip(x, y)]
    np.testing.assert_allclose(_kendall(x, y), ref, atol=1e-12)
    big_x, big_y = rng.normal(size=(2, 260)), rng.normal(size=(2, 260))  # the per-row scipy branch
    np.testing.assert_allclose(_kendall(big_x, big_y), [stats.kendalltau(a, b).statistic for a, b in zip(big_x, big_y)])
    assert np.isnan(_spearman(np.ones(5), np.arange(5.0))) and np.isnan(_kendall(np.arange(5.0), np.ones(5)))


def test_monotone_data_gives_rho_one_tight_interval_small_p():
    x = np.linspace(-1, 2, 15)
    y = np.exp(x)  # strictly increasing, not linear
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        res = correlate(x, y, seed=1, **FAST).set_index("method")
    assert list(correlate(x, y, n_boot=0, n_perm=0).columns) == RESULT_COLUMNS
    for m in ("spearman", "kendall"):
        assert res.loc[m, "statistic"] == pytest.approx(1.0)
        assert res.loc[m, "ci_low"] > 0.9
        assert res.loc[m, "p_value"] < 0.01
    assert res.loc["pearson", "statistic"] == pytest.approx(stats.pearsonr(x, y).statistic)
    assert (res["n"] == 15).all()
    decreasing = correlate(x, -y, methods=("spearman",), **FAST).iloc[0]
    assert decreasing["statistic"] == pytest.approx(-1.0) and decreasing["ci_high"] < -0.9


def test_independent_data_interval_covers_zero_and_p_is_large():
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=40), rng.normal(size=40)
    res = correlate(x, y, seed=2, **FAST)
    for _, row in res.iterrows():
        ref = {"spearman": stats.spearmanr, "kendall": stats.kendalltau, "pearson": stats.pearsonr}[row["method"]](x, y)
        assert row["statistic"] == pytest.approx(ref.statistic)
        assert row["ci_low"] < row["statistic"] < row["ci_high"]
        assert row["ci_low"] < 0 < row["ci_high"]
        assert row["p_value"] > 0.1
        # the permutation p-value agrees roughly with scipy's analytic one
        assert abs(row["p_value"] - ref.pvalue) < 0.15


def test_interval_coverage_on_correlated_data():
    rng = np.random.default_rng(5)
    x = rng.normal(size=60)
    y = 0.7 * x + 0.5 * rng.normal(size=60)
    row = correlate(x, y, methods=("pearson",), seed=0, **FAST).iloc[0]
    assert 0 < row["ci_low"] < row["statistic"] < row["ci_high"] < 1
    assert row["p_value"] < 0.01


def test_same_seed_same_result_and_invariance_to_pair_order():
    rng = np.random.default_rng(7)
    x, y = rng.normal(size=12), rng.normal(size=12)
    a = correlate(x, y, seed=4, **FAST)
    pd.testing.assert_frame_equal(a, correlate(x, y, seed=4, **FAST))
    order = rng.permutation(12)
    b = correlate(x[order], y[order], seed=4, n_boot=0, n_perm=0)
    np.testing.assert_allclose(a["statistic"], b["statistic"])


def test_degenerate_bootstrap_resamples_fall_back_without_crashing():
    # with 4 pairs, many resamples repeat one pair and have a constant side
    x, y = np.array([0.0, 1.0, 2.0, 3.0]), np.array([1.0, 0.0, 3.0, 2.0])
    with pytest.warns(RuntimeWarning, match="constant side"):
        res = correlate(x, y, seed=0, **FAST)
    assert np.isfinite(res[["statistic", "ci_low", "ci_high", "p_value"]].to_numpy()).all()
    assert ((res["ci_low"] >= -1) & (res["ci_high"] <= 1) & (res["ci_low"] <= res["ci_high"])).all()


@pytest.mark.parametrize(
    "x, y, match",
    [
        ([1.0, 2.0], [2.0, 1.0], "at least 3"),
        ([1.0, np.nan, 3.0, 4.0], [1.0, 2.0, 3.0, 4.0], "NaN"),
        ([1.0, 2.0, 3.0, 4.0], [1.0, np.inf, 3.0, 4.0], "inf"),
        ([2.0, 2.0, 2.0, 2.0], [1.0, 2.0, 3.0, 4.0], "constant"),
        ([1.0, 2.0, 3.0], [1.0, 2.0, 3.0, 4.0], "length"),
    ],
)
def test_bad_input_raises(x, y, match):
    with pytest.raises(ValueError, match=match):
        correlate(x, y, **FAST)


def test_bad_options_raise():
    x = np.arange(5.0)
    with pytest.raises(ValueError, match="unknown correlation method"):
        correlate(x, x**2, methods=("distance",))
    with pytest.raises(ValueError, match="confidence"):
        correlate(x, x**2, confidence=95)


def test_correlation_table_per_group_and_pooled():
    rng = np.random.default_rng(11)
    n = 24
    df = pd.DataFrame({"approx_skewness": rng.normal(size=n), "dataset": np.repeat(["cifar10", "imagenet"], n // 2)})
    df["clean_acc"] = 0.5 - 0.1 * df["approx_skewness"] + 0.01 * rng.normal(size=n)  # strongly decreasing
    df["robust_acc"] = rng.uniform(size=n)
    df.loc[3, "robust_acc"] = np.nan  # dropped from that pair only
    table = correlation_table(df, "approx_skewness", ["clean_acc", "robust_acc"], group="dataset", methods=("spearman", "kendall"), **FAST)
    assert list(table.columns) == TABLE_COLUMNS
    assert len(table) == 3 * 2 * 2  # (2 groups + pooled) x 2 ys x 2 methods
    assert set(table["group"]) == {"cifar10", "imagenet", "pooled"}
    clean = table[table["y"] == "clean_acc"]
    assert (clean["statistic"] < -0.8).all()
    robust = table[table["y"] == "robust_acc"].set_index(["group", "method"])
    assert robust.loc[("pooled", "spearman"), "n"] == n - 1
    assert robust.loc[("cifar10", "spearman"), "n"] == n // 2 - 1
    # each group's statistic equals correlate on that group alone
    sub = df[df["dataset"] == "imagenet"]
    direct = correlate(sub["approx_skewness"], sub["clean_acc"], methods=("spearman",), **FAST).iloc[0]
    row = clean[(clean["group"] == "imagenet") & (clean["method"] == "spearman")].iloc[0]
    assert row["statistic"] == pytest.approx(direct["statistic"])


def test_correlation_table_small_group_gives_nan_with_warning_and_missing_column_raises():
    df = pd.DataFrame({"g": ["a"] * 2 + ["b"] * 6, "x": np.arange(8.0), "y": np.arange(8.0) ** 2})
    with pytest.warns(RuntimeWarning, match="usable pair"):
        table = correlation_table(df, "x", "y", group="g", **FAST)
    assert table.loc[table["group"] == "a", "statistic"].isna().all()
    assert (table.loc[table["group"] == "a", "n"] == 2).all()
    assert table.loc[table["group"] == "b", "statistic"].notna().all()
    with pytest.raises(ValueError, match="not in the table"):
        correlation_table(df, "x", ["y", "zero_shot"], **FAST)


def test_agreement_of_gamma_and_gamma_prime():
    rng = np.random.default_rng(2)
    gamma = rng.normal(size=20)
    gamma_prime = gamma + 0.3  # same ranking, shifted
    out = agreement(gamma, gamma_prime, **FAST)
    assert out["n"] == 20
    assert out["spearman"] == pytest.approx(1.0) and out["pearson"] == pytest.approx(1.0)
    assert out["mean_abs_diff"] == pytest.approx(0.3) and out["mean_diff"] == pytest.approx(0.3)
    assert out["spearman_ci_low"] > 0.9
    with pytest.raises(ValueError, match="at least 3"):
        agreement([1.0, 2.0], [1.0, 2.0])
