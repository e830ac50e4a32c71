"""The study's figures and its HTML index (index.html: summary, correlations, figures, executed notebooks)."""
from __future__ import annotations

import datetime as _dt
import html
import os
import warnings
from pathlib import Path
from typing import Mapping, Sequence

import pandas as pd

from kstar_utils.io import cache
from kstar_utils.study.jobs import job_paths
from kstar_utils.study.spec import Job, Study


def _rel(path: str | Path, start: Path) -> str:
    return Path(os.path.relpath(Path(path), start)).as_posix()


def study_figures(study: Study, jobs: Sequence[Job], summary: pd.DataFrame, stats: pd.DataFrame,
                  figures_dir: str | Path) -> list[Path]:
    """Write the study figures; returns their paths. A figure that has too little data (e.g. fewer than two
    models with an accuracy) is left out rather than failing the study."""

    from kstar_utils.plotting import study as sp
    from kstar_utils.analysis.correlate import correlation_table
    from kstar_utils.plotting import save_figure
    from kstar_utils.pipeline.stages import load_kstar
    from kstar_utils.study.summary import available_accuracies

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
            for dataset, fig in sp.plot_skewness_vs_accuracy_by_dataset(summary, ys, layer=layer, stats=stats).items():
                save(fig, f"approx_skewness_vs_accuracy_{dataset}_{layer}")
            if ok["dataset"].nunique() > 1:
                avg = sp.average_over_datasets(summary, layer=layer)
                avg_ys = [y for y in ys if avg[y].notna().sum() >= 3]
                if avg_ys:
                    s = correlation_table(avg, "approx_skewness", avg_ys, n_boot=study.n_boot, n_perm=study.n_boot,
                                          seed=study.seed)
                    save(sp.plot_coefficient_vs_accuracy(avg, avg_ys, stats=s,
                                                         title=f"Γ' averaged over datasets vs accuracy · {layer}"),
                         f"approx_skewness_vs_accuracy_averaged_{layer}")
        save(sp.plot_gamma_vs_gamma_prime(summary), "true_vs_approx_skewness")
        save(sp.plot_skewness_heatmap(summary, layer=layer), f"approx_skewness_heatmap_{layer}")
        pair = _compare_pair(study, ok, layer)
        if pair:
            dataset = str(ok["dataset"].iloc[0])
            rows = ok[(ok["layer"] == layer) & (ok["dataset"] == dataset)].set_index("model")
            results = {}
            for m in pair:
                if m in rows.index:
                    res = load_kstar(rows.at[m, "kstar_path"])
                    results[m] = (res.kstar, res.named_labels)
            if len(results) == 2:
                save(sp.plot_kstar_side_by_side(results, title=f"{dataset} · {layer}"),
                     f"kstar_side_by_side_{'_vs_'.join(pair)}_{dataset}_{layer}")
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


def write_index(study: Study, jobs: Sequence[Job], statuses: Mapping[str, Mapping], summary: pd.DataFrame,
                stats: pd.DataFrame, figures: Sequence[Path], out: str | Path) -> Path:
    """index.html: the study's summary and correlations, its figures, and every job's executed notebooks (HTML)."""
    out = Path(out)
    base = out.parent
    cols = ["model", "dataset", "layer", "true_skewness", "approx_skewness", "approx_skewness_weighted", "skew_spread",
            "n_fractured", "n_overlapped", "n_clustered", "clean_acc", "robust_acc", "zeroshot_acc", "status"]
    cols = [c for c in cols if c in summary.columns]
    parts = [f"<h1>Study {html.escape(study.name)}</h1>",
             f"<p>{html.escape(study.description)}</p>" if study.description else "",
             f"<p>Written {_dt.datetime.now(_dt.timezone.utc).isoformat(timespec='seconds')}; "
             f"{len(jobs)} jobs; metric {study.metric}; split {study.split}. "
             f"Tables: <a href='summary.csv'>summary.csv</a>, <a href='summary.parquet'>summary.parquet</a>, "
             f"<a href='correlations.csv'>correlations.csv</a>, <a href='run_log.jsonl'>run_log.jsonl</a>.</p>",
             "<h2>Summary</h2>", summary[cols].round(3).to_html(index=False, na_rep="", border=0)]
    if len(stats):
        shown = stats[stats["method"] == "spearman"].round(3)
        parts += ["<h2>Correlations (Spearman, 95% bootstrap interval, permutation p)</h2>",
                  shown.to_html(index=False, na_rep="", border=0)]
    if figures:
        parts.append("<h2>Figures</h2>")
        parts += [f"<figure><img src='{html.escape(_rel(f, base))}' style='max-width:100%'>"
                  f"<figcaption>{html.escape(f.name)}</figcaption></figure>" for f in figures]
    parts.append("<h2>Jobs</h2><table><tr><th>model</th><th>dataset</th><th>status</th><th>notebooks</th>"
                 "<th>error</th></tr>")
    for j in jobs:
        p = job_paths(j)
        st = statuses.get(j.job_id, {})
        links = [f"<a href='{html.escape(_rel(h, base))}'>{html.escape(h.stem)}</a>"
                 for h in sorted(p["html"].glob("*.html"))] if p["html"].is_dir() else []
        err = html.escape(st.get("error", ""))
        if st.get("status") == "failed" and p["error"].exists():
            err += f" (<a href='{html.escape(_rel(p['error'], base))}'>traceback</a>)"
        parts.append(f"<tr><td>{html.escape(j.model)}</td><td>{html.escape(j.dataset)}</td>"
                     f"<td>{html.escape(str(st.get('status', '')))}</td><td>{' · '.join(links)}</td><td>{err}</td></tr>")
    parts.append("</table>")
    page = ("<!DOCTYPE html><html><head><meta charset='utf-8'><title>k* study " + html.escape(study.name) +
            "</title><style>body{font-family:sans-serif;margin:2em;max-width:1200px}table{border-collapse:collapse;"
            "font-size:0.85em}td,th{padding:2px 8px;border-bottom:1px solid #ddd;text-align:left}</style></head><body>"
            + "\n".join(parts) + "</body></html>\n")
    with cache.atomic_path(out) as tmp:
        tmp.write_text(page, encoding="utf-8")
    return out
