"""How much Γ' depends on the sample: class-stratified random subsamples of one set's features, with k* recomputed
on each (a sample's k* counts its classmates closer than its nearest enemy, so it depends on the whole set and cannot
be subsampled), their Γ', Γ and class patterns, the spread per size, the stability of the ranking of models across
sizes, and where a fixed subset falls among random subsets of its class counts.

    table, per_class = subsample_skewness(X, y, [25, 100, 1000], draws=10, seed=0, keys={"model": "m"})
    size_summary(table)                 # per size: mean, sd, 2.5 / 97.5 % quantiles, the full-data value, the bias
    stability = ranking_stability(all_models_table)   # Kendall τ of each draw's ranking against the full-data one
    ranking_summary(stability)
    subset_against_random(X, y, np.arange(846), draws=20)

Draws are seeded by (seed, n_per_class, draw) alone, so draw d of a size picks the same images from every model's
features of the same set (a paired design, as when a study evaluates every model on one subsample), and adding a size
or a draw changes no other draw.
"""
from __future__ import annotations

import warnings
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import stats

from kstar_utils.method.kstar import compute_kstar
from kstar_utils.method.skewness import summarize_skewness
from kstar_utils.method.validation import encode_labels

#: the scalar columns of one subsample's row (SkewnessSummary.to_dict)
VALUES = ("true_skewness", "approx_skewness", "approx_skewness_weighted", "skew_spread", "n_classes", "n_fractured",
          "n_overlapped", "n_clustered", "n_undefined")
#: the smallest subsample per class: a class skew needs a distribution
MIN_PER_CLASS = 2


def _codes_of(features, labels) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(features as an (N, D) array, label codes (N,) 0..C-1, classes (C,)); ValueError on shapes or one class."""
    X = features if hasattr(features, "shape") else np.asarray(features)
    if len(X.shape) != 2:
        raise ValueError(f"features must be an (N, D) array; got shape {tuple(X.shape)}")
    codes, classes = encode_labels(labels, int(X.shape[0]))
    if classes.size < 2:
        raise ValueError(f"subsampling by class needs at least 2 classes; the labels hold {classes.size}")
    return X, codes, classes


def _stratified(codes: np.ndarray, counts: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Sorted indices of counts[c] samples of each class c, drawn without replacement (class by class, in code
    order, so the draw depends only on the generator's state and the labels)."""
    parts = [rng.choice(np.flatnonzero(codes == c), size=int(k), replace=False) for c, k in enumerate(counts)]
    return np.sort(np.concatenate(parts))


def _generator(seed: int, n_per_class: int, draw: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), int(n_per_class), int(draw)])


def _check_count(name: str, value, low: int) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < low:
        raise ValueError(f"{name} must be a whole number >= {low}; got {value!r}")
    return int(value)


def draw_subsample(labels, n_per_class: int, *, seed: int = 0, draw: int = 0) -> np.ndarray:
    """Indices (sorted, int64) of `n_per_class` samples of every class, drawn without replacement, seeded by
    (seed, n_per_class, draw). labels: (N,) of any kind encode_labels reads. A class with fewer than `n_per_class`
    samples raises ValueError naming it (a stratified subsample of that size does not exist)."""
    n_per_class = _check_count("n_per_class", n_per_class, 1)
    codes, classes = encode_labels(labels)
    sizes = np.bincount(codes, minlength=classes.size)
    short = [classes[c].item() if hasattr(classes[c], "item") else classes[c]
             for c in np.flatnonzero(sizes < n_per_class)]
    if short:
        raise ValueError(f"n_per_class = {n_per_class} exceeds the size of class(es) {short[:5]} "
                         f"(smallest class: {int(sizes.min())} samples)")
    return _stratified(codes, np.full(classes.size, n_per_class), _generator(seed, n_per_class, draw))


