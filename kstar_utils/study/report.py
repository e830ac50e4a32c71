"""The study's figures and its HTML index (index.html: summary, correlations, figures, executed notebooks)."""
from __future__ import annotations

import datetime as _dt
import os
import warnings
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from markupsafe import Markup

from kstar_utils.analysis.findings import agree, format_eps, format_p, p_cell
from kstar_utils.io import cache
from kstar_utils.plotting.style import ACCURACY_NAMES, COEFFICIENT_NAMES, TRAINING_COLORS, short_name
from kstar_utils.study.jobs import job_paths
from kstar_utils.study.spec import Job, Study


def _rel(path: str | Path, start: Path) -> str:
    return Path(os.path.relpath(Path(path), start)).as_posix()


#: the file, beside the figures, that holds each figure's caption (read by write_index)
CAPTIONS = "captions.json"
_HOW = ("one point per model; colour: training kind, marker: architecture family")


def study_figures(study: Study, jobs: Sequence[Job], summary: pd.DataFrame, stats: pd.DataFrame,
                  figures_dir: str | Path) -> list[Path]:
    """Write the study figures and, beside them, captions.json ({file name: caption}); returns the figures' paths.
    A figure that has too little data (e.g. fewer than two models with an accuracy) is left out rather than
    failing the study."""
    from kstar_utils.analysis.correlate import agreement, correlation_table
    from kstar_utils.analysis.layers import distinct_layers, repeated_layers
    from kstar_utils.method.skewness import summarize_skewness
    from kstar_utils.io.index import indexed_kstar
    from kstar_utils.plotting import (plot_depth_profile, plot_gamma_vs_gamma_prime, plot_kstar_side_by_side,
                                      plot_metric_vs_accuracy, save_figure)
    from kstar_utils.models import INNER
    from kstar_utils.plotting import study as sp
    from kstar_utils.plotting.models import accuracy_panels, plot_family_panels
    from kstar_utils.plotting.style import SKEW_LIMIT, model_looks
    from kstar_utils.study.summary import available_accuracies, average_over_datasets

    figures_dir = Path(figures_dir)
    ok = summary[summary["status"].isin(["ok", "skipped"])]
    if ok.empty:
        return []
    fmt = study.figures.format
    layer = study.figures.layer or study.grids[0].layers[0]
    if layer not in set(ok["layer"]):
        layer = str(ok["layer"].iloc[0])
    ys = available_accuracies(summary, min_models=2)
    paths: list[Path] = []
    captions: dict[str, str] = {}

    def save(fig, name, caption):
        path = save_figure(fig, figures_dir / f"{cache.slugify(name)}.{fmt}")
        paths.append(path)
        captions[path.name] = caption

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        if ys:
            for dataset, fig in sp.plot_skewness_vs_accuracy_by_dataset(ok, ys, layer=layer, stats=stats).items():
                n = int(ok[(ok["dataset"] == dataset) & (ok["layer"] == layer)]["approx_skewness"].notna().sum())
                save(fig, f"approx_skewness_vs_accuracy_{dataset}_{layer}",
                     f"Γ' against each accuracy on {dataset} at layer {layer}, {n} models ({_HOW}). Dashed: the "
                     f"least-squares line with its 95 % bootstrap band. Each panel gives Spearman ρ with its 95 % "
                     f"percentile interval and permutation p (exact where every pairing could be counted).")
            if ok["dataset"].nunique() > 1:
                avg = average_over_datasets(ok, layer=layer)
                panels = accuracy_panels(avg, [y for y in ys if y in avg.columns and avg[y].notna().sum() >= 3])
                if panels:
                    s = correlation_table(avg, "approx_skewness", list(panels), n_boot=study.n_boot,
                                          n_perm=study.n_boot, seed=study.seed)
                    save(plot_metric_vs_accuracy(avg, "approx_skewness", panels, stats=s,
                                                 title=f"Γ' averaged over datasets vs accuracy · {layer}"),
                         f"approx_skewness_vs_accuracy_averaged_{layer}",
                         f"Γ' averaged over the datasets against each accuracy averaged likewise, at layer {layer} "
                         f"({_HOW}); panels as above.")
            first_ds = str(ok["dataset"].iloc[0])
            at = ok[(ok["layer"] == layer) & (ok["dataset"] == first_ds)].dropna(subset=["approx_skewness"])
            looks = model_looks(list(at["model"]))
            sizes = pd.Series([lk.family for lk in looks.values()]).value_counts()
            families = [f for f, k in sizes.items() if k >= 4 and f != "other"]
            robust = next((y for y in ("robust_acc_linf_2_255", "robust_acc_linf_8_255", "robust_acc", "clean_acc")
                           if y in ys and at[y].notna().sum() >= 3), None)
            if families and robust and len(sizes) > 1:
                fam = at.assign(family=[looks[m].family for m in at["model"]]).dropna(subset=[robust])
                fs = correlation_table(fam, "approx_skewness", robust, group="family", n_boot=study.n_boot,
                                       n_perm=study.n_boot, seed=study.seed)
                save(plot_family_panels(fam, "approx_skewness", robust, families=families, stats=fs,
                                        title=f"Γ' vs {ACCURACY_NAMES.get(robust, robust)} within architecture "
                                              f"families · {first_ds} · {layer}"),
                     f"approx_skewness_within_families_{first_ds}_{layer}",
                     f"Within-family comparison at layer {layer} on {first_ds}: each panel draws one architecture "
                     f"family with four or more models ({', '.join(families)}), joined in order of Γ', over every "
                     f"other model in grey, with the family's own Spearman ρ, interval and p. Models of one family "
                     f"share an architecture and often a recipe, so neither the pooled nor the within-family "
                     f"correlation treats independent models.")
        pairs = ok.dropna(subset=["true_skewness", "approx_skewness"])
        pairs = pairs[np.isfinite(pairs["true_skewness"]) & np.isfinite(pairs["approx_skewness"])]
        repeats = repeated_layers(pairs)
        pairs = distinct_layers(pairs)
        agree = None
        if len(pairs) >= 3 and pairs["true_skewness"].nunique() > 1 and pairs["approx_skewness"].nunique() > 1:
            agree = agreement(pairs["true_skewness"], pairs["approx_skewness"], n_boot=500, n_perm=500, seed=0)
        same = (f" {len(repeats)} layers whose features are bitwise those of another layer of the same model "
                f"({', '.join(sorted({f'{r.layer} = {r.same_as}' for r in repeats.itertuples()}))}) are drawn and "
                f"counted once." if len(repeats) else "")
        save(plot_gamma_vs_gamma_prime(pairs, agreement=agree), "true_vs_approx_skewness",
             f"Γ (the skewness of all samples' k̂* pooled) against Γ' (the mean of the class skews) for every finished "
             f"model and layer, one panel per layer ({_HOW}); dashed: Γ = Γ'.{same}")
        if ok["dataset"].nunique() > 1:
            save(sp.plot_skewness_heatmap(ok, layer=layer), f"approx_skewness_heatmap_{layer}",
                 f"Γ' of every model (rows, names coloured by training kind) on every dataset at layer {layer}, on "
                 f"the colour scale ±{SKEW_LIMIT:g} shared by every skewness heatmap (values beyond it are written "
                 f"out); blank: no result.")
        first = str(ok["dataset"].iloc[0])
        # "inner" stands for each model's own inner layers: models of different architectures are drawn against depth
        by_depth = INNER in study.layers and "depth" in ok.columns and ok["depth"].notna().any()
        layers = None if by_depth else [lay for lay in study.layers if lay in set(ok["layer"])]
        if by_depth or len(layers) > 1:
            where = ("against each layer's depth (0: the model's first inner layer, 1: its output)" if by_depth
                     else "layer by layer")
            save(plot_depth_profile(ok[ok["dataset"] == first], layers=layers, title=f"depth profile · {first}"),
                 f"depth_profile_{first}",
                 f"Γ' {where} on {first} (left, {_HOW}) and each layer's count of Fractured / Overlapped / "
                 f"Clustered classes (right; colour: Fractured classes on one scale from 0 to the number of "
                 f"classes). A layer that repeats another's features is drawn once; its cell says which.")
        pair = _compare_pair(study, ok, layer)
        if pair:
            rows = ok[(ok["layer"] == layer) & (ok["dataset"] == first)].set_index("model")
            results = {}
            for m in pair:
                if m in rows.index:
                    res = indexed_kstar(rows.loc[m])
                    results[m] = (res.kstar, res.named_labels, summarize_skewness(res.kstar, res.named_labels))
            if len(results) == 2:
                chosen = "chosen in the study file" if study.figures.compare_models else "with the lowest and the " \
                    "highest Γ'"
                save(plot_kstar_side_by_side(results, title=f"{first} · {layer}"),
                     f"kstar_side_by_side_{'_vs_'.join(pair)}_{first}_{layer}",
                     f"Per-class distributions of normalised k* (k* / class size) of the two models {chosen} "
                     f"({', '.join(short_name(m) for m in pair)}) on {first} at layer {layer}, on a log axis from "
                     f"1/n_c to 1: violin, letter-value boxes, and each class's skew γ_c and pattern.")
    if captions:
        cache.write_json_atomic(figures_dir / CAPTIONS, captions)
    return paths


