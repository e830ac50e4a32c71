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

import difflib
import hashlib
import math
import re
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from kstar_utils.engine.reference import SQEUCLIDEAN, Distance

METRICS = ("euclidean", "cosine", "mahalanobis", "manhattan", "chebyshev", "minkowski")
#: the options each metric takes; every other metric takes none
OPTIONS = {"minkowski": ("p",), "mahalanobis": ("cov", "shrinkage")}
COVARIANCES = ("pooled", "total")
P_MAX = 256  # beyond this the float64 score sum |d|^p over- or underflows at any scale; use p = inf (chebyshev)
_GIVEN = "given:"


@dataclass(frozen=True)
class Metric:
    """One distance for k* and its options, validated and canonical: the value every entry point builds once
    (`Metric.parse`: a study file's `metric`, a notebook's `metric` parameter, `compute_kstar(metric=...)`) and every
    stage, cache key, table and figure receives whole.

    name: one of METRICS. p: Minkowski's order, a float in [1, P_MAX] or inf (3, 3.0 and "3" are one value).
    cov: Mahalanobis's covariance, "pooled" (within-class, the default), "total", or "given:<digest>" for a matrix the
    caller gave (the matrix itself is `matrix`, kept out of comparisons: its digest identifies it). shrinkage:
    Mahalanobis's shrinkage, "auto" (Ledoit-Wolf, the default for estimated covariances) or a number in [0, 1] (0 is
    the default for a given matrix). Two values are equal exactly when they give the same k*, option by option.
    """

    name: str = "euclidean"
    p: float | None = None
    cov: str | None = None
    shrinkage: float | str | None = None
    matrix: np.ndarray | None = field(default=None, compare=False, repr=False)

    def __post_init__(self):
        name = self.name
        if name not in METRICS:
            close = difflib.get_close_matches(str(name), METRICS, n=2, cutoff=0.5)
            raise ValueError(f"unknown metric {name!r}; choose one of {list(METRICS)}"
                             + (f" (did you mean {close[0]!r}?)" if close else ""))
        allowed = OPTIONS.get(name, ())
        for option in ("p", "cov", "shrinkage"):
            if getattr(self, option) is not None and option not in allowed:
                raise ValueError(f"{option} applies to metric {_owner(option)!r} only, not {name!r}")
        if self.matrix is not None and name != "mahalanobis":
            raise ValueError(f"a covariance matrix applies to metric 'mahalanobis' only, not {name!r}")
        if name == "minkowski":
            object.__setattr__(self, "p", _order(self.p))
        if name == "mahalanobis":
            cov, matrix = self.cov, self.matrix
            if cov is not None and not isinstance(cov, str):  # Metric(name="mahalanobis", cov=<matrix>)
                cov, matrix = None, cov
            if matrix is not None:
                matrix = np.array(matrix, dtype=np.float64)  # a private copy: the digest must keep describing it
                if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
                    raise ValueError(f"cov must be a square (D, D) matrix; got shape {matrix.shape}")
                matrix.setflags(write=False)
                digest = _GIVEN + _matrix_digest(matrix)
                if cov is not None and cov != digest:
                    raise ValueError(f"cov {cov!r} does not describe the covariance matrix given with it")
                cov = digest
            elif cov is None:
                cov = "pooled"
            elif cov.startswith(_GIVEN):
                pass  # read back from a cache key or table: the matrix itself is not there (see needs_matrix)
            elif cov not in COVARIANCES:
                raise ValueError(f"cov must be one of {list(COVARIANCES)} or a (D, D) matrix; got {cov!r}")
            object.__setattr__(self, "cov", cov)
            object.__setattr__(self, "matrix", matrix)
            object.__setattr__(self, "shrinkage", _shrinkage(self.shrinkage, given=cov.startswith(_GIVEN)))

    # -- building ---------------------------------------------------------------------------------------------------
    @classmethod
    def parse(cls, value: "Metric | str | Mapping | None" = None, **options) -> "Metric":
        """The Metric a user wrote: a Metric, a name ("cosine"), a label with options ("minkowski(p=3)",
        "mahalanobis(cov=total, shrinkage=0.1)"), or a mapping {"name": "minkowski", "p": 3}; options given as
        keywords (p=, cov=, shrinkage=; None means not given) are added, and must not contradict the value's own.
        Raises ValueError naming the problem (unknown name with the closest ones, an option of another metric, a
        value out of range)."""
        options = {k: v for k, v in options.items() if v is not None}
        unknown = sorted(set(options) - {"p", "cov", "shrinkage"})
        if unknown:
            raise ValueError(f"unknown metric option(s) {unknown}; options are p (minkowski), cov and shrinkage "
                             f"(mahalanobis)")
        if value is None:
            value = "euclidean"
        if isinstance(value, Metric):
            if not options:
                return value
            own = {"p": value.p, "cov": value.matrix if value.matrix is not None else value.cov,
                   "shrinkage": value.shrinkage}
            base = {k: v for k, v in own.items() if v is not None and not (value.name == "mahalanobis" and
                                                                            _is_default(value, k))}
            return cls._merge(value.name, base, options)
        if isinstance(value, str):
            name, written = _parse_label(value)
            return cls._merge(name, written, options)
        if isinstance(value, Mapping):
            written = dict(value)
            if "name" not in written:
                raise ValueError(f"a metric mapping needs a 'name' (one of {list(METRICS)}); got {value!r}")
            name = written.pop("name")
            bad = sorted(set(written) - {"p", "cov", "shrinkage"})
            if bad:
                raise ValueError(f"unknown metric option(s) {bad} in {value!r}; options are p (minkowski), cov and "
                                 f"shrinkage (mahalanobis)")
            return cls._merge(name, {k: v for k, v in written.items() if v is not None}, options)
        raise ValueError(f"a metric is a name such as 'cosine', a label such as 'minkowski(p=3)' or a mapping "
                         f"{{'name': ..., 'p': ...}}; got {value!r}")

    @classmethod
    def _merge(cls, name, written: dict, options: dict) -> "Metric":
        for k, v in options.items():
            if k in written and cls(str(name), **{k: written[k]}) != cls(str(name), **{k: v}):
                raise ValueError(f"metric {name!r} given {k}={written[k]!r} and {k}={v!r}; give it once")
        merged = {**written, **options}
        if not isinstance(name, str):
            raise ValueError(f"a metric name is a string, one of {list(METRICS)}; got {name!r}")
        return cls(name, **merged)

    @classmethod
    def from_spec(cls, spec: Mapping) -> "Metric":
        """The Metric a cache key or sidecar records (`spec`: its "metric" and option keys; other keys ignored)."""
        return cls(str(spec.get("metric", "euclidean")), **{k: spec[k] for k in ("p", "cov", "shrinkage")
                                                               if spec.get(k) is not None})

    # -- reading ----------------------------------------------------------------------------------------------------
    @property
    def options(self) -> dict[str, Any]:
        """The options that differ from the metric's defaults, in a fixed order: {} for a metric at its defaults."""
        out = {}
        for k in OPTIONS.get(self.name, ()):
            if not _is_default(self, k):
                out[k] = getattr(self, k)
        return out

    @property
    def label(self) -> str:
        """A readable, canonical name: "euclidean", "minkowski(p=3)", "mahalanobis(cov=total, shrinkage=0.1)"; equal
        metrics have equal labels, and Metric.parse(label) gives the metric back (a given matrix only by digest)."""
        opts = ", ".join(f"{k}={_text(v)}" for k, v in self.options.items())
        return f"{self.name}({opts})" if opts else self.name

    @property
    def spec(self) -> dict[str, Any]:
        """JSON-able record for cache keys and sidecars: {"metric": name, **options}; defaults left out, so a metric
        keeps its key whether its defaults were written or not."""
        return {"metric": self.name, **{k: (v if not isinstance(v, float) or math.isfinite(v) else "inf")
                                         for k, v in self.options.items()}}

    @property
    def needs_matrix(self) -> bool:
        """A metric read back from a record whose covariance matrix was the caller's: it cannot be evaluated."""
        return self.name == "mahalanobis" and self.cov.startswith(_GIVEN) and self.matrix is None

    @property
    def distance(self) -> Distance:
        """The score the engine compares (engine.reference): squared Euclidean for euclidean / cosine / mahalanobis
        (on their transformed rows), L1, L-inf or sum |d|^p."""
        if self.name in ("euclidean", "cosine", "mahalanobis"):
            return SQEUCLIDEAN
        if self.name == "manhattan":
            return Distance.minkowski(1)
        if self.name == "chebyshev":
            return Distance.minkowski(math.inf)
        return Distance.minkowski(self.p)

    @property
    def transforms_rows(self) -> bool:
        """Whether the metric changes the rows beyond the canonical rescale (cosine, mahalanobis)."""
        return self.name in ("cosine", "mahalanobis")

    def __str__(self) -> str:
        return self.label