def _summary_row(kstar: np.ndarray, labels: np.ndarray):
    with warnings.catch_warnings():
        # small subsamples can leave a class constant (no distribution); the row counts it in n_undefined
        warnings.simplefilter("ignore")
        return summarize_skewness(kstar, labels)


def set_skewness(features, labels, *, metric="euclidean", **engine_options) -> dict:
    """Γ, Γ' and the pattern counts of one whole set (SkewnessSummary.to_dict of its k*): features (N, D), labels
    (N,); a class without a distribution is counted in n_undefined, without a warning."""
    return _summary_row(compute_kstar(features, labels, metric=metric, **engine_options), labels).to_dict()


def subsample_skewness(features, labels, sizes: Sequence[int], *, draws: int = 10, seed: int = 0,
                       metric="euclidean", keys: Mapping | None = None,
                       **engine_options) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Γ', Γ and the class patterns of `draws` random class-stratified subsamples of each size in `sizes`.

    features: (N, D) array (any dtype compute_kstar takes); labels: (N,) class labels.
    sizes: samples per class, each a whole number >= 2 and at most the smallest class's size. A size equal to the
        size of every class is the whole set: it is computed once, as draw 0 with `full` True.
    draws: subsamples per size (>= 1); seed: the draws' seed (module docstring: paired across feature sets).
    metric, engine_options: passed to compute_kstar, which runs on each subsample (k* depends on the whole set).
    keys: constant columns put first in both tables (e.g. {"model": ..., "layer": ...}).

    Returns (table, per_class):
    table: one row per (n_per_class, draw): keys, n_per_class, draw, n (samples in the subsample), full, then
        true_skewness (Γ), approx_skewness (Γ'), approx_skewness_weighted, skew_spread, n_classes, n_fractured,
        n_overlapped, n_clustered, n_undefined (summarize_skewness of the subsample's k*).
    per_class: one row per (n_per_class, draw, class): keys, n_per_class, draw, then the per-class columns of
        summarize_skewness (label, n, mean, std, skew, pattern, included).
    """
    X, codes, classes = _codes_of(features, labels)
    draws = _check_count("draws", draws, 1)
    seed = _check_count("seed", seed, 0)
    if isinstance(sizes, (int, np.integer)):
        sizes = [sizes]
    sizes = [_check_count("each size", s, MIN_PER_CLASS) for s in sizes]
    if not sizes:
        raise ValueError("sizes is empty: give at least one number of samples per class")
    if len(set(sizes)) != len(sizes):
        raise ValueError(f"sizes repeat a value: {sizes}")
    class_sizes = np.bincount(codes, minlength=classes.size)
    too_big = [s for s in sizes if s > class_sizes.min()]
    if too_big:
        raise ValueError(f"sizes {too_big} exceed the smallest class ({int(class_sizes.min())} samples; class sizes "
                         f"{sorted(set(class_sizes.tolist()))}): a stratified subsample needs that many of every class")
    keys = dict(keys or {})
    named = classes[codes]  # the labels as the caller gave them (codes are only for drawing)
    rows, per_class = [], []
    for size in sorted(sizes):
        full = bool((class_sizes == size).all())
        for draw in range(1 if full else draws):
            index = np.arange(codes.size) if full else _stratified(codes, np.full(classes.size, size),
                                                                    _generator(seed, size, draw))
            kstar = compute_kstar(X[index], named[index], metric=metric, **engine_options)
            s = _summary_row(kstar, named[index])
            head = {**keys, "n_per_class": size, "draw": draw}
            rows.append({**head, "n": int(index.size), "full": full, **s.to_dict()})
            per_class.append(s.per_class.assign(**head))
    table = pd.DataFrame(rows)
    per_class = pd.concat(per_class, ignore_index=True)
    front = [*keys, "n_per_class", "draw"]
    return table, per_class[front + [c for c in per_class.columns if c not in front]]


def _quantiles(values: np.ndarray, confidence: float) -> tuple[float, float]:
    alpha = (1 - confidence) / 2
    return float(np.quantile(values, alpha)), float(np.quantile(values, 1 - alpha))


def _check_confidence(confidence: float) -> float:
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1); got {confidence}")
    return float(confidence)


def size_summary(table: pd.DataFrame, *, values: str | Sequence[str] = ("approx_skewness", "true_skewness"),
                 by: Sequence[str] = ("model", "layer"), confidence: float = 0.95) -> pd.DataFrame:
    """Per value of `values`, group of `by` (those present in the table) and n_per_class: how the value varies over
    the draws.

    table: subsample_skewness's table (several models concatenated). Returns one row per (group, value,
    n_per_class): the group's columns, value (the column's name), n_per_class, draws, n_not_finite (draws whose
    value is ±inf or NaN, left out of the statistics), mean, sd (ddof 1; 0 for the whole set, which has no sampling
    variability; NaN for a single draw of a subsample), q_low, q_high (the (1 - confidence) / 2 and
    (1 + confidence) / 2 quantiles over the draws, linear interpolation), min, max, full (the group's whole-set
    value; NaN when the table has no `full` row for it) and bias = mean - full."""
    confidence = _check_confidence(confidence)
    values = [values] if isinstance(values, str) else list(values)
    missing = [c for c in ("n_per_class", *values) if c not in table.columns]
    if missing:
        raise ValueError(f"the table lacks columns {missing}; has {list(table.columns)}")
    by = [c for c in by if c in table.columns]
    whole = table["full"].astype(bool) if "full" in table.columns else pd.Series(False, index=table.index)
    rows = []
    for group, sub in table.groupby(by, sort=False) if by else [((), table)]:
        group = group if isinstance(group, tuple) else (group,)
        for value in values:
            at_full = sub.loc[whole.loc[sub.index], value].to_numpy(dtype=np.float64)
            full_value = float(at_full[0]) if at_full.size else float("nan")
            for size, at in sub.groupby("n_per_class", sort=True):
                v = at[value].to_numpy(dtype=np.float64)
                finite = v[np.isfinite(v)]
                row = {**dict(zip(by, group)), "value": value, "n_per_class": int(size), "draws": int(v.size),
                       "n_not_finite": int(v.size - finite.size)}
                if finite.size:
                    lo, hi = _quantiles(finite, confidence)
                    sd = (0.0 if whole.loc[at.index].all() else
                          float(np.std(finite, ddof=1)) if finite.size > 1 else float("nan"))
                    row.update(mean=float(finite.mean()), sd=sd, q_low=lo, q_high=hi, min=float(finite.min()),
                               max=float(finite.max()))
                else:
                    row.update(mean=np.nan, sd=np.nan, q_low=np.nan, q_high=np.nan, min=np.nan, max=np.nan)
                row.update(full=full_value, bias=row["mean"] - full_value)
                rows.append(row)
    return pd.DataFrame(rows)


def _reference_values(table: pd.DataFrame, reference, value: str, model: str, by: list[str]) -> pd.DataFrame:
    """The whole-set value of each (by, model): from `reference` (a table with the by columns, `model` and `value`,
    or a mapping / Series model -> value used for every group) or from the table's `full` rows."""
    if reference is None:
        if "full" not in table.columns or not table["full"].astype(bool).any():
            raise ValueError("the table has no whole-set rows (`full`), so there is no full-data ranking to compare "
                             "with: include the size of every class in `sizes`, or pass `reference`")
        ref = table[table["full"].astype(bool)]
    elif isinstance(reference, pd.DataFrame):
        missing = [c for c in (*by, model, value) if c not in reference.columns]
        if missing:
            raise ValueError(f"the reference table lacks columns {missing}")
        ref = reference
    elif isinstance(reference, (Mapping, pd.Series)):
        s = pd.Series(reference, dtype=np.float64)
        groups = table[by].drop_duplicates() if by else pd.DataFrame(index=[0])
        ref = groups.merge(pd.DataFrame({model: s.index, value: s.to_numpy()}), how="cross")
    else:
        raise ValueError("reference is a DataFrame, a Series or a mapping model -> value, or None")
    ref = ref[[*by, model, value]]
    if ref.duplicated([*by, model]).any():
        raise ValueError(f"the reference holds more than one value for some ({', '.join([*by, model])})")
    return ref.rename(columns={value: "_reference"})