def _caption(path: Path) -> Markup:
    """The caption study_figures wrote for a figure (escaped, with γ_c and n_c as subscripts); its file name in words
    if there is none."""
    text = ""
    try:
        text = str(cache.read_json(path.parent / CAPTIONS).get(path.name, ""))
    except (OSError, ValueError):
        pass
    text = text or path.stem.replace("_", " ")
    return Markup.escape(text).replace("γ_c", Markup("γ<sub>c</sub>")).replace("n_c", Markup("n<sub>c</sub>"))


def independence_note(models: Sequence[str]) -> str:
    """Where the study's models are not independent (families, fine-tunings of one model, one run per recipe), in
    a sentence; '' when every model is of its own family."""
    from kstar_utils.plotting.style import OTHER, model_looks

    looks = model_looks(list(models))
    fams = pd.Series([lk.family for lk in looks.values() if lk.family != OTHER]).value_counts()
    shared = fams[fams > 1]
    if shared.empty:
        return ""
    parts = [f"{k} {f}" for f, k in shared.items()]
    own = sum(lk.training == "own-fine-tune" for lk in looks.values())
    tuned = ("" if not own else f", 1 is the workbook's fine-tuning of a published model" if own == 1
             else f", {own} are the workbook's fine-tunings of published models")
    text = (f"The {len(looks)} models are not independent: {int(shared.sum())} of them share an architecture family "
            f"with another ({', '.join(parts)}){tuned}, and most recipes are one training run (one seed). A "
            "correlation across models treats each model as an independent draw, so its interval and p-value are "
            "optimistic; compare the within-family correlations.")
    return text


