"""Figures across models: a coefficient against accuracies, within architecture families, Γ against Γ', heatmaps of Γ'
and of class skews, the depth profile, metric sensitivity, response to noise, a correlation matrix. Every function
takes precomputed tables (and correlation rows); none computes a statistic of its own beyond drawing a least-squares
trend line.

Models are drawn alike in every figure: colour by training kind, marker by architecture family, one compact legend
of both (style.style_legend); `label` names single models (all of them up to style.AUTO_LABEL models, else the ones
asked for) with labels that keep clear of each other and of the points."""
from __future__ import annotations

import math
from typing import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.colors import to_rgba
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

from kstar_utils.analysis.findings import MIN_MODELS, agree, format_p
from kstar_utils.analysis.layers import distinct_layers, repeated_layers
from kstar_utils.plotting.style import (ACCURACY_NAMES, COEFFICIENT_NAMES, SKEW_LIMIT, TRAINING_COLORS, accuracy_name,
                                        figure, fit_suptitle, fmt_skew, heatmap, labelled, model_looks, place_labels,
                                        short_name, style_legend, training_label)

MIN_MODELS_FOR_CI = MIN_MODELS  # below this a bootstrap interval over models says little; figures say so
FADED = 0.3  # alpha of the models outside the highlighted families


def _model_lines(ax, table: pd.DataFrame, x: str, y: str, looks, *, ms: float, lw: float = 1.1) -> None:
    """One line per model of `looks` through its rows of `table` (in the table's order), in the model's look."""
    for m, lk in looks.items():
        sub = table[table["model"] == m]
        ax.plot(sub[x], sub[y], color=lk.color, marker=lk.marker, lw=lw, ms=ms, alpha=0.9,
                markeredgecolor="white", markeredgewidth=0.4)


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


def _stats_row(stats: pd.DataFrame | None, y: str, method: str, group: str | None):
    """The correlation row of `y` under `method` in `group` (default: the pooled row where the table has several
    groups, else its only group); None without one."""
    if stats is None or not len(stats):
        return None
    s = stats[(stats["y"] == y) & (stats["method"] == method)]
    if "group" in s.columns and len(s):
        groups = list(dict.fromkeys(s["group"]))
        want = group if group is not None else ("pooled" if "pooled" in groups else groups[0])
        s = s[s["group"] == want]
    return s.iloc[0] if len(s) else None


def stats_line(stats: pd.DataFrame | None, y: str, method: str = "spearman", *, group: str | None = None,
               name: str = "") -> str:
    """'Spearman ρ = +0.52 [-0.10, +0.90]' and, on a second line, 'p = 0.067 (exact), n = 10' for the row of `y`
    (the pooled row, or `group`'s), with a caution when n < MIN_MODELS_FOR_CI or when the interval and p disagree;
    '' without stats. name: written before the statistic ("cnn-a-wide: ρ = ...", one line)."""
    s = _stats_row(stats, y, method, group)
    if s is None:
        return ""
    n = int(s.n)
    sym = {"spearman": "Spearman ρ", "kendall": "Kendall τ", "pearson": "Pearson r"}.get(method, method)
    if not np.isfinite(s.statistic):
        return f"{name + ': ' if name else ''}{sym}: not computable (n = {n})"
    interval = f" [{s.ci_low:+.2f}, {s.ci_high:+.2f}]" if np.isfinite(s.ci_low) and np.isfinite(s.ci_high) else ""
    p = format_p(s.get("p_value"), s.get("p_exact"), s.get("p_min"), short=True)
    tail = ", ".join(t for t in (p, f"n = {n}") if t)
    short_sym = "ρ" if method == "spearman" else sym
    text = (f"{name}:\n{short_sym} = " if name else f"{sym} = ") + f"{s.statistic:+.2f}{interval}"
    text += f", {p}" if name and p else ""
    text += "" if name else f"\n{tail}"
    if n < MIN_MODELS_FOR_CI:
        text += f"\n(only {n} models: too few to trust)"
    elif agree(s.ci_low, s.ci_high, s.get("p_value")) is False:
        text += "\n(interval and p disagree: weak evidence)"
    return text


