"""Statistics of kstar_utils.analysis.correlate: oracles from scipy, behaviour on monotone and independent data, bad input."""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from kstar_utils import compute_kstar, summarize_skewness
from kstar_utils.analysis.correlate import (
    RESULT_COLUMNS,
    TABLE_COLUMNS,
    _kendall,
    _pearson,
    _spearman,
    agreement,
    bootstrap_approx_skewness,
    correlate,
    correlation_table,
    reliability_flags,
)
from kstar_utils.method.skewness import distribution_skew

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


def test_reliability_flags_rule():
    tight = np.full(20, 1.0) + np.linspace(-0.05, 0.05, 20)  # Γ' ≈ 1, tiny spread
    around_zero = np.linspace(-1.0, 1.2, 20)  # Γ' ≈ 0.1, SEM ≈ 0.15
    wide = np.linspace(-4.0, 8.0, 30)  # Γ' = 2, spread > 2
    out = reliability_flags({"tight": tight, "around_zero": around_zero, "wide": wide, "few": [1.0, 1.2, 0.9]}).set_index("model")
    assert not out.loc["tight", "unreliable"]
    assert out.loc["around_zero", "flag_sem"] and not out.loc["around_zero", "flag_spread"]
    assert out.loc["wide", "flag_spread"]
    assert out.loc["few", "flag_few_classes"] and out.loc["few", "unreliable"]
    assert out.loc["around_zero", "sem"] == pytest.approx(np.std(around_zero, ddof=1) / np.sqrt(20))
    assert out.loc["wide", "approx_skewness"] == pytest.approx(2.0)
    assert "sem" in out.loc["around_zero", "reason"]


def test_reliability_flags_accepts_a_summary_and_matches_its_gamma_prime():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(90, 3))
    y = np.repeat(np.arange(6), 15)
    X += y[:, None] * 0.4
    summary = summarize_skewness(compute_kstar(X, y), y)
    out = reliability_flags(summary).iloc[0]
    assert out["approx_skewness"] == pytest.approx(summary.approx_skewness)
    assert out["spread"] == pytest.approx(summary.skew_spread)
    assert out["n_classes"] == int(summary.per_class["included"].sum())


def _slow_bootstrap_gamma_prime(khat, codes, counts, n_boot, seed):
    """One resample at a time, every class skew through distribution_skew."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n_boot):
        skews = []
        for c in range(counts.size):
            kc = khat[codes == c]
            skews.append(distribution_skew(kc[rng.integers(0, kc.size, size=kc.size)], int(counts[c])))
        out.append(skews)
    return np.array(out)


def test_batched_class_resampling_matches_distribution_skew_row_by_row():
    from kstar_utils.analysis.correlate import _resampled_skews

    n_c = 6
    khat = np.array([1, 1, 1, 1, 2, 6]) / n_c  # many resamples are constant at 1/n_c -> +inf
    got = _resampled_skews(khat, n_c, 400, np.random.default_rng(5))
    draws = khat[np.random.default_rng(5).integers(0, khat.size, size=(400, khat.size))]
    expected = np.array([distribution_skew(d, n_c) for d in draws])
    np.testing.assert_allclose(got, expected)
    assert np.isposinf(got).any()


def test_bootstrap_approx_skewness_interval_contains_gamma_prime_and_narrows_with_n():
    rng = np.random.default_rng(4)

    def run(n_per_class):
        y = np.repeat(np.arange(4), n_per_class)
        X = rng.normal(size=(y.size, 3)) + y[:, None] * 0.8
        k = compute_kstar(X, y)
        gp = summarize_skewness(k, y).approx_skewness
        return gp, bootstrap_approx_skewness(k, y, n_boot=400, seed=0)

    gp_small, (lo_s, hi_s) = run(20)
    gp_big, (lo_b, hi_b) = run(120)
    assert lo_s < gp_small < hi_s
    assert lo_b < gp_big < hi_b
    assert hi_b - lo_b < hi_s - lo_s
    y = np.repeat(np.arange(4), 20)
    k = compute_kstar(rng.normal(size=(80, 3)), y)
    assert bootstrap_approx_skewness(k, y, n_boot=200, seed=3) == bootstrap_approx_skewness(k, y, n_boot=200, seed=3)


def test_bootstrap_approx_skewness_percentiles_match_a_slow_resampler():
    rng = np.random.default_rng(8)
    y = np.repeat(np.arange(3), 12)
    k = compute_kstar(rng.normal(size=(36, 2)) + y[:, None] * 0.5, y)
    codes = y
    counts = np.bincount(codes)
    khat = k / counts[codes]
    skews = _slow_bootstrap_gamma_prime(khat, codes, counts, 300, seed=9)
    from kstar_utils.method.skewness import mean_of_class_skews

    gp = np.array([mean_of_class_skews(s[~np.isnan(s)], np.ones((~np.isnan(s)).sum())) for s in skews])
    lo, hi = bootstrap_approx_skewness(k, y, n_boot=300, seed=9)
    # same resampling scheme, different random draws: the intervals agree up to Monte Carlo error
    width = np.quantile(gp, 0.975) - np.quantile(gp, 0.025)
    assert abs(lo - np.quantile(gp, 0.025)) < 0.3 * width
    assert abs(hi - np.quantile(gp, 0.975)) < 0.3 * width


def test_bootstrap_approx_skewness_bad_input():
    with pytest.raises(ValueError, match="1..n_c"):
        bootstrap_approx_skewness(np.array([1, 1, 9]), np.array([0, 0, 1]))
    with pytest.raises(ValueError, match="no class has a k. distribution"):
        bootstrap_approx_skewness(np.array([1, 1]), np.array([0, 1]))
    with pytest.raises(ValueError, match="n_boot"):
        bootstrap_approx_skewness(np.array([1, 2, 1, 2]), np.array([0, 0, 1, 1]), n_boot=0)
