"""Distances for k*: each metric maps the features to rows and a score whose float64 evaluation defines "exact".

    euclidean    squared Euclidean score of the rows
    cosine       squared Euclidean score of L2-normalised rows (orders neighbours exactly as cosine distance)
    mahalanobis  squared Euclidean score of whitened rows x -> L^-1 x, with Sigma = L L^T a stated covariance
    manhattan    L1 score (Minkowski p = 1)
    chebyshev    L-inf score (Minkowski p = inf)
    minkowski    sum |x_i - y_i|^p for p >= 1 (p = 1, 2 and inf use the L1, squared Euclidean and L-inf scores)

Every metric works at a canonical scale: k* does not change when all features are multiplied by one positive
constant, and a power of two changes no digit, so the rows are multiplied by the power of two that brings their
largest magnitude into [1, 2) (query set and neighbour pool together). The float64 evaluation of the score on those
rows (engine.reference) is the definition the engine reproduces exactly, for any finite input.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from kstar_utils.engine.reference import SQEUCLIDEAN, Distance

METRICS = ("euclidean", "cosine", "mahalanobis", "manhattan", "chebyshev", "minkowski")
COVARIANCES = ("pooled", "total")
P_MAX = 256  # beyond this the float64 score sum |d|^p over- or underflows at any scale; use p = inf (chebyshev)


@dataclass(frozen=True)
class MetricSpace:
    """Rows ready for the engine: queries (N, D') and optional pool (M, D') float64 at the canonical scale, the
    score compared, and what was chosen (p, covariance, shrinkage) for provenance."""

    queries: np.ndarray
    pool: np.ndarray | None
    distance: Distance
    metric: str
    details: dict[str, Any] = field(default_factory=dict)
    scale: int = 0  # the rows are the metric's rows times 2**scale

    def distances(self, ia, ib) -> np.ndarray:
        """The metric's distances (float64, (k,)) between queries[ia] and pool[ib] (queries[ib] for one set), in the
        features' own units: Euclidean / Mahalanobis lengths, cosine distance 1 - cos, L1, L-inf, Lp lengths."""
        pool = self.queries if self.pool is None else self.pool
        s = self.distance.pairs(self.queries, pool, ia, ib)
        if self.metric == "cosine":  # unit rows: |a - b|^2 = 2 - 2 cos
            return np.ldexp(s, -2 * self.scale) / 2.0
        if self.distance.kind == "sqeuclidean":
            return np.ldexp(np.sqrt(s), -self.scale)
        if self.distance.kind == "lp":
            return np.ldexp(s ** (1.0 / self.distance.p), -self.scale)
        return np.ldexp(s, -self.scale)


def check_metric(metric: str, p=None, cov=None, shrinkage=None) -> None:
    """Raise ValueError for an unknown metric or options that do not belong to it (before any work is done)."""
    if metric not in METRICS:
        import difflib

        close = difflib.get_close_matches(str(metric), METRICS, n=2, cutoff=0.5)
        raise ValueError(f"unknown metric {metric!r}; choose one of {list(METRICS)}"
                         + (f" (did you mean {close[0]!r}?)" if close else ""))
    if metric == "minkowski":
        if p is None:
            raise ValueError("metric='minkowski' needs p (p >= 1; p = 1 Manhattan, 2 Euclidean, inf Chebyshev)")
        try:
            pf = float(p)
        except (TypeError, ValueError):
            raise ValueError(f"p must be a number >= 1 or inf; got {p!r}") from None
        if not (pf >= 1) or (math.isfinite(pf) and pf > P_MAX):
            raise ValueError(f"p must lie in [1, {P_MAX}] or be inf; got {p!r} (for large p use p=inf, Chebyshev: "
                             f"the float64 sum of |d|^p loses all resolution beyond p ~ {P_MAX})")
    elif p is not None:
        raise ValueError(f"p applies to metric='minkowski' only, not {metric!r}")
    if metric != "mahalanobis" and (cov is not None or shrinkage is not None):
        raise ValueError(f"cov and shrinkage apply to metric='mahalanobis' only, not {metric!r}")
    if metric == "mahalanobis":
        if isinstance(cov, str) and cov not in COVARIANCES:
            raise ValueError(f"cov must be one of {list(COVARIANCES)} or a (D, D) matrix; got {cov!r}")
        if shrinkage is not None and shrinkage != "auto":
            try:
                ok = 0.0 <= float(shrinkage) <= 1.0
            except (TypeError, ValueError):
                ok = False
            if not ok:
                raise ValueError(f"shrinkage must be 'auto' or a number in [0, 1]; got {shrinkage!r}")


