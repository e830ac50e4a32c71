"""What the tables say, in sentences: the conclusions the notebooks print (so a regression test notices when they
change). Every function takes the tables the stages write and returns plain text with the method's symbols."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from kstar_utils.models import short_name

SYMBOLS = {"approx_skewness": "Γ'", "true_skewness": "Γ", "approx_skewness_weighted": "Γ' (class-size weighted)"}
WORDS = {"clean_acc": "clean accuracy", "robust_acc": "robust accuracy", "zeroshot_acc": "zero-shot accuracy",
         "zeroshot_avg": "mean zero-shot accuracy", "accuracy": "accuracy"}
METHOD_SYMBOLS = {"spearman": "Spearman ρ", "kendall": "Kendall τ", "pearson": "Pearson r"}
MIN_MODELS = 6


def _interval(stat: float, lo: float, hi: float) -> str:
    return f"{stat:+.2f} [{lo:+.2f}, {hi:+.2f}]"


def describe_correlations(stats: pd.DataFrame, *, x: str = "approx_skewness", method: str = "spearman") -> str:
    """One sentence per (group, accuracy): the direction, the rank correlation, its 95 % interval, whether the
    interval excludes 0, the permutation p-value (a bootstrap over few models can exclude 0 while p stays large, and
    the reader needs both), and a caution below MIN_MODELS models."""
    sym, meth = SYMBOLS.get(x, x), METHOD_SYMBOLS[method]
    lines = []
    for r in stats[(stats["x"] == x) & (stats["method"] == method)].itertuples(index=False):
        y = WORDS.get(r.y, r.y)
        if not np.isfinite(r.statistic):
            lines.append(f"{r.group}: {sym} vs {y}: not computable (n = {r.n})")
            continue
        direction = "falls" if r.statistic < 0 else "rises"
        sure = "the interval excludes 0" if (r.ci_low > 0 or r.ci_high < 0) else "the interval includes 0"
        few = f"; only {r.n} models, too few to trust the interval" if r.n < MIN_MODELS else ""
        p = getattr(r, "p_value", np.nan)
        perm = "" if not np.isfinite(p) else ", permutation p < 0.001" if p < 0.001 else f", permutation p = {p:.2g}"
        lines.append(f"{r.group}: as {sym} rises, {y} {direction} ({meth} = "
                     f"{_interval(r.statistic, r.ci_low, r.ci_high)}, {sure}{perm}, n = {r.n}{few})")
    return "\n".join(lines)


def describe_kstar(overview: pd.DataFrame, *, layer: str) -> str:
    """Per layer: the range of the median k̂* and of the share of samples whose nearest neighbour is foreign."""
    t = overview[overview["layer"] == layer]
    lo, hi = t.loc[t["median_khat"].idxmin()], t.loc[t["median_khat"].idxmax()]
    f_lo, f_hi = t.loc[t["share_kstar_1"].idxmin()], t.loc[t["share_kstar_1"].idxmax()]
    return (f"{layer}: median k̂* from {lo.median_khat:.2f} ({short_name(lo.model)}) to {hi.median_khat:.2f} "
            f"({short_name(hi.model)}); samples whose nearest neighbour is of another class (k* = 1) from "
            f"{f_lo.share_kstar_1:.0%} ({short_name(f_lo.model)}) to {f_hi.share_kstar_1:.0%} ({short_name(f_hi.model)}).")


def describe_skewness(models_table: pd.DataFrame, per_class: pd.DataFrame, *, layer: str,
                      layers: Sequence[str] | None = None) -> str:
    """At `layer`: the lowest and highest Γ', how many models have each class Fractured (the most fractured class),
    and, over `layers` (input to output), in how many models Γ' falls from the first layer to the last."""
    t = models_table[models_table["layer"] == layer].sort_values("approx_skewness")
    first, last = t.iloc[0], t.iloc[-1]
    lines = [f"{layer}: lowest Γ' {first.approx_skewness:+.2f} ({short_name(first.model)}), highest "
             f"{last.approx_skewness:+.2f} ({short_name(last.model)}), over {len(t)} models."]
    pc = per_class[per_class["layer"] == layer]
    frac = pc.assign(f=pc["pattern"].eq("Fractured")).groupby("label")["f"].sum().sort_values(ascending=False)
    if len(frac) and frac.iloc[0] > 0:
        top = frac[frac == frac.iloc[0]].index.tolist()
        lines.append(f"Most often Fractured: {', '.join(map(str, top))} (in {int(frac.iloc[0])} of {len(t)} models); "
                     f"never Fractured: {', '.join(map(str, frac[frac == 0].index.tolist())) or 'none'}.")
    if layers and len(layers) > 1:
        piv = models_table.pivot_table(index="model", columns="layer", values="approx_skewness", aggfunc="first")
        piv = piv[[c for c in layers if c in piv.columns]]
        falls = int((piv.iloc[:, -1] < piv.iloc[:, 0]).sum())
        lines.append(f"From {piv.columns[0]} to {piv.columns[-1]}, Γ' falls in {falls} of {len(piv)} models "
                     f"(mean {piv.iloc[:, 0].mean():+.2f} -> {piv.iloc[:, -1].mean():+.2f}).")
    return "\n".join(lines)