def _kendall_tau(a: np.ndarray, b: np.ndarray) -> float:
    """Kendall τ-b (scipy); NaN when either side is constant."""
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return float(stats.kendalltau(a, b).statistic)


def ranking_stability(table: pd.DataFrame, *, value: str = "approx_skewness", model: str = "model",
                      by: Sequence[str] = ("layer",), reference=None) -> pd.DataFrame:
    """How the ranking of models by `value` in each draw compares with their ranking on the whole set.

    table: several models' subsample_skewness tables concatenated (column `model`; the models' features of one
    set, so that draw d of a size is the same images for every model). reference: None (the table's `full`
    rows), a table (by columns, `model`, `value`) or a mapping model -> whole-set value.
    Per group of `by` (those present), n_per_class and draw, over the models with a finite value in both (at
    least 3): kendall_tau (τ-b between the draw's values and the whole-set values; 1 = the same order), spearman,
    same_best (the lowest value belongs to the same model), max_rank_shift (largest change of a model's rank,
    ranks 1..n with ties averaged) and n_models.
    """
    for c in (model, value, "n_per_class", "draw"):
        if c not in table.columns:
            raise ValueError(f"the table lacks column {c!r}")
    by = [c for c in by if c in table.columns]
    ref = _reference_values(table, reference, value, model, by)
    merged = table.merge(ref, on=[*by, model], how="inner")
    rows = []
    for key, sub in merged.groupby([*by, "n_per_class", "draw"], sort=True):
        sub = sub[np.isfinite(sub[value].to_numpy(dtype=np.float64))
                  & np.isfinite(sub["_reference"].to_numpy(dtype=np.float64))]
        if len(sub) < 3:
            where = dict(zip([*by, "n_per_class", "draw"], key))
            raise ValueError(f"only {len(sub)} model(s) with finite values at {where}; a ranking comparison needs at "
                             "least 3")
        a, b = sub[value].to_numpy(dtype=np.float64), sub["_reference"].to_numpy(dtype=np.float64)
        ra, rb = stats.rankdata(a), stats.rankdata(b)
        rows.append({**dict(zip([*by, "n_per_class", "draw"], key)), "n_models": int(len(sub)),
                     "kendall_tau": _kendall_tau(a, b),
                     "spearman": float(stats.spearmanr(a, b).statistic) if np.ptp(a) and np.ptp(b) else float("nan"),
                     "same_best": bool(sub[model].iloc[int(np.argmin(a))] == sub[model].iloc[int(np.argmin(b))]),
                     "max_rank_shift": float(np.max(np.abs(ra - rb)))})
    out = pd.DataFrame(rows)
    out["n_per_class"] = out["n_per_class"].astype(int)
    out["draw"] = out["draw"].astype(int)
    return out