def distance_of(metric: str, p=None) -> Distance:
    """The score a metric compares (after `metric_space` has transformed the rows)."""
    if metric in ("euclidean", "cosine", "mahalanobis"):
        return SQEUCLIDEAN
    if metric == "manhattan":
        return Distance.minkowski(1)
    if metric == "chebyshev":
        return Distance.minkowski(math.inf)
    return Distance.minkowski(float(p))


def transforms_rows(metric: str) -> bool:
    """Whether the metric changes the rows beyond the canonical rescale (cosine, mahalanobis)."""
    return metric in ("cosine", "mahalanobis")


def scale_exponent(*arrays: np.ndarray | None) -> int:
    """The exponent k such that the largest |value| over `arrays` times 2**k lies in [1, 2); 0 when all are zero.

    k* is unchanged when every feature is multiplied by one positive constant, and a power of two changes no digit of
    a float: so every finite input is evaluated at this canonical scale, where differences, squares and their sums
    stay far from float64's (and float32's) overflow and underflow.
    """
    peak = 0.0
    for A in arrays:
        if A is not None and A.size:
            # two reductions instead of np.abs(A).max(): no temporary copy of a possibly huge array
            peak = max(peak, float(A.max()), -float(A.min()))
    if peak == 0.0:
        return 0
    return 1 - int(np.frexp(peak)[1])


def rescale(X: np.ndarray, k: int) -> np.ndarray:
    """X * 2**k in float64 (np.ldexp: exact for any k while the results stay normal, which the canonical exponent
    guarantees for every float16/float32 input and for float64 input spanning less than ~2**1000)."""
    return np.ldexp(np.asarray(X, dtype=np.float64), k)


def unit_rows(X: np.ndarray) -> np.ndarray:
    """Rows divided by their Euclidean norm, float64 (N, D), at any magnitude.

    Each row is first brought to the canonical scale by its own power of two (exact), so norms neither underflow
    (rows near 1e-170 are not zero) nor overflow (rows above 1e155 keep their direction). All-zero rows raise.
    """
    X = np.asarray(X, dtype=np.float64)
    peak = np.maximum(X.max(axis=1), -X.min(axis=1))
    zero = np.flatnonzero(peak == 0)
    if zero.size:
        raise ValueError(
            f"cosine distance is undefined for all-zero feature rows: {zero.size} rows (first: {zero[:5].tolist()})"
        )
    X = np.ldexp(X, (1 - np.frexp(peak)[1])[:, None])
    return X / np.sqrt(np.sum(X * X, axis=1))[:, None]


def covariance(X: np.ndarray, codes: np.ndarray | None, kind: str = "pooled", shrinkage="auto") -> tuple[np.ndarray, dict]:
    """A covariance estimate of rows X (N, D) float64: "pooled" (within-class: each class centred on its own mean,
    divided by N - C; needs codes (N,)) or "total" (centred on the overall mean, divided by N - 1). shrinkage: "auto"
    (the Ledoit-Wolf intensity of the centred rows, small when N >> D, large when D approaches N) or a number a in
    [0, 1]: (1 - a) Sigma + a mu I with mu = trace(Sigma) / D. Returns (Sigma (D, D), details)."""
    X = np.asarray(X, dtype=np.float64)
    if kind == "pooled":
        if codes is None:
            raise ValueError("a pooled within-class covariance needs the labels")
        means = np.zeros((int(codes.max()) + 1, X.shape[1]))
        np.add.at(means, codes, X)
        counts = np.bincount(codes)
        means /= np.maximum(counts, 1)[:, None]
        Xc = X - means[codes]
        dof = X.shape[0] - int((counts > 0).sum())
    else:
        Xc = X - X.mean(axis=0)
        dof = X.shape[0] - 1
    if dof < 1:
        raise ValueError(f"too few samples for a {kind} covariance: {X.shape[0]} rows")
    sigma = Xc.T @ Xc / dof
    if shrinkage == "auto":
        from sklearn.covariance import ledoit_wolf_shrinkage

        alpha = float(ledoit_wolf_shrinkage(Xc, assume_centered=True))
    else:
        alpha = float(shrinkage)
    mu = np.trace(sigma) / sigma.shape[0]
    sigma = (1 - alpha) * sigma + alpha * mu * np.eye(sigma.shape[0])
    return sigma, {"cov": kind, "shrinkage": alpha, "dof": dof}