def _count(stats, y, method, group) -> str:
    s = _stats_row(stats, y, method, group)
    return f"{int(s.n)} models" if s is not None else ""


def _panels(table: pd.DataFrame, ys) -> dict[str, str]:
    if isinstance(ys, Mapping):
        return dict(ys)
    ys = [ys] if isinstance(ys, str) else list(ys)
    eps = table["eval_eps"].dropna().to_numpy() if "eval_eps" in table.columns else None
    return {y: accuracy_name(y, eps if eps is not None and eps.size else None) for y in ys}


def _draw_points(ax, t: pd.DataFrame, x: str, y: str, looks, *, highlight: set | None, s: float = 42):
    for _, row in t.iterrows():
        lk = looks[row["model"]]
        faded = highlight is not None and lk.family not in highlight
        ax.scatter(row[x], row[y], color=to_rgba(lk.color, FADED if faded else 1.0), marker=lk.marker, s=s,
                   edgecolor="white", linewidth=0.5, zorder=2 if faded else 3)


def _connect(ax, t: pd.DataFrame, x: str, y: str, looks, families: Sequence[str]) -> None:
    """A thin line through each family's models in order of x, so a family reads as one group."""
    for fam in families:
        sub = t[t["model"].map(lambda m: looks[m].family) == fam].sort_values(x)
        if len(sub) > 1:
            ax.plot(sub[x], sub[y], color="0.25", lw=0.8, ls="-", zorder=2.5, alpha=0.8)


def _accuracy_limits(ax, values: np.ndarray) -> None:
    values = values[np.isfinite(values)]
    lo, hi = (values.min(), values.max()) if values.size else (0.0, 1.0)
    pad = 0.08 * max(hi - lo, 0.05)
    # a little beyond [0, 1] at most, so a model at 0 (or 1) shows its whole marker
    ax.set_ylim(max(-0.03, lo - pad), min(1.03, hi + pad))


def plot_metric_vs_accuracy(table: pd.DataFrame, x: str, ys, *, label_col: str = "model",
                            stats: pd.DataFrame | None = None, title: str = "", label=None,
                            families: Sequence[str] = (), group: str | None = None, method: str = "spearman",
                            ncols: int | None = None):
    """A skewness coefficient against one or more accuracies, one panel per accuracy (three per row), each with a
    least-squares trend and its bootstrap band (clipped to accuracy's range [0, 1]) and its correlation from `stats`
    (statistic, percentile interval, p as the test can state it, n).

    table: one row per model; x: column (e.g. "approx_skewness"); ys: accuracy columns (names from
    style.ACCURACY_NAMES, robust_acc with its ε where the table's eval_eps has one value) or {column: axis name};
    stats: correlation rows (y, method, statistic, ci_low, ci_high, p_value[, p_exact, p_min], n[, group]); the
    pooled row (or `group`'s) titles each panel. label: which models to name (style.labelled). families:
    architecture families to highlight: their models are joined by a line and drawn in full, the others faded, and
    their own correlation rows (stats rows whose group is the family) are added to each panel's title.
    """
    t = table.dropna(subset=[x]).reset_index(drop=True)
    if label_col != "model":
        t = t.assign(model=t[label_col])
    panels = _panels(t, ys)
    looks = model_looks(list(t["model"]))
    names = labelled(list(looks), label)
    families = [families] if isinstance(families, str) else list(families)
    highlight = set(families) if families else None
    n = len(panels)
    ncols = ncols or min(n, 3)
    nrows = math.ceil(n / ncols)
    extra = sum(1 for f in families if _stats_row(stats, next(iter(panels)), method, f) is not None)
    fig, axes = figure((3.5 + 0.34 * extra) * nrows + 0.9, ncols=ncols, nrows=nrows)
    later = []
    for ax, (col, name) in zip(axes.flat, panels.items()):
        sub = t.dropna(subset=[col])
        xv, yv = sub[x].to_numpy(float), sub[col].to_numpy(float)
        ok = np.isfinite(xv) & np.isfinite(yv)
        sub = sub[ok]
        is_acc = col in ACCURACY_NAMES
        if ok.sum() >= 3 and np.ptp(xv[ok]) > 0:
            grid = np.linspace(xv[ok].min(), xv[ok].max(), 50)
            line, band = _trend(xv[ok], yv[ok], grid)
            if is_acc:
                line = np.clip(line, 0, 1)
                band = None if band is None else np.clip(band, 0, 1)
            if band is not None:
                ax.fill_between(grid, band[0], band[1], color="0.6", alpha=0.2, lw=0)
            ax.plot(grid, line, color="0.45", lw=1.0, ls="--", zorder=1)
        if families:
            _connect(ax, sub, x, col, looks, families)
        _draw_points(ax, sub, x, col, looks, highlight=highlight)
        if is_acc:
            _accuracy_limits(ax, yv[ok])
        head = [name]
        if stats is not None:
            line_ = stats_line(stats, col, method, group=group)
            head += [line_] if line_ else []
            for fam in families:
                fl = stats_line(stats, col, method, group=fam, name=f"within {fam} ({_count(stats, col, method, fam)})")
                head += [fl] if fl else []
        ax.set_title("\n".join(head), fontsize=8.5)
        ax.set_xlabel(COEFFICIENT_NAMES.get(x, x), fontsize=9)
        ax.set_ylabel(name, fontsize=9)
        _clear_corner(ax)
        later.append((ax, [(r[x], r[col], short_name(r["model"])) for _, r in sub.iterrows() if r["model"] in names]))
    for ax in list(axes.flat)[n:]:
        ax.set_visible(False)
    trend = [Line2D([], [], color="0.45", lw=1.0, ls="--", label="least squares"),
             Patch(color="0.6", alpha=0.2, label="its 95 % band")]
    style_legend(fig, looks.values(), connected=families, extra=trend, extra_title="trend")
    if title:
        fit_suptitle(fig, title)
    _place_all(later)
    return fig


