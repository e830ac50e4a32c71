"""Γ' of class-stratified subsamples (analysis.sampling) against slow, obvious versions on small seeded data, and the
driver that reads feature files (pipeline.sample_size)."""
import itertools

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from oracle import kstar_oracle

from kstar_utils import compute_kstar, summarize_skewness
from kstar_utils.analysis import sampling
from kstar_utils.pipeline import sample_size
from kstar_utils.pipeline.features import save_features


def _data(n_per_class=(12, 12, 12), d=3, seed=0, shift=1.5):
    """Gaussian classes, labels as strings (the path every caller's class names take)."""
    rng = np.random.default_rng(seed)
    labels = np.concatenate([np.full(k, f"c{c}") for c, k in enumerate(n_per_class)])
    centres = {f"c{c}": shift * rng.standard_normal(d) for c in range(len(n_per_class))}
    X = np.stack([centres[lab] for lab in labels]) + rng.standard_normal((labels.size, d))
    order = rng.permutation(labels.size)  # classes interleaved, as in a real set
    return X[order], labels[order]


def _slow_coefficients(X, labels):
    """Γ' (mean of the class skews of k*/n_c) and Γ (skew of the pooled k*/n_c), written out with the oracle and
    docs/method.md's conventions: a class constant at 1 has skew -inf, one constant at 1/n_c +inf, and an infinite
    skew is replaced by the largest / smallest finite one before averaging."""
    k = kstar_oracle(X, labels)
    names = np.unique(labels)
    n_c = {c: int(np.sum(labels == c)) for c in names}
    khat = np.array([k[i] / n_c[labels[i]] for i in range(labels.size)])
    skews = []
    for c in names:
        kc = khat[labels == c]
        if np.all(kc == kc[0]):
            skews.append(-np.inf if kc[0] == 1 else np.inf)
        else:
            skews.append(stats.skew(kc))
    finite = [s for s in skews if np.isfinite(s)]
    skews = [s if np.isfinite(s) else (max(finite) if s > 0 else min(finite)) for s in skews]
    return float(np.mean(skews)), float(stats.skew(khat))


# ------------------------------------------------------------------------------------------------ drawing
def test_a_draw_takes_n_of_every_class_once_and_is_fixed_by_seed_size_and_draw():
    _, y = _data((9, 11, 14))
    a = sampling.draw_subsample(y, 5, seed=3, draw=1)
    assert np.all(np.diff(a) > 0)  # sorted, no repeats
    assert {c: int(np.sum(y[a] == c)) for c in np.unique(y)} == {"c0": 5, "c1": 5, "c2": 5}
    np.testing.assert_array_equal(a, sampling.draw_subsample(y, 5, seed=3, draw=1))
    assert not np.array_equal(a, sampling.draw_subsample(y, 5, seed=3, draw=2))
    assert not np.array_equal(a, sampling.draw_subsample(y, 5, seed=4, draw=1))
    # the labels' container does not change the draw: the same images for every model of one set
    np.testing.assert_array_equal(a, sampling.draw_subsample(list(y), 5, seed=3, draw=1))


def test_draws_are_uniform_within_each_class():
    _, y = _data((10, 10, 20))
    counts = np.zeros(y.size)
    for d in range(2000):
        counts[sampling.draw_subsample(y, 4, seed=0, draw=d)] += 1
    share = counts / 2000
    for c, n_c in (("c0", 10), ("c1", 10), ("c2", 20)):
        # each sample is in a draw with probability 4 / n_c; 2000 draws: sd <= 0.011, so 0.05 is > 4 sd
        assert np.abs(share[y == c] - 4 / n_c).max() < 0.05


def test_draws_refuse_sizes_larger_than_a_class():
    _, y = _data((9, 11, 14))
    with pytest.raises(ValueError, match=r"exceeds the size of class\(es\) \['c0'\].*smallest class: 9"):
        sampling.draw_subsample(y, 10)
    with pytest.raises(ValueError, match="n_per_class must be a whole number >= 1"):
        sampling.draw_subsample(y, 0)


