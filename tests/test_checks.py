"""The open checks (analysis.checks): k* under several metrics, class-skew correlation, latent noise, ranking change."""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from kstar_utils import compute_kstar, summarize_skewness
from kstar_utils.analysis.checks import (
    class_skew_correlation,
    kstar_by_metric,
    perturb_latents,
    perturbation_study,
    ranking_change,
)

FAST = dict(n_boot=200, n_perm=200)


def blobs(seed=0, n_per_class=20, n_classes=3, dim=4, sep=1.2):
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(n_classes), n_per_class)
    X = rng.normal(size=(y.size, dim)) + sep * rng.normal(size=(n_classes, dim))[y]
    return X, y


def test_kstar_by_metric_uses_each_distance():
    X, y = blobs(seed=5)
    out = kstar_by_metric(X, y, metrics=("euclidean", "manhattan", {"name": "minkowski", "p": 3},
                                         "mahalanobis(shrinkage=0.0)"))
    assert list(out) == ["euclidean", "manhattan", "minkowski(p=3)", "mahalanobis(shrinkage=0)"]
    np.testing.assert_array_equal(out["manhattan"], compute_kstar(X, y, metric="manhattan"))
    np.testing.assert_array_equal(out["minkowski(p=3)"], compute_kstar(X, y, metric="minkowski", p=3))
    with pytest.raises(ValueError, match="unknown metric"):
        kstar_by_metric(X, y, metrics=("manhatan",))


def test_noise_at_strength_zero_changes_nothing():
    X, y = blobs(seed=6)
    X32 = X.astype(np.float32)
    out = perturb_latents(X32, 0.0, seed=3)
    np.testing.assert_array_equal(out, X32)
    assert out.dtype == np.float32 and out is not X32
    np.testing.assert_array_equal(compute_kstar(perturb_latents(X, 0, seed=1), y), compute_kstar(X, y))
    study = perturbation_study(X, y, [0.0])
    assert study.loc[0, "frac_kstar_changed"] == 0 and study.loc[0, "mean_abs_khat_change"] == 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert study.loc[0, "approx_skewness"] == pytest.approx(summarize_skewness(compute_kstar(X, y), y).approx_skewness)


def test_noise_is_scaled_by_feature_std_and_seeded():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(4000, 3)) * np.array([1.0, 10.0, 0.1])
    noise = perturb_latents(X, 0.5, seed=7) - X
    np.testing.assert_allclose(noise.std(axis=0) / X.std(axis=0), 0.5, rtol=0.05)
    np.testing.assert_allclose(noise.mean(axis=0) / X.std(axis=0), 0.0, atol=0.05)
    np.testing.assert_array_equal(perturb_latents(X, 0.5, seed=7), perturb_latents(X, 0.5, seed=7))
    assert not np.array_equal(perturb_latents(X, 0.5, seed=7), perturb_latents(X, 0.5, seed=8))
    g = perturb_latents(X, 0.5, seed=7, scale="global") - X
    np.testing.assert_allclose(g.std(), 0.5 * X.std(), rtol=0.05)
    for bad in (-0.1, np.nan, np.inf):
        with pytest.raises(ValueError, match="strength"):
            perturb_latents(X, bad)


def test_more_noise_changes_more_kstar():
    X, y = blobs(seed=9, n_per_class=30, sep=2.0)
    study = perturbation_study(X, y, [0.0, 0.05, 3.0], seed=0)
    frac = study["frac_kstar_changed"].to_numpy()
    assert frac[0] == 0 and frac[2] > frac[1] and frac[2] > 0.3


def test_class_skew_correlation_matches_by_label():
    rng = np.random.default_rng(2)
    labels = [f"class{i}" for i in range(12)]
    a = pd.Series(rng.normal(size=12), index=labels)
    b = (2 * a + 1)[::-1]  # same classes, other order: perfectly related by label
    res = class_skew_correlation(a, b, **FAST).set_index("method")
    assert res.loc["spearman", "statistic"] == pytest.approx(1.0)
    assert (res["n"] == 12).all()
    # by position the reversed order would be different
    by_position = class_skew_correlation(a.to_numpy(), b.to_numpy(), methods=("spearman",), n_boot=0, n_perm=0)
    assert by_position.iloc[0]["statistic"] == pytest.approx(stats.spearmanr(a.to_numpy(), b.to_numpy()).statistic)
    with pytest.raises(ValueError, match="at least 3"):
        class_skew_correlation(a.iloc[:2], b)


def test_class_skew_correlation_on_summaries_uses_included_classes_and_inf_rule():
    X, y = blobs(seed=3, n_per_class=15, n_classes=6)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        s1 = summarize_skewness(compute_kstar(X, y), y)
        s2 = summarize_skewness(compute_kstar(X, y, metric="cosine"), y)
    res = class_skew_correlation(s1, s2, methods=("spearman",), n_boot=0, n_perm=0).iloc[0]
    assert res["n"] == int((s1.per_class["included"] & s2.per_class["included"]).sum())
    per = pd.DataFrame({"label": list("abcd"), "skew": [np.inf, 1.0, 0.5, -np.inf]})
    other = pd.DataFrame({"label": list("abcd"), "skew": [3.0, 2.0, 1.0, 0.0]})
    out = class_skew_correlation(per, other, methods=("pearson",), n_boot=0, n_perm=0).iloc[0]
    # ±inf -> the largest / smallest finite skew: (1, 1, 0.5, 0.5) against (3, 2, 1, 0)
    assert out["statistic"] == pytest.approx(stats.pearsonr([1, 1, 0.5, 0.5], [3, 2, 1, 0]).statistic)


def test_ranking_change():
    ids = [f"m{i}" for i in range(8)]
    a = pd.DataFrame({"model_id": ids, "approx_skewness": np.arange(8.0)})
    same = ranking_change(a, a.assign(approx_skewness=a["approx_skewness"] * 3 + 1), **FAST)
    assert same["kendall_tau"] == pytest.approx(1.0) and same["max_rank_shift"] == 0 and same["same_best"]
    reversed_ = ranking_change(a, a.assign(approx_skewness=-a["approx_skewness"]), **FAST)
    assert reversed_["kendall_tau"] == pytest.approx(-1.0) and reversed_["max_rank_shift"] == 7
    assert not reversed_["same_best"]
    # one swap of neighbours among 8 models: tau = 1 - 2 * 1 / 28
    swapped = a.copy()
    swapped.loc[[2, 3], "approx_skewness"] = [3.0, 2.0]
    one = ranking_change(a, swapped, n_boot=0, n_perm=0)
    assert one["kendall_tau"] == pytest.approx(1 - 2 / 28) and one["max_rank_shift"] == 1
    partial = ranking_change(a, a.iloc[2:], n_boot=0, n_perm=0)
    assert partial["n"] == 6 and partial["n_only_a"] == 2 and partial["n_only_b"] == 0
    as_mapping = ranking_change(dict(zip(ids, range(8))), dict(zip(ids, range(8))), n_boot=0, n_perm=0)
    assert as_mapping["kendall_tau"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="at least 3"):
        ranking_change(a.iloc[:2], a, n_boot=0, n_perm=0)
    with pytest.raises(ValueError, match="columns"):
        ranking_change(a.rename(columns={"model_id": "model"}), a)