def _compare_pair(study: Study, ok: pd.DataFrame, layer: str) -> tuple[str, str] | None:
    """The two models drawn side by side: the study's choice, else the lowest and the highest Γ' (first dataset)."""
    if study.figures.compare_models:
        return tuple(study.figures.compare_models)  # type: ignore[return-value]
    sub = ok[(ok["layer"] == layer) & (ok["dataset"] == ok["dataset"].iloc[0])].dropna(subset=["approx_skewness"])
    if sub["model"].nunique() < 2:
        return None
    sub = sub.sort_values("approx_skewness")
    return str(sub["model"].iloc[0]), str(sub["model"].iloc[-1])


SUMMARY_COLUMNS = [("model", "model", None), ("training", "training", None), ("family", "family", None),
                   ("dataset", "dataset", None), ("layer", "layer", None),
                   ("true_skewness", "Γ", "{:+.3f}"), ("approx_skewness", "Γ'", "{:+.3f}"),
                   ("approx_skewness_weighted", "Γ' weighted", "{:+.3f}"),
                   ("skew_spread", Markup("spread of γ<sub>c</sub>"), "{:.3f}"),
                   ("n_fractured", "F", "{:.0f}"), ("n_overlapped", "O", "{:.0f}"), ("n_clustered", "C", "{:.0f}"),
                   ("clean_acc", "clean acc.", "{:.3f}"), ("robust_acc", "robust acc.", "{:.3f}"),
                   ("eval_eps", "ε of robust acc.", "eps"),
                   ("robust_acc_linf_2_255", "robust acc. L∞ 2/255", "{:.3f}"),
                   ("robust_acc_linf_8_255", "robust acc. L∞ 8/255", "{:.3f}"),
                   ("corruption_acc", "corruption acc.", "{:.3f}"), ("jpeg_acc", "JPEG acc.", "{:.3f}"),
                   ("zeroshot_acc", "zero-shot acc.", "{:.3f}"),
                   ("zeroshot_avg", "zero-shot (38-set mean)", "{:.3f}"),
                   ("zeroshot_acc_computed", "zero-shot (computed)", "{:.3f}"), ("status", "status", None)]


