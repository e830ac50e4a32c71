"""What the tables say, in sentences: the conclusions the notebooks print (so a regression test notices when they
change). Every function takes the tables the stages write and returns plain text with the method's symbols.

p-values are written from what the test can show (format_p): an exact test's p as it is, with the number of
pairings; a test of random pairings at its floor as "p <= floor", never as smaller. A percentile interval and a
permutation p answer different questions and, with few models, can disagree; a sentence then says so instead of
reading either one alone (evidence)."""
from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from kstar_utils.models import short_name

SYMBOLS = {"approx_skewness": "Γ'", "true_skewness": "Γ", "approx_skewness_weighted": "Γ' (class-size weighted)"}
WORDS = {"clean_acc": "clean accuracy", "robust_acc": "robust accuracy",
         "robust_acc_linf_2_255": "robust accuracy at L∞ 2/255", "robust_acc_linf_8_255": "robust accuracy at L∞ 8/255",
         "corruption_acc": "corruption accuracy", "jpeg_acc": "JPEG accuracy", "zeroshot_acc": "zero-shot accuracy",
         "zeroshot_avg": "mean zero-shot accuracy", "accuracy": "accuracy"}
METHOD_SYMBOLS = {"spearman": "Spearman ρ", "kendall": "Kendall τ", "pearson": "Pearson r",
                  "spearman_partial": "partial Spearman ρ"}
#: below this many models an interval or a test over models says little; sentences and figures say so
MIN_MODELS = 6
ALPHA = 0.05  # the level the interval (95 %) and the test are read against


def _finite(v) -> bool:
    try:
        return v is not None and not pd.isna(v) and math.isfinite(float(v))
    except (TypeError, ValueError):
        return False


def _num(p: float) -> str:
    return f"{p:.2g}"


def _num_up(p: float) -> str:
    """p at two significant digits, rounded up: a floor written as "p <= x" must not be below the true floor."""
    scale = 10.0 ** (math.floor(math.log10(p)) - 1)
    return f"{math.ceil(p / scale - 1e-9) * scale:.2g}"


def format_p(p, exact=None, p_min=None, *, short: bool = False) -> str:
    """A permutation p-value as the test can state it; '' when p is missing.

    exact (bool): every pairing was counted, p is exact: "p = 0.067 (exact, all 3,628,800 pairings)".
    p_min: the smallest p the test can give (1/n! exact, 1/(n_perm + 1) from random pairings). A random test's p at
    that floor reads "p <= 0.0001 (the smallest 9,999 random pairings can give)": it could be any smaller value,
    and "p < x" below the floor would claim what the test cannot show. Without exact / p_min (older tables):
    "p = 0.067". short: the figures' form ("p = 0.067 (exact)", "p ≤ 0.0001")."""
    if not _finite(p):
        return ""
    p = float(p)
    floor = float(p_min) if _finite(p_min) and float(p_min) > 0 else None
    total = round(1 / floor) if floor else None
    if _finite(exact) and bool(exact):
        if short or total is None:
            return f"p = {_num(p)} (exact)"
        return f"p = {_num(p)} (exact, all {total:,} pairings)"
    if floor is None:
        return f"p = {_num(p)}"
    if p <= floor * (1 + 1e-9):
        return f"p ≤ {_num_up(floor)}" if short else \
            f"p <= {_num_up(floor)} (the smallest {total - 1:,} random pairings can give)"
    return f"p = {_num(p)}" if short else f"p = {_num(p)} ({total - 1:,} random pairings)"


def p_cell(p, exact=None, p_min=None) -> str:
    """A p-value for a table's p column (the column says "p"): "0.067 (exact)", "≤ 0.0001", "0.002"; '' when
    missing. format_p gives the full sentence form."""
    text = format_p(p, exact, p_min, short=True)
    return text[2:].removeprefix("= ") if text else ""


def format_eps(eps) -> str:
    """An attack budget in [0, 1] pixel units as people write it: 1/255 -> "1/255", 8/255 -> "8/255", 0 -> "0",
    any other value as a plain number ("0.1"); '' when missing."""
    if not _finite(eps):
        return ""
    eps = float(eps)
    if eps == 0:
        return "0"
    k = eps * 255
    if abs(k - round(k)) < 1e-6 * max(1.0, k) and round(k) >= 1:
        return f"{round(k)}/255"
    return f"{eps:g}"


