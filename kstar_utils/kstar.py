"""k* of every sample: the 1-based rank of its nearest neighbour from another class (docs/method.md section 1).

Public entry of the k* engine. `compute_kstar` is exact: every k* equals a float64 evaluation of the definition with
the arithmetic of `reference_sq_distances` at the canonical scale of `prepare_metric` (see kstar_engine/exact.py for
the rigorous screen bounds), never materialises an N x N matrix, and runs on torch (CPU BLAS or CUDA) or faiss.
"""
from __future__ import annotations

import numpy as np

from .validation import check_features, check_features_labels, check_kstar, encode_labels

METRICS = ("euclidean", "cosine")
BACKENDS = ("auto", "torch", "faiss", "numpy")
SCREENS = ("auto", "bf16", "float32")
AUTO_PROGRESS_PAIRS = 50_000 * 50_000  # show a progress bar by default from about N = 50k


def reference_sq_distances(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    """Float64 squared Euclidean distances by explicit differences: (n, D), (m, D) -> (n, m).

    This is the arithmetic that defines "exact" in this project; every fast path must agree with it: elementwise
    differences, squared, numpy sum over the contiguous last axis; decisions compare these squared values.
    """
    A = np.asarray(A, dtype=np.float64)
    B = np.asarray(B, dtype=np.float64)
    return np.sum((A[:, None, :] - B[None, :, :]) ** 2, axis=-1)


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


def prepare_metric(X: np.ndarray, metric: str, pool: np.ndarray | None = None):
    """Map features to the space whose Euclidean distance orders neighbours for `metric`, at the canonical scale.

    X: (N, D); pool: optional (M, D) neighbour pool, scaled by the same factor. Returns float64 (N, D), or the pair
    (X', pool') when a pool is given. The float64 evaluation of the definition on these rows is what "exact" means.
    """
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; choose one of {list(METRICS)}")
    if metric == "cosine":
        X = unit_rows(X)
        pool = None if pool is None else unit_rows(pool)
    k = scale_exponent(X, pool)
    X = rescale(X, k)
    return X if pool is None else (X, rescale(pool, k))


def compute_kstar(
    features,
    labels,
    *,
    metric: str = "euclidean",
    device=None,
    backend: str = "auto",
    pool_features=None,
    pool_labels=None,
    tile_size: int | None = None,
    progress: bool | None = None,
    block_size: int = 256,
    screen: str = "auto",
) -> np.ndarray:
    """Raw k* per sample.

    features: (N, D) array or tensor; labels: (N,) ints or strings.
    Returns int64 array (N,) with 1 <= k*_p <= n_{y_p}:
    k*_p = 1 + #{q != p : y_q = y_p and d(p, q) < min_{y_r != y_p} d(p, r)}  (strict: a classmate tied with the nearest
    foreign sample does not count; an exact duplicate in another class gives k* = 1). Exact: every decision equals the
    float64 reference arithmetic (`reference_sq_distances`, comparing squared distances) on the rows of
    `prepare_metric`: the features times the power of two that brings their largest magnitude into [1, 2) (k* does
    not depend on the scale, so any finite input, float16/32/64, tiny or huge, has one answer). "cosine" uses
    Euclidean distance of L2-normalised float64 rows, which orders neighbours exactly as cosine distance does.

    device: "cpu", "cuda", a torch.device, or None (cuda when available, else cpu).
    backend: "auto" (= "torch"), "torch", "faiss" (faiss k-NN as the screen; GPU faiss when device is cuda), or
        "numpy" (the plain float64 definition in row blocks of `block_size`; slow, for checking).
    pool_features (M, D), pool_labels (M,): optional separate neighbour pool. Then each query's neighbours are the
        pool samples only (no self exclusion) and k*_p lies in 1..n_{y_p}^pool + 1; the pool needs >= 2 classes.
    tile_size: edge of the T x T distance tiles (None: sized from free RAM / GPU memory).
    progress: tqdm bar (None: on when N x pool size >= 50k^2).
    screen: the torch engine's pass-1 screen: "auto" (bfloat16 where bfloat16 GEMMs are fast, else float32), "bf16"
        or "float32". Every screen ends in the same float64 decisions, so the result does not depend on it.
    """
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; choose one of {list(METRICS)}")
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of {list(BACKENDS)}")
    if screen not in SCREENS:
        raise ValueError(f"unknown screen {screen!r}; choose one of {list(SCREENS)}")
    if tile_size is not None and (not isinstance(tile_size, (int, np.integer)) or tile_size < 1):
        raise ValueError(f"tile_size must be a positive integer or None; got {tile_size!r}")
    if (pool_features is None) != (pool_labels is None):
        raise ValueError("give both pool_features and pool_labels, or neither")

    if pool_features is None:
        Xq, yq, classes = check_features_labels(features, labels)
        Xp, yp = None, None
    else:
        Xq = check_features(features)
        yq_local, cq = encode_labels(labels, Xq.shape[0])
        Xp, yp_local, cp = check_features_labels(pool_features, pool_labels)
        if Xp.shape[1] != Xq.shape[1]:
            raise ValueError(f"features and pool_features differ in dimension: {Xq.shape[1]} vs {Xp.shape[1]}")
        try:
            classes = np.union1d(cq, cp)
        except TypeError as e:
            raise ValueError(f"labels and pool_labels must be of one comparable type: {e}") from None
        yq = np.searchsorted(classes, cq)[yq_local]
        yp = np.searchsorted(classes, cp)[yp_local]

    if metric == "euclidean" and backend != "numpy" and Xq.dtype in (np.float32, np.float64):
        # the engine's class sort converts and rescales while it copies the rows: one pass over the data, not three
        scale = scale_exponent(Xq, Xp)
    else:
        prepared = prepare_metric(Xq, metric, Xp)
        Xq, Xp = prepared if Xp is not None else (prepared, None)
        scale = 0
    if backend == "numpy":
        return _kstar_numpy(Xq, yq, Xp, yp, block_size)
    from .kstar_engine.run import run_engine

    return run_engine(Xq, yq, Xp, yp, n_classes=classes.shape[0], device=device, backend=backend,
                      tile_size=tile_size, progress=progress, scale=scale, screen=screen)


def _kstar_numpy(Xq, yq, Xp, yp, block_size: int) -> np.ndarray:
    """The definition evaluated directly in float64 row blocks (one set when Xp is None). Memory O(block x N x D)."""
    one_set = Xp is None
    if one_set:
        Xp, yp = Xq, yq
    n, m = Xq.shape[0], Xp.shape[0]
    out = np.empty(n, dtype=np.int64)
    rows = max(1, min(block_size, int(8e6 // max(1, m * Xq.shape[1]))))  # bound the (rows, m, D) tensor to ~64 MB
    for start in range(0, n, rows):
        stop = min(n, start + rows)
        d = reference_sq_distances(Xq[start:stop], Xp)
        same = yq[start:stop, None] == yp[None, :]
        d_enemy = np.where(same, np.inf, d).min(axis=1)
        closer = same & (d < d_enemy[:, None])
        if one_set:
            closer[np.arange(stop - start), np.arange(start, stop)] = False  # the sample itself
        out[start:stop] = 1 + closer.sum(axis=1)
    return out


def normalize_kstar(kstar, labels) -> np.ndarray:
    """k*_p / n_{y_p}: (N,) raw k* and (N,) labels -> (N,) float64 in [1/n_c, 1].

    Labels follow `encode_labels`' rule and k* `check_kstar`'s (whole numbers in 1..n_c); anything else raises
    ValueError naming the rows.
    """
    codes, _ = encode_labels(labels)
    counts = np.bincount(codes)
    k = check_kstar(kstar, codes, counts)
    return k / counts[codes]
