"""The workbook's stages as functions: each reads the previous stage's index table and writes its own (the index
tables and the k* files they list: io.index).

    features index (01) -> k* index (02) -> skewness tables (03) -> correlations (04)

An index is a small CSV with one row per (model, layer) and the paths of the cached artefacts (with the sha256 of
each file's bytes), so a notebook names its input and output as two paths and any stage can be rerun alone. Cached
artefacts are keyed by their spec (kstar_utils.io.cache.artifact_path), and a k*'s spec holds the sha256 of its features
file: asking again for finished work reuses it, new features content gives a new k*, and a damaged cached k* is set
aside and recomputed.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from kstar_utils.io import cache
from kstar_utils.io.index import INDEX_KEYS, indexed_kstar, read_index
from kstar_utils.pipeline.features import extract_features, load_features
from kstar_utils.method.kstar import compute_kstar
from kstar_utils.method.metrics import Metric
from kstar_utils.method.skewness import summarize_skewness



# ------------------------------------------------------------------------------------------------ 01 features
def extract_stage(models: Iterable[str], dataset: str, *, split: str = "test", layers=("penultimate", "logits"),
                  root: str | Path | None = None, data_root=None, progress: bool = True, **options) -> pd.DataFrame:
    """Extract (or reuse) features of every model at `layers` ("inner" stands for each model's own inner layers); one
    index row per (model, layer) with its depth (models.layer_depth: 0 at the first inner layer, 1 at the output;
    NaN for other module names), N, D and the file path."""
    from kstar_utils import models as registry

    rows = []
    models = list(models)
    for model in tqdm(models, desc="models", disable=not progress):
        paths = extract_features(model, dataset, split=split, layers=layers, root=root, data_root=data_root,
                                 progress=progress, **options)
        for layer, path in paths.items():
            meta = cache.read_sidecar(path)
            depth = registry.layer_depth(model, layer) if not dataset.startswith("features:") else float("nan")
            rows.append({"model": model, "dataset": dataset, "split": split, "layer": layer, "depth": depth,
                         "n": meta.get("n"), "d": meta.get("d"), "features_path": str(path),
                         "features_sha256": meta.get("sha256")})
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------------------------ 02 k*
def kstar_path(features_path: str | Path, root: str | Path, metric: Metric, *,
               features_sha256: str | None = None) -> tuple[Path, dict]:
    """Where the k* of a feature file is cached, and the spec that keys it.

    The spec holds the sha256 of the features file's bytes (computed here unless given), so the same file name with
    new content is another k*. Features files are written byte-reproducibly: equal arrays, equal hash. The metric
    enters by its canonical record (`Metric.spec`: p = 3, 3.0 and "3" are one key; a given covariance matrix by its
    digest).
    """
    fmeta = cache.read_sidecar(features_path)
    fspec = fmeta.get("spec", {})
    spec = {"kind": "kstar", "version": 2, **metric.spec, "features": fmeta.get("spec_hash"),
            "features_sha256": features_sha256 or cache.sha256_file(features_path),
            **{k: fspec.get(k, fmeta.get(k)) for k in INDEX_KEYS}}
    return cache.artifact_path(root, "kstar", spec, ".npz"), spec


def _file_state(path: Path) -> tuple[int, int, int]:
    st = os.stat(path)
    return st.st_ino, st.st_size, st.st_mtime_ns


def kstar_of_file(features_path: str | Path, root: str | Path, *, metric: Metric | str = "euclidean",
                  force: bool = False, p=None, cov=None, shrinkage=None, **engine_options) -> Path:
    """Compute (or reuse) k* of one feature file; returns the path of its .npz (kstar (N,) int64, enemy (N,) int64,
    labels (N,) int64, class_names (C,)), whose sidecar records its own sha256 and, under inputs["features"], the
    features file's. metric: a Metric or what Metric.parse reads ("minkowski(p=3)"; p, cov, shrinkage as keywords
    join it). engine_options go to compute_kstar and never change a k* (device, backend, screen, tile_size,
    memory_limit; client: a Dask client or scheduler address for one big k*).

    A cached k* is reused only when its bytes match its sidecar (else it is set aside with a CorruptCacheWarning and
    recomputed); its key holds the features' sha256, so changed features always give a new k*. A features file that
    cannot be read raises ValueError naming it (it may be the user's: it is never moved).
    """
    metric = Metric.parse(metric, p=p, cov=cov, shrinkage=shrinkage)
    features_path = Path(features_path)
    if not features_path.is_file():
        raise FileNotFoundError(f"features file not found: {features_path} (listed in the features index)")
    for _ in range(3):
        before = _file_state(features_path)
        fsha = cache.sha256_file(features_path)
        path, spec = kstar_path(features_path, root, metric, features_sha256=fsha)
        if not force and cache.verified_sidecar(path, {"features": fsha}) is not None:
            return path
        fs = load_features(features_path)
        # the k* is keyed by the hash taken above: the arrays must come from those same bytes
        if _file_state(features_path) == before:
            break
    else:
        raise RuntimeError(f"features file {features_path} kept changing while it was read; is another process "
                           f"writing it?")
    recorded = fs.meta.get("sha256")
    if recorded and recorded != fsha:
        warnings.warn(f"features file {features_path} is not the file its sidecar describes (sha256 {fsha[:12]}, "
                      f"sidecar {str(recorded)[:12]}; replaced?); its k* is computed from its current content",
                      stacklevel=2)
    k, enemy = compute_kstar(fs.features, fs.labels, metric=metric, return_enemy=True, **engine_options)
    arrays = {"kstar": np.asarray(k, dtype=np.int64), "enemy": np.asarray(enemy, dtype=np.int64),
              "labels": fs.labels, "class_names": np.asarray(fs.class_names, dtype=str)}
    cache.write_artifact(path, lambda tmp: cache.write_npz(tmp, arrays),
                         cache.provenance(spec, features_path=str(features_path), n=int(k.size),
                                          inputs={"features": cache.input_record(features_path, fsha)}))
    return path


def kstar_stage(features_index, *, root: str | Path | None = None, metric: Metric | str = "euclidean",
                force: bool = False, progress: bool = True, p=None, cov=None, shrinkage=None,
                **engine_options) -> pd.DataFrame:
    """k* for every row of the features index; returns the k* index (features index + metric, kstar_path and the
    sha256 of each features and k* file, read from the k* sidecars, so nothing is hashed twice). metric: a Metric or
    what Metric.parse reads (p, cov, shrinkage as keywords join it); the `metric` column holds its label
    ("minkowski(p=3)")."""
    metric = Metric.parse(metric, p=p, cov=cov, shrinkage=shrinkage)  # before any file is read
    index = read_index(features_index, INDEX_KEYS + ["features_path"])
    paths = [str(kstar_of_file(f, root, metric=metric, force=force, **engine_options))
             for f in tqdm(index["features_path"], desc="k*", disable=not progress)]
    metas = [cache.read_sidecar(f) for f in paths]
    return index.assign(metric=metric.label, kstar_path=paths,
                        features_sha256=[m["inputs"]["features"]["sha256"] for m in metas],
                        kstar_sha256=[m["sha256"] for m in metas])


# ------------------------------------------------------------------------------------------------ 03 skewness
def skewness_stage(kstar_index) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per-model coefficients (Γ, Γ', weighted Γ', spread, pattern counts, and the sha256 of the k* file they were
    computed from) and the long per-class table. Each k* file is checked against its sidecar and the index's
    `kstar_sha256` where the index has one."""
    index = read_index(kstar_index, INDEX_KEYS + ["metric", "kstar_path"])
    model_rows, class_tables = [], []
    for row in index.itertuples(index=False):
        res = indexed_kstar(row)
        s = summarize_skewness(res.kstar, res.named_labels)
        keys = {k: getattr(row, k) for k in INDEX_KEYS + ["metric"]}
        depth = {"depth": row.depth} if "depth" in index.columns else {}
        model_rows.append({**keys, **depth, **s.to_dict(), "kstar_sha256": res.meta.get("sha256")})
        class_tables.append(s.per_class.assign(**keys))
    per_class = pd.concat(class_tables, ignore_index=True)
    per_class = per_class[INDEX_KEYS + ["metric"] + [c for c in per_class.columns if c not in keys]]
    return pd.DataFrame(model_rows), per_class


def kstar_results(kstar_index, *, layer: str, models: Sequence[str] | None = None) -> dict[str, tuple]:
    """{model: (kstar (N,), class names (N,), SkewnessSummary)} of every model (or of `models`, in that order) at
    `layer`: what the distribution figures draw."""
    index = read_index(kstar_index, INDEX_KEYS + ["metric", "kstar_path"], layer=layer)
    rows = {r.model: r for r in index.itertuples(index=False)}
    wanted = list(rows) if models is None else list(models)
    missing = [m for m in wanted if m not in rows]
    if missing:
        raise ValueError(f"no k* at layer {layer!r} for {missing}; the index has {list(rows)}")
    out = {}
    for m in wanted:
        res = indexed_kstar(rows[m])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a class without a distribution is reported in the figure itself
            out[m] = (res.kstar, res.named_labels, summarize_skewness(res.kstar, res.named_labels))
    return out


def compare_pair(kstar_index, *, layer: str, models: Sequence[str] | None = None) -> list[str]:
    """The models to draw side by side: `models` (checked against the index), else the lowest and the highest Γ' at
    `layer`."""
    index = read_index(kstar_index, INDEX_KEYS + ["metric", "kstar_path"], layer=layer)
    if models:
        missing = [m for m in models if m not in set(index["model"])]
        if missing:
            raise ValueError(f"compare_models {missing} are not in the k* index; it has {list(index['model'])}")
        return list(models)
    table, _ = skewness_stage(index)
    ordered = table.sort_values("approx_skewness")["model"].tolist()
    return [ordered[0], ordered[-1]] if len(ordered) > 1 else ordered


def skewness_with_intervals(kstar_index, models_table: pd.DataFrame, *, layer: str, n_boot: int = 1000,
                            seed: int = 0) -> pd.DataFrame:
    """The models table at `layer` with a 95 % interval of Γ' from resampling samples within classes
    (method.skewness.bootstrap_approx_skewness): model, Γ, Γ', its interval, weighted Γ', spread, pattern counts."""
    from kstar_utils.method.skewness import bootstrap_approx_skewness

    index = read_index(kstar_index, INDEX_KEYS + ["metric", "kstar_path"], layer=layer)
    lows, highs = {}, {}
    for row in index.itertuples(index=False):
        res = indexed_kstar(row)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            lows[row.model], highs[row.model] = bootstrap_approx_skewness(res.kstar, res.labels, n_boot=n_boot,
                                                                          seed=seed)
    t = models_table[models_table["layer"] == layer]
    t = t.assign(approx_ci_low=t["model"].map(lows), approx_ci_high=t["model"].map(highs))
    cols = ["model", "true_skewness", "approx_skewness", "approx_ci_low", "approx_ci_high", "approx_skewness_weighted",
            "skew_spread", "n_fractured", "n_overlapped", "n_clustered"]
    return t[cols].sort_values("approx_skewness").reset_index(drop=True)


def kstar_overview(kstar_index) -> pd.DataFrame:
    """Per (model, layer): N, median k̂* and the share of samples whose nearest neighbour is foreign (k* = 1)."""
    from kstar_utils.method.kstar import normalize_kstar

    index = read_index(kstar_index, INDEX_KEYS + ["metric", "kstar_path"])
    rows = []
    for row in index.itertuples(index=False):
        res = indexed_kstar(row)
        khat = normalize_kstar(res.kstar, res.labels)
        rows.append({"model": row.model, "layer": row.layer, "n": int(khat.size),
                     "median_khat": float(np.median(khat)), "share_kstar_1": float(np.mean(res.kstar == 1))})
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------------------------ 04 correlations
def join_accuracy(skewness_table, accuracy_table: str | Path | pd.DataFrame = "auto", *,
                  without: str = "error") -> pd.DataFrame:
    """The per-model skewness table joined with accuracies on `model` (and `dataset`). A model without any accuracy
    is an error (without="error"), or is left out with a warning that names it (without="leave out": a measurement
    still under way).

    accuracy_table: "auto" (what the workbook knows for these models on these datasets, asked of each model's
    source: kstar_utils.models.accuracies, i.e. the workbook's measured tables, the RobustBench leaderboard and the
    OpenCLIP results), or a table / CSV path with a model column and accuracy columns of io.tables.ACCURACY_COLUMNS
    (fractions; a dataset column is joined on when present).
    """
    from kstar_utils import models
    from kstar_utils.io.tables import ACCURACY_COLUMNS

    if without not in ("error", "leave out"):
        raise ValueError(f'without must be "error" or "leave out", not {without!r}')
    sk = read_index(skewness_table, ["model", "dataset", "layer", "approx_skewness", "true_skewness"])
    if isinstance(accuracy_table, str) and accuracy_table == "auto":
        acc = models.accuracies(sorted(set(sk["model"])), sorted(set(sk["dataset"])))
    else:
        acc = accuracy_table if isinstance(accuracy_table, pd.DataFrame) else read_index(accuracy_table, ["model"])
        if "model" not in acc.columns or not any(c in acc.columns for c in ACCURACY_COLUMNS):
            raise ValueError(f"accuracy table needs a model column and one of {list(ACCURACY_COLUMNS)}; has "
                             f"{list(acc.columns)}")
    vals = acc[[c for c in ACCURACY_COLUMNS if c in acc.columns]].to_numpy(dtype=np.float64)
    if np.nanmax(vals, initial=0.0) > 1.0 or np.nanmin(vals, initial=0.0) < 0.0:
        raise ValueError("accuracies must be fractions in [0, 1] (percentages? divide by 100)")
    keys = ["model", "dataset"] if "dataset" in acc.columns else ["model"]
    twice = acc.loc[acc.duplicated(keys, keep=False), "model"]
    if len(twice):
        raise ValueError(f"accuracy table has more than one row for model(s) {sorted(set(twice))}")
    out = sk.merge(acc, on=keys, how="left", validate="many_to_one")
    present = [c for c in ACCURACY_COLUMNS if c in out.columns]
    missing = sorted(set(out.loc[out[present].isna().all(axis=1), "model"]))
    if missing and without != "leave out":
        raise ValueError(f"no accuracy known for model(s) {missing}; give accuracy_table")
    if missing:
        warnings.warn(f"no accuracy known for {len(missing)} model(s), left out: {', '.join(missing)}", UserWarning,
                      stacklevel=2)
        out = out[~out["model"].isin(missing)].reset_index(drop=True)
    return with_model_info(out)


def with_model_info(table: pd.DataFrame) -> pd.DataFrame:
    """`table` (with a model column) plus each model's short name, training kind and architecture family, as its
    source describes it (models.describe); names no source knows get empty values."""
    from kstar_utils import models

    info = {}
    for m in dict.fromkeys(table["model"]):
        try:
            d = models.describe(m)
            info[m] = (d.short, d.training, d.family)
        except (ValueError, ImportError):
            info[m] = (models.short_name(m), "", "")
    return table.assign(short=table["model"].map(lambda m: info[m][0]),
                        training=table["model"].map(lambda m: info[m][1]),
                        family=table["model"].map(lambda m: info[m][2]))


def common_layers(table: pd.DataFrame) -> list[str]:
    """The layers every model of `table` has (in the table's order): where models of different architectures can be
    compared one to one (penultimate, logits), unlike their own inner layers."""
    n = table["model"].nunique()
    per_layer = table.groupby("layer", sort=False)["model"].nunique()
    return [layer for layer, k in per_layer.items() if k == n]


def accuracy_axes(study: pd.DataFrame) -> list[str]:
    """The accuracy columns of io.tables.ACCURACY_COLUMNS that `study` has for at least three models."""
    from kstar_utils.io.tables import ACCURACY_COLUMNS

    return [c for c in ACCURACY_COLUMNS if c in study.columns and study[c].notna().sum() >= 3]


def correlation_stage(study: pd.DataFrame, *, xs=("approx_skewness", "true_skewness"), ys=None,
                      group: str = "layer", n_boot: int = 2000, n_perm: int = 9999, seed: int = 0) -> pd.DataFrame:
    """Spearman, Kendall and Pearson of each x against each y (default: every accuracy axis the table has) across
    models, per `group` (layer) and pooled, with percentile bootstrap intervals and permutation p-values (exact up to
    ten models; kstar_utils.analysis.correlate)."""
    from kstar_utils.analysis.correlate import correlation_table

    ys = accuracy_axes(study) if ys is None else list(ys)
    # pooling the layers would count each model twice: pooled rows only when there is one group
    pooled = study[group].nunique() <= 1
    tables = [correlation_table(study, x, ys, group=group, pooled=pooled, n_boot=n_boot, n_perm=n_perm, seed=seed)
              for x in xs]
    return pd.concat(tables, ignore_index=True)


def partial_stage(study: pd.DataFrame, *, x: str = "approx_skewness", ys=None, given: str = "clean_acc",
                  group: str = "layer", n_boot: int = 2000, n_perm: int = 9999, seed: int = 0) -> pd.DataFrame:
    """The partial rank correlation of x with each y controlling for `given` (default: every robustness-type axis
    against clean accuracy), per `group`: does Γ' go with robustness beyond what clean accuracy explains?
    (analysis.correlate.partial_correlation). One row per (group, y): x, y, given, group, statistic, ci_low, ci_high,
    p_value, p_exact, p_min, n."""
    from kstar_utils.analysis.correlate import partial_correlation

    if ys is None:
        ys = [c for c in accuracy_axes(study) if c != given and not c.startswith("zeroshot")]
    rows = []
    for g, sub in study.groupby(group, sort=False):
        for y in ys:
            t = sub[[x, y, given]].apply(pd.to_numeric, errors="coerce").dropna()
            if len(t) < 4:
                continue
            r = partial_correlation(t[x], t[y], t[given], n_boot=n_boot, n_perm=n_perm, seed=seed)
            rows.append({"x": x, "y": y, "given": given, "group": g, **r})
    return pd.DataFrame(rows)


def family_stage(study: pd.DataFrame, *, x: str = "approx_skewness", ys=None, families=None,
                 group: str = "layer", min_models: int = 4, n_boot: int = 2000, n_perm: int = 9999,
                 seed: int = 0) -> pd.DataFrame:
    """Correlations within each architecture family (the `family` column of with_model_info; default: every family
    with at least `min_models` models), where the architecture is held fixed and only the training differs, and
    across family means (one point per family: models of one family are not independent). Rows as
    correlation_stage's with a `family` column ("all families (means)" for the family-level rows)."""
    from kstar_utils.analysis.correlate import correlation_table

    ys = accuracy_axes(study) if ys is None else list(ys)
    counts = study.drop_duplicates("model")["family"].value_counts()
    families = [f for f in counts.index if counts[f] >= min_models] if families is None else list(families)
    parts = []
    for fam in families:
        sub = study[study["family"] == fam]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a constant accuracy inside a family gives NaN rows
            t = correlation_table(sub, x, ys, group=group, pooled=False, methods=("spearman",), n_boot=n_boot,
                                  n_perm=n_perm, seed=seed)
        parts.append(t.assign(family=fam))
    means = study.groupby([group, "family"], as_index=False)[[x, *ys]].mean(numeric_only=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        t = correlation_table(means, x, ys, group=group, pooled=False, methods=("spearman",), n_boot=n_boot,
                              n_perm=n_perm, seed=seed)
    parts.append(t.assign(family="all families (means)"))
    out = pd.concat(parts, ignore_index=True)
    return out[["family", *[c for c in out.columns if c != "family"]]]