# ------------------------------------------------------------------------------------------------ subsample table
def test_each_row_is_the_slow_computation_on_its_draw():
    X, y = _data((12, 12, 12))
    table, per_class = sampling.subsample_skewness(X, y, [4, 7], draws=3, seed=5, keys={"model": "m"})
    assert list(table.columns[:4]) == ["model", "n_per_class", "draw", "n"]
    assert len(table) == 6 and set(table["model"]) == {"m"} and not table["full"].any()
    for row in table.itertuples():
        index = sampling.draw_subsample(y, row.n_per_class, seed=5, draw=row.draw)
        gp, g = _slow_coefficients(X[index], y[index])
        assert row.n == 3 * row.n_per_class
        assert row.approx_skewness == pytest.approx(gp, abs=1e-12)
        assert row.true_skewness == pytest.approx(g, abs=1e-12)
    assert len(per_class) == 6 * 3
    assert set(per_class["label"]) == {"c0", "c1", "c2"}


def test_kstar_is_recomputed_on_the_subsample_not_taken_from_the_whole_set():
    X, y = _data((12, 12, 12))
    table, _ = sampling.subsample_skewness(X, y, [6], draws=1, seed=0)
    index = sampling.draw_subsample(y, 6, seed=0, draw=0)
    k = compute_kstar(X[index], y[index])
    assert table["approx_skewness"].iloc[0] == summarize_skewness(k, y[index]).approx_skewness
    # the shortcut (the whole set's k* of the same samples) gives other values on these data, so it would be caught
    assert not np.array_equal(k, compute_kstar(X, y)[index])


def test_the_full_size_is_the_whole_set_computed_once():
    X, y = _data((10, 10, 10))
    table, _ = sampling.subsample_skewness(X, y, [10, 5], draws=4)
    whole = table[table["n_per_class"] == 10]
    assert len(whole) == 1 and bool(whole["full"].iloc[0]) and whole["draw"].iloc[0] == 0
    s = summarize_skewness(compute_kstar(X, y), y)
    assert whole["approx_skewness"].iloc[0] == s.approx_skewness
    assert whole["true_skewness"].iloc[0] == s.true_skewness
    assert (table["n_per_class"] == 5).sum() == 4
    assert list(table["n_per_class"]) == [5, 5, 5, 5, 10]  # sizes in increasing order
    assert sampling.set_skewness(X, y) == {k: v for k, v in whole.iloc[0].items()
                                           if k in sampling.VALUES}


def test_draws_do_not_depend_on_the_other_sizes_or_on_how_many_draws():
    X, y = _data((12, 12, 12))
    a, _ = sampling.subsample_skewness(X, y, [5], draws=2, seed=1)
    b, _ = sampling.subsample_skewness(X, y, [3, 5, 8], draws=4, seed=1)
    pd.testing.assert_frame_equal(a, b[b["n_per_class"] == 5].head(2).reset_index(drop=True))


def test_a_metric_reaches_the_engine():
    X, y = _data((12, 12, 12))
    table, _ = sampling.subsample_skewness(X, y, [6], draws=2, metric="manhattan")
    for row in table.itertuples():
        index = sampling.draw_subsample(y, 6, seed=0, draw=row.draw)
        k = kstar_oracle(X[index], y[index], metric="manhattan")
        assert row.approx_skewness == pytest.approx(summarize_skewness(k, y[index]).approx_skewness, abs=1e-12)


@pytest.mark.parametrize("sizes, match", [([13], r"sizes \[13\] exceed the smallest class \(12 samples"),
                                          ([1], "each size must be a whole number >= 2"),
                                          ([4, 4], "sizes repeat a value"), ([], "sizes is empty"),
                                          ([2.5], "each size must be a whole number")])
