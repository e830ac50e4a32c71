"""A slow, obvious k* oracle: the full float64 score matrix with the reference arithmetic, plain Python loops.

Other test files may import it: `from oracle import kstar_oracle` (tests/ is on sys.path under pytest).
"""
from __future__ import annotations

import numpy as np

from kstar_utils.method.metrics import Metric, metric_space
from kstar_utils.method.validation import encode_labels


def kstar_oracle(X, y, *, metric="euclidean", pool_X=None, pool_y=None, return_enemy=False, **metric_options):
    """k*_p = 1 + #{q != p : y_q = y_p, s(p, q) < min_{y_r != y_p} s(p, r)} on the float64 scores of `metric`.

    X: (n, D); y: (n,) hashable labels; pool_X (m, D), pool_y (m,): separate neighbour pool (no self exclusion).
    metric_options: p, cov, shrinkage. Returns int64 (n,), and with return_enemy the index of the first (lowest-index)
    foreign sample attaining the minimum.
    """
    metric = Metric.parse(metric, **metric_options)
    one_set = pool_X is None
    yq = list(np.asarray(y).tolist())
    yp = yq if one_set else list(np.asarray(pool_y).tolist())
    if one_set:
        codes, _ = encode_labels(y)
        space = metric_space(np.asarray(X, dtype=np.float64), metric, codes=codes)
        Q = P = space.queries
    else:
        _, classes = encode_labels(list(yq) + list(yp))
        pcodes = np.searchsorted(classes, np.asarray(yp))
        space = metric_space(np.asarray(X, dtype=np.float64), metric, pool=np.asarray(pool_X, dtype=np.float64),
                             pool_codes=pcodes)
        Q, P = space.queries, space.pool
    S = space.distance.block(Q, P)
    out = np.empty(len(yq), dtype=np.int64)
    enemies = np.empty(len(yq), dtype=np.int64)
    for p in range(len(yq)):
        foreign = [r for r in range(len(yp)) if yp[r] != yq[p]]
        enemy = min(S[p, r] for r in foreign)
        enemies[p] = next(r for r in foreign if S[p, r] == enemy)
        closer = 0
        for q in range(len(yp)):
            if one_set and q == p:
                continue
            if yp[q] == yq[p] and S[p, q] < enemy:
                closer += 1
        out[p] = 1 + closer
    return (out, enemies) if return_enemy else out
