"""How much Γ' depends on the sample, run on files (notebook 09): the features of a few models on one large set
(`cifar10-jpeg`: all 10,000 CIFAR-10 test images, 1,000 per class), Γ' of random class-stratified subsamples of each
size, the ranking of the models per draw against the whole set's, and a fixed subset (the 846 exact test images of
`cifar10-sample`) against the whole set.

    index = features_for(models, "cifar10-jpeg", layer="penultimate", root="../outputs")
    table, per_class = sample_size_study(index, layer="penultimate", sizes=[25, 100, 1000], draws=10)
    subset_comparison(index, features_for(models, "cifar10-sample", layer="penultimate"), table=table)

The computations are analysis.sampling's; these functions find or extract the features and read them.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from kstar_utils.analysis.sampling import set_skewness, subsample_skewness, subset_against_random
from kstar_utils.pipeline.features import load_features
from kstar_utils.pipeline.stages import INDEX_KEYS, extract_stage, read_index

#: the sizes per class of the default run: from a few dozen images per class to all 1,000 of cifar10-jpeg
DEFAULT_SIZES = (25, 50, 100, 200, 500, 1000)


def features_for(models: Sequence[str], dataset: str, *, layer: str = "penultimate", split: str = "test",
                 features_index=None, root: str | Path | None = None, progress: bool = True,
                 **options) -> pd.DataFrame:
    """An index (notebook 01's columns) of every model's features of `dataset` at `layer`, in the models' order.

    Rows of `features_index` (a table or the path of notebook 01's CSV; None: none) for the same model, dataset,
    split and layer are used as they are; the other models are extracted (or found in the cache under `root`:
    extraction is keyed and reused, stages.extract_stage). options: passed to extract_features (device,
    batch_size, data_root, ...)."""
    models = list(dict.fromkeys(models))
    if not models:
        raise ValueError("no models given")
    found = pd.DataFrame(columns=INDEX_KEYS + ["features_path"])
    if features_index is not None:
        index = read_index(features_index, INDEX_KEYS + ["features_path"])
        found = index[(index["dataset"] == dataset) & (index["split"] == split) & (index["layer"] == layer)
                      & index["model"].isin(models)].drop_duplicates("model", keep="last")
    missing = [m for m in models if m not in set(found["model"])]
    parts = [found]
    if missing:
        parts.append(extract_stage(missing, dataset, split=split, layers=(layer,), root=root, progress=progress,
                                   **options))
    rows = pd.concat([p for p in parts if len(p)], ignore_index=True)
    return rows.set_index("model").loc[models].reset_index()


def _labels_of(fs) -> np.ndarray:
    return np.asarray(fs.class_names)[fs.labels] if fs.class_names else fs.labels


def _rows(features_index, layer: str, models: Sequence[str] | None) -> pd.DataFrame:
    index = read_index(features_index, INDEX_KEYS + ["features_path"], layer=layer)
    if models is not None:
        absent = [m for m in models if m not in set(index["model"])]
        if absent:
            raise ValueError(f"no features of {absent} at layer {layer!r} in the index")
        index = index.set_index("model").loc[list(models)].reset_index()
    if index["model"].duplicated().any():
        twice = sorted(set(index.loc[index["model"].duplicated(), "model"]))
        raise ValueError(f"the index holds several rows of {twice} at layer {layer!r} (several datasets?); pass an "
                         "index of one dataset")
    return index


def sample_size_study(features_index, *, layer: str = "penultimate", models: Sequence[str] | None = None,
                      sizes: Sequence[int] = DEFAULT_SIZES, draws: int = 10, seed: int = 0, metric="euclidean",
                      progress: bool = True) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Γ', Γ and the class patterns of `draws` random class-stratified subsamples of each size in `sizes` (samples
    per class), for every model of `features_index` (or of `models`) at `layer` (analysis.sampling.
    subsample_skewness; a size equal to every class's size is the whole set, computed once).

    The models' features must hold the same images in the same order (one dataset): draw d of a size then picks the
    same images for every model, and the rankings per draw (analysis.sampling.ranking_stability) compare models on
    one subsample, as a study would. Returns (table, per_class), each with `model` and `layer` first."""
    index = _rows(features_index, layer, models)
    reference = None
    tables, classes = [], []
    for row in tqdm(list(index.itertuples(index=False)), desc="models", disable=not progress):
        fs = load_features(row.features_path)
        labels = _labels_of(fs)
        if reference is None:
            reference = (row.model, labels)
        elif labels.shape != reference[1].shape or not np.array_equal(labels, reference[1]):
            raise ValueError(f"the features of {row.model!r} and {reference[0]!r} do not hold the same images in the "
                             "same order (their labels differ); the draws must pick the same images for every model")
        t, c = subsample_skewness(fs.features, labels, sizes, draws=draws, seed=seed, metric=metric,
                                  keys={"model": row.model, "layer": layer})
        tables.append(t)
        classes.append(c)
    return pd.concat(tables, ignore_index=True), pd.concat(classes, ignore_index=True)


def subset_comparison(features_index, subset_index, *, layer: str = "penultimate",
                      models: Sequence[str] | None = None, subset_rows=None, table: pd.DataFrame | None = None,
                      draws: int = 20, seed: int = 0, metric="euclidean",
                      values: Sequence[str] = ("approx_skewness", "true_skewness")) -> pd.DataFrame:
    """A fixed subset's Γ' (and Γ) against the whole set's, per model: the subset's own features (`subset_index`,
    e.g. the 846 exact test images of cifar10-sample), the same images within the whole set (`features_index`,
    e.g. their JPEG copies in cifar10-jpeg), random subsets of the whole set with the subset's class counts
    (analysis.sampling.subset_against_random) and the whole set.

    subset_rows: (M,) rows of the whole set that hold the subset's images (None: the first M rows, which is where
    cifar10-sample's 846 test images sit in cifar10-jpeg: both keep the official test order); checked by labels.
    table: sample_size_study's table, whose `full` rows give the whole set's values without recomputing them.
    Returns one row per (model, value): model, layer, value, subset_dataset, dataset, subset (the subset's own
    features), subset_in_set (its images' rows of the whole set), draws, random_mean, random_sd, random_q_low,
    random_q_high, share_below (of the random subsets below subset_in_set), whole, n_subset, n_whole.
    """
    big = _rows(features_index, layer, models)
    small = _rows(subset_index, layer, list(big["model"]))
    rows = []
    for b, s in zip(big.itertuples(index=False), small.itertuples(index=False)):
        fb, fs = load_features(b.features_path), load_features(s.features_path)
        yb, ys = _labels_of(fb), _labels_of(fs)
        at = np.arange(len(ys)) if subset_rows is None else np.asarray(subset_rows)
        if at.shape != ys.shape or (at.size and (at.min() < 0 or at.max() >= len(yb))):
            raise ValueError(f"subset_rows must give one row of the whole set ({len(yb)} samples) for each of the "
                             f"subset's {len(ys)} samples")
        if not np.array_equal(yb[at], ys):
            where = f"rows 0..{len(ys) - 1}" if subset_rows is None else "subset_rows"
            raise ValueError(f"{b.model}: the labels of {where} of {b.dataset} differ from those of {s.dataset}: "
                             "they are not the same images (pass subset_rows)")
        against = subset_against_random(fb.features, yb, at, draws=draws, seed=seed, metric=metric, values=values)
        own = set_skewness(fs.features, ys, metric=metric)
        whole = _whole_from(table, b.model, layer) or set_skewness(fb.features, yb, metric=metric)
        for r in against.itertuples(index=False):
            rows.append({"model": b.model, "layer": layer, "value": r.value, "subset_dataset": s.dataset,
                         "dataset": b.dataset, "subset": own[r.value], "subset_in_set": r.subset, "draws": r.draws,
                         "random_mean": r.random_mean, "random_sd": r.random_sd, "random_q_low": r.random_q_low,
                         "random_q_high": r.random_q_high, "share_below": r.share_below, "whole": whole[r.value],
                         "n_subset": int(len(ys)), "n_whole": int(len(yb))})
    return pd.DataFrame(rows)


def _whole_from(table: pd.DataFrame | None, model: str, layer: str) -> dict | None:
    """The whole-set row of (model, layer) in a sample_size_study table, None when there is none."""
    if table is None or "full" not in table.columns:
        return None
    hit = table[(table["model"] == model) & (table["layer"] == layer) & table["full"].astype(bool)]
    return hit.iloc[0].to_dict() if len(hit) else None


__all__ = ["features_for", "sample_size_study", "subset_comparison", "DEFAULT_SIZES"]
