"""k* with faiss k-NN searches as the float32 screen (squared Euclidean scores); same float64 re-decision as the
two-pass engine.

faiss-gpu returns at most k = 2048 neighbours and has no range_search, so this backend uses only k-NN calls with
k <= 2048 (on CPU too, so both behave alike):

Pass 1: for each class c, one k=1 search of every sample outside c against c gives g_min(p, c) (kept as an
(n, C) float32 table) and an upper bound U_p = min_c (g_min(p, c) + E), tightened by the exact distance to the best
hit. Every (p, c) with g_min(p, c) - E <= U_p is searched again with growing k until the k-th result is beyond
U_p + E; all results within U_p + E are evaluated in float64. (A (p, c) whose candidates exceed k = 2048, e.g.
thousands of exact ties, is evaluated against the whole class in float64.)

Pass 2: each class searches itself with k = min(n_c, 64); a row is complete once its k-th screened distance is
>= m_p + E. If few rows (<= 10 % of the class) are incomplete they are searched again with k = min(n_c, 2048);
rows still incomplete then (k* > ~2048), or many rows at once, are counted by the torch tile engine on the same
device (a dense count beats large-k heaps), with the same float64 re-decision.
Memory: the (n, C) table plus the float32 copies; search results are processed in query chunks.
"""
from __future__ import annotations

import numpy as np

from kstar_utils.engine.bounds import check_screen
from kstar_utils.engine.layout import SortedSet
from kstar_utils.engine.reference import merge_nearest, pair_sq_distances

K_MAX = 2048  # faiss-gpu's k limit
K_FIRST = 64
FALLBACK_SHARE = 0.1  # share of a class's rows beyond K_FIRST above which pass 2 counts them densely instead


def faiss_available() -> bool:
    try:
        import faiss  # noqa: F401
    except ImportError:
        return False
    return True