def ranking_summary(stability: pd.DataFrame, *, by: Sequence[str] = ("layer",),
                    confidence: float = 0.95) -> pd.DataFrame:
    """Per group of `by` (those present) and n_per_class, over the draws of ranking_stability: draws, tau_mean,
    tau_sd (ddof 1; NaN for one draw), tau_q_low, tau_q_high (quantiles at (1 ∓ confidence) / 2), tau_min,
    share_same_best and mean_max_rank_shift."""
    confidence = _check_confidence(confidence)
    by = [c for c in by if c in stability.columns]
    rows = []
    for key, sub in stability.groupby([*by, "n_per_class"], sort=True):
        key = key if isinstance(key, tuple) else (key,)
        tau = sub["kendall_tau"].to_numpy(dtype=np.float64)
        tau = tau[np.isfinite(tau)]
        lo, hi = _quantiles(tau, confidence) if tau.size else (np.nan, np.nan)
        rows.append({**dict(zip([*by, "n_per_class"], key)), "draws": int(len(sub)),
                     "tau_mean": float(tau.mean()) if tau.size else np.nan,
                     "tau_sd": float(np.std(tau, ddof=1)) if tau.size > 1 else np.nan,
                     "tau_q_low": lo, "tau_q_high": hi, "tau_min": float(tau.min()) if tau.size else np.nan,
                     "share_same_best": float(sub["same_best"].mean()),
                     "mean_max_rank_shift": float(sub["max_rank_shift"].mean())})
    out = pd.DataFrame(rows)
    out["n_per_class"] = out["n_per_class"].astype(int)
    return out


