"""Figures across models: a coefficient against accuracy, Γ against Γ', heatmaps of Γ' and of class skews, the depth
profile, metric sensitivity, response to noise, a correlation matrix. Every function takes precomputed tables (and
correlation rows); none computes a statistic of its own beyond drawing a least-squares trend line."""
from __future__ import annotations

from typing import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from kstar_utils.plotting.style import (ACCURACY_NAMES, COEFFICIENT_NAMES, figure, fmt_skew, heatmap, model_styles,
                                        short_name)

MIN_MODELS_FOR_CI = 6  # below this a bootstrap interval over models says little; figures say so


def _model_legend(fig, styles: Mapping[str, tuple], *, loc: str = "outside right upper", title: str = "model",
                  ncols: int = 1):
    handles = [Line2D([], [], color=c, marker=m, linestyle="", markersize=7, label=short_name(name))
               for name, (c, m) in styles.items()]
    return fig.legend(handles=handles, loc=loc, fontsize=8, title=title, title_fontsize=8, frameon=False,
                      ncols=ncols)


def _model_lines(ax, table: pd.DataFrame, x: str, y: str, styles: Mapping[str, tuple], *, ms: float) -> None:
    """One line per model of `styles` through its rows of `table` (in the table's order), in the model's style."""
    for m, (c, mk) in styles.items():
        sub = table[table["model"] == m]
        ax.plot(sub[x], sub[y], color=c, marker=mk, lw=1.2, ms=ms)


def _clear_corner(ax) -> None:
    """No y tick at the bottom corner, where it would touch the first x tick label."""
    ax.yaxis.set_major_locator(MaxNLocator(nbins=6, prune="lower"))


def _trend(x: np.ndarray, y: np.ndarray, grid: np.ndarray, *, n_boot: int = 400, seed: int = 0):
    """Least-squares line of y on x over `grid` and a 95 % percentile band from a seeded bootstrap of the points."""
    slope, icpt = np.polyfit(x, y, 1)
    rng = np.random.default_rng(seed)
    lines = []
    for _ in range(n_boot):
        i = rng.integers(0, x.size, x.size)
        if np.ptp(x[i]) > 0:
            b = np.polyfit(x[i], y[i], 1)
            lines.append(b[0] * grid + b[1])
    band = np.percentile(np.asarray(lines), [2.5, 97.5], axis=0) if lines else None
    return slope * grid + icpt, band


def stats_line(stats: pd.DataFrame | None, y: str, method: str = "spearman") -> str:
    """'Spearman ρ = +0.52 [-0.10, +0.90], n = 10' for the row of `y` (and a caution when n < 6); '' without stats."""
    if stats is None or not len(stats):
        return ""
    s = stats[(stats["y"] == y) & (stats["method"] == method)]
    if not len(s):
        return ""
    s = s.iloc[0]
    if not np.isfinite(s.statistic):
        return f"{method}: not computable (n = {int(s.n)})"
    sym = {"spearman": "Spearman ρ", "kendall": "Kendall τ", "pearson": "Pearson r"}[method]
    text = f"{sym} = {s.statistic:+.2f} [{s.ci_low:+.2f}, {s.ci_high:+.2f}], n = {int(s.n)}"
    if int(s.n) < MIN_MODELS_FOR_CI:
        text += f"\n(fewer than {MIN_MODELS_FOR_CI} models: the interval cannot be trusted)"
    return text


def plot_metric_vs_accuracy(table: pd.DataFrame, x: str, ys: Mapping[str, str], *, label_col: str = "model",
                            stats: pd.DataFrame | None = None, title: str = ""):
    """Scatter of a skewness coefficient against accuracies, one panel per accuracy, with a least-squares trend and
    its bootstrap band (clipped to accuracy's range [0, 1]); models are told apart by colour and marker in one
    legend, so no label can cover another.

    table: one row per model; x: column (e.g. "approx_skewness"); ys: column -> axis name; stats (optional): the
    correlation table (columns y, method, statistic, ci_low, ci_high, n), whose Spearman row titles each panel.
    """
    t = table.dropna(subset=[x]).reset_index(drop=True)
    styles = model_styles(list(dict.fromkeys(t[label_col])))
    fig, axes = figure(4.4, ncols=len(ys))
    for ax, (col, name) in zip(axes[0], ys.items()):
        sub = t.dropna(subset=[col])
        xv, yv = sub[x].to_numpy(float), sub[col].to_numpy(float)
        ok = np.isfinite(xv) & np.isfinite(yv)
        if ok.sum() >= 3 and np.ptp(xv[ok]) > 0:
            grid = np.linspace(xv[ok].min(), xv[ok].max(), 50)
            line, band = _trend(xv[ok], yv[ok], grid)
            if col in ACCURACY_NAMES:
                line = np.clip(line, 0, 1)
                band = None if band is None else np.clip(band, 0, 1)
            if band is not None:
                ax.fill_between(grid, band[0], band[1], color="0.6", alpha=0.25, lw=0)
            ax.plot(grid, line, color="0.3", lw=1.2)
        for _, row in sub.iterrows():
            c, m = styles[row[label_col]]
            ax.scatter(row[x], row[col], color=c, marker=m, s=46, edgecolor="white", linewidth=0.5, zorder=3)
        if col in ACCURACY_NAMES:
            lo, hi = (yv[ok].min(), yv[ok].max()) if ok.any() else (0.0, 1.0)
            pad = 0.08 * max(hi - lo, 0.05)
            ax.set_ylim(max(0.0, lo - pad), min(1.0, hi + pad))
        ax.set_title(name + (f"\n{stats_line(stats, col)}" if stats is not None else ""), fontsize=9)
        ax.set_xlabel(COEFFICIENT_NAMES.get(x, x))
        ax.set_ylabel(name)
        _clear_corner(ax)
    _model_legend(fig, styles)
    if title:
        fig.suptitle(title)
    return fig


