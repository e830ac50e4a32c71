"""k* of every sample: the 1-based rank of its nearest neighbour from another class (docs/METHOD.md section 1)."""
from __future__ import annotations

import numpy as np

from .validation import check_features_labels, encode_labels

METRICS = ("euclidean", "cosine")


def reference_sq_distances(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    """Float64 squared Euclidean distances by explicit differences: (n, D), (m, D) -> (n, m).

    This is the arithmetic that defines "exact" in this project; every fast path must agree with it.
    """
    A = np.asarray(A, dtype=np.float64)
    B = np.asarray(B, dtype=np.float64)
    return np.sum((A[:, None, :] - B[None, :, :]) ** 2, axis=-1)


def prepare_metric(X: np.ndarray, metric: str) -> np.ndarray:
    """Map features to the space whose Euclidean distance orders neighbours for `metric` (float64, (N, D))."""
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; choose one of {list(METRICS)}")
    X = np.asarray(X, dtype=np.float64)
    if metric == "cosine":
        norms = np.sqrt(np.sum(X * X, axis=1))
        zero = np.flatnonzero(norms == 0)
        if zero.size:
            raise ValueError(
                f"cosine distance is undefined for all-zero feature rows: {zero.size} rows (first: {zero[:5].tolist()})"
            )
        X = X / norms[:, None]
    return X


def compute_kstar(features, labels, *, metric: str = "euclidean", block_size: int = 256) -> np.ndarray:
    """Raw k* per sample.

    features: (N, D) array or tensor; labels: (N,) ints or strings.
    Returns int64 array (N,) with 1 <= k*_p <= n_{y_p}:
    k*_p = 1 + #{q != p : y_q = y_p and d(p, q) < min_{y_r != y_p} d(p, r)}  (strict: a classmate tied with the nearest
    foreign sample does not count). Distances are float64; "cosine" uses Euclidean distance of L2-normalised rows,
    which orders neighbours exactly as cosine distance does.
    """
    X, y, _ = check_features_labels(features, labels)
    X = prepare_metric(X, metric)
    n = X.shape[0]
    out = np.empty(n, dtype=np.int64)
    # bound the (block, N, D) difference tensor to ~64 MB
    rows = max(1, min(block_size, int(8e6 // max(1, n * X.shape[1]))))
    for start in range(0, n, rows):
        stop = min(n, start + rows)
        d = reference_sq_distances(X[start:stop], X)
        same = y[start:stop, None] == y[None, :]
        d_enemy = np.where(same, np.inf, d).min(axis=1)
        closer = same & (d < d_enemy[:, None])
        closer[np.arange(stop - start), np.arange(start, stop)] = False  # the sample itself
        out[start:stop] = 1 + closer.sum(axis=1)
    return out


def normalize_kstar(kstar, labels) -> np.ndarray:
    """k*_p / n_{y_p}: (N,) raw k* and (N,) labels -> (N,) float64 in [1/n_c, 1]."""
    k = np.asarray(kstar.detach().cpu().numpy() if hasattr(kstar, "detach") else kstar)
    y, _ = encode_labels(labels, k.shape[0] if k.ndim == 1 else None)
    if k.ndim != 1:
        raise ValueError(f"kstar must be 1-D; got shape {k.shape}")
    counts = np.bincount(y)
    if (k < 1).any() or (k > counts[y]).any():
        raise ValueError("kstar values must lie in 1..n_c (the size of the sample's class); were these raw k* for these labels?")
    return k.astype(np.float64) / counts[y]
