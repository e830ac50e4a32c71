"""Figures of a whole study (many models, several datasets): Γ' against accuracy per dataset and averaged over
datasets, Γ against Γ', a models x datasets heatmap of Γ', and two models' per-class k̂* distributions side by side.

Every function takes the study summary table (kstar_utils.study.summary.build_summary: one row per model, dataset and
layer) or k* results, and returns a matplotlib Figure; save it with kstar_utils.plotting.save_figure.
"""
from __future__ import annotations

import warnings
from typing import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from kstar_utils.plotting import plot_kstar_distribution, plot_metric_vs_accuracy, set_style
from kstar_utils.method.skewness import summarize_skewness

ACCURACY_NAMES = {"clean_acc": "clean accuracy", "robust_acc": "robust accuracy", "zeroshot_acc": "zero-shot accuracy",
                  "zeroshot_avg": "zero-shot accuracy (38-dataset mean)",
                  "zeroshot_acc_computed": "zero-shot accuracy (computed)"}
COEFFICIENT_NAMES = {"approx_skewness": "Γ' (approximate skewness)", "true_skewness": "Γ (true skewness)"}


def _finished(summary: pd.DataFrame, layer: str | None) -> pd.DataFrame:
    t = summary
    if "status" in t.columns:
        t = t[t["status"].isin(["ok", "skipped"])]
    if layer is not None:
        t = t[t["layer"] == layer]
    if t.empty:
        raise ValueError(f"no finished rows{f' at layer {layer!r}' if layer else ''} in the summary")
    return t


def average_over_datasets(summary: pd.DataFrame, *, layer: str, columns: Sequence[str] = ("approx_skewness",
                          "true_skewness", "clean_acc", "robust_acc", "zeroshot_acc", "zeroshot_avg")) -> pd.DataFrame:
    """One row per model at `layer`: the mean over datasets of each column (NaN-skipping) and n_datasets."""
    t = _finished(summary, layer)
    cols = [c for c in columns if c in t.columns]
    out = t.groupby("model", sort=False)[cols].mean()
    out["n_datasets"] = t.groupby("model", sort=False)["dataset"].nunique()
    return out.reset_index()


def plot_coefficient_vs_accuracy(table: pd.DataFrame, ys: Sequence[str], *, x: str = "approx_skewness",
                                 stats: pd.DataFrame | None = None, title: str = ""):
    """Scatter of Γ' (or Γ) against each accuracy column in `ys`, with the fitted trend and, when `stats` (a
    correlation table with y, method, statistic, ci_low, ci_high) is given, the Spearman ρ and its interval in each
    panel's legend title. table: one row per model (one dataset, or averaged over datasets)."""
    ys = [y for y in ys if y in table.columns and table[y].notna().sum() >= 2]
    if not ys:
        raise ValueError("no accuracy column with at least two values to plot")
    shown = table.dropna(subset=[x]).copy()
    shown["model"] = shown["model"].astype(str).str.replace(r"^[a-z]+:", "", regex=True)  # short labels
    return plot_metric_vs_accuracy(shown, x, {y: ACCURACY_NAMES.get(y, y) for y in ys}, stats=stats, title=title)


def plot_skewness_vs_accuracy_by_dataset(summary: pd.DataFrame, ys: Sequence[str], *, layer: str,
                                         x: str = "approx_skewness", stats: pd.DataFrame | None = None) -> dict:
    """{dataset: Figure} of Γ' against the accuracies, one figure per dataset at `layer`; stats: the study
    correlation table (columns layer, x, y, group, method, ...), whose rows for the dataset go into the legend."""
    t = _finished(summary, layer)
    figs = {}
    for dataset, sub in t.groupby("dataset", sort=False):
        s = None
        if stats is not None and len(stats):
            s = stats[(stats["layer"] == layer) & (stats["x"] == x) & (stats["group"] == dataset)]
        usable = [y for y in ys if y in sub.columns and sub[y].notna().sum() >= 2]
        if usable and sub[x].notna().sum() >= 2:
            figs[dataset] = plot_coefficient_vs_accuracy(sub, usable, x=x, stats=s,
                                                         title=f"{COEFFICIENT_NAMES.get(x, x)} vs accuracy · {dataset} · {layer}")
    return figs


