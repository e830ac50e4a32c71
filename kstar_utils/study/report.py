"""The study's figures and its HTML index (index.html: summary, correlations, figures, executed notebooks)."""
from __future__ import annotations

import datetime as _dt
import os
import warnings
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from kstar_utils.io import cache
from kstar_utils.plotting.style import ACCURACY_NAMES, COEFFICIENT_NAMES
from kstar_utils.study.jobs import job_paths
from kstar_utils.study.spec import Job, Study


def _rel(path: str | Path, start: Path) -> str:
    return Path(os.path.relpath(Path(path), start)).as_posix()


def study_figures(study: Study, jobs: Sequence[Job], summary: pd.DataFrame, stats: pd.DataFrame,
                  figures_dir: str | Path) -> list[Path]:
    """Write the study figures; returns their paths. A figure that has too little data (e.g. fewer than two
    models with an accuracy) is left out rather than failing the study."""
    from kstar_utils.analysis.correlate import agreement, correlation_table
    from kstar_utils.method.skewness import summarize_skewness
    from kstar_utils.io.index import indexed_kstar
    from kstar_utils.plotting import (plot_depth_profile, plot_gamma_vs_gamma_prime, plot_kstar_side_by_side,
                                      plot_metric_vs_accuracy, save_figure)
    from kstar_utils.plotting import study as sp
    from kstar_utils.plotting.models import accuracy_panels
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

    def save(fig, name):
        paths.append(save_figure(fig, figures_dir / f"{cache.slugify(name)}.{fmt}"))

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        if ys:
            for dataset, fig in sp.plot_skewness_vs_accuracy_by_dataset(ok, ys, layer=layer, stats=stats).items():
                save(fig, f"approx_skewness_vs_accuracy_{dataset}_{layer}")
            if ok["dataset"].nunique() > 1:
                avg = average_over_datasets(ok, layer=layer)
                panels = accuracy_panels(avg, [y for y in ys if avg[y].notna().sum() >= 3])
                if panels:
                    s = correlation_table(avg, "approx_skewness", list(panels), n_boot=study.n_boot,
                                          n_perm=study.n_boot, seed=study.seed)
                    save(plot_metric_vs_accuracy(avg, "approx_skewness", panels, stats=s,
                                                 title=f"Γ' averaged over datasets vs accuracy · {layer}"),
                         f"approx_skewness_vs_accuracy_averaged_{layer}")
        pairs = ok.dropna(subset=["true_skewness", "approx_skewness"])
        pairs = pairs[np.isfinite(pairs["true_skewness"]) & np.isfinite(pairs["approx_skewness"])]
        agree = None
        if len(pairs) >= 3 and pairs["true_skewness"].nunique() > 1 and pairs["approx_skewness"].nunique() > 1:
            agree = agreement(pairs["true_skewness"], pairs["approx_skewness"], n_boot=500, n_perm=500, seed=0)
        save(plot_gamma_vs_gamma_prime(pairs, agreement=agree), "true_vs_approx_skewness")
        if ok["dataset"].nunique() > 1:
            save(sp.plot_skewness_heatmap(ok, layer=layer), f"approx_skewness_heatmap_{layer}")
        first = str(ok["dataset"].iloc[0])
        layers = [lay for lay in study.layers if lay in set(ok["layer"])]
        if len(layers) > 1:
            save(plot_depth_profile(ok[ok["dataset"] == first], layers=layers, title=f"depth profile · {first}"),
                 f"depth_profile_{first}")
        pair = _compare_pair(study, ok, layer)
        if pair:
            rows = ok[(ok["layer"] == layer) & (ok["dataset"] == first)].set_index("model")
            results = {}
            for m in pair:
                if m in rows.index:
                    res = indexed_kstar(rows.loc[m])
                    results[m] = (res.kstar, res.named_labels, summarize_skewness(res.kstar, res.named_labels))
            if len(results) == 2:
                save(plot_kstar_side_by_side(results, title=f"{first} · {layer}"),
                     f"kstar_side_by_side_{'_vs_'.join(pair)}_{first}_{layer}")
    return paths


