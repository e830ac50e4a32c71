"""Who fractures whom, and the samples behind a number: pure functions of k* and the nearest enemies.

    fm = fracture_matrix(labels, enemy_labels, khat, class_names)   # tidy: class, enemy_class, n, share, mean_khat
    fracture_pivot(fm)                                              # C x C shares (rows sum to 1)
    fracture_pairs(fm)                                              # the pairs of classes that cut into each other most
    fracture_difference(fm_a, fm_b)                                 # how the matrix changes between two models
    extreme_samples(khat, labels, c, n, "fractured")                # the samples behind a class's skew

For sample p of class c, its nearest enemy (compute_kstar(..., return_enemy=True)) is the nearest sample of another
class d; the fracture matrix counts, per class c, how its samples' nearest enemies are spread over the other classes,
and how deep (k̂*) those samples sit in their own class. A fractured class with most nearest enemies in one class is
cut by that class; a class whose enemies spread evenly overlaps with many.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

TIDY_COLUMNS = ["class", "enemy_class", "n", "share", "mean_khat"]


def fracture_matrix(labels: np.ndarray, enemy_labels: np.ndarray, khat: np.ndarray,
                    class_names: Sequence[str] | None = None) -> pd.DataFrame:
    """The fracture matrix as a tidy table, one row per (class, enemy class) with C x C rows (zeros included).

    labels (N,) int class codes; enemy_labels (N,) int class codes of each sample's nearest enemy; khat (N,) the
    samples' normalised k*; class_names (C,) names of the codes (default: the codes). Columns: class, enemy_class,
    n (samples of `class` whose nearest enemy is of `enemy_class`), share (n / class size: each class's shares sum to
    1), mean_khat (mean k̂* of those samples; NaN where n = 0).
    """
    labels = np.asarray(labels, dtype=np.int64)
    enemy_labels = np.asarray(enemy_labels, dtype=np.int64)
    khat = np.asarray(khat, dtype=np.float64)
    if not (labels.shape == enemy_labels.shape == khat.shape) or labels.ndim != 1:
        raise ValueError(f"labels, enemy_labels and khat must be (N,) arrays of one length; got {labels.shape}, "
                         f"{enemy_labels.shape}, {khat.shape}")
    C = int(max(labels.max(initial=-1), enemy_labels.max(initial=-1))) + 1
    names = list(class_names) if class_names is not None else list(range(C))
    if len(names) < C:
        raise ValueError(f"{len(names)} class names for {C} classes")
    if (labels == enemy_labels).any():
        rows = np.flatnonzero(labels == enemy_labels)
        raise ValueError(f"a nearest enemy must be of another class: rows {rows[:5].tolist()}")
    flat = labels * C + enemy_labels
    n = np.bincount(flat, minlength=C * C).reshape(C, C)
    ksum = np.bincount(flat, weights=khat, minlength=C * C).reshape(C, C)
    size = n.sum(1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        share = np.where(size > 0, n / np.maximum(size, 1), np.nan)
        mean = np.where(n > 0, ksum / np.maximum(n, 1), np.nan)
    c, d = np.meshgrid(np.arange(C), np.arange(C), indexing="ij")
    return pd.DataFrame({"class": np.asarray(names, dtype=object)[c.ravel()],
                         "enemy_class": np.asarray(names, dtype=object)[d.ravel()],
                         "n": n.ravel(), "share": share.ravel(), "mean_khat": mean.ravel()})[TIDY_COLUMNS]


def fracture_pivot(tidy: pd.DataFrame, value: str = "share") -> pd.DataFrame:
    """C x C table of `value` (rows: class, columns: enemy class), in the classes' order of appearance."""
    order = list(dict.fromkeys(tidy["class"]))
    return tidy.pivot(index="class", columns="enemy_class", values=value).reindex(index=order, columns=order)