def plot_gamma_vs_gamma_prime(summary: pd.DataFrame, *, layer: str | None = None):
    """Γ against Γ' for every finished (model, dataset[, layer]) with the identity line; colour = dataset, marker =
    layer. The title gives the Spearman correlation and the mean |Γ - Γ'| (kstar_utils.analysis.correlate.agreement)."""
    from kstar_utils.analysis.correlate import agreement

    set_style()
    t = _finished(summary, layer).dropna(subset=["true_skewness", "approx_skewness"])
    t = t[np.isfinite(t["true_skewness"]) & np.isfinite(t["approx_skewness"])]
    fig, ax = plt.subplots(figsize=(5.2, 4.4))
    sns.scatterplot(data=t, x="approx_skewness", y="true_skewness", hue="dataset", style="layer", s=50, ax=ax)
    lo = float(np.nanmin(t[["true_skewness", "approx_skewness"]].to_numpy())) if len(t) else -1.0
    hi = float(np.nanmax(t[["true_skewness", "approx_skewness"]].to_numpy())) if len(t) else 1.0
    pad = 0.05 * (hi - lo or 1.0)
    ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], color="0.5", lw=1, ls="--", label="Γ = Γ'")
    title = "Γ vs Γ'"
    if len(t) >= 3 and t["true_skewness"].nunique() > 1 and t["approx_skewness"].nunique() > 1:
        a = agreement(t["true_skewness"], t["approx_skewness"], n_boot=500, n_perm=500, seed=0)
        title += f"  (Spearman ρ={a['spearman']:+.2f}, mean |Γ-Γ'|={a['mean_abs_diff']:.2f}, n={a['n']})"
    ax.set_title(title, fontsize=9)
    ax.set_xlabel(COEFFICIENT_NAMES["approx_skewness"])
    ax.set_ylabel(COEFFICIENT_NAMES["true_skewness"])
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    return fig


def plot_skewness_heatmap(summary: pd.DataFrame, *, layer: str, value: str = "approx_skewness"):
    """Heatmap of Γ' (or another column): rows = models, columns = datasets, at `layer`; missing pairs stay blank."""
    set_style()
    t = _finished(summary, layer)
    grid = t.pivot_table(index="model", columns="dataset", values=value, aggfunc="first", sort=False)
    fig, ax = plt.subplots(figsize=(1.3 * grid.shape[1] + 3.0, 0.42 * grid.shape[0] + 1.4))
    finite = grid.to_numpy()[np.isfinite(grid.to_numpy())]
    lim = float(np.abs(finite).max()) if finite.size else 1.0
    sns.heatmap(grid, cmap="RdBu_r", center=0, vmin=-lim, vmax=lim, annot=True, fmt=".2f", annot_kws={"fontsize": 8},
                linewidths=0.3, cbar_kws={"label": COEFFICIENT_NAMES.get(value, value)}, ax=ax)
    ax.set_xlabel("dataset")
    ax.set_ylabel("")
    ax.set_title(f"{COEFFICIENT_NAMES.get(value, value)} · {layer}", fontsize=10)
    fig.tight_layout()
    return fig


def plot_kstar_side_by_side(results: Mapping[str, tuple], *, title: str = ""):
    """Per-class k̂* distributions of two (or more) models side by side, on the same class order.

    results: {panel title: (kstar (N,) raw k*, labels (N,))}, e.g. from kstar_utils.pipeline.stages.load_kstar(...).kstar and
    .named_labels. Each panel is kstar_utils.plotting.plot_kstar_distribution with its class skews and Γ, Γ'.
    """
    set_style()
    n = len(results)
    if n < 1:
        raise ValueError("no k* results to plot")
    n_classes = max(len(np.unique(lab)) for _, lab in results.values())
    fig, axes = plt.subplots(1, n, figsize=(6.2 * n + 1.5 * (n - 1), 0.42 * n_classes + 1.4), squeeze=False)
    for ax, (name, (k, labels)) in zip(axes[0], results.items()):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # classes without a distribution are reported in the panel itself
            summary = summarize_skewness(k, labels)
        plot_kstar_distribution(k, labels, summary, title=name, ax=ax)
    fig.subplots_adjust(wspace=0.55)
    if title:
        fig.suptitle(title)
    return fig


