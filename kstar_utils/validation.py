"""Input checks shared by every public function: bad input fails early with a message that names the problem."""
from __future__ import annotations

import numpy as np


def _to_numpy(x) -> np.ndarray:
    # torch tensors (CPU or CUDA) and array-likes; import torch lazily so numpy-only use stays light
    if hasattr(x, "detach") and hasattr(x, "cpu"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def check_features(features, *, name: str = "features") -> np.ndarray:
    """Return `features` as a finite 2-D floating array of shape (N, D); raise ValueError otherwise."""
    X = _to_numpy(features)
    if X.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array of shape (N, D); got shape {X.shape}")
    if X.shape[0] == 0:
        raise ValueError(f"{name} is empty: no samples (shape {X.shape})")
    if X.shape[1] == 0:
        raise ValueError(f"{name} has zero feature dimensions (shape {X.shape})")
    if not (np.issubdtype(X.dtype, np.floating) or np.issubdtype(X.dtype, np.integer) or X.dtype == bool):
        raise ValueError(f"{name} must be numeric; got dtype {X.dtype}")
    if not np.issubdtype(X.dtype, np.floating):
        X = X.astype(np.float64)
    bad = ~np.isfinite(X)
    if bad.any():
        rows = np.flatnonzero(bad.any(axis=1))
        kind = "NaN" if np.isnan(X[bad]).any() else "inf"
        raise ValueError(
            f"{name} contain {kind} values in {rows.size} of {X.shape[0]} rows (first bad rows: {rows[:5].tolist()}); "
            "k* needs finite features"
        )
    return X


def encode_labels(labels, n: int | None = None, *, name: str = "labels") -> tuple[np.ndarray, np.ndarray]:
    """Map labels (ints, strings, any hashable) to codes 0..C-1.

    Returns (codes of shape (N,) int64, classes of shape (C,) in sorted order). Raises ValueError on a length
    mismatch with `n` samples or on empty labels.
    """
    y = _to_numpy(labels)
    if y.ndim != 1:
        y = y.reshape(-1) if y.ndim == 2 and 1 in y.shape else y
    if y.ndim != 1:
        raise ValueError(f"{name} must be 1-D; got shape {y.shape}")
    if y.size == 0:
        raise ValueError(f"{name} is empty")
    if n is not None and y.shape[0] != n:
        raise ValueError(f"features and {name} differ in length: {n} feature rows but {y.shape[0]} labels")
    if y.dtype.kind == "f" and not np.isfinite(y).all():
        raise ValueError(f"{name} contain NaN or inf")
    try:
        classes, codes = np.unique(y, return_inverse=True)
    except TypeError as e:  # mixed types, e.g. ints and strings
        raise ValueError(f"{name} must be of one comparable type (e.g. all ints or all strings): {e}") from None
    return codes.astype(np.int64).reshape(-1), classes


def check_features_labels(features, labels, *, min_classes: int = 2) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Validate a labelled feature set. Returns (X (N, D) float, codes (N,) int64, classes (C,))."""
    X = check_features(features)
    codes, classes = encode_labels(labels, X.shape[0])
    if classes.size < min_classes:
        raise ValueError(
            f"k* needs samples from at least {min_classes} classes (a nearest neighbour from another class); "
            f"got {classes.size} class(es): {classes[:5].tolist()}"
        )
    return X, codes, classes