def test_bad_sizes_are_refused_before_any_work(sizes, match):
    X, y = _data((12, 14, 16))
    with pytest.raises(ValueError, match=match):
        sampling.subsample_skewness(X, y, sizes)


def test_bad_inputs_are_refused():
    X, y = _data((12, 12, 12))
    with pytest.raises(ValueError, match="draws must be a whole number >= 1"):
        sampling.subsample_skewness(X, y, [4], draws=0)
    with pytest.raises(ValueError, match=r"features must be an \(N, D\) array"):
        sampling.subsample_skewness(X[:, 0], y, [4])
    with pytest.raises(ValueError, match="length|samples"):
        sampling.subsample_skewness(X[:-1], y, [4])
    with pytest.raises(ValueError, match="at least 2 classes"):
        sampling.subsample_skewness(X, np.zeros(len(y), dtype=int), [4])


# ------------------------------------------------------------------------------------------------ summaries
def test_size_summary_is_the_plain_statistics_of_the_draws():
    rng = np.random.default_rng(0)
    rows = [{"model": m, "layer": "p", "n_per_class": n, "draw": d, "full": False,
             "approx_skewness": float(rng.normal())} for m in ("a", "b") for n in (5, 10) for d in range(7)]
    rows += [{"model": m, "layer": "p", "n_per_class": 20, "draw": 0, "full": True, "approx_skewness": v}
             for m, v in (("a", 0.3), ("b", -0.2))]
    table = pd.DataFrame(rows)
    out = sampling.size_summary(table, values="approx_skewness", confidence=0.9)
    assert len(out) == 6 and set(out["value"]) == {"approx_skewness"}
    for r in out.itertuples():
        v = table[(table["model"] == r.model) & (table["n_per_class"] == r.n_per_class)]["approx_skewness"].to_numpy()
        assert r.mean == pytest.approx(v.mean())
        assert r.q_low == pytest.approx(np.quantile(v, 0.05)) and r.q_high == pytest.approx(np.quantile(v, 0.95))
        assert r.full == {"a": 0.3, "b": -0.2}[r.model]
        assert r.bias == pytest.approx(v.mean() - r.full)
        assert r.sd == (0.0 if r.n_per_class == 20 else pytest.approx(np.std(v, ddof=1)))


def test_size_summary_leaves_out_infinite_values_and_says_so():
    table = pd.DataFrame({"n_per_class": [3, 3, 3], "draw": [0, 1, 2], "approx_skewness": [1.0, np.inf, 2.0]})
    out = sampling.size_summary(table, values=["approx_skewness"])
    assert out["n_not_finite"].iloc[0] == 1 and out["mean"].iloc[0] == 1.5 and np.isnan(out["full"].iloc[0])


def test_size_summary_gives_one_block_per_value():
    X, y = _data((8, 8, 8))
    table, _ = sampling.subsample_skewness(X, y, [4, 8], draws=3, keys={"model": "m"})
    out = sampling.size_summary(table, values=["approx_skewness", "n_fractured"])
    assert out[["value", "n_per_class"]].values.tolist() == [["approx_skewness", 4], ["approx_skewness", 8],
                                                            ["n_fractured", 4], ["n_fractured", 8]]
    frac = out[out["value"] == "n_fractured"].set_index("n_per_class")
    assert frac.loc[4, "mean"] == pytest.approx(table[table["n_per_class"] == 4]["n_fractured"].mean())
    assert frac.loc[8, "full"] == table[table["full"]]["n_fractured"].iloc[0]
    with pytest.raises(ValueError, match="lacks columns"):
        sampling.size_summary(table, values=["gamma"])


def _kendall_by_pairs(a, b):
    """τ-a by counting concordant and discordant pairs (equal to τ-b without ties)."""
    s = sum(np.sign(a[i] - a[j]) * np.sign(b[i] - b[j]) for i, j in itertools.combinations(range(len(a)), 2))
    return s / (len(a) * (len(a) - 1) / 2)