def _compare_pair(study: Study, ok: pd.DataFrame, layer: str) -> tuple[str, str] | None:
    """The two models drawn side by side: the study's choice, else the lowest and the highest Γ' (first dataset)."""
    if study.figures.compare_models:
        return tuple(study.figures.compare_models)  # type: ignore[return-value]
    sub = ok[(ok["layer"] == layer) & (ok["dataset"] == ok["dataset"].iloc[0])].dropna(subset=["approx_skewness"])
    if sub["model"].nunique() < 2:
        return None
    sub = sub.sort_values("approx_skewness")
    return str(sub["model"].iloc[0]), str(sub["model"].iloc[-1])


SUMMARY_COLUMNS = [("model", "model", None), ("dataset", "dataset", None), ("layer", "layer", None),
                   ("true_skewness", "Γ", "{:+.3f}"), ("approx_skewness", "Γ'", "{:+.3f}"),
                   ("approx_skewness_weighted", "Γ' weighted", "{:+.3f}"), ("skew_spread", "spread of γ_c", "{:.3f}"),
                   ("n_fractured", "F", "{:.0f}"), ("n_overlapped", "O", "{:.0f}"), ("n_clustered", "C", "{:.0f}"),
                   ("clean_acc", "clean acc.", "{:.3f}"), ("robust_acc", "robust acc.", "{:.3f}"),
                   ("eval_eps", "eval_eps", "{:.4f}"), ("zeroshot_acc", "zero-shot acc.", "{:.3f}"),
                   ("zeroshot_avg", "zero-shot (38-set mean)", "{:.3f}"),
                   ("zeroshot_acc_computed", "zero-shot (computed)", "{:.3f}"), ("status", "status", None)]


def _cell(value, fmt) -> dict:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return {"text": "", "cls": "num" if fmt else ""}
    if fmt is None:
        return {"text": str(value), "cls": ""}
    if isinstance(value, float) and np.isinf(value):
        return {"text": "+inf" if value > 0 else "-inf", "cls": "num"}
    return {"text": fmt.format(value), "cls": "num"}


def write_index(study: Study, jobs: Sequence[Job], statuses: Mapping[str, Mapping], summary: pd.DataFrame,
                stats: pd.DataFrame, figures: Sequence[Path], out: str | Path) -> Path:
    """index.html from the template templates/index.html.j2: the models with Γ, Γ' and their accuracies (columns
    with no value left out, numbers at a fixed precision), the correlations (flagged where fewer than
    MIN_MODELS_FOR_CI models stand behind them), the figures at one width and every job's executed notebooks."""
    from jinja2 import Environment, PackageLoader, select_autoescape

    from kstar_utils.plotting.models import MIN_MODELS_FOR_CI

    out = Path(out)
    base = out.parent
    cols = [(c, t, f) for c, t, f in SUMMARY_COLUMNS if c in summary.columns and summary[c].notna().any()]
    rows = [[_cell(r[c], f) for c, _, f in cols] for _, r in summary.iterrows()]
    corr = []
    shown = stats[stats["method"] == "spearman"] if len(stats) else stats
    for r in shown.itertuples(index=False):
        finite = np.isfinite(r.statistic)
        corr.append({"layer": r.layer, "x": COEFFICIENT_NAMES.get(r.x, r.x), "y": ACCURACY_NAMES.get(r.y, r.y),
                     "group": r.group, "n": int(r.n), "few": int(r.n) < MIN_MODELS_FOR_CI,
                     "statistic": f"{r.statistic:+.2f}" if finite else "n/a",
                     "ci": f"[{r.ci_low:+.2f}, {r.ci_high:+.2f}]" if finite else "",
                     "p": f"{r.p_value:.3f}" if np.isfinite(r.p_value) else ""})
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
        figures=[{"src": _rel(f, base), "name": f.stem.replace("_", " ")} for f in figures], job_rows=job_rows,
        written=_dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"))
    with cache.atomic_path(out) as tmp:
        tmp.write_text(page, encoding="utf-8")
    return out