def standard_metrics() -> tuple[Metric, ...]:
    """Every metric at its default options, Minkowski at p = 3: the set the sensitivity check compares."""
    return tuple(Metric(name, p=3.0) if name == "minkowski" else Metric(name) for name in METRICS)


def _owner(option: str) -> str:
    return next(m for m, opts in OPTIONS.items() if option in opts)


def _order(p) -> float:
    if p is None:
        raise ValueError("metric 'minkowski' needs p (p >= 1; p = 1 Manhattan, 2 Euclidean, inf Chebyshev), e.g. "
                         "'minkowski(p=3)'")
    if isinstance(p, bool):
        raise ValueError(f"p must be a number >= 1 or inf; got {p!r}")
    try:
        pf = float(p)
    except (TypeError, ValueError):
        raise ValueError(f"p must be a number >= 1 or inf; got {p!r}") from None
    if not (pf >= 1) or (math.isfinite(pf) and pf > P_MAX):
        raise ValueError(f"p must lie in [1, {P_MAX}] or be inf; got {p!r} (for large p use p=inf, Chebyshev: "
                         f"the float64 sum of |d|^p loses all resolution beyond p ~ {P_MAX})")
    return pf


def _shrinkage(value, *, given: bool):
    if value is None:
        return 0.0 if given else "auto"
    if isinstance(value, str) and value.strip().lower() == "auto":
        if given:  # Ledoit-Wolf estimates its intensity from the samples; a given matrix has none
            raise ValueError("shrinkage='auto' (Ledoit-Wolf) applies to estimated covariances (cov='pooled' or "
                             "'total'); with a given matrix give a number in [0, 1]")
        return "auto"
    if isinstance(value, bool):
        raise ValueError(f"shrinkage must be 'auto' or a number in [0, 1]; got {value!r}")
    try:
        a = float(value)
    except (TypeError, ValueError):
        a = math.nan
    if not 0.0 <= a <= 1.0:
        raise ValueError(f"shrinkage must be 'auto' or a number in [0, 1]; got {value!r}")
    return a