def plot_gamma_vs_gamma_prime(table: pd.DataFrame, *, agreement: Mapping | None = None, hue: str = "dataset",
                              style: str = "layer"):
    """Γ against Γ' for every row of `table` (model, dataset, layer) with the identity line. agreement: the output of
    analysis.correlate.agreement for these rows, summarised in the title."""
    t = table.dropna(subset=["true_skewness", "approx_skewness"])
    t = t[np.isfinite(t["true_skewness"]) & np.isfinite(t["approx_skewness"])]
    fig, axes = figure(5.0)
    ax = axes[0, 0]
    sns.scatterplot(data=t, x="approx_skewness", y="true_skewness", hue=hue if hue in t and t[hue].nunique() > 1 else None,
                    style=style if style in t else None, s=50, ax=ax)
    vals = t[["true_skewness", "approx_skewness"]].to_numpy()
    lo, hi = (float(vals.min()), float(vals.max())) if vals.size else (-1.0, 1.0)
    pad = 0.05 * (hi - lo or 1.0)
    ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], color="0.5", lw=1, ls="--", label="Γ = Γ'")
    title = "Γ vs Γ'"
    if agreement:
        title += (f"  (Spearman ρ = {agreement['spearman']:+.2f}, mean |Γ − Γ'| = {agreement['mean_abs_diff']:.2f}, "
                  f"n = {agreement['n']})")
    ax.set_title(title)
    ax.set_xlabel(COEFFICIENT_NAMES["approx_skewness"])
    ax.set_ylabel(COEFFICIENT_NAMES["true_skewness"])
    _clear_corner(ax)
    sns.move_legend(ax, "upper left", bbox_to_anchor=(1.02, 1), frameon=False, fontsize=8)
    return fig


def plot_value_heatmap(grid: pd.DataFrame, *, label: str, title: str = "", fmt: str = "{:+.2f}", center: float = 0.0,
                       cmap: str = "RdBu_r", annot: pd.DataFrame | None = None):
    """An annotated heatmap of a table (rows and columns as given; missing cells blank, ±inf drawn at the colour
    limits and written out). annot: text per cell (default: the values through `fmt`)."""
    values = grid.astype(float)
    finite = values.to_numpy()[np.isfinite(values.to_numpy())]
    lim = float(np.abs(finite - center).max()) if finite.size else 1.0
    shown = values.clip(center - lim, center + lim)
    text = annot if annot is not None else values.map(lambda v: "" if pd.isna(v) else
                                                      (fmt.format(v) if np.isfinite(v) else fmt_skew(v)))
    return heatmap(shown, title=title, xlabel=grid.columns.name or "", cmap=cmap, center=center, vmin=center - lim,
                   vmax=center + lim, annot=text, fmt="", cbar_kws={"label": label, "shrink": 0.8})


def plot_class_skew_heatmap(per_class: pd.DataFrame, *, title: str = ""):
    """Class skews γ_c: rows = models, columns = classes (per_class: model, label, skew)."""
    grid = per_class.pivot_table(index="model", columns="label", values="skew", aggfunc="first", sort=False)
    grid.index = [short_name(m) for m in grid.index]
    grid.columns.name = "class"
    return plot_value_heatmap(grid, label="γ_c (skew of k̂*)", title=title)


