"""A slow, obvious k* oracle: full float64 distance matrix with the reference arithmetic, plain Python loops.

Other test files may import it: `from oracle import kstar_oracle` (tests/ is on sys.path under pytest).
"""
from __future__ import annotations

import numpy as np

from kstar_utils.kstar import prepare_metric, reference_sq_distances


def kstar_oracle(X, y, *, metric="euclidean", pool_X=None, pool_y=None) -> np.ndarray:
    """k*_p = 1 + #{q != p : y_q = y_p, s(p, q) < min_{y_r != y_p} s(p, r)} on squared float64 distances.

    X: (n, D); y: (n,) hashable labels; pool_X (m, D), pool_y (m,): separate neighbour pool (no self exclusion).
    Returns int64 (n,).
    """
    one_set = pool_X is None
    Q = prepare_metric(np.asarray(X, dtype=np.float64), metric)
    P = Q if one_set else prepare_metric(np.asarray(pool_X, dtype=np.float64), metric)
    yq = list(np.asarray(y).tolist())
    yp = yq if one_set else list(np.asarray(pool_y).tolist())
    S = reference_sq_distances(Q, P)
    out = np.empty(len(yq), dtype=np.int64)
    for p in range(len(yq)):
        enemy = min(S[p, r] for r in range(len(yp)) if yp[r] != yq[p])
        closer = 0
        for q in range(len(yp)):
            if one_set and q == p:
                continue
            if yp[q] == yq[p] and S[p, q] < enemy:
                closer += 1
        out[p] = 1 + closer
    return out
