"""Figures of how Γ' depends on the sample: each coefficient against the number of images per class (the mean over
random draws and the band of their central quantiles, per model), the stability of the models' ranking, and a fixed
subset against the whole set. Every function takes the precomputed tables of analysis.sampling and
pipeline.sample_size."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd
from matplotlib.lines import Line2D
from matplotlib.ticker import FixedLocator, NullLocator

from kstar_utils.plotting.style import (COEFFICIENT_NAMES, figure, model_looks, model_styles, place_labels, short_name,
                                        style_legend)

VALUE_NAMES = {**COEFFICIENT_NAMES, "n_fractured": "Fractured classes", "n_clustered": "Clustered classes",
               "n_overlapped": "Overlapped classes"}


def _size_axis(ax, sizes: Sequence[int]) -> None:
    """Log-scaled x axis with one labelled tick per size drawn, and no others."""
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(FixedLocator(sorted(sizes)))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xticklabels([f"{s:,}" for s in sorted(sizes)])
    ax.set_xlim(min(sizes) / 1.25, max(sizes) * 1.25)
    ax.set_xlabel("images per class")


def plot_sample_size(summary: pd.DataFrame, ranking: pd.DataFrame | None = None, *,
                     values: Sequence[str] | None = None, band: str = "95 %", title: str = ""):
    """Each value of `summary` (analysis.sampling.size_summary: one row per model, value and n_per_class) against
    the number of images per class, one panel per value: per model the mean over the draws (line and marker) and
    the band between the draws' quantiles q_low and q_high (shaded); the whole set is the last point, without a
    band. With `ranking` (analysis.sampling.ranking_summary of one layer) a last panel shows Kendall τ between each
    draw's ranking of the models and the whole set's (mean and band) and the share of draws whose lowest-value
    model is the whole set's. `band` names the quantile band in the labels."""
    values = list(dict.fromkeys(summary["value"])) if values is None else list(values)
    absent = [v for v in values if v not in set(summary["value"])]
    if absent:
        raise ValueError(f"no rows for {absent} in the summary; it has {sorted(set(summary['value']))}")
    panels = len(values) + (ranking is not None)
    ncols = 2 if panels > 1 else 1
    nrows = (panels + ncols - 1) // ncols
    fig, axes = figure(3.0 * nrows + 0.6, ncols=ncols, nrows=nrows)
    flat = list(axes.ravel())
    models = list(dict.fromkeys(summary["model"]))
    styles = model_styles(models)
    sizes = sorted(set(summary["n_per_class"].astype(int)))
    for ax, value in zip(flat, values):
        sub = summary[summary["value"] == value]
        for m, (color, marker) in styles.items():
            t = sub[sub["model"] == m].sort_values("n_per_class")
            ax.fill_between(t["n_per_class"], t["q_low"], t["q_high"], color=color, alpha=0.15, lw=0)
            ax.plot(t["n_per_class"], t["mean"], color=color, marker=marker, ms=4.5, lw=1.2)
        if value in ("approx_skewness", "true_skewness"):
            ax.axhline(0, color="0.6", lw=0.8, zorder=0)
        _size_axis(ax, sizes)
        ax.set_ylabel(VALUE_NAMES.get(value, value))
        if value in ("approx_skewness", "true_skewness"):
            # models of one training kind share a colour: each line is named at its end
            ax.set_xlim(min(sizes) / 1.25, max(sizes) * 4.5)
            ends = sub.sort_values("n_per_class").groupby("model", sort=False).tail(1)
            place_labels(ax, [(float(r.n_per_class), float(r.mean), short_name(r.model))
                              for r in ends.itertuples()], prefer="right", fontsize=7)
    if ranking is not None:
        ax = flat[len(values)]
        r = ranking.sort_values("n_per_class")
        ax.fill_between(r["n_per_class"], r["tau_q_low"], r["tau_q_high"], color="0.25", alpha=0.15, lw=0)
        ax.plot(r["n_per_class"], r["tau_mean"], color="0.15", marker="o", ms=4.5, lw=1.3,
                label=f"Kendall τ (mean, {band} of draws)")
        ax.plot(r["n_per_class"], r["share_same_best"], color="#d95f02", marker="s", ms=4, lw=1.1, ls="--",
                label="share of draws with the same best model")
        ax.set_ylim(min(-0.05, float(np.nanmin(r["tau_q_low"])) - 0.05), 1.05)
        _size_axis(ax, sizes)
        ax.set_ylabel("ranking vs. the whole set")
        ax.legend(loc="lower right", fontsize=8, frameon=True, framealpha=0.9)
    for ax in flat[panels:]:
        ax.set_visible(False)
    style_legend(fig, model_looks(models).values(),
                 extra=[Line2D([], [], color="0.5", lw=6, alpha=0.25, label=f"{band} of draws")], extra_title="")
    if title:
        fig.suptitle(title)
    return fig


def plot_subset_comparison(comparison: pd.DataFrame, *, values: Sequence[str] | None = None,
                           labels: Sequence[str] = ("subset", "same images in the set", "random subsets", "whole set"),
                           title: str = ""):
    """A fixed subset against the whole set, one row per model and one panel per value (pipeline.sample_size.
    subset_comparison): the subset's own features, the same images' rows of the whole set, the central band of
    random subsets with the subset's class counts (with its mean), and the whole set. `labels` name the four in
    that order (e.g. "846 exact images", "their JPEG copies", ...)."""
    values = list(dict.fromkeys(comparison["value"])) if values is None else list(values)
    models = list(dict.fromkeys(comparison["model"]))
    fig, axes = figure(0.36 * len(models) + 1.9, ncols=len(values), sharey=True)
    y = np.arange(len(models))[::-1]
    colors = ("#1b9e77", "#7570b3", "0.45", "#d95f02")
    for ax, value in zip(axes[0], values):
        t = comparison[comparison["value"] == value].set_index("model").loc[models]
        ax.hlines(y, t["random_q_low"], t["random_q_high"], color=colors[2], lw=5, alpha=0.35)
        ax.plot(t["random_mean"], y, "|", color=colors[2], ms=11, mew=1.5)
        ax.plot(t["subset"], y, "D", color=colors[0], ms=6)
        ax.plot(t["subset_in_set"], y, "o", color=colors[1], ms=6, mfc="none", mew=1.5)
        ax.plot(t["whole"], y, "s", color=colors[3], ms=6)
        if value in ("approx_skewness", "true_skewness"):
            ax.axvline(0, color="0.6", lw=0.8, zorder=0)
        ax.set_xlabel(VALUE_NAMES.get(value, value))
        ax.set_yticks(y)
        ax.set_yticklabels([short_name(m) for m in models])
        ax.set_ylim(-0.7, len(models) - 0.3)
    handles = [Line2D([], [], color=colors[0], marker="D", ls="", ms=6, label=labels[0]),
               Line2D([], [], color=colors[1], marker="o", ls="", ms=6, mfc="none", mew=1.5, label=labels[1]),
               Line2D([], [], color=colors[2], lw=5, alpha=0.35, marker="|", ms=11, mew=1.5, label=labels[2]),
               Line2D([], [], color=colors[3], marker="s", ls="", ms=6, label=labels[3])]
    fig.legend(handles=handles, loc="outside lower center", ncols=len(handles), fontsize=8, frameon=False)
    if title:
        fig.suptitle(title)
    return fig


__all__ = ["plot_sample_size", "plot_subset_comparison"]