def excludes_zero(lo, hi) -> bool:
    return _finite(lo) and _finite(hi) and (float(lo) > 0 or float(hi) < 0)


def agree(lo, hi, p) -> bool | None:
    """Whether a 95 % interval and a p-value tell the same story (the interval excludes 0 exactly when p < 0.05);
    None when either is missing."""
    if not (_finite(lo) and _finite(hi) and _finite(p)):
        return None
    return excludes_zero(lo, hi) == (float(p) < ALPHA)


def evidence(lo, hi, p, exact=None, p_min=None) -> str:
    """What the interval and the test say together, as a clause: "the interval excludes 0 and p = ...", "the
    interval includes 0 and p = ...", or, when they disagree, that they do and the evidence is weak."""
    pt = format_p(p, exact, p_min)
    if not (_finite(lo) and _finite(hi)):
        return pt or "no interval or test"
    side = "excludes" if excludes_zero(lo, hi) else "includes"
    if not pt:
        return f"the interval {side} 0"
    if agree(lo, hi, p):
        return f"the interval {side} 0 and {pt}"
    if side == "excludes":
        return (f"the percentile interval excludes 0 but {pt} is not below {ALPHA:g}: the two disagree, so the "
                f"evidence is weak")
    return f"{pt} is below {ALPHA:g} but the interval includes 0: the two disagree, so the evidence is weak"


def _few(n) -> str:
    return f"; only {int(n)} models, too few for the interval or the test to say much" if int(n) < MIN_MODELS else ""


def _interval(stat: float, lo: float, hi: float) -> str:
    return f"{stat:+.2f} [{lo:+.2f}, {hi:+.2f}]"


def _stat_text(r, meth: str) -> str:
    if _finite(r.ci_low) and _finite(r.ci_high):
        return f"{meth} = {_interval(r.statistic, r.ci_low, r.ci_high)}"
    return f"{meth} = {r.statistic:+.2f}"


def describe_correlations(stats: pd.DataFrame, *, x: str = "approx_skewness", method: str = "spearman") -> str:
    """One sentence per (group, accuracy): the direction of the rank correlation, its 95 % percentile interval, n,
    then what the interval and the permutation p say together (evidence: the sentence says when they disagree
    rather than reading one alone), and a caution below MIN_MODELS models."""
    sym, meth = SYMBOLS.get(x, x), METHOD_SYMBOLS.get(method, method)
    lines = []
    for r in stats[(stats["x"] == x) & (stats["method"] == method)].itertuples(index=False):
        y = WORDS.get(r.y, r.y)
        if not _finite(r.statistic):
            lines.append(f"{r.group}: {sym} vs {y}: not computable (n = {r.n})")
            continue
        direction = "falls" if r.statistic < 0 else "rises"
        p, exact, p_min = (getattr(r, c, np.nan) for c in ("p_value", "p_exact", "p_min"))
        lines.append(f"{r.group}: as {sym} rises, {y} {direction} ({_stat_text(r, meth)}, n = {r.n}); "
                     f"{evidence(r.ci_low, r.ci_high, p, exact, p_min)}{_few(r.n)}")
    return "\n".join(lines)


def describe_partial(row, *, x: str | None = None, y: str | None = None, z: str | None = None) -> str:
    """One sentence on a partial correlation (analysis.correlate.partial_correlation's result, a mapping or a table
    row): Γ' with y controlling for z, its interval, p, and what they allow one to say. x, y, z: column names (read
    from the row's x, y, z where it has them; default Γ', robust accuracy, clean accuracy)."""
    get = row.get if isinstance(row, Mapping) else lambda k, d=None: getattr(row, k, d)
    x, y, z = x or get("x") or "approx_skewness", y or get("y") or "robust_acc", z or get("z") or "clean_acc"
    sx, wy, wz = SYMBOLS.get(x, x), WORDS.get(y, y), WORDS.get(z, z)
    stat, lo, hi, n = get("statistic"), get("ci_low"), get("ci_high"), get("n")
    head = f"{sx} and {wy}, controlling for {wz}"
    if not _finite(stat):
        return f"{head}: not computable (n = {n})"
    p, exact, p_min = get("p_value"), get("p_exact"), get("p_min")
    meth = METHOD_SYMBOLS["spearman_partial"]
    interval = f" [{float(lo):+.2f}, {float(hi):+.2f}]" if _finite(lo) and _finite(hi) else ""
    together = agree(lo, hi, p)
    if together is None:
        so = ""
    elif not together:
        so = ""  # evidence() already says the two disagree
    elif excludes_zero(lo, hi):
        so = f", so {sx} goes with {wy} beyond what {wz} explains"
    else:
        so = f", so no association beyond what {wz} explains is shown"
    return (f"{head}: {meth} = {float(stat):+.2f}{interval}, n = {int(n)}; {evidence(lo, hi, p, exact, p_min)}{so}"
            f"{_few(n)}.")