def _cell(value, fmt) -> dict:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return {"text": "", "cls": "num" if fmt else ""}
    if fmt is None:
        return {"text": str(value), "cls": ""}
    if isinstance(value, float) and np.isinf(value):
        return {"text": "+inf" if value > 0 else "-inf", "cls": "num"}
    if fmt == "eps":  # an attack budget as people write it: 1/255, not 0.0039
        return {"text": format_eps(value), "cls": "num"}
    return {"text": fmt.format(value), "cls": "num"}


def write_index(study: Study, jobs: Sequence[Job], statuses: Mapping[str, Mapping], summary: pd.DataFrame,
                stats: pd.DataFrame, figures: Sequence[Path], out: str | Path) -> Path:
    """index.html from the template templates/index.html.j2: the models with their training kind (in the colour every
    figure gives it) and family, Γ, Γ' and their accuracies (columns with no value left out, numbers at a fixed
    precision, ε as a fraction of 255), the correlations (p as the test can state it; flagged where fewer than
    MIN_MODELS_FOR_CI models stand behind them or where the interval and p disagree), a note on how the models are
    not independent, the figures with their captions (captions.json beside them) and every job's executed
    notebooks."""
    from jinja2 import Environment, PackageLoader, select_autoescape

    from kstar_utils.plotting.models import MIN_MODELS_FOR_CI

    from kstar_utils.plotting.style import model_looks, training_label

    out = Path(out)
    base = out.parent
    looks = model_looks(list(summary["model"])) if "model" in summary.columns and len(summary) else {}
    summary = summary.assign(training=[training_label(looks[m].training) for m in summary["model"]],
                             family=[looks[m].family for m in summary["model"]]) if looks else summary
    cols = [(c, t, f) for c, t, f in SUMMARY_COLUMNS if c in summary.columns and summary[c].notna().any()]
    rows = []
    for _, r in summary.iterrows():
        cells = [_cell(r[c], f) for c, _, f in cols]
        if looks and cols and cols[0][0] == "model":  # the model's colour in every figure, beside its name
            cells[0]["swatch"] = TRAINING_COLORS.get(looks[r["model"]].training, "#444444")
        rows.append(cells)
    corr = []
    shown = stats[stats["method"] == "spearman"] if len(stats) else stats
    for r in shown.itertuples(index=False):
        finite = np.isfinite(r.statistic)
        p, exact, p_min = (getattr(r, c, np.nan) for c in ("p_value", "p_exact", "p_min"))
        corr.append({"layer": r.layer, "x": COEFFICIENT_NAMES.get(r.x, r.x), "y": ACCURACY_NAMES.get(r.y, r.y),
                     "group": r.group, "n": int(r.n), "few": int(r.n) < MIN_MODELS_FOR_CI,
                     "statistic": f"{r.statistic:+.2f}" if finite else "n/a",
                     "ci": f"[{r.ci_low:+.2f}, {r.ci_high:+.2f}]" if finite else "",
                     "p": p_cell(p, exact, p_min), "p_long": format_p(p, exact, p_min),
                     "disagree": finite and agree(r.ci_low, r.ci_high, p) is False})
    job_rows = []
    for j in jobs:
        p = job_paths(j)
        st = statuses.get(j.job_id, {})
        links = [{"href": _rel(h, base), "text": h.stem} for h in sorted(p["html"].glob("*.html"))] \
            if p["html"].is_dir() else []
        job_rows.append({"model": j.model, "dataset": j.dataset, "status": st.get("status", ""), "links": links,
                         "error": st.get("error", ""),
                         "traceback": _rel(p["error"], base) if st.get("status") == "failed" and p["error"].exists()
                         else None})
    counts = {s: sum(v.get("status") == s for v in statuses.values()) for s in ("ok", "skipped", "failed")}
    env = Environment(loader=PackageLoader("kstar_utils.study", "templates"), autoescape=select_autoescape(["html", "j2"]))
    page = env.get_template("index.html.j2").render(
        study=study, jobs=jobs, counts=counts, summary_columns=[{"title": t} for _, t, _ in cols],
        summary_rows=rows, correlations=corr, few_models=any(c["few"] for c in corr), min_models=MIN_MODELS_FOR_CI,
        any_disagree=any(c["disagree"] for c in corr),
        independence=independence_note(sorted({m for m in summary.get("model", [])})),
        figures=[{"src": _rel(f, base), "caption": _caption(Path(f))} for f in figures], job_rows=job_rows,
        written=_dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"))
    with cache.atomic_path(out) as tmp:
        tmp.write_text(page, encoding="utf-8")
    return out