def describe_finetuning(table: pd.DataFrame, *, base: str, layer: str) -> str:
    """Before and after fine-tuning: each fine-tuned model's change of Γ', clean and robust accuracy against `base`
    at `layer` (table: one row per model and layer with approx_skewness, clean_acc, robust_acc, kind)."""
    t = table[table["layer"] == layer].set_index("model")
    if base not in t.index:
        return f"{short_name(base)} is not in the table at {layer}"
    b = t.loc[base]
    lines = [f"{layer}, against {short_name(base)} (Γ' {b.approx_skewness:+.2f}, clean {b.clean_acc:.3f}, "
             f"robust {b.robust_acc:.3f}):"]
    for m, r in t.drop(index=base).iterrows():
        if not str(m).startswith(str(base)):
            continue
        lines.append(f"  {short_name(m)}: Γ' {r.approx_skewness - b.approx_skewness:+.2f}, clean "
                     f"{r.clean_acc - b.clean_acc:+.3f}, robust {r.robust_acc - b.robust_acc:+.3f}")
    return "\n".join(lines)


def describe_ranking_changes(changes: pd.DataFrame) -> str:
    """Per (layer, metric): Kendall τ between the rankings of models by Γ' under the metric and the reference, and
    whether the best model (lowest Γ') changes."""
    lines = []
    for r in changes.itertuples(index=False):
        best = "same best model" if r.same_best else "the best model changes"
        lines.append(f"{r.layer}, {r.metric} vs {r.reference}: Kendall τ = "
                     f"{_interval(r.kendall_tau, r.kendall_ci_low, r.kendall_ci_high)}, {best}, largest rank shift "
                     f"{r.max_rank_shift:.0f} of {r.n}")
    return "\n".join(lines)


def describe_noise(table: pd.DataFrame, *, what: str) -> str:
    """Per model at the strongest noise: Γ' against no noise and the share of samples whose k* changed."""
    s_max = table["strength"].max()
    lines = [f"{what} noise, strength 0 -> {s_max:g}:"]
    for m, sub in table.groupby("model", sort=False):
        a, b = sub[sub["strength"] == 0].iloc[0], sub[sub["strength"] == s_max].iloc[0]
        acc = f", accuracy {a.accuracy:.2f} -> {b.accuracy:.2f}" if "accuracy" in sub else ""
        lines.append(f"  {short_name(m)}: Γ' {a.approx_skewness:+.2f} -> {b.approx_skewness:+.2f}, k* changed for "
                     f"{b.frac_kstar_changed:.0%} of samples{acc}")
    return "\n".join(lines)


def describe_fracture(tidy: pd.DataFrame, *, model: str, top: int = 3) -> str:
    """For the model: the class pairs that cut into each other most, with the shares both ways."""
    from kstar_utils.analysis.fracture import fracture_pairs

    pairs = fracture_pairs(tidy, top=top)
    lines = [f"{short_name(model)}: the classes that cut into each other most"]
    for r in pairs.itertuples(index=False):
        lines.append(f"  {r.class_a} / {r.class_b}: {r.share_ab:.0%} of {r.class_a} have their nearest enemy in "
                     f"{r.class_b}, {r.share_ba:.0%} of {r.class_b} in {r.class_a}")
    return "\n".join(lines)


def describe_class_pairs(pairs: pd.DataFrame, mean_skews: pd.DataFrame, *, layer: str) -> str:
    """How much the class skews of different models agree at `layer`, and which classes fracture whatever the
    training (mean class skew over models)."""
    t = pairs[pairs["layer"] == layer]
    ordered = mean_skews.sort_values("mean_skew", ascending=False)
    return (f"{layer}: class skews of two models correlate with median Spearman ρ = {t['statistic'].median():+.2f} "
            f"(range {t['statistic'].min():+.2f} to {t['statistic'].max():+.2f}, {len(t)} pairs); most fractured on "
            f"average: {ordered['label'].iloc[0]} (mean γ {ordered['mean_skew'].iloc[0]:+.2f}), least: "
            f"{ordered['label'].iloc[-1]} (mean γ {ordered['mean_skew'].iloc[-1]:+.2f})")