def _ranking_table(values_by_draw, full):
    rows = [{"model": m, "layer": "p", "n_per_class": 5, "draw": d, "full": False, "approx_skewness": v}
            for d, values in enumerate(values_by_draw) for m, v in values.items()]
    rows += [{"model": m, "layer": "p", "n_per_class": 9, "draw": 0, "full": True, "approx_skewness": v}
             for m, v in full.items()]
    return pd.DataFrame(rows)


def test_an_unchanged_ranking_has_tau_one_and_a_reversed_one_minus_one():
    full = {"a": 0.1, "b": 0.5, "c": 0.9, "d": 2.0}
    same = {m: 3 * v - 1 for m, v in full.items()}  # other values, same order
    reversed_ = {m: -v for m, v in full.items()}
    st = sampling.ranking_stability(_ranking_table([same, reversed_], full))
    small = st[st["n_per_class"] == 5].set_index("draw")
    assert small.loc[0, "kendall_tau"] == 1.0 and small.loc[0, "same_best"] and small.loc[0, "max_rank_shift"] == 0
    assert small.loc[1, "kendall_tau"] == -1.0 and not small.loc[1, "same_best"]
    assert small.loc[1, "max_rank_shift"] == 3
    assert st[st["n_per_class"] == 9]["kendall_tau"].tolist() == [1.0]  # the whole set against itself


def test_kendall_tau_per_draw_is_the_pair_count():
    rng = np.random.default_rng(1)
    models = list("abcdefg")
    full = dict(zip(models, rng.normal(size=7)))
    draws = [dict(zip(models, rng.normal(size=7))) for _ in range(5)]
    st = sampling.ranking_stability(_ranking_table(draws, full))
    ref = np.array([full[m] for m in models])
    for d, values in enumerate(draws):
        got = st[(st["n_per_class"] == 5) & (st["draw"] == d)].iloc[0]
        a = np.array([values[m] for m in models])
        assert got["kendall_tau"] == pytest.approx(_kendall_by_pairs(a, ref))
        assert got["same_best"] == (models[int(np.argmin(a))] == models[int(np.argmin(ref))])
    summary = sampling.ranking_summary(st)
    taus = st[st["n_per_class"] == 5]["kendall_tau"].to_numpy()
    row = summary[summary["n_per_class"] == 5].iloc[0]
    assert row["tau_mean"] == pytest.approx(taus.mean()) and row["tau_sd"] == pytest.approx(np.std(taus, ddof=1))
    assert row["draws"] == 5 and row["tau_min"] == taus.min()


def test_a_given_reference_replaces_the_full_rows():
    full = {"a": 0.1, "b": 0.5, "c": 0.9}
    table = _ranking_table([{"a": 3.0, "b": 2.0, "c": 1.0}], full).query("not full")
    with pytest.raises(ValueError, match="no whole-set rows"):
        sampling.ranking_stability(table)
    st = sampling.ranking_stability(table, reference={"a": 9.0, "b": 8.0, "c": 7.0})
    assert st["kendall_tau"].tolist() == [1.0]
    with pytest.raises(ValueError, match="at least 3"):
        sampling.ranking_stability(table[table["model"] != "c"], reference=full)


# ------------------------------------------------------------------------------------------------ a fixed subset
def test_a_subset_against_random_subsets_of_its_class_counts():
    X, y = _data((12, 12, 12))
    index = np.flatnonzero(np.isin(y, ["c0", "c1"]))[:10].tolist() + np.flatnonzero(y == "c2")[:6].tolist()
    out = sampling.subset_against_random(X, y, np.array(index), draws=6, seed=2).set_index("value")
    gp, g = _slow_coefficients(X[index], y[index])
    assert out.loc["approx_skewness", "subset"] == pytest.approx(gp, abs=1e-12)
    assert out.loc["true_skewness", "subset"] == pytest.approx(g, abs=1e-12)
    assert 0 <= out.loc["approx_skewness", "share_below"] <= 1 and out["n_subset"].tolist() == [16, 16]