def plot_depth_profile(table: pd.DataFrame, *, layers: Sequence[str], value: str = "approx_skewness", title: str = ""):
    """Γ' (or `value`) of every model layer by layer (left) and each layer's Fractured / Overlapped / Clustered class
    counts (right). table: model, layer, value, n_fractured, n_overlapped, n_clustered."""
    t = table[table["layer"].isin(layers)]
    models = list(dict.fromkeys(t["model"]))
    styles = model_styles(models)
    fig, axes = figure(0.34 * len(models) + 2.4, ncols=2, gridspec_kw={"width_ratios": [1.25, 1]})
    ax = axes[0, 0]
    pos = {layer: i for i, layer in enumerate(layers)}
    _model_lines(ax, t.assign(position=t["layer"].map(pos)).sort_values("position"), "position", value, styles, ms=6)
    ax.set_xticks(range(len(layers)), layers)
    ax.axhline(0, color="0.6", lw=0.8)
    _clear_corner(ax)
    ax.set_xlabel("layer (input side → output side)")
    ax.set_ylabel(COEFFICIENT_NAMES.get(value, value))
    grid = t.pivot_table(index="model", columns="layer", values="n_fractured", aggfunc="first", sort=False)
    grid = grid.reindex(index=models, columns=list(layers))
    counts = t.assign(txt=t["n_fractured"].astype(int).astype(str) + "/" + t["n_overlapped"].astype(int).astype(str)
                      + "/" + t["n_clustered"].astype(int).astype(str))
    annot = counts.pivot_table(index="model", columns="layer", values="txt", aggfunc="first", sort=False)
    annot = annot.reindex(index=models, columns=list(layers))
    sns.heatmap(grid.astype(float), cmap="Oranges", annot=annot.fillna(""), fmt="", annot_kws={"fontsize": 7},
                cbar_kws={"label": "Fractured classes", "shrink": 0.8}, linewidths=0.3, ax=axes[0, 1])
    axes[0, 1].set_yticks(np.arange(len(models)) + 0.5, [short_name(m) for m in models], rotation=0)
    axes[0, 1].set_xlabel("")
    axes[0, 1].set_ylabel("")
    axes[0, 1].set_title("classes Fractured / Overlapped / Clustered", fontsize=9)
    # five or more layer names side by side in a narrow heatmap run into each other
    plt.setp(axes[0, 1].get_xticklabels(), rotation=45, ha="right", rotation_mode="anchor", fontsize=8)
    _model_legend(fig, styles, loc="outside lower center", ncols=min(5, len(models)))
    if title:
        fig.suptitle(title)
    return fig


def plot_metric_sensitivity(table: pd.DataFrame, *, column: str = "approx_skewness", title: str = ""):
    """Γ' (or `column`) of each model under each distance: one line per metric across the models, ordered by the
    first metric's value. table: pipeline.open_checks.metric_sensitivity's models table."""
    first = table["metric"].iloc[0]
    order = table[table["metric"] == first].sort_values(column)["model"].tolist()
    t = table.assign(model=table["model"].map(short_name))
    fig, axes = figure(4.4)
    ax = axes[0, 0]
    sns.pointplot(data=t, x="model", y=column, hue="metric", order=[short_name(m) for m in order], ax=ax,
                  markers="o", linestyles="-", dodge=0.3)
    ax.axhline(0, color="0.6", lw=0.8)
    ax.set_xlabel("")
    ax.set_ylabel(COEFFICIENT_NAMES.get(column, column))
    ax.tick_params(axis="x", rotation=35)
    for lab in ax.get_xticklabels():
        lab.set_horizontalalignment("right")
    sns.move_legend(ax, "upper left", bbox_to_anchor=(1.02, 1), frameon=False, fontsize=8, title="metric")
    if title:
        ax.set_title(title)
    return fig


def plot_perturbation_curves(table: pd.DataFrame, *, ys: Sequence[str] = ("approx_skewness", "frac_kstar_changed"),
                             xlabel: str = "noise strength", title: str = ""):
    """Response to noise: one panel per column in `ys`, one line per model against `strength`. table: the output of
    pipeline.open_checks' input_noise_study / latent_noise_study."""
    names = {**COEFFICIENT_NAMES, "frac_kstar_changed": "share of samples with changed k*",
             "mean_abs_khat_change": "mean |Δk̂*|", "accuracy": "accuracy on noised inputs"}
    models = list(dict.fromkeys(table["model"]))
    styles = model_styles(models)
    fig, axes = figure(3.8, ncols=len(ys))
    for ax, y in zip(axes[0], ys):
        _model_lines(ax, table, "strength", y, styles, ms=5)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(names.get(y, y))
        if y in ("accuracy", "frac_kstar_changed"):
            ax.set_ylim(-0.02, 1.02)
        _clear_corner(ax)
    _model_legend(fig, styles)
    if title:
        fig.suptitle(title)
    return fig


def plot_correlation_matrix(matrix: pd.DataFrame, *, title: str = "", label: str = "Spearman ρ of class skews"):
    """A symmetric correlation matrix (e.g. pipeline.open_checks.pair_matrix) as an annotated heatmap in [-1, 1]."""
    return heatmap(matrix.rename(index=short_name, columns=short_name), title=title, rotation=40, cmap="RdBu_r",
                   vmin=-1, vmax=1, center=0, annot=True, fmt=".2f", cbar_kws={"label": label, "shrink": 0.8},
                   square=True)


def accuracy_panels(table: pd.DataFrame, ys: Sequence[str]) -> dict[str, str]:
    """{column: axis name} of the accuracy columns in `ys` with at least two values in `table`."""
    return {y: ACCURACY_NAMES.get(y, y) for y in ys if y in table.columns and table[y].notna().sum() >= 2}