def _place_all(requests, **kw) -> None:
    """Name points once everything that moves the axes (legends, titles) is in place: labels keep their offset
    from their point in points, so a later change of layout would push points under them."""
    for ax, points in requests:
        if points:
            place_labels(ax, points, **kw)


def plot_family_panels(table: pd.DataFrame, x: str, y: str, *, families: Sequence[str],
                       stats: pd.DataFrame | None = None, method: str = "spearman", label=None, title: str = ""):
    """Within-family comparisons: one panel per architecture family (at most three per row) with that family's
    models drawn in full and joined in order of x, every other model faint grey behind them, on shared axes, so a
    trend across training at fixed architecture can be told from the trend across all models.

    table: one row per model with x and y; families: family names (ModelInfo.family); stats: correlation rows whose
    `group` is a family (and "pooled"), e.g. correlation_table(df, x, y, group="family"): each panel's title holds
    its family's row. label: which models to name (style.labelled over each family's models)."""
    t = table.dropna(subset=[x, y]).reset_index(drop=True)
    t = t[np.isfinite(t[x].astype(float)) & np.isfinite(t[y].astype(float))]
    looks = model_looks(list(t["model"]))
    families = [families] if isinstance(families, str) else list(families)
    unknown = [f for f in families if f not in {lk.family for lk in looks.values()}]
    if unknown:
        raise ValueError(f"families {unknown} have no model in the table; its families are "
                         f"{sorted({lk.family for lk in looks.values()})}")
    n = len(families)
    ncols = min(n, 3)
    nrows = math.ceil(n / ncols)
    fig, axes = figure(3.6 * nrows + 0.9, ncols=ncols, nrows=nrows, sharex=True, sharey=True)
    for ax, fam in zip(axes.flat, families):
        mine = t["model"].map(lambda m: looks[m].family) == fam
        ax.scatter(t.loc[~mine, x], t.loc[~mine, y], color="0.8", s=22, marker="o", lw=0, zorder=1)
        _connect(ax, t[mine], x, y, looks, [fam])
        _draw_points(ax, t[mine], x, y, looks, highlight=None)
        head = [f"{fam} ({int(mine.sum())} models)"]
        line_ = stats_line(stats, y, method, group=fam) if stats is not None else ""
        head += [line_] if line_ else []
        ax.set_title("\n".join(head), fontsize=8.5)
        ax.set_xlabel(COEFFICIENT_NAMES.get(x, x), fontsize=9)
        ax.set_ylabel(accuracy_name(y), fontsize=9)
        ax.tick_params(labelleft=True, labelbottom=True)
    for ax in list(axes.flat)[n:]:
        ax.set_visible(False)
    if y in ACCURACY_NAMES:
        _accuracy_limits(axes.flat[0], t[y].to_numpy(float))
    style_legend(fig, [lk for lk in looks.values() if lk.family in families], connected=families,
                 extra=[Line2D([], [], color="0.8", marker="o", ls="", label="other models")], extra_title="")
    if title:
        fit_suptitle(fig, title)
    later = []
    for ax, fam in zip(axes.flat, families):
        mine = t[t["model"].map(lambda m: looks[m].family) == fam]
        names = labelled(list(mine["model"]), label)
        later.append((ax, [(r[x], r[y], short_name(r["model"])) for _, r in mine.iterrows() if r["model"] in names]))
    _place_all(later)
    return fig


