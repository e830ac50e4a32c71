"""Correlations between per-model coefficients (Γ', Γ) and accuracies, with bootstrap intervals and permutation
p-values (docs/method.md section 4).

Pure functions: arrays or data frames in, data frames, dicts or floats out.
"""
from __future__ import annotations

import warnings
from typing import Sequence

import numpy as np
import pandas as pd
from scipy import stats


METHODS = ("spearman", "kendall", "pearson")
RESULT_COLUMNS = ["method", "statistic", "ci_low", "ci_high", "p_value", "n"]
TABLE_COLUMNS = ["x", "y", "group", "method", "statistic", "ci_low", "ci_high", "p_value", "n"]
POOLED = "pooled"


# --------------------------------------------------------------------------------------------------------------------
# correlation statistics along the last axis: (..., n), (..., n) -> (...)


def _pearson(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
    x = np.moveaxis(np.asarray(x, dtype=np.float64), axis, -1)
    y = np.moveaxis(np.asarray(y, dtype=np.float64), axis, -1)
    xm = x - x.mean(axis=-1, keepdims=True)
    ym = y - y.mean(axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (xm * ym).sum(axis=-1) / np.sqrt((xm * xm).sum(axis=-1) * (ym * ym).sum(axis=-1))
    return np.clip(r, -1.0, 1.0)  # NaN stays NaN (a constant side)


def _spearman(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
    # Pearson correlation of average ranks, as scipy.stats.spearmanr
    return _pearson(stats.rankdata(x, axis=axis), stats.rankdata(y, axis=axis), axis=-1)


_KENDALL_PAIRWISE_MAX_N = 200
_CHUNK_ELEMENTS = 4_000_000


def _kendall(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
    """Kendall tau-b, as scipy.stats.kendalltau; NaN where one side is constant.

    For n <= 200, vectorised over pairs: tau-b = sum_{i<j} sgn(dx) sgn(dy) / sqrt((n0 - tx)(n0 - ty)), with
    n0 = n(n-1)/2 and tx, ty the tied pairs. For larger n, scipy.stats.kendalltau per row (O(n log n)).
    """
    x = np.moveaxis(np.asarray(x, dtype=np.float64), axis, -1)
    y = np.moveaxis(np.asarray(y, dtype=np.float64), axis, -1)
    lead, n = x.shape[:-1], x.shape[-1]
    xf, yf = x.reshape(-1, n), y.reshape(-1, n)
    out = np.empty(xf.shape[0])
    if n <= _KENDALL_PAIRWISE_MAX_N:
        i, j = np.triu_indices(n, 1)
        n0 = i.size
        step = max(1, _CHUNK_ELEMENTS // max(1, n0))
        for s in range(0, xf.shape[0], step):
            dx = np.sign(xf[s:s + step, i] - xf[s:s + step, j])
            dy = np.sign(yf[s:s + step, i] - yf[s:s + step, j])
            tx = (dx == 0).sum(axis=1)
            ty = (dy == 0).sum(axis=1)
            with np.errstate(invalid="ignore", divide="ignore"):
                tau = (dx * dy).sum(axis=1) / np.sqrt((n0 - tx).astype(np.float64) * (n0 - ty))
            out[s:s + step] = np.where((tx == n0) | (ty == n0), np.nan, np.clip(tau, -1.0, 1.0))
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for r in range(xf.shape[0]):
                if np.ptp(xf[r]) == 0 or np.ptp(yf[r]) == 0:
                    out[r] = np.nan
                else:
                    out[r] = stats.kendalltau(xf[r], yf[r]).statistic
    return out.reshape(lead)


_STATISTICS = {"spearman": _spearman, "kendall": _kendall, "pearson": _pearson}


def _check_pair(x, y, *, name_x: str = "x", name_y: str = "y") -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(x, dtype=np.float64).reshape(-1) if np.ndim(x) <= 1 else np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64).reshape(-1) if np.ndim(y) <= 1 else np.asarray(y, dtype=np.float64)
    if x.ndim != 1 or y.ndim != 1:
        raise ValueError(f"{name_x} and {name_y} must be 1-D; got shapes {x.shape} and {y.shape}")
    if x.size != y.size:
        raise ValueError(f"{name_x} and {name_y} differ in length: {x.size} and {y.size} values")
    for name, v in ((name_x, x), (name_y, y)):
        bad = ~np.isfinite(v)
        if bad.any():
            raise ValueError(
                f"{name} contains NaN or inf at {bad.sum()} position(s) (first: {np.flatnonzero(bad)[:5].tolist()}); "
                "drop those pairs first"
            )
    if x.size < 3:
        raise ValueError(f"a correlation needs at least 3 pairs; got {x.size}")
    for name, v in ((name_x, x), (name_y, y)):
        if np.ptp(v) == 0:
            raise ValueError(f"{name} is constant (every value {v[0]!r}); a correlation is undefined")
    return x, y


def correlate(
    x,
    y,
    *,
    methods: Sequence[str] = METHODS,
    n_boot: int = 2000,
    n_perm: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> pd.DataFrame:
    """Correlation of paired values with a bootstrap confidence interval and a permutation p-value.

    x, y: (n,) paired values, one pair per model; n >= 3, finite, neither side constant (else ValueError).
    methods: any of "spearman" (rho), "kendall" (tau-b), "pearson" (r).
    Returns a DataFrame with one row per method and columns method, statistic, ci_low, ci_high, p_value, n.

    - statistic: the correlation of the n pairs (as scipy.stats.spearmanr / kendalltau / pearsonr).
    - ci_low, ci_high: `confidence` interval from scipy.stats.bootstrap with paired resampling of the n pairs
      (models), n_boot resamples, BCa. A resample in which x or y is constant has no correlation (NaN). When any
      resample is NaN, or BCa is undefined (e.g. every resample gives the same value, as for perfectly monotone
      data), the interval falls back to the percentile interval of the finite resampled statistics, with a
      RuntimeWarning that says how many resamples were dropped. n_boot=0 skips the interval (NaN).
    - p_value: two-sided scipy.stats.permutation_test with the pairings permuted, n_perm random resamples
      (scipy enumerates all pairings exactly when there are no more than n_perm of them). With random
      permutations the smallest attainable p-value is 2 / (n_perm + 1). n_perm=0 skips it (NaN).
    - n: the number of pairs.
    Results depend only on the inputs and `seed`.
    """
    x, y = _check_pair(x, y)
    unknown = [m for m in methods if m not in _STATISTICS]
    if unknown or not len(methods):
        raise ValueError(f"unknown correlation method(s) {unknown}; choose from {list(METHODS)}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1); got {confidence}")
    if n_boot < 0 or n_perm < 0:
        raise ValueError(f"n_boot and n_perm must be >= 0; got {n_boot}, {n_perm}")
    seeds = np.random.SeedSequence(seed).spawn(2 * len(methods))
    rows = []
    for i, method in enumerate(methods):
        fn = _STATISTICS[method]
        stat = float(fn(x, y))
        low, high = _bootstrap_ci(fn, x, y, n_boot, confidence, np.random.default_rng(seeds[2 * i]), method)
        p = _permutation_p(fn, x, y, n_perm, np.random.default_rng(seeds[2 * i + 1]))
        rows.append({"method": method, "statistic": stat, "ci_low": low, "ci_high": high, "p_value": p, "n": int(x.size)})
    return pd.DataFrame(rows, columns=RESULT_COLUMNS)


def _bootstrap_ci(fn, x, y, n_boot, confidence, rng, method) -> tuple[float, float]:
    if n_boot == 0:
        return float("nan"), float("nan")

    def statistic(a, b, axis=-1):
        return fn(a, b, axis=axis)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # degenerate resamples and BCa failures are handled below
        res = stats.bootstrap(
            (x, y), statistic, paired=True, vectorized=True, n_resamples=n_boot, confidence_level=confidence,
            method="BCa", rng=rng,
        )
    dist = np.asarray(res.bootstrap_distribution, dtype=np.float64)
    low, high = float(res.confidence_interval.low), float(res.confidence_interval.high)
    finite = dist[np.isfinite(dist)]
    if finite.size == dist.size and np.isfinite(low) and np.isfinite(high):
        return low, high
    if finite.size == 0:
        warnings.warn(f"{method}: every bootstrap resample was degenerate; no interval", RuntimeWarning, stacklevel=3)
        return float("nan"), float("nan")
    dropped = dist.size - finite.size
    if dropped:
        warnings.warn(
            f"{method}: {dropped} of {dist.size} bootstrap resamples had a constant side (no correlation); "
            "percentile interval from the other resamples",
            RuntimeWarning,
            stacklevel=3,
        )
    alpha = (1 - confidence) / 2
    return float(np.quantile(finite, alpha)), float(np.quantile(finite, 1 - alpha))


def _permutation_p(fn, x, y, n_perm, rng) -> float:
    if n_perm == 0:
        return float("nan")

    def statistic(a, b, axis=-1):
        return fn(a, b, axis=axis)

    res = stats.permutation_test(
        (x, y), statistic, permutation_type="pairings", vectorized=True, n_resamples=n_perm,
        alternative="two-sided", rng=rng,
    )
    return float(res.pvalue)


def correlation_table(
    df: pd.DataFrame,
    x: str,
    ys: str | Sequence[str],
    *,
    group: str | None = None,
    pooled: bool = True,
    **kw,
) -> pd.DataFrame:
    """Correlate column `x` (e.g. "approx_skewness") with each column in `ys` (e.g. "clean_acc", "robust_acc",
    zero-shot columns), within each value of column `group` (e.g. "dataset") and pooled over all rows.

    df: one row per model. Rows where x or that y is missing are left out of that pair (n says how many remain).
    kw: passed to correlate (methods, n_boot, n_perm, confidence, seed).
    Returns the tidy long table with columns x, y, group, method, statistic, ci_low, ci_high, p_value, n; the
    pooled rows have group "pooled" (the only rows when group is None). Pooling groups mixes their accuracy scales
    (e.g. CIFAR-10 and ImageNet), so read the pooled rows with care. A group with fewer than 3 usable pairs or a
    constant column gives rows with NaN statistics and a warning instead of an error.
    """
    ys = [ys] if isinstance(ys, str) else list(ys)
    needed = [x, *ys] + ([group] if group is not None else [])
    missing = [c for c in needed if c not in df.columns]
    if missing:
        raise ValueError(f"correlation_table: column(s) {missing} not in the table; it has {list(df.columns)}")
    methods = list(kw.get("methods", METHODS))
    parts: list[tuple[object, pd.DataFrame]] = []
    if group is not None:
        if df[group].isna().any():
            raise ValueError(f"correlation_table: group column {group!r} has missing values")
        parts += [(g, sub) for g, sub in df.groupby(group, sort=True)]
    if pooled or group is None:
        parts.append((POOLED, df))
    out = []
    for g, sub in parts:
        for y in ys:
            pair = sub[[x, y]].apply(pd.to_numeric, errors="coerce").replace([np.inf, -np.inf], np.nan).dropna()
            xv, yv = pair[x].to_numpy(dtype=np.float64), pair[y].to_numpy(dtype=np.float64)
            problem = (
                f"only {len(pair)} usable pair(s), a correlation needs 3" if len(pair) < 3
                else f"{x} is constant" if np.ptp(xv) == 0
                else f"{y} is constant" if np.ptp(yv) == 0
                else None
            )
            if problem is None:
                res = correlate(xv, yv, **kw)
            else:
                warnings.warn(f"correlation_table: {x} vs {y} in group {g!r}: {problem}", RuntimeWarning, stacklevel=2)
                res = pd.DataFrame(
                    {"method": methods, "statistic": np.nan, "ci_low": np.nan, "ci_high": np.nan, "p_value": np.nan,
                     "n": len(pair)},
                    columns=RESULT_COLUMNS,
                )
            res.insert(0, "group", g)
            res.insert(0, "y", y)
            res.insert(0, "x", x)
            out.append(res)
    table = pd.concat(out, ignore_index=True)[TABLE_COLUMNS]
    table["n"] = table["n"].astype(int)
    return table


def agreement(gamma, gamma_prime, **kw) -> dict:
    """Agreement between true skewness Γ and approximate skewness Γ' over models.

    gamma, gamma_prime: (n,) per-model coefficients, paired; finite, n >= 3.
    kw: passed to correlate (n_boot, n_perm, confidence, seed).
    Returns a dict with n; spearman, spearman_ci_low, spearman_ci_high, spearman_p; pearson, pearson_ci_low,
    pearson_ci_high, pearson_p; mean_abs_diff = mean |Γ - Γ'|; mean_diff = mean (Γ' - Γ); max_abs_diff.
    """
    g, gp = _check_pair(gamma, gamma_prime, name_x="gamma", name_y="gamma_prime")
    kw = {k: v for k, v in kw.items() if k != "methods"}
    res = correlate(g, gp, methods=("spearman", "pearson"), **kw).set_index("method")
    out: dict = {"n": int(g.size)}
    for m in ("spearman", "pearson"):
        out[m] = float(res.loc[m, "statistic"])
        out[f"{m}_ci_low"] = float(res.loc[m, "ci_low"])
        out[f"{m}_ci_high"] = float(res.loc[m, "ci_high"])
        out[f"{m}_p"] = float(res.loc[m, "p_value"])
    diff = gp - g
    out["mean_abs_diff"] = float(np.mean(np.abs(diff)))
    out["mean_diff"] = float(np.mean(diff))
    out["max_abs_diff"] = float(np.max(np.abs(diff)))
    return out
