"""Correlations between per-model coefficients (Γ', Γ) and accuracies, with bootstrap intervals and permutation
p-values (docs/method.md section 4).

Pure functions: arrays or data frames in, data frames, dicts or floats out.
"""
from __future__ import annotations

import functools
import math
import warnings
from typing import Iterator, Sequence

import numpy as np
import pandas as pd
from scipy import stats


METHODS = ("spearman", "kendall", "pearson")
RESULT_COLUMNS = ["method", "statistic", "ci_low", "ci_high", "p_value", "p_exact", "p_min", "n"]
TABLE_COLUMNS = ["x", "y", "group", "method", "statistic", "ci_low", "ci_high", "p_value", "p_exact", "p_min",
                 "n"]
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


#: the largest number of pairings the permutation p enumerates exactly (10! = 3,628,800: every order of ten models)
EXACT_PERMUTATIONS = 3_628_800
_PERM_CHUNK = 1 << 16  # permutations per chunk: (chunk, n) index arrays stay a few MB


def correlate(
    x,
    y,
    *,
    methods: Sequence[str] = METHODS,
    n_boot: int = 2000,
    n_perm: int = 9999,
    confidence: float = 0.95,
    seed: int = 0,
) -> pd.DataFrame:
    """Correlation of paired values with a bootstrap confidence interval and a permutation p-value.

    x, y: (n,) paired values, one pair per model; n >= 3, finite, neither side constant (else ValueError).
    methods: any of "spearman" (rho), "kendall" (tau-b), "pearson" (r).
    Returns a DataFrame with one row per method and columns method, statistic, ci_low, ci_high, p_value, p_exact,
    p_min, n.

    - statistic: the correlation of the n pairs (as scipy.stats.spearmanr / kendalltau / pearsonr).
    - ci_low, ci_high: the `confidence` percentile interval of scipy.stats.bootstrap, resampling the n pairs (models)
      n_boot times. Percentile, not BCa: with ten or thirty models in a few clusters and tied ranks BCa's acceleration
      and bias estimates are unstable (an audit found BCa [+0.34, +0.96] where the percentile interval was
      [+0.04, +0.87]). A resample in which x or y is constant has no correlation and is left out, with a
      RuntimeWarning saying how many. n_boot=0 skips the interval (NaN).
    - p_value: two-sided permutation p of "no association" (`permutation_p`): exact over all n! pairings when
      n! <= EXACT_PERMUTATIONS (n <= 10), else from n_perm random pairings as (b + 1) / (n_perm + 1).
      p_exact says which; p_min is the smallest p the test could give (1 / n! or 1 / (n_perm + 1)), so a p at that
      floor is reported as "p <= p_min", never as smaller. n_perm=0 skips a random test (NaN).
    - n: the number of pairs.
    The interval and p answer different questions (how large, and whether any association at all): with few models
    they can disagree, which analysis.findings reports as such. Results depend only on the inputs and `seed`.
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
        low, high = _bootstrap_ci(fn, (x, y), n_boot, confidence, np.random.default_rng(seeds[2 * i]), method)
        p, exact, p_min = permutation_p(x, y, method=method, n_perm=n_perm, seed=seeds[2 * i + 1])
        rows.append({"method": method, "statistic": stat, "ci_low": low, "ci_high": high, "p_value": p,
                     "p_exact": exact, "p_min": p_min, "n": int(x.size)})
    return pd.DataFrame(rows, columns=RESULT_COLUMNS)


def _bootstrap_ci(fn, data, n_boot, confidence, rng, method) -> tuple[float, float]:
    """Percentile interval of fn over paired resamples of `data` (a tuple of (n,) arrays)."""
    if n_boot == 0:
        return float("nan"), float("nan")

    def statistic(*arrays, axis=-1):
        return fn(*arrays, axis=axis)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # degenerate resamples are counted below
        res = stats.bootstrap(data, statistic, paired=True, vectorized=True, n_resamples=n_boot,
                              confidence_level=confidence, method="percentile", rng=rng)
    dist = np.asarray(res.bootstrap_distribution, dtype=np.float64)
    finite = dist[np.isfinite(dist)]
    if finite.size == 0:
        warnings.warn(f"{method}: every bootstrap resample was degenerate; no interval", RuntimeWarning, stacklevel=3)
        return float("nan"), float("nan")
    if finite.size < dist.size:
        warnings.warn(
            f"{method}: {dist.size - finite.size} of {dist.size} bootstrap resamples had a constant side (no "
            "correlation); percentile interval from the other resamples",
            RuntimeWarning,
            stacklevel=3,
        )
    alpha = (1 - confidence) / 2
    return float(np.quantile(finite, alpha)), float(np.quantile(finite, 1 - alpha))


# --------------------------------------------------------------------------------------------------------------------
# permutation p-values: written here rather than through scipy.stats.permutation_test, whose exact enumeration of the
# 3.6M pairings of ten models took minutes and gigabytes (it builds every permutation as a Python object); only y is
# permuted, and each statistic below is a product of a fixed vector with the permuted one, so every pairing costs
# one gather and one dot product.


@functools.lru_cache(maxsize=4)
def _all_permutations(n: int) -> np.ndarray:
    """Every permutation of range(n) as rows of an (n!, n) int8 array, built by inserting k at every position of the
    permutations of range(k) (vectorised: 10! rows in a fraction of a second and 36 MB, where itertools' tuples took
    seconds and hundreds of MB)."""
    perms = np.zeros((1, 1), dtype=np.int8)
    for k in range(1, n):
        m = perms.shape[0]
        out = np.empty((m * (k + 1), k + 1), dtype=np.int8)
        for pos in range(k + 1):
            block = out[pos * m:(pos + 1) * m]
            block[:, :pos], block[:, pos], block[:, pos + 1:] = perms[:, :pos], k, perms[:, pos:]
        perms = out
    perms.setflags(write=False)
    return perms


def _permutations(n: int, n_perm: int, rng) -> tuple[Iterator[np.ndarray], bool, int]:
    """Chunks of index permutations (k, n): every one of the n! orders when n! <= EXACT_PERMUTATIONS (exact=True),
    else n_perm random ones. Returns (chunks, exact, total)."""
    total = math.factorial(n)
    if total <= EXACT_PERMUTATIONS:
        every = _all_permutations(n)
        return (every[s:s + _PERM_CHUNK].astype(np.intp) for s in range(0, total, _PERM_CHUNK)), True, total

    def drawn():
        for s in range(0, n_perm, _PERM_CHUNK):
            k = min(_PERM_CHUNK, n_perm - s)
            yield rng.permuted(np.broadcast_to(np.arange(n), (k, n)), axis=1)
    return drawn(), False, n_perm


def _scores(method: str, x: np.ndarray):
    """(prepare(y) -> state, score(state, perms (k, n)) -> (k,) statistics of x against y[perm])."""
    if method == "kendall":
        i, j = np.triu_indices(x.size, 1)
        sx = np.sign(x[i] - x[j]).astype(np.int32)
        tx = int((sx == 0).sum())
        n0 = i.size

        def prepare(y):
            sy = np.sign(y[:, None] - y[None, :]).astype(np.int8)  # signs gather 8x faster as bytes
            ty = int((sy[i, j] == 0).sum())  # ties of y are the same in every order
            return sy, 1.0 / np.sqrt(float(n0 - tx) * float(n0 - ty))

        def score(state, perms):
            sy, norm = state
            return (sy[perms[:, i], perms[:, j]] @ sx) * norm
        return prepare, score
    xr = stats.rankdata(x) if method == "spearman" else x.astype(np.float64)
    xc = xr - xr.mean()

    def prepare(y):
        yr = stats.rankdata(y) if method == "spearman" else y.astype(np.float64)
        yc = yr - yr.mean()
        return yc, 1.0 / np.sqrt((xc @ xc) * (yc @ yc))

    def score(state, perms):
        yc, norm = state
        return (yc[perms] @ xc) * norm
    return prepare, score


def _p_from(hits: int, exact: bool, total: int) -> tuple[float, bool, float]:
    if exact:
        return hits / total, True, 1.0 / total
    return (hits + 1) / (total + 1), False, 1.0 / (total + 1)


@functools.lru_cache(maxsize=16)
def _rank_null(method: str, n: int) -> np.ndarray:
    """The statistic under every one of the n! pairings of two rankings without ties, sorted: it depends on n alone
    (Spearman: sum of i * pi(i) over the permutations pi; Kendall: the number of inversions, Mahonian numbers), so
    the exact test of many pairs of untied rankings (class skews of every pair of models) enumerates the n! orders
    once instead of once per pair."""
    if method == "kendall":
        counts = np.ones(1, dtype=np.int64)  # inversions of the permutations of 0 elements
        for k in range(1, n):  # inserting the k-th element adds 0..k inversions
            counts = np.convolve(counts, np.ones(k + 1, dtype=np.int64))
        values = 1.0 - 4.0 * np.arange(counts.size) / (n * (n - 1))  # tau = 1 - 2 inversions / (n (n - 1) / 2)
    else:
        ranks = np.arange(1, n + 1, dtype=np.int64)
        every = _all_permutations(n)
        sums = np.concatenate([(every[s:s + _PERM_CHUNK].astype(np.int64) + 1) @ ranks
                               for s in range(0, every.shape[0], _PERM_CHUNK)])
        counts = np.bincount(sums)
        mean, scale = n * (n + 1) ** 2 / 4.0, n * (n * n - 1) / 12.0
        values = (np.arange(counts.size) - mean) / scale
    keep = counts > 0
    return np.repeat(np.abs(values[keep]), counts[keep])


def permutation_p(x, y, *, method: str = "spearman", n_perm: int = 9999, seed=0) -> tuple[float, bool, float]:
    """Two-sided permutation p of no association between x (n,) and y (n,) under `method`: the share of pairings
    whose |statistic| is at least the observed one (within 1e-12, so exact ties count). Exact over all n! pairings
    when n! <= EXACT_PERMUTATIONS; else from n_perm random pairings, p = (b + 1) / (n_perm + 1).
    Returns (p, exact, smallest attainable p); a random test with n_perm=0 gives (nan, False, nan)."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if n_perm == 0 and math.factorial(x.size) > EXACT_PERMUTATIONS:
        return float("nan"), False, float("nan")
    prepare, score = _scores(method, x)
    state = prepare(y)
    observed = abs(float(score(state, np.arange(x.size)[None, :])[0]))
    total = math.factorial(x.size)
    untied = np.unique(x).size == x.size and np.unique(y).size == y.size
    if method in ("spearman", "kendall") and untied and total <= EXACT_PERMUTATIONS:
        hits = int(np.sum(_rank_null(method, x.size) >= observed - 1e-12))
        return _p_from(hits, True, total)
    chunks, exact, total = _permutations(x.size, n_perm, np.random.default_rng(seed))
    hits = sum(int(np.sum(np.abs(score(state, perms)) >= observed - 1e-12)) for perms in chunks)
    return _p_from(hits, exact, total)