def fracture_pairs(tidy: pd.DataFrame, top: int | None = 10) -> pd.DataFrame:
    """Unordered class pairs ranked by how much they cut into each other: share_ab + share_ba (the mutual share).

    Columns: class_a, class_b, share_ab (share of a's samples whose nearest enemy is in b), share_ba, mutual, n_ab,
    n_ba. `top`: keep the first rows (None: all pairs).
    """
    piv = fracture_pivot(tidy)
    cnt = fracture_pivot(tidy, "n")
    names = list(piv.index)
    rows = []
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            ab, ba = float(piv.at[a, b]), float(piv.at[b, a])
            rows.append({"class_a": a, "class_b": b, "share_ab": ab, "share_ba": ba, "mutual": ab + ba,
                         "n_ab": int(cnt.at[a, b]), "n_ba": int(cnt.at[b, a])})
    out = pd.DataFrame(rows).sort_values(["mutual", "class_a", "class_b"], ascending=[False, True, True],
                                         kind="stable").reset_index(drop=True)
    return out if top is None else out.head(top)


def fracture_difference(tidy_a: pd.DataFrame, tidy_b: pd.DataFrame) -> pd.DataFrame:
    """b - a, per (class, enemy class): columns class, enemy_class, share_a, share_b, delta_share (positive: in b
    more of the class's samples have their nearest enemy in that class)."""
    keys = ["class", "enemy_class"]
    m = tidy_a[keys + ["share"]].merge(tidy_b[keys + ["share"]], on=keys, how="outer", suffixes=("_a", "_b"),
                                       validate="one_to_one")
    if m[["share_a", "share_b"]].isna().all(axis=1).any():
        raise ValueError("the two fracture matrices are over different classes")
    return m.assign(delta_share=m["share_b"] - m["share_a"])


def extreme_samples(khat: np.ndarray, labels: np.ndarray, cls: int, n: int = 8, which: str = "fractured") -> np.ndarray:
    """Indices (up to n) of the class's samples with the lowest k̂* ("fractured": a foreign sample is among their
    closest neighbours) or the highest ("clustered"); ties by index. khat, labels: (N,)."""
    if which not in ("fractured", "clustered"):
        raise ValueError(f"which must be 'fractured' or 'clustered'; got {which!r}")
    idx = np.flatnonzero(np.asarray(labels) == cls)
    if idx.size == 0:
        raise ValueError(f"no samples of class {cls!r}")
    key = np.asarray(khat, dtype=np.float64)[idx]
    order = np.lexsort((idx, key if which == "fractured" else -key))
    return idx[order[:n]]


def samples_behind(kstar: np.ndarray, labels: np.ndarray, enemy: np.ndarray, cls: int, n: int = 6,
                   class_names: Sequence[str] | None = None, enemy_labels: np.ndarray | None = None) -> pd.DataFrame:
    """The class's n most fractured and n most clustered samples, each with its nearest enemy.

    kstar, labels, enemy: (N,) raw k*, class codes, nearest-enemy indices (into the pool when enemy_labels, the pool's
    codes, is given). Columns: which ("fractured" / "clustered"), rank, index, label, kstar, khat, enemy,
    enemy_label. A class of fewer than 2n samples shows each sample once (as fractured first).
    """
    kstar = np.asarray(kstar, dtype=np.int64)
    labels = np.asarray(labels, dtype=np.int64)
    enemy = np.asarray(enemy, dtype=np.int64)
    elab = labels if enemy_labels is None else np.asarray(enemy_labels, dtype=np.int64)
    khat = kstar / np.bincount(labels)[labels]
    names = (lambda c: class_names[c]) if class_names is not None else (lambda c: c)  # noqa: E731
    low = extreme_samples(khat, labels, cls, n, "fractured")
    rest = np.setdiff1d(np.flatnonzero(labels == cls), low)
    high = rest[np.lexsort((rest, -khat[rest]))][:n]
    rows = []
    for which, idx in (("fractured", low), ("clustered", high)):
        for rank, i in enumerate(idx, start=1):
            rows.append({"which": which, "rank": rank, "index": int(i), "label": names(int(labels[i])),
                         "kstar": int(kstar[i]), "khat": float(khat[i]), "enemy": int(enemy[i]),
                         "enemy_label": names(int(elab[enemy[i]]))})
    return pd.DataFrame(rows, columns=["which", "rank", "index", "label", "kstar", "khat", "enemy", "enemy_label"])