def _is_default(metric: Metric, option: str) -> bool:
    value = getattr(metric, option)
    if option == "cov":
        return value == "pooled"
    if option == "shrinkage":
        return value == (0.0 if str(metric.cov).startswith(_GIVEN) else "auto")
    return False


def _text(v) -> str:
    if isinstance(v, float):  # shortest exact text: 3.0 -> "3", 2.5 -> "2.5"; parse(label) gives the value back
        return "inf" if math.isinf(v) else (str(int(v)) if v.is_integer() else repr(v))
    return str(v)


_LABEL = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(?:\((.*)\))?\s*$")


def _parse_label(text: str) -> tuple[str, dict]:
    m = _LABEL.match(text)
    if not m:
        raise ValueError(f"cannot read metric {text!r}; write a name such as 'cosine' or a label such as "
                         f"'minkowski(p=3)'")
    name, inner = m.group(1).lower(), m.group(2)
    written: dict[str, Any] = {}
    for part in filter(None, (s.strip() for s in (inner or "").split(","))):
        key, sep, val = part.partition("=")
        key, val = key.strip(), val.strip().strip("'\"")
        if not sep or not key or not val:
            raise ValueError(f"cannot read option {part!r} of metric {text!r}; write name=value, e.g. p=3")
        if key in written:
            raise ValueError(f"option {key!r} given twice in metric {text!r}")
        written[key] = val
    bad = sorted(set(written) - {"p", "cov", "shrinkage"})
    if bad:
        raise ValueError(f"unknown metric option(s) {bad} in {text!r}; options are p (minkowski), cov and shrinkage "
                         f"(mahalanobis)")
    return name, written


def _matrix_digest(m: np.ndarray) -> str:
    a = np.ascontiguousarray(m, dtype=np.float64)
    return "sha256:" + hashlib.sha256(repr(a.shape).encode() + a.tobytes()).hexdigest()[:16]


@dataclass(frozen=True)
class MetricSpace:
    """Rows ready for the engine: queries (N, D') and optional pool (M, D') float64 at the canonical scale, the
    score compared, and what was chosen (p, covariance, shrinkage) for provenance."""

    queries: np.ndarray
    pool: np.ndarray | None
    distance: Distance
    metric: Metric
    details: dict[str, Any] = field(default_factory=dict)
    scale: int = 0  # the rows are the metric's rows times 2**scale

    def distances(self, ia, ib) -> np.ndarray:
        """The metric's distances (float64, (k,)) between queries[ia] and pool[ib] (queries[ib] for one set), in the
        features' own units: Euclidean / Mahalanobis lengths, cosine distance 1 - cos, L1, L-inf, Lp lengths."""
        pool = self.queries if self.pool is None else self.pool
        s = self.distance.pairs(self.queries, pool, ia, ib)
        if self.metric.name == "cosine":  # unit rows: |a - b|^2 = 2 - 2 cos
            return np.ldexp(s, -2 * self.scale) / 2.0
        if self.distance.kind == "sqeuclidean":
            return np.ldexp(np.sqrt(s), -self.scale)
        if self.distance.kind == "lp":
            return np.ldexp(s ** (1.0 / self.distance.p), -self.scale)
        return np.ldexp(s, -self.scale)


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


