"""The method's open checks on a features index (notebook 01's output): how Γ' and the model ranking depend on the
distance, and how the class skews of different models and layers correlate. Notebooks 05 and 06 call these.

    table, per_class = metric_sensitivity(features_index, layers=["penultimate", "logits"])
    ranking_changes(table)                       # Kendall tau between the rankings by Γ' under each metric
    pairs = class_skew_pairs(per_class_table)    # class-skew correlation of every pair of models
"""
from __future__ import annotations

import itertools
import warnings
from typing import Sequence

import numpy as np
import pandas as pd

from kstar_utils.pipeline.features import load_features
from kstar_utils.analysis.checks import SENSITIVITY_METRICS, class_skew_correlation, kstar_by_metric, ranking_change
from kstar_utils.method.skewness import summarize_skewness
from kstar_utils.pipeline.stages import INDEX_KEYS, read_index


def metric_sensitivity(features_index, *, layers: str | Sequence[str] = ("penultimate", "logits"),
                       metrics: Sequence[str] = SENSITIVITY_METRICS) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Γ, Γ' and the class skews of every model at each of `layers` under each distance (sensitivity.kstar_by_metric;
    Mahalanobis uses the pooled within-class covariance with Ledoit-Wolf shrinkage).

    Returns (models table: model, layer, metric, true_skewness, approx_skewness, approx_skewness_weighted,
    skew_spread, n_classes, n_fractured, n_overlapped, n_clustered, n_undefined; per-class table: model, layer,
    metric, label, n, mean, std, skew, pattern, included).
    """
    layers = [layers] if isinstance(layers, str) else list(layers)
    index = read_index(features_index, INDEX_KEYS + ["features_path"])
    missing = sorted(set(layers) - set(index["layer"]))
    if missing:
        raise ValueError(f"no features at layer(s) {missing} in the index; it has {sorted(set(index['layer']))}")
    index = index[index["layer"].isin(layers)]
    rows, classes = [], []
    for row in index.itertuples(index=False):
        fs = load_features(row.features_path)
        labels = np.asarray(fs.class_names)[fs.labels] if fs.class_names else fs.labels
        for metric, k in kstar_by_metric(fs.features, labels, metrics).items():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                s = summarize_skewness(k, labels)
            keys = {"model": row.model, "layer": row.layer, "metric": metric}
            rows.append({**keys, **s.to_dict()})
            classes.append(s.per_class.assign(**keys))
    per_class = pd.concat(classes, ignore_index=True)
    per_class = per_class[["model", "layer", "metric"] + [c for c in per_class.columns
                                                         if c not in ("model", "layer", "metric")]]
    return pd.DataFrame(rows), per_class


def ranking_changes(table: pd.DataFrame, *, reference: str = "euclidean", column: str = "approx_skewness",
                    n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """How the ranking of models by `column` under each metric differs from the ranking under `reference`
    (sensitivity.ranking_change), per layer: one row per (layer, metric) with n, kendall_tau and its interval,
    p_value, same_best, max_rank_shift and the mean |ΔΓ'| against the reference."""
    if reference not in set(table["metric"]):
        raise ValueError(f"no rows for the reference metric {reference!r}; metrics: {sorted(set(table['metric']))}")
    rows = []
    for layer, by_layer in table.groupby("layer", sort=False):
        ref = by_layer[by_layer["metric"] == reference]
        for metric, sub in by_layer.groupby("metric", sort=False):
            if metric == reference:
                continue
            with warnings.catch_warnings():
                # with few models some bootstrap resamples tie every value; the interval uses the others
                warnings.simplefilter("ignore", RuntimeWarning)
                r = ranking_change(ref, sub, column=column, key="model", n_boot=n_boot, n_perm=n_boot, seed=seed)
            delta = sub.set_index("model")[column] - ref.set_index("model")[column]
            rows.append({"layer": layer, "reference": reference, "metric": metric, **r,
                         "mean_abs_change": float(delta.abs().mean())})
    return pd.DataFrame(rows)


def class_skew_pairs(per_class: pd.DataFrame, *, by: str = "model", within: str = "layer", method: str = "spearman",
                     n_boot: int = 500, seed: int = 0) -> pd.DataFrame:
    """Correlation between the class skews of every pair of `by` values (models), within each `within` value
    (layer), classes matched by label (sensitivity.class_skew_correlation). One row per pair: within, a, b,
    statistic, ci_low, ci_high, p_value, n."""
    rows = []
    for w, sub in per_class.groupby(within, sort=False):
        groups = {k: g for k, g in sub.groupby(by, sort=False)}
        for a, b in itertools.combinations(groups, 2):
            r = class_skew_correlation(groups[a], groups[b], methods=(method,), n_boot=n_boot, n_perm=n_boot,
                                       seed=seed).iloc[0]
            rows.append({within: w, "a": a, "b": b, "method": method, "statistic": float(r["statistic"]),
                         "ci_low": float(r["ci_low"]), "ci_high": float(r["ci_high"]),
                         "p_value": float(r["p_value"]), "n": int(r["n"])})
    return pd.DataFrame(rows)


def pair_matrix(pairs: pd.DataFrame, **equal) -> pd.DataFrame:
    """The symmetric matrix (1 on the diagonal) of a class_skew_pairs table, after selecting rows equal to
    `equal` (e.g. layer="penultimate"); order of first appearance."""
    t = pairs
    for k, v in equal.items():
        t = t[t[k] == v]
    names = list(dict.fromkeys(list(t["a"]) + list(t["b"])))
    m = pd.DataFrame(np.eye(len(names)), index=names, columns=names)
    for r in t.itertuples(index=False):
        m.loc[r.a, r.b] = m.loc[r.b, r.a] = r.statistic
    return m


def cross_layer_class_skews(per_class: pd.DataFrame, layer_a: str, layer_b: str, *, method: str = "spearman",
                            n_boot: int = 500, seed: int = 0) -> pd.DataFrame:
    """Per model: correlation between its class skews at layer_a and at layer_b (do the same classes fracture?)."""
    rows = []
    for model, sub in per_class.groupby("model", sort=False):
        a, b = sub[sub["layer"] == layer_a], sub[sub["layer"] == layer_b]
        if a.empty or b.empty:
            continue
        r = class_skew_correlation(a, b, methods=(method,), n_boot=n_boot, n_perm=n_boot, seed=seed).iloc[0]
        rows.append({"model": model, "layer_a": layer_a, "layer_b": layer_b, "method": method,
                     "statistic": float(r["statistic"]), "ci_low": float(r["ci_low"]),
                     "ci_high": float(r["ci_high"]), "n": int(r["n"])})
    return pd.DataFrame(rows)


def mean_class_skew(per_class: pd.DataFrame, *, layer: str) -> pd.DataFrame:
    """Per class at `layer`: mean and standard deviation of its skew over models, and in how many models it is
    Fractured: which classes fracture whatever the training."""
    t = per_class[(per_class["layer"] == layer) & per_class["included"].astype(bool)]
    skew = t["skew"].replace([np.inf, -np.inf], np.nan)
    g = t.assign(skew=skew, fractured=t["pattern"].eq("Fractured")).groupby("label", sort=True)
    return pd.DataFrame({"mean_skew": g["skew"].mean(), "std_skew": g["skew"].std(),
                         "n_fractured": g["fractured"].sum().astype(int), "n_models": g.size()}).reset_index()


__all__ = ["metric_sensitivity", "ranking_changes", "class_skew_pairs", "pair_matrix", "cross_layer_class_skews",
           "mean_class_skew"]
