"""The checks the method invites (docs/method.md section 4): how k* and Γ' depend on the distance, how class skews
correlate between models, layers and metrics, how k* and Γ' respond to noise, and how a ranking of models by Γ'
changes.

Pure functions: arrays or data frames in, arrays, data frames or dicts out. The drivers that read a study's files
and run models for them are in pipeline.open_checks.
"""
from __future__ import annotations

import warnings
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from kstar_utils.analysis.correlate import correlate
from kstar_utils.method.kstar import compute_kstar
from kstar_utils.method.metrics import Metric, standard_metrics
from kstar_utils.method.skewness import SkewnessSummary, replace_infinite, summarize_skewness
from kstar_utils.method.validation import check_features, encode_labels

def kstar_by_metric(features, labels, metrics: Sequence = standard_metrics(), **engine_options) -> dict[str, np.ndarray]:
    """Raw k* ((N,) int64) of the same labelled features (N, D) under each metric.

    metrics: Metrics, or what Metric.parse reads ("cosine", "minkowski(p=3)"); default: every metric at its default
    options, Minkowski at p = 3 (Mahalanobis: pooled within-class covariance, Ledoit-Wolf shrinkage). The result is
    keyed by each metric's label, in the order given; a metric listed twice (p=3 and p=3.0) raises ValueError.
    """
    parsed = [Metric.parse(m) for m in metrics]
    labels_seen = [m.label for m in parsed]
    repeated = sorted({x for x in labels_seen if labels_seen.count(x) > 1})
    if repeated:
        raise ValueError(f"metric(s) {repeated} listed more than once")
    return {m.label: compute_kstar(features, labels, metric=m, **engine_options) for m in parsed}


def _skew_series(item) -> pd.Series:
    """Class skews of one model/metric as a Series indexed by class label (included classes only)."""
    if isinstance(item, SkewnessSummary):
        item = item.per_class
    if isinstance(item, pd.DataFrame):
        missing = [c for c in ("label", "skew") if c not in item.columns]
        if missing:
            raise ValueError(f"a per-class table needs columns 'label' and 'skew'; missing {missing}")
        keep = item["included"].to_numpy(bool) if "included" in item.columns else np.ones(len(item), bool)
        s = pd.Series(item.loc[keep, "skew"].to_numpy(dtype=np.float64), index=item.loc[keep, "label"].to_numpy())
    elif isinstance(item, pd.Series):
        s = item.astype(np.float64)
    elif isinstance(item, Mapping):
        s = pd.Series(item, dtype=np.float64)
    else:
        v = np.asarray(item, dtype=np.float64).reshape(-1)
        s = pd.Series(v, index=np.arange(v.size))
    if not s.index.is_unique:
        raise ValueError("class labels must be unique")
    s = s.dropna()
    return pd.Series(replace_infinite(s.to_numpy()), index=s.index)


def class_skew_correlation(per_class_a, per_class_b, **kw) -> pd.DataFrame:
    """Correlation between the class skews of two models (or of one model under two metrics).

    per_class_a, per_class_b: a SkewnessSummary, its per_class DataFrame (label, skew[, included]), a Series or
    mapping label -> skew, or a (C,) array (then classes are matched by position). Classes are matched by label;
    only classes present with a non-NaN skew in both count. ±inf skews are replaced by the largest / smallest finite
    skew of that model first (the Γ' rule).
    kw: passed to kstar_utils.analysis.correlate.correlate (methods, n_boot, n_perm, confidence, seed).
    Returns correlate's DataFrame: one row per method with method, statistic, ci_low, ci_high, p_value, n.
    """
    a, b = _skew_series(per_class_a), _skew_series(per_class_b)
    common = a.index.intersection(b.index)
    if len(common) < 3:
        raise ValueError(f"only {len(common)} class(es) have a skew in both; a correlation needs at least 3")
    return correlate(a.loc[common].to_numpy(), b.loc[common].to_numpy(), **kw)


def perturb_latents(features, strength: float, *, seed: int = 0, scale: str = "per_dimension") -> np.ndarray:
    """Features plus Gaussian noise: (N, D) -> (N, D), X + strength * sigma * Z with Z ~ N(0, 1) i.i.d.

    sigma: the standard deviation over samples of each feature dimension (scale="per_dimension", default) or of
    all entries together (scale="global"). strength: finite and >= 0; 0 returns an unchanged copy. The result has
    the features' floating dtype. Deterministic given `seed`.
    """
    X = check_features(features)
    strength = float(strength)
    if not np.isfinite(strength) or strength < 0:
        raise ValueError(f"strength must be a finite number >= 0; got {strength}")
    if scale not in ("per_dimension", "global"):
        raise ValueError(f"unknown scale {scale!r}; use 'per_dimension' or 'global'")
    if strength == 0:
        return X.copy()
    Xf = X.astype(np.float64)
    sigma = Xf.std(axis=0) if scale == "per_dimension" else np.full(X.shape[1], Xf.std())
    noise = np.random.default_rng(seed).standard_normal(X.shape)
    return (Xf + strength * sigma * noise).astype(X.dtype, copy=False)


