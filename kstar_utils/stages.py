"""The workbook's stages as functions: each reads the previous stage's index table and writes its own.

    features index (01) -> k* index (02) -> skewness tables (03) -> correlations (04)

An index is a small CSV with one row per (model, layer) and the paths of the cached artefacts, so a notebook names
its input and output as two paths and any stage can be rerun alone. Cached artefacts are keyed by their spec
(kstar_utils.cache.artifact_path): asking again for finished work reuses it.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from . import cache
from .features import extract_features, load_features
from .kstar import compute_kstar
from .skewness import SkewnessSummary, summarize_skewness

INDEX_KEYS = ["model", "dataset", "split", "layer"]


def write_table(df: pd.DataFrame, path: str | Path) -> Path:
    """Write a table atomically; the format follows the suffix (.csv or .parquet)."""
    path = Path(path)
    with cache.atomic_path(path) as tmp:
        if path.suffix == ".parquet":
            df.to_parquet(tmp, index=False)
        elif path.suffix == ".csv":
            df.to_csv(tmp, index=False)
        else:
            raise ValueError(f"unsupported table format {path.suffix!r} for {path}; use .csv or .parquet")
    return path


def read_index(index: str | Path | pd.DataFrame, required: Sequence[str], *, layer: str | None = None) -> pd.DataFrame:
    """An index table (a DataFrame or the path of its CSV) with its required columns checked; with `layer`, only the
    rows of that layer (an error when there are none)."""
    if not isinstance(index, pd.DataFrame):
        path = Path(index)
        if not path.exists():
            raise FileNotFoundError(f"index table not found: {path} (run the previous notebook/stage first)")
        index = pd.read_csv(path)
    missing = [c for c in required if c not in index.columns]
    if missing:
        raise ValueError(f"index table lacks columns {missing}; has {list(index.columns)}")
    if layer is not None:
        index = index[index["layer"] == layer]
        if index.empty:
            raise ValueError(f"no rows for layer {layer!r} in the index")
    return index


# ------------------------------------------------------------------------------------------------ 01 features
def extract_stage(models: Iterable[str], dataset: str, *, split: str = "test", layers=("penultimate", "logits"),
                  root: str | Path = "outputs", data_root=None, progress: bool = True, **options) -> pd.DataFrame:
    """Extract (or reuse) features of every model; one index row per (model, layer) with N, D and the file path."""
    rows = []
    models = list(models)
    for model in tqdm(models, desc="models", disable=not progress):
        paths = extract_features(model, dataset, split=split, layers=layers, root=root, data_root=data_root,
                                 progress=progress, **options)
        for layer, path in paths.items():
            meta = cache.read_sidecar(path)
            rows.append({"model": model, "dataset": dataset, "split": split, "layer": layer,
                         "n": meta.get("n"), "d": meta.get("d"), "features_path": str(path)})
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------------------------ 02 k*
@dataclass(frozen=True)
class KstarResult:
    """k* of one (model, layer): kstar (N,) int64 raw k*, labels (N,) int64, class_names (C,), meta = sidecar."""

    kstar: np.ndarray
    labels: np.ndarray
    class_names: tuple[str, ...]
    meta: Mapping

    @property
    def named_labels(self) -> np.ndarray:
        """(N,) class names (or the integer labels when the features carried no names)."""
        return np.asarray(self.class_names)[self.labels] if self.class_names else self.labels


def kstar_path(features_path: str | Path, root: str | Path, metric: str) -> tuple[Path, dict]:
    """Where the k* of a feature file is cached, and the spec that keys it."""
    fmeta = cache.read_sidecar(features_path)
    fspec = fmeta.get("spec", {})
    spec = {"kind": "kstar", "metric": metric, "features": fmeta.get("spec_hash"),
            **{k: fspec.get(k, fmeta.get(k)) for k in INDEX_KEYS}}
    return cache.artifact_path(root, "kstar", spec, ".npz"), spec


def kstar_of_file(features_path: str | Path, root: str | Path, *, metric: str = "euclidean", force: bool = False,
                  **engine_options) -> Path:
    """Compute (or reuse) k* of one feature file; returns the path of its .npz (kstar, labels, class_names)."""
    path, spec = kstar_path(features_path, root, metric)
    if force or not cache.is_complete(path):
        fs = load_features(features_path)
        k = compute_kstar(fs.features, fs.labels, metric=metric, **engine_options)
        with cache.atomic_path(path) as tmp:
            with open(tmp, "wb") as fh:
                np.savez(fh, kstar=k, labels=fs.labels, class_names=np.asarray(fs.class_names, dtype=str))
        cache.write_json_atomic(cache.sidecar_path(path), cache.provenance(spec, features_path=str(features_path),
                                                                           n=int(k.size)))
    return path


def load_kstar(path: str | Path) -> KstarResult:
    with np.load(path, allow_pickle=False) as z:
        names = tuple(str(c) for c in z["class_names"])
        return KstarResult(z["kstar"], z["labels"], names, cache.read_sidecar(path))


def kstar_stage(features_index, *, root: str | Path = "outputs", metric: str = "euclidean", force: bool = False,
                progress: bool = True, **engine_options) -> pd.DataFrame:
    """k* for every row of the features index; returns the k* index (features index + metric, kstar_path)."""
    index = read_index(features_index, INDEX_KEYS + ["features_path"])
    paths = [str(kstar_of_file(p, root, metric=metric, force=force, **engine_options))
             for p in tqdm(index["features_path"], desc="k*", disable=not progress)]
    return index.assign(metric=metric, kstar_path=paths)


# ------------------------------------------------------------------------------------------------ 03 skewness
def summarize_file(path: str | Path) -> SkewnessSummary:
    res = load_kstar(path)
    return summarize_skewness(res.kstar, res.named_labels)


def skewness_stage(kstar_index) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per-model coefficients (Γ, Γ', weighted Γ', spread, pattern counts) and the long per-class table."""
    index = read_index(kstar_index, INDEX_KEYS + ["metric", "kstar_path"])
    model_rows, class_tables = [], []
    for row in index.itertuples(index=False):
        s = summarize_file(row.kstar_path)
        keys = {k: getattr(row, k) for k in INDEX_KEYS + ["metric"]}
        model_rows.append({**keys, **s.to_dict()})
        class_tables.append(s.per_class.assign(**keys))
    per_class = pd.concat(class_tables, ignore_index=True)
    per_class = per_class[INDEX_KEYS + ["metric"] + [c for c in per_class.columns if c not in keys]]
    return pd.DataFrame(model_rows), per_class