class FaissEngine:
    """rows, cols: SortedSet (the same object in the one-set case); use_gpu: faiss GPU resources; pool_f32: the
    columns' rows as float32, when already made."""

    def __init__(self, rows: SortedSet, cols: SortedSet, *, eps: float, use_gpu: bool, fallback, bar=None,
                 query_chunk: int = 16384, pool_f32: np.ndarray | None = None):
        import faiss

        self.faiss = faiss
        self.rows, self.cols = rows, cols
        self.symmetric = rows is cols
        self.eps = float(eps)
        self.bar = bar
        self.fallback = fallback  # callable -> TwoPassEngine, built only when needed
        self.chunk = query_chunk
        self.res = faiss.StandardGpuResources() if use_gpu else None
        self.qf = np.ascontiguousarray(rows.X, dtype=np.float32)
        if pool_f32 is not None:  # the pool's float32 rows, made once for many blocks of queries
            self.pf = pool_f32
        else:
            self.pf = self.qf if self.symmetric else np.ascontiguousarray(cols.X, dtype=np.float32)
        self.C = rows.starts.shape[0] - 1
        self.nmax = np.array(
            [cols.sqnorm[slice(*cols.class_range(c))].max(initial=0.0) for c in range(self.C)], dtype=np.float64
        )
        self._checked = False

    def _knn(self, q: np.ndarray, c: int, k: int) -> tuple[np.ndarray, np.ndarray]:
        """k-NN of float32 queries (nq, D) within pool class c: (distances (nq, k) float64, pool indices (nq, k))."""
        c0, c1 = self.cols.class_range(c)
        xb = self.pf[c0:c1]
        outD, outI = [], []
        for s in range(0, q.shape[0], self.chunk):
            xq = q[s : s + self.chunk]
            if self.res is not None:
                D, I = self.faiss.knn_gpu(self.res, xq, xb, k)
            else:
                D, I = self.faiss.knn(xq, xb, k)
            outD.append(D)
            outI.append(I)
        return np.concatenate(outD).astype(np.float64), np.concatenate(outI).astype(np.int64) + c0

    def _check(self, D: np.ndarray, I: np.ndarray, ridx: np.ndarray) -> None:
        take = slice(0, min(64, ridx.shape[0]))
        check_screen(D[take, 0], self.rows.X, self.cols.X, ridx[take], I[take, 0], self.rows.sqnorm,
                     self.cols.sqnorm, self.eps)
        self._checked = True

    def _outside(self, c: int) -> np.ndarray:
        r0, r1 = self.rows.class_range(c)
        return np.concatenate([np.arange(0, r0), np.arange(r1, self.rows.n)])

    # -- pass 1 -----------------------------------------------------------------------------------------------------
    def nearest_foreign(self) -> tuple[np.ndarray, np.ndarray]:
        """Exact m_p (float64) and the original index of the foreign sample attaining it (lowest among ties)."""
        rows, eps, C = self.rows, self.eps, self.C
        gmin = np.full((rows.n, C), np.inf, dtype=np.float32)
        ub = np.full(rows.n, np.inf)
        arg = np.full(rows.n, -1, dtype=np.int64)
        for c in range(C):
            if self.cols.class_range(c)[0] == self.cols.class_range(c)[1]:
                continue
            out = self._outside(c)
            if out.size == 0:
                continue
            D, I = self._knn(self.qf[out], c, 1)
            if not self._checked:
                self._check(D, I, out)
            gmin[out, c] = D[:, 0]
            bound = D[:, 0] + eps * (rows.sqnorm[out] + self.nmax[c])
            better = bound < ub[out]
            ub[out[better]] = bound[better]
            arg[out[better]] = I[better, 0]
            if self.bar is not None:
                self.bar.update(1)
        best = np.full(rows.n, np.inf)
        enemy = np.full(rows.n, -1, dtype=np.int64)
        has = np.flatnonzero(arg >= 0)
        merge_nearest(best, enemy, has, pair_sq_distances(rows.X, self.cols.X, has, arg[has]), self.cols.order[arg[has]])
        ub = np.minimum(ub, best)
        for c in range(C):
            thr_c = ub + eps * (rows.sqnorm + self.nmax[c])
            P = np.flatnonzero(gmin[:, c] <= thr_c)
            if P.size:
                self._candidates(P, c, ub, best, enemy)
        return best, enemy

    def _candidates(self, P: np.ndarray, c: int, ub: np.ndarray, best: np.ndarray, enemy: np.ndarray) -> None:
        """Evaluate in float64 every q in pool class c with g(p, q) <= ub_p + E(p, q), for rows P; fold them into
        (best, enemy)."""
        rows, cols, eps = self.rows, self.cols, self.eps
        c0, c1 = cols.class_range(c)
        n_c = c1 - c0
        k = min(n_c, 16)
        while P.size:
            D, I = self._knn(self.qf[P], c, k)
            thr = ub[P, None] + eps * (rows.sqnorm[P, None] + cols.sqnorm[I])
            rr, kk = np.nonzero(D <= thr)
            s = pair_sq_distances(rows.X, cols.X, P[rr], I[rr, kk])
            merge_nearest(best, enemy, P[rr], s, cols.order[I[rr, kk]])
            # complete when all of class c was returned or the k-th hit is beyond every possible candidate
            incomplete = (k < n_c) & (D[:, -1] <= ub[P] + eps * (rows.sqnorm[P] + self.nmax[c]))
            P = P[incomplete]
            if k == min(n_c, K_MAX) and P.size:
                # more than K_MAX screened candidates (mass ties): evaluate the whole class exactly
                for p in P:
                    s = pair_sq_distances(rows.X, cols.X, np.full(n_c, p), np.arange(c0, c1))
                    merge_nearest(best, enemy, np.full(n_c, p), s, cols.order[c0:c1])
                return
            k = min(n_c, K_MAX, k * 8)

    # -- pass 2 -----------------------------------------------------------------------------------------------------
    def count_closer(self, m: np.ndarray) -> np.ndarray:
        rows, cols, eps = self.rows, self.cols, self.eps
        counts = np.zeros(rows.n, dtype=np.int64)
        for c in range(self.C):
            r0, r1 = rows.class_range(c)
            c0, c1 = cols.class_range(c)
            n_c = c1 - c0
            if r0 == r1 or n_c == 0:
                continue
            Q = np.arange(r0, r1)
            k = min(n_c, K_FIRST)
            while Q.size:
                D, I = self._knn(self.qf[Q], c, k)
                mQ = m[Q, None]
                E = eps * (rows.sqnorm[Q, None] + cols.sqnorm[I])
                valid = I != Q[:, None] if self.symmetric else np.ones(I.shape, dtype=bool)
                certain = valid & (D < mQ - E)
                amb = valid & ~certain & (D < mQ + E)
                complete = (k >= n_c) | (D[:, -1] >= m[Q] + eps * (rows.sqnorm[Q] + self.nmax[c]))
                rr, kk = np.nonzero(amb & complete[:, None])
                s = pair_sq_distances(rows.X, cols.X, Q[rr], I[rr, kk])
                counts[Q[complete]] += certain[complete].sum(1)
                np.add.at(counts, Q[rr], (s < m[Q[rr]]).astype(np.int64))
                Q = Q[~complete]
                # k = 2048 heaps cost more than a dense count once many rows need them: count those rows in tiles
                if Q.size and (k == min(n_c, K_MAX) or Q.size > FALLBACK_SHARE * (r1 - r0)):
                    counts[Q] = self.fallback().count_rows(Q, c0, c1, m)
                    break
                k = min(n_c, K_MAX)
            if self.bar is not None:
                self.bar.update(1)
        return counts
