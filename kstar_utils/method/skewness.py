"""Per-class skewness of the normalised k* distribution, the whole-space coefficients Γ and Γ' (docs/method.md
sections 2-3), and how far Γ' can be trusted: a within-class bootstrap interval."""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from kstar_utils.method.kstar import normalize_kstar
from kstar_utils.method.validation import encode_labels

FRACTURED, OVERLAPPED, CLUSTERED, UNDEFINED = "Fractured", "Overlapped", "Clustered", "Undefined"
PATTERN_THRESHOLD = 0.5


def pattern_of(skew: float) -> str:
    """Reference thresholds (strict): > 0.5 Fractured, < -0.5 Clustered, otherwise Overlapped; NaN is Undefined."""
    if np.isnan(skew):
        return UNDEFINED
    if skew > PATTERN_THRESHOLD:
        return FRACTURED
    if skew < -PATTERN_THRESHOLD:
        return CLUSTERED
    return OVERLAPPED


def distribution_skew(khat: np.ndarray, n_class: int | None = None) -> float:
    """Skewness of normalised k* values, (n,) -> float, with the method's conventions for constant samples.

    Non-constant: scipy.stats.skew with SciPy defaults (biased g1). Constant at 1 (every sample's nearest foreign
    neighbour is farther than all classmates): -inf. Constant at 1/n_class (every sample's nearest neighbour is
    foreign): +inf. Any other constant, or fewer than two values: NaN (no distribution to describe).
    """
    khat = np.asarray(khat, dtype=np.float64)
    if khat.size < 2:
        return float("nan")
    if np.ptp(khat) == 0:
        if khat[0] == 1.0:
            return float("-inf")
        if n_class is not None and khat[0] * n_class == 1.0:
            return float("inf")
        return float("nan")
    return float(stats.skew(khat))


def replace_infinite(skews: np.ndarray) -> np.ndarray:
    """+inf / -inf -> the largest / smallest finite value (the reference notebook's rule before averaging)."""
    finite = skews[np.isfinite(skews)]
    if finite.size == 0:
        return skews
    return np.where(np.isposinf(skews), finite.max(), np.where(np.isneginf(skews), finite.min(), skews))


@dataclass(frozen=True)
class SkewnessSummary:
    """Per-class k̂* statistics and the model-level coefficients.

    per_class: one row per class with columns label, n, mean, std (population std of k̂*), skew, pattern, included
        (False for classes without a distribution: one sample, or constant at a value other than 1/n_c and 1).
    true_skewness: Γ, skewness of the pooled k̂* of the samples of included classes.
    approx_skewness: Γ', mean of the included classes' skews after the ±inf rule.
    approx_skewness_weighted: the same mean weighted by class size.
    skew_spread: standard deviation of the class skews averaged into Γ' (a large spread makes Γ' a poor summary).
    """

    per_class: pd.DataFrame
    true_skewness: float
    approx_skewness: float
    approx_skewness_weighted: float
    skew_spread: float

    @property
    def pattern_counts(self) -> dict[str, int]:
        counts = self.per_class["pattern"].value_counts()
        return {p: int(counts.get(p, 0)) for p in (FRACTURED, OVERLAPPED, CLUSTERED, UNDEFINED)}

    def to_dict(self) -> dict:
        """The scalar results, for tables and JSON."""
        return {
            "true_skewness": self.true_skewness,
            "approx_skewness": self.approx_skewness,
            "approx_skewness_weighted": self.approx_skewness_weighted,
            "skew_spread": self.skew_spread,
            "n_classes": int(len(self.per_class)),
            **{f"n_{p.lower()}": c for p, c in self.pattern_counts.items()},
        }


def mean_of_class_skews(skews: np.ndarray, weights: np.ndarray) -> float:
    """Γ' from class skews (C,) and weights (C,): the weighted mean after the ±inf rule; ±inf when every skew is
    infinite with one sign, NaN when the signs differ or there is no class."""
    if skews.size == 0:
        return float("nan")
    replaced = replace_infinite(skews)
    if not np.isfinite(replaced).all():  # every class skew infinite: no finite value to stand in
        signs = np.unique(np.sign(replaced))
        return float(signs[0] * np.inf) if signs.size == 1 else float("nan")
    return float(np.average(replaced, weights=weights))