def plot_gamma_vs_gamma_prime(table: pd.DataFrame, *, agreement: Mapping | None = None, label=None,
                              by: str | None = "layer"):
    """Γ against Γ' for every row of `table` (model, dataset, layer) with the identity line, one panel per value of
    `by` (up to three; more share one panel). A layer whose features repeat an earlier layer of the same model
    (analysis.layers: a ResNet's layer3 and penultimate) is drawn once, and the title says how many were left out.
    agreement: analysis.correlate.agreement of the rows drawn, summarised in the title."""
    t = table.dropna(subset=["true_skewness", "approx_skewness"])
    t = t[np.isfinite(t["true_skewness"]) & np.isfinite(t["approx_skewness"])]
    repeats = repeated_layers(t)
    t = distinct_layers(t).reset_index(drop=True)
    groups = list(dict.fromkeys(t[by])) if by and by in t.columns else []
    split = 1 < len(groups) <= 3
    parts = [(g, t[t[by] == g]) for g in groups] if split else [("", t)]
    fig, axes = figure(4.6, ncols=len(parts), sharex=True, sharey=True)
    looks = model_looks(list(t["model"]))
    names = labelled(list(looks), label)
    vals = t[["true_skewness", "approx_skewness"]].to_numpy()
    lo, hi = (float(vals.min()), float(vals.max())) if vals.size else (-1.0, 1.0)
    pad = 0.05 * (hi - lo or 1.0)
    for ax, (g, sub) in zip(axes[0], parts):
        ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], color="0.5", lw=1, ls="--", zorder=1)
        _draw_points(ax, sub, "approx_skewness", "true_skewness", looks, highlight=None, s=36)
        ax.set_xlabel(COEFFICIENT_NAMES["approx_skewness"], fontsize=9)
        ax.set_ylabel(COEFFICIENT_NAMES["true_skewness"], fontsize=9)
        ax.tick_params(labelleft=True)
        if g != "":
            ax.set_title(f"{g} ({len(sub)} models)", fontsize=9)
        _clear_corner(ax)
    head = "Γ vs Γ'"
    if agreement:
        head += (f"  (Spearman ρ = {agreement['spearman']:+.2f}, mean |Γ − Γ'| = {agreement['mean_abs_diff']:.2f}, "
                 f"n = {agreement['n']})")
    if len(repeats):
        pairs = sorted({f"{r.layer} = {r.same_as}" for r in repeats.itertuples()})
        more = "; ..." if len(pairs) > 3 else ""
        head += f"\n{len(repeats)} repeated layers drawn once ({'; '.join(pairs[:3])}{more})"
    fit_suptitle(fig, head, fontsize=10)
    style_legend(fig, looks.values(), extra=[Line2D([], [], color="0.5", lw=1, ls="--", label="Γ = Γ'")],
                 extra_title="")
    _place_all([(ax, [(r["approx_skewness"], r["true_skewness"], short_name(r["model"]))
                      for _, r in sub.iterrows() if r["model"] in names]) for ax, (_, sub) in zip(axes[0], parts)])
    return fig


def _colour_model_ticks(labels, looks_by_short: Mapping) -> None:
    for text in labels:
        lk = looks_by_short.get(text.get_text())
        if lk is not None:
            text.set_color(lk.color)