def whitening(sigma: np.ndarray, *, exponent: int = 0) -> np.ndarray:
    """The lower-triangular Cholesky factor L of Sigma (D, D) (x -> L^-1 x whitens); ValueError when Sigma is not
    symmetric positive definite, naming why and what to do. exponent: Sigma is the caller's matrix times 2**-exponent
    (the canonical scale), so eigenvalues are reported times 2**exponent, in the caller's units."""
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
        pass
    eig = np.linalg.eigvalsh(sigma)
    tol = eig.max(initial=0.0) * sigma.shape[0] * np.finfo(np.float64).eps
    if eig.min() < -tol:  # a real covariance has no negative eigenvalue: this is not one
        raise ValueError(f"the covariance is not positive definite: it has {int((eig < -tol).sum())} negative "
                         f"eigenvalue(s) (smallest {np.ldexp(eig.min(), exponent):.3g}), so it is not a covariance matrix; check the "
                         f"matrix given as cov, or add shrinkage") from None
    raise ValueError(f"the covariance is not positive definite: it is singular (rank {int((eig > tol).sum())} of "
                     f"{sigma.shape[0]}: constant or collinear feature dimensions); use shrinkage > 0 (e.g. "
                     "shrinkage='auto')") from None


def metric_space(queries: np.ndarray, metric: Metric, *, codes: np.ndarray | None = None,
                 pool: np.ndarray | None = None, pool_codes: np.ndarray | None = None) -> MetricSpace:
    """Rows of `metric` at the canonical scale (float64), and the score to compare.

    queries (N, D), pool (M, D) or None; codes / pool_codes (N,), (M,) int class codes (needed for the pooled
    Mahalanobis covariance, estimated on the neighbour pool when there is one, else on the queries).
    """
    metric = Metric.parse(metric)
    if metric.needs_matrix:
        raise ValueError(f"{metric.label} names a covariance matrix the caller gave, by its digest only; pass the "
                         f"matrix itself (Metric('mahalanobis', cov=matrix))")
    details: dict[str, Any] = {}
    if metric.name == "cosine":
        queries = unit_rows(queries)
        pool = None if pool is None else unit_rows(pool)
    elif metric.name == "mahalanobis":
        queries, pool, details = _whiten(queries, pool, codes if pool is None else pool_codes, metric)
    k = scale_exponent(queries, pool)
    return MetricSpace(rescale(queries, k), None if pool is None else rescale(pool, k), metric.distance, metric,
                       details, k)


def _whiten(queries, pool, codes, metric: Metric):
    k = scale_exponent(queries, pool)  # estimate at the canonical scale: no over- or underflow in X^T X
    Q, P = rescale(queries, k), None if pool is None else rescale(pool, k)
    B = Q if pool is None else P
    if metric.matrix is None:
        sigma, details = covariance(B, codes, metric.cov, metric.shrinkage)
    else:
        sigma = metric.matrix
        if sigma.shape != (Q.shape[1], Q.shape[1]):
            raise ValueError(f"cov must be ({Q.shape[1]}, {Q.shape[1]}) for {Q.shape[1]}-dimensional features; got "
                             f"{sigma.shape}")
        sigma = np.ldexp(sigma, 2 * k)  # the rows were scaled by 2^k: the covariance by 2^2k (exact)
        alpha = float(metric.shrinkage)
        if alpha:
            sigma = (1 - alpha) * sigma + alpha * np.trace(sigma) / sigma.shape[0] * np.eye(sigma.shape[0])
        details = {"cov": "given", "shrinkage": alpha}
    from scipy.linalg import solve_triangular

    L = whitening(sigma, exponent=-2 * k)
    white = lambda A: solve_triangular(L, A.T, lower=True, check_finite=False).T  # noqa: E731
    return np.ascontiguousarray(white(Q)), None if P is None else np.ascontiguousarray(white(P)), details


def prepare_metric(X: np.ndarray, metric, pool: np.ndarray | None = None, **options):
    """The rows of `metric_space` alone: float64 (N, D'), or the pair (X', pool') when a pool is given. metric: a
    Metric or what Metric.parse reads, with its options as keywords (p=, cov=, shrinkage=)."""
    space = metric_space(X, Metric.parse(metric, **options), pool=pool)
    return space.queries if pool is None else (space.queries, space.pool)
