"""A study's figures from its summary table (one row per model, dataset and layer) and its correlation table."""
from __future__ import annotations

from typing import Sequence

import pandas as pd

from kstar_utils.plotting.models import accuracy_panels, plot_metric_vs_accuracy, plot_value_heatmap
from kstar_utils.plotting.style import COEFFICIENT_NAMES, SKEW_LIMIT, short_name


def plot_skewness_vs_accuracy_by_dataset(summary: pd.DataFrame, ys: Sequence[str], *, layer: str,
                                         x: str = "approx_skewness", stats: pd.DataFrame | None = None,
                                         label=None, families: Sequence[str] = ()) -> dict:
    """{dataset: Figure} of Γ' against the accuracies, one figure per dataset at `layer` (finished rows only);
    stats: the study correlation table (columns layer, x, y, group, method, ...), whose rows for the dataset title
    each panel. label, families: as plot_metric_vs_accuracy."""
    t = summary[summary["layer"] == layer]
    figs = {}
    for dataset, sub in t.groupby("dataset", sort=False):
        panels = accuracy_panels(sub, ys)
        if not panels or sub[x].notna().sum() < 2:
            continue
        s = None
        if stats is not None and len(stats):
            s = stats[(stats["layer"] == layer) & (stats["x"] == x) & (stats["group"] == dataset)]
        figs[dataset] = plot_metric_vs_accuracy(sub, x, panels, stats=s, label=label, families=families,
                                                title=f"{COEFFICIENT_NAMES.get(x, x)} vs accuracy · {dataset} · {layer}")
    return figs


def plot_skewness_heatmap(summary: pd.DataFrame, *, layer: str, value: str = "approx_skewness",
                          limit: float = SKEW_LIMIT):
    """Γ' (or another skewness column) of every model on every dataset at `layer`, on the fixed colour scale
    ±limit that every skewness heatmap shares; missing pairs stay blank; model names coloured by training kind."""
    t = summary[summary["layer"] == layer]
    grid = t.pivot_table(index="model", columns="dataset", values=value, aggfunc="first", sort=False)
    models = list(grid.index)
    grid.index = [short_name(m) for m in grid.index]
    return plot_value_heatmap(grid, label=COEFFICIENT_NAMES.get(value, value), vmin=-limit, vmax=limit,
                              models=models, title=f"{COEFFICIENT_NAMES.get(value, value)} · {layer}")