def subset_against_random(features, labels, index, *, draws: int = 20, seed: int = 0, metric="euclidean",
                          values: Sequence[str] = ("approx_skewness", "true_skewness"), confidence: float = 0.95,
                          **engine_options) -> pd.DataFrame:
    """Where a fixed subset's Γ' (and Γ) falls among random subsets with the same number of samples of each class.

    features (N, D), labels (N,): the whole set; index: (M,) distinct indices of the subset (e.g. the first 846
    test images). The random subsets are drawn class by class without replacement, seeded by (seed, M, draw), and
    k* is recomputed on each (and on the subset).
    Returns one row per name in `values`: value, subset (the subset's value), draws, random_mean, random_sd,
    random_q_low, random_q_high (quantiles at (1 ∓ confidence) / 2), share_below (share of the random subsets whose
    value lies below the subset's; ties count half: 0.5 = a typical subset) and n_subset.
    """
    X, codes, classes = _codes_of(features, labels)
    draws = _check_count("draws", draws, 1)
    seed = _check_count("seed", seed, 0)
    confidence = _check_confidence(confidence)
    index = np.asarray(index)
    if index.ndim != 1 or index.size == 0 or index.dtype.kind not in "iu":
        raise ValueError(f"index must be a non-empty 1-D array of integer indices; got dtype {index.dtype}, "
                         f"shape {index.shape}")
    if index.min() < 0 or index.max() >= codes.size:
        raise ValueError(f"index holds values outside 0..{codes.size - 1}")
    if np.unique(index).size != index.size:
        raise ValueError("index repeats samples; a subset holds each sample once")
    unknown = [v for v in values if v not in VALUES]
    if unknown:
        raise ValueError(f"unknown value(s) {unknown}; choose from {list(VALUES)}")
    counts = np.bincount(codes[index], minlength=classes.size)
    named = classes[codes]

    def summary(ix):
        return set_skewness(X[ix], named[ix], metric=metric, **engine_options)

    own = summary(index)
    rand = [summary(_stratified(codes, counts, _generator(seed, index.size, d))) for d in range(draws)]
    rows = []
    for v in values:
        r = np.asarray([d[v] for d in rand], dtype=np.float64)
        r = r[np.isfinite(r)]
        lo, hi = _quantiles(r, confidence) if r.size else (np.nan, np.nan)
        rows.append({"value": v, "subset": float(own[v]), "draws": int(draws),
                     "random_mean": float(r.mean()) if r.size else np.nan,
                     "random_sd": float(np.std(r, ddof=1)) if r.size > 1 else np.nan,
                     "random_q_low": lo, "random_q_high": hi,
                     "share_below": (float((np.sum(r < own[v]) + 0.5 * np.sum(r == own[v])) / r.size) if r.size
                                     else np.nan),
                     "n_subset": int(index.size)})
    return pd.DataFrame(rows)


__all__ = ["draw_subsample", "set_skewness", "subsample_skewness", "size_summary", "ranking_stability",
           "ranking_summary", "subset_against_random"]
