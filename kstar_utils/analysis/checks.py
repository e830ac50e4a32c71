"""Sensitivity checks the method invites (docs/METHOD.md section 4): the distance (Euclidean, cosine, Mahalanobis),
the correlation between class skews, perturbation of the latents, and how model rankings by Γ' change.

Pure functions: arrays or data frames in, arrays, data frames or dicts out. k* and the skewness summary come from
kstar_utils.method.kstar.compute_kstar and kstar_utils.method.skewness.summarize_skewness.
"""
from __future__ import annotations

import warnings
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from kstar_utils.analysis.correlate import correlate
from kstar_utils.method.kstar import compute_kstar
from kstar_utils.method.skewness import SkewnessSummary, replace_infinite, summarize_skewness
from kstar_utils.method.validation import check_features, check_features_labels, encode_labels

SHRINKAGE_LEDOIT_WOLF = "ledoit-wolf"
SENSITIVITY_METRICS = ("euclidean", "cosine", "mahalanobis")


def _covariance(residuals: np.ndarray, shrinkage, dof: int) -> np.ndarray:
    if isinstance(shrinkage, str):
        if shrinkage != SHRINKAGE_LEDOIT_WOLF:
            raise ValueError(f"unknown shrinkage {shrinkage!r}; use {SHRINKAGE_LEDOIT_WOLF!r}, a float in [0, 1] or None")
        from sklearn.covariance import LedoitWolf

        return LedoitWolf(assume_centered=True).fit(residuals).covariance_
    emp = residuals.T @ residuals / max(1, dof)
    if shrinkage is None or shrinkage == 0:
        return emp
    s = float(shrinkage)
    if not 0 <= s <= 1:
        raise ValueError(f"shrinkage must lie in [0, 1]; got {shrinkage}")
    mu = np.trace(emp) / emp.shape[0]
    return (1 - s) * emp + s * mu * np.eye(emp.shape[0])


def mahalanobis_whiten(features, labels=None, *, shrinkage=SHRINKAGE_LEDOIT_WOLF, rcond: float = 1e-10) -> np.ndarray:
    """Map features so that Euclidean distance becomes Mahalanobis distance: (N, D) -> (N, D) float64.

    Returns (X - mean) @ S^(-1/2), with S the covariance and S^(-1/2) its symmetric inverse square root, so
    ||x'_p - x'_q||^2 = (x_p - x_q)^T S^(-1) (x_p - x_q) and compute_kstar on the result is Mahalanobis k*.
    S is the pooled within-class covariance when labels ((N,)) are given (residuals from each class mean; the
    usual choice for class separation), otherwise the covariance of all samples.
    shrinkage: "ledoit-wolf" (default; sklearn.covariance.LedoitWolf on the residuals, well conditioned even when
    D is near or above N), a float s in [0, 1] ((1 - s) S + s (tr S / D) I), or None / 0 (the empirical covariance,
    divided by N - C; raises ValueError when it is singular).
    Only the empirical covariance (shrinkage=None) makes k* exactly invariant to an invertible linear map of the
    features; shrinkage towards a multiple of the identity breaks that invariance a little.
    rcond: eigenvalues below rcond * the largest count as singular.
    """
    if labels is None:
        X = np.asarray(check_features(features), dtype=np.float64)
        residuals = X - X.mean(axis=0)
        dof = X.shape[0] - 1
    else:
        X, codes, classes = check_features_labels(features, labels, min_classes=1)
        X = np.asarray(X, dtype=np.float64)
        means = np.zeros((classes.size, X.shape[1]))
        np.add.at(means, codes, X)
        means /= np.bincount(codes, minlength=classes.size)[:, None]
        residuals = X - means[codes]
        dof = X.shape[0] - classes.size
    S = _covariance(residuals, shrinkage, dof)
    S = (S + S.T) / 2
    w, V = np.linalg.eigh(S)
    if w.max() <= 0 or w.min() <= rcond * w.max():
        raise ValueError(
            f"the covariance is singular (eigenvalues {w.min():.3g} .. {w.max():.3g}; {X.shape[0]} samples, "
            f"{X.shape[1]} dimensions); use shrinkage='ledoit-wolf' or a float shrinkage"
        )
    inv_sqrt = (V / np.sqrt(w)) @ V.T
    return (X - X.mean(axis=0)) @ inv_sqrt


def kstar_by_metric(features, labels, metrics: Sequence[str] = SENSITIVITY_METRICS, *, shrinkage=SHRINKAGE_LEDOIT_WOLF) -> dict[str, np.ndarray]:
    """Raw k* ((N,) int64) of the same labelled features (N, D) under each metric.

    "euclidean" and "cosine" go to compute_kstar; "mahalanobis" is compute_kstar on mahalanobis_whiten(features,
    labels, shrinkage=shrinkage).
    """
    out = {}
    for m in metrics:
        if m == "mahalanobis":
            out[m] = compute_kstar(mahalanobis_whiten(features, labels, shrinkage=shrinkage), labels)
        elif m in ("euclidean", "cosine"):
            out[m] = compute_kstar(features, labels, metric=m)
        else:
            raise ValueError(f"unknown metric {m!r}; choose from {list(SENSITIVITY_METRICS)}")
    return out


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
    codes, _ = encode_labels(labels)
    counts = np.bincount(codes)[codes].astype(np.float64)
    rows = []
    for s in strengths:
        k = base if s == 0 else compute_kstar(perturb_latents(features, s, seed=seed), labels, metric=metric)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            summary = summarize_skewness(k, labels)
        rows.append(
            {"strength": float(s), "true_skewness": summary.true_skewness, "approx_skewness": summary.approx_skewness,
             "skew_spread": summary.skew_spread, "frac_kstar_changed": float(np.mean(k != base)),
             "mean_abs_khat_change": float(np.mean(np.abs(k - base) / counts))}
        )
    return pd.DataFrame(rows)


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
