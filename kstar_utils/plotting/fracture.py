"""Who fractures whom, as pictures: the fracture matrix, its change between two models, and a gallery of the samples
behind a class's skew next to their nearest enemies. Inputs come from analysis.fracture."""
from __future__ import annotations

from typing import Mapping

import numpy as np
import pandas as pd

from kstar_utils.analysis.fracture import fracture_pivot
from kstar_utils.plotting.style import figure
from kstar_utils.plotting.style import heatmap as draw


def _class_grid(grid: pd.DataFrame, *, title: str, **heatmap):
    """A C x C class heatmap (diagonal blank), annotated, square cells, the enemy classes along the bottom."""
    return draw(grid.where(~np.eye(len(grid), dtype=bool)), title=title, xlabel="class of the nearest enemy",
                ylabel="class", rotation=40, annot=True, square=True, **heatmap)


def plot_fracture_matrix(tidy: pd.DataFrame, *, title: str = ""):
    """Rows: a class; columns: the class of its samples' nearest enemies; cells: the share of the row's samples
    (percent), the diagonal blank (an enemy is never of the own class). tidy: analysis.fracture.fracture_matrix."""
    share = fracture_pivot(tidy) * 100
    off = share.to_numpy()[~np.eye(len(share), dtype=bool)]
    return _class_grid(share, title=title, cmap="Reds", vmin=0, vmax=max(50.0, float(np.nanmax(off))), fmt=".0f",
                       cbar_kws={"label": "% of the class's samples", "shrink": 0.8})


def plot_fracture_difference(diff: pd.DataFrame, *, title: str = "", names: tuple[str, str] = ("a", "b")):
    """The change of the fracture matrix from model a to model b (percentage points, b - a), diverging around 0.
    diff: analysis.fracture.fracture_difference."""
    grid = fracture_pivot(diff, "delta_share") * 100
    lim = max(5.0, float(np.nanmax(np.abs(grid.to_numpy()[~np.eye(len(grid), dtype=bool)]))))
    return _class_grid(grid, title=title, cmap="RdBu_r", center=0, vmin=-lim, vmax=lim, fmt="+.0f",
                       cbar_kws={"label": f"percentage points ({names[1]} − {names[0]})", "shrink": 0.8})


def _show(ax, image):
    if image is None:
        ax.text(0.5, 0.5, "no image", ha="center", va="center", fontsize=7, color="0.5", transform=ax.transAxes)
    else:
        img = np.asarray(image)
        if img.ndim == 3 and img.shape[0] in (1, 3):  # CHW -> HWC
            img = np.moveaxis(img, 0, -1)
        if img.ndim == 3 and img.shape[-1] == 1:
            img = img[..., 0]
        ax.imshow(img, cmap="gray" if img.ndim == 2 else None, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])


def plot_sample_gallery(table: pd.DataFrame, images: Mapping[int, np.ndarray], *, title: str = ""):
    """The most fractured and the most clustered samples of a class, each next to its nearest enemy.

    table: analysis.fracture.samples_behind (which, rank, index, label, kstar, khat, enemy, enemy_label) plus an
    optional `distance` column; images: {sample index: (H, W[, C]) or (C, H, W) array in [0, 1]} for every index and
    enemy of the table (missing ones are drawn as "no image"). Left: the most fractured; right: the most clustered.
    """
    import matplotlib.pyplot as plt

    from kstar_utils.plotting.style import WIDTH, set_style

    set_style()
    groups = [g for g in ("fractured", "clustered") if (table["which"] == g).any()]
    rows = max(int((table["which"] == g).sum()) for g in groups)
    fig = plt.figure(figsize=(WIDTH, 1.75 * rows + 0.9))
    subs = np.atleast_1d(fig.subfigures(1, len(groups), wspace=0.06))
    for sf, g in zip(subs, groups):
        sub = table[table["which"] == g].reset_index(drop=True)
        axes = sf.subplots(rows, 2, squeeze=False)
        for r in range(rows):
            a, b = axes[r]
            if r >= len(sub):
                a.set_visible(False)
                b.set_visible(False)
                continue
            row = sub.iloc[r]
            _show(a, images.get(int(row["index"])))
            _show(b, images.get(int(row["enemy"])))
            dist = f"\nd = {row['distance']:#.3g}" if "distance" in row and pd.notna(row.get("distance")) else ""
            a.set_title(f"#{int(row['index'])} {row['label']}\nk̂* = {row['khat']:.2f}", fontsize=7)
            b.set_title(f"enemy #{int(row['enemy'])} {row['enemy_label']}{dist}", fontsize=7)
        sf.suptitle(f"most {g}: sample | its nearest enemy", fontsize=9, fontweight="bold")
    if title:
        fig.suptitle(title)
    return fig


def plot_class_view(khat: np.ndarray, row: pd.DataFrame, *, title: str = "", scale: str = "log"):
    """One class of one model: the histogram of its samples' k̂* (left) and its row of the fracture matrix, the share
    of its samples whose nearest enemy is in each other class (right). row: the tidy fracture matrix's rows of the
    class (analysis.fracture.fracture_matrix). scale: "log" (k̂* from 1/n_c to 1, as the distribution figures
    draw it) or "linear" (0 to 1)."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

    if scale not in ("log", "linear"):
        raise ValueError(f"scale must be 'log' or 'linear'; got {scale!r}")
    khat = np.asarray(khat, dtype=float)
    fig, axes = figure(3.4, ncols=2)
    ax = axes[0, 0]
    if scale == "log" and khat.size and khat.min() > 0:
        floor = float(khat.min())  # the smallest k̂* drawn (at least 1 / n_c)
        ax.hist(khat, bins=np.geomspace(floor / 1.05, 1.0, 21), color="#7570b3", edgecolor="white")
        ax.set_xscale("log")
        ax.set_xlim(floor / 1.2, 1.2)
        ticks = [t for t in (0.001, 0.01, 0.1, 1.0) if floor / 1.2 <= t <= 1.2]
        ax.xaxis.set_major_locator(FixedLocator(ticks))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xlabel("normalised k* (log scale)")
    else:
        ax.hist(khat, bins=np.linspace(0, 1, 21), color="#7570b3", edgecolor="white")
        ax.set_xlim(0, 1)
        ax.set_xlabel("normalised k*")
    ax.set_ylabel("samples")
    r = row[row["class"] != row["enemy_class"]].sort_values("share", ascending=True)
    axes[0, 1].barh(r["enemy_class"].astype(str), r["share"] * 100, color="#d95f02")
    axes[0, 1].set_xlabel("% of the class's samples whose nearest enemy is in ...")
    axes[0, 1].set_xlim(0, 100)
    if title:
        fig.suptitle(title)
    return fig
