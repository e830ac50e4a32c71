"""Per-class k̂* distributions: one model in full (violin + boxen, each class's γ_c and pattern beside it), two or more
side by side, and a compact grid of many models. Every function takes k* with its precomputed SkewnessSummary.

k̂* = k* / class size lies in [1/n_c, 1]. By default it is drawn on a log axis from the smallest 1/n_c to 1 (ticks
labelled in k̂*), the same axis for every model: a robust model whose k̂* sits near 1/n_c stays as readable as a
standard one spread over [0, 1]. scale="linear" draws the plain 0-1 axis."""
from __future__ import annotations

import math
from typing import Mapping

from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

import warnings

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.patches import Patch

from kstar_utils.method.kstar import normalize_kstar
from kstar_utils.method.skewness import SkewnessSummary
from kstar_utils.plotting.style import PATTERN_COLORS, figure, fmt_skew, set_style, short_name

_ROW = 0.36  # inches per class row
_TICKS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)


def _floor(*labels) -> float:
    """The smallest k̂* any class can have: 1 / (largest class size)."""
    return 1.0 / max(int(np.unique(np.asarray(lab), return_counts=True)[1].max()) for lab in labels)


def _khat_axis(ax, scale: str, floor: float, *, decades: bool = False) -> None:
    """The k̂* axis: log from just below `floor` to just above 1, ticks in plain numbers (0.01, 0.02, 0.05, 0.1, ...;
    decades only where panels are narrow or decades many); or 0-1."""
    if scale == "linear":
        ax.set_xlim(-0.02, 1.02)  # a clustered class's violin ends at k̂* = 1: keep it off the axes edge
        return
    ax.set_xscale("log")
    ax.set_xlim(floor / 1.25, 1.25)
    ticks = [t for t in _TICKS if floor / 1.25 <= t <= 1.0]
    # 1, 2, 5 per decade where there are few decades; 1 per decade (and its 0.2 / 0.5 dropped) where there are many
    if decades or len(ticks) > 7:
        ticks = [t for t in ticks if abs(math.log10(t) - round(math.log10(t))) < 1e-9]
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_locator(NullLocator())


def _check_scale(scale: str) -> str:
    if scale not in ("log", "linear"):
        raise ValueError(f"scale must be 'log' or 'linear'; got {scale!r}")
    return scale


def _frame(kstar, labels, summary: SkewnessSummary):
    khat = normalize_kstar(kstar, labels)
    df = pd.DataFrame({"khat": khat, "label": np.asarray(labels).astype(str)})
    per_class = summary.per_class.assign(label=summary.per_class["label"].astype(str))
    palette = {row.label: PATTERN_COLORS[row.pattern] for row in per_class.itertuples()}
    return df, per_class, palette


def plot_kstar_distribution(kstar, labels, summary: SkewnessSummary, *, title: str = "", ax=None, scale: str = "log",
                            floor: float | None = None):
    """Per-class violin + boxen plot of normalised k*, each class's skew γ_c and pattern beside it.

    kstar: (N,) raw k*; labels: (N,); summary: summarize_skewness(kstar, labels). scale: "log" (k̂* from 1/n_c to 1,
    the default) or "linear" (0 to 1); floor: the log axis' lower end (default 1 / largest class size). Returns the
    Figure.
    """
    log = _check_scale(scale) == "log"
    df, per_class, palette = _frame(kstar, labels, summary)
    order = per_class["label"].tolist()
    if ax is None:
        fig, axes = figure(_ROW * len(order) + 1.3)
        ax = axes[0, 0]
    else:
        set_style()
        fig = ax.figure
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a class whose k̂* are all one value has no density to draw
        sns.violinplot(data=df, x="khat", y="label", hue="label", order=order, palette=palette, cut=0, inner=None,
                       density_norm="width", linewidth=0.6, legend=False, ax=ax, alpha=0.35, log_scale=log or None)
        sns.boxenplot(data=df, x="khat", y="label", hue="label", order=order, palette=palette, width=0.35,
                      showfliers=False, legend=False, ax=ax, log_scale=log or None)
    _khat_axis(ax, scale, floor if floor is not None else _floor(labels))
    for i, row in enumerate(per_class.itertuples()):
        ax.text(1.04, i, f"$\\gamma_c$ = {fmt_skew(row.skew)}  {row.pattern}", va="center", fontsize=8,
                color=PATTERN_COLORS[row.pattern], transform=ax.get_yaxis_transform(), clip_on=False)
    ax.set_xlabel("normalised k* (k* / class size" + (", log scale)" if log else ")"))
    ax.set_ylabel("class")
    gtxt = f"Γ={fmt_skew(summary.true_skewness)}, Γ'={fmt_skew(summary.approx_skewness)}"
    ax.set_title(f"{title}  ({gtxt})" if title else gtxt)
    return fig