def describe_within_family(stats: pd.DataFrame, *, x: str = "approx_skewness", y: str = "robust_acc",
                           method: str = "spearman", families: Sequence[str] | None = None,
                           pooled: str = "pooled") -> str:
    """One sentence comparing the pooled correlation with the correlations within architecture families.

    stats: correlation rows (x, y, group, method, statistic, ci_low, ci_high, p_value, p_exact, p_min, n) whose
    `group` is a family name or `pooled` (e.g. analysis.correlate.correlation_table(df, x, ys, group="family"));
    families: the families to name, in order (default: every group but `pooled`). Says whether the signs agree and
    that models of one family are not independent."""
    t = stats[(stats["x"] == x) & (stats["y"] == y) & (stats["method"] == method)]
    meth = METHOD_SYMBOLS.get(method, method)
    groups = list(families) if families is not None else [g for g in dict.fromkeys(t["group"]) if g != pooled]
    parts, signs = [], []

    def part(r, where):
        if not _finite(r.statistic):
            return f"{where} not computable"
        signs.append(np.sign(r.statistic))
        p = format_p(r.p_value, getattr(r, "p_exact", None), getattr(r, "p_min", None))
        few = ", too few models to say much" if int(r.n) < MIN_MODELS else ""
        return f"{where} {_stat_text(r, meth)}" + (f", {p}" if p else "") + few

    base = t[t["group"] == pooled]
    if len(base):
        r = base.iloc[0]
        parts.append(part(r, f"pooled over {int(r.n)} models"))
    for g in groups:
        sub = t[t["group"] == g]
        if len(sub):
            r = sub.iloc[0]
            parts.append(part(r, f"within {g} ({int(r.n)} models)"))
        else:
            parts.append(f"within {g} no correlation")
    if not parts:
        return f"{SYMBOLS.get(x, x)} vs {WORDS.get(y, y)}: no rows"
    nonzero = {s for s in signs if s != 0}
    same = ("the same sign in every group" if len(nonzero) == 1 and len(signs) > 1
            else "the sign differs between groups" if len(nonzero) > 1 else "")
    tail = (f"; {same}" if same else "") + ("; models of one family share an architecture and often a recipe "
                                            "(one seed each), so they are not independent")
    return f"{SYMBOLS.get(x, x)} vs {WORDS.get(y, y)}: " + "; ".join(parts) + tail + "."


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
    if layers is None and "depth" in models_table.columns:  # architectures apart: each model's layers by depth
        by = models_table.dropna(subset=["depth", "approx_skewness"]).sort_values(["model", "depth"], kind="stable")
        by = by.drop_duplicates(["model", "depth"])
        first_last = pd.DataFrame({"first inner layer": [g["approx_skewness"].iloc[0] for _, g in by.groupby("model")],
                                   "output": [g["approx_skewness"].iloc[-1] for _, g in by.groupby("model")]})
        steady_every = int(sum((np.diff(g["approx_skewness"].to_numpy(float)) < 0).all() for _, g in by.groupby("model")))
        if len(first_last) and by.groupby("model").size().max() > 1:
            falls = int((first_last["output"] < first_last["first inner layer"]).sum())
            lines.append(f"From each model's first inner layer to its output, Γ' falls in {falls} of {len(first_last)} "
                         f"models, at every layer in {steady_every} (mean {first_last.iloc[:, 0].mean():+.2f} -> "
                         f"{first_last.iloc[:, 1].mean():+.2f}).")
        return "\n".join(lines)
    if layers and len(layers) > 1:
        piv = models_table.pivot_table(index="model", columns="layer", values="approx_skewness", aggfunc="first")
        piv = piv[[c for c in layers if c in piv.columns]]
        piv = piv.dropna()
        falls = int((piv.iloc[:, -1] < piv.iloc[:, 0]).sum())
        steady = ""
        if piv.shape[1] > 2:  # falling from the first layer to the last need not mean falling at every layer
            every = int((np.diff(piv.to_numpy(float), axis=1) < 0).all(axis=1).sum())
            steady = f", at every layer in {every}"
        lines.append(f"From {piv.columns[0]} to {piv.columns[-1]}, Γ' falls in {falls} of {len(piv)} models{steady} "
                     f"(mean {piv.iloc[:, 0].mean():+.2f} -> {piv.iloc[:, -1].mean():+.2f}).")
    return "\n".join(lines)