def kstar_figures(kstar_index, figures_dir: str | Path, *, layer: str = "penultimate", fmt: str = "png") -> pd.DataFrame:
    """Save the per-class k̂* distribution figure of every model at `layer`; returns (model, layer, figure_path)."""
    import matplotlib.pyplot as plt

    from .plotting import plot_kstar_distribution, save_figure

    index = read_index(kstar_index, INDEX_KEYS + ["metric", "kstar_path"], layer=layer)
    rows = []
    for row in index.itertuples(index=False):
        res = load_kstar(row.kstar_path)
        labels = res.named_labels
        fig = plot_kstar_distribution(res.kstar, labels, summarize_skewness(res.kstar, labels),
                                      title=f"{row.model} · {row.layer} · {row.dataset}/{row.split}")
        name = cache.slugify(f"kstar_{row.model}_{row.layer}_{row.dataset}_{row.split}_{row.metric}")
        path = save_figure(fig, Path(figures_dir) / f"{name}.{fmt}")
        rows.append({"model": row.model, "layer": row.layer, "figure_path": str(path)})
    return pd.DataFrame(rows)


def kstar_overview(kstar_index) -> pd.DataFrame:
    """Per (model, layer): N, median k̂* and the share of samples whose nearest neighbour is foreign (k* = 1)."""
    from .kstar import normalize_kstar

    index = read_index(kstar_index, INDEX_KEYS + ["metric", "kstar_path"])
    rows = []
    for row in index.itertuples(index=False):
        res = load_kstar(row.kstar_path)
        khat = normalize_kstar(res.kstar, res.labels)
        rows.append({"model": row.model, "layer": row.layer, "n": int(khat.size),
                     "median_khat": float(np.median(khat)), "share_kstar_1": float(np.mean(res.kstar == 1))})
    return pd.DataFrame(rows)