# --------------------------------------------------------------------------------------------------------------------
# partial rank correlation


def _partial(x, y, z, axis: int = -1) -> np.ndarray:
    """Partial Spearman correlation of x and y given z along `axis`: the Pearson partial correlation of their ranks,
    r_xy.z = (r_xy - r_xz r_yz) / sqrt((1 - r_xz^2)(1 - r_yz^2)) (equal to the correlation of the residuals of
    rank(x) and rank(y) after a least-squares fit on rank(z))."""
    rx, ry, rz = (stats.rankdata(v, axis=axis) for v in (x, y, z))
    rxy, rxz, ryz = _pearson(rx, ry, axis), _pearson(rx, rz, axis), _pearson(ry, rz, axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.clip((rxy - rxz * ryz) / np.sqrt((1 - rxz ** 2) * (1 - ryz ** 2)), -1.0, 1.0)


def partial_correlation(x, y, z, *, n_boot: int = 2000, n_perm: int = 9999, confidence: float = 0.95,
                        seed: int = 0) -> dict:
    """Partial Spearman correlation of x and y controlling for z (each (n,), one value per model), e.g. Γ' with
    robust accuracy given clean accuracy: does Γ' go with robustness beyond what clean accuracy explains?

    statistic: `_partial` (checked against pingouin.partial_corr(method="spearman") in the tests). Interval: the
    percentile bootstrap over models, as `correlate`. p: two-sided permutation test of Freedman & Lane (1983) on the
    ranks: rank(y) = a + b rank(z) + e is fitted once, the residuals e are permuted, y* = fit + e[perm], and the
    partial correlation of rank(x) and y* given rank(z) is recomputed (exact over all pairings for n <= 10).
    Returns {"method": "spearman_partial", "statistic", "ci_low", "ci_high", "p_value", "p_exact", "p_min", "n"}.
    """
    x, y = _check_pair(x, y)
    _, z = _check_pair(x, z, name_y="z")
    stat = float(_partial(x, y, z))
    boot_seed, perm_seed = np.random.SeedSequence(seed).spawn(2)
    low, high = _bootstrap_ci(_partial, (x, y, z), n_boot, confidence, np.random.default_rng(boot_seed),
                              "spearman partial")
    p, exact, p_min = float("nan"), False, float("nan")
    if n_perm > 0 or math.factorial(x.size) <= EXACT_PERMUTATIONS:
        rx, ry, rz = stats.rankdata(x), stats.rankdata(y), stats.rankdata(z)
        design = np.column_stack([np.ones_like(rz), rz])
        hat = design @ np.linalg.pinv(design)  # projection on (1, rank(z))
        ex = rx - hat @ rx                     # rank(x) given rank(z): fixed
        resid = ry - hat @ ry                  # the residuals Freedman-Lane permutes
        # y* = fit + e[perm]; its residual on (1, rank(z)) is e[perm] minus that residual's own fit
        observed = abs(stat)
        chunks, exact, total = _permutations(x.size, n_perm, np.random.default_rng(perm_seed))
        hits = 0
        for perms in chunks:
            e = resid[perms]
            e = e - e @ hat.T
            with np.errstate(invalid="ignore", divide="ignore"):
                r = (e @ ex) / np.sqrt((e * e).sum(axis=1) * (ex @ ex))
            hits += int(np.sum(np.abs(r) >= observed - 1e-12))
        p, exact, p_min = _p_from(hits, exact, total)
    return {"method": "spearman_partial", "statistic": stat, "ci_low": low, "ci_high": high, "p_value": p,
            "p_exact": bool(exact), "p_min": p_min, "n": int(x.size)}


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
                     "p_exact": False, "p_min": np.nan, "n": len(pair)},
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
