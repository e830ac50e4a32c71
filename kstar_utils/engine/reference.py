"""The float64 arithmetic that defines "exact" k*, for every distance the engine knows.

Rows reach the engine as float64 at the canonical scale (`method.metrics.prepare_metric`: cosine and Mahalanobis
are Euclidean on transformed rows). Every distance is compared through a monotone *score* s(p, q), never through a
root, evaluated with numpy on C-contiguous float64 arrays exactly as written here:

    d = x_p - x_q                                   elementwise IEEE differences (identical for every evaluation)
    sqeuclidean  s = numpy.sum(d ** 2, axis=-1)     (Euclidean, cosine, Mahalanobis, Minkowski p = 2)
    l1           s = numpy.sum(abs(d), axis=-1)     (Manhattan, Minkowski p = 1)
    linf         s = numpy.max(abs(d), axis=-1)     (Chebyshev, Minkowski p = inf)
    lp           s = numpy.sum(abs(d) ** p, axis=-1)

numpy's pairwise sum over the contiguous last axis gives each pair the same bits whatever the number of pairs
evaluated together, so `Distance.pairs` and `Distance.block` agree bit for bit, and s(p, q) == s(q, p). Decisions:

    m_p  = min over foreign q of s(p, q)
    k*_p = 1 + #{classmates q != p : s(p, q) < m_p}      (strict)
    enemy_p = the lowest index among the foreign q with s(p, q) == m_p
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

@dataclass(frozen=True)
class Distance:
    """A score kind ("sqeuclidean", "l1", "linf", "lp") and, for "lp", its exponent p (1 < p < inf, p != 2)."""

    kind: str = "sqeuclidean"
    p: float = 2.0

    @classmethod
    def minkowski(cls, p: float) -> "Distance":
        """The score of Minkowski's distance of order p >= 1 (p = 1, 2 and inf get their own kinds)."""
        if p == 1:
            return cls("l1", 1.0)
        if p == 2:
            return cls("sqeuclidean", 2.0)
        if math.isinf(p):
            return cls("linf", math.inf)
        return cls("lp", float(p))

    def _score(self, d: np.ndarray) -> np.ndarray:
        """Scores of differences d (..., D) -> (...); d may be overwritten."""
        if self.kind == "sqeuclidean":
            np.square(d, out=d)
            return np.sum(d, axis=-1)
        np.abs(d, out=d)
        if self.kind == "l1":
            return np.sum(d, axis=-1)
        if self.kind == "linf":
            return np.max(d, axis=-1)
        np.power(d, self.p, out=d)
        return np.sum(d, axis=-1)

    def pairs(self, A: np.ndarray, B: np.ndarray, ia, ib, *, chunk_elems: int = 1 << 16) -> np.ndarray:
        """Scores of the pairs (A[ia[k]], B[ib[k]]): float64 (k,). A: (n, D), B: (m, D) float64 C-contiguous.

        Evaluated in small, cache-resident chunks (a pair's score does not depend on the chunking)."""
        ia = np.asarray(ia, dtype=np.int64)
        ib = np.asarray(ib, dtype=np.int64)
        out = np.empty(ia.shape[0], dtype=np.float64)
        step = max(1, chunk_elems // max(1, A.shape[1]))
        for s in range(0, ia.shape[0], step):
            d = A[ia[s : s + step]]
            d -= B[ib[s : s + step]]
            out[s : s + step] = self._score(d)
        return out

    def block(self, A: np.ndarray, B: np.ndarray) -> np.ndarray:
        """All scores between rows of A (n, D) and B (m, D): float64 (n, m). Memory O(n m D)."""
        A = np.asarray(A, dtype=np.float64)
        B = np.asarray(B, dtype=np.float64)
        return self._score(A[:, None, :] - B[None, :, :])

    def norms(self, X: np.ndarray) -> np.ndarray:
        """The per-row "norm" n that the float32 screens' error bounds are written in: ||x||_2^2, ||x||_1, ||x||_inf
        or ||x||_p^p, float64 (n,) (see engine.bounds)."""
        if self.kind == "sqeuclidean":
            return np.einsum("ij,ij->i", X, X)
        a = np.abs(X)
        if self.kind == "l1":
            return a.sum(axis=1)
        if self.kind == "linf":
            return a.max(axis=1)
        return np.sum(a**self.p, axis=1)


SQEUCLIDEAN = Distance()


def pair_sq_distances(A: np.ndarray, B: np.ndarray, ia, ib, *, chunk_elems: int = 1 << 16) -> np.ndarray:
    """Reference squared Euclidean distances of the pairs (A[ia[k]], B[ib[k]]): float64 (k,)."""
    return SQEUCLIDEAN.pairs(A, B, ia, ib, chunk_elems=chunk_elems)


def merge_nearest(best: np.ndarray, arg: np.ndarray, rows: np.ndarray, scores: np.ndarray, cand: np.ndarray) -> None:
    """Fold candidate pairs into the running nearest-foreign minimum, in place.

    best (n,) float64 scores and arg (n,) int64 original indices (-1: none yet); rows, scores, cand (k,): a candidate's
    row, its reference score and its column's original index. After the call best[r] is the smallest score seen for r
    and arg[r] the lowest original index among the columns attaining it (the documented tie rule).
    """
    if rows.size == 0:
        return
    order = np.lexsort((cand, scores, rows))  # by row, then score, then original index
    r, s, c = rows[order], scores[order], cand[order]
    first = np.flatnonzero(np.r_[True, r[1:] != r[:-1]])
    r, s, c = r[first], s[first], c[first]
    better = (s < best[r]) | ((s == best[r]) & ((arg[r] < 0) | (c < arg[r])))
    best[r[better]] = s[better]
    arg[r[better]] = c[better]