def summarize_skewness(kstar, labels) -> SkewnessSummary:
    """Summarise raw k* ((N,) ints in 1..n_c) with their (N,) labels: per-class table, Γ and Γ'."""
    codes, classes = encode_labels(labels)
    khat = normalize_kstar(kstar, codes)
    counts = np.bincount(codes, minlength=classes.size)
    rows = []
    for c, label in enumerate(classes):
        kc = khat[codes == c]
        skew = distribution_skew(kc, int(counts[c]))
        rows.append(
            {
                "label": label.item() if hasattr(label, "item") else label,
                "n": int(counts[c]),
                "mean": float(kc.mean()),
                "std": float(kc.std()),
                "skew": skew,
                "pattern": pattern_of(skew),
                "included": not np.isnan(skew),
            }
        )
    per_class = pd.DataFrame(rows, columns=["label", "n", "mean", "std", "skew", "pattern", "included"])
    excluded = per_class.loc[~per_class["included"], "label"].tolist()
    if excluded:
        warnings.warn(
            f"{len(excluded)} class(es) have no k* distribution (a single sample, or a constant value) and are left "
            f"out of Γ and Γ': {excluded[:10]}",
            stacklevel=2,
        )
    inc = per_class["included"].to_numpy()
    skews = per_class.loc[inc, "skew"].to_numpy(dtype=np.float64)
    pooled_mask = inc[codes]
    true_skew = distribution_skew(khat[pooled_mask]) if pooled_mask.any() else float("nan")
    replaced = replace_infinite(skews)
    spread = float(np.std(replaced)) if skews.size and np.isfinite(replaced).all() else float("nan")
    return SkewnessSummary(
        per_class=per_class,
        true_skewness=true_skew,
        approx_skewness=mean_of_class_skews(skews, np.ones_like(skews)),
        approx_skewness_weighted=mean_of_class_skews(skews, per_class.loc[inc, "n"].to_numpy(dtype=np.float64)),
        skew_spread=spread,
    )


# --------------------------------------------------------------------------------------------------------------------
# bootstrap of Γ' within classes


def _resampled_skews(khat_c: np.ndarray, n_class: int, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """Skew of n_boot resamples (with replacement, same size) of one class's k̂*: (n_c,) -> (n_boot,).

    Resamples with spread use scipy.stats.skew along the rows (what distribution_skew computes for them); constant
    resamples go through distribution_skew for the ±inf / NaN conventions.
    """
    draws = khat_c[rng.integers(0, khat_c.size, size=(n_boot, khat_c.size))]
    constant = np.ptp(draws, axis=1) == 0
    out = np.empty(n_boot)
    if (~constant).any():
        out[~constant] = stats.skew(draws[~constant], axis=1)
    for i in np.flatnonzero(constant):
        out[i] = distribution_skew(draws[i], n_class)
    return out


def bootstrap_approx_skewness(
    kstar,
    labels,
    *,
    n_boot: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    weighted: bool = False,
) -> tuple[float, float]:
    """Percentile confidence interval of Γ' by resampling samples within classes.

    kstar: (N,) raw k* (ints in 1..n_c); labels: (N,) class labels.
    Each resample draws n_c samples with replacement inside every class, recomputes each class's skew of k̂* =
    k*/n_c (distribution_skew's conventions: a resample constant at 1 gives -inf, at 1/n_c +inf, at another value
    NaN) and averages them into Γ' with the ±inf rule (mean_of_class_skews). Classes without a distribution in the
    full data (a single sample, or constant at a value other than 1 and 1/n_c) are left out, as in
    summarize_skewness; a class that is constant at another value in one resample is left out of that resample.
    weighted=True weights classes by size (Γ'_weighted).

    The k* values are held fixed: the interval covers the sampling variability of the class skews given the k*
    values, not the change of k* itself when other samples are drawn.
    Returns (low, high) at `confidence`.
    """
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1; got {n_boot}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1); got {confidence}")
    codes, classes = encode_labels(labels)
    khat = normalize_kstar(kstar, codes)  # checks k* (any container) against the labels
    counts = np.bincount(codes, minlength=classes.size)
    rng = np.random.default_rng(seed)
    per_class, weights = [], []
    for c in range(classes.size):
        kc = khat[codes == c]
        if np.isnan(distribution_skew(kc, int(counts[c]))):
            continue
        per_class.append(_resampled_skews(kc, int(counts[c]), n_boot, rng))
        weights.append(float(counts[c]))
    if not per_class:
        raise ValueError("no class has a k* distribution (every class has one sample or a constant k*)")
    skews = np.stack(per_class, axis=1)  # (n_boot, C)
    w = np.asarray(weights) if weighted else np.ones(len(weights))
    gp = np.empty(n_boot)
    for b in range(n_boot):
        keep = ~np.isnan(skews[b])
        gp[b] = mean_of_class_skews(skews[b, keep], w[keep]) if keep.any() else np.nan
    gp = gp[~np.isnan(gp)]
    if gp.size == 0:
        return float("nan"), float("nan")
    alpha = (1 - confidence) / 2
    return float(np.quantile(gp, alpha)), float(np.quantile(gp, 1 - alpha))