def perturbation_study(features, labels, strengths: Sequence[float], *, seed: int = 0, metric: str = "euclidean") -> pd.DataFrame:
    """k* and Γ / Γ' as Gaussian noise of growing strength is added to the latents.

    features: (N, D); labels: (N,). Returns one row per strength with strength, true_skewness, approx_skewness,
    skew_spread, frac_kstar_changed (fraction of samples whose k* differs from the unperturbed k*) and
    mean_abs_khat_change (mean |Δ k*/n_c|).
    """
    base = compute_kstar(features, labels, metric=metric)
    rows = []
    for s in strengths:
        k = base if s == 0 else compute_kstar(perturb_latents(features, s, seed=seed), labels, metric=metric)
        rows.append({"strength": float(s), **response(k, base, labels)})
    return pd.DataFrame(rows)


def response(kstar: np.ndarray, base: np.ndarray, labels) -> dict:
    """How perturbed k* (N,) differ from the unperturbed `base` (N,): true_skewness, approx_skewness, skew_spread of
    the perturbed k*, frac_kstar_changed (share of samples whose k* changed), mean_abs_khat_change (mean |Δk*| / n_c).
    """
    codes, _ = encode_labels(labels)
    counts = np.bincount(codes)[codes].astype(np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # strong noise can leave a class without a distribution; the row says so
        s = summarize_skewness(kstar, labels)
    return {"true_skewness": s.true_skewness, "approx_skewness": s.approx_skewness, "skew_spread": s.skew_spread,
            "frac_kstar_changed": float(np.mean(kstar != base)),
            "mean_abs_khat_change": float(np.mean(np.abs(kstar - base) / counts))}


def _coefficient_series(table, column: str, key: str) -> pd.Series:
    if isinstance(table, pd.DataFrame):
        missing = [c for c in (key, column) if c not in table.columns]
        if missing:
            raise ValueError(f"ranking table needs columns {key!r} and {column!r}; missing {missing}")
        s = pd.Series(table[column].to_numpy(dtype=np.float64), index=table[key].to_numpy())
    elif isinstance(table, pd.Series):
        s = table.astype(np.float64)
    elif isinstance(table, Mapping):
        s = pd.Series(table, dtype=np.float64)
    else:
        raise ValueError("a ranking table is a DataFrame, a Series or a mapping model -> coefficient")
    if not s.index.is_unique:
        raise ValueError("model ids must be unique in a ranking table")
    return s[np.isfinite(s.to_numpy())]


def ranking_change(table_a, table_b, *, column: str = "approx_skewness", key: str = "model_id", **kw) -> dict:
    """How much the ranking of models by Γ' changes between two metrics (or two settings).

    table_a, table_b: DataFrames with columns `key` (model id) and `column` (e.g. Γ' under metric A and B), or
    Series / mappings model -> coefficient. Models are matched by id; only models with a finite value in both count
    (at least 3).
    kw: passed to kstar_utils.analysis.correlate.correlate (n_boot, n_perm, confidence, seed).
    Returns a dict: n, kendall_tau (tau-b between the two rankings; 1 = same order), kendall_ci_low,
    kendall_ci_high, p_value (permutation, two-sided), same_best (the model with the lowest value is the same),
    max_rank_shift (largest change of a model's rank, ranks 1..n, ties averaged), n_only_a, n_only_b.
    """
    a, b = _coefficient_series(table_a, column, key), _coefficient_series(table_b, column, key)
    common = a.index.intersection(b.index)
    if len(common) < 3:
        raise ValueError(f"only {len(common)} model(s) appear in both tables; a ranking comparison needs at least 3")
    va, vb = a.loc[common], b.loc[common]
    kw = {k: v for k, v in kw.items() if k != "methods"}
    res = correlate(va.to_numpy(), vb.to_numpy(), methods=("kendall",), **kw).iloc[0]
    return {
        "n": int(len(common)),
        "kendall_tau": float(res["statistic"]),
        "kendall_ci_low": float(res["ci_low"]),
        "kendall_ci_high": float(res["ci_high"]),
        "p_value": float(res["p_value"]),
        "same_best": bool(va.idxmin() == vb.idxmin()),
        "max_rank_shift": float(np.max(np.abs(va.rank().to_numpy() - vb.rank().to_numpy()))),
        "n_only_a": int(len(a.index.difference(common))),
        "n_only_b": int(len(b.index.difference(common))),
    }
