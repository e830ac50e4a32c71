"""The study's summary table: one row per (model, dataset, layer) with Γ, Γ', accuracies and provenance; and the
study-level correlations.

Accuracies come from kstar_utils.models.accuracies (the workbook's measured tables for zoo:<name> on digits and
cifar-resnet:<name> on cifar10-sample, the RobustBench leaderboard, the OpenCLIP results) and, when the study asks for
it, zeroshot_acc_computed (kstar_utils.pipeline.zeroshot, computed in the job).

A finished job's rows are read from its tables only when their bytes are the ones its done.json recorded, and each
row's k* and features hashes (from the skewness table and the k* index) agree with done.json's `inputs`; otherwise
the job's rows say why and carry no coefficients (kstar_utils.study.jobs.is_finished re-runs it next time).
"""
from __future__ import annotations

import hashlib
import io
import warnings
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from kstar_utils.io import cache
from kstar_utils.io.tables import ACCURACY_COLUMNS as _TABLE_ACCURACY_COLUMNS
from kstar_utils.study.jobs import job_paths
from kstar_utils.study.spec import Job

#: the summary's accuracy columns: every one the sources fill, and zero-shot accuracy computed in the jobs
ACCURACY_COLUMNS = (*_TABLE_ACCURACY_COLUMNS, "zeroshot_acc_computed")
SKEW_COLUMNS = ("true_skewness", "approx_skewness", "approx_skewness_weighted", "skew_spread", "n_classes",
                "n_fractured", "n_overlapped", "n_clustered", "n_undefined")


class StaleResult(ValueError):
    """A finished job's table is missing, damaged or does not match the content its done.json recorded."""


def _recorded_table(done: Mapping, name: str) -> pd.DataFrame:
    """One of a job's tables, parsed from the same bytes whose sha256 is checked against done.json's `outputs`."""
    path = str(done["tables"][name])
    want = (done.get("outputs") or {}).get(path)
    if not want:
        raise StaleResult(f"the job's done.json records no sha256 for {path}; run the job again")
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise StaleResult(f"{path} cannot be read ({type(e).__name__}: {e})") from None
    if hashlib.sha256(data).hexdigest() != want:
        cache.set_aside(path, "its content is not the one the job's done.json recorded (damaged or replaced)",
                        then="the next run re-runs the job")
        raise StaleResult(f"{path} is not the table the job wrote (set aside; the next run re-runs the job)")
    try:
        return pd.read_csv(io.BytesIO(data))
    except ValueError as e:
        raise StaleResult(f"{path} is not a readable CSV ({type(e).__name__}: {e})") from None


def _finished_rows(done: Mapping) -> pd.DataFrame:
    """The skewness rows of a finished job with the paths and sha256 of the features and k* files each row comes
    from; StaleResult unless the tables and their hashes agree with done.json."""
    sk = _recorded_table(done, "skewness_table")
    kidx = _recorded_table(done, "kstar_index")
    cols = [c for c in ("layer", "features_path", "kstar_path", "features_sha256", "kstar_sha256") if c in kidx.columns]
    rows = sk.merge(kidx[cols], on="layer", how="left", suffixes=("", "_index"))
    inputs = done.get("inputs") or {}
    for r in rows.itertuples(index=False):
        for kind in ("features", "kstar"):
            path, recorded = getattr(r, f"{kind}_path"), inputs.get(str(getattr(r, f"{kind}_path")))
            shas = {getattr(r, c) for c in (f"{kind}_sha256", f"{kind}_sha256_index") if hasattr(r, c)}
            if not recorded or any(isinstance(v, str) and v != recorded for v in shas):
                raise StaleResult(f"layer {r.layer}: the {kind} file {path} in the job's tables is not the one its "
                                  f"done.json recorded; run the job again")
    return rows.drop(columns=[c for c in ("features_sha256_index", "kstar_sha256_index") if c in rows.columns]).assign(
        features_sha256=[inputs[str(x)] for x in rows["features_path"]],
        kstar_sha256=[inputs[str(x)] for x in rows["kstar_path"]])


def job_rows(job: Job, status: Mapping) -> pd.DataFrame:
    """Rows of one job: its skewness table (finished jobs) or one row per layer with the error (failed jobs).

    status: {"status": "ok" | "skipped" | "failed", "error": str, "attempts": int, "done": done.json content}.
    A finished job whose tables do not match its done.json (see _finished_rows) gets failed rows naming the file,
    and a warning: a summary row never comes from a table other than the one the job wrote.
    """
    p = job_paths(job)
    base = {"job_id": job.job_id, "spec_hash": job.spec_hash, "status": status.get("status", ""),
            "error": status.get("error", ""), "job_dir": str(p["dir"]),
            "executed_notebooks": ";".join(str(p["executed"] / n) for n in sorted(_names(p["executed"])))}
    done = status.get("done") or {}
    if status.get("status") in ("ok", "skipped") and done:
        try:
            sk = _finished_rows(done)
        except (StaleResult, KeyError) as e:
            message = f"stale or damaged result: {e}"
            warnings.warn(f"{job.model} on {job.dataset}: {message}", stacklevel=2)
            base.update(status="failed", error=message)
        else:
            versions = done.get("versions", {})
            return sk.assign(**base, error_file="", zeroshot_acc_computed=done.get("zeroshot_acc_computed"),
                             created=done.get("created", ""), kstar_utils_version=versions.get("kstar-utils", ""),
                             torch_version=versions.get("torch", ""), job_seconds=done.get("seconds"))
    return pd.DataFrame([{"model": job.model, "dataset": job.dataset, "split": job.split, "layer": layer,
                          "metric": job.metric.label, **base, "error_file": str(p["error"]) if p["error"].exists() else ""}
                         for layer in job.layers])