def whitening(sigma: np.ndarray) -> np.ndarray:
    """The lower-triangular Cholesky factor L of Sigma (D, D) (x -> L^-1 x whitens); ValueError when Sigma is not
    symmetric positive definite, naming why and what to do."""
    sigma = np.asarray(sigma, dtype=np.float64)
    if sigma.ndim != 2 or sigma.shape[0] != sigma.shape[1]:
        raise ValueError(f"cov must be a square (D, D) matrix; got shape {sigma.shape}")
    if not np.all(np.isfinite(sigma)):
        raise ValueError("cov contains NaN or inf")
    if not np.allclose(sigma, sigma.T, rtol=1e-10, atol=0):
        raise ValueError("cov must be symmetric")
    try:
        return np.linalg.cholesky(sigma)
    except np.linalg.LinAlgError:
        rank = np.linalg.matrix_rank(sigma)
        raise ValueError(f"the covariance is not positive definite (rank {rank} of {sigma.shape[0]}: constant or "
                         "collinear feature dimensions); use shrinkage > 0 (e.g. shrinkage='auto')") from None


def metric_space(queries: np.ndarray, metric: str = "euclidean", *, codes: np.ndarray | None = None,
                 pool: np.ndarray | None = None, pool_codes: np.ndarray | None = None, p=None, cov=None,
                 shrinkage=None) -> MetricSpace:
    """Rows of `metric` at the canonical scale (float64), and the score to compare.

    queries (N, D), pool (M, D) or None; codes / pool_codes (N,), (M,) int class codes (needed for the pooled
    Mahalanobis covariance, estimated on the neighbour pool when there is one, else on the queries).
    p: Minkowski order; cov: "pooled" (default), "total" or a (D, D) matrix in the features' units; shrinkage: "auto"
    (default for estimated covariances; none for a given matrix) or a number in [0, 1].
    """
    check_metric(metric, p, cov, shrinkage)
    details: dict[str, Any] = {}
    if metric == "cosine":
        queries = unit_rows(queries)
        pool = None if pool is None else unit_rows(pool)
    elif metric == "mahalanobis":
        queries, pool, details = _whiten(queries, pool, codes if pool is None else pool_codes, cov, shrinkage)
    elif metric == "minkowski":
        details = {"p": float(p)}
    k = scale_exponent(queries, pool)
    return MetricSpace(rescale(queries, k), None if pool is None else rescale(pool, k), distance_of(metric, p),
                       metric, details, k)


def _whiten(queries, pool, codes, cov, shrinkage):
    k = scale_exponent(queries, pool)  # estimate at the canonical scale: no over- or underflow in X^T X
    Q, P = rescale(queries, k), None if pool is None else rescale(pool, k)
    B = Q if pool is None else P
    if cov is None or isinstance(cov, str):
        sigma, details = covariance(B, codes, cov or "pooled", "auto" if shrinkage is None else shrinkage)
    else:
        sigma = np.asarray(cov, dtype=np.float64)
        if sigma.shape != (Q.shape[1], Q.shape[1]):
            raise ValueError(f"cov must be ({Q.shape[1]}, {Q.shape[1]}) for {Q.shape[1]}-dimensional features; got "
                             f"{sigma.shape}")
        sigma = np.ldexp(sigma, 2 * k)  # the rows were scaled by 2^k: the covariance by 2^2k (exact)
        alpha = 0.0 if shrinkage in (None, "auto") else float(shrinkage)
        if alpha:
            sigma = (1 - alpha) * sigma + alpha * np.trace(sigma) / sigma.shape[0] * np.eye(sigma.shape[0])
        details = {"cov": "given", "shrinkage": alpha}
    from scipy.linalg import solve_triangular

    L = whitening(sigma)
    white = lambda A: solve_triangular(L, A.T, lower=True, check_finite=False).T  # noqa: E731
    return np.ascontiguousarray(white(Q)), None if P is None else np.ascontiguousarray(white(P)), details


def prepare_metric(X: np.ndarray, metric: str, pool: np.ndarray | None = None, **options):
    """The rows of `metric_space` alone: float64 (N, D'), or the pair (X', pool') when a pool is given."""
    space = metric_space(X, metric, pool=pool, **options)
    return space.queries if pool is None else (space.queries, space.pool)
