"""Per-class k̂* distributions: one model in full (violin + boxen, each class's γ and pattern beside it), two or more
side by side, and a compact grid of many models. Every function takes k* with its precomputed SkewnessSummary."""
from __future__ import annotations

import math
from typing import Mapping

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.patches import Patch

from kstar_utils.method.kstar import normalize_kstar
from kstar_utils.method.skewness import SkewnessSummary
from kstar_utils.plotting.style import PATTERN_COLORS, figure, fmt_skew, set_style, short_name

_ROW = 0.36  # inches per class row


def _frame(kstar, labels, summary: SkewnessSummary):
    khat = normalize_kstar(kstar, labels)
    df = pd.DataFrame({"khat": khat, "label": np.asarray(labels).astype(str)})
    per_class = summary.per_class.assign(label=summary.per_class["label"].astype(str))
    palette = {row.label: PATTERN_COLORS[row.pattern] for row in per_class.itertuples()}
    return df, per_class, palette


def plot_kstar_distribution(kstar, labels, summary: SkewnessSummary, *, title: str = "", ax=None):
    """Per-class violin + boxen plot of normalised k* (x from 0 to 1), each class's skew and pattern beside it.

    kstar: (N,) raw k*; labels: (N,); summary: summarize_skewness(kstar, labels). Returns the Figure.
    """
    df, per_class, palette = _frame(kstar, labels, summary)
    order = per_class["label"].tolist()
    if ax is None:
        fig, axes = figure(_ROW * len(order) + 1.3)
        ax = axes[0, 0]
    else:
        set_style()
        fig = ax.figure
    sns.violinplot(data=df, x="khat", y="label", hue="label", order=order, palette=palette, cut=0, inner=None,
                   density_norm="width", linewidth=0.6, legend=False, ax=ax, alpha=0.35)
    sns.boxenplot(data=df, x="khat", y="label", hue="label", order=order, palette=palette, width=0.35,
                  showfliers=False, legend=False, ax=ax)
    ax.set_xlim(-0.02, 1.02)  # a clustered class's violin ends at k̂* = 1: keep it off the axes edge
    for i, row in enumerate(per_class.itertuples()):
        ax.text(1.04, i, f"γ={fmt_skew(row.skew)}  {row.pattern}", va="center", fontsize=8,
                color=PATTERN_COLORS[row.pattern], transform=ax.get_yaxis_transform(), clip_on=False)
    ax.set_xlabel("normalised k* (k* / class size)")
    ax.set_ylabel("class")
    gtxt = f"Γ={fmt_skew(summary.true_skewness)}, Γ'={fmt_skew(summary.approx_skewness)}"
    ax.set_title(f"{title}  ({gtxt})" if title else gtxt)
    return fig


def plot_kstar_side_by_side(results: Mapping[str, tuple], *, title: str = ""):
    """Per-class k̂* distributions of two (or three) models side by side, on the same class order.

    results: {panel title: (kstar (N,) raw k*, labels (N,), SkewnessSummary)}.
    """
    n = len(results)
    if not 1 <= n <= 3:
        raise ValueError(f"side by side takes 1 to 3 models; got {n} (use plot_kstar_grid for more)")
    n_classes = max(len(np.unique(lab)) for _, lab, _ in results.values())
    fig, axes = figure(_ROW * n_classes + 1.5, ncols=n, sharey=True)
    for ax, (name, (k, labels, summary)) in zip(axes[0], results.items()):
        plot_kstar_distribution(k, labels, summary, title=name, ax=ax)
        ax.title.set_fontsize(9)
    for ax in axes[0][1:]:
        ax.set_ylabel("")
    if title:
        fig.suptitle(title)
    return fig


def plot_kstar_grid(results: Mapping[str, tuple], *, ncols: int = 5, title: str = ""):
    """A compact grid: one small panel per model with a box of k̂* per class, coloured by the class's pattern.

    results: {model: (kstar (N,), labels (N,), SkewnessSummary)}, all over the same classes. Panels share the class
    axis; each panel's title gives the model and its Γ'.
    """
    n = len(results)
    if n == 0:
        raise ValueError("no k* results to plot")
    ncols = min(ncols, n)
    nrows = math.ceil(n / ncols)
    n_classes = max(len(np.unique(lab)) for _, lab, _ in results.values())
    fig, axes = figure(nrows * (0.2 * n_classes + 1.0) + 0.6, ncols=ncols, nrows=nrows, sharex=True, sharey=True)
    for i, (ax, (name, (k, labels, summary))) in enumerate(zip(axes.flat, results.items())):
        df, per_class, palette = _frame(k, labels, summary)
        sns.boxplot(data=df, x="khat", y="label", hue="label", order=per_class["label"].tolist(), palette=palette,
                    width=0.7, fliersize=0, linewidth=0.6, legend=False, ax=ax)
        ax.set_title(f"{short_name(name)}\nΓ'={fmt_skew(summary.approx_skewness)}", fontsize=8)
        ax.set_xlim(0, 1)
        # the x label goes on the lowest visible panel of each column (the last row may be partly empty)
        bottom = i + ncols >= n
        ax.set_xlabel("normalised k*" if bottom else "", fontsize=8, visible=bottom)  # seaborn hid it
        ax.xaxis.set_tick_params(labelbottom=bottom)
        ax.set_ylabel("")
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[n:]:
        ax.set_visible(False)
    handles = [Patch(color=c, label=p) for p, c in PATTERN_COLORS.items() if p != "Undefined"]
    # below the panels: above them it would collide with the title
    fig.legend(handles=handles, loc="outside lower center", ncols=3, fontsize=8, frameon=False)
    if title:
        fig.suptitle(title)
    return fig