def _names(folder: Path) -> list[str]:
    return [f.name for f in folder.glob("*.ipynb")] if folder.is_dir() else []


def build_summary(jobs: Sequence[Job], statuses: Mapping[str, Mapping], *, published: bool = True) -> pd.DataFrame:
    """The summary table: skewness coefficients, pattern counts, accuracies and provenance per (model, dataset, layer).

    statuses: job_id -> status mapping (see job_rows). Failed jobs keep their rows, with NaN coefficients.
    """
    parts = [job_rows(j, statuses[j.job_id]) for j in jobs]
    table = pd.concat(parts, ignore_index=True)
    for c in SKEW_COLUMNS + ("zeroshot_acc_computed",):
        if c not in table.columns:
            table[c] = np.nan
    if published:
        from kstar_utils import models

        acc = models.accuracies(sorted({j.model for j in jobs}), sorted({j.dataset for j in jobs}))
        table = table.merge(acc, on=["model", "dataset"], how="left", validate="many_to_one")
    else:
        for c in _TABLE_ACCURACY_COLUMNS:
            table[c] = np.nan
        table["accuracy_source"] = ""
    first = ["model", "dataset", "split", "layer", "metric", *SKEW_COLUMNS, *ACCURACY_COLUMNS, "accuracy_source",
             "status", "error"]
    rest = [c for c in table.columns if c not in first]
    table = table[first + rest]
    for c in ("zeroshot_acc_computed",):
        table[c] = pd.to_numeric(table[c], errors="coerce")
    return table


def available_accuracies(summary: pd.DataFrame, min_models: int = 3) -> list[str]:
    """Accuracy columns with a value for at least `min_models` finished rows."""
    ok = summary[summary["status"].isin(["ok", "skipped"])]
    return [c for c in ACCURACY_COLUMNS if c in ok.columns and ok[c].notna().sum() >= min_models]


def study_correlations(summary: pd.DataFrame, *, xs=("approx_skewness", "true_skewness"), n_boot: int = 2000,
                       seed: int = 0) -> pd.DataFrame:
    """correlate.correlation_table of each x against every available accuracy, per layer: per dataset and pooled
    over datasets (group "pooled", only when there are several datasets). Columns: layer, x, y, group, method, statistic, ci_low, ci_high, p_value, n."""
    from kstar_utils.analysis.correlate import TABLE_COLUMNS, correlation_table

    ys = available_accuracies(summary)
    ok = summary[summary["status"].isin(["ok", "skipped"])]
    tables = []
    if ys:
        for layer, sub in ok.groupby("layer", sort=False):
            for x in xs:
                with warnings.catch_warnings():
                    # a dataset with fewer than 3 models gives NaN rows; the table says so through n
                    warnings.simplefilter("ignore", RuntimeWarning)
                    # pooled over one dataset would repeat that dataset's rows
                    t = correlation_table(sub, x, ys, group="dataset", pooled=ok["dataset"].nunique() > 1,
                                          n_boot=n_boot, n_perm=n_boot, seed=seed)
                tables.append(t.assign(layer=layer))
    if not tables:
        return pd.DataFrame(columns=["layer", *TABLE_COLUMNS])
    table = pd.concat(tables, ignore_index=True)
    return table[["layer"] + [c for c in table.columns if c != "layer"]]


def write_summary(summary: pd.DataFrame, out_dir: str | Path) -> dict[str, Path]:
    """summary.csv and summary.parquet, each written atomically."""
    from kstar_utils.io.index import write_table

    out_dir = Path(out_dir)
    return {"csv": write_table(summary, out_dir / "summary.csv"),
            "parquet": write_table(summary, out_dir / "summary.parquet")}


def average_over_datasets(summary: pd.DataFrame, *, layer: str, columns: Sequence[str] = ("approx_skewness",
                          "true_skewness", "clean_acc", "robust_acc", "zeroshot_acc", "zeroshot_avg")) -> pd.DataFrame:
    """One row per model at `layer`: the mean over datasets of each column (NaN-skipping) and n_datasets."""
    t = summary[summary["layer"] == layer]
    if t.empty:
        raise ValueError(f"no rows at layer {layer!r} in the summary")
    cols = [c for c in columns if c in t.columns]
    out = t.groupby("model", sort=False)[cols].mean()
    out["n_datasets"] = t.groupby("model", sort=False)["dataset"].nunique()
    return out.reset_index()


__all__ = ["build_summary", "study_correlations", "write_summary", "available_accuracies", "average_over_datasets"]
