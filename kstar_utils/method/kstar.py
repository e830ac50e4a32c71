"""k* of every sample: the 1-based rank of its nearest neighbour from another class (docs/method.md section 1).

Public entry of the k* engine. `compute_kstar` is exact: every k* equals a float64 evaluation of the definition
(engine.reference) on the rows of `method.metrics.metric_space` at their canonical scale (see engine.bounds for the
rigorous screen bounds), never materialises an N x N matrix, and runs on torch (CPU BLAS or CUDA) or faiss.
"""
from __future__ import annotations

import numpy as np

from kstar_utils.engine.reference import SQEUCLIDEAN
from kstar_utils.engine.bounds import SCREENS
from kstar_utils.engine.run import BACKENDS as ENGINE_BACKENDS
from kstar_utils.method.metrics import METRICS, Metric, metric_space, prepare_metric, scale_exponent
from kstar_utils.method.validation import check_features, check_features_labels, check_kstar, encode_labels

BACKENDS = ENGINE_BACKENDS + ("numpy",)

__all__ = ["compute_kstar", "normalize_kstar", "prepare_metric", "reference_sq_distances", "METRICS", "Metric"]


def reference_sq_distances(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    """Float64 squared Euclidean distances by explicit differences: (n, D), (m, D) -> (n, m) (engine.reference)."""
    return SQEUCLIDEAN.block(A, B)


def compute_kstar(
    features,
    labels,
    *,
    metric: Metric | str = "euclidean",
    device=None,
    backend: str = "auto",
    pool_features=None,
    pool_labels=None,
    tile_size: int | None = None,
    progress: bool | None = None,
    block_size: int = 256,
    screen: str = "auto",
    p: float | None = None,
    cov=None,
    shrinkage=None,
    return_enemy: bool = False,
    memory_limit: int | None = None,
    client=None,
    block_rows: int | None = None,
):
    """Raw k* per sample (and, with return_enemy=True, each sample's nearest sample of another class).

    features: (N, D) array or tensor; labels: (N,) ints or strings.
    Returns int64 array (N,) with 1 <= k*_p <= n_{y_p}:
    k*_p = 1 + #{q != p : y_q = y_p and d(p, q) < min_{y_r != y_p} d(p, r)}  (strict: a classmate tied with the nearest
    foreign sample does not count; an exact duplicate in another class gives k* = 1). Exact: every decision equals the
    float64 reference arithmetic (engine.reference) on the rows of `method.metrics.metric_space`: the features times
    the power of two that brings their largest magnitude into [1, 2) (k* does not depend on the scale, so any finite
    input, float16/32/64, tiny or huge, has one answer).

    metric: a `method.metrics.Metric`, or what `Metric.parse` reads: "euclidean" (default), "cosine" (Euclidean on
        L2-normalised rows), "mahalanobis" (Euclidean on whitened rows; cov: "pooled" within-class covariance
        (default), "total", or a (D, D) matrix; shrinkage: "auto" Ledoit-Wolf for estimated covariances, or a number
        in [0, 1]), "manhattan" (L1), "chebyshev" (L-inf) or "minkowski" with p >= 1 (p = inf allowed); options as
        keywords (p=3) or in the label ("minkowski(p=3)").
    return_enemy: also return enemy (N,) int64, the index of each sample's nearest sample of another class (into the
        pool when one is given); among exact ties, the lowest index.

    device: "cpu", "cuda", a torch.device, or None (cuda when available, else cpu).
    backend: "auto" (= "torch"), "torch", "faiss" (faiss k-NN as the screen; GPU faiss when device is cuda), or
        "numpy" (the plain float64 definition in row blocks of `block_size`; slow, for checking).
    pool_features (M, D), pool_labels (M,): optional separate neighbour pool. Then each query's neighbours are the
        pool samples only (no self exclusion) and k*_p lies in 1..n_{y_p}^pool + 1; the pool needs >= 2 classes.
    tile_size: edge of the T x T distance tiles (None: sized from free RAM / GPU memory).
    progress: tqdm bar (None: on when N x pool size >= 50k^2).
    screen: the torch engine's pass-1 screen: "auto" (bfloat16 where bfloat16 GEMMs are fast, else float32), "bf16"
        or "float32". Every screen ends in the same float64 decisions, so the result does not depend on it.
    memory_limit: bytes the computation may use (None: 90 % of the memory available). The peak is estimated from the
        sizes before anything is allocated (engine.memory); the tile is chosen to fit, or InsufficientMemoryError (a
        ValueError and a MemoryError) is raised at once with the estimate and what to do. With a client: bytes per
        worker (None: each worker's own memory limit).
    client: a dask.distributed Client or a scheduler address: the work is split over the workers
        (engine.distributed): one set's distance tiles in shares (of at most about `block_rows` rows each; None:
        sized from the workers' memory), or blocks of queries against a separate pool. The set reaches each worker
        once (scattered; a memory-mapped .npy whose rows need no transform is read by each worker from its file);
        the result equals the local one element for element. A lost worker's shares are recomputed.
    """
    metric = Metric.parse(metric, p=p, cov=cov, shrinkage=shrinkage)
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of {list(BACKENDS)}")
    if screen not in SCREENS:
        raise ValueError(f"unknown screen {screen!r}; choose one of {list(SCREENS)}")
    if tile_size is not None and (not isinstance(tile_size, (int, np.integer)) or tile_size < 1):
        raise ValueError(f"tile_size must be a positive integer or None; got {tile_size!r}")
    if (pool_features is None) != (pool_labels is None):
        raise ValueError("give both pool_features and pool_labels, or neither")
    if memory_limit is not None and (not isinstance(memory_limit, (int, np.integer)) or memory_limit < 1):
        raise ValueError(f"memory_limit must be a positive number of bytes or None; got {memory_limit!r}")
    if client is not None and backend == "numpy":
        raise ValueError("backend='numpy' runs locally only; with client= use 'auto', 'torch' or 'faiss'")
    from kstar_utils.engine.run import plan_run

    plan = None if client is not None else plan_run(
        features, labels, pool_features, pool_labels, distance=metric.distance,
        transformed=metric.transforms_rows, backend=backend, device=device, screen=screen, tile_size=tile_size,
        memory_limit=memory_limit, metric=metric)

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

    distance = metric.distance
    if not metric.transforms_rows and backend != "numpy" and Xq.dtype in (np.float32, np.float64):
        # the engine's class sort converts and rescales while it copies the rows: one pass over the data, not three
        scale = scale_exponent(Xq, Xp)
    else:
        space = metric_space(Xq, metric, codes=yq, pool=Xp, pool_codes=yp)
        Xq, Xp, distance, scale = space.queries, space.pool, space.distance, 0
    if client is not None:
        from kstar_utils.engine.distributed import run_distributed

        k, enemy = run_distributed(Xq, yq, Xp, yp, n_classes=classes.shape[0], client=client, device=device,
                                   backend=backend, tile_size=tile_size, progress=progress, scale=scale,
                                   screen=screen, distance=distance, memory_limit=memory_limit,
                                   block_rows=block_rows)
    elif backend == "numpy":
        k, enemy = _kstar_numpy(Xq, yq, Xp, yp, block_size, distance)
    else:
        from kstar_utils.engine.run import run_engine

        k, enemy = run_engine(Xq, yq, Xp, yp, n_classes=classes.shape[0], device=device,
                              backend=backend, tile_size=plan.tile if plan else tile_size, progress=progress, scale=scale, screen=screen,
                              distance=distance)
    return (k, enemy) if return_enemy else k


def _kstar_numpy(Xq, yq, Xp, yp, block_size: int, distance=SQEUCLIDEAN) -> tuple[np.ndarray, np.ndarray]:
    """The definition evaluated directly in float64 row blocks (one set when Xp is None): (k* (N,), enemy (N,)).
    Memory O(block x N x D)."""
    one_set = Xp is None
    if one_set:
        Xp, yp = Xq, yq
    n, m = Xq.shape[0], Xp.shape[0]
    out = np.empty(n, dtype=np.int64)
    enemy = np.empty(n, dtype=np.int64)
    rows = max(1, min(block_size, int(8e6 // max(1, m * Xq.shape[1]))))  # bound the (rows, m, D) tensor to ~64 MB
    for start in range(0, n, rows):
        stop = min(n, start + rows)
        d = distance.block(Xq[start:stop], Xp)
        same = yq[start:stop, None] == yp[None, :]
        foreign = np.where(same, np.inf, d)
        enemy[start:stop] = foreign.argmin(axis=1)  # the first minimum: the lowest index among ties
        d_enemy = foreign[np.arange(stop - start), enemy[start:stop]]
        closer = same & (d < d_enemy[:, None])
        if one_set:
            closer[np.arange(stop - start), np.arange(start, stop)] = False  # the sample itself
        out[start:stop] = 1 + closer.sum(axis=1)
    return out, enemy


def normalize_kstar(kstar, labels) -> np.ndarray:
    """k*_p / n_{y_p}: (N,) raw k* and (N,) labels -> (N,) float64 in [1/n_c, 1].

    Labels follow `encode_labels`' rule and k* `check_kstar`'s (whole numbers in 1..n_c); anything else raises
    ValueError naming the rows.
    """
    codes, _ = encode_labels(labels)
    counts = np.bincount(codes)
    k = check_kstar(kstar, codes, counts)
    return k / counts[codes]