def plot_metric_sensitivity(table: pd.DataFrame, *, column: str = "approx_skewness", title: str = ""):
    """Γ' (or `column`) of each model under each distance: one line per metric across the models, ordered by the
    first metric's value. table: kstar_utils.pipeline.open_checks.metric_sensitivity's models table."""
    set_style()
    order = (table[table["metric"] == table["metric"].iloc[0]].sort_values(column)["model"].tolist())
    fig, ax = plt.subplots(figsize=(0.7 * len(order) + 3.0, 3.8))
    sns.pointplot(data=table, x="model", y=column, hue="metric", order=order, ax=ax, markers="o", linestyles="-",
                  dodge=0.2)
    ax.axhline(0, color="0.6", lw=0.8)
    ax.set_xlabel("")
    ax.set_ylabel(COEFFICIENT_NAMES.get(column, column))
    ax.tick_params(axis="x", rotation=35)
    for lab in ax.get_xticklabels():
        lab.set_horizontalalignment("right")
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig


def plot_perturbation_curves(table: pd.DataFrame, *, ys: Sequence[str] = ("approx_skewness", "frac_kstar_changed"),
                             xlabel: str = "noise strength", title: str = ""):
    """Response to noise: one panel per column in `ys` (e.g. Γ', share of samples whose k* changed), one line per
    model against `strength`. table: kstar_utils.pipeline.perturbation's input_noise_study / latent_noise_study output."""
    set_style()
    names = {**COEFFICIENT_NAMES, "frac_kstar_changed": "share of samples with changed k*",
             "mean_abs_khat_change": "mean |Δk̂*|", "accuracy": "accuracy on noised inputs", "skew_spread": "spread of γ_c"}
    fig, axes = plt.subplots(1, len(ys), figsize=(4.4 * len(ys) + 1.6, 3.6), squeeze=False)
    for i, (ax, y) in enumerate(zip(axes[0], ys)):
        sns.lineplot(data=table, x="strength", y=y, hue="model", marker="o", ax=ax, legend=i == len(ys) - 1)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(names.get(y, y))
    if len(ys):
        leg = axes[0][-1].get_legend()
        if leg is not None:
            sns.move_legend(axes[0][-1], "upper left", bbox_to_anchor=(1.02, 1), fontsize=7, title="model")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_correlation_matrix(matrix: pd.DataFrame, *, title: str = "", label: str = "Spearman ρ of class skews"):
    """A symmetric correlation matrix (e.g. kstar_utils.pipeline.open_checks.pair_matrix) as an annotated heatmap in [-1, 1]."""
    set_style()
    n = matrix.shape[0]
    fig, ax = plt.subplots(figsize=(0.6 * n + 3.2, 0.5 * n + 2.0))
    sns.heatmap(matrix, cmap="RdBu_r", vmin=-1, vmax=1, center=0, annot=True, fmt=".2f", annot_kws={"fontsize": 7},
                linewidths=0.3, cbar_kws={"label": label}, ax=ax, square=True)
    ax.set_xlabel("")
    ax.set_ylabel("")
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig


__all__ = ["average_over_datasets", "plot_coefficient_vs_accuracy", "plot_skewness_vs_accuracy_by_dataset",
           "plot_gamma_vs_gamma_prime", "plot_skewness_heatmap", "plot_kstar_side_by_side", "plot_metric_sensitivity",
           "plot_perturbation_curves", "plot_correlation_matrix", "ACCURACY_NAMES"]