def select(df: pd.DataFrame, **equal) -> pd.DataFrame:
    """Rows of `df` whose columns equal the given values, e.g. select(t, model="zoo:standard", layer="logits")."""
    missing = [k for k in equal if k not in df.columns]
    if missing:
        raise ValueError(f"no column(s) {missing} to select on; columns are {list(df.columns)}")
    mask = np.ones(len(df), dtype=bool)
    for k, v in equal.items():
        mask &= (df[k] == v).to_numpy()
    if not mask.any():
        raise ValueError(f"no rows with {equal}; values present: " +
                         ", ".join(f"{k}={sorted(map(str, df[k].unique()))[:10]}" for k in equal))
    return df[mask].reset_index(drop=True)


# ------------------------------------------------------------------------------------------------ 04 correlations
def load_accuracy(accuracy_table: str | Path | pd.DataFrame) -> pd.DataFrame:
    """Per-model accuracies with columns model, clean_acc, robust_acc (fractions). "zoo": the embedded zoo's table."""
    if isinstance(accuracy_table, pd.DataFrame):
        acc = accuracy_table
    elif str(accuracy_table) == "zoo":
        from .zoo import load_zoo_metrics

        acc = load_zoo_metrics()
    else:
        acc = read_index(accuracy_table, ["model"])
    missing = [c for c in ("model", "clean_acc", "robust_acc") if c not in acc.columns]
    if missing:
        raise ValueError(f"accuracy table lacks columns {missing}; has {list(acc.columns)}")
    vals = acc[["clean_acc", "robust_acc"]].to_numpy(dtype=np.float64)
    if np.nanmax(vals) > 1.0 or np.nanmin(vals) < 0.0:
        raise ValueError("accuracies must be fractions in [0, 1] (percentages? divide by 100)")
    return acc


def join_accuracy(skewness_table, accuracy_table="zoo") -> pd.DataFrame:
    """The per-model skewness table joined with accuracies on `model`; every model must have an accuracy."""
    sk = read_index(skewness_table, ["model", "layer", "approx_skewness", "true_skewness"])
    acc = load_accuracy(accuracy_table)
    missing = sorted(set(sk["model"]) - set(acc["model"]))
    if missing:
        raise ValueError(f"no accuracy for model(s) {missing}; the accuracy table has {sorted(acc['model'])}")
    return sk.merge(acc, on="model", how="left", validate="many_to_one")


def correlation_stage(study: pd.DataFrame, *, xs=("approx_skewness", "true_skewness"), ys=("clean_acc", "robust_acc"),
                      group: str = "layer", n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Spearman, Kendall and Pearson of each x against each y across models, per `group` (layer) and pooled, with
    bootstrap confidence intervals and permutation p-values (kstar_utils.correlate)."""
    from .correlate import correlation_table

    # pooling the layers would count each model twice: pooled rows only when there is one group
    pooled = study[group].nunique() <= 1
    tables = [correlation_table(study, x, list(ys), group=group, pooled=pooled, n_boot=n_boot, n_perm=n_boot,
                                seed=seed) for x in xs]
    return pd.concat(tables, ignore_index=True)


def describe_correlations(stats: pd.DataFrame, *, x: str = "approx_skewness", method: str = "spearman") -> str:
    """One plain sentence per (group, y): the direction, the rank correlation and whether its interval excludes 0."""
    lines = []
    for r in stats[(stats["x"] == x) & (stats["method"] == method)].itertuples(index=False):
        if not np.isfinite(r.statistic):
            lines.append(f"{r.group}: {x} vs {r.y}: not computable (n={r.n})")
            continue
        direction = "falls" if r.statistic < 0 else "rises"
        sure = "interval excludes 0" if (r.ci_low > 0 or r.ci_high < 0) else "interval includes 0"
        lines.append(f"{r.group}: as {x} increases, {r.y} {direction} ({method} {r.statistic:+.2f}, "
                     f"95% CI [{r.ci_low:+.2f}, {r.ci_high:+.2f}], {sure}, n={r.n})")
    return "\n".join(lines)