def _kind_key(fig, looks, *, where: str = "below"):
    """A legend of the training kinds alone, for figures that tell models apart by coloured names."""
    order = list(TRAINING_COLORS)
    kinds = sorted(dict.fromkeys(lk.training for lk in looks), key=lambda k: order.index(k) if k in order else 99)
    handles = [Patch(color=next(lk.color for lk in looks if lk.training == k), label=training_label(k))
               for k in kinds]
    loc = "outside lower center" if where == "below" else "outside right upper"
    return fig.legend(handles=handles, loc=loc, ncols=len(handles) if where == "below" else 1, fontsize=8,
                      frameon=False, title="name colour: training", title_fontsize=8)


def plot_value_heatmap(grid: pd.DataFrame, *, label: str, title: str = "", fmt: str = "{:+.2f}", center: float = 0.0,
                       cmap: str = "RdBu_r", annot: pd.DataFrame | None = None, vmin: float | None = None,
                       vmax: float | None = None, models: Sequence[str] | None = None):
    """An annotated heatmap of a table (rows and columns as given; missing cells blank; values beyond the colour
    limits, ±inf included, drawn at the limit and written out). annot: text per cell (default: the values through
    `fmt`). vmin, vmax: the colour limits; give them (e.g. ±style.SKEW_LIMIT) so that figures of different jobs
    share one scale; default: symmetric about `center`, fitted to the values. models: the registry names of the
    rows (in order) when rows are models: their names are coloured by training kind, with a key."""
    values = grid.astype(float)
    finite = values.to_numpy()[np.isfinite(values.to_numpy())]
    if vmin is None or vmax is None:
        lim = float(np.abs(finite - center).max()) if finite.size else 1.0
        vmin, vmax = (center - lim if vmin is None else vmin), (center + lim if vmax is None else vmax)
    shown = values.clip(vmin, vmax)
    text = annot if annot is not None else values.map(lambda v: "" if pd.isna(v) else
                                                      (fmt.format(v) if np.isfinite(v) else fmt_skew(v)))
    beyond = finite.size and (finite.min() < vmin or finite.max() > vmax)
    big = len(grid) > 12
    fig = heatmap(shown, title=title, xlabel=grid.columns.name or "", cmap=cmap, center=center, vmin=vmin, vmax=vmax,
                  annot=text, fmt="", row_height=0.27 if big else 0.42,
                  annot_kws={"fontsize": 6.5 if big else 7},
                  cbar_kws={"label": label, "shrink": 0.8, **({"extend": "both"} if beyond else {})})
    if models is not None:
        looks = model_looks(list(models))
        ax = fig.axes[0]
        if big:
            ax.tick_params(axis="y", labelsize=7.5)
        _colour_model_ticks(ax.get_yticklabels(), {lk.short: lk for lk in looks.values()})
        _kind_key(fig, looks.values())
    return fig


def plot_class_skew_heatmap(per_class: pd.DataFrame, *, title: str = "", limit: float = SKEW_LIMIT):
    """Class skews γ_c: rows = models, columns = classes (per_class: model, label, skew), on the fixed colour scale
    ±limit shared by every such figure; model names coloured by training kind."""
    grid = per_class.pivot_table(index="model", columns="label", values="skew", aggfunc="first", sort=False)
    models = list(grid.index)
    grid.index = [short_name(m) for m in grid.index]
    grid.columns.name = "class"
    return plot_value_heatmap(grid, label=r"$\gamma_c$ (skew of k̂*)", title=title, vmin=-limit, vmax=limit,
                              models=models)