def test_the_whole_set_as_subset_is_typical_and_has_no_spread():
    X, y = _data((8, 8, 8))
    out = sampling.subset_against_random(X, y, np.arange(y.size), draws=3).set_index("value")
    whole = sampling.set_skewness(X, y)
    assert out.loc["approx_skewness", "subset"] == whole["approx_skewness"]
    assert out.loc["approx_skewness", "random_sd"] == 0 and out.loc["approx_skewness", "share_below"] == 0.5


def test_a_subset_index_must_be_distinct_rows_of_the_set():
    X, y = _data((8, 8, 8))
    with pytest.raises(ValueError, match="repeats samples"):
        sampling.subset_against_random(X, y, np.array([0, 0, 1, 2, 3, 4]))
    with pytest.raises(ValueError, match="outside 0..23"):
        sampling.subset_against_random(X, y, np.array([0, 24]))
    with pytest.raises(ValueError, match="integer indices"):
        sampling.subset_against_random(X, y, np.array([0.0, 1.0]))


# ------------------------------------------------------------------------------------------------ the driver
def _write(tmp_path, name, X, y, dataset):
    names = sorted(set(y))
    codes = np.searchsorted(names, y)
    path = save_features(tmp_path / f"{name}_{dataset}.npz", X.astype(np.float32), codes, names, {"spec": {}})
    return {"model": name, "dataset": dataset, "split": "test", "layer": "penultimate", "n": len(y), "d": X.shape[1],
            "features_path": str(path)}


def test_the_study_runs_every_model_on_the_same_draws(tmp_path):
    X, y = _data((10, 10, 10), d=4)
    rng = np.random.default_rng(7)
    feats = {m: X + s * rng.standard_normal(X.shape) for m, s in (("m1", 0.0), ("m2", 0.5), ("m3", 1.5))}
    index = pd.DataFrame([_write(tmp_path, m, f, y, "big") for m, f in feats.items()])
    table, per_class = sample_size.sample_size_study(index, sizes=[4, 10], draws=3, seed=1, progress=False)
    assert list(table.columns[:4]) == ["model", "layer", "n_per_class", "draw"]
    for m, f in feats.items():
        mine, _ = sampling.subsample_skewness(f.astype(np.float32), y, [4, 10], draws=3, seed=1,
                                              keys={"model": m, "layer": "penultimate"})
        pd.testing.assert_frame_equal(table[table["model"] == m].reset_index(drop=True), mine)
    st = sampling.ranking_stability(table)
    assert (st[st["n_per_class"] == 10]["kendall_tau"] == 1).all()
    shuffled = pd.DataFrame([_write(tmp_path, "m4", X[::-1], y[::-1], "big")])
    with pytest.raises(ValueError, match="do not hold the same images"):
        sample_size.sample_size_study(pd.concat([index, shuffled]), sizes=[4], progress=False)


def test_the_subset_comparison_finds_the_subset_in_the_whole_set(tmp_path):
    X, y = _data((10, 10, 10), d=4)
    first = 14
    big = pd.DataFrame([_write(tmp_path, m, X * s, y, "big") for m, s in (("m1", 1.0), ("m2", 2.0))])
    sub_X = X[:first] + 0.3  # "the same images, another copy": other features, same labels
    small = pd.DataFrame([_write(tmp_path, m, sub_X, y[:first], "small") for m in ("m1", "m2")])
    table, _ = sample_size.sample_size_study(big, sizes=[10], draws=1, progress=False)
    out = sample_size.subset_comparison(big, small, draws=4, seed=0, table=table)
    again = sample_size.subset_comparison(big, small, draws=4, seed=0)  # the whole set computed, not read
    pd.testing.assert_frame_equal(out, again)
    row = out[(out["model"] == "m1") & (out["value"] == "approx_skewness")].iloc[0]
    assert row["subset"] == pytest.approx(sampling.set_skewness(sub_X.astype(np.float32), y[:first])["approx_skewness"])
    ref = sampling.subset_against_random(X.astype(np.float32), y, np.arange(first), draws=4)
    assert row["subset_in_set"] == ref.iloc[0]["subset"] and row["random_mean"] == ref.iloc[0]["random_mean"]
    assert row["whole"] == sampling.set_skewness(X.astype(np.float32), y)["approx_skewness"]
    assert (row["n_subset"], row["n_whole"]) == (first, 30)
    wrong = pd.DataFrame([_write(tmp_path, m, sub_X, y[1:first + 1], "small2") for m in ("m1", "m2")])
    with pytest.raises(ValueError, match="not the same images"):
        sample_size.subset_comparison(big, wrong, draws=2)


