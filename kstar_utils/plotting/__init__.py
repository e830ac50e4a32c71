"""Publication figures: per-class k̂* distributions and Γ' against accuracy. Functions return the Figure; the caller
saves it (see `save_figure`) and notebooks show it."""
from __future__ import annotations

from pathlib import Path

import matplotlib

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from kstar_utils.io.cache import atomic_path
from kstar_utils.method.kstar import normalize_kstar
from kstar_utils.method.skewness import CLUSTERED, FRACTURED, OVERLAPPED, UNDEFINED, SkewnessSummary

PATTERN_COLORS = {FRACTURED: "#d95f02", OVERLAPPED: "#7570b3", CLUSTERED: "#1b9e77", UNDEFINED: "#999999"}


def set_style() -> None:
    """Seaborn paper style with readable fonts; used by every figure here."""
    sns.set_theme(context="paper", style="whitegrid", font_scale=1.1)
    matplotlib.rcParams.update({"figure.dpi": 110, "savefig.dpi": 200, "savefig.bbox": "tight"})


def _fmt_skew(s: float) -> str:
    return f"{s:+.2f}" if np.isfinite(s) else ("+inf" if s > 0 else "-inf" if s < 0 else "n/a")


def plot_kstar_distribution(kstar, labels, summary: SkewnessSummary, *, title: str = "", ax=None):
    """Per-class violin + boxen plot of normalised k* (x from 0 to 1), each class's skew and pattern beside it.

    kstar: (N,) raw k*; labels: (N,); summary: summarize_skewness(kstar, labels). Returns the Figure.
    """
    set_style()
    khat = normalize_kstar(kstar, labels)
    df = pd.DataFrame({"khat": khat, "label": np.asarray(labels).astype(str)})
    per_class = summary.per_class.assign(label=summary.per_class["label"].astype(str))
    order = per_class["label"].tolist()
    palette = {row.label: PATTERN_COLORS[row.pattern] for row in per_class.itertuples()}
    if ax is None:
        fig, ax = plt.subplots(figsize=(7.0, 0.42 * len(order) + 1.2))
    else:
        fig = ax.figure
    sns.violinplot(data=df, x="khat", y="label", hue="label", order=order, palette=palette, cut=0,
                   inner=None, density_norm="width", linewidth=0.6, legend=False, ax=ax, alpha=0.35)
    sns.boxenplot(data=df, x="khat", y="label", hue="label", order=order, palette=palette, width=0.35,
                  showfliers=False, legend=False, ax=ax)
    ax.set_xlim(0, 1)
    for i, row in enumerate(per_class.itertuples()):
        ax.text(1.01, i, f"γ={_fmt_skew(row.skew)}  {row.pattern}", va="center", fontsize=8,
                color=PATTERN_COLORS[row.pattern], transform=ax.get_yaxis_transform(), clip_on=False)
    ax.set_xlabel("normalised k* (k* / class size)")
    ax.set_ylabel("class")
    gtxt = f"Γ={_fmt_skew(summary.true_skewness)}, Γ'={_fmt_skew(summary.approx_skewness)}"
    ax.set_title(f"{title}  ({gtxt})" if title else gtxt, fontsize=10)
    return fig


def plot_metric_vs_accuracy(table: pd.DataFrame, x: str, ys: dict[str, str], *, label_col: str = "model",
                            stats: pd.DataFrame | None = None, title: str = ""):
    """Scatter of a skewness coefficient against accuracies with a fitted trend line per accuracy.

    table: one row per model; x: column (e.g. "approx_skewness"); ys: column -> legend name; stats (optional): the
    correlation table with columns y, method, statistic, ci_low, ci_high, whose Spearman row goes into the legend.
    """
    set_style()
    fig, axes = plt.subplots(1, len(ys), figsize=(4.6 * len(ys), 3.8), squeeze=False)
    for ax, (col, name) in zip(axes[0], ys.items()):
        sns.regplot(data=table, x=x, y=col, ax=ax, ci=95, n_boot=500, seed=0, scatter_kws={"s": 36},
                    line_kws={"lw": 1.4})
        for _, row in table.iterrows():
            short = str(row[label_col]).split(":", 1)[-1]  # the registry source prefix adds nothing inside one study
            ax.annotate(short, (row[x], row[col]), fontsize=7, xytext=(3, 3), textcoords="offset points")
        if col.endswith("acc"):  # accuracies are fractions: keep the trend band from stretching the axis past 1
            lo, hi = ax.get_ylim()
            ax.set_ylim(max(lo, -0.02), min(hi, 1.02))
        legend = name
        if stats is not None:
            s = stats[(stats["y"] == col) & (stats["method"] == "spearman")]
            if len(s):
                s = s.iloc[0]
                legend = f"{name}: Spearman ρ={s.statistic:+.2f} [{s.ci_low:+.2f}, {s.ci_high:+.2f}]"
        ax.set_title(legend, fontsize=9)
        ax.set_xlabel({"approx_skewness": "Γ' (approximate skewness)", "true_skewness": "Γ (true skewness)"}.get(x, x))
        ax.set_ylabel(name)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def save_figure(fig, path: str | Path, *, close: bool = True) -> Path:
    """Write a figure atomically (format from the suffix: .png, .pdf, .svg) and, by default, close it so that
    notebooks show the saved file once rather than the live figure a second time."""
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=path.suffix.lstrip("."))
    if close:
        plt.close(fig)
    return path


def plot_class_skew_heatmap(per_class: pd.DataFrame, *, title: str = ""):
    """Heatmap of class skews γ_c: rows = models, columns = classes (infinite values drawn at the colour limits)."""
    set_style()
    grid = per_class.pivot_table(index="model", columns="label", values="skew", aggfunc="first", sort=False)
    finite = grid.to_numpy()[np.isfinite(grid.to_numpy())]
    lim = float(np.abs(finite).max()) if finite.size else 1.0
    shown = grid.clip(-lim, lim)
    fig, ax = plt.subplots(figsize=(0.55 * grid.shape[1] + 2.5, 0.45 * grid.shape[0] + 1.2))
    sns.heatmap(shown, cmap="RdBu_r", center=0, vmin=-lim, vmax=lim, annot=grid.map(_fmt_skew), fmt="",
                annot_kws={"fontsize": 7}, cbar_kws={"label": "γ_c (skew of k̂*)"}, linewidths=0.3, ax=ax)
    ax.set_xlabel("class")
    ax.set_ylabel("")
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig
