"""Seeded data for the k* tests: Gaussian classes, tie-heavy integer lattices, Euclidean near-ties below float32
resolution.

Test files import it like the oracle: `from kstar_data import gaussian_classes` (tests/ is on sys.path under pytest).
"""
from __future__ import annotations

import numpy as np


def gaussian_classes(seed, n, d, c, spread=1.0):
    """(X (n, d) float64, y (n,) int): c Gaussian classes around centres of std `spread`, unit noise."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, c, n)
    y[:c] = np.arange(c)  # every class present
    X = rng.normal(size=(n, d)) + spread * rng.normal(size=(c, d))[y]
    return X, y


def random_lattice(seed, n=150, d=4, c=3, span=3):
    """Small random integers: masses of exactly equal scores under every metric, exact duplicates across classes."""
    rng = np.random.default_rng(seed)
    X = rng.integers(-span, span + 1, size=(n, d)).astype(np.float64)
    y = rng.integers(0, c, n)
    y[:c] = np.arange(c)
    return X, y


def sphere_near_ties(seed, groups=12, d=16, offset=1e3, scale=1e-9):
    """Euclidean near-ties in random directions, far from the origin: float32 cannot order them.

    Each group: a query p, one foreign point at distance r, classmates at r * (1 + delta), delta in +-{0,1,2,3}e-9.
    The large offset makes float32 rounding of ||a||^2 (~1e6) dwarf the distance differences (~1e-9 r^2).
    """
    rng = np.random.default_rng(seed)
    X, y = [], []
    deltas = np.array([-3, -2, -1, 0, 1, 2, 3]) * scale
    for g in range(groups):
        centre = rng.normal(size=d)
        centre *= offset / np.linalg.norm(centre)
        r = 1.0 + rng.random()
        cls_p, cls_f = 2 * (g % 3), 2 * (g % 3) + 1
        X.append(centre)
        y.append(cls_p)
        u = rng.normal(size=d)
        X.append(centre + r * u / np.linalg.norm(u))
        y.append(cls_f)
        for delta in deltas:
            u = rng.normal(size=d)
            X.append(centre + r * (1 + delta) * u / np.linalg.norm(u))
            y.append(cls_p)
    return np.array(X), np.array(y)