def test_features_for_uses_the_index_rows_it_has_and_extracts_the_rest(tmp_path):
    X, y = _data((10, 10, 10), d=4)
    given = pd.DataFrame([_write(tmp_path, "zoo:standard", X, y, "digits")])
    out = sample_size.features_for(["zoo:pgd-0.1", "zoo:standard"], "digits", features_index=given,
                                   root=tmp_path / "cache", progress=False)
    assert out["model"].tolist() == ["zoo:pgd-0.1", "zoo:standard"]
    assert out["features_path"].iloc[1] == given["features_path"].iloc[0]  # used as it is
    assert out["n"].iloc[0] == 899 and str(tmp_path / "cache") in out["features_path"].iloc[0]


# ------------------------------------------------------------------------------------------------ tables and figures
@pytest.fixture(scope="module")
def study(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sampling")
    X, y = _data((10, 10, 10), d=4)
    rng = np.random.default_rng(3)
    big = pd.DataFrame([_write(tmp, m, X + s * rng.standard_normal(X.shape), y, "big")
                        for m, s in (("zoo:standard", 0.0), ("zoo:pgd-0.1", 0.7), ("cifar-resnet:resnet20", 1.4))])
    small = pd.DataFrame([_write(tmp, m, X[:12], y[:12], "small") for m in big["model"]])
    table, _ = sample_size.sample_size_study(big, sizes=[3, 5, 10], draws=4, progress=False)
    summary = sampling.size_summary(table, values=["approx_skewness", "true_skewness", "n_fractured"])
    ranking = sampling.ranking_summary(sampling.ranking_stability(table))
    comparison = sample_size.subset_comparison(big, small, table=table, draws=3)
    return table, summary, ranking, comparison


def test_every_table_has_one_row_per_key_of_the_regression_baseline(study):
    from kstar_utils.pipeline import baseline

    for df in study:
        keys = baseline.key_columns(df)
        assert keys and not df.duplicated(keys).any(), keys


def test_the_figures_are_one_width_and_their_texts_do_not_overlap(study):
    import matplotlib.pyplot as plt

    from kstar_utils.plotting.sampling import plot_sample_size, plot_subset_comparison
    from kstar_utils.plotting.style import WIDTH, text_overlaps

    _, summary, ranking, comparison = study
    for fig in (plot_sample_size(summary, ranking, title="Γ' against the sample"),
                plot_sample_size(summary, values=["approx_skewness"]),
                plot_subset_comparison(comparison, title="a subset")):
        assert fig.get_size_inches()[0] == WIDTH
        assert text_overlaps(fig) == []
        plt.close(fig)
    fig = plot_sample_size(summary, ranking)
    visible = [ax for ax in fig.axes if ax.get_visible()]
    assert len(visible) == 4 and [t.get_text() for t in visible[0].get_xticklabels()] == ["3", "5", "10"]
    plt.close(fig)
    with pytest.raises(ValueError, match=r"no rows for \['skew_spread'\]"):
        plot_sample_size(summary, values=["skew_spread"])