def _depth_slots(table: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """Models of different architectures on one axis: each row's layer renamed to its slot ("inner 1", "inner 2", ...
    counted from the input, then "penultimate" and "logits"/"embedding" as they are), and the slots in order. The
    rows keep their `depth`; rows without one (imported features) are left out."""
    t = table[table["depth"].notna()].sort_values(["model", "depth"], kind="stable")
    ends = {"penultimate", "logits", "embedding"}
    inner = ~t["layer"].isin(ends)
    rank = t[inner].groupby("model", sort=False).cumcount() + 1
    slot = t["layer"].astype(object).copy()
    slot[inner] = "inner " + rank.astype(str)
    n_inner = int(rank.max()) if len(rank) else 0
    slots = [f"inner {i}" for i in range(1, n_inner + 1)] + [e for e in ("penultimate", "logits", "embedding")
                                                             if e in set(t["layer"])]
    return t.assign(layer_name=t["layer"], layer=slot), slots


def plot_depth_profile(table: pd.DataFrame, *, layers: Sequence[str] | None = None, value: str = "approx_skewness",
                       title: str = "", n_classes: int | None = None, label=None,
                       ylim: tuple[float, float] | None = None):
    """Γ' (or `value`) of every model layer by layer (left) and each layer's Fractured / Overlapped / Clustered class
    counts (right). table: model, layer, value, n_fractured, n_overlapped, n_clustered (and n_classes, and the
    content hashes of analysis.layers where it has them).

    The count heatmap's colours run from 0 to n_classes (default: the table's n_classes, else the largest count
    total) in every figure, so jobs drawn apart compare by colour. A layer whose features repeat an earlier layer of
    the model (a ResNet's penultimate = layer3) is drawn once: its cell says which layer it equals. label: models
    named at the end of their line (style.labelled); ylim: fixed limits of the left panel.

    layers=None (models of different architectures): every layer of the table with a `depth`, drawn against depth
    (0: the first inner layer, 1: the output); the heatmap's columns are the models' inner layers counted from the
    input ("inner 1", ...), then penultimate and logits."""
    by_depth = layers is None
    if by_depth:
        once = distinct_layers(table)
        repeats = repeated_layers(table)
        t_once, layers = _depth_slots(once)
        slot_of = dict(zip(zip(t_once["model"], t_once["layer_name"]), t_once["layer"]))
        # a repeated layer is drawn where it would sit, with the name of the layer it repeats
        rep_rows = table.merge(repeats[["model", "layer", "same_as"]], on=["model", "layer"]) if len(repeats) else None
        extra = _depth_slots(pd.concat([once, rep_rows.drop(columns="same_as")]))[0] if rep_rows is not None else None
        if extra is not None:
            slot_of.update(dict(zip(zip(extra["model"], extra["layer_name"]), extra["layer"])))
            repeats = repeats.assign(layer=[slot_of.get((m, lay), lay) for m, lay in zip(repeats["model"],
                                                                                      repeats["layer"])])
        t = t_once
    else:
        t = table[table["layer"].isin(layers)]
        repeats = repeated_layers(t)
        t_once = distinct_layers(t)
    models = list(dict.fromkeys(t["model"]))
    looks = model_looks(models)
    if n_classes is None:
        if "n_classes" in t.columns and t["n_classes"].notna().any():
            n_classes = int(t["n_classes"].max())
        else:
            n_classes = int((t[["n_fractured", "n_overlapped", "n_clustered"]].sum(axis=1)).max())
    big = len(models) > 12
    row = 0.26 if big else 0.34
    fig, axes = figure(row * len(models) + 2.8, ncols=2, gridspec_kw={"width_ratios": [1.25, 1]})
    ax = axes[0, 0]
    pos = {layer: i for i, layer in enumerate(layers)}
    if by_depth:
        lines = t_once.assign(position=t_once["depth"]).sort_values("position", kind="stable")
    else:
        lines = t_once.assign(position=t_once["layer"].map(pos)).sort_values("position", kind="stable")
    _model_lines(ax, lines, "position", value, looks, ms=5 if big else 6)
    if by_depth:
        ax.set_xticks([0, 0.25, 0.5, 0.75, 1], ["0\nfirst inner", "0.25", "0.5", "0.75", "1\noutput"], fontsize=8)
    else:
        ax.set_xticks(range(len(layers)), layers)
        plt.setp(ax.get_xticklabels(), rotation=30 if len(layers) > 4 else 0,
                 ha="right" if len(layers) > 4 else "center", rotation_mode="anchor", fontsize=8)
    ax.axhline(0, color="0.6", lw=0.8)
    if ylim is not None:
        ax.set_ylim(*ylim)
    _clear_corner(ax)
    ax.set_xlabel("depth (0: first inner layer, 1: output)" if by_depth
                  else "layer (input side → output side)")
    ax.set_ylabel(COEFFICIENT_NAMES.get(value, value))
    grid = t_once.pivot_table(index="model", columns="layer", values="n_fractured", aggfunc="first", sort=False)
    grid = grid.reindex(index=models, columns=list(layers))
    counts = t_once.assign(txt=t_once["n_fractured"].astype(int).astype(str) + "/" +
                           t_once["n_overlapped"].astype(int).astype(str) + "/" +
                           t_once["n_clustered"].astype(int).astype(str))
    annot = counts.pivot_table(index="model", columns="layer", values="txt", aggfunc="first", sort=False)
    annot = annot.reindex(index=models, columns=list(layers)).astype(object)
    annot = annot.where(annot.notna(), "")
    hm = axes[0, 1]
    sns.heatmap(grid.astype(float), cmap="Oranges", vmin=0, vmax=n_classes, annot=annot, fmt="",
                annot_kws={"fontsize": 6.5 if big else 7}, linewidths=0.3, ax=hm,
                cbar_kws={"label": "Fractured classes", "shrink": 0.8 if len(models) > 2 else 1.0,
                          "ticks": MaxNLocator(nbins=5, integer=True)})
    hm.grid(False)
    for r in repeats.itertuples():  # seaborn writes nothing in a blank cell: say which layer it repeats
        if r.model in models and r.layer in layers:
            hm.text(list(layers).index(r.layer) + 0.5, models.index(r.model) + 0.5, f"same as\n{r.same_as}",
                    ha="center", va="center", fontsize=5.5 if big else 6.5, color="0.35", linespacing=0.95)
    hm.set_yticks(np.arange(len(models)) + 0.5, [looks[m].short for m in models], rotation=0,
                  fontsize=7.5 if big else 9)
    _colour_model_ticks(hm.get_yticklabels(), {lk.short: lk for lk in looks.values()})
    hm.set_xlabel("")
    hm.set_ylabel("")
    hm.set_title("classes Fractured / Overlapped / Clustered", fontsize=9)
    # five or more layer names side by side in a narrow heatmap run into each other
    plt.setp(hm.get_xticklabels(), rotation=45, ha="right", rotation_mode="anchor", fontsize=8)
    style_legend(fig, looks.values(), where="below")
    if title:
        fit_suptitle(fig, title)
    names = labelled(models, label)
    if names:
        ends = lines.dropna(subset=[value]).groupby("model", sort=False).tail(1)
        ax.set_xlim(*((-0.05, 1.35) if by_depth else (-0.25, len(layers) - 1 + 0.9)))
        place_labels(ax, [(r["position"], r[value], looks[r["model"]].short) for _, r in ends.iterrows()
                          if r["model"] in names], prefer="right")
    return fig


def plot_metric_sensitivity(table: pd.DataFrame, *, column: str = "approx_skewness", title: str = ""):
    """Γ' (or `column`) of each model under each distance: one line per metric across the models, ordered by the
    first metric's value; model names coloured by training kind. table: pipeline.open_checks.metric_sensitivity's
    models table."""
    first = table["metric"].iloc[0]
    order = table[table["metric"] == first].sort_values(column)["model"].tolist()
    looks = model_looks(order)
    t = table.assign(model=table["model"].map(short_name))
    big = len(order) > 12
    fig, axes = figure(5.2 if big else 4.4)
    ax = axes[0, 0]
    metrics = list(dict.fromkeys(t["metric"]))
    # the metrics in shades of grey with their own markers: colour already says the training kind of each name
    palette = dict(zip(metrics, [str(v) for v in np.linspace(0.0, 0.62, len(metrics))]))
    marks = ["o", "s", "^", "D", "v", "X", "P", "*"]
    sns.pointplot(data=t, x="model", y=column, hue="metric", order=[looks[m].short for m in order], ax=ax,
                  palette=palette, markers=[marks[i % len(marks)] for i in range(len(metrics))],
                  linestyles="-", dodge=0.3, markersize=3.5 if big else 5, linewidth=1.0)
    ax.axhline(0, color="0.6", lw=0.8)
    ax.set_xlabel("")
    ax.set_ylabel(COEFFICIENT_NAMES.get(column, column))
    ax.tick_params(axis="x", rotation=60 if big else 35, labelsize=7.5 if big else 9)
    for lab in ax.get_xticklabels():
        lab.set_horizontalalignment("right")
        lab.set_rotation_mode("anchor")
    _colour_model_ticks(ax.get_xticklabels(), {lk.short: lk for lk in looks.values()})
    sns.move_legend(ax, "upper left", bbox_to_anchor=(1.02, 1), frameon=False, fontsize=8, title="metric")
    _kind_key(fig, looks.values())
    if title:
        ax.set_title(title)
    return fig


def plot_perturbation_curves(table: pd.DataFrame, *, ys: Sequence[str] = ("approx_skewness", "frac_kstar_changed"),
                             xlabel: str = "noise strength", title: str = "", label=None):
    """Response to noise: one panel per column in `ys`, one line per model against `strength`. table: the output of
    pipeline.open_checks' input_noise_study / latent_noise_study. label: models named at the end of their line in
    every panel (style.labelled: all of up to AUTO_LABEL models by default)."""
    names_ = {**COEFFICIENT_NAMES, "frac_kstar_changed": "share of samples with changed k*",
              "mean_abs_khat_change": "mean |Δk̂*|", "accuracy": "accuracy on noised inputs"}
    models = list(dict.fromkeys(table["model"]))
    looks = model_looks(models)
    names = labelled(models, label)
    fig, axes = figure(3.9, ncols=len(ys))
    t = table.sort_values("strength", kind="stable")
    for ax, y in zip(axes[0], ys):
        _model_lines(ax, t, "strength", y, looks, ms=5)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(names_.get(y, y))
        if y in ("accuracy", "frac_kstar_changed"):
            ax.set_ylim(-0.02, 1.02)
        _clear_corner(ax)
        if names:
            lo, hi = t["strength"].min(), t["strength"].max()
            ax.set_xlim(lo - 0.05 * (hi - lo), hi + 0.5 * (hi - lo))
    style_legend(fig, looks.values())
    if title:
        fit_suptitle(fig, title)
    if names:
        fig.canvas.draw()
        ends = t.groupby("model", sort=False).tail(1)
        for ax, y in zip(axes[0], ys):
            place_labels(ax, [(r["strength"], r[y], looks[r["model"]].short) for _, r in ends.iterrows()
                              if r["model"] in names and np.isfinite(r[y])], prefer="right", fontsize=7)
    return fig


def plot_correlation_matrix(matrix: pd.DataFrame, *, title: str = "", label: str = "Spearman ρ of class skews",
                            annot: bool | None = None):
    """A symmetric correlation matrix (e.g. pipeline.open_checks.pair_matrix) as a heatmap in [-1, 1], model names
    coloured by training kind. annot: write the values in the cells (default: up to 12 models; more would not fit)."""
    models = list(matrix.index)
    looks = model_looks(models)
    big = len(models) > 12
    annot = not big if annot is None else annot
    cell = 0.2 if big else 0.55
    fig = heatmap(matrix.rename(index=short_name, columns=short_name), title=title, rotation=60 if big else 40,
                  cmap="RdBu_r", vmin=-1, vmax=1, center=0, annot=annot, fmt=".2f", square=True,
                  linewidths=0.2 if big else 0.3, height=cell * len(models) + (2.6 if big else 2.2),
                  cbar_kws={"label": label, "shrink": 0.6})
    ax = fig.axes[0]
    if big:
        ax.tick_params(labelsize=6.5)
        plt.setp(ax.get_xticklabels(), ha="right", rotation_mode="anchor")
    by_short = {lk.short: lk for lk in looks.values()}
    _colour_model_ticks(ax.get_xticklabels(), by_short)
    _colour_model_ticks(ax.get_yticklabels(), by_short)
    _kind_key(fig, looks.values())
    return fig


def accuracy_panels(table: pd.DataFrame, ys: Sequence[str]) -> dict[str, str]:
    """{column: axis name} of the accuracy columns in `ys` with at least two values in `table` (robust_acc with its
    ε where the table's eval_eps has one value)."""
    present = [y for y in ys if y in table.columns and table[y].notna().sum() >= 2]
    return _panels(table, present)
