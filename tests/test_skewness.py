"""Skewness summary: SciPy's g1 per class, the pattern thresholds, the ±inf rule, degenerate classes, Γ and Γ'."""
import warnings

import numpy as np
import pytest
import torch
from scipy import stats

from kstar_utils import compute_kstar, normalize_kstar, summarize_skewness
from kstar_utils.method.skewness import (CLUSTERED, FRACTURED, OVERLAPPED, UNDEFINED,
                                         bootstrap_approx_skewness, distribution_skew, pattern_of)


def _labels(*sizes):
    return np.repeat(np.arange(len(sizes)), sizes)


def test_pattern_thresholds_are_strict():
    assert pattern_of(0.5) == OVERLAPPED and pattern_of(-0.5) == OVERLAPPED
    assert pattern_of(0.5000001) == FRACTURED and pattern_of(-0.5000001) == CLUSTERED
    assert pattern_of(np.inf) == FRACTURED and pattern_of(-np.inf) == CLUSTERED
    assert pattern_of(np.nan) == UNDEFINED


def test_class_skew_is_scipy_default_skew_of_normalised_kstar():
    rng = np.random.default_rng(0)
    labels = _labels(20, 30)
    k = np.concatenate([rng.integers(1, 21, 20), rng.integers(1, 31, 30)])
    s = summarize_skewness(k, labels)
    for c, n in ((0, 20), (1, 30)):
        expected = stats.skew(k[labels == c] / n)
        row = s.per_class[s.per_class["label"] == c].iloc[0]
        assert row["skew"] == pytest.approx(expected, rel=1e-12)
        assert row["mean"] == pytest.approx(np.mean(k[labels == c] / n))
        assert row["std"] == pytest.approx(np.std(k[labels == c] / n))
        assert row["n"] == n
    assert s.true_skewness == pytest.approx(stats.skew(normalize_kstar(k, labels)))
    assert s.approx_skewness == pytest.approx(s.per_class["skew"].mean())


def test_constant_classes_get_infinite_skew_and_the_replacement_rule():
    # class 0: every k* = n_c (all classmates first) -> -inf, Clustered
    # class 1: every k* = 1 (nearest neighbour always foreign) -> +inf, Fractured
    # classes 2, 3: ordinary distributions with finite skews
    k0 = np.full(5, 5)
    k1 = np.ones(4, dtype=int)
    k2 = np.array([1, 1, 1, 2, 5])
    k3 = np.array([1, 5, 6, 6, 6, 6])
    k = np.concatenate([k0, k1, k2, k3])
    labels = _labels(5, 4, 5, 6)
    s = summarize_skewness(k, labels)
    pc = s.per_class.set_index("label")
    assert pc.loc[0, "skew"] == -np.inf and pc.loc[0, "pattern"] == CLUSTERED
    assert pc.loc[1, "skew"] == np.inf and pc.loc[1, "pattern"] == FRACTURED
    g2, g3 = stats.skew(k2 / 5), stats.skew(k3 / 6)
    assert g2 > 0 > g3
    expected = np.mean([min(g2, g3), max(g2, g3), g2, g3])  # -inf -> smallest finite, +inf -> largest finite
    assert s.approx_skewness == pytest.approx(expected)
    w_expected = np.average([min(g2, g3), max(g2, g3), g2, g3], weights=[5, 4, 5, 6])
    assert s.approx_skewness_weighted == pytest.approx(w_expected)
    assert s.pattern_counts[FRACTURED] >= 1 and s.pattern_counts[CLUSTERED] >= 1


def test_singleton_class_is_reported_excluded_and_warned():
    k = np.array([1, 1, 2, 3, 1, 1, 2])
    labels = np.array(["a", "b", "b", "b", "c", "c", "c"])
    with pytest.warns(UserWarning, match="no k\\* distribution"):
        s = summarize_skewness(k, labels)
    row = s.per_class.set_index("label").loc["a"]
    assert row["n"] == 1 and np.isnan(row["skew"]) and row["pattern"] == UNDEFINED and not row["included"]
    kb, kc = np.array([1, 2, 3]) / 3, np.array([1, 1, 2]) / 3
    assert s.approx_skewness == pytest.approx((stats.skew(kb) + stats.skew(kc)) / 2)
    assert s.true_skewness == pytest.approx(stats.skew(np.concatenate([kb, kc])))


def test_all_classes_clustered_gives_minus_infinity():
    k = np.array([3, 3, 3, 2, 2])
    s = summarize_skewness(k, _labels(3, 2))
    assert s.approx_skewness == -np.inf and s.true_skewness == -np.inf


def test_distribution_skew_of_other_constants_is_undefined():
    assert np.isnan(distribution_skew(np.full(4, 0.5), 4))  # constant, neither 1/n_c nor 1
    assert distribution_skew(np.full(4, 0.25), 4) == np.inf


def test_string_labels_torch_inputs_and_permutation_invariance():
    rng = np.random.default_rng(1)
    labels = np.array(["cat"] * 12 + ["dog"] * 9 + ["emu"] * 15)
    counts = {"cat": 12, "dog": 9, "emu": 15}
    k = np.array([rng.integers(1, counts[l] + 1) for l in labels])
    base = summarize_skewness(k, labels)
    perm = rng.permutation(k.size)
    permuted = summarize_skewness(torch.as_tensor(k[perm]), labels[perm].tolist())
    assert base.approx_skewness == pytest.approx(permuted.approx_skewness, rel=1e-12)
    assert base.true_skewness == pytest.approx(permuted.true_skewness, rel=1e-12)
    assert list(base.per_class["label"]) == ["cat", "dog", "emu"]


def test_relabelling_classes_does_not_change_coefficients():
    rng = np.random.default_rng(2)
    labels = _labels(10, 14, 8)
    k = np.concatenate([rng.integers(1, n + 1, n) for n in (10, 14, 8)])
    a = summarize_skewness(k, labels)
    b = summarize_skewness(k, np.array([7, 3, 5])[labels])
    assert a.approx_skewness == pytest.approx(b.approx_skewness)
    assert a.true_skewness == pytest.approx(b.true_skewness)


def test_kstar_out_of_range_is_rejected():
    with pytest.raises(ValueError, match="1..n_c"):
        summarize_skewness(np.array([1, 4, 1]), np.array([0, 0, 1]))
    with pytest.raises(ValueError, match="differ in length"):
        normalize_kstar(np.array([1, 1]), np.array([0, 0, 1]))


def test_no_warning_for_ordinary_input():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        summarize_skewness(np.array([1, 2, 2, 1, 1, 2]), _labels(3, 3))


# -- how far Γ' can be trusted ----------------------------------------------------------------------------------------
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
    from kstar_utils.method.skewness import _resampled_skews

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