def plot_kstar_side_by_side(results: Mapping[str, tuple], *, title: str = "", scale: str = "log"):
    """Per-class k̂* distributions of two (or three) models side by side, on the same class order and the same k̂*
    axis (scale: "log", the default, or "linear").

    results: {panel title: (kstar (N,) raw k*, labels (N,), SkewnessSummary)}.
    """
    n = len(results)
    if not 1 <= n <= 3:
        raise ValueError(f"side by side takes 1 to 3 models; got {n} (use plot_kstar_grid for more)")
    n_classes = max(len(np.unique(lab)) for _, lab, _ in results.values())
    floor = _floor(*(lab for _, lab, _ in results.values()))
    fig, axes = figure(_ROW * n_classes + 1.5, ncols=n, sharey=True)
    for ax, (name, (k, labels, summary)) in zip(axes[0], results.items()):
        plot_kstar_distribution(k, labels, summary, title=name, ax=ax, scale=scale, floor=floor)
        ax.title.set_fontsize(9)
    for ax in axes[0][1:]:
        ax.set_ylabel("")
    if title:
        fig.suptitle(title)
    return fig


def plot_kstar_grid(results: Mapping[str, tuple], *, ncols: int | None = None, title: str = "", scale: str = "log"):
    """A compact grid: one small panel per model with a box of k̂* per class, coloured by the class's pattern, on one
    shared k̂* axis (scale: "log", the default, or "linear").

    results: {model: (kstar (N,), labels (N,), SkewnessSummary)}, all over the same classes. Panels share the class
    axis; each panel's title gives the model and its Γ'. ncols: panels per row (default 5, 6 above 15 models).
    """
    log = _check_scale(scale) == "log"
    n = len(results)
    if n == 0:
        raise ValueError("no k* results to plot")
    ncols = min(ncols or (5 if n <= 15 else 6), n)
    nrows = math.ceil(n / ncols)
    n_classes = max(len(np.unique(lab)) for _, lab, _ in results.values())
    floor = _floor(*(lab for _, lab, _ in results.values()))
    per_row = (0.2 * n_classes + 1.0) if n <= 15 else (0.16 * n_classes + 0.85)
    fig, axes = figure(nrows * per_row + 0.6, ncols=ncols, nrows=nrows, sharex=True, sharey=True)
    for i, (ax, (name, (k, labels, summary))) in enumerate(zip(axes.flat, results.items())):
        df, per_class, palette = _frame(k, labels, summary)
        sns.boxplot(data=df, x="khat", y="label", hue="label", order=per_class["label"].tolist(), palette=palette,
                    width=0.7, fliersize=0, linewidth=0.6, legend=False, ax=ax, log_scale=log or None)
        ax.set_title(f"{short_name(name)}\nΓ'={fmt_skew(summary.approx_skewness)}", fontsize=8 if n <= 15 else 7)
        _khat_axis(ax, scale, floor, decades=True)
        # the x label goes on the lowest visible panel of each column (the last row may be partly empty)
        bottom = i + ncols >= n
        ax.set_xlabel(("normalised k*" + (" (log)" if log else "")) if bottom else "", fontsize=8,
                      visible=bottom)  # seaborn hid it
        ax.xaxis.set_tick_params(labelbottom=bottom)
        ax.set_ylabel("")
        ax.tick_params(labelsize=7 if n <= 15 else 6)
    for ax in list(axes.flat)[n:]:
        ax.set_visible(False)
    handles = [Patch(color=c, label=p) for p, c in PATTERN_COLORS.items() if p != "Undefined"]
    # below the panels: above them it would collide with the title
    fig.legend(handles=handles, loc="outside lower center", ncols=3, fontsize=8, frameon=False)
    if title:
        fig.suptitle(title)
    return fig