def describe_finetuning(table: pd.DataFrame, *, base: str, layer: str,
                        accuracies: Sequence[str] = ("clean_acc", "robust_acc")) -> str:
    """Before and after fine-tuning: each fine-tuned model's change of Γ' and of each accuracy column against `base`
    at `layer` (table: one row per model and layer with approx_skewness and the accuracy columns; a fine-tuned model's
    name starts with its base's)."""
    t = table[table["layer"] == layer].set_index("model")
    if base not in t.index:
        return f"{short_name(base)} is not in the table at {layer}"
    b = t.loc[base]
    cols = [c for c in accuracies if c in t.columns]
    names = {c: WORDS.get(c, c) for c in cols}
    lines = [f"{layer}, against {short_name(base)} (Γ' {b.approx_skewness:+.2f}"
             + "".join(f", {names[c]} {b[c]:.3f}" for c in cols) + "):"]
    for m, r in t.drop(index=base).iterrows():
        if not str(m).startswith(str(base)):
            continue
        lines.append(f"  {short_name(m)}: Γ' {r.approx_skewness - b.approx_skewness:+.2f}"
                     + "".join(f", {names[c]} {r[c] - b[c]:+.3f}" for c in cols))
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


def _course(values: np.ndarray) -> str:
    """How a sequence moves from its first value to its last: at every step, or only overall."""
    d = np.diff(values)
    if d.size and (d > 0).all():
        return "rising at every step"
    if d.size and (d < 0).all():
        return "falling at every step"
    if values[-1] > values[0]:
        return "higher at the end, not monotonically"
    if values[-1] < values[0]:
        return "lower at the end, not monotonically"
    return "the same at the end"


def describe_noise(table: pd.DataFrame, *, what: str) -> str:
    """How Γ' responds to noise: in how many models it is higher at the strongest noise than without, and in how
    many it rises at every step (a claim such as "noise raises Γ' in every model" holds only for the first, and a
    curve may dip on the way); then per model Γ' from no noise to the strongest, its course, and the share of
    samples whose k* changed."""
    s_max = table["strength"].max()
    per_model = []
    for m, sub in table.groupby("model", sort=False):
        sub = sub.sort_values("strength")
        g = sub["approx_skewness"].to_numpy(float)
        a, b = sub[sub["strength"] == 0].iloc[0], sub[sub["strength"] == s_max].iloc[0]
        per_model.append((m, a, b, _course(g), sub))
    higher = sum(b.approx_skewness > a.approx_skewness for _, a, b, _, _ in per_model)
    steady = sum(c == "rising at every step" for *_, c, _ in per_model)
    lines = [f"{what} noise, strength 0 -> {s_max:g}: Γ' is higher at {s_max:g} than without noise in {higher} of "
             f"{len(per_model)} models, rising at every step in {steady} of them."]
    for m, a, b, course, sub in per_model:
        acc = f", accuracy {a.accuracy:.2f} -> {b.accuracy:.2f}" if "accuracy" in sub else ""
        lines.append(f"  {short_name(m)}: Γ' {a.approx_skewness:+.2f} -> {b.approx_skewness:+.2f} ({course}), k* "
                     f"changed for {b.frac_kstar_changed:.0%} of samples{acc}")
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
